//! Builds netd-ebpf for the BPF target and leaves the object in OUT_DIR, from where
//! `src/dataplane/ebpf` embeds it.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

/// Where `cargo xtask setup` installs bpf-linker; kept in step with xtask/src/setup.rs.
fn toolchain_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("NETD_TOOLCHAIN_DIR") {
        return Some(PathBuf::from(dir).join("bin"));
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("netd").join("toolchain").join("bin"))
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=NETD_TOOLCHAIN_DIR");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    let has_linker = dirs.iter().any(|d| d.join("bpf-linker").is_file());
    if !has_linker {
        let cached = toolchain_bin_dir().filter(|d| d.join("bpf-linker").is_file());
        let Some(cached) = cached else {
            return Err(anyhow!(
                "bpf-linker is not installed; run `cargo xtask setup` once (it builds bpf-linker \
                 against the nightly toolchain's LLVM and installs rust-src)"
            ));
        };
        dirs.insert(0, cached);
        let joined = env::join_paths(dirs).context("PATH")?;
        // SAFETY: build scripts are single-threaded; aya-build spawns cargo with this PATH.
        unsafe { env::set_var("PATH", joined) };
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "netd-ebpf")
        .ok_or_else(|| anyhow!("netd-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("netd-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
