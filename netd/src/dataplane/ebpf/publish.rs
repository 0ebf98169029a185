//! Published ports in the maps: single ports as hash entries, each range as one entry of
//! the small sorted range table, and an id per publication for its counters.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::PerCpuValues;
use netd_common::{
    maps::{MAX_PORT_RANGES, MAX_PUBLICATIONS},
    ports::{PortKey, PortRangeEntry, PortTarget},
    stats::PortStats,
};

use super::{
    loader::Maps,
    tables::{be, gone},
};
use crate::dataplane::{DataplaneError, PortCounters, PublicationView, Result};

/// Publication ids in use and what `netd stats` calls them.
#[derive(Debug, Default)]
pub struct Publications {
    labels: BTreeMap<u32, String>,
    used: BTreeSet<u32>,
}

fn port_key(v: &PublicationView<'_>) -> PortKey {
    let p = v.publication;
    PortKey {
        host_ip_be: p.host_ip.map(be).unwrap_or(0),
        port_be: p.host_ports.start.to_be(),
        proto: p.proto.number(),
        _pad: 0,
    }
}

fn target(v: &PublicationView<'_>, pub_id: u32) -> PortTarget {
    PortTarget {
        container_ip_be: be(v.container_ip),
        container_port_be: v.publication.container_ports.start.to_be(),
        _pad: 0,
        network_id: v.network.id,
        pub_id,
    }
}

fn range(v: &PublicationView<'_>, pub_id: u32) -> PortRangeEntry {
    let p = v.publication;
    PortRangeEntry {
        host_ip_be: p.host_ip.map(be).unwrap_or(0),
        host_start: p.host_ports.start,
        host_end: p.host_ports.end,
        container_ip_be: be(v.container_ip),
        container_start: p.container_ports.start,
        proto: p.proto.number(),
        active: 1,
        network_id: v.network.id,
        pub_id,
    }
}

fn is_range(v: &PublicationView<'_>) -> bool {
    v.publication.host_ports.start != v.publication.host_ports.end
}

/// Two range entries publish the same host ports.
fn same_range(a: &PortRangeEntry, b: &PortRangeEntry) -> bool {
    (a.proto, a.host_ip_be, a.host_start, a.host_end)
        == (b.proto, b.host_ip_be, b.host_start, b.host_end)
}

