//! The dataplane: what turns the desired state into packet handling in the kernel.
//!
//! The control plane talks to a [`Dataplane`] only, through the plain views below; it does
//! not know whether eBPF maps or iptables rules carry the traffic. Every method is
//! idempotent: adding what is already there updates it, removing what is gone succeeds.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::{Attachment, Network, Publication};

pub mod ebpf;
pub mod iptables;
pub(crate) mod nlsync;
mod noop;

pub use noop::NoopDataplane;

/// Which dataplane implementation the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneKind {
    Ebpf,
    Iptables,
}

/// The host's interface towards the outside world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkView {
    pub ifindex: u32,
    pub ifname: String,
    pub mac: [u8; 6],
    /// The uplink's IPv4 addresses; the first is the masquerade source unless
    /// `snat_ip` is set.
    pub addrs: Vec<Ipv4Addr>,
    pub snat_ip: Option<Ipv4Addr>,
    /// The uplink is one end of a veth (or netkit) pair whose other end is in another
    /// namespace, so a packet for the wan may be handed to that end's ingress directly.
    pub peer_ingress: bool,
}

/// A network together with its kernel objects.
#[derive(Debug, Clone, Copy)]
pub struct NetworkView<'a> {
    pub network: &'a Network,
    pub bridge_ifindex: u32,
}

/// One attachment of an endpoint (one veth pair).
#[derive(Debug, Clone, Copy)]
pub struct EndpointView<'a> {
    pub endpoint: &'a str,
    pub network: &'a Network,
    pub attachment: &'a Attachment,
    /// The host end of the veth pair.
    pub host_ifindex: u32,
    pub bridge_ifindex: u32,
}

/// A publication with the address it forwards to.
#[derive(Debug, Clone, Copy)]
pub struct PublicationView<'a> {
    pub publication: &'a Publication,
    pub network: &'a Network,
    pub container_ip: Ipv4Addr,
}

/// Everything at once, for reconciliation after a restart.
#[derive(Debug, Clone, Default)]
pub struct SyncView<'a> {
    pub networks: Vec<NetworkView<'a>>,
    pub endpoints: Vec<EndpointView<'a>>,
    pub publications: Vec<PublicationView<'a>>,
}

/// Packet counters of one interface the dataplane is attached to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    pub ifindex: u32,
    /// Filled in by the daemon, which knows the names.
    pub ifname: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Traffic through one publication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// The publication as `netd port ls` prints it.
    pub publication: String,
    pub packets: u64,
    pub bytes: u64,
}

/// How full a table is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOccupancy {
    pub name: String,
    pub entries: u64,
    pub capacity: u64,
}

/// Drops of one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounter {
    pub reason: String,
    pub packets: u64,
}

/// Everything `netd stats` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStats {
    pub dataplane: String,
    pub interfaces: Vec<InterfaceCounters>,
    pub drops: Vec<DropCounter>,
    pub ports: Vec<PortCounters>,
    pub tables: Vec<TableOccupancy>,
}

/// One tracked flow, as `netd conntrack ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub proto: String,
    /// The tuple as the initiator sent it: `src:port -> dst:port`.
    pub original: String,
    /// The tuple after translation, as the peer sees it.
    pub translated: String,
    pub state: String,
    pub age_secs: u64,
    pub expires_in_secs: u64,
}

/// A dataplane failure: what was being done, on what object, and why.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {detail}")]
pub struct DataplaneError {
    pub context: String,
    pub detail: String,
    /// A table is full; the request is a conflict the user can resolve by removing
    /// something, not a bug.
    pub full: bool,
}

impl DataplaneError {
    pub fn new(context: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        DataplaneError {
            context: context.into(),
            detail: detail.to_string(),
            full: false,
        }
    }
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// The kernel half of netd. One implementation programs eBPF maps, another iptables
/// rules; both are driven from the same desired state.
pub trait Dataplane: Send + Sync {
    fn kind(&self) -> DataplaneKind;
    /// Attach to the uplink (called once at start, before anything else).
    fn set_uplink(&mut self, uplink: &UplinkView) -> Result<()>;
    fn add_network(&mut self, net: &NetworkView<'_>) -> Result<()>;
    fn remove_network(&mut self, net: &NetworkView<'_>) -> Result<()>;
    fn add_endpoint(&mut self, ep: &EndpointView<'_>) -> Result<()>;
    fn remove_endpoint(&mut self, ep: &EndpointView<'_>) -> Result<()>;
    fn publish(&mut self, p: &PublicationView<'_>) -> Result<()>;
    fn unpublish(&mut self, p: &PublicationView<'_>) -> Result<()>;
    /// Make the kernel state exactly `all`: add what is missing, remove what is not
    /// desired, leave alone what matches (so established flows survive a restart).
    fn sync(&mut self, all: &SyncView<'_>) -> Result<()>;
    fn stats(&self) -> Result<DataplaneStats>;
    fn conntrack(&self) -> Result<Vec<Flow>>;
    /// Remove flows that involve any of `ips` (all flows when `None`); returns how many.
    fn flush_conntrack(&mut self, ips: Option<&[Ipv4Addr]>) -> Result<u64>;
}
