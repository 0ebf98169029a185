//! Flows that host processes open to containers from local ports that happen to be
//! published: the container's replies go to a published port on a host address without a
//! NAT entry, exactly like the first packet of a hairpin flow, and must reach the host
//! untouched. Genuine hairpin keeps working next to them.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use netd_common::conntrack::{HostFlow, SECOND_NS, UDP_TIMEOUT};

use super::{
    datapath::with_lab,
    harness::TestBpffs,
    lab::{Hook, Lab, TC_ACT_OK, TC_ACT_REDIRECT, UPLINK_IP, flow_key, from_container},
    packet::{self, ACK, FIN, Ip, SYN, TCP, UDP, parse},
    topo::{Client, TIMEOUT, tcp_echo, udp_echo, udp_roundtrip},
    traffic::{C1, C2, GW2, HOST, World, network},
};
use crate::{
    dataplane::{Dataplane as _, PublicationView, ebpf::conntrack::monotonic_ns},
    model::{PortRange, Proto, Publication},
};

const GW1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

/// A datagram from `src` to `dst` as the host sends it to container c1 (on c1's veth).
fn host_to_c1(lab: &Lab, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let ip = Ip::new(src.0, dst.0, UDP, packet::udp(src.1, dst.1, b"ask"));
    packet::eth(lab.c1.mac, [0x02, 0x42, 0, 0, 0, 1], 0x0800, &ip.bytes())
}

/// A datagram from c1 to `dst`, run through c1's veth ingress.
fn udp_from_c1(lab: &mut Lab, sport: u16, dst: (Ipv4Addr, u16)) -> (i32, Vec<u8>, Vec<u8>) {
    let ip = Ip::new(lab.c1.ip, dst.0, UDP, packet::udp(sport, dst.1, b"answer"));
    let frame = from_container(&lab.c1, &ip);
    let h1 = lab.c1.veth.index;
    let (rc, out) = lab.run(Hook::VethIngress, h1, &frame);
    (rc, out, frame)
}

#[test]
fn tcp_segments_other_than_a_syn_to_a_published_port_pass_untouched() {
    with_lab("hostflow-tcp", |lab| {
        let (c1, c2, gw_a, gw_b) = (lab.c1.ip, lab.c2.ip, lab.c1.gateway, lab.c2.gateway);
        let h1 = lab.c1.veth.index;
        // A host process connected from port 8080 (published to c2:80), on the gateway
        // or on the uplink address, to c1:81; c1 answers. Port 20005 is in a published
        // range (to c1 itself).
        let cases: [(Ipv4Addr, u16, u8, &[u8]); 5] = [
            (gw_a, 8080, SYN | ACK, b""),
            (gw_a, 8080, ACK, b"data"),
            (gw_a, 8080, FIN | ACK, b""),
            (UPLINK_IP, 8080, ACK, b"data"),
            (gw_a, 20005, SYN | ACK, b""),
        ];
        for (dst, dport, flags, payload) in cases {
            let ip = Ip::new(c1, dst, TCP, packet::tcp(81, dport, flags, payload));
            let frame = from_container(&lab.c1, &ip);
            assert_eq!(
                lab.run(Hook::VethIngress, h1, &frame),
                (TC_ACT_OK, frame.clone()),
                "flags {flags:#x} to {dst}:{dport}: passed to the host as it was"
            );
        }
        assert!(
            lab.dp.conntrack().unwrap().is_empty(),
            "no flow was created for them"
        );

        // A SYN to the same address and port still opens a hairpin flow.
        let syn = Ip::new(c1, gw_a, TCP, packet::tcp(41500, 8080, SYN, b""));
        let (rc, f) = lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &syn));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!((p.src, p.sport, p.dst, p.dport), (gw_b, 41500, c2, 80));
    });
}

