//! Networks, endpoints and host addresses in the maps: conversion from the control
//! plane's views and idempotent updates (an entry that already matches is not rewritten).

use std::{collections::BTreeSet, net::Ipv4Addr};

use aya::{
    Pod,
    maps::{HashMap, MapData, MapError, lpm_trie::Key},
};
use netd_common::endpoint::{
    EndpointInfo, EndpointRef, LOCAL_F_GATEWAY, LOCAL_F_UPLINK, NET_F_INTERNAL, NET_F_MASQUERADE,
    NET_F_NO_ICC, NetworkInfo,
};

use super::{loader::Maps, netdev};
use crate::{
    dataplane::{DataplaneError, EndpointView, NetworkView, Result},
    model::Network,
};

/// An address as the maps store it (network byte order in memory).
pub fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The address of a `_be` field.
pub fn ip(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

/// A removal that finds nothing is success: every operation is idempotent.
pub fn gone(r: Result<(), MapError>, ctx: impl FnOnce() -> String) -> Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(DataplaneError::new(ctx(), e)),
    }
}

/// Inserts `value` under `key` unless that is already there.
pub fn upsert<K: Pod, V: Pod + PartialEq>(
    map: &mut HashMap<MapData, K, V>,
    key: K,
    value: V,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if map.get(&key, 0).ok() == Some(value) {
        return Ok(());
    }
    map.insert(key, value, 0).map_err(|e| {
        let mut err = DataplaneError::new(what(), e);
        err.full = err.detail.contains("No space") || err.detail.contains("E2BIG");
        err
    })
}

fn net_flags(n: &Network) -> u32 {
    let mut f = 0;
    if !n.icc {
        f |= NET_F_NO_ICC;
    }
    if n.internal {
        f |= NET_F_INTERNAL;
    }
    if n.masquerade && !n.internal {
        f |= NET_F_MASQUERADE;
    }
    f
}

fn network_info(v: &NetworkView<'_>) -> Result<NetworkInfo> {
    let n = v.network;
    Ok(NetworkInfo {
        subnet_be: be(n.subnet.network()),
        mask_be: be(n.subnet.netmask()),
        gateway_be: be(n.gateway),
        bridge_ifindex: v.bridge_ifindex,
        flags: net_flags(n),
        bridge_mac: netdev::mac(v.bridge_ifindex)?,
        mtu: u16::try_from(n.mtu).unwrap_or(u16::MAX),
    })
}

fn subnet_key(n: &Network) -> Key<u32> {
    Key::new(u32::from(n.subnet.prefix_len()), be(n.subnet.network()))
}

/// Programs a network: its entry, its subnet, its gateway as a host address.
pub fn put_network(maps: &mut Maps, v: &NetworkView<'_>) -> Result<()> {
    let n = v.network;
    let info = network_info(v)?;
    upsert(&mut maps.networks, n.id, info, || {
        format!("adding network {}", n.name)
    })?;
    if maps.subnets.get(&subnet_key(n), 0).ok() != Some(n.id) {
        maps.subnets.insert(&subnet_key(n), n.id, 0).map_err(|e| {
            DataplaneError::new(format!("adding the subnet of network {}", n.name), e)
        })?;
    }
    upsert(
        &mut maps.local_addrs,
        be(n.gateway),
        LOCAL_F_GATEWAY,
        || format!("adding the gateway of network {}", n.name),
    )
}

/// Removes what [`put_network`] programmed.
pub fn del_network(maps: &mut Maps, n: &Network) -> Result<()> {
    let ctx = || format!("removing network {}", n.name);
    gone(maps.networks.remove(&n.id), ctx)?;
    gone(maps.subnets.remove(&subnet_key(n)), ctx)?;
    if maps.local_addrs.get(&be(n.gateway), 0).ok() == Some(LOCAL_F_GATEWAY) {
        gone(maps.local_addrs.remove(&be(n.gateway)), ctx)?;
    }
    Ok(())
}

fn endpoint_info(v: &EndpointView<'_>) -> EndpointInfo {
    let n = v.network;
    EndpointInfo {
        ip_be: be(v.attachment.ip),
        mac: v.attachment.mac.0,
        _pad: [0; 2],
        network_id: n.id,
        net_flags: net_flags(n),
        subnet_be: be(n.subnet.network()),
        mask_be: be(n.subnet.netmask()),
        gateway_be: be(n.gateway),
    }
}

