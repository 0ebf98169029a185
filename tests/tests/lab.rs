//! `cargo xtask run --once`: the lab comes up, its checks pass, and it leaves nothing
//! behind.

use std::{path::PathBuf, process::Command, time::Duration};

use netd_tests::{
    netd_bin,
    netns::{list_netns, unique_name},
    process::run_with_timeout,
    require_root, target_dir,
};

/// The xtask binary: `$NETD_XTASK_BIN` (set by `cargo xtask test`), else the workspace's.
fn xtask_bin() -> PathBuf {
    let bin = std::env::var_os("NETD_XTASK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/xtask"));
    assert!(
        bin.is_file(),
        "{} is missing; run the tests through `cargo xtask test`",
        bin.display()
    );
    bin
}

#[test]
fn the_lab_runs_its_checks_and_tears_down() {
    require_root();
    let prefix = unique_name();
    let mut cmd = Command::new(xtask_bin());
    // NETD_BIN makes the lab use the binary under test instead of building one.
    cmd.args(["run", "--once", "--prefix", &prefix])
        .env("NETD_BIN", netd_bin().unwrap());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(300)).unwrap();
    assert!(out.success(), "{out}");

    let ok_lines = out
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("ok "))
        .count();
    assert!(
        ok_lines >= 3,
        "endpoint<->endpoint and gateway checks should pass: {out}"
    );
    assert!(!out.stdout.contains("FAIL"), "{out}");
    let socket = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("socket:"))
        .map(|s| PathBuf::from(s.trim()))
        .unwrap_or_else(|| panic!("the lab did not print its socket: {out}"));

    let left: Vec<_> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let dir = socket.parent().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*dir.to_string_lossy()),
        "a mount under {} is left",
        dir.display()
    );
}
