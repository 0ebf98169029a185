//! The programs on a container's host-side veth: ingress is what the container sends,
//! egress what it receives.

use aya_ebpf::programs::TcContext;
use netd_common::{
    conntrack::FlowKey,
    endpoint::{EndpointInfo, NET_F_INTERNAL, NET_F_NO_ICC},
    nat::NAT_F_HAIRPIN,
    stats::DropReason,
};

use crate::{
    forward, frag, icmp, isolation,
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
    if known && let Some(e) = nat::peek(&key) {
        if e.flags & NAT_F_HAIRPIN != 0 {
            let e = nat::lookup(&key).unwrap_or(e);
            nat::apply(ctx, &ip, &key, &e)?;
            return forward::to_endpoint(ctx, &ip, e.rewrite.daddr_be);
        }
        // SAFETY: the value is copied out at once.
        let bridge = unsafe { NETD_NETWORKS.get(ep.network_id) }.map_or(0, |n| n.bridge_ifindex);
        if let Some(action) = forward::fast_to_uplink(ctx, &ip, &key, &e, bridge)? {
            return Ok(action);
        }
        // Otherwise the uplink translates it, after the host has routed it.
        return Ok(PASS);
    }
    if ip.kind == L4Kind::Ports
        && let Some(target) = ports::lookup(ip.proto, ip.daddr_be, ip.dport_be)
    {
        if ep.net_flags & NET_F_INTERNAL != 0 {
            return Err(DropReason::Internal);
        }
        return hairpin(ctx, &ip, &key, &target);
    }
    isolation::check_destination(&ep, ip.daddr_be)?;
    Ok(PASS)
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
/// outside the subnet into an internal network.
#[inline(always)]
pub fn try_egress(ctx: &TcContext) -> Result<i32, DropReason> {
    let ep = endpoint(ctx)?;
    let eth = parse::eth(ctx)?;
    if eth.proto != ETH_P_IP {
        return Ok(PASS);
    }
    let ip = parse::ipv4(ctx)?;
    isolation::check_source(&ep, ip.saddr_be)?;
    Ok(PASS)
}
