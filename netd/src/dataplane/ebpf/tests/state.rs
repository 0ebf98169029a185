//! Tier-2 tests of the state tables: NAT pairs under eviction and exhaustion, the
//! collector, and table sizes.

use std::net::Ipv4Addr;

use super::{
    datapath::with_lab,
    harness::{TestBpffs, in_netns},
    lab::{Lab, TC_ACT_OK, TC_ACT_SHOT, UPLINK_IP, WAN, from_container, on_uplink},
    packet::{self, ACK, Ip, SYN, TCP, UDP, parse},
};
use crate::{dataplane::Dataplane as _, model::PortRange};

#[test]
fn an_evicted_half_of_a_pair_is_restored_and_the_port_never_changes() {
    with_lab("restore", |lab| {
        let c1 = lab.c1.ip;
        // Take the container's own port on the host address first, so that its flow
        // gets a port from the range: a changed port would show.
        let blocker = Ip::new(lab.c3.ip, WAN, TCP, packet::tcp(47000, 80, SYN, b""));
        lab.up_out(&from_container(&lab.c3, &blocker));
        let out = Ip::new(c1, WAN, TCP, packet::tcp(47000, 80, SYN, b""));
        let port = parse(&lab.up_out(&from_container(&lab.c1, &out)).1).sport;
        assert_ne!(port, 47000);

        // Evict the reply half: the next packet out restores it.
        assert!(lab.remove_nat((WAN, 80), (UPLINK_IP, port), TCP));
        let again = Ip::new(c1, WAN, TCP, packet::tcp(47000, 80, ACK, b"more"));
        assert_eq!(
            parse(&lab.up_out(&from_container(&lab.c1, &again)).1).sport,
            port,
            "same port"
        );
        let back = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(80, port, ACK, b""));
        assert_eq!(parse(&lab.up_in(&on_uplink(&back)).1).dst, c1);

        // Evict the forward half: a reply restores it, and the flow keeps its port.
        assert!(lab.remove_nat((c1, 47000), (WAN, 80), TCP));
        lab.up_in(&on_uplink(&back));
        assert_eq!(
            parse(&lab.up_out(&from_container(&lab.c1, &again)).1).sport,
            port
        );

        // Flush: the flow is gone.
        assert!(lab.dp.flush_conntrack(Some(&[c1])).unwrap() >= 1);
        let (rc, f) = lab.up_in(&on_uplink(&back));
        assert_eq!(parse(&f).dst, UPLINK_IP, "not translated any more");
        assert_eq!(rc, TC_ACT_OK);
    });
}

#[test]
fn an_evicted_forward_half_is_restored_by_the_next_packet_out() {
    with_lab("restore-fwd", |lab| {
        let c1 = lab.c1.ip;
        // A one-way UDP stream: no reply ever restores anything for it.
        let blocker = Ip::new(lab.c3.ip, WAN, UDP, packet::udp(47100, 53, b"q"));
        lab.up_out(&from_container(&lab.c3, &blocker));
        let out = Ip::new(c1, WAN, UDP, packet::udp(47100, 53, b"one"));
        let port = parse(&lab.up_out(&from_container(&lab.c1, &out)).1).sport;
        assert_ne!(port, 47100, "the flow took a port from the range");

        // The LRU drops only the forward half; the reply half stays.
        assert!(lab.remove_nat((c1, 47100), (WAN, 53), UDP));
        let before = lab.drops("nat_insert");
        let again = Ip::new(c1, WAN, UDP, packet::udp(47100, 53, b"two"));
        let (rc, f) = lab.up_out(&from_container(&lab.c1, &again));
        assert_eq!(rc, TC_ACT_OK, "the next datagram out is not dropped");
        assert_eq!(parse(&f).sport, port, "and keeps the flow's port");
        assert_eq!(lab.drops("nat_insert"), before);
        let back = Ip::new(WAN, UPLINK_IP, UDP, packet::udp(53, port, b"r"));
        assert_eq!(parse(&lab.up_in(&on_uplink(&back)).1).dst, c1);
    });
}

