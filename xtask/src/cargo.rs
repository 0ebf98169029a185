//! Running cargo and other tools from xtask, echoing each command as it starts.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    netd_tests::workspace_root()
}

/// The cargo that runs us (`$CARGO`), so that the same toolchain builds everything.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Run `cmd` with inherited output; fail with the command line when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = show(cmd);
    eprintln!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("starting `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// A command as one would type it.
pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cargo build -p netd`; returns the path of the netd binary.
pub fn build_netd(release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "netd"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    let bin = netd_tests::target_dir().join(profile).join("netd");
    if !bin.is_file() {
        bail!("cargo built netd but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The netd binary to use: `$NETD_BIN` when set (a test runs the lab with the binary it
/// already has, without building), else a fresh build.
pub fn netd_binary(release: bool) -> anyhow::Result<PathBuf> {
    match std::env::var_os("NETD_BIN") {
        Some(bin) if Path::new(&bin).is_file() => Ok(PathBuf::from(bin)),
        Some(bin) => bail!("NETD_BIN={} is not a file", Path::new(&bin).display()),
        None => build_netd(release),
    }
}
