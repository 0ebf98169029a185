//! Host-local access: processes in the host namespace reach published ports at
//! 127.0.0.1:HOST_PORT and at the host's own address; a port published on 127.0.0.1 is
//! reachable from the host only: not from the wan or a container, not even by a neighbour
//! that sends to 127.0.0.1 itself (CVE-2020-8558, moby #45610). With eBPF this is done at
//! socket level (cgroup connect4/sendmsg4/recvmsg4/getpeername4), without route_localnet
//! or netfilter, and keeps working while the daemon is down.
//!
//! The behaviour tests run on both dataplanes (Docker reaches the same with OUTPUT DNAT
//! and route_localnet). `host_access_is_socket_level` is `ebpf_only`: the socket-level
//! translation (getpeername and recvmsg rewritten, no route_localnet, no kernel conntrack)
//! is a netd eBPF feature, so its iptables twin is ignored with that reason.

#[macro_use]
mod dp_common;

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use dp_common::{
    Dataplane, IO, TcpEcho, UdpEcho, assert_tcp_blocked, echo, endpoint, exec, host, in_ns, ip_ok,
    network, packet::Tap, publish, sock, tcp_connect, tcp_exchange, udp_ask, udp_connected,
};
use netd_tests::{
    Lab,
    lab::{HOST_ADDR, UPLINK},
};

