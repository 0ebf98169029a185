//! The privileged test harness for netd.
//!
//! Tests build real topologies in network namespaces and drive netd as a user would: a
//! `netd daemon` in a fake host namespace, the CLI against its socket, and traffic through
//! std sockets on threads that entered a namespace. Everything a test creates is owned by
//! a guard whose `Drop` removes it, also when the test fails; names are unique per test
//! (`nt<pid>x<n>`), so tests run in parallel; the root namespace is never touched.
//!
//! - [`netns::NetnsGuard`]: a named namespace; [`netns::in_netns`] runs code inside one.
//! - [`daemon::Daemon`]: a `netd daemon` with its own socket, state dir and bpffs.
//! - [`lab::Lab`]: host + wan namespaces, the uplink between them, and a daemon.
//! - [`traffic`]: TCP/UDP servers and clients that report what the peer received.
//! - [`process`]: bounded child processes and the `ip` tool.
//! - [`cli`]: creating objects through the CLI, snapshots, and judging error replies.

pub mod cli;
pub mod daemon;
pub mod lab;
pub mod netns;
pub mod process;
pub mod traffic;

use std::{path::PathBuf, sync::Once};

use anyhow::bail;

pub use daemon::{Daemon, DaemonOptions};
pub use lab::{Lab, LabConfig};
pub use netns::{NetnsGuard, in_netns};
pub use process::Output;
pub use traffic::{Received, Server};

/// Panic unless running as root: these tests create namespaces, veths and bpffs mounts.
/// They are never skipped: a privileged test that did not run must not look like a pass.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "netd's privileged tests need root (they create network namespaces, veths and \
             bpffs mounts); run them with `sudo -E cargo xtask test`"
        );
    }
}

/// The `netd` binary under test: `$NETD_BIN` (set by `cargo xtask test`, which builds it),
/// else `target/debug/netd` of this workspace.
pub fn netd_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("NETD_BIN") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("debug").join("netd"),
    };
    if !path.is_file() {
        bail!(
            "the netd binary {} does not exist; build it with `cargo build -p netd` or run the \
             tests through `cargo xtask test`",
            path.display()
        );
    }
    Ok(path)
}

/// The workspace's target directory (`$CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Remove what test processes that were killed before their guards ran left behind:
/// namespaces and daemon directories named after a pid that no longer runs. Runs once per
/// process, before the first namespace is created.
pub fn sweep_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        netns::sweep_stale_netns();
        lab::sweep_stale_dirs();
    });
}
