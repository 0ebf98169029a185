//! The programs on a container's host-side veth: ingress is what the container sends,
//! egress what it receives.

use aya_ebpf::programs::TcContext;
use netd_common::{
    conntrack::{FlowKey, IPPROTO_TCP, IPPROTO_UDP, tcp_opens},
    endpoint::{EndpointInfo, NET_F_INTERNAL, NET_F_NO_ICC},
    nat::NAT_F_HAIRPIN,
    stats::DropReason,
};

use crate::{
    conntrack, forward, frag, icmp, isolation,
    maps::{NETD_ENDPOINTS, NETD_NETWORKS},
    nat,
    parse::{self, ETH_P_ARP, ETH_P_IP, Ip4, L4Kind},
    ports::{self, Target},
    verdict::{PASS, ifindex},
};

/// The endpoint this veth belongs to.
#[inline(always)]
fn endpoint(ctx: &TcContext) -> Result<EndpointInfo, DropReason> {
    // SAFETY: the value is copied out at once.
    unsafe { NETD_ENDPOINTS.get(ifindex(ctx)) }
        .copied()
        .ok_or(DropReason::UnknownEndpoint)
}

/// What a container sends: its own addresses only; hairpin through published ports
/// forwarded here; isolation enforced before the bridge sees the packet.
#[inline(always)]
pub fn try_ingress(ctx: &TcContext) -> Result<i32, DropReason> {
    let ep = endpoint(ctx)?;
    let eth = parse::eth(ctx)?;
    isolation::check_mac(&ep, &eth)?;
    match eth.proto {
        ETH_P_IP => {}
        ETH_P_ARP => {
            isolation::check_arp(ctx, &ep)?;
            return Ok(PASS);
        }
        // IPv6, VLAN-tagged and other frames stay on the bridge; with icc off they could
        // reach the other containers, so they go.
        _ if ep.net_flags & NET_F_NO_ICC != 0 => return Err(DropReason::NonIp),
        _ => return Ok(PASS),
    }
    let mut ip = parse::ipv4(ctx)?;
    if ip.saddr_be != ep.ip_be {
        return Err(DropReason::SpoofedIp);
    }
    if ip.kind == L4Kind::IcmpError {
        return icmp_error(ctx, &ep, &ip);
    }
    let known = frag::track(&mut ip);
    let key = ip.key();
    // One lookup per packet (it also restores an evicted other half of the pair).
    if known && let Some(e) = nat::lookup(&key) {
        if e.flags & NAT_F_HAIRPIN != 0 {
            nat::apply(ctx, &ip, &key, &e)?;
            return forward::to_endpoint(ctx, &ip, e.rewrite.daddr_be);
        }
        if let Some(action) = forward::fast_to_uplink(ctx, &ip, &key, &e, ep.network_id)? {
            return Ok(action);
        }
        // Otherwise the uplink translates it, after the host has routed it.
        return Ok(PASS);
    }
    if ip.kind == L4Kind::Ports
        && let Some(target) = ports::lookup(ip.proto, ip.daddr_be, ip.dport_be)
        && let Some(action) = to_published(ctx, &ep, &ip, &key, &target)?
    {
        return Ok(action);
    }
    isolation::check_destination(&ep, ip.daddr_be)?;
    Ok(PASS)
}

/// A packet without a NAT entry to a published port on a host address. The host's own
/// sockets use local ports that may be published too (netd picks free host ports from
/// the ephemeral range, and host-local access connects from ephemeral ports), so only a
/// packet that opens a flow starts a hairpin flow: a TCP SYN, or a datagram that does not
/// reply to a flow a host process opened to this container. `None`: the packet belongs
/// to the host's own flow and goes on like any other traffic to the host.
#[inline(always)]
fn to_published(
    ctx: &TcContext,
    ep: &EndpointInfo,
    ip: &Ip4,
    key: &FlowKey,
    target: &Target,
) -> Result<Option<i32>, DropReason> {
    if ip.proto == IPPROTO_TCP && !tcp_opens(ip.tcp_flags) {
        return lost_hairpin(ctx, ip, key);
    }
    if ip.proto == IPPROTO_UDP && conntrack::is_host_reply(key) {
        return Ok(None);
    }
    if ep.net_flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    hairpin(ctx, ip, key, target).map(Some)
}

