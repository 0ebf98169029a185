//! Endpoints on netd networks talk to each other and to their gateway, and their
//! namespaces are set up the way Docker sets up a container's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use netd_tests::{
    Lab, LabConfig, NetnsGuard, Server,
    cli::{first_ip, ip_of},
    lab::{HOST_ADDR, WAN_ADDR},
    process::{addrs, ip, links, netns_exec},
    traffic::{tcp_request, udp_request},
};

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// Ping `to` from the named namespace `from`; panics with ping's output on failure.
fn ping(from: &str, to: Ipv4Addr) {
    let out = netns_exec(from, &["ping", "-c", "1", "-W", "5", &to.to_string()]).unwrap();
    assert!(out.success(), "ping {to} from {from}: {out}");
}

#[test]
fn two_endpoints_exchange_tcp_and_udp() {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", "10.10.0.0/24"]);
    let (a, b) = (lab.name("a"), lab.name("b"));
    let a_ip = first_ip(&lab.endpoint_create(&a, "app", &[]));
    let b_ip = first_ip(&lab.endpoint_create(&b, "app", &[]));
    assert_ne!(a_ip, b_ip);
    for ip in [a_ip, b_ip] {
        assert_eq!(ip.octets()[..3], [10, 10, 0], "{ip} is not in 10.10.0.0/24");
    }

    let server = Server::tcp(&lab.netns_path(&b), sock(b_ip, 7000)).unwrap();
    let reply = tcp_request(&lab.netns_path(&a), None, server.addr, b"tcp from a").unwrap();
    let got = server.join().unwrap();
    assert_eq!(got.data, b"tcp from a");
    assert_eq!(got.peer.ip(), a_ip, "b must see a's own address");
    assert_eq!(reply, b"tcp from a");

    let server = Server::udp(&lab.netns_path(&a), sock(Ipv4Addr::UNSPECIFIED, 7001)).unwrap();
    let reply = udp_request(
        &lab.netns_path(&b),
        Some(sock(b_ip, 40100)),
        sock(a_ip, 7001),
        b"udp from b",
    )
    .unwrap();
    let got = server.join().unwrap();
    assert_eq!(got.data, b"udp from b");
    assert_eq!(
        got.peer,
        sock(b_ip, 40100),
        "a must see b's address and port unchanged"
    );
    assert_eq!(reply, b"udp from b");
}

#[test]
fn an_endpoint_reaches_its_gateway() {
    let lab = Lab::new();
    let net = lab.network_create(
        "gw",
        &["--subnet", "10.11.0.0/24", "--gateway", "10.11.0.254"],
    );
    let gateway = ip_of(&net["gateway"]);
    assert_eq!(gateway, Ipv4Addr::new(10, 11, 0, 254));
    let a = lab.name("a");
    let a_ip = first_ip(&lab.endpoint_create(&a, "gw", &[]));
    ping(&a, gateway);

    // A service on the gateway address in the host namespace sees the endpoint's address.
    let server = Server::tcp(&lab.host().path(), sock(gateway, 7002)).unwrap();
    tcp_request(&lab.netns_path(&a), None, server.addr, b"to the gateway").unwrap();
    let got = server.join().unwrap();
    assert_eq!(got.data, b"to the gateway");
    assert_eq!(got.peer.ip(), a_ip);
}

