//! The eBPF dataplane: loads netd-ebpf's programs, attaches them to the uplink (pinned
//! tcx links) and to every endpoint's host-side veth (cls_bpf filters, see [`links`]),
//! and programs the maps they read.
//!
//! Maps and links are pinned under the bpffs directory and filters stay on their veths,
//! so the dataplane keeps working while the daemon is down and the next start picks it
//! up.

mod bpffs;
mod conntrack;
mod filters;
mod links;
mod loader;
mod netdev;
mod publish;
mod sock;
mod stats;
mod sys;
mod tables;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{Ebpf, programs::TcAttachType};
use netd_common::{
    maps as m,
    nat::{DataplaneConfig, UPLINK_F_PEER},
    stats::IfaceCounters,
};
use tracing::info;

use self::{
    conntrack::Gc,
    links::Role,
    loader::{Maps, PROG_UPLINK_EGRESS, PROG_UPLINK_INGRESS, PROG_VETH_EGRESS, PROG_VETH_INGRESS},
    publish::Publications,
};
use super::{
    Dataplane, DataplaneError, DataplaneKind, DataplaneStats, EndpointView, Flow, NetworkView,
    PublicationView, Result, SyncView, UplinkView,
};
use crate::model::PortRange;

/// How the eBPF dataplane is set up.
#[derive(Debug, Clone)]
pub struct EbpfConfig {
    /// Directory on bpffs for pinned maps and links (mounted if needed).
    pub bpffs: PathBuf,
    /// Capacity of the conntrack table.
    pub conntrack_max: u32,
    /// Capacity of the NAT table (two entries per translated flow).
    pub nat_max: u32,
    /// Source ports for masquerade when a flow's own port is taken.
    pub snat_ports: PortRange,
}

/// The eBPF implementation of [`Dataplane`].
pub struct EbpfDataplane {
    cfg: EbpfConfig,
    ebpf: Ebpf,
    maps: Maps,
    uplink: Option<u32>,
    /// Host-side veth ifindexes whose programs this process attached (or replaced).
    veths: BTreeSet<u32>,
    pubs: Publications,
    _gc: Gc,
}

impl std::fmt::Debug for EbpfDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfDataplane")
            .field("bpffs", &self.cfg.bpffs)
            .field("uplink", &self.uplink)
            .field("veths", &self.veths)
            .finish_non_exhaustive()
    }
}

fn map_err(ctx: impl Into<String>, e: aya::maps::MapError) -> DataplaneError {
    DataplaneError::new(ctx, e)
}

impl EbpfDataplane {
    /// Mounts bpffs at `cfg.bpffs` if needed, loads the embedded object reusing pinned
    /// maps whose layout matches (a changed layout is an error that says what to do), and
    /// pins every map under `cfg.bpffs`. Nothing is attached yet.
    pub fn open(cfg: &EbpfConfig) -> Result<Self, DataplaneError> {
        if cfg.snat_ports.start == 0 || cfg.snat_ports.start > cfg.snat_ports.end {
            return Err(DataplaneError::new(
                "configuring masquerade",
                format!(
                    "the SNAT port range {} is empty or starts at 0",
                    cfg.snat_ports
                ),
            ));
        }
        bpffs::ensure(&cfg.bpffs)?;
        let (ebpf, maps) = loader::load(cfg)?;
        let pubs = Publications::load(&maps)?;
        let gc = Gc::start(&cfg.bpffs)?;
        let mut dp = EbpfDataplane {
            cfg: cfg.clone(),
            ebpf,
            maps,
            uplink: None,
            veths: BTreeSet::new(),
            pubs,
            _gc: gc,
        };
        dp.update_config(|c| {
            c.layout_version = m::LAYOUT_VERSION;
            c.snat_port_min = cfg.snat_ports.start;
            c.snat_port_max = cfg.snat_ports.end;
        })?;
        info!(bpffs = %cfg.bpffs.display(), "eBPF dataplane loaded");
        Ok(dp)
    }