#[test]
fn a_tcp_hairpin_flow_whose_nat_pair_was_evicted_keeps_its_translation() {
    with_lab("hostflow-lost", |lab| {
        let (c1, c2, gw_b) = (lab.c1.ip, lab.c2.ip, lab.c2.gateway);
        let (h1, h2) = (lab.c1.veth.index, lab.c2.veth.index);
        let syn = Ip::new(c1, UPLINK_IP, TCP, packet::tcp(41600, 8080, SYN, b""));
        let (rc, f) = lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &syn));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!((p.src, p.sport, p.dst, p.dport), (gw_b, 41600, c2, 80));

        // The LRU evicts both halves; conntrack still has the flow.
        assert!(lab.remove_nat((c1, 41600), (UPLINK_IP, 8080), TCP));
        assert!(lab.remove_nat((c2, 80), (gw_b, 41600), TCP));
        let more = Ip::new(c1, UPLINK_IP, TCP, packet::tcp(41600, 8080, ACK, b"more"));
        let (rc, f) = lab.run(Hook::VethIngress, h1, &from_container(&lab.c1, &more));
        assert_eq!(
            rc, TC_ACT_REDIRECT,
            "still forwarded to the published container"
        );
        let p = parse(&f);
        assert_eq!((p.src, p.sport, p.dst, p.dport), (gw_b, 41600, c2, 80));
        assert_eq!(p.dst_mac, lab.c2.mac);

        // The reply half is back too.
        let reply = Ip::new(c2, gw_b, TCP, packet::tcp(80, 41600, ACK, b"ok"));
        let (rc, f) = lab.run(Hook::VethIngress, h2, &from_container(&lab.c2, &reply));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&f);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (UPLINK_IP, 8080, c1, 41600)
        );
    });
}

#[test]
fn udp_replies_to_host_flows_pass_and_other_datagrams_still_hairpin() {
    with_lab("hostflow-udp", |lab| {
        let (c1, c2, gw_a, gw_b) = (lab.c1.ip, lab.c2.ip, lab.c1.gateway, lab.c2.gateway);
        let (h1, h3) = (lab.c1.veth.index, lab.c3.veth.index);
        // A host process sends from port 5353 (published to c2:53) to c1:82.
        let ask = host_to_c1(lab, (gw_a, 5353), (c1, 82));
        assert_eq!(
            lab.run(Hook::VethEgress, h1, &ask),
            (TC_ACT_OK, ask.clone())
        );
        let recorded = flow_key((c1, 82), (gw_a, 5353), UDP);
        assert!(
            lab.dp.maps.host_flows.get(&recorded, 0).is_ok(),
            "the reply tuple is remembered"
        );
        let (rc, out, sent) = udp_from_c1(lab, 82, (gw_a, 5353));
        assert_eq!(
            (rc, out),
            (TC_ACT_OK, sent),
            "the reply goes to the host untouched"
        );

        // Another port of c1 to the same published port: a new hairpin flow.
        let (rc, out, _) = udp_from_c1(lab, 83, (gw_a, 5353));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let p = parse(&out);
        assert_eq!((p.src, p.sport, p.dst, p.dport), (gw_b, 83, c2, 53));

        // A hairpin datagram that netd forwarded to c1 from another veth is not a host
        // flow: c1's datagrams with its reply tuple still hairpin.
        let fwd = host_to_c1(lab, (gw_a, 5353), (c1, 84));
        assert_eq!(
            lab.run_received(Hook::VethEgress, h1, h3, &fwd).0,
            TC_ACT_OK
        );
        let not_recorded = flow_key((c1, 84), (gw_a, 5353), UDP);
        assert!(lab.dp.maps.host_flows.get(&not_recorded, 0).is_err());
        assert_eq!(udp_from_c1(lab, 84, (gw_a, 5353)).0, TC_ACT_REDIRECT);

        // An entry idle for longer than the UDP timeout no longer counts.
        let old = monotonic_ns()
            .checked_sub(UDP_TIMEOUT + SECOND_NS)
            .expect("the machine has been up for more than the UDP timeout");
        let expired = flow_key((c1, 85), (gw_a, 5353), UDP);
        let stale = HostFlow { last_seen_ns: old };
        lab.dp.maps.host_flows.insert(expired, stale, 0).unwrap();
        assert_eq!(udp_from_c1(lab, 85, (gw_a, 5353)).0, TC_ACT_REDIRECT);

        // A flush for c1 forgets its host flows: the reply tuple hairpins again.
        lab.dp.flush_conntrack(Some(&[c1])).unwrap();
        assert!(lab.dp.maps.host_flows.get(&recorded, 0).is_err());
        assert_eq!(udp_from_c1(lab, 82, (gw_a, 5353)).0, TC_ACT_REDIRECT);
    });
}