fn read_ranges(maps: &Maps) -> Result<Vec<PortRangeEntry>> {
    let mut out = Vec::new();
    for i in 0..MAX_PORT_RANGES {
        let e = maps
            .port_ranges
            .get(&i, 0)
            .map_err(|e| DataplaneError::new("reading the port range table", e))?;
        if e.active == 0 {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

/// Writes the range table sorted by (protocol, first port), the order the datapath's scan
/// relies on, and clears the slots after it.
fn write_ranges(maps: &mut Maps, mut ranges: Vec<PortRangeEntry>, old_len: usize) -> Result<()> {
    if ranges.len() > MAX_PORT_RANGES as usize {
        let mut e = DataplaneError::new(
            "publishing a port range",
            format!("netd holds at most {MAX_PORT_RANGES} port ranges; unpublish one first"),
        );
        e.full = true;
        return Err(e);
    }
    ranges.sort_by_key(|r| (r.proto, r.host_start, r.host_ip_be));
    let slots = ranges.len().max(old_len);
    for i in 0..slots {
        let e = ranges.get(i).copied().unwrap_or_default();
        maps.port_ranges
            .set(i as u32, e, 0)
            .map_err(|e| DataplaneError::new("writing the port range table", e))?;
    }
    Ok(())
}

impl Publications {
    /// The ids already in the (pinned) maps, so a restart keeps them and their counters.
    pub fn load(maps: &Maps) -> Result<Self> {
        let mut used: BTreeSet<u32> = maps
            .ports
            .iter()
            .filter_map(Result::ok)
            .map(|(_, t)| t.pub_id)
            .collect();
        used.extend(read_ranges(maps)?.iter().map(|r| r.pub_id));
        Ok(Publications {
            labels: BTreeMap::new(),
            used,
        })
    }

    fn alloc(&mut self, maps: &mut Maps) -> Result<u32> {
        // Usually the one after the highest; a search only once ids wrap around.
        let next = self.used.last().map_or(1, |l| l + 1);
        let id = (next..MAX_PUBLICATIONS)
            .chain(1..next)
            .find(|i| !self.used.contains(i))
            .ok_or_else(|| {
                let mut e = DataplaneError::new(
                    "publishing a port",
                    format!("netd holds at most {} publications", MAX_PUBLICATIONS - 1),
                );
                e.full = true;
                e
            })?;
        let ncpus = aya::util::nr_cpus()
            .map_err(|(p, e)| DataplaneError::new(format!("reading {p}"), e))?;
        let zero = PerCpuValues::try_from(vec![PortStats::default(); ncpus])
            .map_err(|e| DataplaneError::new("allocating publication counters", e))?;
        maps.port_stats
            .set(id, zero, 0)
            .map_err(|e| DataplaneError::new("resetting publication counters", e))?;
        self.used.insert(id);
        Ok(id)
    }

    fn free(&mut self, id: u32) {
        self.used.remove(&id);
        self.labels.remove(&id);
    }

    /// Programs one publication; a publication that is already there unchanged keeps its
    /// id and counters.
    pub fn publish(&mut self, maps: &mut Maps, v: &PublicationView<'_>) -> Result<()> {
        let label = v.publication.to_string();
        if is_range(v) {
            let mut ranges = read_ranges(maps)?;
            let old_len = ranges.len();
            let want = range(v, 0);
            if let Some(i) = ranges.iter().position(|r| same_range(r, &want)) {
                if (PortRangeEntry {
                    pub_id: 0,
                    ..ranges[i]
                }) == want
                {
                    self.labels.insert(ranges[i].pub_id, label);
                    return Ok(());
                }
                let old = ranges.remove(i);
                self.free(old.pub_id);
            }
            let id = self.alloc(maps)?;
            ranges.push(range(v, id));
            if let Err(e) = write_ranges(maps, ranges, old_len) {
                self.free(id);
                return Err(e);
            }
            self.labels.insert(id, label);
            return Ok(());
        }
        let key = port_key(v);
        if let Ok(cur) = maps.ports.get(&key, 0) {
            if cur == target(v, cur.pub_id) {
                self.used.insert(cur.pub_id);
                self.labels.insert(cur.pub_id, label);
                return Ok(());
            }
            self.free(cur.pub_id);
        }
        let id = self.alloc(maps)?;
        if let Err(e) = maps.ports.insert(key, target(v, id), 0) {
            self.free(id);
            let mut e = DataplaneError::new(format!("publishing {label}"), e);
            e.full = e.detail.contains("No space") || e.detail.contains("E2BIG");
            return Err(e);
        }
        self.labels.insert(id, label);
        Ok(())
    }

    /// Removes one publication. Flows already translated through it run to their end.
    pub fn unpublish(&mut self, maps: &mut Maps, v: &PublicationView<'_>) -> Result<()> {
        if is_range(v) {
            let mut ranges = read_ranges(maps)?;
            let old_len = ranges.len();
            let want = range(v, 0);
            if let Some(i) = ranges.iter().position(|r| same_range(r, &want)) {
                let old = ranges.remove(i);
                write_ranges(maps, ranges, old_len)?;
                self.free(old.pub_id);
            }
            return Ok(());
        }
        let key = port_key(v);
        if let Ok(cur) = maps.ports.get(&key, 0) {
            gone(maps.ports.remove(&key), || {
                format!("unpublishing {}", v.publication)
            })?;
            self.free(cur.pub_id);
        }
        Ok(())
    }

    /// Makes the publications exactly `views`, leaving unchanged ones (and their ids and
    /// counters) alone.
    pub fn sync(&mut self, maps: &mut Maps, views: &[PublicationView<'_>]) -> Result<()> {
        let singles: BTreeMap<PortKey, &PublicationView<'_>> = views
            .iter()
            .filter(|v| !is_range(v))
            .map(|v| (port_key(v), v))
            .collect();
        let stale: Vec<(PortKey, u32)> = maps
            .ports
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, t)| singles.get(k).is_none_or(|v| target(v, t.pub_id) != *t))
            .map(|(k, t)| (k, t.pub_id))
            .collect();
        for (k, id) in stale {
            gone(maps.ports.remove(&k), || {
                "removing a stale publication".to_string()
            })?;
            self.free(id);
        }
        let wanted: Vec<PortRangeEntry> = views
            .iter()
            .filter(|v| is_range(v))
            .map(|v| range(v, 0))
            .collect();
        let ranges = read_ranges(maps)?;
        let old_len = ranges.len();
        let (keep, drop): (Vec<_>, Vec<_>) = ranges
            .into_iter()
            .partition(|r| wanted.contains(&PortRangeEntry { pub_id: 0, ..*r }));
        for r in &drop {
            self.free(r.pub_id);
        }
        write_ranges(maps, keep, old_len)?;
        for v in views {
            self.publish(maps, v)?;
        }
        Ok(())
    }

    /// Packets and bytes per publication.
    pub fn counters(&self, maps: &Maps) -> Result<Vec<PortCounters>> {
        let mut out = Vec::new();
        for (id, label) in &self.labels {
            let per_cpu = maps
                .port_stats
                .get(id, 0)
                .map_err(|e| DataplaneError::new(format!("reading the counters of {label}"), e))?;
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), s| (p + s.packets, b + s.bytes));
            out.push(PortCounters {
                publication: label.clone(),
                packets,
                bytes,
            });
        }
        Ok(out)
    }
}