dataplane_tests! {
    both: [
        the_host_reaches_published_ports_on_loopback_and_its_address,
        a_loopback_publication_is_reachable_from_the_host_only,
    ],
    ebpf_only("iptables dataplane: Docker reaches published ports from the host through \
               a userland proxy or route_localnet and DNAT, not at socket level with cgroup \
               sock_addr hooks"): [
        host_access_is_socket_level,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A TCP exchange from the host namespace to `dst` that must echo.
fn host_tcp(lab: &Lab, dst: SocketAddr) {
    let payload = format!("host -> {dst}").into_bytes();
    let reply = tcp_exchange(&lab.host().path(), None, dst, &payload)
        .unwrap_or_else(|e| panic!("host -> {dst}: {e}"));
    assert_eq!(reply, payload, "the reply of {dst}");
}

fn the_host_reaches_published_ports_on_loopback_and_its_address(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.100.0.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let n1 = lab.netns_path(&c1);
    let tcp = TcpEcho::start(&n1, sock(ANY, 80));
    let udp = UdpEcho::start(&n1, sock(ANY, 81));
    publish(&lab, &c1, "8080:80");
    publish(&lab, &c1, "8081:81/udp");

    host_tcp(&lab, sock(LOOPBACK, 8080));
    host_tcp(&lab, host(8080));
    assert_eq!(tcp.wait_conns(2).len(), 2, "both reached the container");
    for dst in [sock(LOOPBACK, 8081), host(8081)] {
        let s = udp_connected(&lab.host().path(), None, dst).unwrap();
        let payload = format!("host -> {dst}").into_bytes();
        assert_eq!(
            udp_ask(&s, &payload).unwrap_or_else(|e| panic!("UDP host -> {dst}: {e}")),
            payload
        );
    }
    assert!(udp.datagrams().len() >= 2, "{:?}", udp.datagrams());
}

/// Let namespace `ns` send to 127.0.0.1 through `gw`, as a hostile neighbour on the link
/// can (its own loopback routes go).
fn route_loopback_via(ns: &str, gw: Ipv4Addr) {
    ip_ok(&[
        "-n",
        ns,
        "route",
        "del",
        "local",
        "127.0.0.0/8",
        "dev",
        "lo",
        "table",
        "local",
    ]);
    ip_ok(&[
        "-n",
        ns,
        "route",
        "del",
        "local",
        "127.0.0.1",
        "dev",
        "lo",
        "table",
        "local",
    ]);
    ip_ok(&[
        "-n",
        ns,
        "route",
        "add",
        "127.0.0.1/32",
        "via",
        &gw.to_string(),
    ]);
}

/// A neighbour in `from` sends SYNs to 127.0.0.1:`port`: the tap on the host's `ifname`
/// proves they arrived, and no connection may come of it.
fn neighbour_to_loopback(lab: &Lab, from: &Path, ifname: &str, port: u16, what: &str) {
    let tap = Tap::open(&lab.host().path(), ifname);
    assert_tcp_blocked(from, None, sock(LOOPBACK, port), what);
    let seen = tap.collect(Duration::from_millis(200));
    assert!(
        seen.iter().any(|p| p.dst == LOOPBACK && p.dport == port),
        "{what}: the SYNs to 127.0.0.1:{port} never reached {ifname}, the test proves nothing: {seen:?}"
    );
}

fn a_loopback_publication_is_reachable_from_the_host_only(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.100.1.0/24", &[]);
    let gateway = Ipv4Addr::new(10, 100, 1, 1);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let (c2, _) = endpoint(&lab, "c2", "app");
    let srv = TcpEcho::start(&lab.netns_path(&c1), sock(ANY, 80));
    assert_eq!(
        publish(&lab, &c1, "127.0.0.1:8082:80").trim(),
        "127.0.0.1:8082->80/tcp"
    );
    host_tcp(&lab, sock(LOOPBACK, 8082));
    assert_eq!(srv.wait_conns(1).len(), 1, "the host reaches it");

    let (wan, n2) = (lab.wan().path(), lab.netns_path(&c2));
    assert_tcp_blocked(&wan, None, host(8082), "wan -> the host's address:8082");
    assert_tcp_blocked(
        &n2,
        None,
        host(8082),
        "container -> the host's address:8082",
    );
    assert_tcp_blocked(&n2, None, sock(gateway, 8082), "container -> gateway:8082");
    route_loopback_via(lab.wan().name(), HOST_ADDR);
    neighbour_to_loopback(&lab, &wan, UPLINK, 8082, "wan -> 127.0.0.1:8082");
    route_loopback_via(&c2, gateway);
    let c2_if = lab.netd_json(&["endpoint", "inspect", &c2])[0]["attachments"][0]["host_ifname"]
        .as_str()
        .expect("host_ifname")
        .to_string();
    neighbour_to_loopback(&lab, &n2, &c2_if, 8082, "container -> 127.0.0.1:8082");
    assert_eq!(
        srv.conns().len(),
        1,
        "only the host's connection: {:?}",
        srv.conns()
    );
}

fn host_access_is_socket_level(dp: Dataplane) {
    let mut lab = dp.lab();
    network(&lab, "app", "10.100.2.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let n1 = lab.netns_path(&c1);
    let _tcp = TcpEcho::start(&n1, sock(ANY, 80));
    let _udp = UdpEcho::start(&n1, sock(ANY, 81));
    publish(&lab, &c1, "8080:80");
    publish(&lab, &c1, "8081:81/udp");

    // getpeername4: the socket reports the address it connected to.
    let mut c = tcp_connect(&lab.host().path(), None, sock(LOOPBACK, 8080), IO).expect("connect");
    assert_eq!(echo(&mut c, b"socket level").unwrap(), b"socket level");
    assert_eq!(c.peer_addr().unwrap(), sock(LOOPBACK, 8080), "getpeername");
    // recvmsg4: an unconnected UDP socket sees the reply come from where it sent.
    let udp = in_ns(&lab.host().path(), || UdpSocket::bind("0.0.0.0:0")).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let from = (0..30)
        .find_map(|_| {
            udp.send_to(b"recvmsg", sock(LOOPBACK, 8081)).ok()?;
            udp.recv_from(&mut buf).ok().map(|(_, from)| from)
        })
        .expect("no UDP reply to 127.0.0.1:8081");
    assert_eq!(
        from,
        sock(LOOPBACK, 8081),
        "the reply's source as recvfrom reports it"
    );

    let host_ns = lab.host().name().to_string();
    let sysctls = exec(&host_ns, &["sysctl", "-a", "--pattern", "route_localnet"]);
    assert!(sysctls.success(), "{sysctls}");
    let on: Vec<&str> = sysctls
        .stdout
        .lines()
        .filter(|l| !l.trim_end().ends_with("= 0"))
        .collect();
    assert!(on.is_empty(), "route_localnet is on: {on:?}");
    let count = exec(
        &host_ns,
        &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"],
    );
    assert_eq!(
        count.stdout.trim(),
        "0",
        "the kernel tracked connections: {count}"
    );

    // The pinned programs keep working while the daemon is down.
    lab.daemon_mut().kill9().unwrap();
    host_tcp(&lab, sock(LOOPBACK, 8080));
    host_tcp(&lab, host(8080));
    lab.daemon_mut().restart().unwrap();
    host_tcp(&lab, sock(LOOPBACK, 8080));
}
