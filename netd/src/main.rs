//! The `netd` binary: parse the command line, run it, turn the outcome into an exit status
//! (documented in `netd --help`).

use std::process::ExitCode;

use clap::Parser;
use netd::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit here with clap's status 2.
    let cli = Cli::parse();
    match cli::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("netd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
