//! Header parsing. Every read is bounds-checked ([`pkt::read`]) at offsets computed from
//! the headers themselves (IHL, not a fixed 20 bytes), so IP options and non-linear skbs
//! are handled, and a header that is shorter than it claims is an error, never a read of
//! whatever follows.

use aya_ebpf::programs::TcContext;
use netd_common::{
    conntrack::{FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    stats::DropReason,
};

use crate::pkt;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Offset of the IPv4 checksum in its header.
pub const IP_CSUM_OFF: usize = 10;
pub const IP_SADDR_OFF: usize = 12;
pub const IP_DADDR_OFF: usize = 16;

/// The Ethernet header.
#[derive(Clone, Copy)]
pub struct Eth {
    pub src: [u8; 6],
    /// EtherType in host order (the outer one; VLAN tags are not looked into).
    pub proto: u16,
}

#[inline(always)]
pub fn eth(ctx: &TcContext) -> Result<Eth, DropReason> {
    let h: [u8; ETH_HLEN] = pkt::read(ctx, 0).ok_or(DropReason::Malformed)?;
    Ok(Eth {
        src: [h[6], h[7], h[8], h[9], h[10], h[11]],
        proto: u16::from_be_bytes([h[12], h[13]]),
    })
}

/// What kind of transport header follows, as far as translation cares.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4Kind {
    /// TCP or UDP with ports.
    Ports,
    /// ICMP echo request or reply: the identifier acts as the port.
    IcmpEcho,
    /// ICMP error carrying the header of the packet that caused it.
    IcmpError,
    /// A non-first fragment: no transport header at all.
    LaterFragment,
    /// Anything else (other protocols, other ICMP types): never translated.
    Other,
}

/// A parsed IPv4 packet.
#[derive(Clone, Copy)]
pub struct Ip4 {
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the transport header (after options).
    pub l4: usize,
    /// Length of the transport header (TCP with options, UDP 8), 0 when not parsed.
    pub l4_hlen: u16,
    pub proto: u8,
    pub ttl: u8,
    /// Total length from the IP header.
    pub tot_len: u16,
    pub id_be: u16,
    /// More-fragments flag or a non-zero offset.
    pub fragmented: bool,
    pub saddr_be: u32,
    pub daddr_be: u32,
    /// Source and destination ports (network order); for ICMP echo, the identifier in
    /// the request's `sport_be` or the reply's `dport_be`.
    pub sport_be: u16,
    pub dport_be: u16,
    pub kind: L4Kind,
    /// TCP flags, 0 otherwise.
    pub tcp_flags: u8,
    /// ICMP type, 0 otherwise.
    pub icmp_type: u8,
}

impl Ip4 {
    /// The packet's 5-tuple as it is on the wire.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        FlowKey {
            saddr_be: self.saddr_be,
            daddr_be: self.daddr_be,
            sport_be: self.sport_be,
            dport_be: self.dport_be,
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    /// Offset of the transport checksum, if the transport header has one netd updates.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> Option<usize> {
        match (self.kind, self.proto) {
            (L4Kind::Ports, IPPROTO_TCP) => Some(self.l4 + 16),
            (L4Kind::Ports, IPPROTO_UDP) => Some(self.l4 + 6),
            (L4Kind::IcmpEcho | L4Kind::IcmpError, _) => Some(self.l4 + 2),
            _ => None,
        }
    }
}

