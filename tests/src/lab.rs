//! The lab topology: a "host" namespace where netd runs, a "wan" namespace behind an
//! uplink veth, and whatever endpoint namespaces netd creates. Documentation addresses
//! only; the root namespace is never touched.
//!
//! ```text
//!  wan ns                      host ns (netd daemon)                    endpoint ns
//!  wan0 203.0.113.1/24 ──veth── uplink0 203.0.113.2/24   bridge ──veth── eth0
//! ```

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    daemon::{Daemon, DaemonOptions, unmount_and_remove},
    netns::{NetnsGuard, delete_netns_with_prefix, list_netns, netns_path, unique_name},
    process::{Output, addrs, ip, links},
};

/// The uplink's name in the host namespace.
pub const UPLINK: &str = "uplink0";
/// The uplink's peer in the wan namespace.
pub const WAN_IF: &str = "wan0";
/// The host's uplink address (TEST-NET-3).
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The wan side's address, the host's default gateway.
pub const WAN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Prefix length of the uplink subnet.
pub const UPLINK_PREFIX_LEN: u8 = 24;
/// Where tests keep their daemons' directories.
pub const TEST_DIR: &str = "/tmp/netd-tests";

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Every namespace of the lab, including the endpoints tests create through
    /// [`Lab::name`], is called `PREFIX-...`; the lab removes all of them.
    pub prefix: String,
    /// The daemon's socket, state, bpffs and log live here; removed on drop.
    pub dir: PathBuf,
    /// Let the daemon create its default network `netd0`.
    pub default_network: bool,
    /// Extra `netd daemon` arguments.
    pub daemon_args: Vec<String>,
    /// The daemon binary; the netd under test when `None`.
    pub daemon_bin: Option<PathBuf>,
}

impl LabConfig {
    /// A config with a unique prefix, for a test.
    pub fn unique() -> Self {
        let prefix = unique_name();
        LabConfig {
            dir: Path::new(TEST_DIR).join(&prefix),
            prefix,
            default_network: false,
            daemon_args: Vec::new(),
            daemon_bin: None,
        }
    }
}

/// A lab with its daemon running. Dropping it stops the daemon and removes every
/// namespace whose name starts with the lab's prefix, so endpoint namespaces netd made go
/// too.
pub struct Lab {
    prefix: String,
    /// Taken first on drop, so that the daemon never sees its namespace vanish.
    daemon: Option<Daemon>,
    host: NetnsGuard,
    wan: NetnsGuard,
}