#[test]
fn endpoint_namespace_is_set_up_like_a_docker_container() {
    let lab = Lab::new();
    let net = lab.network_create("shape", &["--subnet", "10.12.0.0/24", "--mtu", "1400"]);
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let a = lab.name("a");
    let info = lab.endpoint_create(&a, "shape", &[]);
    let a_ip = first_ip(&info);
    let host_if = info["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(info["attachments"][0]["ifname"], "eth0");
    let [o1, o2, o3, o4] = a_ip.octets();
    let mac = format!("02:42:{o1:02x}:{o2:02x}:{o3:02x}:{o4:02x}");
    assert_eq!(
        info["attachments"][0]["mac"],
        mac.as_str(),
        "Docker's MAC derivation"
    );

    // Inside: eth0 with the address, the MAC and the network's MTU, lo up, default route.
    assert!(
        addrs(&a)
            .unwrap()
            .contains(&("eth0".into(), format!("{a_ip}/24")))
    );
    let eth0 = ip(&["-n", &a, "-o", "link", "show", "eth0"]).unwrap();
    assert!(eth0.contains(&format!("link/ether {mac}")), "{eth0}");
    assert!(eth0.contains("mtu 1400"), "{eth0}");
    let lo = ip(&["-n", &a, "-o", "link", "show", "lo"]).unwrap();
    assert!(lo.contains(",UP"), "{lo}");
    let route = ip(&["-n", &a, "route", "show", "default"]).unwrap();
    assert!(route.contains("via 10.12.0.1 dev eth0"), "{route}");

    // Outside: the bridge holds the gateway; the host end of the veth is its port.
    assert!(
        lab.host_addrs()
            .contains(&(bridge.clone(), "10.12.0.1/24".into()))
    );
    let ports = ip(&[
        "-n",
        lab.host().name(),
        "-o",
        "link",
        "show",
        "master",
        &bridge,
    ])
    .unwrap();
    assert!(
        ports.contains(&format!(" {host_if}@")),
        "{host_if} is not a port of {bridge}: {ports}"
    );
    let forwarding =
        netns_exec(lab.host().name(), &["cat", "/proc/sys/net/ipv4/ip_forward"]).unwrap();
    assert_eq!(
        forwarding.stdout.trim(),
        "1",
        "ip_forward in the daemon's namespace"
    );
}

#[test]
fn explicit_ip_mac_and_ip_range_are_honoured() {
    let lab = Lab::new();
    lab.network_create(
        "ranged",
        &["--subnet", "10.13.0.0/24", "--ip-range", "10.13.0.128/25"],
    );
    let auto = first_ip(&lab.endpoint_create(&lab.name("auto"), "ranged", &[]));
    assert!(
        auto.octets()[3] >= 128,
        "{auto} is outside --ip-range 10.13.0.128/25"
    );
    let fixed = lab.endpoint_create(
        &lab.name("fixed"),
        "ranged",
        &["--ip", "10.13.0.50", "--mac", "02:00:00:00:00:50"],
    );
    assert_eq!(first_ip(&fixed), Ipv4Addr::new(10, 13, 0, 50));
    assert_eq!(fixed["attachments"][0]["mac"], "02:00:00:00:00:50");
    let eth0 = ip(&["-n", &lab.name("fixed"), "-o", "link", "show", "eth0"]).unwrap();
    assert!(eth0.contains("link/ether 02:00:00:00:00:50"), "{eth0}");
}

#[test]
fn an_endpoint_connects_to_a_second_network_and_disconnects() {
    let lab = Lab::new();
    lab.network_create("front", &["--subnet", "10.14.0.0/24"]);
    lab.network_create("back", &["--subnet", "10.15.0.0/24"]);
    let a = lab.name("a");
    lab.endpoint_create(&a, "front", &[]);
    lab.netd_ok(&["endpoint", "connect", &a, "back"]);

    let info = &lab.netd_json(&["endpoint", "inspect", &a])[0];
    let attachments = info["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2, "{info}");
    assert_eq!(attachments[1]["network"], "back");
    assert_eq!(attachments[1]["ifname"], "eth1");
    let back_ip = ip_of(&attachments[1]["ip"]);
    let back_host_if = attachments[1]["host_ifname"].as_str().unwrap().to_string();
    assert!(
        addrs(&a)
            .unwrap()
            .contains(&("eth1".into(), format!("{back_ip}/24")))
    );
    ping(&a, Ipv4Addr::new(10, 15, 0, 1));

    lab.netd_ok(&["endpoint", "disconnect", &a, "back"]);
    let info = &lab.netd_json(&["endpoint", "inspect", &a])[0];
    assert_eq!(info["attachments"].as_array().unwrap().len(), 1, "{info}");
    assert!(!links(&a).unwrap().contains(&"eth1".to_string()));
    assert!(
        !lab.host_links().contains(&back_host_if),
        "{back_host_if} left behind"
    );
    let back = &lab.netd_json(&["network", "inspect", "back"])[0];
    assert_eq!(back["endpoints"].as_array().unwrap().len(), 0, "{back}");
}

#[test]
fn disconnecting_the_first_network_hands_the_default_route_on() {
    let lab = Lab::new();
    lab.network_create("first", &["--subnet", "10.18.0.0/24"]);
    lab.network_create("second", &["--subnet", "10.19.0.0/24"]);
    let a = lab.name("a");
    lab.endpoint_create(&a, "first", &[]);
    lab.netd_ok(&["endpoint", "connect", &a, "second"]);
    let routes = ip(&["-n", &a, "route", "show", "default"]).unwrap();
    assert!(routes.contains("via 10.18.0.1 dev eth0"), "{routes}");

    lab.netd_ok(&["endpoint", "disconnect", &a, "first"]);
    let routes = ip(&["-n", &a, "route", "show", "default"]).unwrap();
    assert!(routes.contains("via 10.19.0.1 dev eth1"), "{routes}");
    // The wan is reached through the second network, masqueraded.
    let server = Server::tcp(&lab.wan().path(), sock(WAN_ADDR, 0)).unwrap();
    let reply = tcp_request(&lab.netns_path(&a), None, server.addr, b"still out").unwrap();
    assert_eq!(reply, b"still out");
    assert_eq!(server.join().unwrap().peer.ip(), HOST_ADDR);
}

#[test]
fn an_existing_namespace_is_attached_and_left_in_place() {
    let lab = Lab::new();
    lab.network_create("rt", &["--subnet", "10.16.0.0/24"]);
    let runtime_ns = NetnsGuard::new().unwrap();
    let name = lab.name("ctr");
    let path = runtime_ns.path();
    let info = lab.endpoint_create(&name, "rt", &["--netns", path.to_str().unwrap()]);
    assert_eq!(info["netns"]["owned"], false);
    let ip = first_ip(&info);
    assert!(
        addrs(runtime_ns.name())
            .unwrap()
            .contains(&("eth0".into(), format!("{ip}/24")))
    );
    assert!(
        !lab.netns_path(&name).exists(),
        "netd must not create /run/netns/{name} for --netns"
    );

    lab.netd_ok(&["endpoint", "rm", &name]);
    assert!(
        path.exists(),
        "the runtime's namespace must survive endpoint rm"
    );
    assert_eq!(
        links(runtime_ns.name()).unwrap(),
        ["lo"],
        "eth0 must go with the endpoint"
    );
}

#[test]
fn the_default_network_is_created_on_first_start() {
    let lab = Lab::with_config(LabConfig {
        default_network: true,
        ..LabConfig::unique()
    });
    let net = &lab.netd_json(&["network", "inspect", "netd0"])[0];
    assert_eq!(net["subnet"], "172.17.0.0/16");
    assert_eq!(net["gateway"], "172.17.0.1");
    assert_eq!(net["bridge"], "netd0");
    // Without --network an endpoint lands on it.
    let a = lab.name("a");
    let out = lab.netd(&["endpoint", "create", &a, "--json"]);
    assert!(out.success(), "{out}");
    let info: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(info["attachments"][0]["network"], "netd0");
    assert_eq!(first_ip(&info).octets()[..2], [172, 17]);
    ping(&a, Ipv4Addr::new(172, 17, 0, 1));
}

#[test]
fn the_default_network_is_created_once_a_failed_first_start_is_retried() {
    let mut lab = Lab::with_config(LabConfig {
        default_network: true,
        ..LabConfig::unique()
    });
    // Back to a first start, with a link that makes creating netd0 fail.
    lab.daemon_mut().stop().unwrap();
    let state = lab.daemon().state_dir();
    for file in ["state.json", "journal.jsonl"] {
        let _ = std::fs::remove_file(state.join(file));
    }
    let host = lab.host().name().to_string();
    ip(&["-n", &host, "link", "del", "netd0"]).unwrap();
    ip(&[
        "-n", &host, "link", "add", "netd0", "type", "veth", "peer", "name", "netd0p",
    ])
    .unwrap();
    let err = lab.daemon_mut().restart().unwrap_err();
    let log = lab.daemon().log();
    assert!(
        log.contains("creating the default network") && log.contains("netd0"),
        "{err:#}\n{log}"
    );

    // The failed start must not have recorded itself as the first one.
    ip(&["-n", &host, "link", "del", "netd0"]).unwrap();
    lab.daemon_mut().restart().unwrap();
    let net = &lab.netd_json(&["network", "inspect", "netd0"])[0];
    assert_eq!(net["subnet"], "172.17.0.0/16");
    assert!(lab.host_links().iter().any(|l| l == "netd0"));
}

/// The packets an interface's TC programs counted, from `netd stats --json`.
fn counted_packets(lab: &Lab, ifname: &str) -> u64 {
    let stats = lab.netd_json(&["stats", "--json"]);
    let counters = stats["interfaces"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["ifname"] == ifname))
        .unwrap_or_else(|| panic!("no counters for {ifname}: {stats}"));
    counters["rx_packets"].as_u64().unwrap() + counters["tx_packets"].as_u64().unwrap()
}

#[test]
fn tc_programs_count_packets_per_interface() {
    let lab = Lab::new();
    lab.network_create("counted", &["--subnet", "10.17.0.0/24"]);
    let a = lab.name("a");
    let info = lab.endpoint_create(&a, "counted", &[]);
    let host_if = info["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    // (bpftool 7.1 from Debian cannot list tcx attachments; the counters prove them.)
    for _ in 0..3 {
        ping(&a, Ipv4Addr::new(10, 17, 0, 1));
    }
    let packets = counted_packets(&lab, &host_if);
    assert!(
        packets >= 6,
        "3 pings through {host_if} are at least 6 packets, counted {packets}"
    );
    for _ in 0..3 {
        ping(lab.host().name(), WAN_ADDR);
    }
    let packets = counted_packets(&lab, netd_tests::lab::UPLINK);
    assert!(
        packets >= 6,
        "3 pings through the uplink are at least 6 packets, counted {packets}"
    );
}