    /// Detaches everything and removes every pin under `bpffs` (`netd daemon --cleanup`).
    pub fn cleanup(bpffs: &Path) -> Result<(), DataplaneError> {
        let veths = filters::detach_all(PROG_VETH_INGRESS, PROG_VETH_EGRESS)?;
        info!(interfaces = veths, "detached the veth programs");
        if !bpffs.exists() {
            info!(bpffs = %bpffs.display(), "nothing to clean up");
            return Ok(());
        }
        let removed = bpffs::remove_all_pins(bpffs)?;
        info!(bpffs = %bpffs.display(), pins = removed, "removed the pinned dataplane");
        Ok(())
    }

    fn update_config(&mut self, f: impl FnOnce(&mut DataplaneConfig)) -> Result<()> {
        let mut c = self
            .maps
            .config
            .get(&0, 0)
            .map_err(|e| map_err("reading the dataplane config", e))?;
        f(&mut c);
        self.maps
            .config
            .set(0, c, 0)
            .map_err(|e| map_err("writing the dataplane config", e))
    }

    fn attach_both(&mut self, role: Role, ifindex: u32, ingress: &str, egress: &str) -> Result<()> {
        // Counters first, so the programs never have to create the entry.
        if self.maps.iface_stats.get(&ifindex, 0).is_err() {
            let zero = aya::maps::PerCpuValues::try_from(vec![
                IfaceCounters::default();
                aya::util::nr_cpus().map_err(
                    |(p, e)| DataplaneError::new(format!("reading {p}"), e)
                )?
            ])
            .map_err(|e| DataplaneError::new("allocating counters", e))?;
            self.maps
                .iface_stats
                .insert(ifindex, zero, 0)
                .map_err(|e| map_err(format!("creating the counters of interface {ifindex}"), e))?;
        }
        match role {
            Role::Uplink => {
                for (t, prog) in [
                    (TcAttachType::Ingress, ingress),
                    (TcAttachType::Egress, egress),
                ] {
                    links::attach(&mut self.ebpf, &self.cfg.bpffs, role, ifindex, t, prog)?;
                }
                Ok(())
            }
            Role::Veth => filters::attach(&self.ebpf, ifindex, ingress, egress),
        }
    }

    fn detach_veth(&mut self, ifindex: u32) -> Result<()> {
        filters::detach(ifindex)?;
        tables::gone(self.maps.iface_stats.remove(&ifindex), || {
            format!("removing the counters of interface {ifindex}")
        })?;
        self.veths.remove(&ifindex);
        Ok(())
    }

    /// Map entries first, so the programs never see the veth without its endpoint.
    fn put_endpoint(&mut self, ep: &EndpointView<'_>) -> Result<()> {
        tables::put_endpoint(&mut self.maps, ep)?;
        if !self.veths.contains(&ep.host_ifindex) {
            self.attach_both(
                Role::Veth,
                ep.host_ifindex,
                PROG_VETH_INGRESS,
                PROG_VETH_EGRESS,
            )?;
            self.veths.insert(ep.host_ifindex);
        }
        Ok(())
    }
}

/// Forgets the host-originated flows that involve any of `ips` (all when `None`): a
/// container restarted with the same address then hairpins at once, instead of having
/// its datagrams to a published port taken for replies until the old entry expires.
fn flush_host_flows(maps: &mut Maps, ips: Option<&[Ipv4Addr]>) {
    let ips: Option<Vec<u32>> = ips.map(|v| v.iter().map(|a| tables::be(*a)).collect());
    let Ok(all) = conntrack::entries(&maps.host_flows) else {
        return;
    };
    let stale: Vec<_> = all
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            ips.as_ref()
                .is_none_or(|ips| ips.contains(&k.saddr_be) || ips.contains(&k.daddr_be))
        })
        .collect();
    for k in stale {
        let _ = maps.host_flows.remove(&k);
    }
}

impl Dataplane for EbpfDataplane {
    fn kind(&self) -> DataplaneKind {
        DataplaneKind::Ebpf
    }

