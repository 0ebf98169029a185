//! Tier-2 datapath tests: crafted frames through the loaded programs
//! (BPF_PROG_TEST_RUN), asserting the rewritten bytes and recomputed checksums.

use std::net::Ipv4Addr;

use super::{
    harness::{TestBpffs, in_netns},
    lab::{
        Hook, Lab, ROUTER, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK_IP, WAN, from_container,
        on_uplink,
    },
    packet::{self, ACK, ICMP, Ip, SYN, TCP, UDP, parse, quoted},
};
use netd_common::nat::{HOP_ENDPOINT, NEXT_HOP_TTL};

use crate::{dataplane::Dataplane as _, model::PortRange};

const SNAT_PORTS: PortRange = PortRange {
    start: 61000,
    end: 61999,
};

/// Runs `f` on a fresh lab in its own namespace, with its own bpffs.
pub fn with_lab(tag: &str, f: impl FnOnce(&mut Lab) + Send + 'static) {
    let bpffs = TestBpffs::mounted(tag);
    let path = bpffs.path().to_path_buf();
    in_netns(move || f(&mut Lab::new(&path, SNAT_PORTS)));
    drop(bpffs);
}

#[test]
fn snat_keeps_the_port_and_reverse_snat_restores_the_container() {
    with_lab("snat", |lab| {
        let c1 = lab.c1.ip;
        let out = Ip::new(c1, WAN, TCP, packet::tcp(40000, 80, SYN, b""));
        let (rc, f) = lab.up_out(&from_container(&lab.c1, &out));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (UPLINK_IP, 40000, WAN, 80),
            "masqueraded, port kept"
        );

        let back = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(80, 40000, SYN | ACK, b""));
        let (rc, f) = lab.up_in(&on_uplink(&back));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (WAN, 80, c1, 40000),
            "reply back to the container"
        );
        assert_eq!(
            (p.dst_mac, p.ttl),
            (lab.c1.mac, 63),
            "fast path into the container"
        );
        // The container's ACK completes the handshake: established from here on.
        let ack = Ip::new(c1, WAN, TCP, packet::tcp(40000, 80, ACK, b""));
        assert_eq!(lab.up_out(&from_container(&lab.c1, &ack)).0, TC_ACT_OK);

        // Larger than the network's MTU: left to the host stack, which can fragment it
        // or send "fragmentation needed".
        let big = Ip::new(
            WAN,
            UPLINK_IP,
            TCP,
            packet::tcp(80, 40000, ACK, &[0u8; 1500]),
        );
        let (rc, f) = lab.up_in(&on_uplink(&big));
        assert_eq!(rc, TC_ACT_OK);
        assert_eq!(parse(&f).dst, c1);

        // A second container with the same source port to the same server gets another
        // port from the configured range.
        let c3 = lab.c3.ip;
        let out = Ip::new(c3, WAN, TCP, packet::tcp(40000, 80, SYN, b"x"));
        let (rc, f) = lab.up_out(&from_container(&lab.c3, &out));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(p.src, UPLINK_IP);
        assert!(
            (61000..=61999).contains(&p.sport),
            "port {} from the SNAT range",
            p.sport
        );
        let back = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(80, p.sport, ACK, b"hello"));
        let p = parse(&lab.up_in(&on_uplink(&back)).1);
        assert_eq!((p.dst, p.dport), (c3, 40000));

        let flows = lab.dp.conntrack().unwrap();
        assert!(
            flows
                .iter()
                .any(|f| f.original == format!("{c1}:40000 -> {WAN}:80")
                    && f.translated == format!("{UPLINK_IP}:40000 -> {WAN}:80")
                    && f.state == "established"),
            "{flows:?}"
        );
    });
}

