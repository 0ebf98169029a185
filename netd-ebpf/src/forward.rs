//! Forwarding that netd does itself: a hairpin flow goes from one container's veth
//! straight to the other's, never through the bridge and the host stack (which would see
//! one of its own addresses as the source and drop the packet as a martian).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{
    conntrack::FlowKey,
    nat::{HOP_ENDPOINT, HOP_UPLINK, NatEntry, NextHop, UPLINK_F_PEER},
    stats::DropReason,
};

use crate::{
    conntrack, csum,
    maps::{NETD_EP_BY_IP, NETD_NETWORKS},
    nat,
    parse::Ip4,
    verdict::{Dir, count},
};

const AF_INET: u8 = 2;

/// Sends the (already translated) packet to the container that owns `dst_be`, as its
/// gateway would: TTL decremented, the bridge's MAC as source.
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, ip: &Ip4, dst_be: u32) -> Result<i32, DropReason> {
    // SAFETY: values are copied out at once.
    let ep = unsafe { NETD_EP_BY_IP.get(dst_be) }
        .copied()
        .ok_or(DropReason::Rewrite)?;
    let net = unsafe { NETD_NETWORKS.get(ep.network_id) }
        .copied()
        .ok_or(DropReason::Rewrite)?;
    csum::dec_ttl(ctx, ip)?;
    csum::set_macs(ctx, &ep.mac, &net.bridge_mac)?;
    // SAFETY: a helper taking plain integers.
    Ok(unsafe { bpf_redirect(ep.host_ifindex, 0) } as i32)
}

/// The fast path from the uplink: a packet of a known flow whose (translated)
/// destination `dst_be` is a container goes straight into the container's namespace
/// (`bpf_redirect_peer`, kernel 5.10), skipping the host's routing, the bridge and the
/// veth's egress program (whose counting is done here; its checks cannot refuse a
/// translated flow). `flow` is the packet's NAT key and entry when it has one: the
/// container's veth and MACs are kept there for about a second ([`NatEntry::hop`]), so a
/// container whose veth was recreated is reached again within that second. (Removing
/// an endpoint flushes its flows, and with them what was kept.) `None` leaves the
/// packet to the host stack: no such container, or a packet larger than the network's
/// MTU, which the host has to fragment or refuse.
#[inline(always)]
pub fn fast_to_container(
    ctx: &TcContext,
    ip: &Ip4,
    dst_be: u32,
    flow: Option<(&FlowKey, &NatEntry)>,
) -> Result<Option<i32>, DropReason> {
    if ip.ttl <= 1 {
        return Ok(None);
    }
    // SAFETY: the kernel hands TC programs a valid __sk_buff.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    let len = u32::from(ip.tot_len);
    let now = NextHop::stamp(conntrack::now());
    let hop = match flow {
        Some((_, e)) if e.hop.usable_to_endpoint(len, gso, now) => e.hop,
        _ => {
            let Some(hop) = endpoint_hop(dst_be, now) else {
                return Ok(None);
            };
            if let Some((key, _)) = flow {
                nat::remember_hop(key, &hop);
            }
            hop
        }
    };
    if !gso && len > u32::from(hop.max_len) {
        return Ok(None);
    }
    csum::dec_ttl(ctx, ip)?;
    csum::set_macs(ctx, &hop.dmac, &hop.smac)?;
    count(hop.ifindex, u64::from(ctx.len()), Dir::Tx);
    // SAFETY: a helper taking plain integers.
    Ok(Some(unsafe { bpf_redirect_peer(hop.ifindex, 0) } as i32))
}

/// The way into the container that owns `dst_be`, from its endpoint and network
/// entries, stamped `now`.
#[inline(always)]
fn endpoint_hop(dst_be: u32, now: u32) -> Option<NextHop> {
    // SAFETY: values are copied out at once.
    let ep = unsafe { NETD_EP_BY_IP.get(dst_be) }.copied()?;
    // SAFETY: as above.
    let net = unsafe { NETD_NETWORKS.get(ep.network_id) }.copied()?;
    Some(NextHop {
        dmac: ep.mac,
        smac: net.bridge_mac,
        ifindex: ep.host_ifindex,
        max_len: net.mtu,
        kind: HOP_ENDPOINT,
        _pad: 0,
        looked_up: now,
    })
}

