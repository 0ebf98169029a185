//! Who may talk to whom: anti-spoofing, network isolation, icc, internal networks.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use netd_common::{
    endpoint::{EndpointInfo, NET_F_INTERNAL, NET_F_NO_ICC, in_subnet},
    stats::DropReason,
};

use crate::{
    maps::NETD_SUBNETS,
    parse::{ETH_HLEN, Eth},
    pkt,
    ports::is_local,
};

/// The netd network whose subnet contains `addr_be`, if any.
#[inline(always)]
pub fn network_of(addr_be: u32) -> Option<u32> {
    NETD_SUBNETS.get(Key::new(32, addr_be)).copied()
}

/// A container must send with its own MAC.
#[inline(always)]
pub fn check_mac(ep: &EndpointInfo, eth: &Eth) -> Result<(), DropReason> {
    if eth.src != ep.mac {
        Err(DropReason::SpoofedMac)
    } else {
        Ok(())
    }
}

/// A container's ARP must announce its own addresses (0.0.0.0 is a probe, RFC 5227).
#[inline(always)]
pub fn check_arp(ctx: &TcContext, ep: &EndpointInfo) -> Result<(), DropReason> {
    // Ethernet/IPv4 ARP: sender hardware address at 8, sender protocol address at 14.
    let a: [u8; 28] = pkt::read(ctx, ETH_HLEN).ok_or(DropReason::Malformed)?;
    let sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    let spa = u32::from_ne_bytes([a[14], a[15], a[16], a[17]]);
    if sha != ep.mac || (spa != ep.ip_be && spa != 0) {
        return Err(DropReason::SpoofedArp);
    }
    Ok(())
}

/// Whether `addr_be` is a broadcast or multicast address (delivered on the bridge to
/// every container, so icc=false must stop it too).
#[inline(always)]
fn is_group(addr_be: u32, ep: &EndpointInfo) -> bool {
    let first = addr_be.to_ne_bytes()[0];
    addr_be == u32::MAX || (0xe0..=0xef).contains(&first) || addr_be == ep.subnet_be | !ep.mask_be
}

/// What a container sends to `dst_be`: not into another network (the host's own
/// addresses excepted), not to other containers of its own network with icc off, not
/// outside its subnet from an internal network.
#[inline(always)]
pub fn check_destination(ep: &EndpointInfo, dst_be: u32) -> Result<(), DropReason> {
    let icc_off = ep.net_flags & NET_F_NO_ICC != 0;
    if dst_be == ep.gateway_be {
        return Ok(());
    }
    if icc_off && is_group(dst_be, ep) {
        return Err(DropReason::Icc);
    }
    if in_subnet(dst_be, ep.subnet_be, ep.mask_be) {
        return if icc_off {
            Err(DropReason::Icc)
        } else {
            Ok(())
        };
    }
    if ep.net_flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    // The host itself is reachable on all its addresses, other bridges' included.
    if !is_local(dst_be) && network_of(dst_be).is_some() {
        return Err(DropReason::Isolation);
    }
    Ok(())
}

/// What reaches a container from `src_be`: not from another network's containers, not
/// from outside the subnet into an internal network.
#[inline(always)]
pub fn check_source(ep: &EndpointInfo, src_be: u32) -> Result<(), DropReason> {
    if in_subnet(src_be, ep.subnet_be, ep.mask_be) {
        return Ok(());
    }
    if ep.net_flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    if !is_local(src_be) && network_of(src_be).is_some() {
        return Err(DropReason::Isolation);
    }
    Ok(())
}
