//! `cargo xtask`: the developer commands that a plain `cargo build` cannot do.
//!
//! - `setup`: bootstrap what a fresh machine lacks (nightly rust-src, bpf-linker, the
//!   Debian tools that tests and the lab use). Idempotent and quick when nothing is missing.
//! - `build`: setup, then build netd.
//! - `run`: the lab: a daemon in a namespace of its own, a demo network, endpoints with
//!   servers, connectivity shown; up until Ctrl-C.
//! - `test`: setup, build, then every test suite, the privileged ones included.

mod bench;
mod cargo;
mod lab;
mod setup;
mod signals;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "netd's developer commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what building and testing netd needs; quick when nothing is missing
    Setup,
    /// Set up, then build netd
    Build {
        /// Build with the release profile
        #[arg(long)]
        release: bool,
    },
    /// Start the lab: netd in a namespace of its own with a demo network, until Ctrl-C
    Run(lab::RunArgs),
    /// Set up, build, and run every test suite (needs root; nothing is skipped silently)
    Test(test::TestArgs),
    /// Set up, then benchmark the ebpf and iptables dataplanes against a plain veth pair
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::run().and_then(|()| cargo::build_netd(release).map(drop))
        }
        Command::Run(args) => lab::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => setup::run().and_then(|()| bench::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
