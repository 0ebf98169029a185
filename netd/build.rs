//! Builds netd-ebpf for the BPF target and leaves the object in OUT_DIR, from where
//! `src/dataplane/ebpf` embeds it.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

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
    )?;
    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    strip_debug(&out.join("netd"))
}

/// Drops the DWARF sections from the eBPF object, four fifths of its 1.2 MB. bpf-linker
/// needs the debug info to generate BTF, but once it has, nothing reads it: aya loads
/// programs, maps and BTF (`.BTF`, `.BTF.ext`, which carry the verifier's line info),
/// and the daemon's binary embeds the object, whose pages aya's parsing touches.
fn strip_debug(path: &Path) -> anyhow::Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut elf = object::build::elf::Builder::read(data.as_slice())
        .with_context(|| format!("parsing {}", path.display()))?;
    for section in elf.sections.iter_mut() {
        let name = section.name.as_slice();
        if name.starts_with(b".debug") || name.starts_with(b".rel.debug") {
            section.delete = true;
        }
    }
    elf.delete_orphans();
    // bpf-linker names the sections from the symbol string table; the writer wants a
    // section string table of its own.
    if !elf
        .sections
        .iter()
        .any(|s| matches!(s.data, object::build::elf::SectionData::SectionString))
    {
        let names = elf.sections.add();
        names.name = b".shstrtab".to_vec().into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = object::build::elf::SectionData::SectionString;
    }
    let mut stripped = Vec::new();
    elf.write(&mut stripped)
        .with_context(|| format!("writing {} without debug info", path.display()))?;
    fs::write(path, stripped).with_context(|| format!("writing {}", path.display()))
}
