//! Privileged tests of the loader: real programs attached to veths in a network namespace
//! the test creates on its own thread, with a bpffs directory the test mounts.
//!
//! They need root and panic without it: a privileged test never passes by skipping.

mod datapath;
pub(super) mod harness;
mod host_flows;
mod lab;
mod packet;
mod policy;
mod reuse;
mod state;
mod topo;
mod traffic;

use std::net::Ipv4Addr;

use netd_common::stats::DropReason;

use self::harness::{Iface, TestBpffs, in_netns, send_frames, settle, veth_pair};
use super::{EbpfConfig, EbpfDataplane, loader};
use crate::{
    dataplane::{Dataplane, EndpointView, UplinkView},
    model::{Attachment, MacAddr, Network, PortRange},
};

fn config(bpffs: &std::path::Path) -> EbpfConfig {
    EbpfConfig {
        bpffs: bpffs.to_path_buf(),
        conntrack_max: 4096,
        nat_max: 4096,
        snat_ports: PortRange {
            start: 61000,
            end: 65535,
        },
    }
}

fn network() -> Network {
    Network {
        name: "t".into(),
        id: 1,
        subnet: "10.99.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 99, 0, 1),
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: "ntbr".into(),
    }
}

fn attachment(host_ifname: &str) -> Attachment {
    let ip = Ipv4Addr::new(10, 99, 0, 2);
    Attachment {
        network: "t".into(),
        ip,
        mac: MacAddr::from_ipv4(ip),
        host_ifname: host_ifname.into(),
        ifname: "eth0".into(),
    }
}

/// An endpoint's veth pair (host end `ndh`, container end `ndc`) and an uplink pair (`ndu`,
/// wan end `ndw`), with the views that program them.
struct Veths {
    host: Iface,
    cont: Iface,
    up: Iface,
    wan: Iface,
    net: Network,
    att: Attachment,
}

impl Veths {
    fn new() -> Self {
        let (host, cont) = veth_pair("ndh", "ndc");
        let (up, wan) = veth_pair("ndu", "ndw");
        Veths {
            host,
            cont,
            up,
            wan,
            net: network(),
            att: attachment("ndh"),
        }
    }

    fn endpoint(&self) -> EndpointView<'_> {
        EndpointView {
            endpoint: "c1",
            network: &self.net,
            attachment: &self.att,
            host_ifindex: self.host.index,
            bridge_ifindex: 0,
        }
    }

    fn uplink(&self) -> UplinkView {
        UplinkView {
            ifindex: self.up.index,
            ifname: "ndu".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec![Ipv4Addr::new(203, 0, 113, 2)],
            snat_ip: None,
            peer_ingress: false,
        }
    }
}

fn counters(dp: &EbpfDataplane, ifindex: u32) -> Option<(u64, u64, u64, u64)> {
    let stats = dp.stats().expect("stats");
    stats
        .interfaces
        .iter()
        .find(|c| c.ifindex == ifindex)
        .map(|c| (c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes))
}

/// The names of the direct-action BPF filters on `ifname` in direction `dir` (ingress or
/// egress), as `tc filter show` lists them. A filter without direct action would read
/// the programs' verdicts as class ids, so it is left out.
fn netd_filters(ifname: &str, dir: &str) -> Vec<String> {
    let out = std::process::Command::new("tc")
        .args(["filter", "show", "dev", ifname, dir])
        .output()
        .expect("running tc");
    // "filter protocol all pref 1 bpf chain 0 handle 0x4e44 NAME[:...] direct-action ..."
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" direct-action"))
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "handle").skip(2);
            let name = words.next()?;
            Some(name.split(':').next().unwrap_or(name).to_string())
        })
        .collect()
}

/// Milestone 1: programs attach to an endpoint veth and to the uplink, count packets and
/// bytes per interface and direction, keep counting through a reopen (pinned maps
/// reused, programs replaced in place), and stop when detached.
#[test]
fn counts_per_interface_and_survives_reopen() {
    let bpffs = TestBpffs::mounted("counts");
    let cfg = config(bpffs.path());
    in_netns(move || {
        let veths = Veths::new();
        let Veths {
            host,
            cont,
            up,
            wan,
            att,
            ..
        } = &veths;
        let (ep, uplink) = (veths.endpoint(), veths.uplink());

        let mut dp = EbpfDataplane::open(&cfg).expect("open");
        dp.set_uplink(&uplink).expect("set_uplink");
        dp.add_endpoint(&ep).expect("add_endpoint");
        assert_eq!(
            counters(&dp, host.index),
            Some((0, 0, 0, 0)),
            "fresh counters"
        );

        // What the container sends arrives at the host veth's TC ingress (rx) ...
        send_frames(cont, att.mac.0, 3, 100);
        // ... and what the host sends to the container leaves through its TC egress (tx).
        send_frames(host, [2, 0, 0, 0, 0, 9], 2, 80);
        send_frames(wan, [2, 0, 0, 0, 0, 7], 4, 64);
        settle(|| {
            counters(&dp, host.index) == Some((3, 300, 2, 160))
                && counters(&dp, up.index) == Some((4, 256, 0, 0))
        });
        assert_eq!(counters(&dp, host.index), Some((3, 300, 2, 160)));
        assert_eq!(counters(&dp, up.index), Some((4, 256, 0, 0)));

        let stats = dp.stats().unwrap();
        let names: Vec<_> = stats.drops.iter().map(|d| d.reason.as_str()).collect();
        let expected: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, expected, "every drop reason is reported by name");
        let ct = stats
            .tables
            .iter()
            .find(|t| t.name == "conntrack")
            .expect("conntrack table");
        assert_eq!(ct.capacity, 4096);

        // A restart: the pinned maps keep the counts, the filters stay attached.
        drop(dp);
        send_frames(cont, att.mac.0, 1, 100);
        let mut dp = EbpfDataplane::open(&cfg).expect("reopen");
        settle(|| counters(&dp, host.index) == Some((4, 400, 2, 160)));
        assert_eq!(
            counters(&dp, host.index),
            Some((4, 400, 2, 160)),
            "counted while the daemon was down"
        );
        dp.set_uplink(&uplink).expect("set_uplink again");
        dp.add_endpoint(&ep).expect("add_endpoint again");
        send_frames(cont, att.mac.0, 1, 100);
        settle(|| counters(&dp, host.index) == Some((5, 500, 2, 160)));
        assert_eq!(
            counters(&dp, host.index),
            Some((5, 500, 2, 160)),
            "one program per direction after reattach"
        );

        assert_eq!(
            (
                netd_filters("ndh", "ingress"),
                netd_filters("ndh", "egress")
            ),
            (
                vec!["netd_veth_ingress".to_string()],
                vec!["netd_veth_egress".to_string()]
            ),
            "the reattach replaced the filters in place"
        );

        dp.remove_endpoint(&ep).expect("remove_endpoint");
        dp.remove_endpoint(&ep)
            .expect("removing again while the veth exists: no filter left to delete");
        assert_eq!(netd_filters("ndh", "ingress"), Vec::<String>::new());
        assert_eq!(netd_filters("ndh", "egress"), Vec::<String>::new());
        send_frames(cont, att.mac.0, 2, 100);
        // Give a wrongly still attached program every chance to count.
        settle(|| counters(&dp, host.index).is_some());
        assert_eq!(counters(&dp, host.index), None, "detached: nothing counted");
        assert_eq!(counters(&dp, up.index), Some((4, 256, 0, 0)));
    });
}

