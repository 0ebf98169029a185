//! Fragments: UDP datagrams larger than the MTU go through masquerade and through a
//! published port in both directions; every fragment, the non-first ones (which carry no
//! ports) included, is translated, so the peer reassembles and echoes the whole datagram.
//! Every test runs on both dataplanes.

#[macro_use]
mod dp_common;

use std::{net::Ipv4Addr, time::Duration};

use dp_common::{
    Dataplane, UdpEcho, endpoint, host, network, packet::Tap, publish, sock, udp_ask, udp_connected,
};
use netd_tests::lab::{HOST_ADDR, WAN_ADDR, WAN_IF};

dataplane_tests! {
    both: [
        fragmented_udp_through_masquerade,
        fragmented_udp_through_a_published_port,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
/// Three fragments at an MTU of 1500.
const BIG: usize = 4000;

fn payload(seed: u8) -> Vec<u8> {
    (0..BIG).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

/// IPv4 fragments in `frames`: (src, dst, offset in bytes) of those with a non-zero
/// offset.
fn later_fragments(frames: &[Vec<u8>]) -> Vec<(Ipv4Addr, Ipv4Addr, usize)> {
    frames
        .iter()
        .filter(|f| f.len() >= 34 && f[12..14] == [8, 0])
        .filter_map(|f| {
            let ip = &f[14..];
            let offset = usize::from(u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) * 8;
            let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
            (offset > 0).then(|| (addr(12), addr(16), offset))
        })
        .collect()
}

fn fragmented_udp_through_masquerade(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.120.0.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let srv = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    let tap = Tap::open(&lab.wan().path(), WAN_IF);
    let s = udp_connected(&lab.netns_path(&c1), Some(sock(c1_ip, 40060)), srv.addr).unwrap();
    let data = payload(1);
    let reply = udp_ask(&s, &data).expect("the whole datagram must come back");
    assert!(reply == data, "the echo differs ({} bytes)", reply.len());
    let got = srv.datagrams();
    assert!(
        got.iter()
            .any(|d| d.peer == sock(HOST_ADDR, 40060) && d.data == data),
        "the wan did not reassemble the datagram from {HOST_ADDR}:40060: {:?}",
        got.iter()
            .map(|d| (d.peer, d.data.len()))
            .collect::<Vec<_>>()
    );
    let frags = later_fragments(&tap.frames(Duration::from_millis(100)));
    let outgoing: Vec<_> = frags.iter().filter(|f| f.1 == WAN_ADDR).collect();
    assert!(
        !outgoing.is_empty(),
        "no non-first fragment reached the wan: {frags:?}"
    );
    assert!(
        outgoing.iter().all(|f| f.0 == HOST_ADDR),
        "a non-first fragment left untranslated: {outgoing:?}"
    );
}

fn fragmented_udp_through_a_published_port(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.120.1.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let srv = UdpEcho::start(&lab.netns_path(&c1), sock(ANY, 81));
    publish(&lab, &c1, "8081:81/udp");
    // On the wan's side: the fast path may hand the reply to the uplink's peer directly,
    // past the host's capture point on the uplink.
    let tap = Tap::open(&lab.wan().path(), WAN_IF);
    let client = sock(WAN_ADDR, 45060);
    let s = udp_connected(&lab.wan().path(), Some(client), host(8081)).unwrap();
    let data = payload(2);
    let reply = udp_ask(&s, &data).expect("the whole datagram must come back");
    assert!(reply == data, "the echo differs ({} bytes)", reply.len());
    assert!(
        srv.datagrams()
            .iter()
            .any(|d| d.peer == client && d.data == data),
        "the container did not reassemble the datagram from {client}"
    );
    // The reply's fragments reach the wan with the published address.
    let frags = later_fragments(&tap.frames(Duration::from_millis(100)));
    let replies: Vec<_> = frags.iter().filter(|f| f.1 == WAN_ADDR).collect();
    assert!(
        !replies.is_empty(),
        "no non-first reply fragment reached the wan: {frags:?}"
    );
    assert!(
        replies.iter().all(|f| f.0 == HOST_ADDR && f.0 != c1_ip),
        "a non-first reply fragment left with the container's address: {replies:?}"
    );
}
