//! Isolation: containers of different networks cannot reach each other (except through
//! published ports), `--icc false` drops traffic inside a network, an `--internal` network
//! has no traffic to or from outside its subnet and publishes nothing, and (eBPF only) a
//! container that sends with a source IP or MAC that is not its own is dropped. Each block
//! is checked with a positive control first, so a broken path cannot pass as "isolated",
//! and the drop counter of the reason must rise.
//!
//! The anti-spoofing tests are `ebpf_only`: their iptables twins exist but are ignored
//! with the reason (Docker has no anti-spoofing; it is a netd feature of the eBPF
//! dataplane), so `cargo test` shows them as ignored rather than omitting them.

#[macro_use]
mod dp_common;

use std::net::Ipv4Addr;

use dp_common::{
    Dataplane, DropReason, IO, TcpEcho, UdpEcho, assert_tcp_blocked, assert_udp_blocked, echo,
    endpoint, host, icmp, ip_ok, network,
    packet::{Tap, arp_reply},
    publish, route_wan_via_host, sock,
    stats::assert_drops_rise,
    stats::drop_count,
    tcp_connect, udp_ask, udp_connected,
};
use netd_tests::{
    Lab,
    cli::{EXIT_API, assert_refused},
    lab::WAN_ADDR,
};

dataplane_tests! {
    both: [
        containers_of_different_networks_cannot_reach_each_other,
        icc_false_drops_traffic_inside_the_network,
        an_internal_network_stays_inside_its_subnet,
    ],
    ebpf_only("iptables dataplane: Docker has no anti-spoofing (a container can send with \
               any source IP or MAC, and ARP for any address)"): [
        spoofed_source_ip_is_dropped,
        spoofed_source_mac_is_dropped,
        spoofed_arp_is_dropped,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// A TCP round trip from `ns` to `srv` that must work (the positive control).
fn tcp_works(ns: &std::path::Path, srv: &TcpEcho, what: &str) {
    let mut c = tcp_connect(ns, None, srv.addr, IO).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        echo(&mut c, what.as_bytes()).unwrap(),
        what.as_bytes(),
        "{what}"
    );
}

fn containers_of_different_networks_cannot_reach_each_other(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "front", "10.50.0.0/24", &[]);
    network(&lab, "back", "10.50.1.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "front");
    let (c2, c2_ip) = endpoint(&lab, "c2", "front");
    let (c3, c3_ip) = endpoint(&lab, "c3", "back");
    let (n1, n3) = (lab.netns_path(&c1), lab.netns_path(&c3));
    let s2 = TcpEcho::start(&lab.netns_path(&c2), sock(c2_ip, 7000));
    let s3 = TcpEcho::start(&n3, sock(ANY, 7000));
    let s1 = TcpEcho::start(&n1, sock(ANY, 7000));
    tcp_works(&n1, &s2, "c1 -> c2 on the same network");

    let reason = dp.drop_name(DropReason::Isolation);
    let before = drop_count(&lab, reason);
    assert_tcp_blocked(&n1, None, sock(c3_ip, 7000), "front -> back");
    assert_tcp_blocked(&n3, None, sock(c1_ip, 7000), "back -> front");
    assert_udp_blocked(&n1, None, sock(c3_ip, 7001), "UDP front -> back");
    assert_drops_rise(&lab, reason, before);
    assert!(s3.conns().is_empty(), "c3 was reached: {:?}", s3.conns());
    assert!(s1.conns().is_empty(), "c1 was reached: {:?}", s1.conns());

    // Except through a published port on the host's address.
    publish(&lab, &c3, "8080:7000");
    let mut c = tcp_connect(&n1, None, host(8080), IO).expect("c1 -> host:8080 -> c3");
    assert_eq!(echo(&mut c, b"via the host").unwrap(), b"via the host");
    assert_eq!(s3.wait_conns(1).len(), 1);
}

fn icc_false_drops_traffic_inside_the_network(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "noicc", "10.50.2.0/24", &["--icc", "false"]);
    let (c1, _) = endpoint(&lab, "c1", "noicc");
    let (c2, c2_ip) = endpoint(&lab, "c2", "noicc");
    let n1 = lab.netns_path(&c1);
    let wan = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    tcp_works(&n1, &wan, "c1 -> wan with icc off");

    let s2 = TcpEcho::start(&lab.netns_path(&c2), sock(ANY, 7000));
    let reason = dp.drop_name(DropReason::Icc);
    let before = drop_count(&lab, reason);
    assert_tcp_blocked(&n1, None, sock(c2_ip, 7000), "c1 -> c2 with --icc false");
    assert_udp_blocked(
        &n1,
        None,
        sock(c2_ip, 7001),
        "UDP c1 -> c2 with --icc false",
    );
    assert_drops_rise(&lab, reason, before);
    assert!(s2.conns().is_empty(), "c2 was reached: {:?}", s2.conns());
}