/// The fields of an IPv4 header at `l3` that translation needs, checked against the
/// packet length `avail` (bytes from `l3` to the end of the packet).
#[inline(always)]
fn ip_header(ctx: &TcContext, l3: usize, avail: usize) -> Result<Ip4, DropReason> {
    let h: [u8; 20] = pkt::read(ctx, l3).ok_or(DropReason::Malformed)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || ihl < 20 || tot_len < ihl || tot_len > avail {
        return Err(DropReason::Malformed);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    Ok(Ip4 {
        l3,
        l4: l3 + ihl,
        l4_hlen: 0,
        proto: h[9],
        ttl: h[8],
        tot_len: tot_len as u16,
        id_be: u16::from_ne_bytes([h[4], h[5]]),
        fragmented: frag & 0x3fff != 0,
        saddr_be: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        daddr_be: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
        sport_be: 0,
        dport_be: 0,
        kind: if frag & 0x1fff != 0 {
            L4Kind::LaterFragment
        } else {
            L4Kind::Other
        },
        tcp_flags: 0,
        icmp_type: 0,
    })
}

/// Fills the transport fields of `ip` from the header at `ip.l4`, of which `l4_len`
/// bytes are present. `inner` relaxes the length rules for the truncated copy inside an
/// ICMP error (only its first 8 bytes are guaranteed).
#[inline(always)]
fn transport(ctx: &TcContext, ip: &mut Ip4, l4_len: usize, inner: bool) -> Result<(), DropReason> {
    if ip.kind == L4Kind::LaterFragment {
        return Ok(());
    }
    match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let need = if ip.proto == IPPROTO_TCP && !inner {
                20
            } else {
                8
            };
            if l4_len < need {
                return Err(DropReason::Malformed);
            }
            let p: [u8; 4] = pkt::read(ctx, ip.l4).ok_or(DropReason::Malformed)?;
            ip.sport_be = u16::from_ne_bytes([p[0], p[1]]);
            ip.dport_be = u16::from_ne_bytes([p[2], p[3]]);
            if ip.proto == IPPROTO_TCP && !inner {
                let f: [u8; 2] = pkt::read(ctx, ip.l4 + 12).ok_or(DropReason::Malformed)?;
                let doff = u16::from(f[0] >> 4) * 4;
                if doff < 20 {
                    return Err(DropReason::Malformed);
                }
                ip.tcp_flags = f[1];
                ip.l4_hlen = doff;
            } else if ip.proto == IPPROTO_UDP {
                ip.l4_hlen = 8;
            }
            ip.kind = L4Kind::Ports;
        }
        IPPROTO_ICMP => {
            if l4_len < 8 {
                return Err(DropReason::Malformed);
            }
            let h: [u8; 8] = pkt::read(ctx, ip.l4).ok_or(DropReason::Malformed)?;
            ip.icmp_type = h[0];
            let id = u16::from_ne_bytes([h[4], h[5]]);
            match h[0] {
                ICMP_ECHO_REQUEST => {
                    ip.sport_be = id;
                    ip.kind = L4Kind::IcmpEcho;
                }
                ICMP_ECHO_REPLY => {
                    ip.dport_be = id;
                    ip.kind = L4Kind::IcmpEcho;
                }
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM if !inner => {
                    ip.kind = L4Kind::IcmpError;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses the IPv4 packet after the Ethernet header.
#[inline(always)]
pub fn ipv4(ctx: &TcContext) -> Result<Ip4, DropReason> {
    let avail = (ctx.len() as usize)
        .checked_sub(ETH_HLEN)
        .ok_or(DropReason::Malformed)?;
    let mut ip = ip_header(ctx, ETH_HLEN, avail)?;
    let l4_len = usize::from(ip.tot_len) - (ip.l4 - ip.l3);
    transport(ctx, &mut ip, l4_len, false)?;
    Ok(ip)
}

/// Parses the packet quoted inside the ICMP error `outer`: its IP header and the first 8
/// bytes of its transport header (RFC 792), which hold the ports.
#[inline(always)]
pub fn icmp_inner(ctx: &TcContext, outer: &Ip4) -> Result<Ip4, DropReason> {
    let l3 = outer.l4 + 8;
    let avail = (ctx.len() as usize)
        .checked_sub(l3)
        .ok_or(DropReason::Malformed)?;
    // The quoted header's total length describes the original packet, not the quote.
    let mut ip = ip_header(ctx, l3, usize::MAX)?;
    if ip.l4 - l3 > avail {
        return Err(DropReason::Malformed);
    }
    let l4_len = avail - (ip.l4 - l3);
    transport(ctx, &mut ip, l4_len, true)?;
    Ok(ip)
}
