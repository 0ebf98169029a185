//! The `netd` command line, in Docker's idiom. Every command but `netd daemon` is a thin
//! client of the daemon's API (see [`crate::api::client`]).

mod daemon;
mod endpoint;
mod network;
mod port;
mod run;
mod stats;
pub mod table;

use std::{
    io::{self, Write},
    path::PathBuf,
};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::api::client::{Client, ClientError};

pub use daemon::DaemonArgs;
pub use endpoint::EndpointCommand;
pub use network::NetworkCommand;
pub use port::PortCommand;
pub use run::RunArgs;
pub use stats::ConntrackCommand;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the daemon refused the request (not found, conflict, invalid, internal).
pub const EXIT_API: u8 = 1;
/// Exit status: the command line is wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the daemon cannot be reached on its socket.
pub const EXIT_UNREACHABLE: u8 = 3;

const ABOUT: &str = "Docker-style container networking with an eBPF dataplane";

const LONG_ABOUT: &str = "Docker-style container networking with an eBPF dataplane.

`netd daemon` owns networks, endpoints and published ports, and serves a JSON API over \
HTTP on a UNIX socket. Every other command is a client of that API.";

const EXIT_CODES: &str = "Exit codes:
  0    success
  1    the daemon refused the request (not found, conflict, invalid input, internal error),
       or a local step failed
  2    usage error (unknown command or option, bad value)
  3    the daemon cannot be reached on --socket (not running, or it went away)
  `netd run` exits with the status of CMD (128+N when a signal N killed it), 126 when CMD
  cannot be executed and 127 when it is not found.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "netd",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// The daemon's API socket
    #[arg(
        long,
        global = true,
        env = "NETD_SOCKET",
        value_name = "PATH",
        default_value_os_t = crate::daemon::DaemonConfig::with_defaults().socket
    )]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (in the foreground, until SIGINT or SIGTERM)
    Daemon(DaemonArgs),
    /// Show what the daemon runs with
    Info(Output),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage endpoints (network namespaces attached to networks)
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Manage published ports
    #[command(subcommand)]
    Port(PortCommand),
    /// Show dataplane counters: interfaces, drops, published ports, table occupancy
    Stats(Output),
    /// List or flush tracked connections
    #[command(subcommand)]
    Conntrack(ConntrackCommand),
    /// Run a command in a new endpoint, and remove the endpoint when it exits
    Run(RunArgs),
}

/// `--json` for commands that print something structured.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Output {
    /// Print the API's JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// What a command failed on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0:#}")]
    Daemon(anyhow::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// `netd run` could not start its command.
    #[error("{message}")]
    Exec { message: String, code: u8 },
}

impl CliError {
    /// The process exit status for this error, as documented in `netd --help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) if e.is_unreachable() => EXIT_UNREACHABLE,
            CliError::Exec { code, .. } => *code,
            _ => EXIT_API,
        }
    }
}

/// Run a parsed command line; returns the exit status on success (which `netd run`
/// takes from its command, and the multi-name commands set to 1 when some name failed).
pub fn dispatch(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Daemon(args) => {
            init_logging("info");
            args.run(cli.socket).map(|()| EXIT_OK)
        }
        command => {
            init_logging("warn");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| CliError::Io {
                    context: "starting the tokio runtime".into(),
                    source,
                })?;
            let client = Client::new(cli.socket);
            runtime.block_on(client_command(&client, command))
        }
    }
}

async fn client_command(client: &Client, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Daemon(_) => unreachable!("dispatch runs the daemon without a client"),
        Command::Info(out) => stats::info(client, out).await,
        Command::Network(cmd) => cmd.run(client).await,
        Command::Endpoint(cmd) => cmd.run(client).await,
        Command::Port(cmd) => cmd.run(client).await,
        Command::Stats(out) => stats::stats(client, out).await,
        Command::Conntrack(cmd) => cmd.run(client).await,
        Command::Run(args) => args.run(client).await,
    }
}

/// Logs go to stderr, filtered by RUST_LOG (`default` when unset), in colour only on a
/// terminal.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    // netlink-packet-route warns about every attribute newer than itself; that is noise
    // for the user, not a netd problem.
    let default = format!("{default},netlink_packet_route=error");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Fails only when a subscriber is already set (tests); keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// Write to stdout; a closed pipe (`netd network ls | head -1`) is not an error.
fn emit(text: &str) -> Result<(), CliError> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::Io {
            context: "writing to stdout".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Print `value` as pretty JSON, as the API sent it.
fn emit_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| CliError::Io {
        context: "encoding JSON".into(),
        source: io::Error::other(e),
    })?;
    text.push('\n');
    emit(&text)
}

/// For commands over several names: report an API error on stderr and go on with the
/// next name; stop on anything else (the daemon is gone, the reply is garbage).
fn tolerate<T>(result: Result<T, ClientError>) -> Result<Option<T>, CliError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Api(e)) => {
            eprintln!("netd: {}", e.message);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `inspect NAME...`: a JSON array of the objects found; exit 1 when any was not.
async fn inspect_each<T: Serialize>(
    names: &[String],
    mut inspect: impl AsyncFnMut(&str) -> Result<T, ClientError>,
) -> Result<u8, CliError> {
    let mut found = Vec::new();
    for name in names {
        found.extend(tolerate(inspect(name).await)?);
    }
    emit_json(&found)?;
    Ok(if found.len() == names.len() {
        EXIT_OK
    } else {
        EXIT_API
    })
}

/// `rm NAME...`: print each name removed; exit 1 when any removal was refused.
async fn remove_each(
    names: &[String],
    mut remove: impl AsyncFnMut(&str) -> Result<(), ClientError>,
) -> Result<u8, CliError> {
    let mut failed = false;
    for name in names {
        match tolerate(remove(name).await)? {
            Some(()) => emit(&format!("{name}\n"))?,
            None => failed = true,
        }
    }
    Ok(if failed { EXIT_API } else { EXIT_OK })
}

#[cfg(test)]
mod tests;
