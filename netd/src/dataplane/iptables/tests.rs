//! Privileged tests: each runs on a thread that unshares a fresh network namespace, so
//! iptables, sysctls and links touch only that namespace, which disappears with the
//! thread. They need root and fail (never skip) without it.

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use rtnetlink::{
    LinkBridge, LinkUnspec, LinkVeth,
    packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage},
    packet_route::{RouteNetlinkMessage, link::LinkMessage},
    sys::protocols::NETLINK_ROUTE,
};

use super::*;
use crate::model::{MacAddr, PortRange, Proto, Publication};

pub(super) fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the iptables dataplane tests need root (they build private network namespaces); run them as root or through `cargo xtask test`"
    );
}

/// Run `f` on a thread in a new, empty network namespace.
pub(super) fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    require_root();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Send one rtnetlink request in the calling thread's namespace and wait for its ack.
pub(super) fn rtnl(msg: RouteNetlinkMessage, create: bool) {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags =
        NLM_F_REQUEST | NLM_F_ACK | if create { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    crate::dataplane::nlsync::request(NETLINK_ROUTE, &buf).expect("rtnetlink request");
}

pub(super) fn new_link(msg: LinkMessage, create: bool) {
    rtnl(RouteNetlinkMessage::NewLink(msg), create);
}

pub(super) fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(idx, 0, "no interface {name}");
    idx
}

/// A bridge with one veth port, like a netd network with one endpoint.
fn bridge_with_port(bridge: &str, port: &str) -> (u32, u32) {
    new_link(LinkBridge::new(bridge).up().build(), true);
    new_link(LinkVeth::new(port, &format!("{port}p")).build(), true);
    let (br, p) = (ifindex(bridge), ifindex(port));
    new_link(
        LinkUnspec::new_with_index(p).controller(br).up().build(),
        false,
    );
    (br, p)
}

