//! Published ports: single ports in a hash, ranges as one entry each in a small table.

use crate::{assert_size, pod};

/// Key of [`crate::maps::PORTS`]. `host_ip_be` 0 matches every host address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub host_ip_be: u32,
    pub port_be: u16,
    /// IANA protocol number (6 or 17).
    pub proto: u8,
    pub _pad: u8,
}
assert_size!(PortKey, 8);

/// Where a single published port forwards to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTarget {
    pub container_ip_be: u32,
    pub container_port_be: u16,
    pub _pad: u16,
    pub network_id: u32,
    /// Index into [`crate::maps::PORT_STATS`].
    pub pub_id: u32,
}
assert_size!(PortTarget, 16);

/// One published port range, `host_start..=host_end` to `container_start..`. Entries
/// with `active == 0` are unused; active entries come first, sorted by
/// (`proto`, `host_start`), so a scan stops at the first inactive one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRangeEntry {
    pub host_ip_be: u32,
    /// Host byte order, to compare ranges.
    pub host_start: u16,
    pub host_end: u16,
    pub container_ip_be: u32,
    /// Host byte order.
    pub container_start: u16,
    pub proto: u8,
    pub active: u8,
    pub network_id: u32,
    pub pub_id: u32,
}
assert_size!(PortRangeEntry, 24);

pod!(PortKey, PortTarget, PortRangeEntry);

impl PortRangeEntry {
    /// The container port for host port `port` (host order) if this range publishes it for
    /// `proto` on `dst_be`.
    #[inline(always)]
    pub fn translate(&self, proto: u8, dst_be: u32, port: u16) -> Option<u16> {
        let ip_ok = self.host_ip_be == 0 || self.host_ip_be == dst_be;
        if self.active != 0
            && self.proto == proto
            && ip_ok
            && self.host_start <= port
            && port <= self.host_end
        {
            Some(self.container_start.wrapping_add(port - self.host_start))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_translates_offsets_and_respects_ip_and_proto() {
        let r = PortRangeEntry {
            host_ip_be: 0,
            host_start: 20000,
            host_end: 20999,
            container_ip_be: 0x0200_11ac,
            container_start: 8000,
            proto: 6,
            active: 1,
            network_id: 1,
            pub_id: 7,
        };
        assert_eq!(r.translate(6, 1, 20000), Some(8000));
        assert_eq!(r.translate(6, 1, 20999), Some(8999));
        assert_eq!(r.translate(6, 1, 21000), None);
        assert_eq!(r.translate(17, 1, 20000), None);
        let pinned = PortRangeEntry { host_ip_be: 5, ..r };
        assert_eq!(pinned.translate(6, 1, 20000), None);
        assert_eq!(pinned.translate(6, 5, 20001), Some(8001));
        assert_eq!(
            PortRangeEntry { active: 0, ..r }.translate(6, 1, 20000),
            None
        );
    }
}
