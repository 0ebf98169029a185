//! Host-local access to published ports: the cgroup sock_addr programs of
//! netd-ebpf/src/sock.rs, attached to a cgroup v2 through links pinned under the bpffs
//! directory, and the namespace cookie they filter on.
//!
//! A program on the v2 root cgroup runs for every socket of the machine, in every network
//! namespace. The programs therefore act only on sockets whose namespace cookie is the
//! daemon's, which is written here before anything is attached. The links are pinned, so
//! host processes keep reaching published ports while the daemon is down; the next start
//! swaps the new programs into the same links (`BPF_LINK_UPDATE`), and cleanup (which
//! detaches every pin under `links/`) removes them.

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, MapType},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use netd_common::sock::{
    MAX_SOCK_REV, SOCK_CONFIG, SOCK_REV, SockConfig, SockRevKey, SockRevValue,
};
use tracing::{debug, info};

use super::{
    EbpfDataplane,
    bpffs::LINKS_DIR,
    links,
    loader::{self, MapSpec},
    sys,
};
use crate::dataplane::{DataplaneError, Result};

#[cfg(test)]
#[path = "sock_tests/mod.rs"]
mod tests;

/// `f_type` of a cgroup v2 mount (linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Where the v2 hierarchy is mounted: hybrid layouts put it under `unified`.
const CGROUP2_ROOTS: [&str; 2] = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];
/// Prefix of the link pins, `sock-<cgroup inode>-<hook>`: the inode (the cgroup id) says
/// which cgroup a pin belongs to, so a start with another cgroup removes the old ones.
const PIN_PREFIX: &str = "sock-";

/// The programs of netd-ebpf/src/sock.rs and the hook each one is for.
const HOOKS: [(&str, &str); 4] = [
    ("netd_sock_connect4", "connect4"),
    ("netd_sock_sendmsg4", "sendmsg4"),
    ("netd_sock_recvmsg4", "recvmsg4"),
    ("netd_sock_getpeername4", "getpeername4"),
];

/// The maps of the socket programs, for the loader to size, check and pin with the rest
/// (the reverse table must survive a restart, or UDP replies to sockets translated
/// before it would show the container's address).
pub fn map_specs() -> Vec<MapSpec> {
    vec![
        MapSpec {
            name: SOCK_CONFIG,
            kind: MapType::Array,
            key_size: 4,
            value_size: size_of::<SockConfig>() as u32,
            max_entries: 1,
        },
        MapSpec {
            name: SOCK_REV,
            kind: MapType::LruHash,
            key_size: size_of::<SockRevKey>() as u32,
            value_size: size_of::<SockRevValue>() as u32,
            max_entries: MAX_SOCK_REV,
        },
    ]
}

fn statfs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// Whether `path` is a directory of a cgroup v2 hierarchy.
pub fn is_cgroup2(path: &Path) -> bool {
    statfs_type(path).is_ok_and(|t| t == CGROUP2_SUPER_MAGIC)
}

/// The root of the cgroup v2 hierarchy: /sys/fs/cgroup/unified on hybrid layouts,
/// /sys/fs/cgroup on unified ones.
pub fn default_cgroup() -> Result<PathBuf> {
    CGROUP2_ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
        .ok_or_else(|| {
            DataplaneError::new(
                "finding the cgroup v2 hierarchy for host-local access to published ports",
                format!(
                    "neither {} is a cgroup2 mount; mount one (mount -t cgroup2 none \
                     /sys/fs/cgroup/unified) or pass the cgroup to attach to with --cgroup",
                    CGROUP2_ROOTS.join(" nor ")
                ),
            )
        })
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14).
pub fn netns_cookie() -> io::Result<u64> {
    // SAFETY: a plain socket we own through OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket() returned a new fd that we now own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for the kernel to write, of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

fn pin_path(bpffs: &Path, cgroup_ino: u64, hook: &str) -> PathBuf {
    bpffs
        .join(LINKS_DIR)
        .join(format!("{PIN_PREFIX}{cgroup_ino}-{hook}"))
}

/// Link pins of the socket programs under `bpffs`, with the cgroup inode of each.
fn pins(bpffs: &Path) -> Result<Vec<(PathBuf, Option<u64>)>> {
    let dir = bpffs.join(LINKS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DataplaneError::new(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PIN_PREFIX)) else {
            continue;
        };
        let ino = rest.split('-').next().and_then(|i| i.parse().ok());
        out.push((entry.path(), ino));
    }
    Ok(out)
}

/// Detaches the socket links pinned under `bpffs` and removes their pins.
fn detach_all(bpffs: &Path) -> Result<usize> {
    let pins = pins(bpffs)?;
    for (path, _) in &pins {
        links::detach_pinned(path)?;
    }
    Ok(pins.len())
}

