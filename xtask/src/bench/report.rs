//! The run's outputs: samples.json with every sample and failure, and results.md with a
//! table per scenario (median and min-max per variant, ratios ebpf/iptables and
//! ebpf/limit), the machine, and the command that reproduces it.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::json;

use super::{
    sample::{Recorder, Scenario, Variant, fmt_value},
    stats::Summary,
};

/// Facts about the run that go into both files.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub command: String,
    pub started_utc: String,
    pub machine: Machine,
    pub rounds: u32,
    pub duration_secs: u64,
    /// TCP congestion control of the bulk scenarios.
    pub congestion: String,
    pub variants: Vec<Variant>,
    pub scale_levels: Vec<u32>,
    pub netd_binary: String,
    pub publish_method: String,
    /// Share of the CPU time the hypervisor gave to other guests during the run
    /// (`steal` in /proc/stat), in percent; `None` when it could not be read.
    pub cpu_steal_pct: Option<f64>,
}

/// The `cpu` line of /proc/stat: jiffies in total and stolen, summed over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    pub total: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn read() -> Option<CpuTimes> {
        Self::parse(&fs::read_to_string("/proc/stat").ok()?)
    }

    /// Parses /proc/stat: `cpu user nice system idle iowait irq softirq steal ...`.
    fn parse(stat: &str) -> Option<CpuTimes> {
        let fields: Vec<u64> = stat
            .lines()
            .find_map(|l| l.strip_prefix("cpu "))?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // guest and guest_nice (9, 10) are already counted in user and nice.
        let total = fields.iter().take(8).sum();
        Some(CpuTimes {
            total,
            steal: *fields.get(7)?,
        })
    }

    /// Percent of the time between `self` and `later` that was stolen.
    pub fn steal_pct(self, later: CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let steal = later.steal.checked_sub(self.steal)?;
        (total > 0).then(|| steal as f64 * 100.0 / total as f64)
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub memory_gib: f64,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kb: f64 = meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpu,
            memory_gib: (kb / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        }
    }
}

