//! Child processes with a deadline, and the `ip` tool.
//!
//! Every command a test runs is bounded: a hung CLI call or a stuck `ip` fails the test
//! with what it printed so far instead of hanging the suite.

use std::{
    ffi::OsStr,
    io::Read,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How long a single CLI call or `ip` invocation may take before it counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `128 + signal` when a signal ended the process, as a shell reports it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// stdout and stderr together, for messages that may go to either.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The shell-style exit code of a status.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Run `cmd` with piped output and no stdin; kill it if it outlives `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    Background::spawn(cmd)?.wait(timeout)
}

/// A child process whose output is collected while it runs; killed (by PID) on drop if it
/// is still running.
pub struct Background {
    what: String,
    child: Option<Child>,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Background {
    /// Start `cmd` with no stdin and piped stdout and stderr.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Background> {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {what}"))?;
        let stdout = Some(read_in_background(child.stdout.take()));
        let stderr = Some(read_in_background(child.stderr.take()));
        Ok(Background {
            what,
            child: Some(child),
            stdout,
            stderr,
        })
    }

    /// The child's PID.
    pub fn pid(&self) -> Pid {
        let id = self.child.as_ref().map_or(0, Child::id);
        Pid::from_raw(i32::try_from(id).unwrap_or(0))
    }

    /// Wait up to `timeout` for it to exit and return what it printed; on timeout it is
    /// killed and the result is an error that carries its output so far.
    pub fn wait(mut self, timeout: Duration) -> anyhow::Result<Output> {
        let mut child = self.child.take().context("already waited for")?;
        let status = wait_with_timeout(&mut child, timeout)?;
        let join = |h: Option<thread::JoinHandle<String>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let output = Output {
            code: status.map(exit_code).unwrap_or(-1),
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        };
        if status.is_none() {
            bail!(
                "{} did not finish within {timeout:?}; killed it. {output}",
                self.what
            );
        }
        Ok(output)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Drain a pipe on a thread so that a chatty child never blocks on a full pipe.
fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Wait for `child` up to `timeout`. On timeout it is killed (SIGKILL, by PID), reaped,
/// and `None` is returned.
pub fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Send `signal` to one process we started.
pub fn signal(child: &Child, signal: Signal) -> anyhow::Result<()> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    kill(pid, signal).with_context(|| format!("sending {signal} to pid {pid}"))
}

/// Run `ip ARGS...`; an error carries the command and what it printed.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> anyhow::Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT)?;
    if !out.success() {
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        bail!("`ip {}` failed: {}", args.join(" "), out.stderr.trim());
    }
    Ok(out.stdout)
}

/// Run `ip netns exec NS CMD...` (a fresh mount namespace; fine for tools, not for netd).
pub fn netns_exec<S: AsRef<OsStr>>(ns: &str, cmd: &[S]) -> anyhow::Result<Output> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(cmd);
    run_with_timeout(&mut c, COMMAND_TIMEOUT)
}

/// Names of the links in namespace `ns` (`ip -n NS -o link`), without the `@peer` suffix.
pub fn links(ns: &str) -> anyhow::Result<Vec<String>> {
    let out = ip(&["-n", ns, "-o", "link", "show"])?;
    Ok(parse_link_names(&out))
}

/// Parse `ip -o link` output into interface names.
pub fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// IPv4 addresses in namespace `ns` as `(ifname, "a.b.c.d/len")`.
pub fn addrs(ns: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = ip(&["-n", ns, "-o", "-4", "addr", "show"])?;
    Ok(parse_addrs(&out))
}

/// Parse `ip -o -4 addr` output: `2: eth0    inet 10.0.0.2/24 brd ... scope global eth0`.
pub fn parse_addrs(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let _index = words.next()?;
            let ifname = words.next()?.to_string();
            let _family = words.next()?;
            let addr = words.next()?.to_string();
            Some((ifname, addr))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_drop_the_peer_suffix() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\n\
                   5: uplink0@if4: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue\n";
        assert_eq!(parse_link_names(out), ["lo", "uplink0"]);
    }

    #[test]
    fn addrs_parse_ifname_and_cidr() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   7: eth0    inet 10.1.0.2/24 brd 10.1.0.255 scope global eth0\\ valid_lft forever\n";
        assert_eq!(
            parse_addrs(out),
            [
                ("lo".into(), "127.0.0.1/8".into()),
                ("eth0".into(), "10.1.0.2/24".into())
            ]
        );
    }

    #[test]
    fn timeout_kills_and_reports() {
        let err = run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish"), "{err}");
    }

    #[test]
    fn exit_codes_and_output_are_captured() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            COMMAND_TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            out,
            Output {
                code: 3,
                stdout: "out\n".into(),
                stderr: "err\n".into()
            }
        );
    }
}