/// Programs an attachment: by veth (for the veth programs) and by address (for hairpin
/// forwarding).
pub fn put_endpoint(maps: &mut Maps, v: &EndpointView<'_>) -> Result<()> {
    let what = || {
        format!(
            "adding endpoint {} on network {}",
            v.endpoint, v.network.name
        )
    };
    upsert(&mut maps.endpoints, v.host_ifindex, endpoint_info(v), what)?;
    // A Linux bridge without an assigned address takes the lowest MAC of its ports, so
    // it may have changed with this veth.
    if let Ok(mut net) = maps.networks.get(&v.network.id, 0)
        && let Ok(mac) = netdev::mac(v.bridge_ifindex)
        && net.bridge_mac != mac
    {
        net.bridge_mac = mac;
        upsert(&mut maps.networks, v.network.id, net, what)?;
    }
    let r = EndpointRef {
        host_ifindex: v.host_ifindex,
        network_id: v.network.id,
        mac: v.attachment.mac.0,
        _pad: [0; 2],
    };
    upsert(&mut maps.endpoints_by_ip, be(v.attachment.ip), r, what)
}

/// Removes what [`put_endpoint`] programmed (the address entry only if it is still this
/// veth's: a new endpoint may have the address already).
pub fn del_endpoint(maps: &mut Maps, host_ifindex: u32, addr: Ipv4Addr) -> Result<()> {
    let ctx = || format!("removing the endpoint on interface {host_ifindex}");
    gone(maps.endpoints.remove(&host_ifindex), ctx)?;
    if maps
        .endpoints_by_ip
        .get(&be(addr), 0)
        .is_ok_and(|r| r.host_ifindex == host_ifindex)
    {
        gone(maps.endpoints_by_ip.remove(&be(addr)), ctx)?;
    }
    Ok(())
}

/// Makes the uplink addresses exactly `addrs` among the host addresses.
pub fn set_uplink_addrs(maps: &mut Maps, addrs: &[Ipv4Addr]) -> Result<()> {
    let want: BTreeSet<u32> = addrs.iter().map(|a| be(*a)).collect();
    let stale: Vec<u32> = maps
        .local_addrs
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, f)| *f == LOCAL_F_UPLINK && !want.contains(k))
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        gone(maps.local_addrs.remove(&k), || {
            format!("removing host address {}", ip(k))
        })?;
    }
    for a in want {
        // A gateway that is also an uplink address stays a gateway entry.
        if maps.local_addrs.get(&a, 0).is_err() {
            upsert(&mut maps.local_addrs, a, LOCAL_F_UPLINK, || {
                format!("adding host address {}", ip(a))
            })?;
        }
    }
    Ok(())
}

/// Removes networks, subnets, gateways, endpoints and addresses that are not in the
/// desired views (the caller then puts the desired ones).
pub fn prune(
    maps: &mut Maps,
    networks: &[NetworkView<'_>],
    endpoints: &[EndpointView<'_>],
) -> Result<()> {
    let net_ids: BTreeSet<u32> = networks.iter().map(|n| n.network.id).collect();
    let gateways: BTreeSet<u32> = networks.iter().map(|n| be(n.network.gateway)).collect();
    let subnets: BTreeSet<(u32, u32)> = networks
        .iter()
        .map(|n| {
            (
                u32::from(n.network.subnet.prefix_len()),
                be(n.network.subnet.network()),
            )
        })
        .collect();
    let veths: BTreeSet<u32> = endpoints.iter().map(|e| e.host_ifindex).collect();
    let addrs: BTreeSet<(u32, u32)> = endpoints
        .iter()
        .map(|e| (be(e.attachment.ip), e.host_ifindex))
        .collect();

    let stale: Vec<u32> = maps
        .networks
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !net_ids.contains(k))
        .collect();
    for k in stale {
        gone(maps.networks.remove(&k), || {
            format!("removing stale network {k}")
        })?;
    }
    let stale: Vec<Key<u32>> = maps
        .subnets
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !subnets.contains(&(k.prefix_len(), k.data())))
        .collect();
    for k in stale {
        gone(maps.subnets.remove(&k), || {
            "removing a stale subnet".to_string()
        })?;
    }
    let stale: Vec<u32> = maps
        .local_addrs
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, f)| *f == LOCAL_F_GATEWAY && !gateways.contains(k))
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        gone(maps.local_addrs.remove(&k), || {
            format!("removing stale gateway {}", ip(k))
        })?;
    }
    let stale: Vec<u32> = maps
        .endpoints
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !veths.contains(k))
        .collect();
    for k in stale {
        gone(maps.endpoints.remove(&k), || {
            format!("removing stale endpoint on interface {k}")
        })?;
    }
    let stale: Vec<u32> = maps
        .endpoints_by_ip
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, r)| !addrs.contains(&(*k, r.host_ifindex)))
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        gone(maps.endpoints_by_ip.remove(&k), || {
            format!("removing stale endpoint address {}", ip(k))
        })?;
    }
    Ok(())
}
