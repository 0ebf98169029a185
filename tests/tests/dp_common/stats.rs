//! Reading `netd stats --json` and `netd conntrack ls --json`.

use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use netd_tests::Lab;
use serde_json::Value;

/// `netd stats --json`.
pub fn stats(lab: &Lab) -> Value {
    lab.netd_json(&["stats", "--json"])
}

/// The packets dropped for `reason`; panics if the reason is not listed at all (every
/// reason a dataplane knows must be listed, zeros included).
pub fn drop_count(lab: &Lab, reason: &str) -> u64 {
    let s = stats(lab);
    s["drops"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["reason"] == reason))
        .and_then(|d| d["packets"].as_u64())
        .unwrap_or_else(|| panic!("`netd stats` lists no drop reason {reason:?}: {s}"))
}

/// Wait (bounded) until the drops of `reason` exceed `before`; panics with the stats
/// otherwise.
pub fn assert_drops_rise(lab: &Lab, reason: &str, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = drop_count(lab, reason);
        if now > before {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "the {reason:?} drop counter stayed at {now} (before: {before}); stats: {}",
                stats(lab)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// (packets, bytes) of the publication whose label contains `needle`.
pub fn port_counters(lab: &Lab, needle: &str) -> (u64, u64) {
    let s = stats(lab);
    let p = s["ports"]
        .as_array()
        .and_then(|l| {
            l.iter().find(|p| {
                p["publication"]
                    .as_str()
                    .is_some_and(|n| n.contains(needle))
            })
        })
        .unwrap_or_else(|| panic!("`netd stats` has no port counters for {needle:?}: {s}"));
    (
        p["packets"].as_u64().expect("packets"),
        p["bytes"].as_u64().expect("bytes"),
    )
}

/// (entries, capacity) of table `name`.
pub fn table(lab: &Lab, name: &str) -> (u64, u64) {
    let s = stats(lab);
    let t = s["tables"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("`netd stats` has no table {name:?}: {s}"));
    (
        t["entries"].as_u64().expect("entries"),
        t["capacity"].as_u64().expect("capacity"),
    )
}

/// A flow of `netd conntrack ls --json` with its tuples parsed.
#[derive(Debug, Clone)]
pub struct FlowView {
    pub proto: String,
    pub original: (SocketAddr, SocketAddr),
    pub translated: (SocketAddr, SocketAddr),
    pub state: String,
    pub raw: Value,
}

/// `netd conntrack ls --json`; flows whose tuples have no ports (ICMP) are skipped.
pub fn flows(lab: &Lab) -> Vec<FlowView> {
    let list = lab.netd_json(&["conntrack", "ls", "--json"]);
    list.as_array()
        .unwrap_or_else(|| panic!("`netd conntrack ls --json` is not a list: {list}"))
        .iter()
        .filter_map(|f| {
            Some(FlowView {
                proto: f["proto"].as_str()?.to_string(),
                original: parse_tuple(f["original"].as_str()?)?,
                translated: parse_tuple(f["translated"].as_str()?)?,
                state: f["state"].as_str().unwrap_or_default().to_string(),
                raw: f.clone(),
            })
        })
        .collect()
}

/// `a.b.c.d:p -> e.f.g.h:q`.
pub fn parse_tuple(s: &str) -> Option<(SocketAddr, SocketAddr)> {
    let (a, b) = s.split_once("->")?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}
