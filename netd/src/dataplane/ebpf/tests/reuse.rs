//! Tuple reuse across publications: one container port published on two host ports, and a
//! wan client that reuses a source port. Both flows have the same reply tuple
//! (container:port -> client:port), so the new flow's reverse NAT key is the old flow's.
//! A closed (or expired) old flow gives way to the new one, as Linux conntrack lets a new
//! SYN replace a TIME_WAIT/CLOSE entry; a live one is a genuine clash and the new flow is
//! dropped with `nat_insert`.

use std::net::Ipv4Addr;

use super::{
    datapath::with_lab,
    lab::{
        Lab, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK_IP, WAN, flow_key, from_container,
        on_uplink,
    },
    packet::{self, ACK, FIN, Ip, Parsed, SYN, TCP, UDP, parse},
};
use crate::{
    dataplane::{Dataplane as _, ebpf::conntrack::monotonic_ns},
    model::{PortRange, Proto, Publication},
};

/// The container port that two host ports lead to.
const CPORT: u16 = 7002;
/// The client's reused source port.
const CLIENT_PORT: u16 = 50123;

/// Publishes host ports `hosts` of `proto` to c2:`CPORT`.
fn publish_twice(lab: &mut Lab, proto: Proto, hosts: [u16; 2]) {
    let c2 = lab.c2.ip;
    for h in hosts {
        let p = Publication {
            endpoint: "c2".into(),
            network: "b".into(),
            proto,
            host_ip: None,
            host_ports: PortRange { start: h, end: h },
            container_ports: PortRange {
                start: CPORT,
                end: CPORT,
            },
        };
        lab.publish(p, c2);
    }
}

/// A TCP segment from the client to host port `dport`, through uplink ingress.
fn from_client(lab: &mut Lab, dport: u16, flags: u8) -> (i32, Vec<u8>) {
    let ip = Ip::new(
        WAN,
        UPLINK_IP,
        TCP,
        packet::tcp(CLIENT_PORT, dport, flags, b""),
    );
    lab.up_in(&on_uplink(&ip))
}

/// A TCP segment from c2:`CPORT` to the client, through uplink egress.
fn to_client(lab: &mut Lab, flags: u8) -> (i32, Vec<u8>) {
    let ip = Ip::new(
        lab.c2.ip,
        WAN,
        TCP,
        packet::tcp(CPORT, CLIENT_PORT, flags, b""),
    );
    let frame = from_container(&lab.c2, &ip);
    lab.up_out(&frame)
}

fn tuple(p: &Parsed) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    (p.src, p.sport, p.dst, p.dport)
}

/// Opens a connection from the client through host port `hport`, checking both
/// translations (every frame's checksums are verified by `parse`).
fn handshake(lab: &mut Lab, hport: u16) {
    let c2 = lab.c2.ip;
    let (rc, f) = from_client(lab, hport, SYN);
    assert_eq!(rc, TC_ACT_REDIRECT, "SYN to {hport} delivered");
    assert_eq!(
        tuple(&parse(&f)),
        (WAN, CLIENT_PORT, c2, CPORT),
        "DNAT of {hport}"
    );
    let (rc, f) = to_client(lab, SYN | ACK);
    assert_eq!(rc, TC_ACT_OK);
    assert_eq!(
        tuple(&parse(&f)),
        (UPLINK_IP, hport, WAN, CLIENT_PORT),
        "SYN-ACK leaves from host port {hport}"
    );
    let (rc, f) = from_client(lab, hport, ACK);
    assert_eq!(rc, TC_ACT_REDIRECT);
    assert_eq!(tuple(&parse(&f)), (WAN, CLIENT_PORT, c2, CPORT));
}

/// The conntrack state of the client's flow through host port `hport`, if tracked.
fn state_via(lab: &Lab, hport: u16) -> Option<String> {
    let orig = format!("{WAN}:{CLIENT_PORT} -> {UPLINK_IP}:{hport}");
    let flows = lab.dp.conntrack().unwrap();
    flows
        .into_iter()
        .find(|f| f.original == orig)
        .map(|f| f.state)
}

