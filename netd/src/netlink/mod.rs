//! Kernel objects over rtnetlink: links (bridges, veth pairs), addresses, routes and
//! network namespaces. Nothing here shells out to `ip`.
//!
//! A [`Netlink`] is bound to the network namespace its socket was opened in; use
//! [`Netns::netlink`] to configure the inside of a container namespace.

use std::{
    net::Ipv4Addr,
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;

use crate::model::MacAddr;

/// A netlink failure, naming the object and the operation.
#[derive(Debug, thiserror::Error)]
#[error("{op} {object}: {detail}")]
pub struct NetlinkError {
    pub op: &'static str,
    pub object: String,
    pub detail: String,
}

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

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
#[derive(Debug)]
pub struct Netlink {
    _private: (),
}

impl Netlink {
    /// A connection in the calling thread's network namespace. Needs a tokio runtime.
    pub fn new() -> Result<Self> {
        todo!("netlink helper")
    }
    pub async fn link_by_name(&self, _name: &str) -> Result<Option<LinkInfo>> {
        todo!()
    }
    pub async fn link_by_index(&self, _index: u32) -> Result<Option<LinkInfo>> {
        todo!()
    }
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        todo!()
    }
    pub async fn ipv4_addrs(&self, _index: u32) -> Result<Vec<Ipv4Net>> {
        todo!()
    }
    /// The interface of the IPv4 default route, if there is one.
    pub async fn default_route_ifindex(&self) -> Result<Option<u32>> {
        todo!()
    }
    /// Create the bridge if missing, and make sure it has `gateway` (with the subnet's
    /// prefix), `mtu`, and is up. Idempotent. Returns its ifindex.
    pub async fn ensure_bridge(&self, _name: &str, _gateway: Ipv4Net, _mtu: u32) -> Result<u32> {
        todo!()
    }
    /// Delete a link; `Ok(false)` when it did not exist.
    pub async fn delete_link(&self, _name: &str) -> Result<bool> {
        todo!()
    }
    /// Create the veth pair, enslave the host end, move the other end into the
    /// namespace and configure it (name, MAC, address, MTU, up, lo up, default route).
    /// On failure nothing is left behind. Returns the host end's ifindex.
    pub async fn attach_endpoint(&self, _req: &AttachRequest<'_>) -> Result<u32> {
        todo!()
    }
}

/// Turn IPv4 forwarding on in the calling thread's network namespace.
pub fn enable_ip_forward() -> Result<()> {
    todo!()
}

/// A network namespace held open by a file descriptor.
#[derive(Debug)]
pub struct Netns {
    _path: PathBuf,
}

impl Netns {
    /// Directory of named namespaces, as iproute2 uses it.
    pub const NAMED_DIR: &'static str = "/run/netns";

    /// Create a new namespace bound at /run/netns/NAME so that `ip netns exec NAME` works.
    /// Fails if the name is taken.
    pub fn create_named(_name: &str) -> Result<Netns> {
        todo!()
    }
    /// Open an existing namespace (a bind mount, or /proc/PID/ns/net).
    pub fn open(_path: &Path) -> Result<Netns> {
        todo!()
    }
    /// Unmount and remove a namespace bound by [`Netns::create_named`]; succeeds if it is
    /// already gone.
    pub fn remove_named(_path: &Path) -> Result<()> {
        todo!()
    }
    /// Whether `path` holds a live network namespace.
    pub fn exists(_path: &Path) -> bool {
        todo!()
    }
    /// Move the calling thread into the namespace at `path` (for `netd daemon --netns`,
    /// before the runtime starts).
    pub fn enter(_path: &Path) -> Result<()> {
        todo!()
    }
    pub fn path(&self) -> &Path {
        &self._path
    }
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        todo!()
    }
    /// A netlink connection whose socket lives inside this namespace.
    pub fn netlink(&self) -> Result<Netlink> {
        todo!()
    }
}
