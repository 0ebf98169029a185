//! Published ports: which container a new flow to a host address goes to.

use netd_common::{
    conntrack::{IPPROTO_TCP, IPPROTO_UDP},
    maps::MAX_PORT_RANGES,
    ports::PortKey,
};

use crate::maps::{NETD_LOCAL_ADDRS, NETD_PORT_RANGES, NETD_PORTS};

/// Where a published port forwards to.
pub struct Target {
    pub ip_be: u32,
    pub port_be: u16,
    pub network_id: u32,
    pub pub_id: u32,
}

/// Whether `addr_be` is one of the host's own addresses.
#[inline(always)]
pub fn is_local(addr_be: u32) -> bool {
    NETD_LOCAL_ADDRS.get_ptr(addr_be).is_some()
}

/// The publication for a new flow to `dst_be:dport_be`, if `dst_be` is a host address.
/// Single ports are one hash lookup (exact address, then the wildcard); ranges are
/// scanned only on a miss, in a table of at most `MAX_PORT_RANGES` entries sorted by
/// (protocol, first port).
#[inline(always)]
pub fn lookup(proto: u8, dst_be: u32, dport_be: u16) -> Option<Target> {
    if !is_local(dst_be) {
        return None;
    }
    published(proto, dst_be, dport_be)
}

/// The publication of `dst_be:dport_be` without checking that `dst_be` is a host address:
/// the socket programs (sock.rs) also look up loopback addresses, which packets on the
/// wire must never match.
#[inline(always)]
pub fn published(proto: u8, dst_be: u32, dport_be: u16) -> Option<Target> {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let mut key = PortKey {
        host_ip_be: dst_be,
        port_be: dport_be,
        proto,
        _pad: 0,
    };
    // SAFETY: values are copied out at once.
    let hit = unsafe { NETD_PORTS.get(key) }.copied().or_else(|| {
        key.host_ip_be = 0;
        unsafe { NETD_PORTS.get(key) }.copied()
    });
    if let Some(t) = hit {
        return Some(Target {
            ip_be: t.container_ip_be,
            port_be: t.container_port_be,
            network_id: t.network_id,
            pub_id: t.pub_id,
        });
    }
    let port = u16::from_be(dport_be);
    for i in 0..MAX_PORT_RANGES {
        let r = NETD_PORT_RANGES.get(i)?;
        if r.active == 0 || (r.proto, r.host_start) > (proto, port) {
            return None;
        }
        if let Some(cport) = r.translate(proto, dst_be, port) {
            return Some(Target {
                ip_be: r.container_ip_be,
                port_be: cport.to_be(),
                network_id: r.network_id,
                pub_id: r.pub_id,
            });
        }
    }
    None
}
