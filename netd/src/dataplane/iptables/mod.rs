//! The iptables dataplane: the rules Docker 29 writes (userland proxy off), programmed
//! with iptables-restore in the daemon's network namespace. It is the baseline the eBPF
//! dataplane is measured against, so it follows Docker rather than improving on it.
//!
//! The desired views are kept here; every change rebuilds the rule list from them
//! ([`rules::build`]), plans the smallest edit from what the kernel holds ([`plan`]) and
//! applies it with one `iptables-restore --noflush` run. Besides rules, Docker sets
//! `route_localnet=1` on each bridge, `hairpin_mode` on each bridge port and
//! `bridge-nf-call-iptables=1`; so does this dataplane.
//!
//! What Docker's iptables path cannot do is not faked here: there are no per-port
//! counters (a DNAT rule counts new connections, not traffic, and Docker adds no counting
//! rules), no anti-spoofing and no socket-level host-local access.

pub mod conntrack;
pub mod kernel;
pub mod plan;
pub mod rules;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod traffic_tests;

use std::{collections::BTreeMap, net::Ipv4Addr};

use tracing::{debug, info, warn};

use self::{
    plan::{Ruleset, mirror_chain},
    rules::{PortRangeRules, PublishedPort, Rule, RuleInput, Table},
};
use super::{
    Dataplane, DataplaneError, DataplaneKind, DataplaneStats, DropCounter, EndpointView, Flow,
    NetworkView, PublicationView, Result, SyncView, TableOccupancy, UplinkView,
};
use crate::model::{Attachment, Network};

/// Options of the iptables dataplane.
#[derive(Debug, Clone, Copy, Default)]
pub struct IptablesConfig {
    /// Docker's one-rule-per-port expansion of ranges, or one rule per range.
    pub port_rules: PortRangeRules,
}

/// Programs Docker's iptables rules; see the module documentation.
#[derive(Debug)]
pub struct IptablesDataplane {
    config: IptablesConfig,
    uplink: Option<UplinkView>,
    /// By name: the network and its bridge's ifindex.
    networks: BTreeMap<String, (Network, u32)>,
    /// By (endpoint, network): the attachment and its host-side ifindex.
    endpoints: BTreeMap<(String, String), (Attachment, u32)>,
    /// In publication order.
    ports: Vec<PublishedPort>,
    /// The kernel's rules after the last successful restore; `None` means "read them".
    kernel: Option<Ruleset>,
    /// Commands in the last restore script, for tests and logs.
    last_commands: usize,
}

impl IptablesDataplane {
    /// A dataplane that has programmed nothing yet; `set_uplink` installs the base rules.
    pub fn new(config: IptablesConfig) -> Self {
        IptablesDataplane {
            config,
            uplink: None,
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            ports: Vec::new(),
            kernel: None,
            last_commands: 0,
        }
    }

    /// The full rule list for the current desired state.
    pub fn rules(&self) -> Vec<Rule> {
        let mut networks: Vec<Network> = self.networks.values().map(|(n, _)| n.clone()).collect();
        // Docker appends each network's rules when it is created: creation order.
        networks.sort_by_key(|n| n.id);
        rules::build(&RuleInput {
            networks: &networks,
            ports: &self.ports,
            snat_ip: self.uplink.as_ref().and_then(|u| u.snat_ip),
            port_rules: self.config.port_rules,
        })
    }