pub(super) fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `-A` lines of one table from iptables-save, mirror chains left out.
fn saved_rules(table: &str) -> Vec<String> {
    let save = run("iptables-save", &["-t", table]);
    save.lines()
        .filter(|l| l.starts_with("-A ") && !l.starts_with("-A NETD-OWNED-"))
        .map(str::to_string)
        .collect()
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub(super) fn network(bridge: &str, subnet: &str) -> Network {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    Network {
        name: format!("net{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        id: 1,
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: bridge.into(),
    }
}

fn uplink() -> UplinkView {
    UplinkView {
        ifindex: 1,
        ifname: "lo".into(),
        mac: [0; 6],
        addrs: vec![],
        snat_ip: None,
        peer_ingress: false,
    }
}

pub(super) fn attachment(net: &Network, ip: Ipv4Addr, host_ifname: &str) -> Attachment {
    Attachment {
        network: net.name.clone(),
        ip,
        mac: MacAddr::from_ipv4(ip),
        host_ifname: host_ifname.into(),
        ifname: "eth0".into(),
    }
}

pub(super) fn publication(
    net: &Network,
    host: u16,
    ctr: u16,
    host_ip: Option<Ipv4Addr>,
) -> Publication {
    Publication {
        endpoint: "c1".into(),
        network: net.name.clone(),
        proto: Proto::Tcp,
        host_ip,
        host_ports: PortRange::single(host),
        container_ports: PortRange::single(ctr),
    }
}

#[test]
fn programs_docker_rules_and_reads_them_back() {
    in_private_netns(|| {
        let (br, port) = bridge_with_port("bridge1", "vh1");
        let net = network("bridge1", "192.0.2.0/24");
        let ip = Ipv4Addr::new(192, 0, 2, 2);
        let att = attachment(&net, ip, "vh1");
        let publ = publication(&net, 8080, 80, None);
        let mut dp = IptablesDataplane::new(IptablesConfig::default());
        dp.set_uplink(&uplink()).unwrap();
        dp.add_network(&NetworkView {
            network: &net,
            bridge_ifindex: br,
        })
        .unwrap();
        dp.add_endpoint(&EndpointView {
            endpoint: "c1",
            network: &net,
            attachment: &att,
            host_ifindex: port,
            bridge_ifindex: br,
        })
        .unwrap();
        dp.publish(&PublicationView {
            publication: &publ,
            network: &net,
            container_ip: ip,
        })
        .unwrap();

        // What the kernel reports is anchors.md's Docker 29 example with the proxy off.
        assert_eq!(
            saved_rules("raw"),
            ["-A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP"]
        );
        assert_eq!(
            saved_rules("filter"),
            [
                "-A FORWARD -j DOCKER-USER",
                "-A FORWARD -j DOCKER-FORWARD",
                "-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT",
                "-A DOCKER ! -i bridge1 -o bridge1 -j DROP",
                "-A DOCKER-BRIDGE -o bridge1 -j DOCKER",
                "-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A DOCKER-FORWARD -j DOCKER-CT",
                "-A DOCKER-FORWARD -j DOCKER-INTERNAL",
                "-A DOCKER-FORWARD -j DOCKER-BRIDGE",
                "-A DOCKER-FORWARD -i bridge1 -j ACCEPT",
            ]
        );
        assert_eq!(
            saved_rules("nat"),
            [
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER",
                "-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j MASQUERADE",
                "-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE",
                "-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
                "-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80",
            ]
        );
        // The record netd keeps matches the kernel: a fresh read plans nothing.
        let fresh = Ruleset::parse(&kernel::iptables_save(false).unwrap()).unwrap();
        assert_eq!(Some(&fresh), dp.kernel.as_ref());
        assert!(plan::plan(&fresh, &dp.rules()).is_empty());

        // Docker's sysctls and bridge-port flag.
        let sysctl = |k: &str| {
            std::fs::read_to_string(format!("/proc/sys/{k}"))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(sysctl("net/ipv4/conf/bridge1/route_localnet"), "1");
        assert_eq!(sysctl("net/bridge/bridge-nf-call-iptables"), "1");
        let link = run("bridge", &["-d", "link", "show", "dev", "vh1"]);
        assert!(link.contains("hairpin on"), "{link}");
    });
}

#[test]
fn incremental_changes_sync_and_cleanup() {
    in_private_netns(|| {
        let (br, _) = bridge_with_port("br-inc", "vh2");
        // Another program's rules in the shared chains must survive everything below.
        run(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "eth9",
                "-j",
                "MASQUERADE",
            ],
        );
        run("iptables", &["-N", "DOCKER-USER"]);
        run(
            "iptables",
            &["-A", "DOCKER-USER", "-s", "10.0.0.0/8", "-j", "DROP"],
        );
        let net = network("br-inc", "198.51.100.0/24");
        let ip = Ipv4Addr::new(198, 51, 100, 2);
        let mut dp = IptablesDataplane::new(IptablesConfig::default());
        dp.set_uplink(&uplink()).unwrap();
        dp.add_network(&NetworkView {
            network: &net,
            bridge_ifindex: br,
        })
        .unwrap();
        let pubs: Vec<Publication> = (0..50)
            .map(|i| publication(&net, 10000 + i, 80 + i, None))
            .collect();
        for p in &pubs {
            dp.publish(&PublicationView {
                publication: p,
                network: &net,
                container_ip: ip,
            })
            .unwrap();
        }
        // One more port is four commands, not a rewrite of 150 rules.
        let lo = publication(&net, 8080, 200, Some(Ipv4Addr::LOCALHOST));
        dp.publish(&PublicationView {
            publication: &lo,
            network: &net,
            container_ip: ip,
        })
        .unwrap();
        assert_eq!(
            dp.last_commands, 6,
            "ACCEPT, DNAT, hairpin MASQUERADE + mirror, raw drop + mirror"
        );
        assert_eq!(
            saved_rules("nat")
                .iter()
                .filter(|r| r.contains("DNAT"))
                .count(),
            51
        );
        assert!(saved_rules("raw").contains(
            &"-A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP".to_string()
        ));

        // A restarted daemon (fresh dataplane, same namespace) changes nothing.
        let mut again = IptablesDataplane::new(IptablesConfig::default());
        let mut all: Vec<&Publication> = pubs.iter().collect();
        all.push(&lo);
        let sync = SyncView {
            networks: vec![NetworkView {
                network: &net,
                bridge_ifindex: br,
            }],
            endpoints: vec![],
            publications: all
                .iter()
                .map(|p| PublicationView {
                    publication: p,
                    network: &net,
                    container_ip: ip,
                })
                .collect(),
        };
        again.set_uplink(&uplink()).unwrap();
        again.sync(&sync).unwrap();
        assert_eq!(again.last_commands, 0);

        // Unpublishing and removing the network leave only the base jumps and others' rules.
        for p in all {
            again
                .unpublish(&PublicationView {
                    publication: p,
                    network: &net,
                    container_ip: ip,
                })
                .unwrap();
        }
        again
            .remove_network(&NetworkView {
                network: &net,
                bridge_ifindex: br,
            })
            .unwrap();
        assert_eq!(saved_rules("raw"), Vec::<String>::new());
        assert_eq!(
            saved_rules("nat"),
            [
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER",
                "-A POSTROUTING -o eth9 -j MASQUERADE",
            ]
        );
        IptablesDataplane::cleanup().unwrap();
        assert_eq!(saved_rules("nat"), ["-A POSTROUTING -o eth9 -j MASQUERADE"]);
        assert_eq!(
            saved_rules("filter"),
            ["-A DOCKER-USER -s 10.0.0.0/8 -j DROP"]
        );
        let save = run("iptables-save", &[]);
        assert!(
            !save.contains(":DOCKER -") && !save.contains("NETD-OWNED"),
            "{save}"
        );
    });
}

#[test]
fn rules_edited_behind_netds_back_are_repaired() {
    in_private_netns(|| {
        let (br, _) = bridge_with_port("br-ext", "vh3");
        let net = network("br-ext", "203.0.113.0/24");
        let ip = Ipv4Addr::new(203, 0, 113, 2);
        let view = NetworkView {
            network: &net,
            bridge_ifindex: br,
        };
        let mut dp = IptablesDataplane::new(IptablesConfig::default());
        dp.set_uplink(&uplink()).unwrap();
        dp.add_network(&view).unwrap();
        let p = publication(&net, 8080, 80, None);
        let pv = PublicationView {
            publication: &p,
            network: &net,
            container_ip: ip,
        };
        dp.publish(&pv).unwrap();
        // Like a firewalld reload (moby #15254): netd's record is now wrong, and the
        // planned deletion of the DNAT rule fails; netd re-reads the rules and retries.
        run("iptables", &["-t", "nat", "-F", "DOCKER"]);
        run(
            "iptables",
            &[
                "-t",
                "nat",
                "-D",
                "POSTROUTING",
                "-s",
                "203.0.113.0/24",
                "!",
                "-o",
                "br-ext",
                "-j",
                "MASQUERADE",
            ],
        );
        dp.unpublish(&pv).unwrap();
        let nat = saved_rules("nat");
        assert!(
            nat.contains(&"-A POSTROUTING -s 203.0.113.0/24 ! -o br-ext -j MASQUERADE".to_string()),
            "{nat:?}"
        );
        assert!(
            !nat.iter()
                .any(|r| r.contains("DNAT") || r.contains("--dport 80")),
            "{nat:?}"
        );
        // An edit that breaks no planned command is found by the next sync (what a
        // restarted daemon does).
        run("iptables", &["-t", "nat", "-A", "DOCKER", "-j", "RETURN"]);
        dp.sync(&SyncView {
            networks: vec![view],
            endpoints: vec![],
            publications: vec![pv],
        })
        .unwrap();
        let nat = saved_rules("nat");
        assert!(!nat.contains(&"-A DOCKER -j RETURN".to_string()), "{nat:?}");
        assert!(
            nat.contains(
                &"-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.2:80"
                    .to_string()
            ),
            "{nat:?}"
        );
    });
}

#[test]
fn drop_counters_and_conntrack_flush() {
    in_private_netns(|| {
        let (br, _) = bridge_with_port("br-ct", "vh4");
        new_link(LinkUnspec::new_with_index(1).up().build(), false);
        let net = network("br-ct", "192.0.2.0/24");
        let mut dp = IptablesDataplane::new(IptablesConfig::default());
        dp.set_uplink(&uplink()).unwrap();
        dp.add_network(&NetworkView {
            network: &net,
            bridge_ifindex: br,
        })
        .unwrap();
        // A UDP datagram over loopback creates a conntrack entry (the nat table is loaded).
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(b"x", "127.0.0.1:5999").unwrap();
        let flows = dp.conntrack().unwrap();
        assert!(
            flows
                .iter()
                .any(|f| f.proto == "udp" && f.original.ends_with("-> 127.0.0.1:5999")),
            "{flows:?}"
        );
        let n = dp.flush_conntrack(Some(&[Ipv4Addr::LOCALHOST])).unwrap();
        assert!(n >= 1, "deleted {n}");
        let flows = dp.conntrack().unwrap();
        assert!(
            !flows
                .iter()
                .any(|f| f.original.ends_with("-> 127.0.0.1:5999")),
            "{flows:?}"
        );
        sock.send_to(b"x", "127.0.0.1:5998").unwrap();
        assert!(dp.flush_conntrack(None).unwrap() >= 1);
        assert!(dp.conntrack().unwrap().is_empty());

        let stats = dp.stats().unwrap();
        assert_eq!(stats.dataplane, "iptables");
        assert!(
            stats
                .interfaces
                .iter()
                .any(|i| i.ifname == "br-ct" && i.ifindex == br),
            "{stats:?}"
        );
        assert!(stats.ports.is_empty());
        assert_eq!(stats.tables[0].name, "conntrack");
        // Every DROP reason of netd's chains is reported, with its packet count.
        assert!(
            stats.drops.iter().any(|d| d.reason == "not_published"),
            "{:?}",
            stats.drops
        );
    });
}

#[test]
fn drop_counters_sum_by_reason() {
    let save = "\
*raw
[3:180] -A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP
[1:60] -A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP
COMMIT
*filter
[5:300] -A DOCKER ! -i bridge1 -o bridge1 -j DROP
[2:120] -A DOCKER ! -i br2 -o br2 -j DROP
[7:1] -A DOCKER-FORWARD -i bridge1 -o bridge1 -j DROP
[9:1] -A DOCKER-FORWARD -i bridge1 -j ACCEPT
[4:1] -A DOCKER-INTERNAL ! -s 10.0.0.0/24 -o br3 -j DROP
COMMIT
";
    let got: Vec<(String, u64)> = drop_counters(save)
        .into_iter()
        .map(|d| (d.reason, d.packets))
        .collect();
    let want = [
        ("direct_access_to_container", 3),
        ("icc_disabled", 7),
        ("internal_network", 4),
        ("localhost_port_from_outside", 1),
        ("not_published", 7),
    ];
    assert_eq!(got, want.map(|(r, n)| (r.to_string(), n)));
}

#[test]
fn cleanup_script_removes_only_netds_rules() {
    let save = "\
*nat
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:NETD-OWNED-POSTROUTING - [0:0]
-A POSTROUTING -o eth0 -j MASQUERADE
-A POSTROUTING -s 192.0.2.0/24 ! -o br -j MASQUERADE
-A NETD-OWNED-POSTROUTING -s 192.0.2.0/24 ! -o br -j MASQUERADE
-A NETD-OWNED-POSTROUTING -s 10.1.0.0/24 ! -o gone -j MASQUERADE
COMMIT
";
    let script = cleanup_script(&Ruleset::parse(save).unwrap());
    assert_eq!(
        script,
        "*nat\n-D POSTROUTING -s 192.0.2.0/24 ! -o br -j MASQUERADE\n-F NETD-OWNED-POSTROUTING\n-F DOCKER\n-X NETD-OWNED-POSTROUTING\n-X DOCKER\nCOMMIT\n"
    );
}
