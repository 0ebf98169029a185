//! Golden tests: one per option, each against the full expected text. The base case is
//! anchors.md's example (Docker 29, `bridge1` 192.0.2.0/24, container 192.0.2.2,
//! `-p 8080:80`) with the userland-proxy-off deltas, which is also moby's
//! `hairpin=true,...` golden file.

use super::*;

fn network(name: &str, bridge: &str, subnet: &str) -> Network {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    Network {
        name: name.into(),
        id: 1,
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: bridge.into(),
    }
}

fn port(
    net: &str,
    ip: &str,
    proto: Proto,
    host_ip: Option<&str>,
    host: (u16, u16),
    ctr: (u16, u16),
) -> PublishedPort {
    PublishedPort {
        publication: Publication {
            endpoint: "c1".into(),
            network: net.into(),
            proto,
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host_ports: PortRange {
                start: host.0,
                end: host.1,
            },
            container_ports: PortRange {
                start: ctr.0,
                end: ctr.1,
            },
        },
        container_ip: ip.parse().unwrap(),
    }
}

fn bridge1() -> Network {
    network("bridge1", "bridge1", "192.0.2.0/24")
}

fn p8080() -> PublishedPort {
    port(
        "bridge1",
        "192.0.2.2",
        Proto::Tcp,
        None,
        (8080, 8080),
        (80, 80),
    )
}

fn render_for(
    networks: &[Network],
    ports: &[PublishedPort],
    snat_ip: Option<Ipv4Addr>,
    port_rules: PortRangeRules,
) -> String {
    render(&build(&RuleInput {
        networks,
        ports,
        snat_ip,
        port_rules,
    }))
}

fn assert_text(got: &str, want: &str) {
    assert_eq!(got, want, "\n--- got ---\n{got}\n--- want ---\n{want}");
}

const FILTER_HEAD: &str = "\
*filter
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
";

#[test]
fn docker_example_with_userland_proxy_off() {
    let got = render_for(&[bridge1()], &[p8080()], None, PortRangeRules::PerPort);
    let want = "\
*raw
-A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP
COMMIT
*filter
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER ! -i bridge1 -o bridge1 -j DROP
-A DOCKER-BRIDGE -o bridge1 -j DOCKER
-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i bridge1 -j ACCEPT
COMMIT
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE
-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80
COMMIT
";
    assert_text(&got, want);
}

#[test]
fn network_without_ports() {
    let got = render_for(&[bridge1()], &[], None, PortRangeRules::PerPort);
    let want = format!(
        "*raw\nCOMMIT\n{FILTER_HEAD}\
-A DOCKER ! -i bridge1 -o bridge1 -j DROP
-A DOCKER-BRIDGE -o bridge1 -j DOCKER
-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i bridge1 -j ACCEPT
COMMIT
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE
COMMIT
"
    );
    assert_text(&got, &want);
}

#[test]
fn no_networks_still_has_the_base_jumps() {
    let got = render_for(&[], &[], None, PortRangeRules::PerPort);
    let want = format!(
        "*raw\nCOMMIT\n{FILTER_HEAD}\
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
COMMIT
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
COMMIT
"
    );
    assert_text(&got, &want);
}

#[test]
fn icc_false_drops_inside_the_bridge() {
    let mut n = bridge1();
    n.icc = false;
    let got = render_for(&[n], &[], None, PortRangeRules::PerPort);
    // moby golden `icc=false`: DROP within the bridge, ACCEPT only what leaves it.
    assert!(got.contains("-A DOCKER-FORWARD -j DOCKER-BRIDGE\n-A DOCKER-FORWARD -i bridge1 -o bridge1 -j DROP\n-A DOCKER-FORWARD -i bridge1 ! -o bridge1 -j ACCEPT\nCOMMIT\n"), "{got}");
    assert!(
        !got.contains("-A DOCKER-FORWARD -i bridge1 -j ACCEPT"),
        "{got}"
    );
}

#[test]
fn internal_network_is_isolated_and_not_natted() {
    let mut icc = network("int", "bridgeICC", "192.0.2.0/24");
    icc.internal = true;
    let mut noicc = network("int2", "bridgeNoICC", "198.51.100.0/24");
    noicc.internal = true;
    noicc.icc = false;
    // A publication on an internal network gets no rules (Docker publishes nothing there).
    let p = port("int", "192.0.2.2", Proto::Tcp, None, (8080, 8080), (80, 80));
    let got = render_for(&[icc, noicc], &[p], None, PortRangeRules::PerPort);
    let want = format!(
        "*raw\nCOMMIT\n{FILTER_HEAD}\
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i bridgeICC -o bridgeICC -j ACCEPT
-A DOCKER-FORWARD -i bridgeNoICC -o bridgeNoICC -j DROP
-A DOCKER-INTERNAL ! -s 192.0.2.0/24 -o bridgeICC -j DROP
-A DOCKER-INTERNAL ! -d 192.0.2.0/24 -i bridgeICC -j DROP
-A DOCKER-INTERNAL ! -s 198.51.100.0/24 -o bridgeNoICC -j DROP
-A DOCKER-INTERNAL ! -d 198.51.100.0/24 -i bridgeNoICC -j DROP
COMMIT
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
COMMIT
"
    );
    assert_text(&got, &want);
}

