//! Conntrack from userspace: listing, flushing, and the garbage collector that enforces
//! the timeouts (the datapath only records activity; LRU eviction alone would keep idle
//! flows until the table is full).

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use std::os::fd::AsFd as _;

use aya::maps::{HashMap, IterableMap as _, Map, MapData};
use netd_common::{
    conntrack::{
        CtEntry, FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, SECOND_NS, state_name, timeout_ns,
    },
    maps as m,
    nat::{NAT_DIR_ORIGINAL, NatEntry},
};
use tracing::{debug, warn};

use super::{bpffs, sys, tables::ip};
use crate::dataplane::{DataplaneError, Flow, Result};

type CtMap = HashMap<MapData, FlowKey, CtEntry>;
type NatMap = HashMap<MapData, FlowKey, NatEntry>;

/// How often the collector runs.
const GC_INTERVAL: Duration = Duration::from_secs(10);
/// A NAT entry without its conntrack entry is only an orphan after this long (the
/// datapath inserts the NAT pair just before the conntrack entry).
const ORPHAN_GRACE_NS: u64 = 30 * SECOND_NS;

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * SECOND_NS + t.tv_nsec as u64
}

fn proto_name(p: u8) -> String {
    match p {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        n => n.to_string(),
    }
}

/// `src:port -> dst:port`, or for ICMP echo `src -> dst id N`.
pub fn tuple(k: &FlowKey) -> String {
    let (s, d) = (ip(k.saddr_be), ip(k.daddr_be));
    if k.proto == IPPROTO_ICMP {
        let id = u16::from_be(if k.sport_be != 0 {
            k.sport_be
        } else {
            k.dport_be
        });
        return format!("{s} -> {d} id {id}");
    }
    format!(
        "{s}:{} -> {d}:{}",
        u16::from_be(k.sport_be),
        u16::from_be(k.dport_be)
    )
}

/// Every tracked flow, oldest first.
pub fn list(ct: &CtMap) -> Result<Vec<Flow>> {
    let now = monotonic_ns();
    let mut flows = Vec::new();
    for (k, e) in entries(ct)? {
        let expires = e.last_seen_ns.saturating_add(timeout_ns(k.proto, e.state));
        flows.push((
            e.created_ns,
            Flow {
                proto: proto_name(k.proto),
                original: tuple(&k),
                translated: tuple(&e.translated),
                state: state_name(k.proto, e.state).to_string(),
                age_secs: now.saturating_sub(e.created_ns) / SECOND_NS,
                expires_in_secs: expires.saturating_sub(now) / SECOND_NS,
            },
        ));
    }
    flows.sort_by_key(|(created, _)| *created);
    Ok(flows.into_iter().map(|(_, f)| f).collect())
}

/// Removes flow `k` and the NAT pair that translates it (only entries that still belong
/// to it: a key may have been reused).
fn remove_flow(ct: &mut CtMap, nat: &mut NatMap, k: &FlowKey, e: &CtEntry) {
    let _ = ct.remove(k);
    if nat.get(k, 0).is_ok_and(|n| n.rewrite == e.translated) {
        let _ = nat.remove(k);
    }
    let rev = e.translated.reversed();
    if nat.get(&rev, 0).is_ok_and(|n| n.rewrite == k.reversed()) {
        let _ = nat.remove(&rev);
    }
}

fn involves(k: &FlowKey, ips: &[u32]) -> bool {
    ips.contains(&k.saddr_be) || ips.contains(&k.daddr_be)
}

/// Every entry of `map`, read in batches (see [`sys::hash_entries`]); key by key when
/// the kernel refuses batches.
pub fn entries<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> Result<Vec<(K, V)>> {
    match sys::hash_entries(map.map().fd().as_fd()) {
        Ok(all) => Ok(all),
        Err(e) => {
            debug!(error = %e, "batched map lookup refused; reading key by key");
            map.iter()
                .collect::<Result<_, _>>()
                .map_err(|e| DataplaneError::new("reading a flow table", e))
        }
    }
}

