//! Observability through the CLI, as a user reads it: `netd stats` (table and `--json`)
//! with drops by named reason, table occupancy and (eBPF) packets and bytes per published
//! port, and the `netd conntrack ls` table.
//!
//! `stats_count_packets_and_bytes_per_published_port` is `ebpf_only`: its iptables twin is
//! ignored with the reason (iptables counts per rule, and netd does not report those
//! counters per published port).

#[macro_use]
mod dp_common;

use std::net::{Ipv4Addr, TcpStream};

use dp_common::{
    Dataplane, DropReason, IO, TcpEcho, assert_tcp_blocked, echo, endpoint, host, network, publish,
    route_wan_via_host, sock,
    stats::{assert_drops_rise, drop_count, port_counters, stats, table},
    tcp_connect,
};
use netd_tests::lab::{HOST_ADDR, WAN_ADDR};

dataplane_tests! {
    both: [
        stats_show_drops_by_named_reason,
        stats_show_table_occupancy,
        conntrack_ls_prints_a_table_of_flows,
    ],
    ebpf_only("iptables dataplane: iptables has only per-rule counters, and netd does not \
               report them per published port"): [
        stats_count_packets_and_bytes_per_published_port,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
/// Every drop reason the eBPF dataplane names (netd-common/src/stats.rs).
const EBPF_REASONS: [&str; 16] = [
    "malformed",
    "unknown_endpoint",
    "spoofed_mac",
    "spoofed_ip",
    "spoofed_arp",
    "isolation",
    "icc",
    "internal",
    "wan_to_container",
    "nat_exhausted",
    "nat_insert",
    "frag_unknown",
    "ttl_exceeded",
    "non_ip",
    "rewrite",
    "nat_unsupported",
];

fn stats_count_packets_and_bytes_per_published_port(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.110.0.0/24", &[]);
    let (c1, _) = endpoint(&lab, "c1", "app");
    let _srv = TcpEcho::start(&lab.netns_path(&c1), sock(ANY, 80));
    publish(&lab, &c1, "8080:80");
    publish(&lab, &c1, "9090:90");
    let (p0, b0) = port_counters(&lab, ":8080->");
    let idle = port_counters(&lab, ":9090->");

    let mut c = tcp_connect(&lab.wan().path(), None, host(8080), IO).expect("published port");
    let chunk = vec![0x5a; 10_000];
    for _ in 0..4 {
        assert_eq!(echo(&mut c, &chunk).unwrap(), chunk);
    }
    let (p1, b1) = port_counters(&lab, ":8080->");
    assert!(p1 >= p0 + 8, "packets of 8080: {p0} -> {p1}");
    assert!(
        b1 >= b0 + 80_000,
        "40 kB each way went through 8080, bytes counted {b0} -> {b1}"
    );
    assert_eq!(port_counters(&lab, ":9090->"), idle, "9090 carried nothing");

    let text = lab.netd_ok(&["stats"]);
    assert!(text.contains("PUBLICATION"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains(":8080->"))
        .unwrap_or_else(|| panic!("no row for 8080 in `netd stats`:\n{text}"));
    let numbers: Vec<u64> = row
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        numbers.iter().any(|&n| n >= p1),
        "the table's packet count for 8080 is not the JSON's: {row}"
    );
}

fn stats_show_drops_by_named_reason(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.110.1.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let _srv = TcpEcho::start(&lab.netns_path(&c1), sock(ANY, 80));
    publish(&lab, &c1, "8080:80");
    let s = stats(&lab);
    assert_eq!(s["dataplane"], dp.name(), "{s}");
    if dp == Dataplane::Ebpf {
        let listed: Vec<&str> = s["drops"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["reason"].as_str())
            .collect();
        assert_eq!(
            listed, EBPF_REASONS,
            "every reason, zeros included, in order"
        );
    }

    route_wan_via_host(&lab, "10.110.1.0/24");
    let reason = dp.drop_name(DropReason::WanToContainer);
    let before = drop_count(&lab, reason);
    assert_tcp_blocked(&lab.wan().path(), None, sock(c1_ip, 80), "wan -> container");
    assert_drops_rise(&lab, reason, before);

    let text = lab.netd_ok(&["stats"]);
    assert!(
        text.starts_with(&format!("Dataplane: {}", dp.name())),
        "{text}"
    );
    assert!(text.contains("DROP REASON"), "{text}");
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reason))
        .unwrap_or_else(|| panic!("no row for {reason} in `netd stats`:\n{text}"));
    let n: u64 = row
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {row:?}"));
    assert!(n > before, "the table shows {n} {reason} drops: {row}");
}

fn stats_show_table_occupancy(dp: Dataplane) {
    let lab = dp.lab_with(&["--conntrack-max", "1000", "--nat-max", "2000"]);
    network(&lab, "app", "10.110.2.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let wan = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    let (ct0, ct_cap) = table(&lab, "conntrack");
    let nat0 = (dp == Dataplane::Ebpf).then(|| table(&lab, "nat"));

    let open: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = tcp_connect(
                &lab.netns_path(&c1),
                Some(sock(c1_ip, 40000 + i)),
                wan.addr,
                IO,
            )
            .expect("masqueraded flow");
            assert_eq!(echo(&mut c, b"x").unwrap(), b"x");
            c
        })
        .collect();
    assert_eq!(wan.wait_conns(3)[2].peer, sock(HOST_ADDR, 40002));
    let (ct1, _) = table(&lab, "conntrack");
    assert!(
        ct1 >= ct0 + 3,
        "three open flows: conntrack entries {ct0} -> {ct1}"
    );
    assert!(ct_cap > 0);
    if let Some((nat0, nat_cap)) = nat0 {
        assert_eq!(ct_cap, 1000, "--conntrack-max sizes the conntrack table");
        assert_eq!(nat_cap, 2000, "--nat-max sizes the NAT table");
        let (nat1, _) = table(&lab, "nat");
        assert!(
            nat1 >= nat0 + 6,
            "three masqueraded flows are three pairs: nat entries {nat0} -> {nat1}"
        );
    }
    let text = lab.netd_ok(&["stats"]);
    assert!(
        text.contains("TABLE") && text.contains("conntrack"),
        "{text}"
    );
    drop(open);
}

fn conntrack_ls_prints_a_table_of_flows(dp: Dataplane) {
    let lab = dp.lab();
    network(&lab, "app", "10.110.3.0/24", &[]);
    let (c1, c1_ip) = endpoint(&lab, "c1", "app");
    let wan = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    let mut c = tcp_connect(&lab.netns_path(&c1), Some(sock(c1_ip, 40000)), wan.addr, IO).unwrap();
    assert_eq!(echo(&mut c, b"listed").unwrap(), b"listed");

    let text = lab.netd_ok(&["conntrack", "ls"]);
    for header in ["PROTO", "ORIGINAL", "TRANSLATED", "STATE"] {
        assert!(text.contains(header), "no {header} column:\n{text}");
    }
    let original = format!("{c1_ip}:40000 -> {WAN_ADDR}:7000");
    let translated = format!("{HOST_ADDR}:40000 -> {WAN_ADDR}:7000");
    let row = text
        .lines()
        .find(|l| l.contains(&original))
        .unwrap_or_else(|| panic!("no row for {original}:\n{text}"));
    assert!(
        row.contains(&translated),
        "the row does not show {translated}: {row}"
    );
    assert!(row.to_lowercase().contains("tcp"), "{row}");
}