pub fn write_json(dir: &Path, info: &RunInfo, rec: &Recorder) -> Result<()> {
    let doc = json!({ "run": info, "samples": rec.samples, "failures": rec.failures });
    let path = dir.join("samples.json");
    fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn write_markdown(
    dir: &Path,
    info: &RunInfo,
    rec: &Recorder,
    scenarios: &[Scenario],
    plots: &[String],
) -> Result<()> {
    let mut md = String::new();
    header(&mut md, info);
    for &s in scenarios {
        scenario_table(&mut md, info, rec, s);
    }
    if !plots.is_empty() {
        md.push_str("## Plots\n\n");
        for p in plots {
            let _ = writeln!(md, "![{p}]({p})\n");
        }
    }
    let path = dir.join("results.md");
    fs::write(&path, md).with_context(|| format!("writing {}", path.display()))
}

fn header(md: &mut String, info: &RunInfo) {
    let m = &info.machine;
    let _ = writeln!(md, "# netd benchmark: ebpf vs iptables vs limit\n");
    let _ = writeln!(md, "- Command: `{}`", info.command);
    let _ = writeln!(md, "- Started: {} UTC", info.started_utc);
    let _ = writeln!(
        md,
        "- Machine: {} CPUs, {}, {:.1} GiB RAM, kernel {}",
        m.nproc, m.cpu, m.memory_gib, m.kernel
    );
    let variants: Vec<&str> = info.variants.iter().map(|v| v.name()).collect();
    let _ = writeln!(
        md,
        "- {} round(s), variants interleaved per measurement in the order {} in round 1, rotated by one each round after; {} s per traffic measurement; bulk TCP with {} congestion control",
        info.rounds,
        variants.join(", "),
        info.duration_secs,
        info.congestion
    );
    let _ = writeln!(
        md,
        "- Scale levels: {:?} published ports; {}",
        info.scale_levels, info.publish_method
    );
    let _ = writeln!(md, "- netd binary: {}", info.netd_binary);
    let steal = info
        .cpu_steal_pct
        .map_or_else(|| "unknown".to_string(), |p| format!("{p:.1}%"));
    let _ = writeln!(
        md,
        "- CPU time stolen by the hypervisor during the run: {steal}"
    );
    let _ = writeln!(
        md,
        "\nCells: median (min-max) over rounds. Ratios are of medians; ↑ higher is better, ↓ lower is better. \
         Client, server and softirq share the machine's cores: differences under about 10% are noise.\n"
    );
}

/// The ratios a table shows: ebpf against iptables and against the limit, and against
/// the plain router when the run has it.
fn ratio_columns(info: &RunInfo) -> Vec<(Variant, Variant)> {
    let mut cols = vec![
        (Variant::Ebpf, Variant::Iptables),
        (Variant::Ebpf, Variant::Limit),
    ];
    if info.variants.contains(&Variant::Routed) {
        cols.push((Variant::Ebpf, Variant::Routed));
    }
    cols
}

/// One scenario: a row per metric, a column per variant, then the ratios.
fn scenario_table(md: &mut String, info: &RunInfo, rec: &Recorder, s: Scenario) {
    let _ = writeln!(md, "## {}. {}\n", s.number(), s.title());
    let metrics = metric_order(rec, s);
    let ratios = ratio_columns(info);
    let variant_names: Vec<&str> = info.variants.iter().map(|v| v.name()).collect();
    let ratio_names: Vec<String> = ratios
        .iter()
        .map(|(a, b)| format!("{}/{}", a.name(), b.name()))
        .collect();
    let _ = writeln!(
        md,
        "| metric | {} | {} |",
        variant_names.join(" | "),
        ratio_names.join(" | ")
    );
    let _ = writeln!(
        md,
        "|---|{}",
        "---|".repeat(info.variants.len() + ratios.len())
    );
    if metrics.is_empty() {
        let cells: Vec<String> = info
            .variants
            .iter()
            .map(|&v| empty_cell(rec, s, v, None))
            .collect();
        let _ = writeln!(
            md,
            "| (no numbers) | {} | {} |",
            cells.join(" | "),
            vec!["-"; ratios.len()].join(" | ")
        );
    }
    for (metric, higher, unit) in &metrics {
        let summary = |v: Variant| {
            let vals: Vec<f64> = rec
                .samples
                .iter()
                .filter(|x| x.scenario == s && x.variant == v && &x.metric == metric)
                .map(|x| x.value)
                .collect();
            Summary::of(&vals)
        };
        let cells: Vec<String> = info
            .variants
            .iter()
            .map(|&v| match summary(v) {
                Some(sum) => cell(&sum),
                None => empty_cell(rec, s, v, Some(metric)),
            })
            .collect();
        let ratio = |a: Variant, b: Variant| match (summary(a), summary(b)) {
            (Some(x), Some(y)) if y.median != 0.0 => format!("{:.2}", x.median / y.median),
            _ => "-".into(),
        };
        let arrow = if *higher { "↑" } else { "↓" };
        let ratio_cells: Vec<String> = ratios.iter().map(|&(a, b)| ratio(a, b)).collect();
        let _ = writeln!(
            md,
            "| {metric} ({unit}) {arrow} | {} | {} |",
            cells.join(" | "),
            ratio_cells.join(" | ")
        );
    }
    let failures: Vec<_> = rec.failures.iter().filter(|f| f.scenario == s).collect();
    if !failures.is_empty() {
        md.push_str("\nFailures:\n");
        for f in failures {
            let _ = writeln!(
                md,
                "- round {}, {}, {}: {}",
                f.round,
                f.variant.name(),
                f.metric.as_deref().unwrap_or("(all)"),
                f.error
            );
        }
    }
    md.push('\n');
}

/// The scenario's metrics in the order they were measured. Each variant's own order is
/// merged in, so a metric one variant failed to measure still lands in its place.
fn metric_order(rec: &Recorder, s: Scenario) -> Vec<(String, bool, &'static str)> {
    let mut order: Vec<(String, bool, &'static str)> = Vec::new();
    for v in Variant::ALL {
        let mut prev: Option<usize> = None;
        for x in rec
            .samples
            .iter()
            .filter(|x| x.scenario == s && x.variant == v)
        {
            let at = match order.iter().position(|m| m.0 == x.metric) {
                Some(i) => i,
                None => {
                    let i = prev.map_or(0, |p| p + 1);
                    order.insert(i, (x.metric.clone(), x.higher_is_better, x.unit));
                    i
                }
            };
            prev = Some(at);
        }
    }
    order
}

fn cell(s: &Summary) -> String {
    if s.n == 1 || s.min == s.max {
        fmt_value(s.median)
    } else {
        format!(
            "{} ({}-{})",
            fmt_value(s.median),
            fmt_value(s.min),
            fmt_value(s.max)
        )
    }
}

/// A cell without samples: not applicable, or the first error that explains it.
fn empty_cell(rec: &Recorder, s: Scenario, v: Variant, metric: Option<&str>) -> String {
    if !s.applies_to(v) {
        return "n/a".into();
    }
    let err = rec
        .failures
        .iter()
        .find(|f| {
            f.scenario == s
                && f.variant == v
                && (f.metric.is_none() || metric.is_none() || f.metric.as_deref() == metric)
        })
        .or_else(|| {
            rec.failures
                .iter()
                .find(|f| f.scenario == s && f.variant == v)
        });
    match err {
        Some(f) => {
            // The innermost cause comes last in an anyhow chain: keep the tail.
            let chars: Vec<char> = f.error.chars().collect();
            let short: String = if chars.len() > 100 {
                std::iter::once('…')
                    .chain(chars[chars.len() - 100..].iter().copied())
                    .collect()
            } else {
                f.error.clone()
            };
            format!("error: {}", short.replace('|', "/"))
        }
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::bench::sample::Metric;

    fn info() -> RunInfo {
        RunInfo {
            command: "cargo xtask bench".into(),
            started_utc: "2026-01-01 00:00:00".into(),
            machine: Machine {
                nproc: 2,
                kernel: "6.18".into(),
                cpu: "cpu".into(),
                memory_gib: 24.0,
            },
            rounds: 2,
            duration_secs: 5,
            congestion: "cubic".into(),
            variants: Variant::DEFAULT.to_vec(),
            scale_levels: vec![1],
            netd_binary: "netd".into(),
            publish_method: "API".into(),
            cpu_steal_pct: Some(12.5),
        }
    }

    #[test]
    fn steal_is_the_stolen_share_of_all_cpu_time() {
        let stat = |steal: u64, idle: u64| {
            format!("cpu  100 0 50 {idle} 0 0 10 {steal} 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
        };
        let a = CpuTimes::parse(&stat(40, 800)).unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                steal: 40
            }
        );
        let b = CpuTimes::parse(&stat(140, 1600)).unwrap();
        assert_eq!(a.steal_pct(b), Some(100.0 * 100.0 / 900.0));
        assert_eq!(b.steal_pct(a), None, "counters do not go back");
        assert_eq!(CpuTimes::parse("intr 5\n"), None);
        let mut md = String::new();
        header(&mut md, &info());
        assert!(
            md.contains("stolen by the hypervisor during the run: 12.5%"),
            "{md}"
        );
    }

    #[test]
    fn table_has_medians_ratios_and_errors() {
        let mut rec = Recorder::new(2);
        let m = Metric::higher("1 stream", "Gbit/s");
        for (v, a, b) in [(Variant::Ebpf, 20.5, 22.5), (Variant::Limit, 25.0, 25.0)] {
            rec.record(1, v, Scenario::BulkDnat, &m, a, Value::Null);
            rec.record(2, v, Scenario::BulkDnat, &m, b, Value::Null);
        }
        rec.fail(
            1,
            Variant::Iptables,
            Scenario::BulkDnat,
            Some("1 stream"),
            &anyhow::anyhow!("daemon has no iptables"),
        );
        let mut md = String::new();
        scenario_table(&mut md, &info(), &rec, Scenario::BulkDnat);
        assert!(md.contains("| 1 stream (Gbit/s) ↑ | 21.50 (20.50-22.50) | error: daemon has no iptables | 25 | - | 0.86 |"), "{md}");
        let mut md = String::new();
        scenario_table(&mut md, &info(), &rec, Scenario::Scale);
        assert!(md.contains("| (no numbers) | - | - | n/a |"), "{md}");
    }

    #[test]
    fn a_run_with_the_router_gets_its_ratio() {
        let mut rec = Recorder::new(1);
        let m = Metric::higher("DNAT connections", "1/s");
        for (v, x) in [
            (Variant::Ebpf, 90.0),
            (Variant::Limit, 100.0),
            (Variant::Routed, 95.0),
        ] {
            rec.record(1, v, Scenario::Crr, &m, x, Value::Null);
        }
        let info = RunInfo {
            variants: vec![Variant::Ebpf, Variant::Limit, Variant::Routed],
            ..info()
        };
        let mut md = String::new();
        scenario_table(&mut md, &info, &rec, Scenario::Crr);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[2..5],
            [
                "| metric | ebpf | limit | routed | ebpf/iptables | ebpf/limit | ebpf/routed |",
                "|---|---|---|---|---|---|---|",
                "| DNAT connections (1/s) ↑ | 90 | 100 | 95 | - | 0.90 | 0.95 |",
            ],
            "{md}"
        );
    }

    #[test]
    fn metric_order_merges_variants() {
        let mut rec = Recorder::new(1);
        let m = |n: &str| Metric::higher(n, "1/s");
        for n in ["b", "c"] {
            rec.record(1, Variant::Ebpf, Scenario::Scale, &m(n), 1.0, Value::Null);
        }
        for n in ["a", "b", "c"] {
            rec.record(
                1,
                Variant::Iptables,
                Scenario::Scale,
                &m(n),
                1.0,
                Value::Null,
            );
        }
        let order: Vec<String> = metric_order(&rec, Scenario::Scale)
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }
}
