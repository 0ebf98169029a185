//! Hairpin: a container that connects to HOST_IP:HOST_PORT reaches the published service,
//! whether the port is its own, another container's on its network, or one on another
//! network; the bytes go both ways (a connected socket accepts the replies only if they
//! come back from the published address). Every test runs on both dataplanes.

#[macro_use]
mod dp_common;

use std::{net::Ipv4Addr, path::Path};

use dp_common::{
    Dataplane, IO, TcpEcho, UdpEcho, echo, endpoint, host, network, publish, sock, tcp_connect,
    udp_ask, udp_connected,
};

dataplane_tests! {
    both: [
        a_container_reaches_its_own_published_port,
        a_container_reaches_a_published_port_on_its_network,
        a_container_reaches_a_published_port_on_another_network,
        udp_hairpin_on_the_same_network,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// Connect from `ns` to the host's `port` and echo 256 KiB through it in 16 KiB rounds,
/// so that many segments (and their checksums) go each way; returns what the server
/// received in total.
fn hairpin_bulk(ns: &Path, port: u16, srv: &TcpEcho) {
    let mut c = tcp_connect(ns, None, host(port), IO)
        .unwrap_or_else(|e| panic!("connecting to the host's port {port}: {e}"));
    let mut sent = Vec::new();
    for round in 0..16u8 {
        let chunk: Vec<u8> = (0..16384u32).map(|i| (i as u8) ^ round).collect();
        let reply = echo(&mut c, &chunk).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            reply == chunk,
            "round {round}: the echo differs from what was sent"
        );
        sent.extend_from_slice(&chunk);
    }
    let conns = srv.wait_conns(1);
    assert_eq!(
        conns.len(),
        1,
        "one connection reached the service: {conns:?}"
    );
    assert!(
        conns[0].data == sent,
        "the service received {} bytes, {} were sent",
        conns[0].data.len(),
        sent.len()
    );
}

fn a_container_reaches_its_own_published_port(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.40.0.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let srv = TcpEcho::start(&lab.netns_path(&c1), sock(ANY, 80));
    publish(&lab, &c1, "8080:80");
    hairpin_bulk(&lab.netns_path(&c1), 8080, &srv);
}

fn a_container_reaches_a_published_port_on_its_network(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.40.1.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let (c2, _) = endpoint(&lab, "c2", "app");
    let srv = TcpEcho::start(&lab.netns_path(&c1), sock(ANY, 80));
    publish(&lab, &c1, "8080:80");
    hairpin_bulk(&lab.netns_path(&c2), 8080, &srv);
}

fn a_container_reaches_a_published_port_on_another_network(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "front", "10.40.2.0/24", &[]);
    network(&lab, "back", "10.40.3.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "front");
    let (c3, _) = endpoint(&lab, "c3", "back");
    let s1 = TcpEcho::start(&lab.netns_path(&c1), sock(ANY, 80));
    let s3 = TcpEcho::start(&lab.netns_path(&c3), sock(ANY, 80));
    publish(&lab, &c1, "8080:80");
    publish(&lab, &c3, "8090:80");
    hairpin_bulk(&lab.netns_path(&c3), 8080, &s1);
    hairpin_bulk(&lab.netns_path(&c1), 8090, &s3);
}

fn udp_hairpin_on_the_same_network(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.40.4.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let (c2, _) = endpoint(&lab, "c2", "app");
    let srv = UdpEcho::start(&lab.netns_path(&c1), sock(ANY, 81));
    publish(&lab, &c1, "8081:81/udp");
    for (from, what) in [(&c2, "c2"), (&c1, "c1 itself")] {
        let s = udp_connected(&lab.netns_path(from), None, host(8081)).unwrap();
        let payload = format!("udp hairpin from {what}").into_bytes();
        assert_eq!(
            udp_ask(&s, &payload)
                .unwrap_or_else(|e| panic!("{what}: no reply from the published address: {e}")),
            payload
        );
        assert!(
            srv.datagrams().iter().any(|d| d.data == payload),
            "{what}: the service did not receive the datagram"
        );
    }
}