    /// Bring the kernel's rules to [`Self::rules`]. The first attempt plans from the cached
    /// ruleset; if the kernel disagrees (someone edited the rules), it re-reads and retries.
    fn apply(&mut self) -> Result<()> {
        let rules = self.rules();
        for attempt in 0..2 {
            let cached = self.kernel.is_some();
            let mut current = match self.kernel.take() {
                Some(k) => k,
                None => Ruleset::parse(&kernel::iptables_save(false)?)
                    .map_err(|e| DataplaneError::new("parsing iptables-save output", e))?,
            };
            let plan = plan::plan(&current, &rules);
            self.last_commands = plan.len();
            if plan.is_empty() {
                self.kernel = Some(current);
                return Ok(());
            }
            match kernel::iptables_restore(&plan.script()) {
                Ok(()) => {
                    for (table, ops) in &plan.tables {
                        current.apply(*table, ops);
                    }
                    self.kernel = Some(current);
                    debug!(
                        commands = plan.len(),
                        rules = rules.len(),
                        "iptables rules updated"
                    );
                    return Ok(());
                }
                Err(e) if cached && attempt == 0 => {
                    warn!(error = %e, "the kernel's iptables rules differ from netd's record; re-reading them");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the second attempt always returns")
    }

    /// Run `change` on the desired views and apply; if applying fails, undo the change so
    /// the views keep describing what the kernel holds.
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> T,
        undo: impl FnOnce(&mut Self, T),
    ) -> Result<()> {
        let token = change(self);
        match self.apply() {
            Ok(()) => Ok(()),
            Err(e) => {
                undo(self, token);
                Err(e)
            }
        }
    }

    /// Remove every rule and chain netd added (and its mirror chains) from the calling
    /// thread's namespace. DOCKER-USER and everybody else's rules stay.
    pub fn cleanup() -> Result<()> {
        let current = Ruleset::parse(&kernel::iptables_save(false)?)
            .map_err(|e| DataplaneError::new("parsing iptables-save output", e))?;
        let script = cleanup_script(&current);
        if !script.is_empty() {
            kernel::iptables_restore(&script)?;
        }
        info!("iptables rules of netd removed");
        Ok(())
    }
}

/// The script that removes netd's rules and chains from `current`.
fn cleanup_script(current: &Ruleset) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        let mut lines = Vec::new();
        let mut chains: Vec<String> = Vec::new();
        for base in table.base_chains() {
            let mirror = mirror_chain(base);
            let Some(ours) = current.chain(table, &mirror) else {
                continue;
            };
            let mut have = current.chain(table, base).unwrap_or_default().to_vec();
            for spec in ours {
                if let Some(i) = have.iter().position(|h| h == spec) {
                    have.remove(i);
                    lines.push(format!("-D {base} {spec}"));
                }
            }
            chains.push(mirror);
        }
        chains.extend(
            table
                .own_chains()
                .iter()
                .filter(|c| current.chain(table, c).is_some())
                .map(|c| c.to_string()),
        );
        lines.extend(chains.iter().map(|c| format!("-F {c}")));
        lines.extend(chains.iter().map(|c| format!("-X {c}")));
        if !lines.is_empty() {
            out.push_str(&format!("*{table}\n{}\nCOMMIT\n", lines.join("\n")));
        }
    }
    out
}

/// What a DROP rule of netd's is for, by table and chain.
fn drop_reason(table: &str, chain: &str, spec: &str) -> Option<&'static str> {
    if !spec.ends_with("-j DROP") {
        return None;
    }
    match (table, chain) {
        ("raw", "PREROUTING") if spec.contains("! -i lo ") => Some("localhost_port_from_outside"),
        ("raw", "PREROUTING") => Some("direct_access_to_container"),
        ("filter", rules::CH_DOCKER) => Some("not_published"),
        ("filter", rules::CH_FORWARD) => Some("icc_disabled"),
        ("filter", rules::CH_INTERNAL) => Some("internal_network"),
        _ => None,
    }
}

/// Sum the packet counters of netd's DROP rules by reason, from `iptables-save -c`.
fn drop_counters(save: &str) -> Vec<DropCounter> {
    let mut sums: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut table = "";
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
            continue;
        }
        // "[packets:bytes] -A CHAIN spec"
        let Some((counts, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] -A "))
        else {
            continue;
        };
        let Some((chain, spec)) = rule.split_once(' ') else {
            continue;
        };
        let packets = counts
            .split(':')
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0);
        if let Some(reason) = drop_reason(table, chain, spec) {
            *sums.entry(reason).or_default() += packets;
        }
    }
    sums.into_iter()
        .map(|(reason, packets)| DropCounter {
            reason: reason.into(),
            packets,
        })
        .collect()
}

impl Dataplane for IptablesDataplane {
    fn kind(&self) -> DataplaneKind {
        DataplaneKind::Iptables
    }

    fn set_uplink(&mut self, uplink: &UplinkView) -> Result<()> {
        kernel::enable_bridge_netfilter()?;
        let previous = self.uplink.replace(uplink.clone());
        if self.kernel.is_none() {
            // Nothing programmed yet. Applying now, before `sync` has told us the networks,
            // would strip a restarted daemon's rules and put them back a moment later.
            return Ok(());
        }
        self.change(|_| previous, |dp, previous| dp.uplink = previous)
    }

