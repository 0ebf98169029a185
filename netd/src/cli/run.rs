//! `netd run`: a throwaway "container". Creates an endpoint, publishes its ports, runs a
//! command inside the endpoint's network namespace, and removes the endpoint (and with it
//! the publications) whatever happens: normal exit, a failed step, Ctrl-C or SIGTERM.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::process::ExitStatusExt},
};

use clap::Args;
use tokio::{
    process::Child,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::{CliError, EXIT_API, port::render_mappings};
use crate::api::{
    client::Client,
    types::{EndpointCreate, EndpointInfo, PortPublish},
};

/// Options of `netd run`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Ctrl-C reaches CMD from the terminal; SIGTERM and SIGHUP sent to netd are \
    forwarded to it. The endpoint is removed when CMD exits, and netd exits with CMD's status."
)]
pub struct RunArgs {
    /// Endpoint name [default: run-<8 hex digits>]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The network to attach to [default: netd0]
    #[arg(long, value_name = "NET")]
    pub network: Option<String>,
    /// Publish a port, Docker's spec: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Address on the network [default: the next free one]
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

impl RunArgs {
    pub(super) async fn run(self, client: &Client) -> Result<u8, CliError> {
        // From here on SIGINT and SIGTERM are ours to handle: netd must outlive its
        // command to clean up after it.
        let signals = Signals::install()?;
        self.run_with(client, signals).await
    }

    /// [`RunArgs::run`] with the signals coming from `signals`.
    pub(super) async fn run_with(
        self,
        client: &Client,
        mut signals: Signals,
    ) -> Result<u8, CliError> {
        let name = self.name.clone().unwrap_or_else(random_name);
        let req = EndpointCreate {
            name: name.clone(),
            network: self.network.clone(),
            ip: self.ip.clone(),
            ..Default::default()
        };
        // Nothing to roll back when this fails (a name clash must not remove the
        // existing endpoint).
        let endpoint = client.endpoint_create(&req).await?;

        let outcome = self.run_in(client, &endpoint, &mut signals).await;
        let removed = client.endpoint_remove(&name).await;
        tracing::debug!(endpoint = %name, ok = removed.is_ok(), "removed the run endpoint");
        match (outcome, removed) {
            (Ok(code), Ok(())) => Ok(code),
            (Err(e), Ok(())) => Err(e),
            (Ok(code), Err(e)) => {
                eprintln!("netd: removing endpoint {name}: {e}");
                // The command's own failure says more than ours.
                Ok(if code == 0 { EXIT_API } else { code })
            }
            (Err(e), Err(cleanup)) => {
                eprintln!("netd: removing endpoint {name}: {cleanup}");
                Err(e)
            }
        }
    }

    /// Everything after the endpoint exists: publish, spawn, wait. The caller removes
    /// the endpoint afterwards, whatever this returns.
    async fn run_in(
        &self,
        client: &Client,
        endpoint: &EndpointInfo,
        signals: &mut Signals,
    ) -> Result<u8, CliError> {
        let name = &endpoint.endpoint.name;
        for spec in &self.publish {
            let req = PortPublish {
                endpoint: name.clone(),
                spec: spec.clone(),
                network: None,
            };
            let list = client.port_publish(&req).await?;
            eprint!("{}", render_mappings(&list));
            if let Some(sig) = signals.pending() {
                return Ok(128 + sig as u8);
            }
        }
        if let Some(sig) = signals.pending() {
            return Ok(128 + sig as u8);
        }
        let mut child = spawn_in_netns(&self.command, &endpoint.endpoint.netns.path)?;
        tracing::debug!(endpoint = %name, pid = ?child.id(), "started the command");
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(sig) = signals.rx.recv() => forward(&child, sig),
            }
        };
        let status = status.map_err(|source| CliError::Io {
            context: format!("waiting for {}", self.command[0]),
            source,
        })?;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => 128u8.saturating_add(sig as u8),
            (None, None) => EXIT_API,
        })
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught and queued as signal numbers.
pub(super) struct Signals {
    rx: mpsc::UnboundedReceiver<i32>,
}

impl Signals {
    fn install() -> Result<Signals, CliError> {
        let (tx, rx) = mpsc::unbounded_channel();
        for (kind, number) in [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
        ] {
            let mut stream = signal(kind).map_err(|source| CliError::Io {
                context: format!("installing a handler for signal {number}"),
                source,
            })?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(number).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Signals { rx })
    }

    /// Signals fed by hand, for tests: no process-wide handler is installed.
    #[cfg(test)]
    pub(super) fn from_channel(rx: mpsc::UnboundedReceiver<i32>) -> Signals {
        Signals { rx }
    }

    /// The last signal received so far, if any (setup stops at the next step).
    fn pending(&mut self) -> Option<i32> {
        let mut last = None;
        while let Ok(sig) = self.rx.try_recv() {
            last = Some(sig);
        }
        last
    }
}

/// Pass a signal on to the command. A Ctrl-C typed at the terminal reaches the whole
/// foreground process group, the command included, so SIGINT is forwarded only when
/// netd is not in the terminal's foreground group (someone ran `kill -INT` on netd).
fn forward(child: &Child, sig: i32) {
    if sig == libc::SIGINT && in_terminal_foreground() {
        return;
    }
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        if rc != 0 {
            tracing::debug!(pid, sig, error = %io::Error::last_os_error(), "forwarding a signal failed");
        }
    }
}

/// Whether our process group is the foreground group of the controlling terminal.
fn in_terminal_foreground() -> bool {
    // SAFETY: plain syscalls on our own standard descriptors and process.
    let pgrp = unsafe { libc::getpgrp() };
    [0, 1, 2]
        .into_iter()
        .any(|fd| unsafe { libc::tcgetpgrp(fd) } == pgrp)
}

/// Start `command` inside the network namespace at `netns`, with stdio inherited.
fn spawn_in_netns(command: &[String], netns: &std::path::Path) -> Result<Child, CliError> {
    let ns = File::open(netns).map_err(|source| CliError::Io {
        context: format!(
            "opening the endpoint's network namespace {}",
            netns.display()
        ),
        source,
    })?;
    let fd = ns.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: setns(2) is a single async-signal-safe syscall; `ns` outlives the spawn,
    // and its descriptor is close-on-exec so the command does not inherit it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(ns);
    child.map_err(|e| {
        let code = match e.kind() {
            io::ErrorKind::NotFound => 127,
            io::ErrorKind::PermissionDenied => 126,
            _ => EXIT_API,
        };
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            " (entering a network namespace needs CAP_SYS_ADMIN; or CMD is not executable)"
        } else {
            ""
        };
        CliError::Exec {
            message: format!(
                "cannot run {:?} in {}: {e}{hint}",
                command[0],
                netns.display()
            ),
            code,
        }
    })
}

/// `run-` and 8 hex digits, from the kernel's random pool when readable.
pub(super) fn random_name() -> String {
    use std::{hash::BuildHasher, io::Read};
    let mut bytes = [0u8; 4];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let n = match random {
        Ok(()) => u32::from_ne_bytes(bytes),
        // RandomState is seeded randomly per process.
        Err(_) => {
            std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
        }
    };
    format!("run-{n:08x}")
}
