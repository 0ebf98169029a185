//! Forwarding that netd does itself: a hairpin flow goes from one container's veth
//! straight to the other's, never through the bridge and the host stack (which would see
//! one of its own addresses as the source and drop the packet as a martian).

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use netd_common::stats::DropReason;

use crate::{
    csum,
    maps::{NETD_EP_BY_IP, NETD_NETWORKS},
    parse::Ip4,
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
