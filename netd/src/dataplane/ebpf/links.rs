//! Attaching the TC programs.
//!
//! The uplink's programs hang on tcx links pinned under bpffs. A pinned link keeps its
//! program attached while the daemon is down. On the next start the new program replaces
//! the old one in the same link atomically (`BPF_LINK_UPDATE`), so no packet ever passes
//! an interface untranslated or translated twice. A pin whose interface is gone (the link
//! is defunct, the update fails with ENOLINK) is replaced by a new link.
//!
//! A container's veth gets its programs as direct-action cls_bpf filters on a clsact
//! qdisc instead (the `filters` module). Every tcx attach and detach waits for a full RCU grace period under the
//! rtnl lock (`synchronize_rcu` in the kernel's tcx code): two of them per veth made
//! creating an endpoint ~35 ms slower than Docker's, and held up every other netlink
//! user meanwhile. A filter swaps its program in after an expedited grace period at most.
//! Filters live as long as their interface, with or without the daemon, and a restarted
//! daemon replaces their program in place (same priority and handle), as atomically as a
//! link update.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
    sys::SyscallError,
};
use tracing::debug;

use super::{bpffs::LINKS_DIR, netdev::ifname, sys};
use crate::dataplane::DataplaneError;

/// What an interface is to netd; part of the pin name, so that cleanup and sync can tell
/// uplink links from endpoint links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Uplink,
    Veth,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Uplink => "uplink",
            Role::Veth => "veth",
        }
    }
}

pub(super) fn dir_name(t: TcAttachType) -> &'static str {
    match t {
        TcAttachType::Ingress => "ingress",
        _ => "egress",
    }
}

/// The pin path of the link of `role` on `ifindex` in direction `t`.
pub fn pin_path(bpffs: &Path, role: Role, ifindex: u32, t: TcAttachType) -> PathBuf {
    bpffs
        .join(LINKS_DIR)
        .join(format!("{}-{ifindex}-{}", role.prefix(), dir_name(t)))
}

/// The ifindexes that have pinned links of `role`.
pub fn pinned_ifindexes(bpffs: &Path, role: Role) -> Result<Vec<u32>, DataplaneError> {
    let dir = bpffs.join(LINKS_DIR);
    let entries = fs::read_dir(&dir)
        .map_err(|e| DataplaneError::new(format!("listing {}", dir.display()), e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(role.prefix()))
            .and_then(|n| n.strip_prefix('-'))
        else {
            continue;
        };
        if let Some(idx) = rest.split('-').next().and_then(|i| i.parse().ok())
            && !out.contains(&idx)
        {
            out.push(idx);
        }
    }
    Ok(out)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or_else(|| {
            DataplaneError::new(
                "attaching",
                format!("program {name} is missing from the object"),
            )
        })?
        .try_into()
        .map_err(|e| DataplaneError::new(format!("attaching program {name}"), e))
}

/// Replaces the program in an existing pinned link. `Ok(false)` when the pin is stale
/// (its interface is gone) and has been removed.
fn replace_in_pinned(prog: &mut SchedClassifier, path: &Path) -> Result<bool, DataplaneError> {
    let pinned = match PinnedLink::from_pin(path) {
        Ok(p) => p,
        Err(e) => {
            debug!(pin = %path.display(), error = %e, "unreadable link pin; replacing it");
            remove_pin(path)?;
            return Ok(false);
        }
    };
    let link = match SchedClassifierLink::try_from(FdLink::from(pinned)) {
        Ok(l) => l,
        Err(e) => {
            debug!(pin = %path.display(), error = %e, "not a tcx link; replacing it");
            remove_pin(path)?;
            return Ok(false);
        }
    };
    match prog.attach_to_link(link) {
        Ok(id) => {
            // The pin keeps the link; our fd may go.
            let _link = prog
                .take_link(id)
                .map_err(|e| DataplaneError::new(format!("taking link {}", path.display()), e))?;
            Ok(true)
        }
        // The interface is gone (a veth recreated under the same index would be another
        // device): the link is defunct.
        Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::ENOLINK) =>
        {
            debug!(pin = %path.display(), "defunct link pin; replacing it");
            remove_pin(path)?;
            Ok(false)
        }
        // Anything else leaves the working link alone rather than detach it.
        Err(e) => Err(DataplaneError::new(
            format!(
                "replacing the program in the link pinned at {}",
                path.display()
            ),
            format!("{e:#}"),
        )),
    }
}

/// Attaches program `prog_name` to `ifindex` in direction `t`, or replaces the program of
/// the pinned link that is already there.
pub fn attach(
    ebpf: &mut Ebpf,
    bpffs: &Path,
    role: Role,
    ifindex: u32,
    t: TcAttachType,
    prog_name: &str,
) -> Result<(), DataplaneError> {
    let path = pin_path(bpffs, role, ifindex, t);
    let prog = program(ebpf, prog_name)?;
    if path.exists() && replace_in_pinned(prog, &path)? {
        return Ok(());
    }
    let name = ifname(ifindex)?;
    let ctx = || format!("attaching {prog_name} to {name} ({})", dir_name(t));
    let id = prog
        .attach_with_options(&name, t, TcAttachOptions::TcxOrder(LinkOrder::default()))
        .map_err(|e| DataplaneError::new(ctx(), format!("{e:#}")))?;
    let link = prog
        .take_link(id)
        .map_err(|e| DataplaneError::new(ctx(), e))?;
    pin_link(link, &path, &format!("the link of {name}"), ctx)?;
    debug!(ifname = %name, ifindex, dir = dir_name(t), program = prog_name, "attached");
    Ok(())
}

/// Pins `link`, just taken from its program, at `path`, so that it stays attached after
/// this process. `what` names the link in the error; `ctx` says what was being attached.
pub fn pin_link<L>(
    link: L,
    path: &Path,
    what: &str,
    ctx: impl Fn() -> String,
) -> Result<(), DataplaneError>
where
    L: TryInto<FdLink>,
    L::Error: std::fmt::Display,
{
    let link: FdLink = link
        .try_into()
        .map_err(|e| DataplaneError::new(ctx(), format!("{e}")))?;
    link.pin(path)
        .map_err(|e| DataplaneError::new(format!("pinning {what} at {}", path.display()), e))?;
    Ok(())
}

fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::new(
            format!("removing link pin {}", path.display()),
            e,
        )),
    }
}

/// Detaches the link pinned at `path` at once and removes the pin. A link whose
/// interface is already gone is just unpinned.
pub fn detach_pinned(path: &Path) -> Result<(), DataplaneError> {
    match sys::obj_get(path) {
        Ok(fd) => {
            if let Err(e) = sys::link_detach(&fd)
                && e.raw_os_error() != Some(libc::ENOLINK)
            {
                return Err(DataplaneError::new(
                    format!("detaching the link pinned at {}", path.display()),
                    e,
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => debug!(pin = %path.display(), error = %e, "unreadable link pin; removing it"),
    }
    remove_pin(path)
}

/// Detaches both directions of `role` on `ifindex`.
pub fn detach(bpffs: &Path, role: Role, ifindex: u32) -> Result<(), DataplaneError> {
    detach_pinned(&pin_path(bpffs, role, ifindex, TcAttachType::Ingress))?;
    detach_pinned(&pin_path(bpffs, role, ifindex, TcAttachType::Egress))
}
