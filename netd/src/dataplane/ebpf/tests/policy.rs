//! Tier-2 tests of who may talk to whom: anti-spoofing, isolation, icc, internal
//! networks, the wan and container addresses.

use std::net::Ipv4Addr;

use crate::dataplane::Dataplane as _;

use super::{
    datapath::with_lab,
    lab::{
        Hook, ROUTER, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK_IP, WAN, from_container,
        on_uplink,
    },
    packet::{self, ICMP, Ip, SYN, TCP, UDP},
};

#[test]
fn a_container_cannot_spoof_its_ip_mac_or_arp() {
    with_lab("spoof", |lab| {
        let h1 = lab.c1.veth.index;
        let ok = Ip::new(lab.c1.ip, WAN, UDP, packet::udp(1, 2, b""));
        assert_eq!(
            lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &ok))
                .0,
            TC_ACT_OK
        );

        let before = lab.drops("spoofed_ip");
        let spoofed = Ip::new(
            Ipv4Addr::new(10, 1, 0, 99),
            WAN,
            UDP,
            packet::udp(1, 2, b""),
        );
        assert_eq!(
            lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &spoofed))
                .0,
            TC_ACT_SHOT
        );
        assert_eq!(lab.drops("spoofed_ip"), before + 1);

        let before = lab.drops("spoofed_mac");
        let frame = packet::eth(
            [2, 0, 0, 0, 0, 1],
            [2, 0x42, 9, 9, 9, 9],
            0x0800,
            &ok.bytes(),
        );
        assert_eq!(lab.run(Hook::VethIngress, h1, &frame).0, TC_ACT_SHOT);
        assert_eq!(lab.drops("spoofed_mac"), before + 1);

        let mac = lab.c1.mac;
        let arp = |spa: Ipv4Addr| {
            let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
            a.extend_from_slice(&mac);
            a.extend_from_slice(&spa.octets());
            a.extend_from_slice(&[0; 10]);
            packet::eth([0xff; 6], mac, 0x0806, &a)
        };
        let own = arp(lab.c1.ip);
        assert_eq!(lab.run(Hook::VethIngress, h1, &own).0, TC_ACT_OK);
        let before = lab.drops("spoofed_arp");
        let gw = arp(lab.c1.gateway);
        assert_eq!(
            lab.run(Hook::VethIngress, h1, &gw).0,
            TC_ACT_SHOT,
            "claiming the gateway's address"
        );
        assert_eq!(lab.drops("spoofed_arp"), before + 1);
    });
}

#[test]
fn networks_are_isolated_and_icc_and_internal_are_enforced() {
    with_lab("isolation", |lab| {
        let h1 = lab.c1.veth.index;
        let to_c2 = Ip::new(lab.c1.ip, lab.c2.ip, TCP, packet::tcp(1000, 80, SYN, b""));
        let before = lab.drops("isolation");
        assert_eq!(
            lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &to_c2))
                .0,
            TC_ACT_SHOT
        );
        assert_eq!(lab.drops("isolation"), before + 1);
        // The same packet routed by the host towards c2 is refused at c2's veth too.
        let h2 = lab.c2.veth.index;
        assert_eq!(
            lab.run(Hook::VethEgress, h2, &from_container(&lab.c1, &to_c2))
                .0,
            TC_ACT_SHOT
        );

        // Same network, icc on: allowed; the host's other bridge address: allowed.
        let to_c3 = Ip::new(lab.c1.ip, lab.c3.ip, TCP, packet::tcp(1000, 80, SYN, b""));
        assert_eq!(
            lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &to_c3))
                .0,
            TC_ACT_OK
        );
        let to_host = Ip::new(
            lab.c1.ip,
            lab.c2.gateway,
            TCP,
            packet::tcp(1000, 22, SYN, b""),
        );
        assert_eq!(
            lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &to_host))
                .0,
            TC_ACT_OK
        );

        // icc off: not to a neighbour, not broadcast, but to the gateway and out.
        let hn = lab.cn.veth.index;
        let cn = lab.cn.ip;
        let before = lab.drops("icc");
        for dst in [
            Ipv4Addr::new(10, 4, 0, 3),
            Ipv4Addr::new(10, 4, 0, 255),
            Ipv4Addr::new(224, 0, 0, 251),
        ] {
            let p = Ip::new(cn, dst, UDP, packet::udp(1, 2, b""));
            assert_eq!(
                lab.run(Hook::VethIngress, hn, &from_container(&lab.cn, &p))
                    .0,
                TC_ACT_SHOT,
                "{dst}"
            );
        }
        assert_eq!(lab.drops("icc"), before + 3);
        for dst in [lab.cn.gateway, WAN] {
            let p = Ip::new(cn, dst, UDP, packet::udp(1, 2, b""));
            assert_eq!(
                lab.run(Hook::VethIngress, hn, &from_container(&lab.cn, &p))
                    .0,
                TC_ACT_OK,
                "{dst}"
            );
        }
        let v6 = packet::eth([0x33, 0x33, 0, 0, 0, 1], lab.cn.mac, 0x86dd, &[0u8; 40]);
        assert_eq!(
            lab.run(Hook::VethIngress, hn, &v6).0,
            TC_ACT_SHOT,
            "non-IP with icc off"
        );

        // Internal: nothing out, nothing in, not even through a published port.
        let hi = lab.ci.veth.index;
        let ci = lab.ci.ip;
        let before = lab.drops("internal");
        let out = Ip::new(ci, WAN, UDP, packet::udp(1, 2, b""));
        assert_eq!(
            lab.run(Hook::VethIngress, hi, &from_container(&lab.ci, &out))
                .0,
            TC_ACT_SHOT
        );
        let hairpin = Ip::new(ci, UPLINK_IP, TCP, packet::tcp(1000, 8080, SYN, b""));
        assert_eq!(
            lab.run(Hook::VethIngress, hi, &from_container(&lab.ci, &hairpin))
                .0,
            TC_ACT_SHOT
        );
        let inbound = Ip::new(WAN, ci, UDP, packet::udp(1, 2, b""));
        assert_eq!(
            lab.run(Hook::VethEgress, hi, &on_uplink(&inbound)).0,
            TC_ACT_SHOT
        );
        assert_eq!(lab.drops("internal"), before + 3);
        let inside = Ip::new(ci, lab.ci.gateway, UDP, packet::udp(1, 2, b""));
        assert_eq!(
            lab.run(Hook::VethIngress, hi, &from_container(&lab.ci, &inside))
                .0,
            TC_ACT_OK
        );
    });
}

