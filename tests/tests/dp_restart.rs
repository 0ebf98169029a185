//! Restart: after `kill -9` of the daemon and a restart, established TCP connections and
//! UDP flows through DNAT (wan -> published port) and SNAT (container -> wan) keep working
//! with every byte delivered, and published ports and masquerade work the whole time
//! (probed continuously by fresh connections, through the kill, the downtime and the
//! restart). `netd daemon --cleanup` then removes every pin and link (eBPF).
//!
//! `cleanup_removes_every_pin_and_link` is `ebpf_internal`: no iptables test exists for
//! it, because pins and links are the eBPF dataplane's and the iptables dataplane has
//! nothing under --bpffs (the removal of its rules is tested in
//! netd/src/dataplane/iptables/tests.rs).

#[macro_use]
mod dp_common;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use dp_common::{
    Dataplane, TcpEcho, UdpEcho, echo, endpoint, host, network, publish, sock, tcp_connect,
    tcp_exchange, udp_ask, udp_connected,
};
use netd_tests::{
    Lab,
    lab::{HOST_ADDR, WAN_ADDR},
    netd_bin,
    process::{COMMAND_TIMEOUT, run_with_timeout},
};

dataplane_tests! {
    both: [established_flows_and_published_ports_survive_kill_9_and_restart],
    ebpf_internal("Pins and links are the eBPF dataplane's; the iptables one has none."): [
        cleanup_removes_every_pin_and_link,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// The flows a restart must not break, and the servers at their far ends.
struct Flows {
    inbound: TcpStream,
    outbound: TcpStream,
    udp_in: UdpSocket,
    udp_out: UdpSocket,
    c1_tcp: TcpEcho,
    wan_tcp: TcpEcho,
    c1_udp: UdpEcho,
    wan_udp: UdpEcho,
}

fn open_flows(lab: &Lab) -> Flows {
    network(lab, "app", "10.80.0.0/24", &[]);
    let (c1, c1_ip) = endpoint(lab, "c1", "app");
    let n1 = lab.netns_path(&c1);
    let c1_tcp = TcpEcho::start(&n1, sock(ANY, 80));
    let c1_udp = UdpEcho::start(&n1, sock(ANY, 81));
    publish(lab, &c1, "8080:80");
    publish(lab, &c1, "8081:81/udp");
    let wan = lab.wan().path();
    let wan_tcp = TcpEcho::start(&wan, sock(WAN_ADDR, 7000));
    let wan_udp = UdpEcho::start(&wan, sock(WAN_ADDR, 7001));
    let connect = |ns: &std::path::Path, src, dst| {
        tcp_connect(ns, Some(src), dst, dp_common::IO)
            .unwrap_or_else(|e| panic!("{src} -> {dst}: {e}"))
    };
    Flows {
        inbound: connect(&wan, sock(WAN_ADDR, 45100), host(8080)),
        outbound: connect(&n1, sock(c1_ip, 40100), wan_tcp.addr),
        udp_in: udp_connected(&wan, Some(sock(WAN_ADDR, 45101)), host(8081)).unwrap(),
        udp_out: udp_connected(&n1, Some(sock(c1_ip, 40101)), wan_udp.addr).unwrap(),
        c1_tcp,
        wan_tcp,
        c1_udp,
        wan_udp,
    }
}

impl Flows {
    /// One message on each flow; every echo must come back.
    fn exchange(&mut self, phase: &str) {
        for (stream, what) in [
            (&mut self.inbound, "wan -> published port"),
            (&mut self.outbound, "container -> wan"),
        ] {
            let msg = format!("{phase}|");
            let reply = echo(stream, msg.as_bytes()).unwrap_or_else(|e| {
                panic!("{what}, {phase}: the established connection broke: {e}")
            });
            assert_eq!(reply, msg.as_bytes(), "{what}, {phase}");
        }
        for (s, what) in [
            (&self.udp_in, "UDP wan -> published port"),
            (&self.udp_out, "UDP container -> wan"),
        ] {
            let msg = format!("{what} {phase}");
            let reply =
                udp_ask(s, msg.as_bytes()).unwrap_or_else(|e| panic!("{what}, {phase}: {e}"));
            assert_eq!(reply, msg.as_bytes(), "{what}, {phase}");
        }
    }

    /// Every byte of every phase arrived, on one connection per flow, from the same
    /// translated address throughout.
    fn assert_all_arrived(&self, phases: &[&str]) {
        let expected: String = phases.iter().map(|p| format!("{p}|")).collect();
        let inbound = self.c1_tcp.received_from(sock(WAN_ADDR, 45100));
        assert_eq!(
            String::from_utf8_lossy(&inbound),
            expected,
            "what the container received"
        );
        let outbound = self.wan_tcp.received_from(sock(HOST_ADDR, 40100));
        assert_eq!(
            String::from_utf8_lossy(&outbound),
            expected,
            "what the wan received (from the same translated port)"
        );
        let udp_in: Vec<SocketAddr> = self.c1_udp.peers();
        assert!(udp_in.contains(&sock(WAN_ADDR, 45101)), "{udp_in:?}");
        let udp_out = self.wan_udp.peers();
        assert_eq!(
            udp_out,
            [sock(HOST_ADDR, 40101)],
            "the UDP flow kept its translation"
        );
    }
}

/// Fresh connections, over and over, until stopped: wan -> published port and
/// container -> wan. Records every failure.
struct Prober {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    rounds: Arc<Mutex<u32>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Prober {
    fn start(lab: &Lab, c1: &str, wan_srv: SocketAddr) -> Prober {
        let (wan, n1) = (lab.wan().path(), lab.netns_path(c1));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let rounds = Arc::new(Mutex::new(0));
        let (s, f, r) = (stop.clone(), failures.clone(), rounds.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (ns, dst, what) in [
                    (&wan, host(8080), "wan -> host:8080"),
                    (&n1, wan_srv, "container -> wan"),
                ] {
                    match tcp_exchange(ns, None, dst, b"probe") {
                        Ok(reply) if reply == b"probe" => {}
                        Ok(reply) => f.lock().unwrap().push(format!("{what}: reply {reply:?}")),
                        Err(e) => f.lock().unwrap().push(format!("{what}: {e}")),
                    }
                }
                *r.lock().unwrap() += 1;
                thread::sleep(Duration::from_millis(20));
            }
        });
        Prober {
            stop,
            failures,
            rounds,
            handle: Some(handle),
        }
    }

    fn rounds(&self) -> u32 {
        *self.rounds.lock().unwrap()
    }

    /// Wait until the prober has done `n` more rounds.
    fn wait_rounds(&self, n: u32) {
        let target = self.rounds() + n;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.rounds() < target && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (self.rounds(), self.failures.lock().unwrap().clone())
    }
}

fn established_flows_and_published_ports_survive_kill_9_and_restart(dp: Dataplane) {
    let mut lab = dp.lab();
    let mut flows = open_flows(&lab);
    let c1 = lab.name("c1");
    flows.exchange("before");
    let prober = Prober::start(&lab, &c1, flows.wan_tcp.addr);
    prober.wait_rounds(3);

    lab.daemon_mut().kill9().unwrap();
    flows.exchange("during");
    prober.wait_rounds(3);
    lab.daemon_mut().restart().unwrap();
    prober.wait_rounds(3);
    flows.exchange("after");
    // And once more after the daemon had time to reconcile and garbage-collect.
    thread::sleep(Duration::from_secs(1));
    flows.exchange("later");

    let (rounds, failures) = prober.finish();
    assert!(
        failures.is_empty(),
        "fresh connections failed around the restart ({} of {rounds} rounds): {failures:#?}",
        failures.len()
    );
    flows.assert_all_arrived(&["before", "during", "after", "later"]);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn cleanup_removes_every_pin_and_link(dp: Dataplane) {
    let mut lab = dp.lab();
    network(&lab, "app", "10.80.1.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let n1 = lab.netns_path(&c1);
    let wan_udp = UdpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7001));
    let s = udp_connected(&n1, Some(sock(c1_ip, 40110)), wan_udp.addr).unwrap();
    assert_eq!(udp_ask(&s, b"masqueraded").unwrap(), b"masqueraded");
    assert_eq!(wan_udp.peers(), [sock(HOST_ADDR, 40110)]);
    let bpffs = lab.daemon().bpffs();
    assert!(
        files_under(&bpffs).len() > 2,
        "the daemon pinned nothing under {}",
        bpffs.display()
    );

    let host_name = lab.host().name().to_string();
    assert_eq!(
        netd_filters(&host_name),
        ["netd_veth_egress", "netd_veth_ingress"],
        "c1's veth carries netd's two filters"
    );

    lab.daemon_mut().stop().unwrap();
    let host_ns = lab.host().path();
    let mut cmd = Command::new(netd_bin().unwrap());
    cmd.args(["daemon", "--cleanup", "--dataplane", dp.name(), "--netns"])
        .arg(&host_ns)
        .arg("--bpffs")
        .arg(&bpffs)
        .arg("--state-dir")
        .arg(lab.daemon().state_dir())
        .arg("--socket")
        .arg(lab.daemon().socket());
    let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT).unwrap();
    assert!(out.success(), "netd daemon --cleanup: {out}");
    // maps.debug and progs.debug are the kernel's own (bpf_preload) in every bpffs root.
    let kernel_own = [bpffs.join("maps.debug"), bpffs.join("progs.debug")];
    let left: Vec<PathBuf> = files_under(&bpffs)
        .into_iter()
        .filter(|p| !kernel_own.contains(p))
        .collect();
    assert!(
        left.is_empty(),
        "pins left under {}: {left:?}",
        bpffs.display()
    );

    assert_eq!(
        netd_filters(&host_name),
        Vec::<String>::new(),
        "--cleanup leaves no filter on the veths"
    );

    // No program translates any more: a new flow leaves with the container's address.
    let s = udp_connected(&n1, Some(sock(c1_ip, 40111)), wan_udp.addr).unwrap();
    let _ = s.send(b"untranslated");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !wan_udp.peers().contains(&sock(c1_ip, 40111)) {
        assert!(
            std::time::Instant::now() < deadline,
            "after --cleanup the datagram should reach the wan untranslated; the wan saw {:?}",
            wan_udp.peers()
        );
        let _ = s.send(b"untranslated");
        thread::sleep(Duration::from_millis(200));
    }
}

/// The names of netd's TC filters on every interface of namespace `ns`, sorted.
fn netd_filters(ns: &str) -> Vec<String> {
    let script = "for d in $(ls /sys/class/net); do \
        tc filter show dev $d ingress; tc filter show dev $d egress; done";
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .expect("running tc in the host namespace");
    assert!(out.status.success(), "tc: {out:?}");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        // "... handle 0x4e44 netd_veth_ingress:[...] direct-action ... name netd_veth_ingr ..."
        // (the program's own name is cut at 15 characters): the filter names only.
        .map(|w| w.split(':').next().unwrap_or(w))
        .filter(|w| ["netd_veth_ingress", "netd_veth_egress"].contains(w))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}