    fn add_network(&mut self, net: &NetworkView<'_>) -> Result<()> {
        kernel::set_route_localnet(&net.network.bridge)?;
        let name = net.network.name.clone();
        let entry = (net.network.clone(), net.bridge_ifindex);
        self.change(
            |dp| dp.networks.insert(name.clone(), entry),
            |dp, old| match old {
                Some(old) => drop(dp.networks.insert(name.clone(), old)),
                None => drop(dp.networks.remove(&name)),
            },
        )
    }

    fn remove_network(&mut self, net: &NetworkView<'_>) -> Result<()> {
        let name = net.network.name.clone();
        self.change(
            |dp| dp.networks.remove(&name),
            |dp, old| {
                if let Some(old) = old {
                    dp.networks.insert(name.clone(), old);
                }
            },
        )
    }

    fn add_endpoint(&mut self, ep: &EndpointView<'_>) -> Result<()> {
        kernel::set_hairpin(ep.host_ifindex, true)?;
        let key = (ep.endpoint.to_string(), ep.network.name.clone());
        self.endpoints
            .insert(key, (ep.attachment.clone(), ep.host_ifindex));
        Ok(())
    }

    fn remove_endpoint(&mut self, ep: &EndpointView<'_>) -> Result<()> {
        // The veth goes away with the endpoint; no rule depends on endpoints alone.
        self.endpoints
            .remove(&(ep.endpoint.to_string(), ep.network.name.clone()));
        Ok(())
    }

    fn publish(&mut self, p: &PublicationView<'_>) -> Result<()> {
        let port = PublishedPort {
            publication: p.publication.clone(),
            container_ip: p.container_ip,
        };
        if self.ports.contains(&port) {
            return self.apply();
        }
        self.change(|dp| dp.ports.push(port), |dp, ()| drop(dp.ports.pop()))
    }

    fn unpublish(&mut self, p: &PublicationView<'_>) -> Result<()> {
        let Some(i) = self
            .ports
            .iter()
            .position(|x| x.publication == *p.publication)
        else {
            return Ok(());
        };
        self.change(|dp| dp.ports.remove(i), |dp, port| dp.ports.insert(i, port))
    }

    fn sync(&mut self, all: &SyncView<'_>) -> Result<()> {
        kernel::enable_bridge_netfilter()?;
        for n in &all.networks {
            kernel::set_route_localnet(&n.network.bridge)?;
        }
        for ep in &all.endpoints {
            kernel::set_hairpin(ep.host_ifindex, true)?;
        }
        self.networks = all
            .networks
            .iter()
            .map(|n| {
                (
                    n.network.name.clone(),
                    (n.network.clone(), n.bridge_ifindex),
                )
            })
            .collect();
        self.endpoints = all
            .endpoints
            .iter()
            .map(|e| {
                (
                    (e.endpoint.to_string(), e.network.name.clone()),
                    (e.attachment.clone(), e.host_ifindex),
                )
            })
            .collect();
        self.ports = all
            .publications
            .iter()
            .map(|p| PublishedPort {
                publication: p.publication.clone(),
                container_ip: p.container_ip,
            })
            .collect();
        // After a restart the kernel is the truth: read it, then change only what differs.
        self.kernel = None;
        self.apply()
    }

    fn stats(&self) -> Result<DataplaneStats> {
        let mut wanted: Vec<(u32, String)> = self
            .networks
            .values()
            .map(|(n, idx)| (*idx, n.bridge.clone()))
            .collect();
        wanted.extend(
            self.endpoints
                .values()
                .map(|(a, idx)| (*idx, a.host_ifname.clone())),
        );
        if let Some(u) = &self.uplink {
            wanted.push((u.ifindex, u.ifname.clone()));
        }
        let read_num = |key: &str| -> u64 {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{key}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(DataplaneStats {
            dataplane: "iptables".into(),
            interfaces: kernel::interface_counters(&wanted)?,
            drops: drop_counters(&kernel::iptables_save(true)?),
            // Docker's iptables path has no per-port traffic counters; see the module docs.
            ports: Vec::new(),
            tables: vec![TableOccupancy {
                name: "conntrack".into(),
                entries: read_num("nf_conntrack_count"),
                capacity: read_num("nf_conntrack_max"),
            }],
        })
    }

    fn conntrack(&self) -> Result<Vec<Flow>> {
        conntrack::flows()
    }

    fn flush_conntrack(&mut self, ips: Option<&[Ipv4Addr]>) -> Result<u64> {
        conntrack::flush(ips)
    }
}
