//! `cargo xtask bench`: netd's eBPF dataplane, its iptables dataplane and the physical
//! limit (a plain veth pair), side by side on the same machine in one run.
//!
//! Every round builds a fresh topology per variant (see [`topology`]), runs each traffic
//! measurement on every variant in turn (A B C, A B C, ...), then the scale, programming
//! and memory scenarios on the netd variants, and tears everything down. Results go to
//! `bench-results/<timestamp>/`: samples.json, results.md and PNG plots.
//!
//! Nothing here asserts speed: `--quick` (the test suite's smoke test) only fails when a
//! scenario produced no number for a variant.

mod api;
mod daemon;
mod iperf;
mod memory;
mod netns;
mod plots;
mod report;
mod rr;
mod sample;
mod scale;
mod stats;
mod topology;
mod traffic;
mod udp;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

pub use sample::Variant;
use sample::{Recorder, Scenario};
use topology::Topology;
use traffic::Measurement;

/// Ephemeral ports of every benchmark client namespace: clear of every published port
/// (all below 22000) and of netd's masquerade range (61000-65535), and as many as that
/// leaves. A TCP_CRR client reuses its ports from TIME_WAIT (`tcp_tw_reuse`), which
/// Linux allows a second after the last use: with the 21,000 ports of 40000-60999,
/// every path topped out at ~10,500 connections a second (21,000 per two seconds), and
/// connect() calls that had to search for a reusable port made the p99 of connection
/// setup (up to 1.8 ms).
pub const CLIENT_PORTS: (u16, u16) = (22_000, 60_999);

/// `cargo xtask bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Every scenario once, briefly (1 round, 1 s per measurement, scale up to 1,000
    /// ports); fails if any scenario produced no number. Never judges speed.
    #[arg(long)]
    pub quick: bool,
    /// Rounds (default 3, --quick 1)
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seconds per traffic measurement (default 5, --quick 1)
    #[arg(long)]
    pub duration: Option<u64>,
    /// Variants to run, in this order within a round; `routed` (a plain router between
    /// client and server) runs only when named
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Variant::DEFAULT.to_vec())]
    pub variants: Vec<Variant>,
    /// Scenarios to run, by number (1-8) or name (bulk_dnat, bulk_snat, rr_dnat, crr,
    /// udp_snat, scale, programming, memory); all by default
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Published-port counts for the scale scenarios (default 1,1000,10000; --quick
    /// 1,100,1000)
    #[arg(long, value_delimiter = ',')]
    pub scale: Vec<u32>,
    /// Output directory (default bench-results/<UTC timestamp>)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// netd build to benchmark (default release, --quick debug); the eBPF object is
    /// optimised either way, the profile matters for programming latency and memory
    #[arg(long, value_parser = ["debug", "release"])]
    pub profile: Option<String>,
    /// Use this netd binary instead of building one
    #[arg(long)]
    pub netd: Option<PathBuf>,
    /// TCP congestion control of the bulk scenarios (1, 2), set on iperf3's sockets with
    /// `-C`, the same for every variant. Cubic, Linux's default, unless told otherwise:
    /// results then do not depend on a machine's sysctl (some default to BBR, whose bulk
    /// rates swing by up to 30% between rounds here). `default` takes the machine's.
    #[arg(long, default_value = "cubic")]
    pub congestion: String,
}

/// Everything a run needs, resolved from the arguments.
struct Plan {
    /// UTC start time, "YYYY-MM-DD HH:MM:SS".
    started: String,
    rounds: u32,
    duration: Duration,
    /// What the bulk scenarios' sockets use (`--congestion`, resolved).
    congestion: String,
    variants: Vec<Variant>,
    scenarios: Vec<Scenario>,
    phase: scale::PhaseOpts,
    out: PathBuf,
    netd: PathBuf,
    work: PathBuf,
}

/// Run the benchmark; an error if it could not run, or if an applicable scenario has no
/// number for some variant.
pub fn run(args: BenchArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cargo xtask bench builds network namespaces and runs netd: run it as root");
    }
    for (tool, pkg) in [("ip", "iproute2"), ("iperf3", "iperf3")] {
        if Command::new(tool).arg("-v").output().is_err() {
            bail!(
                "{tool} is missing: install it with `apt-get install {pkg}` or `cargo xtask setup`"
            );
        }
    }
    let plan = plan(&args)?;
    install_sigint_handler();
    netns::remove_stale();
    remove_stale_work_dirs();
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("creating {}", plan.out.display()))?;
    std::fs::create_dir_all(&plan.work)?;
    std::fs::create_dir_all(plan.out.join("logs"))?;
    println!("bench: results will be in {}", plan.out.display());
    let mut rec = Recorder::new(plan.rounds);
    let cpu_at_start = report::CpuTimes::read();
    for round in 1..=plan.rounds {
        if interrupted() {
            break;
        }
        run_round(&plan, round, &mut rec);
    }
    let _ = std::fs::remove_dir_all(&plan.work);
    let steal = cpu_at_start
        .zip(report::CpuTimes::read())
        .and_then(|(a, b)| a.steal_pct(b));
    finish(&args, &plan, &rec, steal)
}

