//! Scenarios 6-8 for the netd variants: scale (new connections to the last-published
//! port with 1 / 1,000 / 10,000 published), programming latency (publish one port with
//! 0 / 1,000 / 10,000 already published, a 1,000-port range, 100 endpoints) and memory.
//!
//! Ports are published through the HTTP API on one kept-alive connection, one request
//! per port, so the numbers are the daemon's and not process start-up; a few publishes
//! also go through the `netd` CLI, as a user types them, for comparison.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use serde_json::{Value, json};

use super::{
    memory,
    sample::{Metric, Recorder, Scenario},
    stats::percentile,
    topology::{HOST_ADDR, Service, Topology},
    traffic,
};

/// Extra (unused) host ports start here; each is published alone.
const EXTRA_BASE: u16 = 10_000;
/// Ports used to time single publishes.
const PROBE_BASE: u16 = 20_000;
/// The 1,000-port range.
const RANGE: (u16, u16) = (21_000, 21_999);
/// The largest scale level the port plan leaves room for (extras end below PROBE_BASE).
pub const MAX_LEVEL: u32 = (PROBE_BASE - EXTRA_BASE) as u32;

/// How much of scenarios 6-8 to do.
#[derive(Debug, Clone)]
pub struct PhaseOpts {
    /// Published-port counts to measure at, ascending.
    pub levels: Vec<u32>,
    /// Single publishes timed per level.
    pub probes: usize,
    /// Single publishes through the CLI per level.
    pub cli_probes: usize,
    /// Endpoints created in the endpoint-creation measurement.
    pub endpoints: usize,
    pub duration: Duration,
    pub scenarios: Vec<Scenario>,
}

/// Where one variant's phase is recorded.
struct Ctx<'a> {
    topo: &'a mut Topology,
    rec: &'a mut Recorder,
    round: u32,
    opts: &'a PhaseOpts,
}

impl Ctx<'_> {
    fn wants(&self, s: Scenario) -> bool {
        self.opts.scenarios.contains(&s)
    }
    fn record(&mut self, s: Scenario, m: Metric, v: f64, detail: Value) {
        self.rec
            .record(self.round, self.topo.variant, s, &m, v, detail);
    }
    fn fail(&mut self, s: Scenario, metric: &str, e: &anyhow::Error) {
        self.rec
            .fail(self.round, self.topo.variant, s, Some(metric), e);
    }
    fn note(&self, s: Scenario, what: &str) {
        self.rec.note(self.round, self.topo.variant, s, what);
    }
    fn netd(&mut self) -> Result<&mut super::daemon::Netd> {
        netd_of(self.topo)
    }
}

/// The daemon's memory before the programming phase touches it (scenario 8).
pub fn idle_memory(topo: &mut Topology, rec: &mut Recorder, round: u32, opts: &PhaseOpts) {
    if opts.scenarios.contains(&Scenario::Memory) {
        let mut cx = memory::MemCtx { topo, rec, round };
        memory::measure(&mut cx, "0 ports");
    }
}

/// Run scenarios 6-8 on one netd topology, after [`idle_memory`] and [`endpoints`].
/// Errors are recorded per measurement; the phase goes on where it can.
pub fn run(topo: &mut Topology, rec: &mut Recorder, round: u32, opts: &PhaseOpts) {
    let mut cx = Ctx {
        topo,
        rec,
        round,
        opts,
    };
    let server_ep = cx.topo.server_ep.clone();
    let base_removed = cx
        .netd()
        .and_then(|n| n.unpublish(&server_ep, None).map(drop));
    if let Err(e) = base_removed {
        cx.fail(Scenario::Scale, "unpublish the base ports", &e);
        return;
    }
    if cx.wants(Scenario::Programming) {
        probes(&mut cx, 0);
        range(&mut cx);
    }
    let mut extras = 0u32;
    for &level in &opts.levels {
        if let Err(e) = fill(&mut cx, &mut extras, level.saturating_sub(1), Some(level)) {
            cx.fail(
                Scenario::Scale,
                &format!("publish {} ports", thousands(level)),
                &e,
            );
            break;
        }
        // The measured port is published last, so it sits at the end of iptables' chain.
        let target = Service::Scale.spec();
        if let Err(e) = cx.netd().and_then(|n| n.publish(&server_ep, &target)) {
            cx.fail(
                Scenario::Scale,
                &format!("publish the measured port at {level}"),
                &e,
            );
            break;
        }
        if cx.wants(Scenario::Scale) {
            scale_level(&mut cx, level);
        }
        if cx.wants(Scenario::Programming) && level > 1 {
            probes(&mut cx, level);
        }
        // Unpublished again so that at the next level it is again the last one.
        if let Err(e) = cx
            .netd()
            .and_then(|n| n.unpublish(&server_ep, Some(&target)))
        {
            cx.fail(Scenario::Scale, "unpublish the measured port", &e);
            break;
        }
    }
    if cx.wants(Scenario::Memory) {
        // The measured port was unpublished after its level: top up to the full count.
        let want = opts.levels.last().copied().unwrap_or(0);
        if let Err(e) = fill(&mut cx, &mut extras, want, None) {
            cx.fail(
                Scenario::Memory,
                &format!("publish {} ports", thousands(want)),
                &e,
            );
        }
        let label = format!("{} ports", thousands(extras));
        memory::measure(&mut cx.topo_mem(), &label);
    }
}

