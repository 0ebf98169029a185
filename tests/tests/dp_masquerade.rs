//! Masquerade: what endpoints send out through the uplink leaves with the uplink's address
//! (or `--snat-ip`), keeps its source port when it is free, and its replies come back;
//! `--masquerade false` turns it off; traffic between containers and to the host is never
//! masqueraded. Every test runs on both dataplanes; the SNAT port range (`--snat-ports`) is
//! asserted for eBPF only, because Docker's MASQUERADE picks colliding ports from the whole
//! port space.

#[macro_use]
mod dp_common;

use std::net::Ipv4Addr;

use dp_common::{
    Dataplane, IO, TcpEcho, UdpEcho, echo, endpoint, host, icmp, ip_ok, network,
    route_wan_via_host, sock, tcp_connect, udp_ask, udp_connected,
};
use netd_tests::lab::{HOST_ADDR, UPLINK, WAN_ADDR};

dataplane_tests! {
    both: [
        masquerade_tcp_keeps_a_free_source_port,
        masquerade_udp_keeps_a_free_source_port,
        masquerade_icmp_echo,
        masquerade_to_snat_ip,
        colliding_source_ports_get_another_port_and_both_work,
        masquerade_false_keeps_the_container_address,
        traffic_to_containers_and_the_host_keeps_the_container_address,
    ],
}

/// A TCP connection from `src` in `ns` to the wan echo server `srv`: the bytes go both
/// ways; returns the peer address the server saw.
fn tcp_through(
    ns: &std::path::Path,
    src: std::net::SocketAddr,
    srv: &TcpEcho,
) -> std::net::SocketAddr {
    let mut c = tcp_connect(ns, Some(src), srv.addr, IO)
        .unwrap_or_else(|e| panic!("connecting {src} -> {}: {e}", srv.addr));
    let payload = format!("from {src}").into_bytes();
    assert_eq!(echo(&mut c, &payload).expect("echo"), payload, "the reply");
    let conns = srv.wait_conns(1);
    let conn = conns
        .iter()
        .find(|c| c.data == payload)
        .unwrap_or_else(|| panic!("the server did not receive {payload:?}: {conns:?}"));
    conn.peer
}

fn masquerade_tcp_keeps_a_free_source_port(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.20.0.0/24", &[]);
    let (a, a_ip) = endpoint(&lab, "a", "app");
    let srv = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    let peer = tcp_through(&lab.netns_path(&a), sock(a_ip, 40000), &srv);
    assert_eq!(
        peer,
        sock(HOST_ADDR, 40000),
        "the wan must see the uplink address and the container's (free) source port"
    );
}

fn masquerade_udp_keeps_a_free_source_port(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.20.1.0/24", &[]);
    let (a, a_ip) = endpoint(&lab, "a", "app");
    let srv = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    let s = udp_connected(&lab.netns_path(&a), Some(sock(a_ip, 40001)), srv.addr).unwrap();
    assert_eq!(
        udp_ask(&s, b"udp out").expect("the echo must come back"),
        b"udp out"
    );
    assert_eq!(srv.peers(), [sock(HOST_ADDR, 40001)], "what the wan saw");
}

fn masquerade_icmp_echo(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.20.2.0/24", &[]);
    let (a, _) = endpoint(&lab, "a", "app");
    let sniffer = icmp::RawIcmp::open(&lab.wan().path());
    let reply = icmp::ping(&lab.netns_path(&a), WAN_ADDR, 0x4e44);
    assert!(
        reply.is_some(),
        "no echo reply (with the container's identifier 0x4e44) from {WAN_ADDR}"
    );
    let request = sniffer
        .wait_for(IO, |p| p.ty == icmp::ECHO_REQUEST && p.dst == WAN_ADDR)
        .expect("the wan saw no echo request");
    assert_eq!(
        request.src, HOST_ADDR,
        "the wan must see the uplink address"
    );
}

fn masquerade_to_snat_ip(dp: Dataplane) {
    let snat = Ipv4Addr::new(203, 0, 113, 5);
    let lab = dp.lab_with(&["--snat-ip", &snat.to_string()]);
    // The host owns the SNAT address too (a secondary one), so the wan resolves it to the
    // uplink; the first address stays 203.0.113.2.
    ip_ok(&[
        "-n",
        lab.host().name(),
        "addr",
        "add",
        "203.0.113.5/24",
        "dev",
        UPLINK,
    ]);
    network(&lab, "app", "10.20.3.0/24", &[]);
    let (a, a_ip) = endpoint(&lab, "a", "app");
    let ns = lab.netns_path(&a);

    let srv = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    assert_eq!(tcp_through(&ns, sock(a_ip, 40010), &srv), sock(snat, 40010));
    let usrv = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    let s = udp_connected(&ns, Some(sock(a_ip, 40011)), usrv.addr).unwrap();
    assert_eq!(
        udp_ask(&s, b"via snat ip").expect("UDP echo"),
        b"via snat ip"
    );
    assert_eq!(usrv.peers(), [sock(snat, 40011)]);
}

