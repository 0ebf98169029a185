//! The rules Docker 29 programs for bridge networks, built as data from the desired state.
//!
//! The reference is moby's `daemon/libnetwork/drivers/bridge/internal/iptabler` (golden
//! files `testdata/TestIptabler/*.golden`) with the userland proxy off, so hairpin NAT
//! happens in the kernel:
//! - filter: `FORWARD` jumps to `DOCKER-USER` and `DOCKER-FORWARD`; `DOCKER-FORWARD` runs
//!   `DOCKER-CT` (established flows back into a bridge), `DOCKER-INTERNAL` (isolation of
//!   `--internal` networks), `DOCKER-BRIDGE` (into `DOCKER` per bridge), then accepts what
//!   leaves a bridge. `DOCKER` accepts published ports and drops everything else that
//!   enters a bridge from outside.
//! - nat: `PREROUTING`/`OUTPUT` jump to `DOCKER` for local destinations; `DOCKER` holds one
//!   DNAT per published port; `POSTROUTING` masquerades each subnet, host-originated
//!   traffic into the bridge (`--src-type LOCAL`) and a container reaching itself through
//!   its own published port (hairpin).
//! - raw: `PREROUTING` drops packets addressed straight to a container that publishes
//!   ports unless they come from its bridge, and packets to a port published on 127.0.0.1
//!   unless they come from `lo` (route_localnet would otherwise expose it, moby #45610).
//!
//! Docker expands a published port range into one binding per port (go-connections
//! `nat.ParsePortSpec`), so `-p 20000-20999:20000-20999` costs 1,000 DNAT, 1,000 ACCEPT
//! and 1,000 MASQUERADE rules. [`PortRangeRules::PerPort`] reproduces that;
//! [`PortRangeRules::PerRange`] writes one rule per range instead (what podman does), with
//! a shifted DNAT range (`ip:X-Y/A`, DNAT revision 2, Linux 4.19) when host and container
//! ports differ, so port A+i still reaches X+i.

use std::{collections::HashSet, fmt, net::Ipv4Addr};

use crate::model::{Network, PortRange, Proto, Publication};

/// An iptables table netd writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Raw,
    Filter,
    Nat,
}

impl Table {
    /// All tables, in the order Docker's golden files list them.
    pub const ALL: [Table; 3] = [Table::Raw, Table::Filter, Table::Nat];

    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }

    /// The table's built-in chains (other chains in it are user-defined).
    pub fn base_chains(self) -> &'static [&'static str] {
        match self {
            Table::Raw => &["PREROUTING", "OUTPUT"],
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        }
    }

    /// The user-defined chains netd owns in this table: it flushes and rewrites them.
    /// `DOCKER-USER` is not among them: it belongs to the administrator.
    pub fn own_chains(self) -> &'static [&'static str] {
        match self {
            Table::Raw => &[],
            Table::Filter => &[CH_DOCKER, CH_BRIDGE, CH_CT, CH_FORWARD, CH_INTERNAL],
            Table::Nat => &[CH_DOCKER],
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub const CH_DOCKER: &str = "DOCKER";
pub const CH_BRIDGE: &str = "DOCKER-BRIDGE";
pub const CH_CT: &str = "DOCKER-CT";
pub const CH_FORWARD: &str = "DOCKER-FORWARD";
pub const CH_INTERNAL: &str = "DOCKER-INTERNAL";
/// The administrator's chain, jumped to first from FORWARD; netd creates it if missing and
/// never touches its content.
pub const CH_USER: &str = "DOCKER-USER";

/// One rule: `-A <chain> <spec>` in `table`, in iptables-save's canonical spelling so
/// that what netd writes compares equal to what the kernel reports back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub table: Table,
    pub chain: &'static str,
    /// The arguments after the chain name, separated by single spaces. Kept as one string
    /// because it is compared and written as text; 30,000 rules are rebuilt per change.
    pub spec: String,
}

impl Rule {
    /// Build a rule; runs of whitespace in `spec` become single spaces (interface names
    /// and addresses never contain whitespace).
    pub fn new(table: Table, chain: &'static str, spec: impl AsRef<str>) -> Self {
        let spec = spec.as_ref();
        let spec = if spec.contains("  ") || spec.starts_with(' ') || spec.ends_with(' ') {
            spec.split_whitespace().collect::<Vec<_>>().join(" ")
        } else {
            spec.to_string()
        };
        Rule { table, chain, spec }
    }

    /// The arguments after the chain name, as iptables-save prints them.
    pub fn spec_text(&self) -> &str {
        &self.spec
    }

    /// The arguments one by one.
    pub fn args(&self) -> impl Iterator<Item = &str> {
        self.spec.split(' ')
    }

    /// Whether the rule lives in a built-in chain shared with other software.
    pub fn in_base_chain(&self) -> bool {
        self.table.base_chains().contains(&self.chain)
    }

    /// Whether the rule jumps to one of netd's chains (or DOCKER-USER): such rules go at
    /// the top of their base chain, as Docker inserts them.
    pub fn is_jump(&self) -> bool {
        let mut args = self.args().skip_while(|a| *a != "-j").skip(1);
        args.next()
            .is_some_and(|t| t == CH_USER || self.table.own_chains().contains(&t))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {} {}", self.chain, self.spec_text())
    }
}

/// How a published port range becomes rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PortRangeRules {
    /// One DNAT, ACCEPT and hairpin MASQUERADE rule per port, as Docker does.
    #[default]
    PerPort,
    /// One rule of each kind per range.
    PerRange,
}

