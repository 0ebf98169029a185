//! Named network namespaces owned by guards, unique names, and running code inside a
//! namespace on a thread of its own.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{Context as _, anyhow};
use nix::sched::{CloneFlags, setns};

use crate::process::ip;

/// Where `ip netns` (and netd) keep named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Every name the harness makes starts with this, followed by the pid: a later run can
/// tell the leftovers of a killed test process from the namespaces of a live one.
const PREFIX: &str = "nt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique on this machine while this process lives: `nt<pid>x<n>`. Short, because
/// netd may derive interface names (15 bytes at most) from it.
pub fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}x{n}", std::process::id())
}

/// The path of the named namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Names of all named namespaces (`ls /run/netns`).
pub fn list_netns() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Delete every named namespace whose name starts with `prefix`; returns what failed.
pub fn delete_netns_with_prefix(prefix: &str) -> Vec<String> {
    let mut failed = Vec::new();
    for name in list_netns().into_iter().filter(|n| n.starts_with(prefix)) {
        if let Err(e) = ip(&["netns", "delete", name.as_str()]) {
            failed.push(format!("{name}: {e:#}"));
        }
    }
    failed
}

/// Remove the namespaces that test processes left behind when they were killed before
/// their guards ran.
pub fn sweep_stale_netns() {
    for name in list_netns().into_iter().filter(|n| is_stale_name(n)) {
        if let Err(e) = ip(&["netns", "delete", name.as_str()]) {
            eprintln!("netd-tests: could not remove stale namespace {name}: {e:#}");
        }
    }
}

/// A harness name (`nt<pid>x<n>...`) whose pid no longer runs.
pub fn is_stale_name(name: &str) -> bool {
    harness_pid(name).is_some_and(|pid| {
        pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// The pid embedded in a harness name `nt<pid>x<n>...`.
fn harness_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// A named network namespace (`ip netns add`), deleted when the guard drops.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// A new namespace with a unique name.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_name(&unique_name())
    }

    /// A new namespace called exactly `name`; fails if it exists. Loopback is brought up.
    pub fn with_name(name: &str) -> anyhow::Result<Self> {
        crate::sweep_stale();
        Self::create(name)
    }

    /// Like [`NetnsGuard::with_name`], but without first sweeping what killed test
    /// processes left behind: for a caller with names of its own (the benchmark's
    /// `nbx<pid>-...`) that sweeps its own leftovers and must leave the harness's alone.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        ip(&["netns", "add", name]).with_context(|| format!("creating namespace {name}"))?;
        let guard = NetnsGuard {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])
            .with_context(|| format!("bringing lo up in {name}"))?;
        Ok(guard)
    }

    /// Its name, as `ip netns` and `ip -n` take it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// /run/netns/NAME.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = delete_netns(&self.name) {
            eprintln!(
                "netd-tests: could not delete namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// Delete the named namespace `name` if it exists. A namespace that is already gone is
/// no error, so guards and the cleanup of objects that netd may have removed itself
/// (endpoint namespaces) can call this unconditionally.
pub fn delete_netns(name: &str) -> anyhow::Result<()> {
    if netns_path(name).exists() {
        ip(&["netns", "delete", name])?;
    }
    Ok(())
}

/// Run `f` on a new thread that has entered the network namespace at `path`, and return
/// its result. Only that thread changes namespace, and it ends with `f`, so no other code
/// ever runs in the wrong namespace. A socket that `f` creates stays in that namespace
/// whatever thread uses it later, so a server can be bound here and served elsewhere.
pub fn in_netns<T, F>(path: &Path, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = spawn_in_netns(path, f)?;
    handle
        .join()
        .map_err(|_| anyhow!("the thread running in {} panicked", path.display()))?
}

/// Like [`in_netns`] but returns at once; join the handle for the result (or the error of
/// entering the namespace).
pub fn spawn_in_netns<T, F>(
    path: &Path,
    f: F,
) -> anyhow::Result<thread::JoinHandle<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = File::open(path).with_context(|| format!("opening namespace {}", path.display()))?;
    let shown = path.display().to_string();
    // Builder rather than thread::spawn, which panics when no thread can be created: a
    // caller that records failures and goes on (the benchmark) gets an error instead.
    thread::Builder::new()
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering namespace {shown}"))?;
            drop(file);
            Ok(f())
        })
        .with_context(|| format!("spawning a thread to run in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_the_pid() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert_eq!(harness_pid(&a), Some(std::process::id()));
        assert_eq!(harness_pid(&format!("{b}-host")), Some(std::process::id()));
        assert_eq!(harness_pid("netdlab-host"), None);
    }
}