#[test]
fn udp_and_icmp_echo_are_masqueraded() {
    with_lab("udp-icmp", |lab| {
        let c1 = lab.c1.ip;
        let out = Ip::new(c1, WAN, UDP, packet::udp(5000, 53, b"query"));
        let p = parse(&lab.up_out(&from_container(&lab.c1, &out)).1);
        assert_eq!((p.src, p.sport), (UPLINK_IP, 5000));
        let back = Ip::new(WAN, UPLINK_IP, UDP, packet::udp(53, 5000, b"answer"));
        let p = parse(&lab.up_in(&on_uplink(&back)).1);
        assert_eq!((p.dst, p.dport), (c1, 5000));

        // A UDP checksum of zero means "none" and must stay zero.
        let mut out = Ip::new(c1, WAN, UDP, packet::udp(5001, 53, b"nocsum"));
        out.l4_csum = false;
        let (rc, f) = lab.up_out(&from_container(&lab.c1, &out));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(p.src, UPLINK_IP);
        assert_eq!(&f[p.l4 + 6..p.l4 + 8], &[0, 0]);

        let ping = Ip::new(c1, WAN, ICMP, packet::echo(8, 0x4242, 1));
        let (rc, f) = lab.up_out(&from_container(&lab.c1, &ping));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(p.src, UPLINK_IP);
        assert_eq!(
            &f[p.l4 + 4..p.l4 + 6],
            &0x4242u16.to_be_bytes(),
            "identifier kept"
        );
        let pong = Ip::new(WAN, UPLINK_IP, ICMP, packet::echo(0, 0x4242, 1));
        let (rc, f) = lab.up_in(&on_uplink(&pong));
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(parse(&f).dst, c1);
    });
}

#[test]
fn published_ports_dnat_and_reverse_dnat_keep_the_client_address() {
    with_lab("dnat", |lab| {
        let c2 = lab.c2.ip;
        let syn = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(5555, 8080, SYN, b""));
        let (rc, f) = lab.up_in(&on_uplink(&syn));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (WAN, 5555, c2, 80),
            "DNAT, client address kept"
        );

        let synack = Ip::new(c2, WAN, TCP, packet::tcp(80, 5555, SYN | ACK, b""));
        let (rc, f) = lab.up_out(&from_container(&lab.c2, &synack));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (UPLINK_IP, 8080, WAN, 5555),
            "reverse DNAT"
        );

        // A range is one entry: host port 20005 goes to container port 30005.
        let c1 = lab.c1.ip;
        let syn = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(6000, 20005, SYN, b""));
        let p = parse(&lab.up_in(&on_uplink(&syn)).1);
        assert_eq!((p.dst, p.dport), (c1, 30005));

        // UDP publication.
        let q = Ip::new(WAN, UPLINK_IP, UDP, packet::udp(7000, 5353, b"q"));
        let p = parse(&lab.up_in(&on_uplink(&q)).1);
        assert_eq!((p.dst, p.dport), (c2, 53));

        let stats = lab.dp.stats().unwrap();
        let web = stats
            .ports
            .iter()
            .find(|c| c.publication.contains(":8080->c2:80/tcp"))
            .expect("counters of 8080");
        assert_eq!(web.packets, 2, "{stats:?}");
        assert_eq!(web.bytes, 2 * 54);
    });
}

#[test]
fn hairpin_dnats_and_snats_and_forwards_to_the_other_veth() {
    with_lab("hairpin", |lab| {
        let (c1, c2) = (lab.c1.ip, lab.c2.ip);
        let gw_b = lab.c2.gateway;
        let syn = Ip::new(c1, UPLINK_IP, TCP, packet::tcp(41000, 8080, SYN, b""));
        let h1 = lab.c1.veth.index;
        let (rc, f) = lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &syn));
        assert_eq!(rc, TC_ACT_REDIRECT, "forwarded straight to the other veth");
        let p = parse(&f);
        assert_eq!((p.src, p.sport, p.dst, p.dport), (gw_b, 41000, c2, 80));
        assert_eq!(p.dst_mac, lab.c2.mac);
        assert_eq!(p.src_mac, lab.bridge_b_mac);
        assert_eq!(p.ttl, 63);

        let synack = Ip::new(c2, gw_b, TCP, packet::tcp(80, 41000, SYN | ACK, b""));
        let h2 = lab.c2.veth.index;
        let (rc, f) = lab.run(Hook::VethIngress, h2, &from_container(&lab.c2, &synack));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (UPLINK_IP, 8080, c1, 41000),
            "the reply looks like it came from the published address"
        );
        assert_eq!(p.dst_mac, lab.c1.mac);

        // To its own published port: c1 reaches itself through 20001.
        let gw_a = lab.c1.gateway;
        let syn = Ip::new(c1, UPLINK_IP, TCP, packet::tcp(42000, 20001, SYN, b""));
        let (rc, f) = lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &syn));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!((p.src, p.dst, p.dport), (gw_a, c1, 30001));
    });
}

