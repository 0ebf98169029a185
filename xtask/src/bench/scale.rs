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
const PROBE_BASE: u16 = 31_000;
/// The 1,000-port range.
const RANGE: (u16, u16) = (38_000, 38_999);
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
        self.topo
            .netd
            .as_mut()
            .ok_or_else(|| anyhow!("no netd in this topology"))
    }
}

/// Run scenarios 6-8 on one netd topology. Errors are recorded per measurement; the phase
/// goes on where it can.
pub fn run(topo: &mut Topology, rec: &mut Recorder, round: u32, opts: &PhaseOpts) {
    let mut cx = Ctx {
        topo,
        rec,
        round,
        opts,
    };
    if cx.wants(Scenario::Memory) {
        memory::measure(&mut cx.topo_mem(), "0 ports");
    }
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
        endpoints(&mut cx);
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

/// Create `opts.endpoints` endpoints one after the other, then remove them.
fn endpoints(cx: &mut Ctx<'_>) {
    let n = cx.opts.endpoints;
    let prefix = cx.topo.name_prefix.clone();
    cx.note(
        Scenario::Programming,
        &format!("creating {n} endpoints ..."),
    );
    let mut each = Vec::new();
    let mut created = Vec::new();
    let result = (|| -> Result<f64> {
        let netd = cx.netd()?;
        let start = Instant::now();
        for i in 0..n {
            let name = format!("{prefix}p{i}");
            let t = Instant::now();
            netd.endpoint_create(&name, super::topology::NETWORK)?;
            each.push(t.elapsed().as_nanos() as u64);
            created.push(name);
        }
        Ok(start.elapsed().as_secs_f64())
    })();
    let metric = format!("create {n} endpoints, total");
    match result {
        Ok(total) => cx.record(
            Scenario::Programming,
            Metric::lower(metric, "s"),
            total,
            json!({ "endpoints": n }),
        ),
        Err(e) => cx.fail(Scenario::Programming, &metric, &e),
    }
    record_pcts(cx, "create one endpoint", &mut each);
    let removed = (|| -> Result<f64> {
        let netd = cx.netd()?;
        let start = Instant::now();
        for name in &created {
            netd.endpoint_remove(name)?;
        }
        Ok(start.elapsed().as_secs_f64())
    })();
    match removed {
        Ok(total) => cx.record(
            Scenario::Programming,
            Metric::lower(format!("remove {n} endpoints, total"), "s"),
            total,
            Value::Null,
        ),
        Err(e) => cx.fail(
            Scenario::Programming,
            &format!("remove {n} endpoints, total"),
            &e,
        ),
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
