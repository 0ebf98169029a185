//! IPv4 fragments: only the first carries the ports, so they are remembered per datagram
//! (addresses, IP id, protocol) and lent to the later fragments, which are then translated
//! like the first one (addresses only: they have no transport header).

use netd_common::nat::{FragKey, FragPorts};

use crate::{
    maps::NETD_FRAGS,
    parse::{Ip4, L4Kind},
};

#[inline(always)]
fn key(ip: &Ip4) -> FragKey {
    FragKey {
        saddr_be: ip.saddr_be,
        daddr_be: ip.daddr_be,
        id_be: ip.id_be,
        proto: ip.proto,
        _pad: 0,
    }
}

/// Remembers the ports of a first fragment, or fills in those of a later one. Returns
/// false for a later fragment whose first fragment was not seen here.
#[inline(always)]
pub fn track(ip: &mut Ip4) -> bool {
    if !ip.fragmented {
        return true;
    }
    match ip.kind {
        L4Kind::LaterFragment => {
            // SAFETY: the value is copied out at once.
            match unsafe { NETD_FRAGS.get(key(ip)) } {
                Some(p) => {
                    ip.sport_be = p.sport_be;
                    ip.dport_be = p.dport_be;
                    true
                }
                None => false,
            }
        }
        L4Kind::Ports | L4Kind::IcmpEcho => {
            let p = FragPorts {
                sport_be: ip.sport_be,
                dport_be: ip.dport_be,
            };
            let _ = NETD_FRAGS.insert(key(ip), p, 0);
            true
        }
        _ => true,
    }
}
