//! ICMP errors for translated flows (RFC 5508): the quoted packet inside the error is
//! translated back like a packet of the flow, inner checksums included, and the outer
//! address that named the translated endpoint follows it. Port unreachable, fragmentation
//! needed (PMTU discovery) and TTL exceeded (traceroute) thereby reach the right host.
//! Errors about a tracked flow that is not translated (a network without masquerade)
//! pass untouched.

use aya_ebpf::programs::TcContext;
use netd_common::{
    conntrack::{FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    csum::{update16, update32},
    nat::NatEntry,
    stats::DropReason,
};

use crate::{
    csum::{payload_u16, payload_u32, set_outer_addr},
    maps::NETD_CT,
    nat,
    parse::{self, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Ip4, L4Kind},
};

/// What the error turned out to be about.
pub enum ErrorVerdict {
    /// About a translated flow; the packet has been rewritten.
    Translated,
    /// About a tracked flow that is not translated; untouched.
    TrackedUntranslated,
    /// About no flow netd knows; untouched.
    Untranslated,
}

/// The quoted packet inside the error `outer`, if it is of a kind flows are kept for.
#[inline(always)]
fn quoted(ctx: &TcContext, outer: &Ip4) -> Result<Option<Ip4>, DropReason> {
    let inner = parse::icmp_inner(ctx, outer)?;
    Ok(matches!(inner.kind, L4Kind::Ports | L4Kind::IcmpEcho).then_some(inner))
}

/// The NAT entry for the flow the quoted packet `inner` belongs to: the quote is a packet
/// the error's sender received, so its reply tuple is what travels our way.
#[inline(always)]
pub fn find(ctx: &TcContext, outer: &Ip4) -> Result<Option<(Ip4, NatEntry)>, DropReason> {
    Ok(quoted(ctx, outer)?
        .and_then(|inner| nat::lookup(&inner.key().reversed()).map(|e| (inner, e))))
}

/// Rewrites the error: the quoted packet to `rev(e.rewrite)`, and the outer address that
/// was the quoted packet's peer.
#[inline(always)]
pub fn translate(
    ctx: &TcContext,
    outer: &Ip4,
    inner: &Ip4,
    e: &NatEntry,
) -> Result<u32, DropReason> {
    let from = inner.key();
    let to = e.rewrite.reversed();
    let icmp_csum = outer.l4 + 2;
    rewrite_inner(ctx, icmp_csum, inner, &from, &to)?;
    let mut dst = outer.daddr_be;
    // The error travels opposite to the quoted packet: its destination was the quote's
    // source, its source (unless a router on the path) the quote's destination.
    if outer.daddr_be == from.saddr_be {
        set_outer_addr(ctx, outer, true, outer.daddr_be, to.saddr_be)?;
        dst = to.saddr_be;
    }
    if outer.saddr_be == from.daddr_be {
        set_outer_addr(ctx, outer, false, outer.saddr_be, to.daddr_be)?;
    }
    Ok(dst)
}

/// Translates the quoted header from `from` to `to`, keeping the quoted IP checksum, the
/// quoted transport checksum (when it lies inside the quote) and the ICMP checksum right.
#[inline(always)]
fn rewrite_inner(
    ctx: &TcContext,
    icmp_csum: usize,
    inner: &Ip4,
    from: &FlowKey,
    to: &FlowKey,
) -> Result<(), DropReason> {
    let m = |_| DropReason::Malformed;
    // Quoted IP header: addresses and its checksum.
    let ip_csum_off = inner.l3 + IP_CSUM_OFF;
    let old_ip_csum: u16 = ctx.load(ip_csum_off).map_err(m)?;
    let mut c = u16::from_be(old_ip_csum);
    c = update32(c, u32::from_be(from.saddr_be), u32::from_be(to.saddr_be));
    c = update32(c, u32::from_be(from.daddr_be), u32::from_be(to.daddr_be));
    payload_u32(
        ctx,
        icmp_csum,
        inner.l3 + IP_SADDR_OFF,
        from.saddr_be,
        to.saddr_be,
    )?;
    payload_u32(
        ctx,
        icmp_csum,
        inner.l3 + IP_DADDR_OFF,
        from.daddr_be,
        to.daddr_be,
    )?;
    payload_u16(ctx, icmp_csum, ip_csum_off, old_ip_csum, c.to_be())?;

    // Quoted transport header: ports or the echo identifier, then its checksum if the
    // quote contains it (only the first 8 bytes are guaranteed).
    let (csum_off, pseudo) = match inner.proto {
        IPPROTO_TCP => (inner.l4 + 16, true),
        IPPROTO_UDP => (inner.l4 + 6, true),
        _ => (inner.l4 + 2, false),
    };
    let mut deltas: [(usize, u16, u16); 2] = [(0, 0, 0); 2];
    if inner.proto == IPPROTO_ICMP {
        // The quoted echo is a request or a reply; its identifier is in the "port" that
        // is not zero.
        let (o, n) = if from.sport_be != 0 {
            (from.sport_be, to.sport_be)
        } else {
            (from.dport_be, to.dport_be)
        };
        deltas[0] = (inner.l4 + 4, o, n);
    } else {
        deltas[0] = (inner.l4, from.sport_be, to.sport_be);
        deltas[1] = (inner.l4 + 2, from.dport_be, to.dport_be);
    }
    let has_csum = csum_off + 2 <= ctx.len() as usize;
    let old_l4: u16 = if has_csum {
        ctx.load(csum_off).map_err(m)?
    } else {
        0
    };
    let mut l4 = u16::from_be(old_l4);
    for (off, o, n) in deltas {
        if off != 0 {
            payload_u16(ctx, icmp_csum, off, o, n)?;
            l4 = update16(l4, u16::from_be(o), u16::from_be(n));
        }
    }
    // A zero UDP checksum means "none" and stays so.
    if !has_csum || (inner.proto == IPPROTO_UDP && old_l4 == 0) {
        return Ok(());
    }
    if pseudo {
        l4 = update32(l4, u32::from_be(from.saddr_be), u32::from_be(to.saddr_be));
        l4 = update32(l4, u32::from_be(from.daddr_be), u32::from_be(to.daddr_be));
    }
    if inner.proto == IPPROTO_UDP && l4 == 0 {
        l4 = 0xffff;
    }
    payload_u16(ctx, icmp_csum, csum_off, old_l4, l4.to_be())
}

/// Translates an ICMP error if it is about a translated flow, and tells whether it is
/// about an untranslated tracked flow (the quote being what our side sent).
#[inline(always)]
pub fn handle(ctx: &TcContext, outer: &Ip4) -> Result<ErrorVerdict, DropReason> {
    let Some(inner) = quoted(ctx, outer)? else {
        return Ok(ErrorVerdict::Untranslated);
    };
    let key = inner.key();
    if let Some(e) = nat::lookup(&key.reversed()) {
        translate(ctx, outer, &inner, &e)?;
        return Ok(ErrorVerdict::Translated);
    }
    // The quote is what our side sent: an untranslated flow's conntrack key as is.
    // SAFETY: the entry is only compared, at once.
    match unsafe { NETD_CT.get(&key) } {
        Some(ct) if ct.translated == key => Ok(ErrorVerdict::TrackedUntranslated),
        _ => Ok(ErrorVerdict::Untranslated),
    }
}