#[test]
fn a_new_syn_replaces_a_closed_flow_that_holds_its_reply_tuple() {
    with_lab("reuse-closed", |lab| {
        publish_twice(lab, Proto::Tcp, [8003, 9000]);
        handshake(lab, 8003);
        // Closed with FIN both ways, then the last ACK.
        let (rc, f) = from_client(lab, 8003, FIN | ACK);
        assert_eq!((rc, parse(&f).dport), (TC_ACT_REDIRECT, CPORT));
        let (rc, f) = to_client(lab, FIN | ACK);
        assert_eq!((rc, parse(&f).sport), (TC_ACT_OK, 8003));
        let (rc, _) = from_client(lab, 8003, ACK);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(state_via(lab, 8003).as_deref(), Some("closed"));

        // The same client port, through the other publication of the same container port.
        let before = lab.drops("nat_insert");
        handshake(lab, 9000);
        assert_eq!(lab.drops("nat_insert"), before, "nothing dropped");
        assert_eq!(state_via(lab, 9000).as_deref(), Some("established"));
        assert_eq!(
            state_via(lab, 8003),
            None,
            "the closed flow's conntrack entry went with its NAT pair"
        );
        // A late retransmission of the old flow does not steal the new flow's tuple.
        let (rc, _) = from_client(lab, 8003, FIN | ACK);
        assert_eq!(
            rc, TC_ACT_SHOT,
            "the old flow is gone and its tuple is taken"
        );
        let (rc, f) = to_client(lab, ACK);
        assert_eq!(rc, TC_ACT_OK);
        assert_eq!(
            tuple(&parse(&f)),
            (UPLINK_IP, 9000, WAN, CLIENT_PORT),
            "replies keep the new flow's translation"
        );
    });
}

#[test]
fn a_new_syn_does_not_replace_a_live_flow_that_holds_its_reply_tuple() {
    with_lab("reuse-live", |lab| {
        publish_twice(lab, Proto::Tcp, [8003, 9000]);
        handshake(lab, 8003);
        // Half-closed is still live: the container may keep sending.
        let (rc, _) = from_client(lab, 8003, FIN | ACK);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(state_via(lab, 8003).as_deref(), Some("closing"));

        let before = lab.drops("nat_insert");
        let (rc, f) = from_client(lab, 9000, SYN);
        assert_eq!(rc, TC_ACT_SHOT, "a genuine clash is dropped");
        assert_eq!(parse(&f).dport, 9000, "and left untranslated");
        assert_eq!(lab.drops("nat_insert"), before + 1);
        assert_eq!(state_via(lab, 9000), None);

        let (rc, f) = to_client(lab, ACK);
        assert_eq!(rc, TC_ACT_OK);
        assert_eq!(
            tuple(&parse(&f)),
            (UPLINK_IP, 8003, WAN, CLIENT_PORT),
            "the live flow keeps its translation"
        );
    });
}

#[test]
fn a_new_datagram_replaces_an_expired_flow_that_holds_its_reply_tuple() {
    with_lab("reuse-udp", |lab| {
        publish_twice(lab, Proto::Udp, [8003, 9000]);
        let c2 = lab.c2.ip;
        let q = |dport| {
            on_uplink(&Ip::new(
                WAN,
                UPLINK_IP,
                UDP,
                packet::udp(CLIENT_PORT, dport, b"q"),
            ))
        };
        let (rc, f) = lab.up_in(&q(8003));
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(tuple(&parse(&f)), (WAN, CLIENT_PORT, c2, CPORT));

        // While the first flow lives, the second is a clash.
        let before = lab.drops("nat_insert");
        assert_eq!(lab.up_in(&q(9000)).0, TC_ACT_SHOT);
        assert_eq!(lab.drops("nat_insert"), before + 1);

        // Age the first flow past the UDP timeout, as if the collector had not run yet.
        let old = flow_key((WAN, CLIENT_PORT), (UPLINK_IP, 8003), UDP);
        let ct = &mut lab.dp.maps.conntrack;
        let mut e = ct.get(&old, 0).expect("the first flow is tracked");
        let idle = netd_common::conntrack::UDP_TIMEOUT + netd_common::conntrack::SECOND_NS;
        let now = monotonic_ns();
        assert!(now > idle, "the clock has run longer than a UDP timeout");
        e.last_seen_ns = now - idle;
        e.created_ns = e.last_seen_ns;
        ct.insert(old, e, 0).unwrap();

        let (rc, f) = lab.up_in(&q(9000));
        assert_eq!(rc, TC_ACT_REDIRECT, "the expired flow gave way");
        assert_eq!(tuple(&parse(&f)), (WAN, CLIENT_PORT, c2, CPORT));
        let ip = Ip::new(c2, WAN, UDP, packet::udp(CPORT, CLIENT_PORT, b"a"));
        let frame = from_container(&lab.c2, &ip);
        let (rc, f) = lab.up_out(&frame);
        assert_eq!(rc, TC_ACT_OK);
        assert_eq!(tuple(&parse(&f)), (UPLINK_IP, 9000, WAN, CLIENT_PORT));
    });
}