/// Removes the flows that involve any of `ips` (all when `None`) on either side of the
/// translation; returns how many flows went.
pub fn flush(ct: &mut CtMap, nat: &mut NatMap, ips: Option<&[Ipv4Addr]>) -> Result<u64> {
    let ips: Option<Vec<u32>> =
        ips.map(|v| v.iter().map(|a| u32::from_ne_bytes(a.octets())).collect());
    let hit = |k: &FlowKey| ips.as_ref().is_none_or(|ips| involves(k, ips));
    let flows: Vec<(FlowKey, CtEntry)> = entries(ct)?
        .into_iter()
        .filter(|(k, e)| hit(k) || hit(&e.translated))
        .collect();
    for (k, e) in &flows {
        remove_flow(ct, nat, k, e);
    }
    // Translations whose conntrack entry was already gone.
    let orphans: Vec<FlowKey> = entries(nat)?
        .into_iter()
        .filter(|(k, n)| hit(k) || hit(&n.rewrite))
        .map(|(k, _)| k)
        .collect();
    for k in orphans {
        let _ = nat.remove(&k);
    }
    Ok(flows.len() as u64)
}

/// One collection: expired flows, then orphaned translations. Returns (flows, orphans).
///
/// Both tables are read in batches: walking them key by key cost three syscalls per
/// entry, seconds of CPU every interval with full tables, taken from the traffic on a
/// small host.
pub fn collect(ct: &mut CtMap, nat: &mut NatMap, now: u64) -> (usize, usize) {
    let flows = match entries(ct) {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "conntrack gc: cannot read the conntrack table");
            return (0, 0);
        }
    };
    let (expired, live): (Vec<_>, Vec<_>) = flows
        .into_iter()
        .partition(|(k, e)| now > e.last_seen_ns.saturating_add(timeout_ns(k.proto, e.state)));
    for (k, e) in &expired {
        remove_flow(ct, nat, k, e);
    }
    let live: HashSet<FlowKey> = live.into_iter().map(|(k, _)| k).collect();
    let translations = match entries(nat) {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "conntrack gc: cannot read the NAT table");
            return (expired.len(), 0);
        }
    };
    // A flow created after the conntrack read has translations younger than the grace.
    let orphans: Vec<FlowKey> = translations
        .into_iter()
        .filter(|(k, n)| {
            let orig = if n.dir == NAT_DIR_ORIGINAL {
                *k
            } else {
                n.rewrite.reversed()
            };
            now.saturating_sub(n.created_ns) > ORPHAN_GRACE_NS && !live.contains(&orig)
        })
        .map(|(k, _)| k)
        .collect();
    for k in &orphans {
        let _ = nat.remove(k);
    }
    (expired.len(), orphans.len())
}

/// The background collector; stops when dropped.
pub struct Gc {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

fn open_lru<V: aya::Pod>(bpffs: &Path, name: &str) -> Result<HashMap<MapData, FlowKey, V>> {
    let path = bpffs::map_pin(bpffs, name);
    let data = MapData::from_pin(&path)
        .map_err(|e| DataplaneError::new(format!("opening {}", path.display()), e))?;
    HashMap::try_from(Map::LruHashMap(data))
        .map_err(|e| DataplaneError::new(format!("opening {}", path.display()), e))
}

impl Gc {
    /// Starts collecting the tables pinned under `bpffs`, with handles of its own.
    pub fn start(bpffs: &Path) -> Result<Self> {
        let mut ct: CtMap = open_lru(bpffs, m::CONNTRACK)?;
        let mut nat: NatMap = open_lru(bpffs, m::NAT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("netd-ct-gc".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let (flows, orphans) = collect(&mut ct, &mut nat, monotonic_ns());
                    if flows + orphans > 0 {
                        debug!(flows, orphans, "conntrack gc");
                    }
                    // The copy of the tables just read can be megabytes.
                    crate::release_free_memory();
                    let mut slept = Duration::ZERO;
                    while slept < GC_INTERVAL && !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        slept += Duration::from_millis(100);
                    }
                }
            })
            .map_err(|e| DataplaneError::new("starting the conntrack collector", e))?;
        Ok(Gc {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Gc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            warn!("the conntrack collector panicked");
        }
    }
}
