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
    /// Where this direction's packets go when netd forwards them itself, zero until
    /// first filled: for a container's packets the uplink's next hop (the datapath's
    /// cache of `bpf_fib_lookup`), for the wan's the container's veth and MACs.
    pub hop: NextHop,
}
assert_size!(NatEntry, 56);

/// Where netd sends a flow's packets, kept with the flow: out of the uplink as
/// `bpf_fib_lookup` resolved it (about 290 ns a packet, a third of what a container's
/// established packet costs on its veth, BPF_PROG_TEST_RUN), or into a container as its
/// endpoint and network entries say (two lookups, about 75 ns of the 570 an established
/// packet costs on the uplink). Either answer rarely changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Destination MAC: the neighbour's, or the container's.
    pub dmac: [u8; 6],
    /// Source MAC: the outgoing interface's, or the container's bridge's.
    pub smac: [u8; 6],
    /// Outgoing interface: the uplink, or the container's veth (its host end).
    pub ifindex: u32,
    /// The largest IP packet (or GSO segment) the route's MTU was checked for, or the
    /// container network's MTU.
    pub max_len: u16,
    /// `HOP_*`: where the hop leads.
    pub kind: u8,
    pub _pad: u8,
    /// When it was looked up, in units of 2^20 ns (about a millisecond), wrapping.
    pub looked_up: u32,
}
assert_size!(NextHop, 24);

/// [`NextHop::kind`]: out of the uplink (zero, as in entries older than the kind).
pub const HOP_UPLINK: u8 = 0;
/// [`NextHop::kind`]: into a container.
pub const HOP_ENDPOINT: u8 = 1;

/// How long a cached next hop is trusted, in the units of [`NextHop::looked_up`]: a
/// route or neighbour change reaches an established flow within about a second.
pub const NEXT_HOP_TTL: u32 = 1 << 10;

impl NextHop {
    /// The time `now_ns` in the units of [`NextHop::looked_up`].
    pub const fn stamp(now_ns: u64) -> u32 {
        (now_ns >> 20) as u32
    }

    /// Whether this next hop may carry an IP packet (or GSO segment) of `len` bytes out
    /// of `uplink` at time `now` (a [`NextHop::stamp`]).
    pub const fn usable(&self, uplink: u32, len: u32, now: u32) -> bool {
        self.kind == HOP_UPLINK
            && self.ifindex != 0
            && self.ifindex == uplink
            && len <= self.max_len as u32
            && now.wrapping_sub(self.looked_up) < NEXT_HOP_TTL
    }

    /// Whether this hop into a container may take an IP packet of `len` bytes (any
    /// size when `gso`: the container's stack takes a GSO packet whole) at time `now`.
    pub const fn usable_to_endpoint(&self, len: u32, gso: bool, now: u32) -> bool {
        self.kind == HOP_ENDPOINT
            && self.ifindex != 0
            && (gso || len <= self.max_len as u32)
            && now.wrapping_sub(self.looked_up) < NEXT_HOP_TTL
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const UPLINK: u32 = 4;

    fn hop(looked_up: u32) -> NextHop {
        NextHop {
            dmac: [2, 0, 0, 0, 0, 1],
            smac: [2, 0, 0, 0, 0, 2],
            ifindex: UPLINK,
            max_len: 1500,
            kind: HOP_UPLINK,
            _pad: 0,
            looked_up,
        }
    }

    #[test]
    fn a_next_hop_serves_its_uplink_up_to_its_checked_size_until_it_expires() {
        let h = hop(100);
        assert!(h.usable(UPLINK, 1500, 100));
        assert!(h.usable(UPLINK, 60, 100 + NEXT_HOP_TTL - 1));
        assert!(
            !h.usable(UPLINK, 1501, 100),
            "larger than the MTU it was checked for"
        );
        assert!(!h.usable(UPLINK, 60, 100 + NEXT_HOP_TTL), "expired");
        assert!(!h.usable(UPLINK + 1, 60, 100), "the uplink changed");
        assert!(!NextHop::default().usable(0, 0, 0), "never looked up");
        let into = NextHop {
            kind: HOP_ENDPOINT,
            ..h
        };
        assert!(!into.usable(UPLINK, 60, 100), "a hop into a container");
    }

    #[test]
    fn a_hop_into_a_container_takes_gso_packets_of_any_size_until_it_expires() {
        let h = NextHop {
            ifindex: 9,
            kind: HOP_ENDPOINT,
            ..hop(100)
        };
        assert!(h.usable_to_endpoint(1500, false, 100));
        assert!(h.usable_to_endpoint(60, false, 100 + NEXT_HOP_TTL - 1));
        assert!(
            !h.usable_to_endpoint(1501, false, 100),
            "larger than the MTU"
        );
        assert!(h.usable_to_endpoint(65_000, true, 100), "a GSO packet");
        assert!(
            !h.usable_to_endpoint(60, false, 100 + NEXT_HOP_TTL),
            "expired"
        );
        assert!(
            !hop(100).usable_to_endpoint(60, false, 100),
            "a hop out of the uplink"
        );
        assert!(
            !NextHop::default().usable_to_endpoint(0, true, 0),
            "never looked up"
        );
    }

    #[test]
    fn the_lookup_stamp_wraps_without_expiring_a_fresh_hop() {
        let now = NextHop::stamp(u64::MAX);
        let h = hop(now);
        assert!(h.usable(UPLINK, 60, now.wrapping_add(5)));
        assert_eq!(NextHop::stamp(3 << 20), 3);
    }
}
