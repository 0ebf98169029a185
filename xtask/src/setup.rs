//! `cargo xtask setup`: everything a fresh machine lacks to build and test netd.
//!
//! 1. rust-src for the nightly toolchain (aya-build compiles netd-ebpf with
//!    `-Z build-std=core`).
//! 2. bpf-linker, which cannot be downloaded prebuilt: it is built from crates.io against
//!    the nightly's own libLLVM (the recipe in shared/notes/toolchain.md) into a per-user
//!    cache directory. netd/build.rs looks there too; keep [`toolchain_dir`] in step with it.
//! 3. The Debian packages that the tests, the lab and the benchmark run.
//!
//! Each step checks first and does nothing when its result is already there.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, anyhow, bail};

use crate::cargo::{self, show};

/// The bpf-linker release netd builds with.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Tools (or files) the tests, the lab and the benchmark need, and the Debian package of each.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
    ("bpftool", "bpftool"),
    ("tcpdump", "tcpdump"),
    ("ethtool", "ethtool"),
    ("ps", "procps"),
    // The benchmark's plots draw their text with this font.
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "fonts-dejavu-core",
    ),
];

/// Run every setup step.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let sysroot = ensure_rust_src()?;
    ensure_bpf_linker(&sysroot)?;
    ensure_packages()?;
    say(&format!("ready ({:.1}s)", started.elapsed().as_secs_f64()));
    Ok(())
}

fn say(msg: &str) {
    eprintln!("[setup] {msg}");
}

/// Where bpf-linker is installed:
/// `${NETD_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/netd/toolchain}`.
pub fn toolchain_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NETD_TOOLCHAIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| anyhow!("neither NETD_TOOLCHAIN_DIR, XDG_CACHE_HOME nor HOME is set"))?;
    Ok(cache.join("netd").join("toolchain"))
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = show(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("starting `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The nightly sysroot.
fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).map(PathBuf::from)
}

/// Make sure the nightly toolchain and its rust-src are installed; returns the sysroot.
fn ensure_rust_src() -> anyhow::Result<PathBuf> {
    let sysroot = match nightly_sysroot() {
        Ok(s) => s,
        Err(_) => {
            say("installing the nightly toolchain (netd-ebpf is built with it)");
            cargo::run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .context("installing the nightly toolchain; check that rustup is installed")?;
            nightly_sysroot()?
        }
    };
    let library = sysroot.join("lib/rustlib/src/rust/library/core");
    if library.is_dir() {
        say("nightly rust-src: present");
        return Ok(sysroot);
    }
    say("installing rust-src for nightly (needed for -Z build-std=core)");
    let fix = "rustup component add rust-src --toolchain nightly";
    cargo::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .with_context(|| format!("installing rust-src; run `{fix}`"))?;
    if !library.is_dir() {
        bail!(
            "rustup installed rust-src but {} is missing; try `rustup component remove rust-src --toolchain nightly && {fix}`",
            library.display()
        );
    }
    Ok(sysroot)
}