#[test]
fn masquerade_false_keeps_only_the_hairpin_rules() {
    let mut n = bridge1();
    n.masquerade = false;
    let got = render_for(&[n], &[p8080()], None, PortRangeRules::PerPort);
    // moby golden `masq=false`.
    assert!(
        got.contains(
            "-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j MASQUERADE\n\
         -A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE\n\
         -A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80\n"
        ),
        "{got}"
    );
    assert!(!got.contains("-s 192.0.2.0/24"), "{got}");
}

#[test]
fn snat_ip_replaces_masquerade_except_hairpin() {
    let got = render_for(
        &[bridge1()],
        &[p8080()],
        Some(Ipv4Addr::new(203, 0, 113, 5)),
        PortRangeRules::PerPort,
    );
    // moby golden `snat=true`.
    assert!(got.contains(
        "-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j SNAT --to-source 203.0.113.5\n\
         -A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j SNAT --to-source 203.0.113.5\n\
         -A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE\n"
    ), "{got}");
}

#[test]
fn loopback_host_ip_adds_dnat_destination_and_raw_drop() {
    let p = port(
        "bridge1",
        "192.0.2.2",
        Proto::Tcp,
        Some("127.0.0.1"),
        (8080, 8080),
        (80, 80),
    );
    let got = render_for(&[bridge1()], &[p], None, PortRangeRules::PerPort);
    assert!(
        got.starts_with(
            "*raw\n\
         -A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP\n\
         -A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP\n\
         COMMIT\n"
        ),
        "{got}"
    );
    assert!(got.contains("-A DOCKER -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80\n"), "{got}");
}

#[test]
fn other_host_ip_restricts_dnat_without_raw_drop() {
    let p = port(
        "bridge1",
        "192.0.2.2",
        Proto::Tcp,
        Some("203.0.113.5"),
        (8080, 8080),
        (80, 80),
    );
    let wildcard = port(
        "bridge1",
        "192.0.2.2",
        Proto::Tcp,
        Some("0.0.0.0"),
        (9090, 9090),
        (90, 90),
    );
    let got = render_for(&[bridge1()], &[p, wildcard], None, PortRangeRules::PerPort);
    assert!(got.contains("-A DOCKER -d 203.0.113.5/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80\n"), "{got}");
    assert!(
        got.contains(
            "-A DOCKER -p tcp -m tcp --dport 9090 -j DNAT --to-destination 192.0.2.2:90\n"
        ),
        "{got}"
    );
    assert!(!got.contains("! -i lo"), "{got}");
}

#[test]
fn udp_uses_the_udp_match() {
    let p = port(
        "bridge1",
        "192.0.2.2",
        Proto::Udp,
        None,
        (5353, 5353),
        (53, 53),
    );
    let got = render_for(&[bridge1()], &[p], None, PortRangeRules::PerPort);
    for line in [
        "-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p udp -m udp --dport 53 -j ACCEPT\n",
        "-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p udp -m udp --dport 53 -j MASQUERADE\n",
        "-A DOCKER -p udp -m udp --dport 5353 -j DNAT --to-destination 192.0.2.2:53\n",
    ] {
        assert!(got.contains(line), "missing {line:?} in\n{got}");
    }
}

#[test]
fn ranges_expand_per_port_like_docker_newest_accept_first() {
    let p = port(
        "bridge1",
        "192.0.2.2",
        Proto::Tcp,
        None,
        (8000, 8001),
        (80, 81),
    );
    let got = render_for(&[bridge1()], &[p], None, PortRangeRules::PerPort);
    let want = format!(
        "*raw
-A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP
COMMIT
{FILTER_HEAD}\
-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 81 -j ACCEPT
-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER ! -i bridge1 -o bridge1 -j DROP
-A DOCKER-BRIDGE -o bridge1 -j DOCKER
-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i bridge1 -j ACCEPT
COMMIT
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE
-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 81 -j MASQUERADE
-A DOCKER -p tcp -m tcp --dport 8000 -j DNAT --to-destination 192.0.2.2:80
-A DOCKER -p tcp -m tcp --dport 8001 -j DNAT --to-destination 192.0.2.2:81
COMMIT
"
    );
    assert_text(&got, &want);
}

