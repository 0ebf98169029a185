//! No netfilter: with the eBPF dataplane, masquerade, published ports and hairpin work while
//! the lab host's ruleset (nftables, iptables-nft and iptables-legacy) has no NAT rule and
//! the kernel's conntrack holds no entry; and on both dataplanes netd coexists with
//! unrelated iptables rules that were there before it started.
//!
//! `no_nat_rule_and_no_kernel_conntrack_while_everything_works` is `ebpf_internal`: no
//! iptables test exists for it, not even an ignored one, because the iptables dataplane is
//! made of NAT rules and the kernel's conntrack by design; the check has no meaning there.

#[macro_use]
mod dp_common;

use std::net::Ipv4Addr;

use dp_common::{
    Dataplane, IO, TcpEcho, echo, endpoint, exec, host, network, publish, sock, tcp_connect,
    tcp_exchange,
};
use netd_tests::{Lab, lab::HOST_ADDR, lab::WAN_ADDR};

dataplane_tests! {
    both: [unrelated_iptables_rules_stay_and_netd_still_works],
    ebpf_internal("The iptables dataplane is made of NAT rules and the kernel's conntrack."): [
        no_nat_rule_and_no_kernel_conntrack_while_everything_works,
    ],
}

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
/// A harmless filter rule that is not netd's.
const UNRELATED: [&str; 11] = [
    "-A",
    "INPUT",
    "-p",
    "tcp",
    "--dport",
    "5999",
    "-m",
    "comment",
    "--comment",
    "unrelated-rule",
    "-j",
];

/// Masquerade, a published port and hairpin, each with bytes both ways.
fn everything_works(lab: &Lab, subnet: &str) {
    network(lab, "app", subnet, &[]);
    let (c1, c1_ip) = endpoint(lab, "c1", "app");
    let (c2, _) = endpoint(lab, "c2", "app");
    let wan = TcpEcho::start(&lab.wan().path(), sock(WAN_ADDR, 7000));
    let mut out = tcp_connect(&lab.netns_path(&c1), Some(sock(c1_ip, 40000)), wan.addr, IO)
        .expect("masquerade");
    assert_eq!(echo(&mut out, b"out").unwrap(), b"out");
    assert_eq!(wan.wait_conns(1)[0].peer, sock(HOST_ADDR, 40000));

    let srv = TcpEcho::start(&lab.netns_path(&c1), sock(ANY, 80));
    publish(lab, &c1, "8080:80");
    let reply = tcp_exchange(
        &lab.wan().path(),
        Some(sock(WAN_ADDR, 45000)),
        host(8080),
        b"in",
    )
    .expect("published port");
    assert_eq!(reply, b"in");
    let hairpin =
        tcp_exchange(&lab.netns_path(&c2), None, host(8080), b"hairpin").expect("hairpin");
    assert_eq!(hairpin, b"hairpin");
    assert_eq!(srv.wait_conns(2).len(), 2);
}

/// `TOOL ARGS...` in the host namespace; must succeed; its stdout.
fn host_tool(lab: &Lab, cmd: &[&str]) -> String {
    let out = exec(lab.host().name(), cmd);
    assert!(
        out.success(),
        "`{}` in the host namespace: {out}",
        cmd.join(" ")
    );
    out.stdout
}

fn no_nat_rule_and_no_kernel_conntrack_while_everything_works(dp: Dataplane) {
    let lab = dp.lab();
    everything_works(&lab, "10.90.0.0/24");
    let nat_words = ["masquerade", "dnat", "snat", "redirect", "type nat", "*nat"];
    for cmd in [
        &["iptables-nft-save"][..],
        &["iptables-legacy-save"],
        &["nft", "list", "ruleset"],
    ] {
        let rules = host_tool(&lab, cmd).to_lowercase();
        for word in nat_words {
            assert!(
                !rules.contains(word),
                "`{}` in the lab host shows {word:?}:\n{rules}",
                cmd.join(" ")
            );
        }
    }
    // Nothing made the kernel track connections in this namespace.
    let count = host_tool(&lab, &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]);
    assert_eq!(
        count.trim(),
        "0",
        "kernel conntrack entries in the lab host"
    );
    let route_localnet = host_tool(&lab, &["sysctl", "-n", "net.ipv4.conf.all.route_localnet"]);
    assert_eq!(route_localnet.trim(), "0", "route_localnet must stay off");
}

fn unrelated_iptables_rules_stay_and_netd_still_works(dp: Dataplane) {
    let mut lab = dp.lab();
    // The rule is there before the daemon starts (a restart is a start on an existing
    // host).
    lab.daemon_mut().stop().unwrap();
    let mut add = vec!["iptables"];
    add.extend_from_slice(&UNRELATED);
    add.push("ACCEPT");
    host_tool(&lab, &add);
    host_tool(&lab, &["iptables", "-t", "filter", "-N", "UNRELATED-CHAIN"]);
    lab.daemon_mut().restart().unwrap();

    everything_works(&lab, "10.90.1.0/24");
    lab.netd_ok(&["network", "create", "other", "--subnet", "10.90.2.0/24"]);
    lab.netd_ok(&["network", "rm", "other"]);
    let rules = host_tool(&lab, &["iptables-save"]);
    // iptables-save prints it as `-A INPUT -p tcp -m tcp --dport 5999 -m comment ...`.
    let kept = rules.lines().any(|l| {
        l.starts_with("-A INPUT ")
            && l.contains("--dport 5999")
            && l.contains("unrelated-rule")
            && l.ends_with("-j ACCEPT")
    });
    assert!(kept, "the unrelated rule is gone:\n{rules}");
    assert!(
        rules.contains(":UNRELATED-CHAIN"),
        "the unrelated chain is gone:\n{rules}"
    );
}
