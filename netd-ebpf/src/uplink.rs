//! The programs on the uplink: ingress translates replies and published ports and keeps
//! the wan away from container addresses; egress masquerades what containers send out.

use aya_ebpf::programs::TcContext;
use netd_common::{
    conntrack::{FlowKey, IPPROTO_TCP, tcp_opens},
    endpoint::{NET_F_INTERNAL, NET_F_MASQUERADE},
    nat::NatEntry,
    stats::DropReason,
};

use crate::{
    conntrack::{self, Tracked},
    forward, frag, icmp,
    icmp::ErrorVerdict,
    isolation,
    maps::{NETD_ENDPOINTS, NETD_NETWORKS},
    nat,
    parse::{self, ETH_P_IP, Ip4, L4Kind},
    ports,
    verdict::PASS,
};

/// Drops with `reason` a packet addressed to a container (not a host address): the wan
/// reaches containers only through published ports and replies of tracked flows.
#[inline(always)]
fn guard_containers(ip: &Ip4, reason: DropReason) -> Result<i32, DropReason> {
    if !ports::is_local(ip.daddr_be) && isolation::network_of(ip.daddr_be).is_some() {
        return Err(reason);
    }
    Ok(PASS)
}

/// A packet of a known flow, translated.
struct Known {
    /// Its destination after translation.
    dst_be: u32,
    /// Its NAT entry (keyed by the packet's tuple), if the flow is translated.
    nat: Option<NatEntry>,
}

/// Translates a packet of a known flow. `Ok(Some(_))` when it was one.
#[inline(always)]
fn known_flow(ctx: &TcContext, ip: &Ip4, key: &FlowKey) -> Result<Option<Known>, DropReason> {
    let through = |e: NatEntry| {
        Some(Known {
            dst_be: e.rewrite.daddr_be,
            nat: Some(e),
        })
    };
    if let Some(e) = nat::lookup(key) {
        nat::apply(ctx, ip, key, &e)?;
        return Ok(through(e));
    }
    match conntrack::find(key, ip, ctx.len())? {
        Tracked::No => Ok(None),
        Tracked::Untranslated => Ok(Some(Known {
            dst_be: key.daddr_be,
            nat: None,
        })),
        Tracked::Lost { translated, pub_id } => {
            let e = nat::create_fixed(key, &translated, 0, pub_id, false)?;
            nat::apply(ctx, ip, key, &e)?;
            Ok(through(e))
        }
    }
}

/// Delivers a packet of a known flow (`key`, translated by `nat` if any) to `dst_be`:
/// straight into its container when possible.
#[inline(always)]
fn deliver(
    ctx: &TcContext,
    ip: &Ip4,
    key: &FlowKey,
    dst_be: u32,
    nat: Option<&NatEntry>,
) -> Result<i32, DropReason> {
    let flow = nat.map(|e| (key, e));
    Ok(forward::fast_to_container(ctx, ip, dst_be, flow)?.unwrap_or(PASS))
}

/// What the wan sends.
#[inline(always)]
pub fn try_ingress(ctx: &TcContext) -> Result<i32, DropReason> {
    if parse::eth(ctx)?.proto != ETH_P_IP {
        return Ok(PASS);
    }
    let mut ip = parse::ipv4(ctx)?;
    if ip.kind == L4Kind::IcmpError {
        return match icmp::handle(ctx, &ip)? {
            ErrorVerdict::Translated | ErrorVerdict::TrackedUntranslated => Ok(PASS),
            ErrorVerdict::Untranslated => guard_containers(&ip, DropReason::WanToContainer),
        };
    }
    if !frag::track(&mut ip) {
        return guard_containers(&ip, DropReason::FragUnknown);
    }
    let key = ip.key();
    if let Some(k) = known_flow(ctx, &ip, &key)? {
        return deliver(ctx, &ip, &key, k.dst_be, k.nat.as_ref());
    }
    if ip.kind == L4Kind::Ports
        && let Some(t) = ports::lookup(ip.proto, ip.daddr_be, ip.dport_be)
    {
        // The client keeps its address: only the destination changes.
        let translated = FlowKey {
            daddr_be: t.ip_be,
            dport_be: t.port_be,
            ..key
        };
        // Only what opens a flow may replace a closed flow holding the reply tuple; a
        // stray segment picked up mid-stream may not.
        let opens = ip.proto != IPPROTO_TCP || tcp_opens(ip.tcp_flags);
        let e = nat::create_fixed(&key, &translated, 0, t.pub_id, opens)?;
        nat::apply(ctx, &ip, &key, &e)?;
        return deliver(ctx, &ip, &key, e.rewrite.daddr_be, Some(&e));
    }
    guard_containers(&ip, DropReason::WanToContainer)
}