impl Lab {
    /// A lab with a unique prefix and no default network; panics with the reason on
    /// failure (for tests).
    #[expect(
        clippy::new_without_default,
        reason = "a lab creates namespaces and a daemon; Default would hide that"
    )]
    pub fn new() -> Lab {
        Lab::with_config(LabConfig::unique())
    }

    /// A lab built from `cfg`; requires root and panics with the reason on failure (for
    /// tests).
    pub fn with_config(cfg: LabConfig) -> Lab {
        crate::require_root();
        Lab::start(cfg).unwrap_or_else(|e| panic!("starting the lab: {e:#}"))
    }

    /// Build the topology and start the daemon in the host namespace.
    pub fn start(cfg: LabConfig) -> anyhow::Result<Lab> {
        let (host, wan) = build_topology(&cfg.prefix)?;
        let daemon = Daemon::start(DaemonOptions {
            netns: host.path(),
            uplink: Some(UPLINK.to_string()),
            default_network: cfg.default_network,
            dir: cfg.dir,
            extra_args: cfg.daemon_args,
            binary: cfg.daemon_bin,
        });
        let mut lab = Lab {
            prefix: cfg.prefix,
            daemon: None,
            host,
            wan,
        };
        // On failure `lab` drops here and removes the namespaces.
        lab.daemon = Some(daemon?);
        Ok(lab)
    }

    /// `PREFIX-suffix`: the name to give an endpoint (and so its namespace), so that the
    /// lab cleans it up.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// The lab's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace the daemon serves.
    pub fn host(&self) -> &NetnsGuard {
        &self.host
    }

    /// The namespace behind the uplink.
    pub fn wan(&self) -> &NetnsGuard {
        &self.wan
    }

    /// The daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .expect("the lab's daemon exists until drop")
    }

    /// The daemon, to stop, kill or restart it.
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon
            .as_mut()
            .expect("the lab's daemon exists until drop")
    }

    /// `netd ARGS...` against this lab's daemon.
    pub fn netd(&self, args: &[&str]) -> Output {
        self.daemon().netd(args)
    }

    /// `netd ARGS...` that must succeed; returns stdout, panics with everything otherwise.
    pub fn netd_ok(&self, args: &[&str]) -> String {
        let out = self.netd(args);
        assert!(out.success(), "`netd {}` failed: {out}", args.join(" "));
        out.stdout
    }

    /// `netd ARGS...` that must succeed and print JSON.
    pub fn netd_json(&self, args: &[&str]) -> Value {
        let stdout = self.netd_ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("`netd {}` printed no JSON ({e}): {stdout}", args.join(" ")))
    }

    /// Links in the host namespace.
    pub fn host_links(&self) -> Vec<String> {
        links(self.host.name()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// IPv4 addresses in the host namespace.
    pub fn host_addrs(&self) -> Vec<(String, String)> {
        addrs(self.host.name()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Named namespaces of this lab other than host and wan: those netd created.
    pub fn endpoint_namespaces(&self) -> Vec<String> {
        let own = format!("{}-", self.prefix);
        list_netns()
            .into_iter()
            .filter(|n| n.starts_with(&own) && n != self.host.name() && n != self.wan.name())
            .collect()
    }

    /// /run/netns/NAME of an endpoint netd created.
    pub fn netns_path(&self, name: &str) -> PathBuf {
        netns_path(name)
    }
}

/// Host and wan namespaces joined by the uplink veth; the host routes everything to the
/// wan.
fn build_topology(prefix: &str) -> anyhow::Result<(NetnsGuard, NetnsGuard)> {
    let host = NetnsGuard::with_name(&format!("{prefix}-host"))?;
    let wan = NetnsGuard::with_name(&format!("{prefix}-wan"))?;
    let (h, w) = (host.name(), wan.name());
    let host_cidr = format!("{HOST_ADDR}/{UPLINK_PREFIX_LEN}");
    let wan_cidr = format!("{WAN_ADDR}/{UPLINK_PREFIX_LEN}");
    let wan_addr = WAN_ADDR.to_string();
    let steps: [&[&str]; 6] = [
        &[
            "-n", h, "link", "add", UPLINK, "type", "veth", "peer", "name", WAN_IF, "netns", w,
        ],
        &["-n", h, "addr", "add", &host_cidr, "dev", UPLINK],
        &["-n", h, "link", "set", UPLINK, "up"],
        &["-n", w, "addr", "add", &wan_cidr, "dev", WAN_IF],
        &["-n", w, "link", "set", WAN_IF, "up"],
        &["-n", h, "route", "add", "default", "via", &wan_addr],
    ];
    for step in steps {
        ip(step).context("building the lab's uplink")?;
    }
    Ok((host, wan))
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The daemon first, so that it does not recreate what is being removed.
        drop(self.daemon.take());
        for failure in delete_netns_with_prefix(&format!("{}-", self.prefix)) {
            eprintln!("netd-tests: {failure}");
        }
    }
}

/// Remove what killed test processes left under [`TEST_DIR`] (bpffs mounts, state): every
/// entry named after a pid that no longer runs.
pub fn sweep_stale_dirs() {
    let Ok(dir) = std::fs::read_dir(TEST_DIR) else {
        return;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if crate::netns::is_stale_name(&name) {
            unmount_and_remove(&entry.path().join("bpffs"), &entry.path());
        }
    }
}
