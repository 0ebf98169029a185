//! The bpffs directory: mounting it when missing, and removing every pin under it.

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use nix::mount::{MsFlags, mount};
use tracing::info;

use crate::dataplane::DataplaneError;

/// `f_type` of a bpffs mount (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs conventionally lives.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// Subdirectory for pinned maps.
pub const MAPS_DIR: &str = "maps";
/// Subdirectory for pinned tcx links.
pub const LINKS_DIR: &str = "links";

/// Whether `path` lies on a bpffs mount.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(path: &Path) -> Result<(), DataplaneError> {
    mount(Some("bpf"), path, Some("bpf"), MsFlags::empty(), None::<&str>).map_err(|e| {
        DataplaneError::new(
            format!("mounting bpffs on {}", path.display()),
            format!("{e}; netd needs root (CAP_SYS_ADMIN) to mount it, or mount it yourself: mount -t bpf bpf {}", path.display()),
        )
    })?;
    info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

fn mkdir_p(path: &Path) -> Result<(), DataplaneError> {
    fs::create_dir_all(path)
        .map_err(|e| DataplaneError::new(format!("creating directory {}", path.display()), e))
}

/// Makes sure `dir` is a directory on bpffs with the `maps` and `links` subdirectories,
/// mounting bpffs where it is missing: on /sys/fs/bpf first when `dir` is under it (a
/// fresh machine has plain sysfs there), otherwise on `dir` itself.
pub fn ensure(dir: &Path) -> Result<(), DataplaneError> {
    let check = |p: &Path| {
        is_bpffs(p).map_err(|e| {
            DataplaneError::new(format!("checking the filesystem of {}", p.display()), e)
        })
    };
    let sys = Path::new(SYS_FS_BPF);
    if dir.starts_with(sys) && sys.is_dir() && !check(sys)? {
        mount_bpffs(sys)?;
    }
    mkdir_p(dir)?;
    if !check(dir)? {
        mount_bpffs(dir)?;
    }
    mkdir_p(&dir.join(MAPS_DIR))?;
    mkdir_p(&dir.join(LINKS_DIR))
}

/// The pin path of map `name`.
pub fn map_pin(dir: &Path, name: &str) -> PathBuf {
    dir.join(MAPS_DIR).join(name)
}

/// Removes netd's pins under `dir`: every link first (detached at once), then every map
/// (freed once no program uses it), then the two subdirectories. Other files of a bpffs
/// mount (the kernel's `maps.debug`, `progs.debug`) are left alone. Returns how many pins
/// were removed.
pub fn remove_all_pins(dir: &Path) -> Result<usize, DataplaneError> {
    let mut removed = 0;
    for sub in [LINKS_DIR, MAPS_DIR] {
        let sub = dir.join(sub);
        let entries = match fs::read_dir(&sub) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(DataplaneError::new(format!("listing {}", sub.display()), e)),
        };
        for entry in entries {
            let path = entry
                .map_err(|e| DataplaneError::new(format!("listing {}", sub.display()), e))?
                .path();
            if sub.ends_with(LINKS_DIR) {
                super::links::detach_pinned(&path)?;
            } else {
                fs::remove_file(&path).map_err(|e| {
                    DataplaneError::new(format!("removing pin {}", path.display()), e)
                })?;
            }
            removed += 1;
        }
        fs::remove_dir(&sub)
            .map_err(|e| DataplaneError::new(format!("removing directory {}", sub.display()), e))?;
    }
    Ok(removed)
}
