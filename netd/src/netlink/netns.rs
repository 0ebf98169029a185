//! Network namespaces: named ones the way iproute2 makes them, opening, entering, and a
//! netlink socket inside one. No function here changes the calling thread's namespace
//! except [`Netns::enter`].

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::Mutex,
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    sys::statfs::{NSFS_MAGIC, fstatfs},
};
use tracing::info;

use super::{Netlink, NetlinkError, Result};

/// Turn IPv4 forwarding on in the calling thread's network namespace.
///
/// /proc/sys/net resolves against the network namespace of the thread that opens the
/// file (not the process's), so this affects exactly the caller's namespace.
pub fn enable_ip_forward() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    fs::write(PATH, "1")
        .map_err(|e| NetlinkError::new("enable", "net.ipv4.ip_forward", io_detail(&e)))
}

/// A network namespace held open by a file descriptor.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    fd: OwnedFd,
}

/// Serializes the one-time setup of /run/netns between threads of this process.
static NAMED_DIR_LOCK: Mutex<()> = Mutex::new(());

impl Netns {
    /// Directory of named namespaces, as iproute2 uses it.
    pub const NAMED_DIR: &'static str = "/run/netns";

    /// Create a new namespace bound at /run/netns/NAME so that `ip netns exec NAME` works.
    /// Fails if the name is taken.
    pub fn create_named(name: &str) -> Result<Netns> {
        validate_netns_name(name)?;
        let dir = Path::new(Self::NAMED_DIR);
        let path = dir.join(name);
        prepare_named_dir(dir)?;
        let placeholder = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => NetlinkError::new(
                    "create netns",
                    name,
                    format!(
                        "network namespace {name} already exists ({})",
                        path.display()
                    ),
                ),
                _ => NetlinkError::new("create netns", path.display().to_string(), io_detail(&e)),
            })?;
        drop(placeholder);
        let netns = bind_new_netns(&path).and_then(|()| Netns::open(&path));
        match netns {
            Ok(netns) => {
                info!(netns = name, "created network namespace");
                Ok(netns)
            }
            Err(e) => {
                // Best effort: the error that matters is the one we return.
                let _ = umount2(&path, MntFlags::MNT_DETACH);
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Open an existing namespace (a bind mount, or /proc/PID/ns/net).
    pub fn open(path: &Path) -> Result<Netns> {
        let object = || path.display().to_string();
        let file = File::open(path)
            .map_err(|e| NetlinkError::new("open netns", object(), io_detail(&e)))?;
        let fd = OwnedFd::from(file);
        check_is_netns(fd.as_fd())
            .map_err(|detail| NetlinkError::new("open netns", object(), detail))?;
        Ok(Netns {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Unmount and remove a namespace bound by [`Netns::create_named`]; succeeds if it is
    /// already gone.
    pub fn remove_named(path: &Path) -> Result<()> {
        let object = || path.display().to_string();
        match umount2(path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (a leftover placeholder); ENOENT: no file at all.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(NetlinkError::errno("unmount netns", object(), e)),
        }
        match fs::remove_file(path) {
            Ok(()) => {
                info!(netns = %path.display(), "removed network namespace");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetlinkError::new("remove netns", object(), io_detail(&e))),
        }
    }

    /// Whether `path` holds a live network namespace.
    pub fn exists(path: &Path) -> bool {
        Netns::open(path).is_ok()
    }

    /// Move the calling thread into the namespace at `path` (for `netd daemon --netns`,
    /// before the runtime starts).
    pub fn enter(path: &Path) -> Result<()> {
        let netns = Netns::open(path)?;
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetlinkError::errno("enter netns", path.display().to_string(), e))
    }

    /// The path the namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's file descriptor, valid as long as `self` is.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A netlink connection whose socket lives inside this namespace.
    ///
    /// A socket belongs to the namespace of the thread that creates it, so it is created
    /// on a short-lived thread that enters the namespace; the calling thread's namespace
    /// never changes. The connection is driven by the current tokio runtime.
    pub fn netlink(&self) -> Result<Netlink> {
        let object = || self.path.display().to_string();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            NetlinkError::new(
                "open netlink in netns",
                object(),
                "no tokio runtime is running",
            )
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _guard = runtime.enter();
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| NetlinkError::errno("enter netns", object(), e))?;
                    Netlink::connect(&runtime)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(NetlinkError::new(
                        "open netlink in netns",
                        object(),
                        "helper thread panicked",
                    ))
                })
        })
    }
}

/// iproute2's rules for a name under /run/netns: a single path component.
fn validate_netns_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NetlinkError::new(
            "create netns",
            name,
            "invalid namespace name: it must be a single path component (no '/', not '.' or '..')",
        ));
    }
    Ok(())
}

/// Make /run/netns exist and be a shared mount point, as `ip netns add` does: bind
/// mounts of namespaces made later then propagate into the mount namespaces that
/// `ip netns exec` creates, and an unmount here unmounts them there too.
fn prepare_named_dir(dir: &Path) -> Result<()> {
    let _lock = NAMED_DIR_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let object = || dir.display().to_string();
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| NetlinkError::new("create directory", object(), io_detail(&e)))?;
    let mut made_mount_point = false;
    loop {
        match mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet; make it one by binding it onto itself.
            Err(Errno::EINVAL) if !made_mount_point => {
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| NetlinkError::errno("bind mount", object(), e))?;
                made_mount_point = true;
            }
            Err(e) => return Err(NetlinkError::errno("make shared mount", object(), e)),
        }
    }
}

/// Create a namespace on a throwaway thread and bind it onto `path`, which keeps it
/// alive after the thread exits.
fn bind_new_netns(path: &Path) -> Result<()> {
    let object = || path.display().to_string();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetlinkError::errno("unshare netns for", object(), e))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| NetlinkError::errno("bind netns onto", object(), e))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetlinkError::new(
                    "create netns",
                    object(),
                    "helper thread panicked",
                ))
            })
    })
}

/// Ok when `fd` is a network namespace; otherwise what it is instead.
fn check_is_netns(fd: BorrowedFd<'_>) -> std::result::Result<(), String> {
    let fs = fstatfs(fd).map_err(|e| e.desc().to_string())?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(
            "not a namespace file: expected a /run/netns/NAME bind mount or /proc/PID/ns/net"
                .into(),
        );
    }
    // SAFETY: NS_GET_NSTYPE (Linux 4.11) takes no argument and only reads the fd.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    match nstype {
        -1 => Err(format!("query namespace type: {}", Errno::last().desc())),
        t if t == libc::CLONE_NEWNET => Ok(()),
        _ => Err("a namespace, but not a network namespace".into()),
    }
}

/// An io::Error without Rust's "(os error N)" suffix.
fn io_detail(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}
