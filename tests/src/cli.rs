//! CLI helpers on top of [`Lab`]: create objects and read them back as the JSON the API
//! defines (`netd/src/api/types.rs`), snapshot everything a failed command must leave
//! unchanged, and judge error replies.

use std::{net::Ipv4Addr, process::Command};

use serde_json::Value;

use crate::{Lab, Output, netns::list_netns};

/// Exit status of a request the daemon refused (`netd --help`, "Exit codes").
pub const EXIT_API: i32 = 1;
/// Exit status of a command line clap rejected.
pub const EXIT_USAGE: i32 = 2;

impl Lab {
    /// `netd network create NAME ARGS... --json`; the network as the API returned it.
    pub fn network_create(&self, name: &str, args: &[&str]) -> Value {
        let mut all = vec!["network", "create", name];
        all.extend_from_slice(args);
        all.push("--json");
        self.netd_json(&all)
    }

    /// `netd endpoint create NAME --network NET ARGS... --json`; the endpoint as returned.
    pub fn endpoint_create(&self, name: &str, network: &str, args: &[&str]) -> Value {
        let mut all = vec!["endpoint", "create", name, "--network", network];
        all.extend_from_slice(args);
        all.push("--json");
        self.netd_json(&all)
    }

    /// A `netd ARGS...` command against this lab's daemon, to spawn and control (e.g. a
    /// `netd run` to interrupt).
    pub fn netd_command(&self, args: &[&str]) -> Command {
        let bin = crate::netd_bin().unwrap_or_else(|e| panic!("{e:#}"));
        let mut cmd = Command::new(bin);
        cmd.args(args).env("NETD_SOCKET", self.daemon().socket());
        cmd
    }

    /// The endpoint's address on its first network, from `netd endpoint inspect`.
    pub fn endpoint_ip(&self, name: &str) -> Ipv4Addr {
        let list = self.netd_json(&["endpoint", "inspect", name]);
        first_ip(&list[0])
    }

    /// Everything a refused command must leave as it was. Links and addresses are
    /// sorted by name: a recreated link has a new index but is the same link.
    pub fn snapshot(&self) -> Snapshot {
        let own = format!("{}-", self.prefix());
        let mut host_links = self.host_links();
        host_links.sort();
        let mut host_addrs = self.host_addrs();
        host_addrs.sort();
        Snapshot {
            networks: self.netd_json(&["network", "ls", "--json"]),
            endpoints: self.netd_json(&["endpoint", "ls", "--json"]),
            ports: self.netd_json(&["port", "ls", "--json"]),
            host_links,
            host_addrs,
            namespaces: list_netns()
                .into_iter()
                .filter(|n| n.starts_with(&own))
                .collect(),
        }
    }
}

/// The address of an endpoint JSON (`EndpointInfo`) on its first attachment.
pub fn first_ip(endpoint: &Value) -> Ipv4Addr {
    ip_of(&endpoint["attachments"][0]["ip"])
}

/// A JSON string that must be an IPv4 address.
pub fn ip_of(v: &Value) -> Ipv4Addr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an IPv4 address: {v}"))
}

/// The state visible through the CLI and in the host namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub networks: Value,
    pub endpoints: Value,
    pub ports: Value,
    pub host_links: Vec<String>,
    pub host_addrs: Vec<(String, String)>,
    /// The lab's named namespaces (host, wan and endpoints).
    pub namespaces: Vec<String>,
}

/// Assert that a command was refused with `code`, that its message names every one of
/// `names` (the objects at fault) and says what is wrong with at least one of `problem`
/// (alternative wordings, compared case-insensitively).
pub fn assert_refused(out: &Output, code: i32, names: &[&str], problem: &[&str]) {
    assert_eq!(out.code, code, "wrong exit code; {out}");
    let msg = out.stderr.to_lowercase();
    for name in names {
        assert!(
            msg.contains(&name.to_lowercase()),
            "the message does not name {name:?}; {out}"
        );
    }
    assert!(
        problem.iter().any(|p| msg.contains(&p.to_lowercase())),
        "the message does not say the problem (one of {problem:?}); {out}"
    );
}