#[test]
fn ranges_per_range_use_one_rule_and_a_shifted_dnat() {
    let shifted = port(
        "bridge1",
        "192.0.2.2",
        Proto::Tcp,
        Some("127.0.0.1"),
        (8000, 8001),
        (80, 81),
    );
    let same = port(
        "bridge1",
        "192.0.2.2",
        Proto::Udp,
        None,
        (20000, 20999),
        (20000, 20999),
    );
    let got = render_for(
        &[bridge1()],
        &[shifted, same],
        None,
        PortRangeRules::PerRange,
    );
    for line in [
        "-A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8000:8001 -j DROP\n",
        "-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80:81 -j ACCEPT\n",
        "-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p udp -m udp --dport 20000:20999 -j ACCEPT\n",
        "-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80:81 -j MASQUERADE\n",
        "-A DOCKER -d 127.0.0.1/32 -p tcp -m tcp --dport 8000:8001 -j DNAT --to-destination 192.0.2.2:80-81/8000\n",
        "-A DOCKER -p udp -m udp --dport 20000:20999 -j DNAT --to-destination 192.0.2.2:20000-20999\n",
    ] {
        assert!(got.contains(line), "missing {line:?} in\n{got}");
    }
    // One raw direct-access drop per container, however many ports it publishes.
    assert_eq!(
        got.matches("-d 192.0.2.2/32 ! -i bridge1 -j DROP").count(),
        1,
        "{got}"
    );
    assert_eq!(got.matches("DNAT").count(), 2, "{got}");
}

#[test]
fn host_range_onto_one_container_port() {
    let p = port(
        "bridge1",
        "192.0.2.2",
        Proto::Tcp,
        None,
        (8000, 8001),
        (80, 80),
    );
    for mode in [PortRangeRules::PerPort, PortRangeRules::PerRange] {
        let got = render_for(&[bridge1()], std::slice::from_ref(&p), None, mode);
        assert!(got.contains("--dport 8000"), "{got}");
        assert!(
            got.contains("-j DNAT --to-destination 192.0.2.2:80\n"),
            "{got}"
        );
        assert!(!got.contains("192.0.2.2:81"), "{got}");
    }
}

#[test]
fn two_networks_keep_creation_order_and_skip_unknown_networks() {
    let mut n2 = network("db", "br-db", "198.51.100.0/24");
    n2.id = 2;
    let ports = [
        p8080(),
        port(
            "db",
            "198.51.100.7",
            Proto::Tcp,
            None,
            (5432, 5432),
            (5432, 5432),
        ),
        port("gone", "10.9.9.9", Proto::Tcp, None, (1, 1), (1, 1)),
    ];
    let got = render_for(&[bridge1(), n2], &ports, None, PortRangeRules::PerPort);
    let want = "\
*raw
-A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP
-A PREROUTING -d 198.51.100.7/32 ! -i br-db -j DROP
COMMIT
*filter
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER -d 198.51.100.7/32 ! -i br-db -o br-db -p tcp -m tcp --dport 5432 -j ACCEPT
-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER ! -i bridge1 -o bridge1 -j DROP
-A DOCKER ! -i br-db -o br-db -j DROP
-A DOCKER-BRIDGE -o bridge1 -j DOCKER
-A DOCKER-BRIDGE -o br-db -j DOCKER
-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-CT -o br-db -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i bridge1 -j ACCEPT
-A DOCKER-FORWARD -i br-db -j ACCEPT
COMMIT
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE
-A POSTROUTING -o br-db -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 198.51.100.0/24 ! -o br-db -j MASQUERADE
-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A POSTROUTING -s 198.51.100.7/32 -d 198.51.100.7/32 -p tcp -m tcp --dport 5432 -j MASQUERADE
-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80
-A DOCKER -p tcp -m tcp --dport 5432 -j DNAT --to-destination 198.51.100.7:5432
COMMIT
";
    assert_text(&got, want);
}

#[test]
fn rule_classification() {
    let rules = build(&RuleInput {
        networks: &[bridge1()],
        ports: &[p8080()],
        snat_ip: None,
        port_rules: PortRangeRules::PerPort,
    });
    let jumps: Vec<String> = rules
        .iter()
        .filter(|r| r.is_jump() && r.in_base_chain())
        .map(|r| format!("{} {r}", r.table))
        .collect();
    assert_eq!(
        jumps,
        [
            "filter -A FORWARD -j DOCKER-USER",
            "filter -A FORWARD -j DOCKER-FORWARD",
            "nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "nat -A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER",
        ]
    );
    let base = rules.iter().filter(|r| r.in_base_chain()).count();
    // 4 jumps + raw drop + 3 POSTROUTING rules.
    assert_eq!(base, 8);
    // Jumps inside netd's own chains are not "base jumps".
    assert!(
        rules
            .iter()
            .any(|r| r.chain == CH_FORWARD && r.is_jump() && !r.in_base_chain())
    );
}