fn plan(args: &BenchArgs) -> Result<Plan> {
    let started = timestamp();
    let mut scenarios = Vec::new();
    for s in &args.scenarios {
        scenarios.push(Scenario::parse(s).with_context(|| {
            format!("unknown scenario {s:?}: use 1-8 or a name such as rr_dnat")
        })?);
    }
    if scenarios.is_empty() {
        scenarios = Scenario::ALL.to_vec();
    }
    let mut levels = if args.scale.is_empty() {
        if args.quick {
            vec![1, 100, 1000]
        } else {
            vec![1, 1000, 10_000]
        }
    } else {
        args.scale.clone()
    };
    levels.sort_unstable();
    levels.dedup();
    if levels.iter().any(|&l| l == 0 || l > scale::MAX_LEVEL) {
        bail!("--scale levels must be between 1 and {}", scale::MAX_LEVEL);
    }
    let duration = Duration::from_secs(
        args.duration
            .unwrap_or(if args.quick { 1 } else { 5 })
            .max(1),
    );
    let congestion = congestion(&args.congestion)?;
    let netd = match &args.netd {
        Some(p) => p.clone(),
        None if args.variants.iter().any(|v| v.is_netd()) => {
            let release = args
                .profile
                .as_deref()
                .map_or(!args.quick, |p| p == "release");
            crate::cargo::build_netd(release)?
        }
        None => PathBuf::from("netd"),
    };
    let out = args.out.clone().unwrap_or_else(|| {
        workspace_root()
            .join("bench-results")
            .join(started.replace([' ', ':'], "-"))
    });
    Ok(Plan {
        started,
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        duration,
        congestion,
        variants: args.variants.clone(),
        phase: scale::PhaseOpts {
            levels,
            probes: if args.quick { 10 } else { 50 },
            cli_probes: if args.quick { 2 } else { 5 },
            endpoints: if args.quick { 10 } else { 100 },
            duration,
            scenarios: scenarios.clone(),
        },
        scenarios,
        out,
        netd,
        work: PathBuf::from(format!("/tmp/netd-bench-{}", std::process::id())),
    })
}

/// The variants' order in `round` (1-based): `variants` rotated left by `round - 1`, so
/// that over rounds each variant runs in each position as often. A fixed order biased
/// the medians: 4 bulk streams through DNAT measured 0.78x the limit with the limit
/// first in every round and 1.13x with it last, in two 7-round runs on one build.
fn round_order(variants: &[Variant], round: u32) -> Vec<Variant> {
    let mut order = variants.to_vec();
    if !order.is_empty() {
        let by = (round.saturating_sub(1) as usize) % order.len();
        order.rotate_left(by);
    }
    order
}

/// One round: fresh topologies, every traffic measurement across the variants in turn,
/// the idle daemons' memory, endpoint creation across the netd variants in turn, then
/// scale/programming/memory per netd variant, then teardown. Every step takes the
/// variants in [`round_order`].
fn run_round(plan: &Plan, round: u32, rec: &mut Recorder) {
    let mut topos: Vec<Topology> = Vec::new();
    for v in round_order(&plan.variants, round) {
        let prefix = format!(
            "{}{}-{}{round}",
            netns::PREFIX,
            std::process::id(),
            &v.name()[..1]
        );
        match Topology::build(v, &prefix, &plan.netd, &plan.work, &plan.out.join("logs")) {
            Ok(t) => topos.push(t),
            Err(e) => {
                for &s in plan.scenarios.iter().filter(|s| s.applies_to(v)) {
                    rec.fail(round, v, s, None, &e);
                }
            }
        }
    }
    for m in Measurement::ALL
        .into_iter()
        .filter(|m| plan.scenarios.contains(&m.scenario()))
    {
        for topo in &topos {
            if interrupted() {
                return;
            }
            match m.run(topo, plan.duration, &plan.congestion) {
                Ok(readings) => {
                    for (metric, value, detail) in readings {
                        rec.record(round, topo.variant, m.scenario(), &metric, value, detail);
                    }
                }
                Err(e) => rec.fail(round, topo.variant, m.scenario(), Some(m.name()), &e),
            }
        }
    }
    let phase = [Scenario::Scale, Scenario::Programming, Scenario::Memory];
    if phase.iter().any(|s| plan.scenarios.contains(s)) {
        let mut netd: Vec<&mut Topology> =
            topos.iter_mut().filter(|t| t.variant.is_netd()).collect();
        for topo in netd.iter_mut() {
            scale::idle_memory(topo, rec, round, &plan.phase);
        }
        if plan.scenarios.contains(&Scenario::Programming) && !interrupted() {
            scale::endpoints(&mut netd, rec, round, &plan.phase);
        }
        for topo in topos.iter_mut().filter(|t| t.variant.is_netd()) {
            if interrupted() {
                return;
            }
            scale::run(topo, rec, round, &plan.phase);
        }
    }
    println!("bench: round {round} done, tearing down");
}