fn colliding_source_ports_get_another_port_and_both_work(dp: Dataplane) {
    let lab = dp.lab_with(&["--snat-ports", "50000-50009"]);
    network(&lab, "app", "10.20.4.0/24", &[]);
    let (a, a_ip) = endpoint(&lab, "a", "app");
    let (b, b_ip) = endpoint(&lab, "b", "app");
    let (na, nb) = (lab.netns_path(&a), lab.netns_path(&b));
    let in_range = |p: u16| (50000..=50009).contains(&p);

    // TCP: a's connection stays open while b connects from the same port.
    let srv = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7002));
    let mut ca = tcp_connect(&na, Some(sock(a_ip, 40002)), srv.addr, IO).expect("a connects");
    assert_eq!(echo(&mut ca, b"a1").unwrap(), b"a1");
    let mut cb = tcp_connect(&nb, Some(sock(b_ip, 40002)), srv.addr, IO)
        .expect("b connects from the same source port");
    assert_eq!(echo(&mut cb, b"b1").unwrap(), b"b1");
    assert_eq!(echo(&mut ca, b"a2").unwrap(), b"a2", "a still works");
    assert_eq!(echo(&mut cb, b"b2").unwrap(), b"b2", "b still works");
    let conns = srv.wait_conns(2);
    let peer_of = |data: &[u8]| {
        conns
            .iter()
            .find(|c| c.data == data)
            .unwrap_or_else(|| panic!("no connection received {data:?}: {conns:?}"))
            .peer
    };
    let (pa, pb) = (peer_of(b"a1a2"), peer_of(b"b1b2"));
    assert_eq!(pa, sock(HOST_ADDR, 40002), "the first flow keeps its port");
    assert_eq!(pb.ip(), std::net::IpAddr::V4(HOST_ADDR));
    assert_ne!(pb.port(), 40002, "the second flow must get another port");
    if dp == Dataplane::Ebpf {
        assert!(
            in_range(pb.port()),
            "{pb}: not from --snat-ports 50000-50009"
        );
    }

    // UDP, the same.
    let usrv = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7003));
    let ua = udp_connected(&na, Some(sock(a_ip, 40003)), usrv.addr).unwrap();
    let ub = udp_connected(&nb, Some(sock(b_ip, 40003)), usrv.addr).unwrap();
    assert_eq!(udp_ask(&ua, b"ua").expect("a's echo"), b"ua");
    assert_eq!(udp_ask(&ub, b"ub").expect("b's echo"), b"ub");
    assert_eq!(udp_ask(&ua, b"ua2").expect("a's echo again"), b"ua2");
    let peers = usrv.peers();
    assert_eq!(peers.len(), 2, "two flows, two sources: {peers:?}");
    assert_eq!(
        peers[0],
        sock(HOST_ADDR, 40003),
        "the first flow keeps its port"
    );
    assert_ne!(peers[1].port(), 40003);
    if dp == Dataplane::Ebpf {
        assert!(
            in_range(peers[1].port()),
            "{}: not from --snat-ports",
            peers[1]
        );
    }
}

fn masquerade_false_keeps_the_container_address(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "plain", "10.21.0.0/24", &["--masquerade", "false"]);
    route_wan_via_host(&lab, "10.21.0.0/24");
    let (a, a_ip) = endpoint(&lab, "a", "plain");
    let ns = lab.netns_path(&a);
    let srv = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    assert_eq!(tcp_through(&ns, sock(a_ip, 40020), &srv), sock(a_ip, 40020));
    let usrv = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    let s = udp_connected(&ns, Some(sock(a_ip, 40021)), usrv.addr).unwrap();
    assert_eq!(
        udp_ask(&s, b"unmasqueraded").expect("UDP echo"),
        b"unmasqueraded"
    );
    assert_eq!(usrv.peers(), [sock(a_ip, 40021)]);
}

fn traffic_to_containers_and_the_host_keeps_the_container_address(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.20.5.0/24", &[]);
    let (a, a_ip) = endpoint(&lab, "a", "app");
    let (b, b_ip) = endpoint(&lab, "b", "app");
    let ns = lab.netns_path(&a);
    let gateway = Ipv4Addr::new(10, 20, 5, 1);

    let to_b = TcpEcho::start(&lab.netns_path(&b), sock(b_ip, 7000));
    assert_eq!(
        tcp_through(&ns, sock(a_ip, 40030), &to_b),
        sock(a_ip, 40030),
        "a -> b"
    );
    let to_gw = TcpEcho::start(&lab.host().path(), sock(gateway, 7001));
    assert_eq!(
        tcp_through(&ns, sock(a_ip, 40031), &to_gw),
        sock(a_ip, 40031),
        "a -> gateway"
    );
    let to_host = TcpEcho::start(&lab.host().path(), host(7002));
    assert_eq!(
        tcp_through(&ns, sock(a_ip, 40032), &to_host),
        sock(a_ip, 40032),
        "a -> the host's uplink address"
    );
    let udp_b = UdpEcho::start(&lab.netns_path(&b), sock(b_ip, 7003));
    let s = udp_connected(&ns, Some(sock(a_ip, 40033)), udp_b.addr).unwrap();
    assert_eq!(udp_ask(&s, b"a to b").expect("UDP echo"), b"a to b");
    assert_eq!(udp_b.peers(), [sock(a_ip, 40033)], "UDP a -> b");
}
