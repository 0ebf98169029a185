//! Packet rewrites with incremental checksum updates.
//!
//! Addresses and ports are stored without `BPF_F_RECOMPUTE_CSUM` and every change is
//! paired with the helper that fixes the checksum covering it: `bpf_l3_csum_replace` for
//! the IP header, `bpf_l4_csum_replace` with `BPF_F_PSEUDO_HDR` for the transport
//! checksum's pseudo-header part (which also keeps CHECKSUM_PARTIAL packets right: the
//! kernel then adjusts the pseudo-header seed instead of a full checksum), and without it
//! for ports. Each change is balanced by its checksum change, so a CHECKSUM_COMPLETE sum
//! over the packet stays valid. UDP checksums of 0 ("none") stay 0.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netd_common::{
    conntrack::{FlowKey, IPPROTO_UDP},
    stats::DropReason,
};

use crate::parse::{ETH_HLEN, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Ip4, L4Kind};

#[inline(always)]
fn ok<E>(r: Result<(), E>) -> Result<(), DropReason> {
    r.map_err(|_| DropReason::Rewrite)
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
    ok(ctx.store(ip.l3 + off, &new, 0))?;
    ok(ctx.l3_csum_replace(ip.l3 + IP_CSUM_OFF, u64::from(old), u64::from(new), 4))?;
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
    ok(ctx.store(off, &new, 0))?;
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
    ok(ctx.store(off, &new, 0))?;
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
    ok(ctx.store(off, &new, 0))?;
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
    ok(ctx.store(ip.l3 + 8, &(ip.ttl - 1), 0))?;
    ok(ctx.l3_csum_replace(ip.l3 + IP_CSUM_OFF, u64::from(old), u64::from(new), 2))
}

/// Sets both MAC addresses.
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), DropReason> {
    const _: () = assert!(ETH_HLEN == 14);
    ok(ctx.store(0, dst, 0))?;
    ok(ctx.store(6, src, 0))
}