#[test]
fn icmp_errors_are_translated_with_their_quoted_headers() {
    with_lab("icmp-err", |lab| {
        let c1 = lab.c1.ip;
        // A masqueraded UDP flow...
        let out = Ip::new(c1, WAN, UDP, packet::udp(5000, 9999, b"probe"));
        let sent = lab.up_out(&from_container(&lab.c1, &out)).1;
        // ... gets "fragmentation needed" from a router, quoting the whole datagram.
        let err = Ip::new(
            ROUTER,
            UPLINK_IP,
            ICMP,
            packet::icmp_error(3, 4, &sent[14..]),
        );
        let (rc, f) = lab.up_in(&on_uplink(&err));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.dst),
            (ROUTER, c1),
            "the error goes to the container"
        );
        let (qs, qsp, qd, qdp) = quoted(&f, &p);
        assert_eq!(
            (qs, qsp, qd, qdp),
            (c1, 5000, WAN, 9999),
            "quoted header translated back"
        );
        // The quoted UDP checksum is right for the quoted (complete) datagram.
        let qip = p.l4 + 8;
        let qlen = f.len() - qip;
        let mut udp = f[qip + 20..qip + qlen].to_vec();
        let got = u16::from_be_bytes([udp[6], udp[7]]);
        packet::fill_l4_csum(c1, WAN, UDP, &mut udp, None);
        assert_eq!(
            got,
            u16::from_be_bytes([udp[6], udp[7]]),
            "quoted UDP checksum"
        );

        // A container's port unreachable for a published-port flow leaves with the host's
        // address, quoting the tuple the client used.
        let c2 = lab.c2.ip;
        let q = Ip::new(WAN, UPLINK_IP, UDP, packet::udp(7001, 5353, b"q"));
        let delivered = lab.up_in(&on_uplink(&q)).1;
        let err = Ip::new(
            c2,
            WAN,
            ICMP,
            packet::icmp_error(3, 3, &delivered[14..14 + 28]),
        );
        let (rc, f) = lab.up_out(&from_container(&lab.c2, &err));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!((p.src, p.dst), (UPLINK_IP, WAN));
        assert_eq!(quoted(&f, &p), (WAN, 7001, UPLINK_IP, 5353));

        // TTL exceeded for a masqueraded TCP flow, quoting only 8 bytes of TCP.
        let out = Ip::new(c1, WAN, TCP, packet::tcp(43000, 443, SYN, b""));
        let sent = lab.up_out(&from_container(&lab.c1, &out)).1;
        let err = Ip::new(
            ROUTER,
            UPLINK_IP,
            ICMP,
            packet::icmp_error(11, 0, &sent[14..14 + 28]),
        );
        let (rc, f) = lab.up_in(&on_uplink(&err));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(p.dst, c1);
        assert_eq!(quoted(&f, &p), (c1, 43000, WAN, 443));
    });
}

