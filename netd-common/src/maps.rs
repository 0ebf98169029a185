//! Names of every map, in one place, and the fixed capacities that are not configured.
//!
//! The eBPF side declares its maps under these names; userspace opens, sizes and pins
//! them by the same names (the pin file under the bpffs directory is the name).

/// Per-interface packet and byte counters ([`crate::stats::IfaceCounters`], per CPU),
/// keyed by ifindex.
pub const IFACE_STATS: &str = "NETD_IFACE_STATS";
/// Drops by reason (per-CPU `u64`), indexed by [`crate::stats::DropReason`].
pub const DROPS: &str = "NETD_DROPS";
/// Global settings ([`crate::nat::DataplaneConfig`]), one entry at index 0.
pub const CONFIG: &str = "NETD_CONFIG";
/// Endpoints ([`crate::endpoint::EndpointInfo`]) keyed by the host-side veth ifindex.
pub const ENDPOINTS: &str = "NETD_ENDPOINTS";
/// Endpoints ([`crate::endpoint::EndpointRef`]) keyed by their IPv4 address (be).
pub const ENDPOINTS_BY_IP: &str = "NETD_EP_BY_IP";
/// Networks ([`crate::endpoint::NetworkInfo`]) keyed by network id.
pub const NETWORKS: &str = "NETD_NETWORKS";
/// Longest-prefix match of every network's subnet to its network id.
pub const SUBNETS: &str = "NETD_SUBNETS";
/// The host's own addresses (be) that published ports listen on.
pub const LOCAL_ADDRS: &str = "NETD_LOCAL_ADDRS";
/// Single published ports ([`crate::ports::PortKey`] -> [`crate::ports::PortTarget`]).
pub const PORTS: &str = "NETD_PORTS";
/// Published port ranges, one entry per range ([`crate::ports::PortRangeEntry`]).
pub const PORT_RANGES: &str = "NETD_PORT_RANGES";
/// Packets and bytes per publication ([`crate::stats::PortStats`], per CPU), indexed by
/// publication id.
pub const PORT_STATS: &str = "NETD_PORT_STATS";
/// Connection tracking ([`crate::conntrack::FlowKey`] -> [`crate::conntrack::CtEntry`]).
pub const CONNTRACK: &str = "NETD_CT";
/// Address translations, two entries per translated flow
/// ([`crate::conntrack::FlowKey`] -> [`crate::nat::NatEntry`]).
pub const NAT: &str = "NETD_NAT";
/// Ports of first fragments, so later fragments of a translated datagram can follow it.
pub const FRAGS: &str = "NETD_FRAGS";
/// Flows that host processes opened to containers, keyed by the tuple of the container's
/// replies ([`crate::conntrack::FlowKey`] -> [`crate::conntrack::HostFlow`]), so that a
/// reply to a host port that happens to be published is not taken for a new hairpin flow.
pub const HOST_FLOWS: &str = "NETD_HOST_FLOWS";

/// Interfaces that can carry counters at once.
pub const MAX_INTERFACES: u32 = 8192;
/// Endpoints (veths) at once.
pub const MAX_ENDPOINTS: u32 = 8192;
/// Networks at once.
pub const MAX_NETWORKS: u32 = 1024;
/// Host addresses at once.
pub const MAX_LOCAL_ADDRS: u32 = 1024;
/// Single-port publications at once.
pub const MAX_PORTS: u32 = 65536;
/// Port-range publications at once; ranges are scanned linearly for new flows only.
pub const MAX_PORT_RANGES: u32 = 64;
/// Publication ids (the size of the per-publication counter array); id 0 means "none".
pub const MAX_PUBLICATIONS: u32 = 65536 + MAX_PORT_RANGES;
/// Fragmented datagrams tracked at once.
pub const MAX_FRAGS: u32 = 8192;
/// Host-originated UDP flows remembered at once (an LRU: the least recently used go
/// first, and an entry idle for [`crate::conntrack::UDP_TIMEOUT`] no longer counts).
pub const MAX_HOST_FLOWS: u32 = 16384;

/// Bumped whenever a map's key or value layout changes meaning without changing size, so
/// that a restarted daemon does not reuse pinned maps it would misread.
pub const LAYOUT_VERSION: u32 = 2;
