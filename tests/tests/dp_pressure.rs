//! Table pressure: when no masquerade port is free, new flows are dropped and counted
//! (`nat_exhausted`) and traffic recovers when space frees up; when the conntrack and NAT
//! tables are small and churned by many new flows, an established flow whose translated
//! port differs from its own keeps working on the same translated port.
//!
//! Both tests are `ebpf_only`, their iptables twins ignored with the reason:
//! `--snat-ports`, `--conntrack-max` and `--nat-max` size the eBPF dataplane's tables;
//! Docker's MASQUERADE draws from the whole port space and the kernel's conntrack is sized
//! for the whole host, so a test cannot put them under pressure.

#[macro_use]
mod dp_common;

use std::net::{IpAddr, SocketAddr};

use dp_common::{
    Dataplane, IO, TcpEcho, UdpEcho, assert_udp_blocked, echo, endpoint, network, sock,
    stats::{assert_drops_rise, drop_count},
    tcp_connect, udp_ask, udp_connected,
};
use netd_tests::lab::{HOST_ADDR, WAN_ADDR};

dataplane_tests! {
    both: [],
    ebpf_only("iptables dataplane: --snat-ports limits the eBPF NAT only; Docker's \
               MASQUERADE draws from the whole port space, which a test cannot exhaust"): [
        snat_port_exhaustion_drops_new_flows_and_recovers,
    ],
    ebpf_only("iptables dataplane: --conntrack-max and --nat-max size the eBPF tables only; \
               the kernel's conntrack is sized for the whole host (nf_conntrack_max), which \
               a test must not change"): [
        established_flows_keep_their_port_under_table_pressure,
    ],
}

fn snat_port_exhaustion_drops_new_flows_and_recovers(dp: Dataplane) {
    let lab = dp.lab_with(&["--snat-ports", "50000-50001"]);
    network(&lab, "app", "10.140.0.0/24", &[]);
    let srv = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    let eps: Vec<(String, std::net::Ipv4Addr)> = ["a", "b", "c", "d"]
        .iter()
        .map(|s| endpoint(&lab, s, "app"))
        .collect();
    // a keeps 40000; b and c take the two ports of the range.
    for (name, ip) in &eps[..3] {
        let s = udp_connected(&lab.netns_path(name), Some(sock(*ip, 40000)), srv.addr).unwrap();
        assert_eq!(
            udp_ask(&s, name.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}")),
            name.as_bytes()
        );
    }
    let mut ports: Vec<u16> = srv.peers().iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    assert_eq!(ports, [40000, 50000, 50001], "{:?}", srv.peers());

    let (d, d_ip) = &eps[3];
    let before = drop_count(&lab, "nat_exhausted");
    assert_udp_blocked(
        &lab.netns_path(d),
        Some(sock(*d_ip, 40000)),
        srv.addr,
        "a fourth flow with no port left",
    );
    assert_drops_rise(&lab, "nat_exhausted", before);
    assert_eq!(
        srv.peers().len(),
        3,
        "the fourth flow reached the wan: {:?}",
        srv.peers()
    );

    // a's flows go: its port is free again, and d's next datagram gets through.
    lab.netd_ok(&["conntrack", "flush", "--endpoint", &eps[0].0]);
    let s = udp_connected(&lab.netns_path(d), Some(sock(*d_ip, 40000)), srv.addr).unwrap();
    assert_eq!(
        udp_ask(&s, b"recovered").expect("d after space freed up"),
        b"recovered"
    );
}

fn established_flows_keep_their_port_under_table_pressure(dp: Dataplane) {
    let lab = dp.lab_with(&["--conntrack-max", "64", "--nat-max", "64"]);
    network(&lab, "app", "10.140.1.0/24", &[]);
    let (a, a_ip) = endpoint(&lab, "a", "app");
    let (b, b_ip) = endpoint(&lab, "b", "app");
    let (c, c_ip) = endpoint(&lab, "c", "app");
    let srv = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    let churn = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    // a holds 40000, so b's flow from the same port is translated to another one: a flow
    // re-created from scratch mid-stream would get a different port (or a's).
    let mut fa = tcp_connect(&lab.netns_path(&a), Some(sock(a_ip, 40000)), srv.addr, IO).unwrap();
    let mut fb = tcp_connect(&lab.netns_path(&b), Some(sock(b_ip, 40000)), srv.addr, IO).unwrap();
    let mut sent = (Vec::new(), Vec::new());
    let nc = lab.netns_path(&c);
    for round in 0..10u16 {
        for (stream, log, who) in [(&mut fa, &mut sent.0, "a"), (&mut fb, &mut sent.1, "b")] {
            let msg = format!("{who}{round}|").into_bytes();
            let reply = echo(stream, &msg).unwrap_or_else(|e| panic!("{who}, round {round}: {e}"));
            assert_eq!(reply, msg, "{who}, round {round}");
            log.extend_from_slice(&msg);
        }
        // Twenty new flows per round churn tables of 64 entries.
        for i in 0..20 {
            let port = 41000 + round * 20 + i;
            if let Ok(s) = udp_connected(&nc, Some(sock(c_ip, port)), churn.addr) {
                let _ = s.send(b"churn");
            }
        }
    }
    let conns = srv.conns();
    assert_eq!(
        conns.len(),
        2,
        "each flow is one connection to the end: {conns:?}"
    );
    let host_ip = IpAddr::V4(HOST_ADDR);
    let of = |data: &[u8]| conns.iter().find(|c| c.data == data).map(|c| c.peer);
    let pa = of(&sent.0)
        .unwrap_or_else(|| panic!("a's bytes did not all arrive on one connection: {conns:?}"));
    let pb = of(&sent.1)
        .unwrap_or_else(|| panic!("b's bytes did not all arrive on one connection: {conns:?}"));
    assert_eq!(pa, sock(HOST_ADDR, 40000));
    assert!(pb.ip() == host_ip && pb.port() != 40000, "{pb}");
    assert!(
        !churn.datagrams().is_empty(),
        "the churn never reached the wan"
    );
}
