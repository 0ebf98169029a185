//! Shared helpers of the datapath tests (`dp_*.rs`): the dataplane parameter, sockets that
//! live in a namespace, echo servers that record every peer, ICMP over raw sockets, and
//! readers for `netd stats` / `netd conntrack`.
//!
//! Sockets are created on a thread that entered the namespace and then used from the test
//! thread: a socket stays in the namespace it was created in, so a test can hold open
//! connections across daemon restarts without a thread per connection. Every socket has a
//! timeout.

#![allow(
    dead_code,
    reason = "each dp_*.rs test binary includes this module and uses a different part of it"
)]

pub mod icmp;
pub mod packet;
pub mod sockets;
pub mod stats;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use netd_tests::{
    Lab, LabConfig,
    lab::{HOST_ADDR, UPLINK},
    process::{Output, ip, netns_exec},
};

pub use sockets::*;

/// Which dataplane a test runs against (`netd daemon --dataplane`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    Ebpf,
    Iptables,
}

impl Dataplane {
    /// The value of `--dataplane`, and what `netd info` / `netd stats` report.
    pub fn name(self) -> &'static str {
        match self {
            Dataplane::Ebpf => "ebpf",
            Dataplane::Iptables => "iptables",
        }
    }

    /// A lab whose daemon runs this dataplane.
    pub fn lab(self) -> Lab {
        self.lab_with(&[])
    }

    /// A lab whose daemon runs this dataplane with extra `netd daemon` arguments. Checks
    /// through `netd info` that the daemon really runs the dataplane asked for, so that an
    /// iptables test can never pass on the eBPF path.
    pub fn lab_with(self, args: &[&str]) -> Lab {
        let mut cfg = LabConfig::unique();
        cfg.daemon_args = vec!["--dataplane".into(), self.name().into()];
        cfg.daemon_args.extend(args.iter().map(|a| a.to_string()));
        let lab = Lab::with_config(cfg);
        let info = lab.netd_json(&["info", "--json"]);
        assert_eq!(
            info["dataplane"],
            self.name(),
            "the daemon runs another dataplane than asked: {info}"
        );
        lab
    }

    /// The name under which this dataplane counts drops of `reason` in `netd stats`.
    pub fn drop_name(self, reason: DropReason) -> &'static str {
        use DropReason::*;
        match (self, reason) {
            (Dataplane::Ebpf, Isolation) => "isolation",
            (Dataplane::Ebpf, Icc) => "icc",
            (Dataplane::Ebpf, Internal) => "internal",
            (Dataplane::Ebpf, WanToContainer) => "wan_to_container",
            (Dataplane::Ebpf, SpoofedIp) => "spoofed_ip",
            (Dataplane::Ebpf, SpoofedMac) => "spoofed_mac",
            (Dataplane::Ebpf, SpoofedArp) => "spoofed_arp",
            // Docker's rules: isolation between networks is the DOCKER chain's final DROP.
            (Dataplane::Iptables, Isolation) => "not_published",
            (Dataplane::Iptables, Icc) => "icc_disabled",
            (Dataplane::Iptables, Internal) => "internal_network",
            (Dataplane::Iptables, WanToContainer) => "direct_access_to_container",
            (Dataplane::Iptables, SpoofedIp | SpoofedMac | SpoofedArp) => {
                panic!("the iptables dataplane has no anti-spoofing (Docker has none)")
            }
        }
    }
}

/// Drop reasons the tests provoke, named per dataplane by [`Dataplane::drop_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Isolation,
    Icc,
    Internal,
    WanToContainer,
    SpoofedIp,
    SpoofedMac,
    SpoofedArp,
}

/// Generate the `#[test]`s of a file from one body per behaviour, `fn NAME(dp: Dataplane)`:
///
/// - `both: [NAME, ...]`: `ebpf::NAME` and `iptables::NAME`, both run.
/// - `ebpf_only("REASON"): [NAME, ...]` (any number of groups): behaviour that Docker's
///   feature set lacks. `ebpf::NAME` runs; `iptables::NAME` exists but is
///   `#[ignore = "REASON"]`, so `cargo test` lists it as `ignored, REASON` and counts it
///   under "ignored", never "passed". It calls the same body, so `--include-ignored` shows
///   what the iptables dataplane does instead.
/// - `ebpf_internal("REASON"): [NAME, ...]` (optional, last): checks of what the eBPF
///   dataplane is made of (pins, the absence of netfilter), with no iptables meaning at
///   all: only `ebpf::NAME` exists, documented with REASON.
macro_rules! dataplane_tests {
    (
        both: [$($both:ident),* $(,)?]
        $(, ebpf_only($reason:literal): [$($only:ident),* $(,)?])*
        $(, ebpf_internal($why:literal): [$($internal:ident),* $(,)?])?
        $(,)?
    ) => {
        mod ebpf {
            $(
                #[test]
                fn $both() {
                    super::$both(super::dp_common::Dataplane::Ebpf)
                }
            )*
            $($(
                #[test]
                fn $only() {
                    super::$only(super::dp_common::Dataplane::Ebpf)
                }
            )*)*
            $($(
                #[doc = $why]
                #[test]
                fn $internal() {
                    super::$internal(super::dp_common::Dataplane::Ebpf)
                }
            )*)?
        }
        mod iptables {
            $(
                #[test]
                fn $both() {
                    super::$both(super::dp_common::Dataplane::Iptables)
                }
            )*
            $($(
                #[test]
                #[ignore = $reason]
                fn $only() {
                    super::$only(super::dp_common::Dataplane::Iptables)
                }
            )*)*
        }
    };
}

/// `ip:port`.
pub fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// The host's uplink address with `port`: where the wan reaches published ports.
pub fn host(port: u16) -> SocketAddr {
    sock(HOST_ADDR, port)
}

/// `ip ARGS...` that must succeed.
pub fn ip_ok(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Run a tool in the named namespace (`ip netns exec`); panics only if it cannot run.
pub fn exec(ns: &str, cmd: &[&str]) -> Output {
    netns_exec(ns, cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Give the wan a route to `cidr` through the host, as a neighbour on the uplink's
/// segment could configure one.
pub fn route_wan_via_host(lab: &Lab, cidr: &str) {
    ip_ok(&[
        "-n",
        lab.wan().name(),
        "route",
        "add",
        cidr,
        "via",
        &HOST_ADDR.to_string(),
    ]);
}

/// Add `cidr` to the host's uplink as a secondary address. The daemon is not restarted:
/// publishing on the new address must pick it up by itself.
pub fn add_uplink_addr(lab: &Lab, cidr: &str) {
    ip_ok(&["-n", lab.host().name(), "addr", "add", cidr, "dev", UPLINK]);
}

/// A network `name` with `subnet` and extra `netd network create` arguments.
pub fn network(lab: &Lab, name: &str, subnet: &str, args: &[&str]) {
    let mut all = vec!["--subnet", subnet];
    all.extend_from_slice(args);
    lab.network_create(name, &all);
}

/// An endpoint `lab.name(suffix)` on `network`; returns its name and address.
pub fn endpoint(lab: &Lab, suffix: &str, network: &str) -> (String, Ipv4Addr) {
    let name = lab.name(suffix);
    let info = lab.endpoint_create(&name, network, &[]);
    (name, netd_tests::cli::first_ip(&info))
}

/// `netd port publish ENDPOINT SPEC` that must succeed; returns what it printed.
pub fn publish(lab: &Lab, endpoint: &str, spec: &str) -> String {
    lab.netd_ok(&["port", "publish", endpoint, spec])
}
