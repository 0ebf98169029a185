//! Checksums of translated packets are right with offloads on and off. With offloads on
//! (the default) veths pass CHECKSUM_PARTIAL packets whose checksum is finished, if at
//! all, later, so a receiver trusts them; the "off" variant turns TX and RX checksum
//! offload off on every interface of the path, so that every packet carries a full
//! checksum that the receiving stack verifies, and a tap at each receiver recomputes the
//! TCP/UDP checksum of every translated frame. Masquerade (TCP, UDP), published ports
//! (TCP, UDP) and hairpin; both dataplanes.

#[macro_use]
mod dp_common;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use dp_common::{
    Dataplane, IO, TcpEcho, UdpEcho, echo, endpoint, exec, host, network,
    packet::{Tap, l4_checksum_ok, seen},
    publish, sock, tcp_connect, udp_ask, udp_connected,
};
use netd_tests::{
    Lab,
    lab::{HOST_ADDR, UPLINK, WAN_ADDR, WAN_IF},
};

dataplane_tests! {
    both: [translated_traffic_with_offloads_on, translated_traffic_with_offloads_off],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

fn offloads_off(ns: &str, ifname: &str) {
    let out = exec(ns, &["ethtool", "-K", ifname, "tx", "off", "rx", "off"]);
    assert!(out.success(), "ethtool -K {ifname} in {ns}: {out}");
}

/// TCP through masquerade, a published port and hairpin (64 KiB each way, in rounds), and
/// UDP through masquerade and a published port.
fn run_traffic(lab: &Lab, c1: &str, c1_ip: Ipv4Addr) {
    let n1 = lab.netns_path(c1);
    let wan = lab.wan().path();
    let chunk: Vec<u8> = (0..8192u32).map(|i| (i * 31) as u8).collect();
    let wan_tcp = TcpEcho::start(&wan, sock(WAN_ADDR, 7000));
    let wan_udp = UdpEcho::start(&wan, sock(WAN_ADDR, 7001));
    let c1_tcp = TcpEcho::start(&n1, sock(ANY, 80));
    let c1_udp = UdpEcho::start(&n1, sock(ANY, 81));
    publish(lab, c1, "8080:80");
    publish(lab, c1, "8081:81/udp");
    for (ns, src, dst, what) in [
        (&n1, Some(sock(c1_ip, 40070)), wan_tcp.addr, "masquerade"),
        (
            &wan,
            Some(sock(WAN_ADDR, 45070)),
            host(8080),
            "published port",
        ),
        (&n1, None, host(8080), "hairpin"),
    ] {
        let mut c = tcp_connect(ns, src, dst, IO).unwrap_or_else(|e| panic!("{what}: {e}"));
        for round in 0..8 {
            let reply =
                echo(&mut c, &chunk).unwrap_or_else(|e| panic!("{what}, round {round}: {e}"));
            assert!(reply == chunk, "{what}, round {round}: the echo differs");
        }
    }
    for (ns, src, dst, what) in [
        (&n1, sock(c1_ip, 40071), wan_udp.addr, "UDP masquerade"),
        (
            &wan,
            sock(WAN_ADDR, 45071),
            host(8081),
            "UDP published port",
        ),
    ] {
        let s = udp_connected(ns, Some(src), dst).unwrap();
        assert_eq!(
            udp_ask(&s, &chunk[..1200]).unwrap_or_else(|e| panic!("{what}: {e}")),
            &chunk[..1200]
        );
    }
    assert_eq!(wan_tcp.conns().len(), 1);
    assert_eq!(c1_tcp.conns().len(), 2);
    assert!(!wan_udp.datagrams().is_empty() && !c1_udp.datagrams().is_empty());
}

fn translated_traffic_with_offloads_on(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.130.0.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    run_traffic(&lab, &c1, c1_ip);
}

/// Frames in `frames` that were translated on the way to `receiver` (their source or
/// destination is not the one the sender used): returns how many had a TCP/UDP checksum,
/// panics on a wrong one.
fn check(frames: &[Vec<u8>], translated: impl Fn(IpAddr, IpAddr) -> bool, receiver: &str) -> usize {
    let mut checked = 0;
    for f in frames {
        let Some(s) = seen(f) else { continue };
        if !translated(s.src.into(), s.dst.into()) {
            continue;
        }
        if let Some(ok) = l4_checksum_ok(f) {
            assert!(
                ok,
                "{receiver} got a translated frame with a wrong checksum: {s:?}"
            );
            checked += 1;
        }
    }
    checked
}

fn translated_traffic_with_offloads_off(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.130.1.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let c1_if = lab.netd_json(&["endpoint", "inspect", &c1])[0]["attachments"][0]["host_ifname"]
        .as_str()
        .expect("host_ifname")
        .to_string();
    offloads_off(&c1, "eth0");
    offloads_off(lab.wan().name(), WAN_IF);
    offloads_off(lab.host().name(), UPLINK);
    offloads_off(lab.host().name(), &c1_if);
    let wan_tap = Tap::open(&lab.wan().path(), WAN_IF);
    let c1_tap = Tap::open(&lab.netns_path(&c1), "eth0");

    run_traffic(&lab, &c1, c1_ip);

    let host_ip = IpAddr::V4(HOST_ADDR);
    let (wan_ip, c1_addr) = (IpAddr::V4(WAN_ADDR), IpAddr::V4(c1_ip));
    // At the wan: what the host sent it (masqueraded or from a published port).
    let at_wan = check(
        &wan_tap.frames(Duration::from_millis(100)),
        |s, d| s == host_ip && d == wan_ip,
        "the wan",
    );
    // In the container: what came from outside or through hairpin, translated to it.
    let at_c1 = check(
        &c1_tap.frames(Duration::from_millis(100)),
        |s, d| d == c1_addr && s != c1_addr,
        "the container",
    );
    assert!(
        at_wan >= 20,
        "only {at_wan} translated frames checked at the wan"
    );
    assert!(
        at_c1 >= 20,
        "only {at_c1} translated frames checked in the container"
    );
}
