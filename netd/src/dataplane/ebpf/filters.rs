//! netd's programs on a container's veth: direct-action cls_bpf filters on a clsact
//! qdisc, at one fixed priority and handle (the `links` module says why not tcx).
//!
//! The qdisc and both filters go to the kernel in one netlink datagram, and both filters
//! of a veth leave in another: creating an endpoint costs one round trip here, as
//! Docker's bridge-port setting does, where one socket per qdisc or filter (and a dump to
//! find a filter again before deleting it) cost four to six. A filter is created without
//! `NLM_F_EXCL`, so a restarted daemon's request replaces the program of the filter the
//! previous run left, in place and atomically.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{
    Ebpf,
    programs::{TcAttachType, tc},
};
use rtnetlink::{
    packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NetlinkMessage},
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcHandle, TcHeader, TcMessage, TcOption},
    },
};
use tracing::debug;

use super::{links::dir_name, netdev::ifname};
use crate::dataplane::{DataplaneError, nlsync};

/// The priority and handle of netd's filter in each direction.
const PRIORITY: u16 = 1;
const HANDLE: u32 = 0x4e44;
/// From linux/pkt_cls.h.
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const ETH_P_ALL: u16 = 0x0003;

/// One program to attach: its fd and its name (which `--cleanup` looks for).
struct Prog<'a> {
    fd: BorrowedFd<'a>,
    name: &'a str,
}

fn prog<'a>(ebpf: &'a Ebpf, name: &'a str) -> Result<Prog<'a>, DataplaneError> {
    let fd = ebpf
        .program(name)
        .ok_or_else(|| {
            DataplaneError::new(
                "attaching",
                format!("program {name} is missing from the object"),
            )
        })?
        .fd()
        .map_err(|e| DataplaneError::new(format!("attaching program {name}"), e))?;
    Ok(Prog {
        fd: fd.as_fd(),
        name,
    })
}

/// The clsact qdisc's pseudo-class for direction `t`.
fn parent(t: TcAttachType) -> TcHandle {
    TcHandle {
        major: u16::MAX,
        minor: match t {
            TcAttachType::Ingress => TcHandle::MIN_INGRESS,
            _ => TcHandle::MIN_EGRESS,
        },
    }
}

fn filter_header(ifindex: u32, t: TcAttachType) -> TcHeader {
    TcHeader {
        index: ifindex as i32,
        handle: HANDLE.into(),
        parent: parent(t),
        // Priority in the upper half, protocol (network byte order) in the lower.
        info: (u32::from(PRIORITY) << 16) | u32::from(ETH_P_ALL.to_be()),
        ..Default::default()
    }
}

fn message(msg: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = flags;
    m
}