/// Make sure `ns` has a default route via `gw`: an internal network's container may have
/// none, but isolation must not depend on the container's own routing.
fn force_default_route(ns: &str, gw: Ipv4Addr) {
    let routes = ip_ok(&["-n", ns, "route", "show", "default"]);
    if routes.trim().is_empty() {
        ip_ok(&["-n", ns, "route", "add", "default", "via", &gw.to_string()]);
    }
}

fn an_internal_network_stays_inside_its_subnet(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "inner", "10.50.3.0/24", &["--internal"]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "inner");
    let (c2, c2_ip) = endpoint(&lab, "c2", "inner");
    let n1 = lab.netns_path(&c1);
    let s2 = TcpEcho::start(&lab.netns_path(&c2), sock(c2_ip, 7000));
    tcp_works(&n1, &s2, "c1 -> c2 inside the internal network");

    force_default_route(&c1, Ipv4Addr::new(10, 50, 3, 1));
    let wan = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    let reason = dp.drop_name(DropReason::Internal);
    let before = drop_count(&lab, reason);
    assert_tcp_blocked(&n1, None, wan.addr, "internal -> wan");
    assert_udp_blocked(&n1, None, sock(WAN_ADDR, 7001), "UDP internal -> wan");
    assert_drops_rise(&lab, reason, before);
    assert!(
        wan.conns().is_empty(),
        "the wan was reached: {:?}",
        wan.conns()
    );

    route_wan_via_host(&lab, "10.50.3.0/24");
    let s1 = TcpEcho::start(&n1, sock(ANY, 7000));
    assert_tcp_blocked(
        &lab.wan().path(),
        None,
        sock(c1_ip, 7000),
        "wan -> internal",
    );
    assert!(s1.conns().is_empty(), "c1 was reached: {:?}", s1.conns());

    let out = lab.netd(&["port", "publish", &c1, "8080:7000"]);
    assert_refused(&out, EXIT_API, &["inner"], &["internal"]);
    assert_eq!(
        lab.netd_json(&["port", "ls", "--json"]),
        serde_json::json!([])
    );
}

/// Two endpoints on one network and a UDP echo server on the second; the first has
/// already talked to it from its own address (so ARP is resolved and the path is known to
/// work).
struct SpoofSetup {
    lab: Lab,
    c1: String,
    c1_ip: Ipv4Addr,
    peer: UdpEcho,
    wan: UdpEcho,
}