/// open() mounts bpffs itself on a plain directory, and refuses pinned maps whose layout
/// differs, saying what to do.
#[test]
fn mounts_bpffs_and_detects_a_changed_layout() {
    let bpffs = TestBpffs::unmounted("layout");
    let cfg = config(bpffs.path());
    in_netns(move || {
        let dp = EbpfDataplane::open(&cfg).expect("open mounts bpffs");
        drop(dp);
        assert!(super::bpffs::is_bpffs(&cfg.bpffs).unwrap(), "bpffs mounted");
        let mut bigger = cfg.clone();
        bigger.conntrack_max = 8192;
        let err = EbpfDataplane::open(&bigger).expect_err("changed capacity must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains("NETD_CT") && msg.contains("--cleanup") && msg.contains("4096"),
            "{msg}"
        );
        EbpfDataplane::cleanup(&cfg.bpffs).expect("cleanup");
        let mut dp = EbpfDataplane::open(&bigger).expect("open after cleanup");

        // Same sizes, different meaning: the recorded layout version tells.
        let mut c = dp.maps.config.get(&0, 0).unwrap();
        c.layout_version = netd_common::maps::LAYOUT_VERSION - 1;
        dp.maps.config.set(0, c, 0).unwrap();
        drop(dp);
        let err = EbpfDataplane::open(&bigger).expect_err("an older layout must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains("layout version") && msg.contains("--cleanup"),
            "{msg}"
        );
    });
}

/// Every map the loader knows is in the object under the name netd-common gives it.
#[test]
fn object_has_every_shared_map() {
    let bpffs = TestBpffs::mounted("names");
    let cfg = config(bpffs.path());
    let specs = loader::map_specs(&cfg);
    in_netns(move || {
        let _dp = EbpfDataplane::open(&cfg).expect("open");
        for s in &specs {
            assert!(
                super::bpffs::map_pin(&cfg.bpffs, s.name).exists(),
                "{} pinned",
                s.name
            );
        }
    });
}

/// A veth deleted before its endpoint is removed (the daemon tears down links first):
/// removal still succeeds and leaves no pin; repeated calls are idempotent.
#[test]
fn removal_after_the_veth_is_gone_and_repeated_calls_are_idempotent() {
    let bpffs = TestBpffs::mounted("gone");
    let cfg = config(bpffs.path());
    in_netns(move || {
        let veths = Veths::new();
        let Veths {
            host,
            cont,
            up,
            wan,
            att,
            ..
        } = &veths;
        let (ep, uplink) = (veths.endpoint(), veths.uplink());
        let mut dp = EbpfDataplane::open(&cfg).expect("open");
        dp.set_uplink(&uplink).expect("set_uplink");
        dp.set_uplink(&uplink).expect("set_uplink again");
        dp.add_endpoint(&ep).expect("add_endpoint");
        dp.add_endpoint(&ep).expect("add_endpoint again");
        send_frames(wan, [2, 0, 0, 0, 0, 7], 2, 64);
        send_frames(cont, att.mac.0, 1, 100);
        settle(|| counters(&dp, up.index) == Some((2, 128, 0, 0)));
        assert_eq!(
            counters(&dp, up.index),
            Some((2, 128, 0, 0)),
            "one program per direction"
        );
        assert_eq!(counters(&dp, host.index), Some((1, 100, 0, 0)));

        let out = std::process::Command::new("ip")
            .args(["link", "del", "ndh"])
            .output()
            .unwrap();
        assert!(out.status.success());
        dp.remove_endpoint(&ep)
            .expect("remove after the veth is gone");
        dp.remove_endpoint(&ep).expect("remove again");
        assert!(
            dp.maps.endpoints.get(&host.index, 0).is_err(),
            "no endpoint entry left"
        );
    });
}
