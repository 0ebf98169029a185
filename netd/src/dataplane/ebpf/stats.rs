//! Reading the counters and table sizes for `netd stats`.

use aya::maps::{HashMap, MapData, MapError};
use netd_common::stats::{DropReason, IfaceCounters};

use super::loader::Maps;
use crate::dataplane::{DataplaneError, DropCounter, InterfaceCounters, TableOccupancy};

fn read_err(map: &str, e: MapError) -> DataplaneError {
    DataplaneError::new(format!("reading map {map}"), e)
}

/// Per-interface counters, summed over CPUs; names are left for the daemon.
pub fn interfaces(maps: &Maps) -> Result<Vec<InterfaceCounters>, DataplaneError> {
    let mut out = Vec::new();
    for item in maps.iface_stats.iter() {
        let (ifindex, per_cpu) = item.map_err(|e| read_err("interface counters", e))?;
        let mut sum = IfaceCounters::default();
        for c in per_cpu.iter() {
            sum.rx_packets += c.rx_packets;
            sum.rx_bytes += c.rx_bytes;
            sum.tx_packets += c.tx_packets;
            sum.tx_bytes += c.tx_bytes;
        }
        out.push(InterfaceCounters {
            ifindex,
            ifname: String::new(),
            rx_packets: sum.rx_packets,
            rx_bytes: sum.rx_bytes,
            tx_packets: sum.tx_packets,
            tx_bytes: sum.tx_bytes,
        });
    }
    out.sort_by_key(|c| c.ifindex);
    Ok(out)
}

/// Drops by reason, every reason listed (zeros included) so scripts see a stable set.
pub fn drops(maps: &Maps) -> Result<Vec<DropCounter>, DataplaneError> {
    DropReason::ALL
        .iter()
        .map(|r| {
            let per_cpu = maps
                .drops
                .get(&(*r as u32), 0)
                .map_err(|e| read_err("drop counters", e))?;
            Ok(DropCounter {
                reason: r.name().to_string(),
                packets: per_cpu.iter().sum(),
            })
        })
        .collect()
}

/// The number of entries of a hash map (walks the keys; fine for the sizes netd uses,
/// and `netd stats` is not a hot path).
pub fn count<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> u64 {
    map.keys().filter(Result::is_ok).count() as u64
}

/// How full each state table is.
pub fn tables(maps: &Maps, conntrack_max: u32, nat_max: u32) -> Vec<TableOccupancy> {
    let t = |name: &str, entries: u64, capacity: u32| TableOccupancy {
        name: name.to_string(),
        entries,
        capacity: u64::from(capacity),
    };
    vec![
        t("conntrack", count(&maps.conntrack), conntrack_max),
        t("nat", count(&maps.nat), nat_max),
        t(
            "endpoints",
            count(&maps.endpoints),
            netd_common::maps::MAX_ENDPOINTS,
        ),
        t("ports", count(&maps.ports), netd_common::maps::MAX_PORTS),
    ]
}