fn add_clsact(ifindex: u32) -> NetlinkMessage<RouteNetlinkMessage> {
    let header = TcHeader {
        index: ifindex as i32,
        handle: TcHandle {
            major: u16::MAX,
            minor: 0,
        },
        parent: TcHandle::CLSACT,
        ..Default::default()
    };
    let qdisc = TcMessage::from_parts(header, vec![TcAttribute::Kind("clsact".into())]);
    message(
        RouteNetlinkMessage::NewQueueDiscipline(qdisc),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

fn add_filter(ifindex: u32, t: TcAttachType, p: &Prog<'_>) -> NetlinkMessage<RouteNetlinkMessage> {
    let fd = p.fd.as_raw_fd() as u32;
    let mut name = p.name.as_bytes().to_vec();
    name.push(0);
    let options = vec![
        TcOption::Other(DefaultNla::new(TCA_BPF_FD, fd.to_ne_bytes().to_vec())),
        TcOption::Other(DefaultNla::new(TCA_BPF_NAME, name)),
        TcOption::Other(DefaultNla::new(
            TCA_BPF_FLAGS,
            TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes().to_vec(),
        )),
    ];
    let filter = TcMessage::from_parts(
        filter_header(ifindex, t),
        vec![
            TcAttribute::Kind("bpf".into()),
            TcAttribute::Options(options),
        ],
    );
    message(RouteNetlinkMessage::NewTrafficFilter(filter), NLM_F_CREATE)
}

fn del_filter(ifindex: u32, t: TcAttachType) -> NetlinkMessage<RouteNetlinkMessage> {
    let filter = TcMessage::from_parts(
        filter_header(ifindex, t),
        vec![TcAttribute::Kind("bpf".into())],
    );
    message(RouteNetlinkMessage::DelTrafficFilter(filter), 0)
}

fn which(ifindex: u32) -> String {
    ifname(ifindex).map_or_else(
        |_| format!("interface {ifindex}"),
        |n| format!("{n} ({ifindex})"),
    )
}

/// Attaches programs `ingress` and `egress` to veth `ifindex` as netd's filters (adding
/// the clsact qdisc if it is missing), or replaces the programs of the filters there.
pub fn attach(
    ebpf: &Ebpf,
    ifindex: u32,
    ingress: &str,
    egress: &str,
) -> Result<(), DataplaneError> {
    let progs = [
        (TcAttachType::Ingress, prog(ebpf, ingress)?),
        (TcAttachType::Egress, prog(ebpf, egress)?),
    ];
    let mut msgs = vec![add_clsact(ifindex)];
    msgs.extend(progs.iter().map(|(t, p)| add_filter(ifindex, *t, p)));
    let results = nlsync::route_batch(msgs).map_err(|e| {
        DataplaneError::new(format!("attaching netd's filters to {}", which(ifindex)), e)
    })?;
    let mut results = results.into_iter();
    match results.next() {
        Some(Ok(())) | None => {}
        Some(Err(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Some(Err(e)) => {
            return Err(DataplaneError::new(
                format!("adding a clsact qdisc to {}", which(ifindex)),
                e,
            ));
        }
    }
    for ((t, p), result) in progs.iter().zip(results) {
        result.map_err(|e| {
            DataplaneError::new(
                format!(
                    "attaching {} to {} ({})",
                    p.name,
                    which(ifindex),
                    dir_name(*t)
                ),
                e,
            )
        })?;
    }
    debug!(ifindex, ingress, egress, "filters attached");
    Ok(())
}

/// Deletes netd's filters from veth `ifindex`. An interface that is gone took them along.
pub fn detach(ifindex: u32) -> Result<(), DataplaneError> {
    let dirs = [TcAttachType::Ingress, TcAttachType::Egress];
    let msgs = dirs.iter().map(|t| del_filter(ifindex, *t)).collect();
    let results = nlsync::route_batch(msgs).map_err(|e| {
        DataplaneError::new(
            format!("detaching netd's filters from {}", which(ifindex)),
            e,
        )
    })?;
    for (t, result) in dirs.iter().zip(results) {
        match result {
            Ok(()) => {}
            // No such filter, qdisc or interface (any more): nothing to detach.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)
                ) => {}
            Err(e) => {
                return Err(DataplaneError::new(
                    format!(
                        "detaching netd's filter from {} ({})",
                        which(ifindex),
                        dir_name(*t)
                    ),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// Deletes netd's filters (program `ingress` on ingress, `egress` on egress) from every
/// interface of this namespace (`netd daemon --cleanup`). Returns how many interfaces
/// had one.
pub fn detach_all(ingress: &str, egress: &str) -> Result<usize, DataplaneError> {
    let ifaces = nix::net::if_::if_nameindex()
        .map_err(|e| DataplaneError::new("listing the interfaces", e))?;
    let mut found = 0;
    for iface in ifaces.iter() {
        let ifname = iface.name().to_string_lossy();
        let mut had = false;
        for (t, prog) in [
            (TcAttachType::Ingress, ingress),
            (TcAttachType::Egress, egress),
        ] {
            match tc::qdisc_detach_program(&ifname, t, prog) {
                Ok(()) => had = true,
                Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
                // No clsact qdisc on this interface.
                Err(tc::TcError::NetlinkError(e))
                    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                Err(e) => {
                    return Err(DataplaneError::new(
                        format!("detaching {prog} from {ifname} ({})", dir_name(t)),
                        e,
                    ));
                }
            }
        }
        found += usize::from(had);
    }
    Ok(found)
}