/// The fast path to the uplink: a packet of a known translated flow (its NAT entry `e`,
/// found by [`nat::lookup`] for `key`) from a container of network `network_id` is
/// translated right at its veth and sent to the uplink with the next hop's MAC from the
/// kernel's FIB and neighbour tables (`bpf_fib_lookup`, `bpf_redirect_neigh` when the
/// neighbour is not resolved yet), skipping the bridge and the host's routing. A
/// resolved next hop is kept in the flow's NAT entry for about a second
/// ([`NatEntry::hop`]). An uplink that is a veth with its peer in another namespace gets
/// it at the peer's ingress. `None` leaves the packet to the slow path: the route does
/// not leave through the uplink, or the packet (or a segment of it) is larger than the
/// route's MTU.
#[inline(always)]
pub fn fast_to_uplink(
    ctx: &TcContext,
    ip: &Ip4,
    key: &FlowKey,
    e: &NatEntry,
    network_id: u32,
) -> Result<Option<i32>, DropReason> {
    let cfg = nat::config();
    if cfg.uplink_ifindex == 0 || ip.ttl <= 1 {
        return Ok(None);
    }
    // SAFETY: the kernel hands TC programs a valid __sk_buff.
    let gso = unsafe { (*ctx.skb.skb).gso_size };
    // A segment of a GSO packet is at most its payload size plus this packet's IP and
    // transport headers, which every segment repeats. Sizing it exactly matters: a
    // worst-case 60-byte TCP header made every full-MSS segment look larger than a
    // 1500-byte MTU, and bulk traffic fell back to the bridge and the host's routing.
    let l3_len = if gso == 0 {
        u32::from(ip.tot_len)
    } else {
        // Unknown transport header (not TCP/UDP): assume the largest TCP header.
        let l4_hlen = if ip.l4_hlen == 0 { 60 } else { ip.l4_hlen };
        gso + (ip.l4 - ip.l3) as u32 + u32::from(l4_hlen)
    };
    let now = NextHop::stamp(conntrack::now());
    let route = if e.hop.usable(cfg.uplink_ifindex, l3_len, now) {
        Route::Resolved(e.hop)
    } else {
        let Some(route) = fib_lookup(
            ctx,
            ip,
            &e.rewrite,
            l3_len,
            network_id,
            cfg.uplink_ifindex,
            now,
        ) else {
            return Ok(None);
        };
        if let Route::Resolved(hop) = &route {
            nat::remember_hop(key, hop);
        }
        route
    };
    nat::apply(ctx, ip, key, e)?;
    csum::dec_ttl(ctx, ip)?;
    match route {
        Route::Resolved(hop) => {
            csum::set_macs(ctx, &hop.dmac, &hop.smac)?;
            if cfg.uplink_flags & UPLINK_F_PEER != 0 {
                // Straight into the uplink peer's namespace, as the wan side would
                // receive it from the wire: one queueing (the container's veth) instead
                // of two. The uplink's egress program, which only counts fast-path
                // packets, is skipped, so the count is taken here.
                count(hop.ifindex, u64::from(ctx.len()), Dir::Tx);
                // SAFETY: a helper taking plain integers.
                return Ok(Some(unsafe { bpf_redirect_peer(hop.ifindex, 0) } as i32));
            }
            // SAFETY: a helper taking plain integers.
            Ok(Some(unsafe { bpf_redirect(hop.ifindex, 0) } as i32))
        }
        Route::Unresolved {
            ifindex,
            next_hop_be,
        } => {
            // SAFETY: plain data, all-zero is valid.
            let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            nh.nh_family = u32::from(AF_INET);
            nh.__bindgen_anon_1.ipv4_nh = next_hop_be;
            let size = size_of::<bpf_redir_neigh>() as i32;
            // SAFETY: nh is a bpf_redir_neigh of the size we pass.
            Ok(Some(
                unsafe { bpf_redirect_neigh(ifindex, &mut nh, size, 0) } as i32,
            ))
        }
    }
}

/// Where the FIB sends a packet out of the uplink.
enum Route {
    /// To a known neighbour.
    Resolved(NextHop),
    /// The neighbour not resolved yet.
    Unresolved { ifindex: u32, next_hop_be: u32 },
}

/// Asks the kernel's FIB and neighbour tables where the packet `ip`, translated to `to`
/// and `l3_len` bytes long on the wire, goes when it arrives on the bridge of network
/// `network_id` (a resolved next hop stamped `now`). `None`: not out of the uplink (another
/// interface, no route, or larger than the route's MTU).
#[inline(always)]
fn fib_lookup(
    ctx: &TcContext,
    ip: &Ip4,
    to: &FlowKey,
    l3_len: u32,
    network_id: u32,
    uplink: u32,
    now: u32,
) -> Option<Route> {
    // SAFETY: the value is read at once.
    let bridge = unsafe { NETD_NETWORKS.get(network_id) }?.bridge_ifindex;
    // SAFETY: plain data, all-zero is valid.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = ip.proto;
    p.sport = to.sport_be;
    p.dport = to.dport_be;
    let len = l3_len.min(u32::from(u16::MAX)) as u16;
    p.__bindgen_anon_1.tot_len = len;
    p.ifindex = bridge;
    p.__bindgen_anon_3.ipv4_src = to.saddr_be;
    p.__bindgen_anon_4.ipv4_dst = to.daddr_be;
    // SAFETY: p is a bpf_fib_lookup of the size we pass.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb.cast(),
            &mut p,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if p.ifindex != uplink {
        return None;
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Some(Route::Resolved(NextHop {
            dmac: p.dmac,
            smac: p.smac,
            ifindex: p.ifindex,
            max_len: len,
            kind: HOP_UPLINK,
            _pad: 0,
            looked_up: now,
        }));
    }
    // SAFETY: after the lookup ipv4_dst is the next hop.
    let next_hop_be = unsafe { p.__bindgen_anon_4.ipv4_dst };
    (rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH)).then_some(Route::Unresolved {
        ifindex: p.ifindex,
        next_hop_be,
    })
}
