//! Networks and endpoints as the datapath sees them.

use crate::{assert_size, pod};

/// The network isolates its containers from each other (`--icc false`).
pub const NET_F_NO_ICC: u32 = 1 << 0;
/// No traffic to or from outside the subnet (`--internal`).
pub const NET_F_INTERNAL: u32 = 1 << 1;
/// Masquerade what leaves through the uplink (`--masquerade`, on by default).
pub const NET_F_MASQUERADE: u32 = 1 << 2;

/// One network, keyed by network id in [`crate::maps::NETWORKS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    pub subnet_be: u32,
    pub mask_be: u32,
    pub gateway_be: u32,
    /// The Linux bridge of the network.
    pub bridge_ifindex: u32,
    /// `NET_F_*` bits.
    pub flags: u32,
    /// Source MAC for frames netd itself forwards into the network (the bridge's).
    pub bridge_mac: [u8; 6],
    /// The network's MTU: larger packets take the host stack (which fragments or sends
    /// "fragmentation needed") instead of netd's direct forwarding.
    pub mtu: u16,
}
assert_size!(NetworkInfo, 28);

/// One attachment (veth) of an endpoint, keyed by the host-side veth ifindex in
/// [`crate::maps::ENDPOINTS`]. The network's fields are copied in so that the veth
/// programs need one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ip_be: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    pub network_id: u32,
    /// `NET_F_*` bits of the network.
    pub net_flags: u32,
    pub subnet_be: u32,
    pub mask_be: u32,
    pub gateway_be: u32,
}
assert_size!(EndpointInfo, 32);

/// Where an endpoint address lives, keyed by the address in
/// [`crate::maps::ENDPOINTS_BY_IP`]: used to forward translated packets straight to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointRef {
    pub host_ifindex: u32,
    pub network_id: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
assert_size!(EndpointRef, 16);

/// The address is one of the uplink's.
pub const LOCAL_F_UPLINK: u32 = 1 << 0;
/// The address is a network's gateway (a bridge address).
pub const LOCAL_F_GATEWAY: u32 = 1 << 1;

pod!(NetworkInfo, EndpointInfo, EndpointRef);

/// Whether `addr_be` lies in the subnet `subnet_be`/`mask_be` (all in network order).
#[inline(always)]
pub const fn in_subnet(addr_be: u32, subnet_be: u32, mask_be: u32) -> bool {
    addr_be & mask_be == subnet_be
}
