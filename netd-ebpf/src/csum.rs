//! Packet rewrites with incremental checksum updates.
//!
//! Fields are written in place ([`pkt::write`]). The IPv4 header checksum is updated
//! here (RFC 1624); the transport checksum through the kernel's helper, because only the
//! kernel knows the skb's checksum state: `bpf_l4_csum_replace` with `BPF_F_PSEUDO_HDR`
//! for the pseudo-header part (which also keeps CHECKSUM_PARTIAL packets right: the
//! kernel then adjusts the pseudo-header seed instead of a full checksum), and without it
//! for ports. Each change is balanced by its checksum change, so a CHECKSUM_COMPLETE sum
//! over the packet stays valid (the IP header's sum over itself does not move). UDP
//! checksums of 0 ("none") stay 0.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netd_common::{
    conntrack::{FlowKey, IPPROTO_UDP},
    csum::{update16, update32},
    stats::DropReason,
};

use crate::{
    parse::{ETH_HLEN, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Ip4, L4Kind},
    pkt,
};

#[inline(always)]
fn ok<E>(r: Result<(), E>) -> Result<(), DropReason> {
    r.map_err(|_| DropReason::Rewrite)
}

/// Writes `v` at `off` in the packet.
#[inline(always)]
fn put<T: Copy>(ctx: &TcContext, off: usize, v: T) -> Result<(), DropReason> {
    pkt::write(ctx, off, v).ok_or(DropReason::Rewrite)
}

/// Folds a change into the IPv4 header checksum of the packet `ip`. The checksum and the
/// values are in the same (wire) byte order, which one's-complement sums do not mind.
#[inline(always)]
fn fix_ip_csum(
    ctx: &TcContext,
    ip: &Ip4,
    update: impl FnOnce(u16) -> u16,
) -> Result<(), DropReason> {
    let off = ip.l3 + IP_CSUM_OFF;
    let c: u16 = pkt::read(ctx, off).ok_or(DropReason::Rewrite)?;
    put(ctx, off, update(c))
}

/// Extra `bpf_l4_csum_replace` flags for the packet's transport checksum.
#[inline(always)]
fn l4_flags(ip: &Ip4) -> u64 {
    if ip.proto == IPPROTO_UDP && ip.kind == L4Kind::Ports {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    }
}

/// Rewrites the source (`off` = 12) or destination (16) address of the IP header at
/// `ip.l3`.
#[inline(always)]
fn set_addr(ctx: &TcContext, ip: &Ip4, off: usize, old: u32, new: u32) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    put(ctx, ip.l3 + off, new)?;
    fix_ip_csum(ctx, ip, |c| update32(c, old, new))?;
    // ICMP has no pseudo-header; a later fragment has no transport header.
    if ip.kind == L4Kind::Ports
        && let Some(csum) = ip.l4_csum_off()
    {
        let flags = u64::from(BPF_F_PSEUDO_HDR) | 4 | l4_flags(ip);
        ok(ctx.l4_csum_replace(csum, u64::from(old), u64::from(new), flags))?;
    }
    Ok(())
}

/// Rewrites a 16-bit transport field covered by the transport checksum (a port, the
/// ICMP echo identifier).
#[inline(always)]
fn set_l4_u16(ctx: &TcContext, ip: &Ip4, off: usize, old: u16, new: u16) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let Some(csum) = ip.l4_csum_off() else {
        return Ok(());
    };
    put(ctx, off, new)?;
    ok(ctx.l4_csum_replace(csum, u64::from(old), u64::from(new), 2 | l4_flags(ip)))
}

/// Rewrites the packet, whose tuple is `from`, to the tuple `to`.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, ip: &Ip4, from: &FlowKey, to: &FlowKey) -> Result<(), DropReason> {
    set_addr(ctx, ip, IP_SADDR_OFF, from.saddr_be, to.saddr_be)?;
    set_addr(ctx, ip, IP_DADDR_OFF, from.daddr_be, to.daddr_be)?;
    match ip.kind {
        L4Kind::Ports => {
            set_l4_u16(ctx, ip, ip.l4, from.sport_be, to.sport_be)?;
            set_l4_u16(ctx, ip, ip.l4 + 2, from.dport_be, to.dport_be)
        }
        // The identifier is the request's source "port" and the reply's destination.
        L4Kind::IcmpEcho if from.sport_be != to.sport_be => {
            set_l4_u16(ctx, ip, ip.l4 + 4, from.sport_be, to.sport_be)
        }
        L4Kind::IcmpEcho => set_l4_u16(ctx, ip, ip.l4 + 4, from.dport_be, to.dport_be),
        _ => Ok(()),
    }
}

/// Rewrites only the outer source or destination address of an ICMP error (its checksum
/// has no pseudo-header).
#[inline(always)]
pub fn set_outer_addr(
    ctx: &TcContext,
    ip: &Ip4,
    dst: bool,
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    set_addr(
        ctx,
        ip,
        if dst { IP_DADDR_OFF } else { IP_SADDR_OFF },
        old,
        new,
    )
}

/// Stores `new` over `old` inside an ICMP error's payload and folds the change into the
/// ICMP checksum at `icmp_csum`.
#[inline(always)]
pub fn payload_u32(
    ctx: &TcContext,
    icmp_csum: usize,
    off: usize,
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    put(ctx, off, new)?;
    ok(ctx.l4_csum_replace(icmp_csum, u64::from(old), u64::from(new), 4))
}

/// [`payload_u32`] for a 16-bit field.
#[inline(always)]
pub fn payload_u16(
    ctx: &TcContext,
    icmp_csum: usize,
    off: usize,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    put(ctx, off, new)?;
    ok(ctx.l4_csum_replace(icmp_csum, u64::from(old), u64::from(new), 2))
}

/// Decrements the TTL (netd forwards the packet itself, as a router would).
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, ip: &Ip4) -> Result<(), DropReason> {
    if ip.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // TTL and protocol share one 16-bit word of the header checksum.
    let old = u16::from_ne_bytes([ip.ttl, ip.proto]);
    let new = u16::from_ne_bytes([ip.ttl - 1, ip.proto]);
    put(ctx, ip.l3 + 8, ip.ttl - 1)?;
    fix_ip_csum(ctx, ip, |c| update16(c, old, new))
}

/// Sets both MAC addresses.
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), DropReason> {
    const _: () = assert!(ETH_HLEN == 14);
    put(ctx, 0, *dst)?;
    put(ctx, 6, *src)
}