/// A TCP connection to `to` from local port `port` on every address.
fn tcp_from(port: u16, to: SocketAddrV4) -> io::Result<Client> {
    // SAFETY: socket() has no preconditions; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let s = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SO_SNDTIMEO also bounds a blocking connect().
    s.set_write_timeout(Some(TIMEOUT))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let sin = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as u32;
    let local = sin(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let remote = sin(to);
    // SAFETY: both are valid sockaddr_in of the size given.
    unsafe {
        if libc::bind(s.as_raw_fd(), (&raw const local).cast(), len) != 0
            || libc::connect(s.as_raw_fd(), (&raw const remote).cast(), len) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Client(s))
}

/// Sends `msg` from local UDP port `port` to `to`; returns the source and bytes of the
/// answer.
fn udp_from(port: u16, to: SocketAddrV4, msg: &[u8]) -> io::Result<(SocketAddr, Vec<u8>)> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.send_to(msg, to)?;
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf)?;
    Ok((from, buf[..n].to_vec()))
}

fn publish(w: &World, endpoint: &'static str, net: u32, proto: Proto, host: u16, cont: u16) {
    w.with_dp(move |dp| {
        let n = network(net, net as u8);
        let p = Publication {
            endpoint: endpoint.into(),
            network: n.name.clone(),
            proto,
            host_ip: None,
            host_ports: PortRange::single(host),
            container_ports: PortRange::single(cont),
        };
        let container_ip = if net == 1 { C1 } else { C2 };
        dp.publish(&PublicationView {
            publication: &p,
            network: &n,
            container_ip,
        })
        .expect("publish");
    });
}

#[test]
fn host_sockets_on_published_ports_reach_containers_and_hairpin_still_works() {
    let bpffs = TestBpffs::mounted("hostflow-real");
    let w = World::new(bpffs.path());
    // Besides tcp 8080 -> c2:80: udp 6053 -> c2:53, and tcp 8082 -> c1:81 (its own).
    publish(&w, "c2", 2, Proto::Udp, 6053, 53);
    publish(&w, "c1", 1, Proto::Tcp, 8082, 81);
    let c1_tcp = tcp_echo(&w.c1, 81, 2);
    let c1_udp = udp_echo(&w.c1, 82, 1);
    let c2_tcp = tcp_echo(&w.c2, 80, 1);
    let c2_udp = udp_echo(&w.c2, 53, 1);

    // The host talks to c1 directly from published ports.
    let mut c = w
        .host
        .run(|| tcp_from(8080, SocketAddrV4::new(C1, 81)))
        .expect("host port 8080 -> c1:81 connects");
    assert_eq!(
        c.roundtrip(b"host tcp").expect("host port 8080 <-> c1:81"),
        b"echo:host tcp"
    );
    drop(c);
    let (from, got) = w
        .host
        .run(|| udp_from(6053, SocketAddrV4::new(C1, 82), b"host udp"))
        .expect("c1's answer to host port 6053");
    assert_eq!(
        (from, got.as_slice()),
        (SocketAddr::V4(SocketAddrV4::new(C1, 82)), &b"host udp"[..]),
        "the answer comes from c1 itself"
    );

    // Genuine hairpin through the same ports: to another network's container, and to
    // c1's own published port.
    let mut c = Client::connect(&w.c1, SocketAddrV4::new(HOST, 8080)).expect("hairpin to c2");
    assert_eq!(c.roundtrip(b"to c2").unwrap(), b"echo:to c2");
    drop(c);
    assert_eq!(
        udp_roundtrip(&w.c1, 40001, SocketAddrV4::new(HOST, 6053), b"udp to c2").unwrap(),
        b"udp to c2"
    );
    let mut c = Client::connect(&w.c1, SocketAddrV4::new(HOST, 8082)).expect("hairpin to c1");
    assert_eq!(c.roundtrip(b"to itself").unwrap(), b"echo:to itself");
    drop(c);

    let seen = c1_tcp.join().unwrap();
    assert_eq!(
        seen[0],
        (SocketAddrV4::new(GW1, 8080), b"host tcp".to_vec())
    );
    assert_eq!(
        (*seen[1].0.ip(), seen[1].1.as_slice()),
        (GW1, &b"to itself"[..])
    );
    let seen = c1_udp.join().unwrap();
    assert_eq!(
        seen,
        vec![(SocketAddrV4::new(GW1, 6053), b"host udp".to_vec())]
    );
    let seen = c2_tcp.join().unwrap();
    assert_eq!(
        (*seen[0].0.ip(), seen[0].1.as_slice()),
        (GW2, &b"to c2"[..])
    );
    let seen = c2_udp.join().unwrap();
    assert_eq!(
        seen,
        vec![(SocketAddrV4::new(GW2, 40001), b"udp to c2".to_vec())]
    );
    drop(w);
    drop(bpffs);
}