    fn set_uplink(&mut self, uplink: &UplinkView) -> Result<()> {
        for old in links::pinned_ifindexes(&self.cfg.bpffs, Role::Uplink)? {
            if old != uplink.ifindex {
                links::detach(&self.cfg.bpffs, Role::Uplink, old)?;
                tables::gone(self.maps.iface_stats.remove(&old), || {
                    format!("removing the counters of interface {old}")
                })?;
            }
        }
        let snat = uplink
            .snat_ip
            .or_else(|| uplink.addrs.first().copied())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut local = uplink.addrs.clone();
        if !snat.is_unspecified() && !local.contains(&snat) {
            local.push(snat);
        }
        tables::set_uplink_addrs(&mut self.maps, &local)?;
        self.update_config(|c| {
            c.uplink_ifindex = uplink.ifindex;
            c.snat_ip_be = tables::be(snat);
            c.uplink_flags = if uplink.peer_ingress {
                UPLINK_F_PEER
            } else {
                0
            };
        })?;
        // Attached once per process: a repeated call only updates the addresses.
        if self.uplink != Some(uplink.ifindex) {
            self.attach_both(
                Role::Uplink,
                uplink.ifindex,
                PROG_UPLINK_INGRESS,
                PROG_UPLINK_EGRESS,
            )?;
        }
        self.uplink = Some(uplink.ifindex);
        info!(
            uplink = %uplink.ifname,
            ifindex = uplink.ifindex,
            snat_ip = %snat,
            peer_ingress = uplink.peer_ingress,
            "uplink attached"
        );
        Ok(())
    }

    fn add_network(&mut self, net: &NetworkView<'_>) -> Result<()> {
        tables::put_network(&mut self.maps, net)
    }

    fn remove_network(&mut self, net: &NetworkView<'_>) -> Result<()> {
        tables::del_network(&mut self.maps, net.network)
    }

    fn add_endpoint(&mut self, ep: &EndpointView<'_>) -> Result<()> {
        self.put_endpoint(ep)
    }

    fn remove_endpoint(&mut self, ep: &EndpointView<'_>) -> Result<()> {
        self.detach_veth(ep.host_ifindex)?;
        tables::del_endpoint(&mut self.maps, ep.host_ifindex, ep.attachment.ip)
    }

    fn publish(&mut self, p: &PublicationView<'_>) -> Result<()> {
        self.pubs.publish(&mut self.maps, p)
    }

    fn unpublish(&mut self, p: &PublicationView<'_>) -> Result<()> {
        self.pubs.unpublish(&mut self.maps, p)
    }

    fn sync(&mut self, all: &SyncView<'_>) -> Result<()> {
        let want: BTreeSet<u32> = all.endpoints.iter().map(|e| e.host_ifindex).collect();
        let stale: Vec<u32> = self
            .maps
            .endpoints
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !want.contains(k))
            .collect();
        for ifindex in stale {
            self.detach_veth(ifindex)?;
        }
        tables::prune(&mut self.maps, &all.networks, &all.endpoints)?;
        // An earlier netd hung veth programs on tcx links, which run before filters and
        // would hide them: they go once the filters are in place.
        let tcx_veths = links::pinned_ifindexes(&self.cfg.bpffs, Role::Veth)?;
        for net in &all.networks {
            tables::put_network(&mut self.maps, net)?;
        }
        for ep in &all.endpoints {
            self.put_endpoint(ep)?;
        }
        for ifindex in tcx_veths {
            links::detach(&self.cfg.bpffs, Role::Veth, ifindex)?;
        }
        self.pubs.sync(&mut self.maps, &all.publications)
    }

    fn stats(&self) -> Result<DataplaneStats> {
        Ok(DataplaneStats {
            dataplane: "ebpf".into(),
            interfaces: stats::interfaces(&self.maps)?,
            drops: stats::drops(&self.maps)?,
            ports: self.pubs.counters(&self.maps)?,
            tables: stats::tables(&self.maps, self.cfg.conntrack_max, self.cfg.nat_max),
        })
    }

    fn conntrack(&self) -> Result<Vec<Flow>> {
        conntrack::list(&self.maps.conntrack)
    }

    fn flush_conntrack(&mut self, ips: Option<&[Ipv4Addr]>) -> Result<u64> {
        let Maps { conntrack, nat, .. } = &mut self.maps;
        let flows = conntrack::flush(conntrack, nat, ips)?;
        flush_host_flows(&mut self.maps, ips);
        Ok(flows)
    }
}
