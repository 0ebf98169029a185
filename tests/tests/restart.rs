//! A daemon restart, graceful or after kill -9, keeps networks, endpoints, publications
//! and connectivity; reconciliation repairs what went missing and collects endpoints whose
//! namespace is gone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use netd_tests::{Lab, Server, cli::first_ip, process::ip, traffic::tcp_request};

struct Pair {
    a: String,
    a_ip: Ipv4Addr,
    b: String,
    b_ip: Ipv4Addr,
}

/// A network with two endpoints, one of them publishing a port.
fn setup(lab: &Lab) -> Pair {
    lab.network_create("app", &["--subnet", "10.50.0.0/24"]);
    let (a, b) = (lab.name("a"), lab.name("b"));
    let a_ip = first_ip(&lab.endpoint_create(&a, "app", &[]));
    let b_ip = first_ip(&lab.endpoint_create(&b, "app", &[]));
    lab.netd_ok(&["port", "publish", &b, "8080:80"]);
    Pair { a, a_ip, b, b_ip }
}

/// a connects to b over TCP; b sees a's address.
fn assert_connected(lab: &Lab, p: &Pair) {
    let server = Server::tcp(
        &lab.netns_path(&p.b),
        SocketAddr::new(IpAddr::V4(p.b_ip), 7100),
    )
    .unwrap();
    tcp_request(&lab.netns_path(&p.a), None, server.addr, b"still there").unwrap();
    let got = server.join().unwrap();
    assert_eq!(got.data, b"still there");
    assert_eq!(got.peer.ip(), p.a_ip);
}

/// How the daemon goes down before it is started again.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGTERM: it must exit cleanly.
    Graceful,
    /// SIGKILL: it gets no chance to clean up or save anything.
    Kill9,
}

/// Whichever way the daemon stops, the network keeps working while it is down and the
/// restarted daemon has the same state and keeps its allocations.
fn restart_keeps_everything(how: Stop) {
    let mut lab = Lab::new();
    let pair = setup(&lab);
    assert_connected(&lab, &pair);
    let before = lab.snapshot();

    match how {
        Stop::Graceful => {
            let status = lab.daemon_mut().stop().unwrap();
            assert!(
                status.success(),
                "the daemon should exit cleanly on SIGTERM: {status}"
            );
        }
        Stop::Kill9 => lab.daemon_mut().kill9().unwrap(),
    }
    assert_connected(&lab, &pair);
    lab.daemon_mut().restart().unwrap();

    assert_eq!(lab.snapshot(), before, "after {how:?}");
    assert_connected(&lab, &pair);
    // IPAM kept its allocations: a new endpoint gets a third address.
    let c = first_ip(&lab.endpoint_create(&lab.name("c"), "app", &[]));
    assert!(c != pair.a_ip && c != pair.b_ip, "{c} was handed out twice");
}

#[test]
fn a_graceful_restart_keeps_everything() {
    restart_keeps_everything(Stop::Graceful);
}

#[test]
fn a_restart_after_kill_9_keeps_everything() {
    restart_keeps_everything(Stop::Kill9);
}

#[test]
fn a_restart_recreates_a_missing_bridge_and_veth() {
    let mut lab = Lab::new();
    let pair = setup(&lab);
    let before = lab.snapshot();
    let bridge = lab.netd_json(&["network", "inspect", "app"])[0]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    let b_info = &lab.netd_json(&["endpoint", "inspect", &pair.b])[0];
    let b_host_if = b_info["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();

    lab.daemon_mut().kill9().unwrap();
    let host = lab.host().name().to_string();
    ip(&["-n", &host, "link", "del", &bridge]).unwrap();
    ip(&["-n", &host, "link", "del", &b_host_if]).unwrap();
    lab.daemon_mut().restart().unwrap();

    assert_eq!(
        lab.snapshot(),
        before,
        "reconciliation should restore the same links and addresses"
    );
    let ports = ip(&["-n", &host, "-o", "link", "show", "master", &bridge]).unwrap();
    assert!(
        ports.contains(&format!(" {b_host_if}@")),
        "{b_host_if} is not back on {bridge}: {ports}"
    );
    assert_connected(&lab, &pair);
}

#[test]
fn a_restart_collects_endpoints_whose_namespace_is_gone() {
    let mut lab = Lab::new();
    let pair = setup(&lab);
    let b_info = &lab.netd_json(&["endpoint", "inspect", &pair.b])[0];
    let b_host_if = b_info["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();

    lab.daemon_mut().stop().unwrap();
    ip(&["netns", "delete", &pair.b]).unwrap();
    lab.daemon_mut().restart().unwrap();

    let endpoints = lab.netd_json(&["endpoint", "ls", "--json"]);
    let names: Vec<&str> = endpoints
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, [pair.a.as_str()], "{endpoints}");
    let net = &lab.netd_json(&["network", "inspect", "app"])[0];
    assert_eq!(net["endpoints"].as_array().unwrap().len(), 1, "{net}");
    let ports = lab.netd_json(&["port", "ls", "--json"]);
    assert_eq!(
        ports.as_array().unwrap().len(),
        0,
        "b's publication must go with it: {ports}"
    );
    assert!(!lab.host_links().contains(&b_host_if));
    // b's address is free again.
    let again = lab.endpoint_create(&lab.name("b2"), "app", &["--ip", &pair.b_ip.to_string()]);
    assert_eq!(first_ip(&again), pair.b_ip);
}

#[test]
fn a_restart_goes_on_past_an_endpoint_it_cannot_repair() {
    let mut lab = Lab::new();
    let pair = setup(&lab);
    let c = lab.name("c");
    lab.endpoint_create(&c, "app", &[]);

    // While the daemon is down, c's pair goes, and a stranger takes the name eth0 in c.
    lab.daemon_mut().kill9().unwrap();
    ip(&["-n", &c, "link", "del", "eth0"]).unwrap();
    ip(&[
        "-n", &c, "link", "add", "eth0", "type", "veth", "peer", "name", "squat",
    ])
    .unwrap();
    lab.daemon_mut().restart().unwrap();

    let log = lab.daemon().log();
    assert!(
        log.contains("could not repair the attachment") && log.contains(&c),
        "{log}"
    );
    // Everyone else works, and c can still be removed through the API.
    assert_connected(&lab, &pair);
    lab.netd_ok(&["endpoint", "rm", &c]);
    let endpoints = lab.netd_json(&["endpoint", "ls", "--json"]);
    assert_eq!(endpoints.as_array().unwrap().len(), 2, "{endpoints}");
}

/// Port changes go to the state journal; once it holds 1,024 lines and changes pause,
/// the daemon folds it into state.json. A kill -9 right after keeps every publication.
#[test]
fn the_state_journal_is_compacted_when_changes_pause() {
    let mut lab = Lab::new();
    let pair = setup(&lab);
    let journal = lab.daemon().state_dir().join("journal.jsonl");
    let lines = || {
        std::fs::read_to_string(&journal)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // setup() published one port; 1,023 more make the journal due.
    for port in 20001..=21023 {
        let spec = format!("{port}:{port}");
        lab.netd_ok(&["port", "publish", &pair.a, &spec]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lines() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the journal still holds {} lines after changes paused",
            lines()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let state = std::fs::read_to_string(lab.daemon().state_dir().join("state.json")).unwrap();
    assert!(
        state.contains("\"start\":21023"),
        "the snapshot holds the last publication"
    );
    let before = lab.snapshot();
    lab.daemon_mut().kill9().unwrap();
    lab.daemon_mut().restart().unwrap();
    assert_eq!(lab.snapshot(), before, "after kill -9 and restart");
}
