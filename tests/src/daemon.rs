//! A `netd daemon` child process with its own socket, state dir and bpffs, owned by a
//! guard: killed by PID, its bpffs unmounted and its directory removed on drop.

use std::{
    fs::{self, OpenOptions},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use nix::{
    mount::{MntFlags, umount2},
    sys::signal::Signal,
};

use crate::{
    netd_bin,
    process::{COMMAND_TIMEOUT, Output, run_with_timeout, signal, wait_with_timeout},
};

/// How long a daemon may take to start serving (it loads and attaches eBPF programs).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to shut down after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The namespace the daemon enters (`--netns`): the test's "host".
    pub netns: PathBuf,
    /// `--uplink`.
    pub uplink: Option<String>,
    /// Create the default network `netd0` (otherwise `--no-default-network`).
    pub default_network: bool,
    /// Holds the socket, the state dir, the bpffs mount point and the daemon's log.
    pub dir: PathBuf,
    /// Anything else, e.g. `--dataplane iptables`.
    pub extra_args: Vec<String>,
    /// The daemon binary; [`netd_bin`] when `None` (the harness self-test uses a fake).
    pub binary: Option<PathBuf>,
}

/// A running (or stopped, restartable) `netd daemon`.
///
/// The daemon dies with the thread that started it (PR_SET_PDEATHSIG), so that a killed
/// test leaves no daemon behind: start, restart and keep it on the thread that owns it.
pub struct Daemon {
    opts: DaemonOptions,
    child: Option<Child>,
}

impl Daemon {
    /// Create `opts.dir` and start the daemon in it; returns once the API socket accepts
    /// connections.
    pub fn start(opts: DaemonOptions) -> anyhow::Result<Daemon> {
        fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let mut daemon = Daemon { opts, child: None };
        daemon.restart()?;
        Ok(daemon)
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.opts.dir.join("netd.sock")
    }

    /// The state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.opts.dir.join("state")
    }

    /// The bpffs mount point.
    pub fn bpffs(&self) -> PathBuf {
        self.opts.dir.join("bpffs")
    }

    /// The file that collects the daemon's stdout and stderr across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.opts.dir.join("daemon.log")
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Its PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's exit status if it has exited on its own (it is then no longer
    /// running; [`restart`](Self::restart) starts it again).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Start it again with the same directories (after [`stop`](Self::stop) or
    /// [`kill9`](Self::kill9)); returns once it serves.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the daemon is still running; stop or kill it first");
        }
        // A socket file left by a killed daemon must not look like a live one.
        let _ = fs::remove_file(self.socket());
        let child = self.command()?.spawn().context("starting netd daemon")?;
        self.child = Some(child);
        self.wait_until_serving()
    }

    fn command(&self) -> anyhow::Result<Command> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let binary = match &self.opts.binary {
            Some(b) => b.clone(),
            None => netd_bin()?,
        };
        let mut cmd = Command::new(binary);
        cmd.arg("daemon")
            .arg("--netns")
            .arg(&self.opts.netns)
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--bpffs")
            .arg(self.bpffs());
        if let Some(uplink) = &self.opts.uplink {
            cmd.arg("--uplink").arg(uplink);
        }
        if !self.opts.default_network {
            cmd.arg("--no-default-network");
        }
        cmd.args(&self.opts.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches the lab or the test,
            // which stops the daemon in order, not the daemon behind their back.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe. If the thread that started the daemon dies
        // without running our Drop (a killed test), the kernel kills the daemon too.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }

    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().ok_or_else(|| anyhow!("no daemon"))?;
            if let Some(status) = child.try_wait().context("waiting for netd daemon")? {
                self.child = None;
                bail!(
                    "netd daemon exited during start-up ({status}); its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                let _ = self.kill9();
                bail!(
                    "netd daemon did not serve {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.socket().display(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Graceful stop: SIGTERM, then wait. Fails (after killing it) if it does not exit in
    /// time, so a test can assert on a clean shutdown.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("the daemon is not running"))?;
        signal(&child, Signal::SIGTERM)?;
        match wait_with_timeout(&mut child, STOP_TIMEOUT)? {
            Some(status) => Ok(status),
            None => bail!("netd daemon ignored SIGTERM for {STOP_TIMEOUT:?}; killed it"),
        }
    }

    /// `kill -9`: the daemon gets no chance to clean up.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("the daemon is not running"))?;
        signal(&child, Signal::SIGKILL)?;
        child.wait().context("reaping netd daemon")?;
        Ok(())
    }

    /// Run the CLI against this daemon: `netd ARGS...` with `NETD_SOCKET` set.
    pub fn netd(&self, args: &[&str]) -> Output {
        run_cli(&self.socket(), args)
    }
}

/// Run `netd ARGS...` against the daemon at `socket`; panics only if it cannot run at all
/// or hangs.
pub fn run_cli(socket: &Path, args: &[&str]) -> Output {
    try_run_cli(socket, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Run `netd ARGS...` against the daemon at `socket`; an error if it cannot run or hangs.
pub fn try_run_cli(socket: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(netd_bin()?);
    cmd.args(args).env("NETD_SOCKET", socket);
    run_with_timeout(&mut cmd, COMMAND_TIMEOUT).with_context(|| format!("netd {}", args.join(" ")))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal(&child, Signal::SIGTERM);
            if !matches!(wait_with_timeout(&mut child, STOP_TIMEOUT), Ok(Some(_))) {
                eprintln!(
                    "netd-tests: netd daemon {} ignored SIGTERM; killed it",
                    child.id()
                );
            }
        }
        if thread::panicking() {
            eprintln!(
                "--- netd daemon log ({}) ---\n{}",
                self.log_path().display(),
                self.log()
            );
        }
        unmount_and_remove(&self.bpffs(), &self.opts.dir);
    }
}

/// Detach the bpffs mount(s) at `bpffs` and remove `dir`; reports, never panics.
pub fn unmount_and_remove(bpffs: &Path, dir: &Path) {
    // A daemon killed before it could clean up and then restarted may have stacked a
    // second mount on the first; EINVAL means nothing (more) is mounted there, ENOENT
    // that the dir is gone.
    for _ in 0..8 {
        match umount2(bpffs, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                eprintln!("netd-tests: could not unmount {}: {e}", bpffs.display());
                return;
            }
        }
    }
    if dir.exists()
        && let Err(e) = fs::remove_dir_all(dir)
    {
        eprintln!("netd-tests: could not remove {}: {e}", dir.display());
    }
}
