//! `cargo xtask test`: check for root, set up, build, then every suite, privileged ones included. Nothing
//! is skipped: without root it refuses to start instead of passing half the tests.

use std::{process::Command, thread, time::Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{cargo, setup};

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
    for suite in &suites {
        let started = Instant::now();
        eprintln!("[test] {}", suite.name);
        let mut cmd = cargo::cargo();
        // Every test binary runs even when an earlier one failed: one report with all.
        cmd.args(["test", "--no-fail-fast"]);
        for p in suite.packages {
            cmd.args(["-p", p]);
        }
        cmd.args(["--", &format!("--test-threads={}", suite.threads)]);
        cmd.args(args.filter.iter());
        cmd.env("NETD_BIN", &netd).env("NETD_XTASK_BIN", &xtask);
        let result = cargo::run(&mut cmd);
        let secs = started.elapsed().as_secs();
        match result {
            Ok(()) => eprintln!("[test] {}: passed ({secs}s)", suite.name),
            Err(e) => {
                eprintln!("[test] {}: FAILED ({secs}s): {e:#}", suite.name);
                failed.push(suite.name);
            }
        }
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
    if !failed.is_empty() {
        bail!("failed: {}", failed.join("; "));
    }
    eprintln!("[test] all suites passed");
    Ok(())
}

/// Every benchmark scenario, briefly, on every variant: it fails when a scenario produced
/// no numbers, and never judges speed.
fn bench_smoke(xtask: &std::path::Path, netd: &std::path::Path) -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("netd-bench-smoke.{}", std::process::id()));
    let result = cargo::run(
        Command::new(xtask)
            .args(["bench", "--quick", "--netd"])
            .arg(netd)
            .arg("--out")
            .arg(&out),
    );
    let _ = std::fs::remove_dir_all(&out);
    result
}