/// A publication together with the address it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub publication: Publication,
    pub container_ip: Ipv4Addr,
}

/// Everything the rules depend on.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    /// In creation order (Docker appends each network's rules when it is created).
    pub networks: &'a [Network],
    /// In publication order.
    pub ports: &'a [PublishedPort],
    /// SNAT to this address instead of MASQUERADE (Docker's `host_ipv4` option).
    pub snat_ip: Option<Ipv4Addr>,
    pub port_rules: PortRangeRules,
}

/// One host-port -> container-port mapping that gets its own set of rules.
struct Mapping<'a> {
    net: &'a Network,
    ip: Ipv4Addr,
    proto: Proto,
    host_ip: Option<Ipv4Addr>,
    host: PortRange,
    container: PortRange,
}

impl Mapping<'_> {
    fn proto_match(&self, ports: PortRange) -> String {
        let p = self.proto;
        let dport = if ports.start == ports.end {
            ports.start.to_string()
        } else {
            format!("{}:{}", ports.start, ports.end)
        };
        format!("-p {p} -m {p} --dport {dport}")
    }

    fn dnat_target(&self) -> String {
        let (h, c) = (self.host, self.container);
        if c.start == c.end {
            format!("{}:{}", self.ip, c.start)
        } else if h.start == c.start {
            format!("{}:{}-{}", self.ip, c.start, c.end)
        } else {
            format!("{}:{}-{}/{}", self.ip, c.start, c.end, h.start)
        }
    }
}

/// Split the publications into the mappings that get rules, skipping those on internal
/// networks (Docker publishes nothing there) or on networks that are not known.
fn mappings<'a>(input: &RuleInput<'a>) -> Vec<Mapping<'a>> {
    let mut out = Vec::new();
    for port in input.ports {
        let p = &port.publication;
        let Some(net) = input
            .networks
            .iter()
            .find(|n| n.name == p.network && !n.internal)
        else {
            continue;
        };
        let m = |host, container| Mapping {
            net,
            ip: port.container_ip,
            proto: p.proto,
            host_ip: p.host_ip.filter(|ip| !ip.is_unspecified()),
            host,
            container,
        };
        match input.port_rules {
            PortRangeRules::PerRange => out.push(m(p.host_ports, p.container_ports)),
            PortRangeRules::PerPort => {
                for i in 0..p.host_ports.len() {
                    let host = PortRange::single(p.host_ports.start + i as u16);
                    // A host range on a single container port maps every port onto it.
                    let c = if p.container_ports.len() == 1 {
                        0
                    } else {
                        i as u16
                    };
                    out.push(m(host, PortRange::single(p.container_ports.start + c)));
                }
            }
        }
    }
    out
}

/// The complete rule list for `input`, per table in Docker's order.
pub fn build(input: &RuleInput<'_>) -> Vec<Rule> {
    let maps = mappings(input);
    let mut rules = raw_rules(&maps);
    rules.extend(filter_rules(input.networks, &maps));
    rules.extend(nat_rules(input, &maps));
    rules
}

/// Identifies the rules that depend only on the container side of a mapping. Several
/// host ports onto one container port need its ACCEPT and hairpin rule once (Docker checks
/// that a rule exists before adding it); keeping the rules derived from the whole state
/// means removing one publication never removes a rule another one needs.
type ContainerPort<'a> = (Ipv4Addr, &'a str, Proto, PortRange);

fn container_port<'a>(m: &Mapping<'a>) -> ContainerPort<'a> {
    (m.ip, m.net.bridge.as_str(), m.proto, m.container)
}