#[test]
fn exhausted_snat_ports_drop_new_flows_only() {
    let bpffs = TestBpffs::mounted("exhaust");
    let path = bpffs.path().to_path_buf();
    in_netns(move || {
        let mut lab = Lab::new(
            &path,
            PortRange {
                start: 61000,
                end: 61001,
            },
        );
        let src = |i: u8| Ipv4Addr::new(10, 1, 0, 100 + i);
        let mut ports = Vec::new();
        for i in 0..3 {
            let out = Ip::new(src(i), WAN, UDP, packet::udp(50000, 53, b"q"));
            let frame = packet::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 3], 0x0800, &out.bytes());
            let (rc, f) = lab.up_out(&frame);
            assert_eq!(rc, TC_ACT_OK);
            ports.push(parse(&f).sport);
        }
        ports.sort();
        assert_eq!(ports, vec![50000, 61000, 61001]);
        let before = lab.drops("nat_exhausted");
        let out = Ip::new(src(3), WAN, UDP, packet::udp(50000, 53, b"q"));
        let frame = packet::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 3], 0x0800, &out.bytes());
        assert_eq!(lab.up_out(&frame).0, TC_ACT_SHOT);
        assert_eq!(lab.drops("nat_exhausted"), before + 1);
        // Established flows still translate.
        let back = Ip::new(WAN, UPLINK_IP, UDP, packet::udp(53, 61000, b"a"));
        assert_eq!(parse(&lab.up_in(&on_uplink(&back)).1).dport, 50000);
    });
    drop(bpffs);
}

#[test]
fn gc_expires_flows_by_state_and_removes_their_translations() {
    use crate::dataplane::ebpf::conntrack::{collect, monotonic_ns};
    with_lab("gc", |lab| {
        let c1 = lab.c1.ip;
        let udp = Ip::new(c1, WAN, UDP, packet::udp(5200, 53, b"q"));
        lab.up_out(&from_container(&lab.c1, &udp));
        let syn = Ip::new(c1, WAN, TCP, packet::tcp(5201, 80, SYN, b""));
        lab.up_out(&from_container(&lab.c1, &syn));
        let rst = Ip::new(
            WAN,
            UPLINK_IP,
            TCP,
            packet::tcp(80, 5201, packet::RST | ACK, b""),
        );
        assert_eq!(parse(&lab.up_in(&on_uplink(&rst)).1).dst, c1);
        let closed = lab.dp.conntrack().unwrap();
        assert!(
            closed
                .iter()
                .any(|f| f.proto == "tcp" && f.state == "closed"),
            "{closed:?}"
        );

        let now = monotonic_ns();
        let s = 1_000_000_000u64;
        let maps = &mut lab.dp.maps;
        assert_eq!(
            collect(&mut maps.conntrack, &mut maps.nat, now),
            (0, 0),
            "nothing expired yet"
        );
        assert_eq!(
            collect(&mut maps.conntrack, &mut maps.nat, now + 11 * s),
            (1, 0),
            "the reset TCP flow goes after 10 s"
        );
        let left = lab.dp.conntrack().unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].proto, "udp");
        let maps = &mut lab.dp.maps;
        assert_eq!(
            collect(&mut maps.conntrack, &mut maps.nat, now + 299 * s),
            (0, 0),
            "UDP lives 5 minutes"
        );
        assert_eq!(
            collect(&mut maps.conntrack, &mut maps.nat, now + 301 * s),
            (1, 0)
        );
        assert_eq!(
            maps.nat.keys().count(),
            0,
            "translations went with their flows"
        );

        // A translation whose conntrack entry vanished is collected after a grace period.
        lab.up_out(&from_container(&lab.c1, &udp));
        let key = lab.dp.maps.conntrack.keys().next().unwrap().unwrap();
        lab.dp.maps.conntrack.remove(&key).unwrap();
        let maps = &mut lab.dp.maps;
        assert_eq!(
            collect(&mut maps.conntrack, &mut maps.nat, monotonic_ns()),
            (0, 0)
        );
        assert_eq!(
            collect(&mut maps.conntrack, &mut maps.nat, monotonic_ns() + 31 * s),
            (0, 2)
        );
    });
}

#[test]
fn ten_thousand_single_ports_and_a_full_range_table() {
    use crate::model::{Proto, Publication};
    with_lab("10k", |lab| {
        let c2 = lab.c2.ip;
        for i in 0..10_000u16 {
            let p = Publication {
                endpoint: "c2".into(),
                network: "b".into(),
                proto: Proto::Tcp,
                host_ip: None,
                host_ports: PortRange::single(30000 + i),
                container_ports: PortRange::single(1000 + i),
            };
            lab.publish(p, c2);
        }
        for port in [30000u16, 34567, 39999] {
            let syn = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(9000, port, SYN, b""));
            let p = parse(&lab.up_in(&on_uplink(&syn)).1);
            assert_eq!((p.dst, p.dport), (c2, port - 29000));
        }
        let stats = lab.dp.stats().unwrap();
        let ports = stats.tables.iter().find(|t| t.name == "ports").unwrap();
        assert_eq!(ports.entries, 10_002, "one entry per single port");

        // Ranges: one entry each, at most MAX_PORT_RANGES; one more is a "full" error.
        let range = |i: u16| Publication {
            endpoint: "c2".into(),
            network: "b".into(),
            proto: Proto::Udp,
            host_ip: None,
            host_ports: PortRange {
                start: 40000 + i * 10,
                end: 40009 + i * 10,
            },
            container_ports: PortRange {
                start: 2000,
                end: 2009,
            },
        };
        let net = lab.network("b").clone();
        let max = netd_common::maps::MAX_PORT_RANGES as u16;
        for i in 0..max - 1 {
            lab.publish(range(i), c2);
        }
        let p = range(max);
        let err = lab
            .dp
            .publish(&crate::dataplane::PublicationView {
                publication: &p,
                network: &net,
                container_ip: c2,
            })
            .expect_err("the range table is full");
        assert!(err.full, "{err}");
        let q = Ip::new(
            WAN,
            UPLINK_IP,
            UDP,
            packet::udp(9000, 40000 + (max - 2) * 10 + 3, b"q"),
        );
        assert_eq!(
            parse(&lab.up_in(&on_uplink(&q)).1).dport,
            2003,
            "the last range translates"
        );
    });
}

