//! ICMP errors for translated flows are translated, the quoted inner header included, so
//! that sockets see their errors, PMTU discovery works and traceroute shows the hops: port
//! unreachable for a masqueraded and for a published flow, fragmentation needed from a
//! router beyond the wan, and TTL exceeded from the host and from that router. Every test
//! runs on both dataplanes; the raw ICMP packet the receiver got is checked (outer and
//! inner addresses, ICMP and inner IP checksums).
//!
//! Topology for the router cases: the wan namespace forwards to a "far" namespace
//! (198.51.100.0/24) with a 1300-byte route MTU on the way.

#[macro_use]
mod dp_common;

use std::{io, net::Ipv4Addr, path::Path};

use dp_common::{
    Dataplane, IO, TcpEcho, echo, endpoint, exec, host,
    icmp::{DEST_UNREACHABLE, Icmp, RawIcmp, inner_tuple},
    ip_ok, network, publish, sock, tcp_connect, udp_ask, udp_connected,
};
use netd_tests::{
    Lab, NetnsGuard,
    lab::{HOST_ADDR, WAN_ADDR},
};

dataplane_tests! {
    both: [
        port_unreachable_reaches_a_masqueraded_socket,
        port_unreachable_reaches_a_wan_client_of_a_published_port,
        fragmentation_needed_from_beyond_the_wan_makes_pmtu_discovery_work,
        ttl_exceeded_comes_back_from_the_host_and_from_the_router_beyond,
    ],
}

const UDP: u8 = 17;
const TCP: u8 = 6;
const TIME_EXCEEDED: u8 = 11;
const PORT_UNREACHABLE: u8 = 3;
const FRAG_NEEDED: u8 = 4;
const FAR_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const FAR_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const FAR_MTU: u16 = 1300;

/// Assert an error message's checksums and return its quoted tuple.
fn checked(p: &Icmp) -> (Ipv4Addr, Ipv4Addr, u8, u16, u16) {
    assert!(p.checksum_ok(), "bad ICMP checksum: {p:?}");
    assert!(
        p.inner_ip_checksum_ok(),
        "bad checksum of the quoted IP header: {p:?}"
    );
    inner_tuple(&p.body).unwrap_or_else(|| panic!("no quoted header: {p:?}"))
}

fn port_unreachable_reaches_a_masqueraded_socket(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.70.0.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let n1 = lab.netns_path(&c1);
    let raw = RawIcmp::open(&n1);
    let closed = sock(WAN_ADDR, 7999);
    let s = udp_connected(&n1, Some(sock(c1_ip, 40030)), closed).unwrap();
    let err = udp_ask(&s, b"anyone?").expect_err("nothing listens on the wan's port 7999");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    let p = raw
        .wait_for(IO, |p| {
            p.ty == DEST_UNREACHABLE && p.code == PORT_UNREACHABLE
        })
        .expect("the container saw no port unreachable");
    assert_eq!((p.src, p.dst), (WAN_ADDR, c1_ip), "outer addresses: {p:?}");
    assert_eq!(
        checked(&p),
        (c1_ip, WAN_ADDR, UDP, 40030, 7999),
        "the quoted header must be the datagram as the container sent it"
    );
}

fn port_unreachable_reaches_a_wan_client_of_a_published_port(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.70.1.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "app");
    publish(&lab, &c1, "8081:81/udp");
    let raw = RawIcmp::open(&lab.wan().path());
    let s = udp_connected(&lab.wan().path(), Some(sock(WAN_ADDR, 45030)), host(8081)).unwrap();
    let err = udp_ask(&s, b"anyone?").expect_err("nothing listens on the container's port 81");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    let p = raw
        .wait_for(IO, |p| {
            p.ty == DEST_UNREACHABLE && p.code == PORT_UNREACHABLE
        })
        .expect("the wan saw no port unreachable");
    assert_eq!(
        (p.src, p.dst),
        (HOST_ADDR, WAN_ADDR),
        "outer addresses: {p:?}"
    );
    assert_eq!(
        checked(&p),
        (WAN_ADDR, HOST_ADDR, UDP, 45030, 8081),
        "the quoted header must be the datagram as the wan client sent it"
    );
}