/// The nightly's libLLVM: its soname file (`libLLVM.so.22.1-rust-...`) and LLVM major.
fn nightly_llvm(sysroot: &Path) -> anyhow::Result<(PathBuf, u32)> {
    let lib = sysroot.join("lib");
    let entries = fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    let soname = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .ok_or_else(|| {
            anyhow!(
                "no libLLVM.so.* in {}: the nightly toolchain is incomplete",
                lib.display()
            )
        })?;
    let major = llvm_major(&soname)
        .ok_or_else(|| anyhow!("cannot read the LLVM major version from {soname}"))?;
    Ok((lib.join(soname), major))
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22.
fn llvm_major(soname: &str) -> Option<u32> {
    let version = soname.strip_prefix("libLLVM.so.")?;
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse().ok()
}

/// Make sure `<toolchain dir>/bin/bpf-linker` exists, links against this nightly's
/// libLLVM, and runs.
fn ensure_bpf_linker(sysroot: &Path) -> anyhow::Result<()> {
    let dir = toolchain_dir()?;
    let (libllvm, major) = nightly_llvm(sysroot)?;
    let bin = dir.join("bin/bpf-linker");
    let llvm_lib = dir.join("llvm/lib");
    let linked_to = fs::read_link(llvm_lib.join("libLLVM.so")).ok();
    if linked_to.as_deref() == Some(libllvm.as_path()) && bpf_linker_version(&bin).is_ok() {
        say(&format!(
            "bpf-linker {BPF_LINKER_VERSION} (LLVM {major}): {}",
            bin.display()
        ));
        return Ok(());
    }
    say(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} into {} \
         (2-3 minutes on 2 cores; cargo shows progress)",
        dir.display()
    ));
    let started = Instant::now();
    link_libllvm(&libllvm, &llvm_lib)?;
    install_bpf_linker(&dir, major)?;
    let version = bpf_linker_version(&bin)?;
    say(&format!(
        "built {version} in {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `bpf-linker --version`, which also proves that it finds its libLLVM.
fn bpf_linker_version(bin: &Path) -> anyhow::Result<String> {
    let version = output(Command::new(bin).arg("--version"))?;
    if !version.contains(BPF_LINKER_VERSION) {
        bail!("{} is {version}, not {BPF_LINKER_VERSION}", bin.display());
    }
    Ok(version)
}

/// `<dir>/llvm/lib/libLLVM.so` and the soname itself, both pointing at the nightly's
/// library: llvm-sys links the former, the binary's rpath resolves the latter.
fn link_libllvm(libllvm: &Path, llvm_lib: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(llvm_lib).with_context(|| format!("creating {}", llvm_lib.display()))?;
    let soname = libllvm
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", libllvm.display()))?;
    for link in [llvm_lib.join("libLLVM.so"), llvm_lib.join(soname)] {
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", link.display())),
        }
        std::os::unix::fs::symlink(libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    Ok(())
}

/// `cargo install bpf-linker` into `dir`, built against `<dir>/llvm`.
fn install_bpf_linker(dir: &Path, major: u32) -> anyhow::Result<()> {
    // The workspace's .cargo/config.toml must not apply: build from an empty directory.
    let scratch = std::env::temp_dir().join(format!("netd-bpf-linker.{}", std::process::id()));
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&scratch)
        .env("LLVM_PREFIX", dir.join("llvm"))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .arg("--root")
        .arg(dir);
    let result = cargo::run(&mut cmd).context("building bpf-linker; see cargo's output above");
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Is `tool` on PATH or in the sbin directories (not on a normal user's PATH)? An
/// absolute path is a data file the package provides.
fn has_tool(tool: &str) -> bool {
    if tool.starts_with('/') {
        return PathBuf::from(tool).is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// Install the Debian packages whose tools are missing.
fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(tool, _)| !has_tool(tool))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        say("packages: all present");
        return Ok(());
    }
    let list = missing.join(" ");
    let fix = format!("apt-get update && apt-get install -y {list}");
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "missing packages: {list}; install them with `sudo sh -c '{fix}'` or run `sudo cargo xtask setup`"
        );
    }
    if !has_tool("apt-get") {
        bail!(
            "missing packages: {list}, and apt-get is not available; install their equivalents by hand"
        );
    }
    say(&format!("installing {list}"));
    let install = || -> anyhow::Result<()> {
        cargo::run(Command::new("apt-get").arg("update"))?;
        cargo::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y"])
                .args(&missing),
        )
    };
    install()
        .with_context(|| format!("installing {list}; fix the cause above, then run `{fix}`"))?;
    let still: Vec<&str> = PACKAGES
        .iter()
        .filter(|(tool, _)| !has_tool(tool))
        .map(|(t, _)| *t)
        .collect();
    if !still.is_empty() {
        bail!(
            "installed {list}, but these tools are still missing: {}",
            still.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_the_soname() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.21-rust-1.90.0-nightly"), Some(21));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
    }
}
