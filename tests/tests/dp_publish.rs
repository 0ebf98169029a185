//! Published ports: Docker's `-p` spec through `netd port publish` and `netd run -p`; a wan
//! client reaches the container, which sees the client's real address and port, and the
//! replies come back from the published address; unpublished ports and direct routing to
//! a container address are dropped; conflicts are refused and change nothing. Every test
//! runs on both dataplanes.

#[macro_use]
mod dp_common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use dp_common::{
    Dataplane, DropReason, IO, TcpEcho, UdpEcho, add_uplink_addr, assert_tcp_blocked, endpoint,
    host, network, publish, route_wan_via_host, sock, stats, tcp_exchange, udp_ask, udp_connected,
};
use netd_tests::{
    Lab,
    cli::{EXIT_API, assert_refused},
    lab::WAN_ADDR,
    process::Background,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

dataplane_tests! {
    both: [
        published_tcp_port_reaches_the_container_with_the_client_address,
        published_udp_port_reaches_the_container_with_the_client_address,
        a_range_is_one_publication_and_maps_port_by_port,
        a_missing_host_port_is_chosen_and_printed,
        a_host_ip_publication_answers_on_that_address_only,
        unpublished_ports_and_direct_routing_are_dropped,
        a_conflicting_publication_is_refused_and_changes_nothing,
        run_p_publishes_while_the_command_runs,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// A network `app` on `subnet` with one endpoint `a`; returns its name and address.
fn one_endpoint(lab: &Lab, subnet: &str) -> (String, Ipv4Addr) {
    network(lab, "app", subnet, &[]);
    endpoint(lab, "a", "app")
}

/// A TCP exchange from the wan (from `src`) to `dst` that must succeed with the echo.
fn wan_tcp(lab: &Lab, src: SocketAddr, dst: SocketAddr) {
    let payload = format!("{src} -> {dst}").into_bytes();
    let reply = tcp_exchange(&lab.wan().path(), Some(src), dst, &payload)
        .unwrap_or_else(|e| panic!("wan {src} -> {dst}: {e}"));
    assert_eq!(reply, payload, "the reply of {dst}");
}

/// `netd port ls ENDPOINT --json`.
fn port_ls(lab: &Lab, endpoint: &str) -> Vec<Value> {
    let list = lab.netd_json(&["port", "ls", endpoint, "--json"]);
    list.as_array().cloned().unwrap_or_default()
}

fn published_tcp_port_reaches_the_container_with_the_client_address(dp: Dataplane) {
    let lab = dp.lab();
    let (a, _) = one_endpoint(&lab, "10.30.0.0/24");
    let srv = TcpEcho::start(&lab.netns_path(&a), sock(ANY, 80));
    let printed = publish(&lab, &a, "8080:80");
    assert_eq!(printed.trim(), "0.0.0.0:8080->80/tcp");

    wan_tcp(&lab, sock(WAN_ADDR, 45000), host(8080));
    let conns = srv.wait_conns(1);
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(
        conns[0].peer,
        sock(WAN_ADDR, 45000),
        "the container must see the wan client's real address and port"
    );
}

fn published_udp_port_reaches_the_container_with_the_client_address(dp: Dataplane) {
    let lab = dp.lab();
    let (a, _) = one_endpoint(&lab, "10.30.1.0/24");
    let srv = UdpEcho::start(&lab.netns_path(&a), sock(ANY, 81));
    assert_eq!(
        publish(&lab, &a, "8081:81/udp").trim(),
        "0.0.0.0:8081->81/udp"
    );
    // A connected socket accepts replies from host:8081 only: the reply's source must be
    // translated back.
    let s = udp_connected(&lab.wan().path(), Some(sock(WAN_ADDR, 45001)), host(8081)).unwrap();
    assert_eq!(
        udp_ask(&s, b"udp to a published port").expect("the reply from the published address"),
        b"udp to a published port"
    );
    assert_eq!(srv.peers(), [sock(WAN_ADDR, 45001)]);
}

fn a_range_is_one_publication_and_maps_port_by_port(dp: Dataplane) {
    let lab = dp.lab();
    let (a, _) = one_endpoint(&lab, "10.30.2.0/24");
    let ns = lab.netns_path(&a);
    publish(&lab, &a, "9000-9002:9000-9002");
    publish(&lab, &a, "9100-9102:7100-7102");
    let list = port_ls(&lab, &a);
    assert_eq!(list.len(), 2, "each range is one publication: {list:?}");
    assert_eq!(
        list[0]["host_ports"],
        serde_json::json!({"start": 9000, "end": 9002})
    );
    assert_eq!(
        list[0]["container_ports"],
        serde_json::json!({"start": 9000, "end": 9002})
    );
    assert_eq!(
        list[1]["host_ports"],
        serde_json::json!({"start": 9100, "end": 9102})
    );
    assert_eq!(
        list[1]["container_ports"],
        serde_json::json!({"start": 7100, "end": 7102})
    );

    for (host_port, container_port) in [(9000, 9000), (9001, 9001), (9002, 9002), (9101, 7101)] {
        // Listeners on the neighbouring container ports catch a port mapped off by one.
        let srvs: Vec<TcpEcho> = (container_port - 1..=container_port + 1)
            .map(|p| TcpEcho::start(&ns, sock(ANY, p)))
            .collect();
        wan_tcp(&lab, sock(WAN_ADDR, 45002), host(host_port));
        let got: Vec<usize> = srvs.iter().map(|s| s.conns().len()).collect();
        assert_eq!(
            got,
            [0, 1, 0],
            "host port {host_port} must reach container port {container_port} only \
             (connections on {}..={})",
            container_port - 1,
            container_port + 1
        );
    }
}

fn a_missing_host_port_is_chosen_and_printed(dp: Dataplane) {
    let lab = dp.lab();
    let (a, _) = one_endpoint(&lab, "10.30.3.0/24");
    let srv = TcpEcho::start(&lab.netns_path(&a), sock(ANY, 80));
    let printed = publish(&lab, &a, "80");
    let port: u16 = printed
        .trim()
        .strip_prefix("0.0.0.0:")
        .and_then(|rest| rest.strip_suffix("->80/tcp"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected 0.0.0.0:PORT->80/tcp, got {printed:?}"));
    assert_ne!(port, 0);
    let list = port_ls(&lab, &a);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["host_ports"]["start"], port, "{list:?}");
    wan_tcp(&lab, sock(WAN_ADDR, 45003), host(port));
    assert_eq!(srv.wait_conns(1)[0].peer, sock(WAN_ADDR, 45003));
}

fn a_host_ip_publication_answers_on_that_address_only(dp: Dataplane) {
    let lab = dp.lab();
    let second = Ipv4Addr::new(203, 0, 113, 3);
    add_uplink_addr(&lab, "203.0.113.3/24");
    let (a, _) = one_endpoint(&lab, "10.30.4.0/24");
    let ns = lab.netns_path(&a);
    let (s80, s81) = (
        TcpEcho::start(&ns, sock(ANY, 80)),
        TcpEcho::start(&ns, sock(ANY, 81)),
    );
    assert_eq!(
        publish(&lab, &a, "203.0.113.2:8082:80").trim(),
        "203.0.113.2:8082->80/tcp"
    );
    publish(&lab, &a, "203.0.113.3:8082:81");

    wan_tcp(&lab, sock(WAN_ADDR, 45004), host(8082));
    wan_tcp(&lab, sock(WAN_ADDR, 45005), sock(second, 8082));
    assert_eq!(s80.wait_conns(1)[0].peer, sock(WAN_ADDR, 45004));
    assert_eq!(s81.wait_conns(1)[0].peer, sock(WAN_ADDR, 45005));
    assert_eq!((s80.conns().len(), s81.conns().len()), (1, 1));

    publish(&lab, &a, "203.0.113.2:8083:80");
    assert_tcp_blocked(
        &lab.wan().path(),
        None,
        sock(second, 8083),
        "a port published on 203.0.113.2 only, reached at 203.0.113.3",
    );
    assert_eq!(s80.conns().len(), 1, "nothing more may reach the container");
}

fn unpublished_ports_and_direct_routing_are_dropped(dp: Dataplane) {
    let lab = dp.lab();
    let (a, a_ip) = one_endpoint(&lab, "10.30.5.0/24");
    let ns = lab.netns_path(&a);
    let (s80, s81) = (
        TcpEcho::start(&ns, sock(ANY, 80)),
        TcpEcho::start(&ns, sock(ANY, 81)),
    );
    publish(&lab, &a, "8080:80");
    wan_tcp(&lab, sock(WAN_ADDR, 45006), host(8080));
    assert_eq!(s80.wait_conns(1).len(), 1, "the published port works");

    assert_tcp_blocked(
        &lab.wan().path(),
        None,
        host(8081),
        "an unpublished host port",
    );
    // A wan neighbour that routes the container subnet through the host.
    route_wan_via_host(&lab, "10.30.5.0/24");
    let reason = dp.drop_name(DropReason::WanToContainer);
    let before = stats::drop_count(&lab, reason);
    assert_tcp_blocked(
        &lab.wan().path(),
        None,
        sock(a_ip, 80),
        "direct routing to a published container port",
    );
    assert_tcp_blocked(
        &lab.wan().path(),
        None,
        sock(a_ip, 81),
        "direct routing to an unpublished container port",
    );
    stats::assert_drops_rise(&lab, reason, before);
    assert_eq!(
        s80.conns().len(),
        1,
        "only the published connection reached port 80"
    );
    assert!(
        s81.conns().is_empty(),
        "nothing may reach port 81: {:?}",
        s81.conns()
    );
}

fn a_conflicting_publication_is_refused_and_changes_nothing(dp: Dataplane) {
    let lab = dp.lab();
    let (a, _) = one_endpoint(&lab, "10.30.6.0/24");
    let (b, _) = endpoint(&lab, "b", "app");
    let sa = TcpEcho::start(&lab.netns_path(&a), sock(ANY, 80));
    let sb = TcpEcho::start(&lab.netns_path(&b), sock(ANY, 90));
    publish(&lab, &a, "8080:80");
    publish(&lab, &a, "9000-9009:9000-9009");
    let before = lab.snapshot();

    for spec in [
        "8080:90",
        "127.0.0.1:8080:90",
        "203.0.113.2:8080:90",
        "8075-8085:85-95",
        "9009:90",
    ] {
        let out = lab.netd(&["port", "publish", &b, spec]);
        let clash = if spec.starts_with("9009") {
            "9009"
        } else {
            "8080"
        };
        assert_refused(
            &out,
            EXIT_API,
            &[clash],
            &["conflict", "already published", "in use"],
        );
        assert_eq!(lab.snapshot(), before, "refusing {spec} changed the state");
    }
    wan_tcp(&lab, sock(WAN_ADDR, 45007), host(8080));
    assert_eq!(sa.wait_conns(1).len(), 1, "8080 still reaches a");
    assert!(
        sb.conns().is_empty(),
        "a refused publication reached b: {:?}",
        sb.conns()
    );
    // The same port over UDP is another publication.
    publish(&lab, &b, "8080:90/udp");
}

fn run_p_publishes_while_the_command_runs(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.30.7.0/24", &[]);
    let r = lab.name("r");
    let run = Background::spawn(&mut lab.netd_command(&[
        "run",
        "--name",
        &r,
        "--network",
        "app",
        "-p",
        "8084:80",
        "-p",
        "9200-9201:9200-9201/udp",
        "--",
        "sleep",
        "60",
    ]))
    .unwrap();
    // Until `netd run` has created its endpoint, `port ls` of it is "not found".
    let published = || {
        let out = lab.netd(&["port", "ls", &r, "--json"]);
        out.success()
            && serde_json::from_str::<Value>(&out.stdout)
                .is_ok_and(|v| v.as_array().is_some_and(|l| l.len() >= 2))
    };
    let deadline = Instant::now() + IO;
    while !published() {
        assert!(
            Instant::now() < deadline,
            "netd run did not publish: {}",
            lab.netd(&["port", "ls", &r, "--json"])
        );
        thread::sleep(Duration::from_millis(50));
    }
    let list = port_ls(&lab, &r);
    assert_eq!(list[1]["proto"], "udp", "{list:?}");
    assert_eq!(
        list[1]["host_ports"],
        serde_json::json!({"start": 9200, "end": 9201})
    );

    let srv = TcpEcho::start(&lab.netns_path(&r), sock(ANY, 80));
    wan_tcp(&lab, sock(WAN_ADDR, 45008), host(8084));
    assert_eq!(srv.wait_conns(1)[0].peer, sock(WAN_ADDR, 45008));
    let usrv = UdpEcho::start(&lab.netns_path(&r), sock(ANY, 9201));
    let s = udp_connected(&lab.wan().path(), Some(sock(WAN_ADDR, 45009)), host(9201)).unwrap();
    assert_eq!(
        udp_ask(&s, b"run -p udp").expect("UDP through run -p"),
        b"run -p udp"
    );
    assert_eq!(usrv.peers(), [sock(WAN_ADDR, 45009)]);
    drop((srv, usrv));

    // SIGTERM is forwarded to the command; netd run then removes the endpoint.
    nix::sys::signal::kill(Pid::from_raw(run.pid().as_raw()), Signal::SIGTERM).unwrap();
    let out = run.wait(Duration::from_secs(30)).unwrap();
    assert_eq!(
        out.code,
        128 + 15,
        "netd run exits with its command's status: {out}"
    );
    let left = lab.netd_json(&["port", "ls", "--json"]);
    assert_eq!(
        left,
        serde_json::json!([]),
        "netd run left publications behind"
    );
    assert_tcp_blocked(
        &lab.wan().path(),
        None,
        host(8084),
        "a port of a finished netd run",
    );
}
