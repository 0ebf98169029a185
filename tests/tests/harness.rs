//! The harness proves itself: namespaces come and go with their guards (also on panic),
//! the traffic helpers report what the peer really received, and the daemon guard starts,
//! kills, restarts and cleans up a daemon. The daemon here is `fake-netd`, so these tests
//! do not depend on netd itself.

use std::{
    net::SocketAddr,
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::{Path, PathBuf},
    thread,
};

use netd_tests::{
    Lab, LabConfig, NetnsGuard, Server,
    lab::{HOST_ADDR, WAN_ADDR},
    netns::{list_netns, netns_path},
    process::{ip, links},
    require_root,
    traffic::{tcp_request, udp_request},
};

fn fake_netd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fake-netd"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address literal")
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*wanted))
}

/// Two namespaces joined by a veth: a has 192.0.2.1/24, b has 192.0.2.2/24.
fn veth_pair() -> (NetnsGuard, NetnsGuard) {
    let (a, b) = (NetnsGuard::new().unwrap(), NetnsGuard::new().unwrap());
    let steps: [&[&str]; 5] = [
        &[
            "-n",
            a.name(),
            "link",
            "add",
            "v0",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            b.name(),
        ],
        &["-n", a.name(), "addr", "add", "192.0.2.1/24", "dev", "v0"],
        &["-n", b.name(), "addr", "add", "192.0.2.2/24", "dev", "v1"],
        &["-n", a.name(), "link", "set", "v0", "up"],
        &["-n", b.name(), "link", "set", "v1", "up"],
    ];
    for step in steps {
        ip(step).unwrap();
    }
    (a, b)
}

#[test]
fn netns_guard_creates_and_removes_a_namespace() {
    require_root();
    let guard = NetnsGuard::new().unwrap();
    let name = guard.name().to_string();
    assert!(list_netns().contains(&name), "{name} missing after create");
    assert_eq!(links(&name).unwrap(), ["lo"]);
    drop(guard);
    assert!(
        !list_netns().contains(&name),
        "{name} still present after drop"
    );
}

#[test]
fn guards_clean_up_when_the_test_panics() {
    require_root();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = thread::spawn(move || {
        let guard = NetnsGuard::new().unwrap();
        tx.send(guard.name().to_string()).unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let name = rx.recv().unwrap();
    assert!(!netns_path(&name).exists(), "{name} survived the panic");
}

#[test]
fn tcp_and_udp_helpers_report_payload_and_source() {
    require_root();
    let (a, b) = veth_pair();

    let server = Server::tcp(&b.path(), addr("192.0.2.2:0")).unwrap();
    let reply = tcp_request(
        &a.path(),
        Some(addr("192.0.2.1:40001")),
        server.addr,
        b"over tcp",
    )
    .unwrap();
    let got = server.join().unwrap();
    assert_eq!(got.data, b"over tcp");
    assert_eq!(got.peer, addr("192.0.2.1:40001"));
    assert_eq!(reply, b"over tcp", "the echo");

    let server = Server::udp(&b.path(), addr("0.0.0.0:5353")).unwrap();
    let reply = udp_request(
        &a.path(),
        Some(addr("192.0.2.1:40002")),
        addr("192.0.2.2:5353"),
        b"over udp",
    )
    .unwrap();
    let got = server.join().unwrap();
    assert_eq!(
        got,
        netd_tests::Received {
            data: b"over udp".to_vec(),
            peer: addr("192.0.2.1:40002")
        }
    );
    assert_eq!(reply, b"over udp");
}

#[test]
fn traffic_helpers_fail_when_nothing_gets_through() {
    require_root();
    let (a, b) = veth_pair();
    // The server listens in b, but on loopback: a's connection is refused.
    let server = Server::tcp(&b.path(), addr("127.0.0.1:8080")).unwrap();
    let err = tcp_request(&a.path(), None, addr("192.0.2.2:8080"), b"x").unwrap_err();
    assert!(format!("{err:#}").contains("192.0.2.2:8080"), "{err:#}");
    let err = server.join().unwrap_err();
    assert!(format!("{err:#}").contains("no TCP connection"), "{err:#}");

    // The namespaces are separate: a loopback server in b is not visible from a.
    let server = Server::udp(&b.path(), addr("127.0.0.1:5353")).unwrap();
    assert!(udp_request(&a.path(), None, addr("127.0.0.1:5353"), b"x").is_err());
    assert!(server.join().is_err());
}

fn fake_lab() -> Lab {
    Lab::start(LabConfig {
        daemon_bin: Some(fake_netd()),
        ..LabConfig::unique()
    })
    .unwrap()
}

#[test]
fn lab_builds_the_uplink_and_runs_the_daemon_in_the_host_namespace() {
    require_root();
    let lab = fake_lab();
    // The host reaches the wan over the uplink with its uplink address.
    let server = Server::tcp(&lab.wan().path(), SocketAddr::new(WAN_ADDR.into(), 0)).unwrap();
    tcp_request(&lab.host().path(), None, server.addr, b"up").unwrap();
    assert_eq!(server.join().unwrap().peer.ip(), HOST_ADDR);
    let routes = ip(&["-n", lab.host().name(), "route", "show", "default"]).unwrap();
    assert!(routes.contains(&format!("via {WAN_ADDR}")), "{routes}");

    // The daemon entered the host namespace and mounted its bpffs where we can see it.
    let daemon = lab.daemon();
    let marker = std::fs::read_to_string(daemon.state_dir().join("netns")).unwrap();
    let host_ino = std::fs::metadata(lab.host().path()).unwrap().ino();
    assert_eq!(marker, format!("net:[{host_ino}]"));
    assert!(is_mounted(&daemon.bpffs()));
    assert!(UnixStream::connect(daemon.socket()).is_ok());
}

#[test]
fn daemon_guard_kills_restarts_and_stops() {
    require_root();
    let mut lab = fake_lab();
    let first = lab.daemon().pid().unwrap();
    lab.daemon_mut().kill9().unwrap();
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "pid {first} survived kill -9"
    );
    assert!(UnixStream::connect(lab.daemon().socket()).is_err());

    lab.daemon_mut().restart().unwrap();
    assert_ne!(lab.daemon().pid(), Some(first));
    assert!(UnixStream::connect(lab.daemon().socket()).is_ok());

    let status = lab.daemon_mut().stop().unwrap();
    assert!(status.success(), "graceful stop: {status}");
    assert!(
        lab.daemon().log().contains("stopping"),
        "{}",
        lab.daemon().log()
    );
    lab.daemon_mut().restart().unwrap();
}

#[test]
fn lab_removes_everything_it_and_the_daemon_made_also_on_panic() {
    require_root();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = thread::spawn(move || {
        let lab = fake_lab();
        // What netd would create for an endpoint named with the lab's prefix.
        ip(&["netns", "add", &lab.name("ep")]).unwrap();
        let daemon = lab.daemon();
        tx.send((
            lab.prefix().to_string(),
            daemon.pid().unwrap(),
            daemon.bpffs(),
            daemon.socket(),
        ))
        .unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err());
    let (prefix, pid, bpffs, socket) = rx.recv().unwrap();
    let left: Vec<_> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} still runs"
    );
    assert!(!is_mounted(&bpffs), "{} still mounted", bpffs.display());
    assert!(
        !socket.parent().unwrap().exists(),
        "the lab dir is still there"
    );
}