/// Whether the packet comes straight from a container's veth: the fast path
/// ([`forward::fast_to_uplink`]) redirected it here already translated and recorded.
/// A packet that took the slow path was received again on the bridge, which set its
/// ingress ifindex to the bridge's, so only fast-path packets match.
#[inline(always)]
fn from_fast_path(ctx: &TcContext) -> bool {
    // SAFETY: the kernel hands TC programs a valid __sk_buff.
    let iif = unsafe { (*ctx.skb.skb).ingress_ifindex };
    iif != 0 && NETD_ENDPOINTS.get_ptr(iif).is_some()
}

/// What leaves for the wan.
#[inline(always)]
pub fn try_egress(ctx: &TcContext) -> Result<i32, DropReason> {
    // Parsing and looking the flow up again would only find the translated tuple, which
    // is no flow's key: ~0.4-0.6 us per packet for nothing (bpf_stats, bench rr_dnat).
    if from_fast_path(ctx) {
        return Ok(PASS);
    }
    if parse::eth(ctx)?.proto != ETH_P_IP {
        return Ok(PASS);
    }
    let mut ip = parse::ipv4(ctx)?;
    let known = if ip.kind == L4Kind::IcmpError {
        !matches!(icmp::handle(ctx, &ip)?, ErrorVerdict::Untranslated)
    } else if frag::track(&mut ip) {
        known_flow(ctx, &ip, &ip.key())?.is_some()
    } else {
        false
    };
    if known {
        return Ok(PASS);
    }
    // A new flow: the host's own traffic passes, containers' is masqueraded.
    let Some(net_id) = isolation::network_of(ip.saddr_be) else {
        return Ok(PASS);
    };
    if ports::is_local(ip.saddr_be) {
        return Ok(PASS);
    }
    // SAFETY: the value is copied out at once.
    let Some(net) = unsafe { NETD_NETWORKS.get(net_id) }.copied() else {
        return Ok(PASS);
    };
    if net.flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    masquerade(ctx, &ip, net.flags & NET_F_MASQUERADE != 0)
}

/// Starts a flow from a container out through the uplink: masqueraded, or only tracked
/// (so that its replies may come back) when the network does not masquerade.
#[inline(always)]
fn masquerade(ctx: &TcContext, ip: &Ip4, enabled: bool) -> Result<i32, DropReason> {
    match ip.kind {
        L4Kind::Ports | L4Kind::IcmpEcho => {}
        L4Kind::LaterFragment => return Err(DropReason::FragUnknown),
        // Errors about flows netd does not know, other protocols: no ports to map.
        L4Kind::IcmpError | L4Kind::Other if enabled => return Err(DropReason::NatUnsupported),
        L4Kind::IcmpError | L4Kind::Other => return Ok(PASS),
    }
    let key = ip.key();
    if !enabled {
        conntrack::create(&key, &key, ip, false, 0)?;
        return Ok(PASS);
    }
    let cfg = nat::config();
    if cfg.snat_ip_be == 0 {
        return Err(DropReason::NatExhausted);
    }
    let t = FlowKey {
        saddr_be: cfg.snat_ip_be,
        ..key
    };
    let e = nat::create_snat(&key, &t, 0, 0, &cfg)?;
    nat::apply(ctx, ip, &key, &e)?;
    Ok(PASS)
}