/// The wan namespace becomes a router to a "far" namespace; `route_mtu` on its route
/// there. Returns the far namespace's guard.
fn far_beyond_the_wan(lab: &Lab, route_mtu: u16) -> NetnsGuard {
    let far = NetnsGuard::with_name(&lab.name("far")).expect("far namespace");
    let (w, f) = (lab.wan().name(), far.name());
    ip_ok(&[
        "-n", w, "link", "add", "wfar", "type", "veth", "peer", "name", "far0", "netns", f,
    ]);
    ip_ok(&[
        "-n",
        w,
        "addr",
        "add",
        &format!("{FAR_ROUTER}/24"),
        "dev",
        "wfar",
    ]);
    ip_ok(&["-n", w, "link", "set", "wfar", "up"]);
    ip_ok(&[
        "-n",
        f,
        "addr",
        "add",
        &format!("{FAR_ADDR}/24"),
        "dev",
        "far0",
    ]);
    ip_ok(&["-n", f, "link", "set", "far0", "up"]);
    ip_ok(&[
        "-n",
        f,
        "route",
        "add",
        "default",
        "via",
        &FAR_ROUTER.to_string(),
    ]);
    // Forwarding honours a route's MTU: packets bigger than it with DF set get a
    // fragmentation-needed back, as on a real path with a smaller link.
    let mtu = route_mtu.to_string();
    ip_ok(&[
        "-n",
        w,
        "route",
        "replace",
        "198.51.100.0/24",
        "dev",
        "wfar",
        "src",
        &FAR_ROUTER.to_string(),
        "mtu",
        &mtu,
    ]);
    let out = exec(w, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    assert!(out.success(), "enabling forwarding in the wan: {out}");
    far
}

fn fragmentation_needed_from_beyond_the_wan_makes_pmtu_discovery_work(dp: Dataplane) {
    let lab = dp.lab();
    let far = far_beyond_the_wan(&lab, FAR_MTU);
    network(&lab, "app", "10.70.2.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let n1 = lab.netns_path(&c1);
    let raw = RawIcmp::open(&n1);
    let srv = TcpEcho::start(&far.path(), sock(FAR_ADDR, 7000));

    // Full-size segments (MSS 1460 both ways) with DF: they only get through once the
    // container has learnt the path MTU from the translated fragmentation-needed.
    let mut c = tcp_connect(&n1, Some(sock(c1_ip, 40040)), srv.addr, IO).expect("connect");
    let chunk: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
    for round in 0..8 {
        let reply = echo(&mut c, &chunk).unwrap_or_else(|e| {
            panic!("round {round}: {e} (PMTU discovery broken: no translated frag-needed?)")
        });
        assert!(reply == chunk, "round {round}: the echo differs");
    }
    let p = raw
        .wait_for(IO, |p| p.ty == DEST_UNREACHABLE && p.code == FRAG_NEEDED)
        .expect("the container saw no fragmentation-needed");
    assert_eq!((p.src, p.dst), (WAN_ADDR, c1_ip), "outer addresses: {p:?}");
    assert_eq!(p.seq, FAR_MTU, "the next-hop MTU field: {p:?}");
    assert_eq!(checked(&p), (c1_ip, FAR_ADDR, TCP, 40040, 7000));
}

/// Send one UDP datagram with `ttl` from `ns` (from `src`) to the far address; return
/// the time-exceeded message the namespace got back.
fn probe(ns: &Path, raw: &RawIcmp, src: std::net::SocketAddr, ttl: u32) -> Option<Icmp> {
    let s = udp_connected(ns, Some(src), sock(FAR_ADDR, 33434)).unwrap();
    s.set_ttl(ttl).unwrap();
    for _ in 0..3 {
        let _ = s.send(b"traceroute probe");
        let got = raw.wait_for(std::time::Duration::from_secs(1), |p| {
            p.ty == TIME_EXCEEDED && inner_tuple(&p.body).is_some_and(|t| t.3 == src.port())
        });
        if got.is_some() {
            return got;
        }
    }
    None
}

fn ttl_exceeded_comes_back_from_the_host_and_from_the_router_beyond(dp: Dataplane) {
    let lab = dp.lab();
    let _far = far_beyond_the_wan(&lab, 1500);
    network(&lab, "app", "10.70.3.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let n1 = lab.netns_path(&c1);
    let raw = RawIcmp::open(&n1);

    let hop1 =
        probe(&n1, &raw, sock(c1_ip, 40050), 1).expect("no time exceeded from hop 1 (the host)");
    assert_eq!(hop1.dst, c1_ip);
    assert_eq!(
        checked(&hop1),
        (c1_ip, FAR_ADDR, UDP, 40050, 33434),
        "{hop1:?}"
    );

    let hop2 = probe(&n1, &raw, sock(c1_ip, 40051), 2).expect(
        "no time exceeded from hop 2 (the wan router), or the host did not decrement the TTL",
    );
    assert_eq!(
        (hop2.src, hop2.dst),
        (WAN_ADDR, c1_ip),
        "outer addresses: {hop2:?}"
    );
    assert_eq!(
        checked(&hop2),
        (c1_ip, FAR_ADDR, UDP, 40051, 33434),
        "the quoted header must be the probe as the container sent it"
    );
}