/// The state and seconds left of the masqueraded TCP flow from c1:`sport` to the wan.
fn tcp_flow(lab: &Lab, sport: u16) -> (String, u64) {
    let orig = format!("{}:{sport} -> {WAN}:80", lab.c1.ip);
    let flows = lab.dp.conntrack().unwrap();
    let f = flows
        .iter()
        .find(|f| f.original == orig)
        .unwrap_or_else(|| panic!("{orig} in {flows:?}"));
    (f.state.clone(), f.expires_in_secs)
}

#[test]
fn a_syn_ack_never_acknowledged_keeps_the_flow_transitory() {
    with_lab("half-open", |lab| {
        let c1 = lab.c1.ip;
        let syn = Ip::new(c1, WAN, TCP, packet::tcp(5300, 80, SYN, b""));
        assert_eq!(lab.up_out(&from_container(&lab.c1, &syn)).0, TC_ACT_OK);
        let syn_ack = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(80, 5300, SYN | ACK, b""));
        assert_eq!(parse(&lab.up_in(&on_uplink(&syn_ack)).1).dst, c1);
        let (state, expires) = tcp_flow(lab, 5300);
        assert_eq!(state, "syn_recv");
        assert!(expires <= 240, "half open: 4 min at most, not {expires} s");

        // The originator's ACK completes the handshake.
        let ack = Ip::new(c1, WAN, TCP, packet::tcp(5300, 80, ACK, b""));
        assert_eq!(lab.up_out(&from_container(&lab.c1, &ack)).0, TC_ACT_OK);
        let (state, expires) = tcp_flow(lab, 5300);
        assert_eq!(state, "established");
        assert!(expires >= 7440 - 5, "{expires} s");
    });
}

#[test]
fn a_later_tcp_fragment_does_not_reopen_a_closed_flow() {
    with_lab("frag-closed", |lab| {
        let c1 = lab.c1.ip;
        for (ip, out) in [
            (Ip::new(c1, WAN, TCP, packet::tcp(5301, 80, SYN, b"")), true),
            (
                Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(80, 5301, SYN | ACK, b"")),
                false,
            ),
            (Ip::new(c1, WAN, TCP, packet::tcp(5301, 80, ACK, b"")), true),
            (
                Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(80, 5301, packet::RST, b"")),
                false,
            ),
        ] {
            let rc = if out {
                lab.up_out(&from_container(&lab.c1, &ip)).0
            } else {
                lab.up_in(&on_uplink(&ip)).0
            };
            assert_ne!(rc, TC_ACT_SHOT);
        }
        assert_eq!(tcp_flow(lab, 5301).0, "closed");

        // A fragmented segment from the server: the first fragment carries the flags,
        // the later one none.
        let mut first = Ip::new(WAN, UPLINK_IP, TCP, packet::tcp(80, 5301, ACK, &[7u8; 4]));
        first.frag = 0x2000;
        first.id = 0x5301;
        first.l4_csum = false;
        assert_eq!(parse(&lab.up_in(&on_uplink(&first)).1).dst, c1);
        assert_eq!(tcp_flow(lab, 5301).0, "closed");
        let mut later = Ip::new(WAN, UPLINK_IP, TCP, vec![9u8; 16]);
        later.frag = 3; // offset 24 bytes, last fragment
        later.id = 0x5301;
        later.l4_csum = false;
        assert_eq!(parse(&lab.up_in(&on_uplink(&later)).1).dst, c1);
        let (state, expires) = tcp_flow(lab, 5301);
        assert_eq!(state, "closed", "the later fragment keeps the state");
        assert!(expires <= 10, "{expires} s");
    });
}