/// `BPF_LINK_UPDATE`: puts `prog` into the link `link` in place (aya 0.14 offers it only
/// for tcx links).
fn link_update(link: &OwnedFd, prog: &CgroupSockAddr) -> io::Result<()> {
    const BPF_LINK_UPDATE: libc::c_long = 29;
    let prog_fd = prog
        .fd()
        .map_err(|e| io::Error::other(format!("the program has no fd: {e}")))?;
    // bpf_attr.link_update: link_fd, new_prog_fd, flags, old_prog_fd; the rest zeroed.
    #[repr(C, align(8))]
    struct Attr([u32; 32]);
    let mut attr = Attr([0; 32]);
    attr.0[0] = link.as_raw_fd() as u32;
    attr.0[1] = prog_fd.as_fd().as_raw_fd() as u32;
    // SAFETY: attr is a valid, zero-padded bpf_attr for the command, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            attr.0.as_mut_ptr(),
            size_of::<Attr>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSockAddr> {
    let prog: &mut CgroupSockAddr = loader::typed_program(ebpf, name)?;
    if prog.fd().is_err() {
        loader::retry_interrupted(|| prog.load()).map_err(|e| {
            DataplaneError::new(
                format!("loading program {name} into the kernel"),
                loader::verifier_detail(&e),
            )
        })?;
    }
    Ok(prog)
}

/// Puts program `name` on `cgroup` for `hook`: into the pinned link when there is one
/// (a restart), through a new pinned link otherwise.
fn attach_one(
    ebpf: &mut Ebpf,
    bpffs: &Path,
    cgroup: &Path,
    ino: u64,
    name: &str,
    hook: &str,
) -> Result<()> {
    let prog = program(ebpf, name)?;
    let pin = pin_path(bpffs, ino, hook);
    if pin.exists() {
        let updated = sys::obj_get(&pin).and_then(|link| link_update(&link, prog));
        match updated {
            Ok(()) => {
                debug!(pin = %pin.display(), hook, "replaced the program in the pinned link");
                return Ok(());
            }
            // The cgroup went away (the link is defunct) or the pin is unreadable.
            Err(e) => {
                debug!(pin = %pin.display(), error = %e, "stale socket link pin; replacing it");
                links::detach_pinned(&pin)?;
            }
        }
    }
    let ctx = || format!("attaching {name} ({hook}) to cgroup {}", cgroup.display());
    let dir = File::open(cgroup).map_err(|e| DataplaneError::new(ctx(), e))?;
    // Through a link, which the kernel always attaches as one of many (flags must be 0).
    let id = prog
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(|e| DataplaneError::new(ctx(), format!("{e:#}")))?;
    let link = prog
        .take_link(id)
        .map_err(|e| DataplaneError::new(ctx(), e))?;
    links::pin_link(link, &pin, &format!("the {hook} link"), ctx)?;
    debug!(cgroup = %cgroup.display(), hook, program = name, "attached");
    Ok(())
}

fn write_netns_cookie(ebpf: &mut Ebpf) -> Result<u64> {
    let cookie = netns_cookie().map_err(|e| {
        DataplaneError::new(
            "reading the daemon's network namespace cookie (SO_NETNS_COOKIE)",
            format!("{e}; host-local access to published ports needs Linux 5.14 or later"),
        )
    })?;
    let map = ebpf.map_mut(SOCK_CONFIG).ok_or_else(|| {
        DataplaneError::new(
            "loading the eBPF object",
            format!("map {SOCK_CONFIG} is missing"),
        )
    })?;
    let mut config: Array<_, SockConfig> = Array::try_from(map)
        .map_err(|e| DataplaneError::new(format!("opening map {SOCK_CONFIG}"), e))?;
    config
        .set(
            0,
            SockConfig {
                netns_cookie: cookie,
            },
            0,
        )
        .map_err(|e| {
            DataplaneError::new(
                format!("writing the namespace cookie into {SOCK_CONFIG}"),
                e,
            )
        })?;
    Ok(cookie)
}

impl EbpfDataplane {
    /// Lets processes in the calling thread's network namespace (the daemon's) reach
    /// published ports at 127.0.0.0/8 and at the host's own addresses, by attaching the
    /// socket programs to the cgroup v2 `cgroup` (the v2 root when `None`: every process
    /// of the machine). Reuses the pinned links of an earlier run on the same cgroup and
    /// detaches those on another one. Returns the cgroup attached to.
    pub fn attach_host_access(&mut self, cgroup: Option<&Path>) -> Result<PathBuf> {
        let cgroup = match cgroup {
            Some(c) => c.to_path_buf(),
            None => default_cgroup()?,
        };
        if !is_cgroup2(&cgroup) {
            return Err(DataplaneError::new(
                format!("attaching the socket programs to {}", cgroup.display()),
                "it is not a directory of a cgroup v2 hierarchy; pass one with --cgroup (e.g. \
                 /sys/fs/cgroup/unified)",
            ));
        }
        let ino = fs::metadata(&cgroup)
            .map_err(|e| DataplaneError::new(format!("reading cgroup {}", cgroup.display()), e))?
            .ino();
        // The cookie first: a program attached before it would see 0 and do nothing,
        // but one left from a run in another namespace would act on the wrong one.
        let cookie = write_netns_cookie(&mut self.ebpf)?;
        for (path, pinned_ino) in pins(&self.cfg.bpffs)? {
            if pinned_ino != Some(ino) {
                links::detach_pinned(&path)?;
            }
        }
        for (name, hook) in HOOKS {
            if let Err(e) = attach_one(&mut self.ebpf, &self.cfg.bpffs, &cgroup, ino, name, hook) {
                // Half the hooks would translate requests but not replies.
                if let Err(undo) = detach_all(&self.cfg.bpffs) {
                    debug!(error = %undo, "detaching the socket programs after a failed attach");
                }
                return Err(e);
            }
        }
        info!(cgroup = %cgroup.display(), netns_cookie = cookie, "host-local access to published ports attached");
        Ok(cgroup)
    }

    /// Detaches what [`EbpfDataplane::attach_host_access`] attached with the dataplane
    /// pinned under `bpffs`: host processes no longer reach published ports, containers
    /// and the wan still do. Returns how many links were removed.
    /// [`EbpfDataplane::cleanup`] removes them with every other pin.
    pub fn detach_host_access(bpffs: &Path) -> Result<usize> {
        let n = detach_all(bpffs)?;
        info!(bpffs = %bpffs.display(), links = n, "host-local access to published ports detached");
        Ok(n)
    }
}
