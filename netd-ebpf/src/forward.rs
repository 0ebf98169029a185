//! Forwarding that netd does itself: a hairpin flow goes from one container's veth
//! straight to the other's, never through the bridge and the host stack (which would see
//! one of its own addresses as the source and drop the packet as a martian).

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::stats::DropReason;

use crate::{
    csum,
    maps::{NETD_EP_BY_IP, NETD_NETWORKS},
    parse::{ETH_HLEN, Ip4},
    verdict::{Dir, count},
};

/// Sends the (already translated) packet to the container that owns `dst_be`, as its
/// gateway would: TTL decremented, the bridge's MAC as source.
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, ip: &Ip4, dst_be: u32) -> Result<i32, DropReason> {
    // SAFETY: values are copied out at once.
    let ep = unsafe { NETD_EP_BY_IP.get(&dst_be) }
        .copied()
        .ok_or(DropReason::Rewrite)?;
    let net = unsafe { NETD_NETWORKS.get(&ep.network_id) }
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
/// translated flow). `None` leaves the packet to the host stack: no such container, or a
/// packet larger than the network's MTU, which the host has to fragment or refuse.
#[inline(always)]
pub fn fast_to_container(
    ctx: &TcContext,
    ip: &Ip4,
    dst_be: u32,
) -> Result<Option<i32>, DropReason> {
    // SAFETY: values are copied out at once.
    let Some(ep) = (unsafe { NETD_EP_BY_IP.get(&dst_be) }).copied() else {
        return Ok(None);
    };
    let Some(net) = (unsafe { NETD_NETWORKS.get(&ep.network_id) }).copied() else {
        return Ok(None);
    };
    // SAFETY: the kernel hands TC programs a valid __sk_buff.
    let gso = unsafe { (*ctx.skb.skb).gso_size };
    let len = ctx.len();
    if gso == 0 && len as usize > usize::from(net.mtu) + ETH_HLEN || ip.ttl <= 1 {
        return Ok(None);
    }
    csum::dec_ttl(ctx, ip)?;
    csum::set_macs(ctx, &ep.mac, &net.bridge_mac)?;
    count(ep.host_ifindex, u64::from(len), Dir::Tx);
    // SAFETY: a helper taking plain integers.
    Ok(Some(unsafe { bpf_redirect_peer(ep.host_ifindex, 0) } as i32))
}