/// A TCP segment of a hairpin flow whose NAT pair the LRU evicted: conntrack still knows
/// the translation, so the pair is restored and the flow keeps it. `None` when conntrack
/// does not know a translated flow `key` either.
#[inline(always)]
fn lost_hairpin(ctx: &TcContext, ip: &Ip4, key: &FlowKey) -> Result<Option<i32>, DropReason> {
    let Some((translated, pub_id)) = conntrack::translation(key) else {
        return Ok(None);
    };
    let e = nat::create_fixed(key, &translated, NAT_F_HAIRPIN, pub_id, false)?;
    nat::apply(ctx, ip, key, &e)?;
    forward::to_endpoint(ctx, ip, e.rewrite.daddr_be).map(Some)
}

/// A new flow from a container to a published port on a host address: DNAT to the
/// published container and SNAT to that container's gateway, so that its replies come
/// back here (the NAT lookup on its own veth) instead of going to the client directly.
#[inline(always)]
fn hairpin(ctx: &TcContext, ip: &Ip4, key: &FlowKey, target: &Target) -> Result<i32, DropReason> {
    // SAFETY: the value is copied out at once.
    let net = unsafe { NETD_NETWORKS.get(target.network_id) }
        .copied()
        .ok_or(DropReason::NatInsert)?;
    let t = FlowKey {
        saddr_be: net.gateway_be,
        daddr_be: target.ip_be,
        dport_be: target.port_be,
        ..*key
    };
    let e = nat::create_snat(key, &t, NAT_F_HAIRPIN, target.pub_id, &nat::config())?;
    nat::apply(ctx, ip, key, &e)?;
    forward::to_endpoint(ctx, ip, e.rewrite.daddr_be)
}

/// An ICMP error from a container: about a hairpin flow, it is translated and forwarded
/// here; otherwise the uplink translates it.
#[inline(always)]
fn icmp_error(ctx: &TcContext, ep: &EndpointInfo, ip: &Ip4) -> Result<i32, DropReason> {
    if let Some((inner, e)) = icmp::find(ctx, ip)?
        && e.flags & NAT_F_HAIRPIN != 0
    {
        let dst = icmp::translate(ctx, ip, &inner, &e)?;
        return forward::to_endpoint(ctx, ip, dst);
    }
    isolation::check_destination(ep, ip.daddr_be)?;
    Ok(PASS)
}

/// What a container receives: nothing from other networks' containers, nothing from
/// outside the subnet into an internal network. Datagrams that host processes send are
/// remembered, so that the container's replies are not taken for new hairpin flows.
#[inline(always)]
pub fn try_egress(ctx: &TcContext) -> Result<i32, DropReason> {
    let ep = endpoint(ctx)?;
    let eth = parse::eth(ctx)?;
    if eth.proto != ETH_P_IP {
        return Ok(PASS);
    }
    let ip = parse::ipv4(ctx)?;
    isolation::check_source(&ep, ip.saddr_be)?;
    if ip.proto == IPPROTO_UDP
        && ip.kind == L4Kind::Ports
        && locally_generated(ctx)
        && ports::is_local(ip.saddr_be)
    {
        conntrack::record_host_flow(&ip.key());
    }
    Ok(PASS)
}

/// Whether the packet was created by this host rather than received on an interface.
/// Hairpin packets also have a host address as their source, but netd redirected them
/// from another veth's ingress; they have NAT entries and need no record.
#[inline(always)]
fn locally_generated(ctx: &TcContext) -> bool {
    // SAFETY: the kernel hands TC programs a valid __sk_buff.
    unsafe { (*ctx.skb.skb).ingress_ifindex == 0 }
}