/// Write the outputs and decide the exit status.
fn finish(args: &BenchArgs, plan: &Plan, rec: &Recorder, cpu_steal_pct: Option<f64>) -> Result<()> {
    let info = report::RunInfo {
        command: command_line(),
        started_utc: plan.started.clone(),
        machine: report::Machine::detect(),
        rounds: plan.rounds,
        duration_secs: plan.duration.as_secs(),
        congestion: plan.congestion.clone(),
        variants: plan.variants.clone(),
        scale_levels: plan.phase.levels.clone(),
        netd_binary: plan.netd.display().to_string(),
        cpu_steal_pct,
        publish_method: "ports published through the HTTP API (POST /ports on the daemon's UNIX socket, one kept-alive connection, one request per port); a few also through the netd CLI".into(),
    };
    report::write_json(&plan.out, &info, rec)?;
    let (plots, plot_error) = match plots::draw_all(rec, &plan.out) {
        Ok(files) => (
            files
                .iter()
                .filter_map(|f| Some(f.file_name()?.to_string_lossy().into_owned()))
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e)),
    };
    report::write_markdown(&plan.out, &info, rec, &plan.scenarios, &plots)?;
    println!(
        "bench: wrote {}/samples.json, results.md and {} plot(s)",
        plan.out.display(),
        plots.len()
    );
    if interrupted() {
        bail!("interrupted; partial results are in {}", plan.out.display());
    }
    let missing = rec.missing(&plan.variants, &plan.scenarios);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(s, v)| format!("{} {} on {}", s.number(), s.id(), v.name()))
            .collect();
        bail!(
            "no numbers for: {}; see the errors in {}/results.md",
            list.join(", "),
            plan.out.display()
        );
    }
    match plot_error {
        Some(e) if args.quick => Err(e.context("drawing the plots")),
        Some(e) => {
            eprintln!("bench: plots failed: {e:#}");
            Ok(())
        }
        None => Ok(()),
    }
}

/// The congestion control the bulk scenarios use: `wanted` if this kernel has it, the
/// machine's default for `default`. A namespace may not change its own default unless
/// the root namespace allows the algorithm, but a process with CAP_NET_ADMIN may pick
/// any available one for its sockets.
fn congestion(wanted: &str) -> Result<String> {
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_";
    let read = |name: &str| {
        std::fs::read_to_string(format!("{SYSCTL}{name}"))
            .with_context(|| format!("reading {SYSCTL}{name}"))
    };
    if wanted == "default" {
        return Ok(read("congestion_control")?.trim().to_string());
    }
    let available = read("available_congestion_control")?;
    if !available.split_whitespace().any(|a| a == wanted) {
        bail!(
            "--congestion {wanted}: this kernel offers only {}",
            available.trim()
        );
    }
    Ok(wanted.to_string())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// Work directories of killed runs: unmount their bpffs and remove them.
fn remove_stale_work_dirs() {
    let Ok(dir) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("netd-bench-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            daemon::unmount_below(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C ends the run after the current measurement, so teardown still happens.
fn install_sigint_handler() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGINT, &action) };
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Current UTC time as "YYYY-MM-DD HH:MM:SS".
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn each_variant_takes_each_position_in_turn() {
        use Variant::{Ebpf as E, Iptables as I, Limit as L};
        let all = [E, I, L];
        assert_eq!(round_order(&all, 1), [E, I, L]);
        assert_eq!(round_order(&all, 2), [I, L, E]);
        assert_eq!(round_order(&all, 3), [L, E, I]);
        assert_eq!(round_order(&all, 4), [E, I, L]);
        assert_eq!(round_order(&[L, E], 2), [E, L]);
        assert_eq!(round_order(&[E], 5), [E]);
        assert!(round_order(&[], 2).is_empty());
    }
}
