//! Kernel objects over rtnetlink: links (bridges, veth pairs), addresses, routes and
//! network namespaces. Nothing here shells out to `ip`.
//!
//! A [`Netlink`] is bound to the network namespace its socket was opened in; use
//! [`Netns::netlink`] to configure the inside of a container namespace.
//!
//! Layout: [`link`] (links, bridges), [`addr`] (addresses), [`route`] (routes),
//! [`endpoint`] (veth attachment with rollback), [`netns`] (namespaces and the
//! per-namespace sysctl).

mod addr;
mod endpoint;
mod link;
mod netns;
mod route;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nix::errno::Errno;

use crate::model::MacAddr;

pub use netns::{Netns, enable_ip_forward};

/// A netlink failure, naming the object and the operation.
#[derive(Debug, thiserror::Error)]
#[error("{op} {object}: {detail}")]
pub struct NetlinkError {
    /// What was being done: "create bridge", "add address", "enter netns", ...
    pub op: &'static str,
    /// What it was done to: an interface, an address, a namespace path.
    pub object: String,
    /// Why it failed, usually the kernel's errno as text.
    pub detail: String,
}

/// Result of the netlink layer.
pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

impl NetlinkError {
    /// An error with a free-form detail.
    pub(crate) fn new(
        op: &'static str,
        object: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        NetlinkError {
            op,
            object: object.into(),
            detail: detail.into(),
        }
    }

    /// An error from an errno returned by the kernel.
    pub(crate) fn errno(op: &'static str, object: impl Into<String>, errno: Errno) -> Self {
        Self::new(op, object, describe_errno(errno))
    }

    /// An error from an rtnetlink request.
    pub(crate) fn rtnl(op: &'static str, object: impl Into<String>, err: rtnetlink::Error) -> Self {
        let detail = match errno_of(&err) {
            Some(errno) => describe_errno(errno),
            None => err.to_string(),
        };
        Self::new(op, object, detail)
    }
}

/// The errno of a kernel NACK, if `err` is one.
pub(crate) fn errno_of(err: &rtnetlink::Error) -> Option<Errno> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => {
            msg.code.map(|code| Errno::from_raw(code.get().abs()))
        }
        _ => None,
    }
}

/// strerror, with the two errnos users hit most spelled out in netd's terms.
fn describe_errno(errno: Errno) -> String {
    match errno {
        Errno::EEXIST => "File exists (an object with this name or address already exists)".into(),
        Errno::ENODEV => "No such device (the interface does not exist)".into(),
        other => other.desc().to_string(),
    }
}

/// What netd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    /// The bridge this link is enslaved to.
    pub master: Option<u32>,
    /// "bridge", "veth", ... when the kernel reports a kind.
    pub kind: Option<String>,
    /// For a veth or netkit: the namespace id of its peer, when the peer lives in
    /// another namespace.
    pub peer_netnsid: Option<i32>,
}

/// Everything needed to plug a namespace into a bridge with one veth pair.
#[derive(Debug, Clone, Copy)]
pub struct AttachRequest<'a> {
    pub netns: &'a Netns,
    pub bridge_ifindex: u32,
    /// Name of the host end (enslaved to the bridge).
    pub host_ifname: &'a str,
    /// Name of the end inside the namespace (eth0, eth1, ...).
    pub ifname: &'a str,
    pub mac: MacAddr,
    /// The endpoint's address with the network's prefix length.
    pub addr: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Install `default via gateway` in the namespace (first attachment only).
    pub default_route: bool,
    pub mtu: u32,
}

/// A handle on rtnetlink in one network namespace.
///
/// The connection task runs on the tokio runtime that was current when the handle was
/// made, and ends when the last clone of the handle is dropped.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// A connection in the calling thread's network namespace. Needs a tokio runtime.
    pub fn new() -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            NetlinkError::new("open", "rtnetlink socket", "no tokio runtime is running")
        })?;
        Self::connect(&runtime)
    }

    /// Open the socket in the calling thread's namespace and drive it on `runtime`.
    /// The caller must have entered `runtime` (the socket registers with its reactor).
    fn connect(runtime: &tokio::runtime::Handle) -> Result<Self> {
        let (connection, handle, _unsolicited) = rtnetlink::new_connection()
            .map_err(|e| NetlinkError::new("open", "rtnetlink socket", e.to_string()))?;
        runtime.spawn(connection);
        Ok(Netlink { handle })
    }
}

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Reject names the kernel would refuse, with a message that says why.
pub(crate) fn validate_ifname(op: &'static str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(NetlinkError::new(
            op,
            name,
            format!("invalid interface name: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad(&format!("longer than {MAX_IFNAME_LEN} bytes"));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':', '%'])
        || name.contains(char::is_whitespace)
    {
        return bad("it must not be '.' or '..' nor contain '/', ':', '%' or whitespace");
    }
    Ok(())
}