#[test]
fn ip_options_vlan_and_non_ip_frames() {
    with_lab("options", |lab| {
        let c1 = lab.c1.ip;
        let mut out = Ip::new(c1, WAN, TCP, packet::tcp(44000, 80, SYN, b"opt"));
        out.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
        let (rc, f) = lab.up_out(&from_container(&lab.c1, &out));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!(p.l4, 14 + 24, "transport after the options");
        assert_eq!((p.src, p.sport, p.dport), (UPLINK_IP, 44000, 80));
        assert_eq!(&f[34..38], &[1, 1, 1, 0], "options untouched");

        // A VLAN-tagged frame is not looked into: passed exactly as it was.
        let inner = Ip::new(c1, WAN, TCP, packet::tcp(45000, 80, SYN, b"")).bytes();
        let mut tagged = vec![0x81, 0x00, 0x00, 0x07, 0x08, 0x00];
        tagged.extend_from_slice(&inner);
        let frame = packet::eth([2, 0, 0, 0, 0, 9], lab.c1.mac, 0x8100, &tagged[2..]);
        let frame = [&frame[..12], &[0x81, 0x00], &frame[14..]].concat();
        let (rc, f) = lab.up_out(&frame);
        assert_eq!((rc, f), (TC_ACT_OK, frame.clone()));

        let arp = packet::eth([0xff; 6], [2, 0, 0, 0, 0, 9], 0x0806, &[0u8; 28]);
        assert_eq!(lab.up_in(&arp), (TC_ACT_OK, arp.clone()));
    });
}

#[test]
fn malformed_headers_are_dropped_with_a_reason_never_mistranslated() {
    with_lab("malformed", |lab| {
        let c1 = lab.c1.ip;
        let good = Ip::new(c1, WAN, TCP, packet::tcp(46000, 80, SYN, b"")).bytes();
        let before = lab.drops("malformed");
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // Total length beyond the frame.
        let mut long = good.clone();
        long[2..4].copy_from_slice(&200u16.to_be_bytes());
        cases.push(long);
        // IHL below 5.
        let mut ihl = good.clone();
        ihl[0] = 0x44;
        cases.push(ihl);
        // A TCP header cut to 10 bytes.
        let mut cut = good[..30].to_vec();
        cut[2..4].copy_from_slice(&30u16.to_be_bytes());
        cases.push(cut);
        // Version 6 under the IPv4 EtherType. (A frame shorter than an IP header cannot be
        // tested here: BPF_PROG_TEST_RUN itself refuses it.)
        let mut v6 = good.clone();
        v6[0] = 0x65;
        cases.push(v6);
        // An ICMP error whose quoted header is cut short.
        let quote = Ip::new(WAN, UPLINK_IP, ICMP, packet::icmp_error(3, 3, &good[..10]));
        cases.push(quote.bytes());
        for (i, ip) in cases.iter().enumerate() {
            let frame = packet::eth([2, 0, 0, 0, 0, 1], lab.c1.mac, 0x0800, ip);
            let (rc, f) = lab.up_out(&frame);
            assert_eq!(rc, TC_ACT_SHOT, "case {i}");
            assert_eq!(f, frame, "case {i}: bytes untouched");
        }
        assert_eq!(lab.drops("malformed"), before + cases.len() as u64);
    });
}

#[test]
fn later_fragments_follow_the_first_ones_translation() {
    with_lab("frags", |lab| {
        let c1 = lab.c1.ip;
        let mut first = Ip::new(c1, WAN, UDP, packet::udp(5100, 9000, &[7u8; 16]));
        first.frag = 0x2000;
        first.id = 0x7777;
        first.l4_csum = false;
        let (rc, f) = lab.up_out(&from_container(&lab.c1, &first));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!((p.src, p.sport), (UPLINK_IP, 5100));

        let mut later = Ip::new(c1, WAN, UDP, vec![9u8; 16]);
        later.frag = 3; // offset 24 bytes, last fragment
        later.id = 0x7777;
        later.l4_csum = false;
        let (rc, f) = lab.up_out(&from_container(&lab.c1, &later));
        assert_eq!(rc, TC_ACT_OK);
        let p = parse(&f);
        assert_eq!((p.src, p.dst), (UPLINK_IP, WAN));
        assert_eq!(
            &f[p.l4..],
            &[9u8; 16],
            "payload untouched: no ports in a later fragment"
        );

        let before = lab.drops("frag_unknown");
        let mut stray = later.clone();
        stray.id = 0x1111;
        let (rc, _) = lab.up_out(&from_container(&lab.c1, &stray));
        assert_eq!(
            rc, TC_ACT_SHOT,
            "a later fragment without its first cannot be translated"
        );
        assert_eq!(lab.drops("frag_unknown"), before + 1);
    });
}