#[test]
fn the_wan_reaches_containers_only_through_published_ports_and_replies() {
    with_lab("wan", |lab| {
        let before = lab.drops("wan_to_container");
        for (dst, port) in [(lab.c2.ip, 80), (lab.cm.ip, 22)] {
            let p = Ip::new(WAN, dst, TCP, packet::tcp(3000, port, SYN, b""));
            assert_eq!(lab.up_in(&on_uplink(&p)).0, TC_ACT_SHOT, "{dst}:{port}");
        }
        assert_eq!(lab.drops("wan_to_container"), before + 2);

        // An unpublished port on the host address is the host's business: untouched.
        let p = on_uplink(&Ip::new(
            WAN,
            UPLINK_IP,
            TCP,
            packet::tcp(3000, 8081, SYN, b""),
        ));
        assert_eq!(lab.up_in(&p), (TC_ACT_OK, p.clone()));

        // masquerade off: the container's address leaves as is, its replies come back,
        // and nothing else does.
        let cm = lab.cm.ip;
        let out = Ip::new(cm, WAN, TCP, packet::tcp(3001, 80, SYN, b""));
        let frame = from_container(&lab.cm, &out);
        assert_eq!(lab.up_out(&frame), (TC_ACT_OK, frame.clone()));
        let back = on_uplink(&Ip::new(
            WAN,
            cm,
            TCP,
            packet::tcp(80, 3001, SYN | packet::ACK, b""),
        ));
        let (rc, f) = lab.up_in(&back);
        assert_eq!(rc, TC_ACT_REDIRECT, "a reply: delivered to the container");
        assert_eq!(f[26..34], back[26..34], "addresses untouched");
        let other = on_uplink(&Ip::new(WAN, cm, TCP, packet::tcp(80, 3002, SYN, b"")));
        assert_eq!(lab.up_in(&other).0, TC_ACT_SHOT);
        // Errors about its flows come back too (PMTU discovery), untouched; one about a
        // flow it never had does not.
        let too_big = on_uplink(&Ip::new(
            ROUTER,
            cm,
            ICMP,
            packet::icmp_error(3, 4, &frame[14..]),
        ));
        assert_eq!(lab.up_in(&too_big), (TC_ACT_OK, too_big.clone()));
        let unknown = Ip::new(cm, WAN, TCP, packet::tcp(3009, 80, SYN, b""));
        let stray = on_uplink(&Ip::new(
            ROUTER,
            cm,
            ICMP,
            packet::icmp_error(3, 4, &from_container(&lab.cm, &unknown)[14..]),
        ));
        assert_eq!(lab.up_in(&stray).0, TC_ACT_SHOT);

        // The host's own traffic is not masqueraded or tracked.
        let host = on_uplink(&Ip::new(
            UPLINK_IP,
            WAN,
            TCP,
            packet::tcp(3003, 80, SYN, b""),
        ));
        assert_eq!(lab.up_out(&host), (TC_ACT_OK, host.clone()));
        assert!(
            lab.dp
                .conntrack()
                .unwrap()
                .iter()
                .all(|f| !f.original.contains(":3003"))
        );
    });
}
