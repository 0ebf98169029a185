//! Address translation entries and the dataplane's global settings.

use crate::{assert_size, conntrack::FlowKey, pod};

/// The entry translates packets of the original direction.
pub const NAT_DIR_ORIGINAL: u8 = 0;
/// The entry translates packets of the reply direction.
pub const NAT_DIR_REPLY: u8 = 1;

/// Both ends of the flow are containers; netd forwards it itself (hairpin through a
/// published port), straight from one veth to the other.
pub const NAT_F_HAIRPIN: u8 = 1 << 0;

/// One half of a translation, keyed by the tuple a packet has on the wire before
/// translation in [`crate::maps::NAT`]. A translated flow has two: the original
/// direction `O -> T` and the reply direction `rev(T) -> rev(O)`. Each half names its
/// partner: the partner's key is `rewrite.reversed()` and its rewrite is the reversed key,
/// so a missing half can be restored from the other.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEntry {
    /// The tuple the packet gets.
    pub rewrite: FlowKey,
    pub created_ns: u64,
    /// `NAT_DIR_*`.
    pub dir: u8,
    /// `NAT_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Publication of the flow (0: none), so a restored conntrack entry keeps counting.
    pub pub_id: u32,
}
assert_size!(NatEntry, 32);

/// Global settings, index 0 of [`crate::maps::CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// [`crate::maps::LAYOUT_VERSION`] of the programs that created the maps.
    pub layout_version: u32,
    pub uplink_ifindex: u32,
    /// Masquerade source address; 0 until the uplink is known (nothing is masqueraded).
    pub snat_ip_be: u32,
    /// Source ports for masquerade when the original one is taken (host order,
    /// inclusive).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// `UPLINK_F_*` bits.
    pub uplink_flags: u32,
}
assert_size!(DataplaneConfig, 20);

/// The uplink is a veth (or netkit) whose peer is in another namespace: the fast path
/// hands packets to the peer's ingress (`bpf_redirect_peer`) instead of transmitting
/// them on the uplink, which would queue them once more on the way.
pub const UPLINK_F_PEER: u32 = 1;

/// Key of [`crate::maps::FRAGS`]: a fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub id_be: u16,
    pub proto: u8,
    pub _pad: u8,
}
assert_size!(FragKey, 12);

/// The ports of a fragmented datagram, from its first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    pub sport_be: u16,
    pub dport_be: u16,
}
assert_size!(FragPorts, 4);

pod!(NatEntry, DataplaneConfig, FragKey, FragPorts);

/// Maximum ports probed for a masquerade mapping before the flow is dropped (Cilium
/// does the same: random start, linear probing).
pub const SNAT_PROBES: u32 = 32;