/// Checks the way kept in the NAT entry of the TCP flow `src -> dst` with `ack`, a
/// 40-byte packet of it sent through `hook` on `ifindex`: a marker MAC written into the
/// kept hop comes out on the next packet; an expired hop is looked up again (its
/// destination MAC is `fresh_dmac`) and stamped anew; a hop kept for smaller packets is
/// looked up again for this one.
fn check_kept_hop(
    lab: &mut Lab,
    (src, dst): ((Ipv4Addr, u16), (Ipv4Addr, u16)),
    hook: Hook,
    ifindex: u32,
    ack: &[u8],
    fresh_dmac: [u8; 6],
) {
    let marker = [0x02, 0xee, 0, 0, 0, 7];
    let mut e = lab.nat(src, dst, TCP);
    e.hop.dmac = marker;
    lab.set_nat(src, dst, TCP, e);
    let (rc, f) = lab.run(hook, ifindex, ack);
    assert_eq!(
        (rc, parse(&f).dst_mac),
        (TC_ACT_REDIRECT, marker),
        "from the cache"
    );
    e.hop.looked_up = e.hop.looked_up.wrapping_sub(NEXT_HOP_TTL);
    lab.set_nat(src, dst, TCP, e);
    let (rc, f) = lab.run(hook, ifindex, ack);
    assert_eq!(
        (rc, parse(&f).dst_mac),
        (TC_ACT_REDIRECT, fresh_dmac),
        "expired: looked up again"
    );
    let refreshed = lab.nat(src, dst, TCP).hop;
    assert_eq!(refreshed.dmac, fresh_dmac);
    assert_ne!(refreshed.looked_up, e.hop.looked_up, "stamped anew");
    e.hop = refreshed;
    e.hop.dmac = marker;
    e.hop.max_len = 39; // the ACK is 40 bytes
    lab.set_nat(src, dst, TCP, e);
    let (rc, f) = lab.run(hook, ifindex, ack);
    assert_eq!(
        (rc, parse(&f).dst_mac),
        (TC_ACT_REDIRECT, fresh_dmac),
        "re-checked for a larger packet"
    );
}

