//! `cargo xtask test`: check for root, set up, build, then every suite, privileged ones
//! included. Without root it refuses to start instead of passing half the tests. Tests
//! marked `#[ignore = "reason"]` (behaviour the iptables dataplane does not have) are not
//! run, and are listed with their reasons at the end of the log: no skip is silent.

mod summary;

use std::{io::IsTerminal as _, path::Path, process::Command, thread, time::Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use summary::Tally;

use crate::{bench::Variant, cargo, setup};

/// Options of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only run tests whose name contains this (in every suite)
    filter: Option<String>,
    /// How many integration tests run at once [default: twice the CPUs, at most 4]
    #[arg(long, env = "NETD_TEST_THREADS")]
    threads: Option<usize>,
}

/// One `cargo test` invocation.
struct Suite {
    name: &'static str,
    packages: &'static [&'static str],
    threads: usize,
}

/// Run the suites.
pub fn run(args: TestArgs) -> anyhow::Result<()> {
    // Refuse before setup, which may spend minutes building bpf-linker.
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "netd's privileged tests need root: they create network namespaces, veths, bpffs \
             mounts and eBPF programs. Run `sudo -E cargo xtask test`; they are never skipped."
        );
    }
    setup::run()?;
    let netd = cargo::build_netd(false)?;
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let suites = [
        Suite {
            name: "unit tests (netd-common, netd, xtask)",
            packages: &["netd-common", "netd", "xtask"],
            threads: cpus,
        },
        Suite {
            // Integration tests mostly wait on daemons and the network, so they overlap
            // well beyond the CPU count; more than 4 at once starves the daemons' start.
            name: "integration tests (netd-tests)",
            packages: &["netd-tests"],
            threads: args.threads.unwrap_or((cpus * 2).min(4)),
        },
    ];
    let mut failed = Vec::new();
    let mut tally = Tally::default();
    for suite in &suites {
        let (suite_tally, result) = run_suite(suite, &args, &netd, &xtask);
        if result.is_err() {
            failed.push(suite.name);
        }
        tally.merge(suite_tally);
    }
    const BENCH: &str = "benchmark smoke test (cargo xtask bench --quick)";
    if args.filter.is_some() {
        eprintln!("[test] {BENCH}: not run, a test filter was given");
    } else if let Err(e) = bench_smoke(&xtask, &netd) {
        eprintln!("[test] {BENCH}: FAILED: {e:#}");
        failed.push(BENCH);
    } else {
        eprintln!("[test] {BENCH}: passed");
    }
    print_summary(&tally);
    if !failed.is_empty() {
        bail!("failed: {}", failed.join("; "));
    }
    eprintln!("[test] all suites passed ({})", tally.counts());
    Ok(())
}

/// One suite's `cargo test`, its output passed through and tallied.
fn run_suite(
    suite: &Suite,
    args: &TestArgs,
    netd: &Path,
    xtask: &Path,
) -> (Tally, anyhow::Result<()>) {
    let started = Instant::now();
    eprintln!("[test] {}", suite.name);
    // cargo and libtest write into a pipe (see `summary::run`), not to our terminal, so
    // they would drop their colours.
    let colour: &[&str] = if std::io::stdout().is_terminal() {
        &["--color=always"]
    } else {
        &[]
    };
    let mut cmd = cargo::cargo();
    // Every test binary runs even when an earlier one failed: one report with all.
    cmd.args(["test", "--no-fail-fast"]).args(colour);
    for p in suite.packages {
        cmd.args(["-p", p]);
    }
    // Never --ignored or --include-ignored: an ignored test states why it cannot pass.
    cmd.args(["--", &format!("--test-threads={}", suite.threads)])
        .args(colour);
    cmd.args(args.filter.iter());
    cmd.env("NETD_BIN", netd).env("NETD_XTASK_BIN", xtask);
    let (tally, result) = summary::run(&mut cmd);
    let secs = started.elapsed().as_secs();
    match &result {
        Ok(()) => eprintln!(
            "[test] {}: passed, {} ({secs}s)",
            suite.name,
            tally.counts()
        ),
        Err(e) => eprintln!(
            "[test] {}: FAILED, {} ({secs}s): {e:#}",
            suite.name,
            tally.counts()
        ),
    }
    (tally, result)
}

/// The ignored tests by reason and the failed tests by name, as the last lines of the log,
/// where CI shows them without scrolling back through every test binary's report.
fn print_summary(tally: &Tally) {
    if tally.ignored > 0 {
        eprintln!("[test] {} ignored, not run by design:", tally.ignored);
        for (reason, names) in tally.ignored_by_reason() {
            eprintln!("[test]   {reason}:");
            for name in names {
                eprintln!("[test]     {name}");
            }
        }
    }
    if !tally.failed_tests.is_empty() {
        eprintln!("[test] {} failed:", tally.failed_tests.len());
        for name in &tally.failed_tests {
            eprintln!("[test]   {name}");
        }
    }
}

/// Every benchmark scenario, briefly, on every variant (`routed` too, which a bare
/// `cargo xtask bench` leaves out): it fails when a scenario produced no numbers, and
/// never judges speed.
fn bench_smoke(xtask: &Path, netd: &Path) -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("netd-bench-smoke.{}", std::process::id()));
    let variants: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
    let result = cargo::run(
        Command::new(xtask)
            .args([
                "bench",
                "--quick",
                "--variants",
                &variants.join(","),
                "--netd",
            ])
            .arg(netd)
            .arg("--out")
            .arg(&out),
    );
    let _ = std::fs::remove_dir_all(&out);
    result
}