impl Ctx<'_> {
    fn topo_mem(&mut self) -> memory::MemCtx<'_> {
        memory::MemCtx {
            topo: self.topo,
            rec: self.rec,
            round: self.round,
        }
    }
}

/// Publish unused single ports on the idle endpoint until `want` are there; `level`
/// names the scale level being prepared, if any, for the fill-rate metric.
fn fill(cx: &mut Ctx<'_>, have: &mut u32, want: u32, level: Option<u32>) -> Result<()> {
    if want <= *have {
        return Ok(());
    }
    let n = want - *have;
    cx.note(
        Scenario::Scale,
        &format!("publishing {} more single port(s) ...", thousands(n)),
    );
    let idle = cx.topo.idle_ep.clone();
    let start = Instant::now();
    let netd = cx.netd()?;
    while *have < want {
        let port = EXTRA_BASE + *have as u16;
        netd.publish(&idle, &format!("{port}:{port}/tcp"))
            .with_context(|| format!("publishing extra port {port}"))?;
        *have += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(level) = level
        && cx.wants(Scenario::Programming)
    {
        let m = Metric::lower(
            format!("publish one while filling to {}, mean", thousands(level)),
            "ms",
        );
        let how = "POST /ports, one kept-alive connection";
        let detail = json!({ "ports": n, "secs": secs, "how": how });
        cx.record(Scenario::Programming, m, secs * 1e3 / f64::from(n), detail);
    }
    Ok(())
}

/// CRR to the last-published port (published by the caller) with `level` published.
fn scale_level(cx: &mut Ctx<'_>, level: u32) {
    let label = if level == 1 {
        "1 port".to_string()
    } else {
        format!("{} ports", thousands(level))
    };
    let addr = std::net::SocketAddr::from((HOST_ADDR, Service::Scale.host_port()));
    match traffic::crr_to(&cx.topo.dnat.client_path(), addr, cx.opts.duration, &label) {
        Ok(readings) => {
            for (m, v, d) in readings {
                cx.record(Scenario::Scale, m, v, d);
            }
        }
        Err(e) => cx.fail(Scenario::Scale, &format!("{label} connections"), &e),
    }
}

/// Time single publishes (and unpublishes) with `already` ports published.
fn probes(cx: &mut Ctx<'_>, already: u32) {
    let idle = cx.topo.idle_ep.clone();
    let label = thousands(already);
    let (mut publish, mut unpublish) = (Vec::new(), Vec::new());
    let n = cx.opts.probes;
    let result = (|| -> Result<()> {
        let netd = cx.netd()?;
        for i in 0..n {
            let port = PROBE_BASE + i as u16;
            let spec = format!("{port}:{port}/tcp");
            let t = Instant::now();
            netd.publish(&idle, &spec)?;
            publish.push(t.elapsed().as_nanos() as u64);
            let t = Instant::now();
            netd.unpublish(&idle, Some(&spec))?;
            unpublish.push(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    })();
    if let Err(e) = result {
        cx.fail(
            Scenario::Programming,
            &format!("publish one, {label} published"),
            &e,
        );
    }
    record_pcts(
        cx,
        &format!("publish one (API), {label} published"),
        &mut publish,
    );
    record_pcts(
        cx,
        &format!("unpublish one (API), {label} published"),
        &mut unpublish,
    );
    cli_probes(cx, already);
}

/// A few publishes through the `netd` CLI: the user-visible time, process start included.
fn cli_probes(cx: &mut Ctx<'_>, already: u32) {
    let idle = cx.topo.idle_ep.clone();
    let mut times = Vec::new();
    let n = cx.opts.cli_probes;
    let result = (|| -> Result<()> {
        let netd = cx.netd()?;
        for i in 0..n {
            let port = PROBE_BASE + 500 + i as u16;
            let spec = format!("{port}:{port}/tcp");
            let t = Instant::now();
            netd.cli_publish(&idle, &spec)?;
            times.push(t.elapsed().as_nanos() as u64);
            netd.unpublish(&idle, Some(&spec))?;
        }
        Ok(())
    })();
    let metric = format!("publish one (CLI), {} published", thousands(already));
    if let Err(e) = result {
        cx.fail(Scenario::Programming, &metric, &e);
    }
    record_pcts(cx, &metric, &mut times);
}

fn record_pcts(cx: &mut Ctx<'_>, name: &str, ns: &mut [u64]) {
    let n = ns.len();
    if let (Some(p50), Some(p99)) = (percentile(ns, 0.5), percentile(ns, 0.99)) {
        let detail = json!({ "n": n });
        cx.record(
            Scenario::Programming,
            Metric::lower(format!("{name}, p50"), "ms"),
            p50 as f64 / 1e6,
            detail,
        );
        cx.record(
            Scenario::Programming,
            Metric::lower(format!("{name}, p99"), "ms"),
            p99 as f64 / 1e6,
            Value::Null,
        );
    }
}

/// Publish and unpublish a 1,000-port range as one spec.
fn range(cx: &mut Ctx<'_>) {
    let idle = cx.topo.idle_ep.clone();
    let spec = format!("{0}-{1}:{0}-{1}/tcp", RANGE.0, RANGE.1);
    let result = (|| -> Result<(f64, f64)> {
        let netd = cx.netd()?;
        let t = Instant::now();
        netd.publish(&idle, &spec)?;
        let publish = t.elapsed().as_secs_f64();
        let t = Instant::now();
        netd.unpublish(&idle, Some(&spec))?;
        Ok((publish, t.elapsed().as_secs_f64()))
    })();
    match result {
        Ok((p, u)) => {
            let detail = json!({ "spec": spec });
            cx.record(
                Scenario::Programming,
                Metric::lower("publish a 1,000-port range", "ms"),
                p * 1e3,
                detail,
            );
            cx.record(
                Scenario::Programming,
                Metric::lower("unpublish a 1,000-port range", "ms"),
                u * 1e3,
                Value::Null,
            );
        }
        Err(e) => cx.fail(Scenario::Programming, "publish a 1,000-port range", &e),
    }
}

/// Create `opts.endpoints` endpoints on every netd variant, then remove them, taking the
/// variants in turn for each endpoint (A B, then B A, ...). On these VMs a batch of 100
/// took 20% more or less time from one minute to the next, more than the variants
/// differ, so batches run one after the other compared the minutes, not the dataplanes.
/// A variant's totals are the sums of its own requests.
pub fn endpoints(topos: &mut [&mut Topology], rec: &mut Recorder, round: u32, opts: &PhaseOpts) {
    let n = opts.endpoints;
    for t in topos.iter() {
        let what = format!("creating {n} endpoints, in turn with the other variants ...");
        rec.note(round, t.variant, Scenario::Programming, &what);
    }
    let name = |topo: &Topology, i: usize| format!("{}p{i}", topo.name_prefix);
    let created = in_turn(topos, &vec![n; topos.len()], |topo, i| {
        let name = name(topo, i);
        netd_of(topo)?.endpoint_create(&name, super::topology::NETWORK)?;
        Ok(())
    });
    let counts: Vec<usize> = created.iter().map(|c| c.nanos.len()).collect();
    let removed = in_turn(topos, &counts, |topo, i| {
        let name = name(topo, i);
        netd_of(topo)?.endpoint_remove(&name)
    });
    for ((topo, mut created), removed) in topos.iter_mut().zip(created).zip(removed) {
        let mut cx = Ctx {
            topo,
            rec: &mut *rec,
            round,
            opts,
        };
        let metric = format!("create {n} endpoints, total");
        record_total(&mut cx, &metric, &created, json!({ "endpoints": n }));
        record_pcts(&mut cx, "create one endpoint", &mut created.nanos);
        let metric = format!("remove {n} endpoints, total");
        record_total(&mut cx, &metric, &removed, Value::Null);
    }
}

fn netd_of(topo: &mut Topology) -> Result<&mut super::daemon::Netd> {
    topo.netd
        .as_mut()
        .ok_or_else(|| anyhow!("no netd in this topology"))
}

/// The time each step of one item took in [`in_turn`], and the error that stopped it.
#[derive(Debug, Default)]
struct Timed {
    nanos: Vec<u64>,
    error: Option<anyhow::Error>,
}

/// Runs `step(item, i)` for `i` in `0..counts[j]` on every item `j`, taking the items in
/// turn for each `i`: forwards for an even `i`, backwards for an odd one, so that neither
/// always goes first. An item whose step fails does no more steps.
fn in_turn<S>(
    items: &mut [S],
    counts: &[usize],
    mut step: impl FnMut(&mut S, usize) -> Result<()>,
) -> Vec<Timed> {
    let mut out: Vec<Timed> = items.iter().map(|_| Timed::default()).collect();
    let rounds = counts.iter().copied().max().unwrap_or(0);
    for i in 0..rounds {
        let order: Vec<usize> = if i % 2 == 0 {
            (0..items.len()).collect()
        } else {
            (0..items.len()).rev().collect()
        };
        for j in order {
            if i >= counts[j] || out[j].error.is_some() {
                continue;
            }
            let t = Instant::now();
            match step(&mut items[j], i) {
                Ok(()) => out[j].nanos.push(t.elapsed().as_nanos() as u64),
                Err(e) => out[j].error = Some(e),
            }
        }
    }
    out
}

/// Records the sum of `timed`'s steps as metric `name` in seconds, or the error that
/// stopped them.
fn record_total(cx: &mut Ctx<'_>, name: &str, timed: &Timed, detail: Value) {
    match &timed.error {
        Some(e) => cx.fail(Scenario::Programming, name, e),
        None => {
            let total: u64 = timed.nanos.iter().sum();
            cx.record(
                Scenario::Programming,
                Metric::lower(name, "s"),
                total as f64 / 1e9,
                detail,
            );
        }
    }
}

/// 10000 -> "10,000".
pub fn thousands(n: u32) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_turn_alternates_which_item_goes_first_and_stops_only_a_failing_one() {
        let log = std::cell::RefCell::new(Vec::new());
        let mut items = ['a', 'b', 'c'];
        let out = in_turn(&mut items, &[3, 3, 1], |item, i| {
            log.borrow_mut().push(format!("{item}{i}"));
            if *item == 'a' && i == 1 {
                anyhow::bail!("a fails at 1");
            }
            Ok(())
        });
        assert_eq!(log.into_inner(), ["a0", "b0", "c0", "b1", "a1", "b2"]);
        let steps: Vec<usize> = out.iter().map(|t| t.nanos.len()).collect();
        assert_eq!(steps, [1, 3, 1]);
        let errors: Vec<String> = out
            .iter()
            .map(|t| t.error.as_ref().map(|e| e.to_string()).unwrap_or_default())
            .collect();
        assert_eq!(errors, ["a fails at 1", "", ""]);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn port_plan_does_not_overlap() {
        assert!(u32::from(EXTRA_BASE) + MAX_LEVEL <= u32::from(PROBE_BASE));
        assert!(PROBE_BASE + 1000 <= RANGE.0);
        assert!(u32::from(RANGE.1) < u32::from(super::super::CLIENT_PORTS.0));
        assert!(
            Service::Scale.host_port() < EXTRA_BASE
                && Service::Scale.host_port() > Service::Udp.host_port()
        );
    }
}