#[test]
fn known_flows_from_the_wan_go_straight_into_the_container() {
    with_lab("fast-in", |lab| {
        let h2 = lab.c2.veth.index;
        let mtu = u16::try_from(lab.network("b").mtu).unwrap();
        let syn = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(5556, 8080, SYN, b""));
        let (rc, f) = lab.up_in(&on_uplink(&syn));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!(
            (p.dst, p.dport, p.dst_mac, p.src_mac, p.ttl),
            (lab.c2.ip, 80, lab.c2.mac, lab.bridge_b_mac, 63)
        );

        // The way in is kept with the flow: a marker MAC written into the cache comes
        // out on the next packet, until the cache expires and the maps answer again.
        let orig = ((WAN, 5556), (UPLINK_IP, 8080));
        let cached = lab.nat(orig.0, orig.1, TCP).hop;
        assert_eq!(
            (
                cached.kind,
                cached.dmac,
                cached.smac,
                cached.ifindex,
                cached.max_len
            ),
            (HOP_ENDPOINT, lab.c2.mac, lab.bridge_b_mac, h2, mtu),
            "the container's veth and MACs are kept in the flow's NAT entry"
        );
        let ack = on_uplink(&Ip::new(
            WAN,
            UPLINK_IP,
            TCP,
            packet::tcp(5556, 8080, ACK, b""),
        ));
        let uplink = lab.uplink.index;
        check_kept_hop(lab, orig, Hook::UplinkIngress, uplink, &ack, lab.c2.mac);

        // A masqueraded flow's replies take the same way in, through their own entry.
        let c1 = lab.c1.ip;
        let out = Ip::new(c1, WAN, UDP, packet::udp(5300, 53, b"q"));
        let (_, f) = lab.run(
            Hook::VethIngress,
            lab.c1.veth.index,
            &from_container(&lab.c1, &out),
        );
        let (_, f) = lab.up_out(&f);
        let sport = parse(&f).sport;
        let reply = Ip::new(WAN, UPLINK_IP, UDP, packet::udp(53, sport, b"a"));
        let (rc, f) = lab.up_in(&on_uplink(&reply));
        let p = parse(&f);
        assert_eq!(
            (rc, p.dst, p.dport, p.dst_mac),
            (TC_ACT_REDIRECT, c1, 5300, lab.c1.mac)
        );
        let hop = lab.nat((WAN, 53), (UPLINK_IP, sport), UDP).hop;
        assert_eq!(
            (hop.kind, hop.ifindex, hop.dmac),
            (HOP_ENDPOINT, lab.c1.veth.index, lab.c1.mac)
        );
    });
}

#[test]
fn known_flows_from_containers_go_straight_to_the_uplink() {
    with_lab("fast-out", |lab| {
        let (c1, c2) = (lab.c1.ip, lab.c2.ip);
        let up_mac = crate::dataplane::ebpf::netdev::mac(lab.uplink.index).unwrap();
        // A published-port flow: the container's reply leaves from its veth, translated.
        let syn = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(5556, 8080, SYN, b""));
        lab.up_in(&on_uplink(&syn));
        let synack = Ip::new(c2, WAN, TCP, packet::tcp(80, 5556, SYN | ACK, b""));
        let h2 = lab.c2.veth.index;
        let (rc, f) = lab.run(Hook::VethIngress, h2, &from_container(&lab.c2, &synack));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (UPLINK_IP, 8080, WAN, 5556)
        );
        assert_eq!(
            (p.dst_mac, p.src_mac, p.ttl),
            (super::lab::WAN_MAC, up_mac, 63),
            "next hop from the neighbour table"
        );

        // The next hop is kept with the flow: a marker MAC written into the cache comes
        // out on the next packet, until the cache expires and the FIB answers again.
        let reply = ((c2, 80), (WAN, 5556));
        let cached = lab.nat(reply.0, reply.1, TCP).hop;
        assert_eq!(
            (cached.dmac, cached.smac, cached.ifindex),
            (super::lab::WAN_MAC, up_mac, lab.uplink.index),
            "the lookup's answer is kept in the reply's NAT entry"
        );
        let ack = from_container(
            &lab.c2,
            &Ip::new(c2, WAN, TCP, packet::tcp(80, 5556, ACK, b"")),
        );
        check_kept_hop(lab, reply, Hook::VethIngress, h2, &ack, super::lab::WAN_MAC);

        // A masqueraded flow: its first packet takes the host stack (the uplink creates
        // the mapping), later ones leave from the veth.
        let first = Ip::new(c1, WAN, UDP, packet::udp(5300, 53, b"q"));
        let h1 = lab.c1.veth.index;
        let (rc, f) = lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &first));
        assert_eq!(
            (rc, parse(&f).src),
            (TC_ACT_OK, c1),
            "no mapping yet: slow path"
        );
        lab.up_out(&f);
        let (rc, f) = lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &first));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst_mac),
            (UPLINK_IP, 5300, super::lab::WAN_MAC)
        );

        // The uplink's egress program leaves an already translated packet alone.
        let (rc, again) = lab.up_out(&f);
        assert_eq!((rc, again), (TC_ACT_OK, f));
    });
}