fn raw_rules(maps: &[Mapping<'_>]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut seen = HashSet::new();
    for m in maps {
        if seen.insert((m.ip, m.net.bridge.as_str())) {
            let spec = format!("-d {}/32 ! -i {} -j DROP", m.ip, m.net.bridge);
            rules.push(Rule::new(Table::Raw, "PREROUTING", spec));
        }
        if m.host_ip.is_some_and(|ip| ip.is_loopback()) {
            let ip = m.host_ip.unwrap_or(Ipv4Addr::LOCALHOST);
            let spec = format!("-d {ip}/32 ! -i lo {} -j DROP", m.proto_match(m.host));
            rules.push(Rule::new(Table::Raw, "PREROUTING", spec));
        }
    }
    rules
}

fn filter_rules(networks: &[Network], maps: &[Mapping<'_>]) -> Vec<Rule> {
    let f = |chain, spec: String| Rule::new(Table::Filter, chain, spec);
    let mut rules = vec![
        f("FORWARD", format!("-j {CH_USER}")),
        f("FORWARD", format!("-j {CH_FORWARD}")),
    ];
    // Docker inserts each published port's ACCEPT at the head of DOCKER: newest first.
    let mut seen = HashSet::new();
    for m in maps.iter().rev().filter(|m| seen.insert(container_port(m))) {
        let spec = format!(
            "-d {}/32 ! -i {br} -o {br} {} -j ACCEPT",
            m.ip,
            m.proto_match(m.container),
            br = m.net.bridge
        );
        rules.push(f(CH_DOCKER, spec));
    }
    let external: Vec<&Network> = networks.iter().filter(|n| !n.internal).collect();
    for n in &external {
        rules.push(f(
            CH_DOCKER,
            format!("! -i {br} -o {br} -j DROP", br = n.bridge),
        ));
    }
    for n in &external {
        rules.push(f(CH_BRIDGE, format!("-o {} -j {CH_DOCKER}", n.bridge)));
    }
    for n in &external {
        let spec = format!(
            "-o {} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            n.bridge
        );
        rules.push(f(CH_CT, spec));
    }
    for chain in [CH_CT, CH_INTERNAL, CH_BRIDGE] {
        rules.push(f(CH_FORWARD, format!("-j {chain}")));
    }
    for n in networks {
        let br = &n.bridge;
        match (n.internal, n.icc) {
            (false, true) => rules.push(f(CH_FORWARD, format!("-i {br} -j ACCEPT"))),
            (false, false) => {
                rules.push(f(CH_FORWARD, format!("-i {br} -o {br} -j DROP")));
                rules.push(f(CH_FORWARD, format!("-i {br} ! -o {br} -j ACCEPT")));
            }
            (true, true) => rules.push(f(CH_FORWARD, format!("-i {br} -o {br} -j ACCEPT"))),
            (true, false) => rules.push(f(CH_FORWARD, format!("-i {br} -o {br} -j DROP"))),
        }
    }
    for n in networks.iter().filter(|n| n.internal) {
        rules.push(f(
            CH_INTERNAL,
            format!("! -s {} -o {} -j DROP", n.subnet, n.bridge),
        ));
        rules.push(f(
            CH_INTERNAL,
            format!("! -d {} -i {} -j DROP", n.subnet, n.bridge),
        ));
    }
    rules
}

fn nat_rules(input: &RuleInput<'_>, maps: &[Mapping<'_>]) -> Vec<Rule> {
    let n = |chain, spec: String| Rule::new(Table::Nat, chain, spec);
    let mut rules = vec![
        n(
            "PREROUTING",
            format!("-m addrtype --dst-type LOCAL -j {CH_DOCKER}"),
        ),
        // With the userland proxy off, Docker also DNATs host-originated traffic to
        // 127.0.0.0/8 (hairpin through loopback), so OUTPUT has no `! -d 127.0.0.0/8`.
        n(
            "OUTPUT",
            format!("-m addrtype --dst-type LOCAL -j {CH_DOCKER}"),
        ),
    ];
    let masq = match input.snat_ip {
        Some(ip) => format!("SNAT --to-source {ip}"),
        None => "MASQUERADE".to_string(),
    };
    for net in input.networks.iter().filter(|n| !n.internal) {
        let br = &net.bridge;
        rules.push(n(
            "POSTROUTING",
            format!("-o {br} -m addrtype --src-type LOCAL -j {masq}"),
        ));
        if net.masquerade {
            rules.push(n(
                "POSTROUTING",
                format!("-s {} ! -o {br} -j {masq}", net.subnet),
            ));
        }
    }
    let mut seen = HashSet::new();
    for m in maps.iter().filter(|m| seen.insert(container_port(m))) {
        let spec = format!(
            "-s {ip}/32 -d {ip}/32 {} -j MASQUERADE",
            m.proto_match(m.container),
            ip = m.ip
        );
        rules.push(n("POSTROUTING", spec));
    }
    for m in maps {
        let dst = m
            .host_ip
            .map(|ip| format!("-d {ip}/32 "))
            .unwrap_or_default();
        let spec = format!(
            "{dst}{} -j DNAT --to-destination {}",
            m.proto_match(m.host),
            m.dnat_target()
        );
        rules.push(n(CH_DOCKER, spec));
    }
    rules
}

/// The rules in iptables-restore syntax, one `*table ... COMMIT` block per table in
/// Docker's order, without chain declarations: the text the golden tests compare.
pub fn render(rules: &[Rule]) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        out.push_str(&format!("*{table}\n"));
        for r in rules.iter().filter(|r| r.table == table) {
            out.push_str(&format!("{r}\n"));
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
