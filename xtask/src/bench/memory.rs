//! Scenario 8: the daemon's resident memory, the memory of the BPF maps it holds, and
//! (for comparison) the number of iptables rules in the host namespace.

use std::{fs, process::Command};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use super::{
    sample::{Metric, Recorder, Scenario, Variant},
    topology::Topology,
};

/// What a memory measurement needs.
pub struct MemCtx<'a> {
    pub topo: &'a mut Topology,
    pub rec: &'a mut Recorder,
    pub round: u32,
}

/// Record RSS, BPF map memory and rule count, labelled with `label` ("10,000 ports").
pub fn measure(cx: &mut MemCtx<'_>, label: &str) {
    let variant = cx.topo.variant;
    let Some(pid) = cx.topo.netd.as_ref().map(|n| n.pid()) else {
        return;
    };
    let rss = format!("daemon RSS, {label}");
    match rss_mib(pid) {
        Ok(v) => cx.rec.record(
            cx.round,
            variant,
            Scenario::Memory,
            &Metric::lower(&rss, "MiB"),
            v,
            json!({ "pid": pid }),
        ),
        Err(e) => cx
            .rec
            .fail(cx.round, variant, Scenario::Memory, Some(&rss), &e),
    }
    let maps = format!("BPF map memory, {label}");
    match bpf_maps(pid) {
        Ok((bytes, detail)) if !detail.is_empty() || variant == Variant::Ebpf => {
            let detail = Value::Array(detail);
            cx.rec.record(
                cx.round,
                variant,
                Scenario::Memory,
                &Metric::lower(&maps, "MiB"),
                bytes as f64 / (1 << 20) as f64,
                detail,
            )
        }
        // The iptables dataplane holds no maps: nothing to report, not a failure.
        Ok(_) => {}
        Err(e) => cx
            .rec
            .fail(cx.round, variant, Scenario::Memory, Some(&maps), &e),
    }
    let rules = format!("iptables rules, {label}");
    match iptables_rules(cx.topo.host_ns()) {
        Ok(n) => cx.rec.record(
            cx.round,
            variant,
            Scenario::Memory,
            &Metric::lower(&rules, "rules"),
            n as f64,
            Value::Null,
        ),
        Err(e) if variant == Variant::Iptables => {
            cx.rec
                .fail(cx.round, variant, Scenario::Memory, Some(&rules), &e)
        }
        Err(_) => {}
    }
}

/// VmRSS of `pid` in MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb =
        field_kb(&status, "VmRSS:").ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb as f64 / 1024.0)
}

fn field_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
}

/// Sum of `memlock` over the distinct BPF maps whose fds `pid` holds, with per-map
/// facts. The kernel (>= 6.4) reports a map's real memory use as memlock in fdinfo.
fn bpf_maps(pid: u32) -> Result<(u64, Vec<Value>)> {
    let dir = format!("/proc/{pid}/fd");
    let mut seen = std::collections::BTreeMap::new();
    for entry in fs::read_dir(&dir)
        .with_context(|| format!("listing {dir}"))?
        .flatten()
    {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        if let Some(map) = parse_map_fdinfo(&info) {
            seen.entry(map.0).or_insert(map);
        }
    }
    let total = seen.values().map(|m| m.1).sum();
    let detail = seen
        .values()
        .map(|(id, memlock, kind, max)| json!({ "id": id, "memlock": memlock, "type": kind, "max_entries": max }))
        .collect();
    Ok((total, detail))
}

/// (map_id, memlock, map_type, max_entries) from a map fd's fdinfo.
fn parse_map_fdinfo(info: &str) -> Option<(u64, u64, u64, u64)> {
    let get = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
    };
    Some((
        get("map_id:")?,
        get("memlock:")?,
        get("map_type:").unwrap_or(0),
        get("max_entries:").unwrap_or(0),
    ))
}

/// Number of `-A` rules across all tables in namespace `ns`.
fn iptables_rules(ns: &str) -> Result<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-save"])
        .output()
        .context("running iptables-save")?;
    if !out.status.success() {
        bail!(
            "iptables-save in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_map_fdinfo() {
        assert_eq!(
            field_kb("Name:\tnetd\nVmRSS:\t   12345 kB\n", "VmRSS:"),
            Some(12345)
        );
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nmap_type:\t9\nkey_size:\t16\nvalue_size:\t8\nmax_entries:\t65536\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t5767168\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(parse_map_fdinfo(info), Some((42, 5_767_168, 9, 65_536)));
        assert_eq!(parse_map_fdinfo("pos:\t0\n"), None);
    }
}