fn spoof_setup(dp: Dataplane, subnet: &str) -> SpoofSetup {
    let lab = dp.lab();
    network(&lab, "app", subnet, &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let (c2, c2_ip) = endpoint(&lab, "c2", "app");
    let n1 = lab.netns_path(&c1);
    let peer = UdpEcho::start(&lab.netns_path(&c2), sock(c2_ip, 7000));
    let wan = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    for srv in [&peer, &wan] {
        let s = udp_connected(&n1, Some(sock(c1_ip, 40000)), srv.addr).unwrap();
        assert_eq!(
            udp_ask(&s, b"honest").expect("the positive control"),
            b"honest"
        );
    }
    SpoofSetup {
        lab,
        c1,
        c1_ip,
        peer,
        wan,
    }
}

fn spoofed_source_ip_is_dropped(dp: Dataplane) {
    let t = spoof_setup(dp, "10.50.4.0/24");
    // The container takes an address that is not its own (a /32, so its routes stay).
    let forged = Ipv4Addr::new(10, 50, 4, 99);
    ip_ok(&[
        "-n",
        &t.c1,
        "addr",
        "add",
        &format!("{forged}/32"),
        "dev",
        "eth0",
    ]);
    let n1 = t.lab.netns_path(&t.c1);
    let reason = dp.drop_name(DropReason::SpoofedIp);
    let before = drop_count(&t.lab, reason);
    assert_udp_blocked(
        &n1,
        Some(sock(forged, 40001)),
        t.peer.addr,
        "forged source to a peer",
    );
    assert_udp_blocked(
        &n1,
        Some(sock(forged, 40002)),
        t.wan.addr,
        "forged source to the wan",
    );
    assert_drops_rise(&t.lab, reason, before);
    for (srv, what) in [(&t.peer, "the peer"), (&t.wan, "the wan")] {
        let got: Vec<_> = srv
            .peers()
            .into_iter()
            .filter(|p| p.port() != 40000)
            .collect();
        assert!(
            got.is_empty(),
            "{what} received forged datagrams from {got:?}"
        );
    }
    // The container's own address still works.
    let s = udp_connected(&n1, Some(sock(t.c1_ip, 40003)), t.peer.addr).unwrap();
    assert_eq!(
        udp_ask(&s, b"honest again").expect("own address"),
        b"honest again"
    );
}

fn spoofed_source_mac_is_dropped(dp: Dataplane) {
    let t = spoof_setup(dp, "10.50.5.0/24");
    ip_ok(&[
        "-n",
        &t.c1,
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:00:00:99",
    ]);
    let n1 = t.lab.netns_path(&t.c1);
    let reason = dp.drop_name(DropReason::SpoofedMac);
    let before = drop_count(&t.lab, reason);
    assert_udp_blocked(
        &n1,
        Some(sock(t.c1_ip, 40001)),
        t.peer.addr,
        "forged MAC to a peer",
    );
    assert_udp_blocked(
        &n1,
        Some(sock(t.c1_ip, 40002)),
        t.wan.addr,
        "forged MAC to the wan",
    );
    assert_drops_rise(&t.lab, reason, before);
    for (srv, what) in [(&t.peer, "the peer"), (&t.wan, "the wan")] {
        let got: Vec<_> = srv
            .peers()
            .into_iter()
            .filter(|p| p.port() != 40000)
            .collect();
        assert!(
            got.is_empty(),
            "{what} received datagrams with a forged MAC from {got:?}"
        );
    }
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
fn mac_bytes(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad MAC {s}")))
        .collect();
    v.try_into().unwrap_or_else(|_| panic!("bad MAC {s}"))
}

/// The MAC the host's neighbour table has for `ip`, if any.
fn host_neighbour(lab: &Lab, ip: Ipv4Addr) -> Option<String> {
    let out = ip_ok(&["-n", lab.host().name(), "neigh", "show", &ip.to_string()]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    words.get(at + 1).map(|m| m.to_string())
}

fn spoofed_arp_is_dropped(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.50.6.0/24", &[]);
    let gateway = Ipv4Addr::new(10, 50, 6, 1);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let (c2, c2_ip) = endpoint(&lab, "c2", "app");
    let att =
        |name: &str| lab.netd_json(&["endpoint", "inspect", name])[0]["attachments"][0].clone();
    let (a1, a2) = (att(&c1), att(&c2));
    let c1_mac = a1["mac"].as_str().expect("mac").to_string();
    let c2_mac = a2["mac"].as_str().expect("mac").to_string();
    let c1_if = a1["host_ifname"].as_str().expect("host_ifname").to_string();

    // The host learns c2's MAC, then waits out the neighbour lock time (1 s), after which
    // an ARP reply may overwrite the entry.
    assert!(
        icmp::ping(&lab.host().path(), c2_ip, 7).is_some(),
        "host -> c2"
    );
    assert_eq!(
        host_neighbour(&lab, c2_ip).as_deref(),
        Some(c2_mac.as_str())
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let reason = dp.drop_name(DropReason::SpoofedArp);
    let before = drop_count(&lab, reason);
    let tap = Tap::open(&lab.host().path(), &c1_if);
    let forge = Tap::open(&lab.netns_path(&c1), "eth0");
    let frame = arp_reply(mac_bytes(&c1_mac), c2_ip, gateway);
    for _ in 0..3 {
        forge.send(&frame).expect("sending the forged ARP reply");
    }
    let seen = tap.frames(std::time::Duration::from_millis(300));
    assert!(
        seen.iter()
            .any(|f| f.len() >= 42 && f[12..14] == [8, 6] && f[28..32] == c2_ip.octets()),
        "the forged ARP reply never reached {c1_if}; the test proves nothing"
    );
    assert_drops_rise(&lab, reason, before);
    assert_eq!(
        host_neighbour(&lab, c2_ip).as_deref(),
        Some(c2_mac.as_str()),
        "the host's neighbour entry for c2 was poisoned with c1's MAC {c1_mac}"
    );
    assert!(
        icmp::ping(&lab.host().path(), c2_ip, 8).is_some(),
        "host -> c2 after the attempt"
    );
}
