//! Counters: per interface, per publication, and drops by named reason.

use crate::{assert_size, pod};

/// Packets and bytes seen by the programs on one interface, per CPU. `rx` is what the
/// host receives on the interface (TC ingress), `tx` what it sends (TC egress).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}
assert_size!(IfaceCounters, 32);

/// Packets and bytes of the flows of one publication, both directions, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub packets: u64,
    pub bytes: u64,
}
assert_size!(PortStats, 16);

pod!(IfaceCounters, PortStats);

/// Why a packet was dropped; the index into the drop counter array. The eBPF side counts,
/// userspace prints [`DropReason::name`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A header is shorter than it claims, or fields are inconsistent.
    Malformed = 0,
    /// A program is attached to a veth that has no endpoint entry.
    UnknownEndpoint = 1,
    /// A container sent with a source MAC that is not its own.
    SpoofedMac = 2,
    /// A container sent with a source IPv4 address that is not its own.
    SpoofedIp = 3,
    /// A container sent an ARP packet claiming another address.
    SpoofedArp = 4,
    /// Traffic between containers of different networks.
    Isolation = 5,
    /// Container-to-container traffic inside a network with icc disabled.
    Icc = 6,
    /// Traffic leaving or entering an internal network.
    Internal = 7,
    /// The wan tried to reach a container address directly (not a published port or a
    /// reply of a tracked flow).
    WanToContainer = 8,
    /// No free source port for masquerade after bounded probing.
    NatExhausted = 9,
    /// A translation could not be recorded (map update failed).
    NatInsert = 10,
    /// A non-first fragment of a datagram whose first fragment was not seen.
    FragUnknown = 11,
    /// The TTL ran out on a path where netd forwards itself.
    TtlExceeded = 12,
    /// A non-IPv4 frame from a container where only IPv4 and ARP are allowed.
    NonIp = 13,
    /// A packet rewrite or redirect failed in the kernel helper.
    Rewrite = 14,
    /// A container sent a protocol that masquerade cannot translate (no ports).
    NatUnsupported = 15,
}

/// Number of drop reasons (the size of the drop counter array).
pub const DROP_REASON_COUNT: u32 = 16;

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; DROP_REASON_COUNT as usize] = [
        DropReason::Malformed,
        DropReason::UnknownEndpoint,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::SpoofedArp,
        DropReason::Isolation,
        DropReason::Icc,
        DropReason::Internal,
        DropReason::WanToContainer,
        DropReason::NatExhausted,
        DropReason::NatInsert,
        DropReason::FragUnknown,
        DropReason::TtlExceeded,
        DropReason::NonIp,
        DropReason::Rewrite,
        DropReason::NatUnsupported,
    ];

    /// The name `netd stats` prints.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownEndpoint => "unknown_endpoint",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::SpoofedArp => "spoofed_arp",
            DropReason::Isolation => "isolation",
            DropReason::Icc => "icc",
            DropReason::Internal => "internal",
            DropReason::WanToContainer => "wan_to_container",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::NatInsert => "nat_insert",
            DropReason::FragUnknown => "frag_unknown",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NonIp => "non_ip",
            DropReason::Rewrite => "rewrite",
            DropReason::NatUnsupported => "nat_unsupported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_in_order_with_unique_names() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32, "{r:?}");
            for other in &DropReason::ALL[..i] {
                assert_ne!(r.name(), other.name());
            }
        }
    }
}
