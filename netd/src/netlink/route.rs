//! IPv4 routes: the default route.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType},
};
use tracing::info;

use super::{Netlink, NetlinkError, Result, errno_of};

impl Netlink {
    /// The interface of the IPv4 default route, if there is one. With several default
    /// routes, the one with the lowest metric wins, as it does in the kernel.
    pub async fn default_route_ifindex(&self) -> Result<Option<u32>> {
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::rtnl("list", "IPv4 routes", e))?;
        Ok(routes
            .iter()
            .filter(|r| is_main_default(r))
            .filter_map(|r| Some((metric(r), output_ifindex(r)?)))
            .min_by_key(|(metric, _)| *metric)
            .map(|(_, ifindex)| ifindex))
    }

    /// `ip route add default via GATEWAY dev INDEX` (`name` is for messages).
    pub async fn add_default_route(&self, index: u32, name: &str, gateway: Ipv4Addr) -> Result<()> {
        self.route_add_default(index, gateway)
            .await
            .map_err(|e| default_route_error(name, gateway, e))?;
        info!(link = name, %gateway, "added default route");
        Ok(())
    }

    /// [`add_default_route`](Self::add_default_route) unless a default route exists: one
    /// that was there first (set by a container runtime, say) is left alone.
    pub async fn ensure_default_route(
        &self,
        index: u32,
        name: &str,
        gateway: Ipv4Addr,
    ) -> Result<()> {
        match self.route_add_default(index, gateway).await {
            Ok(()) => {
                info!(link = name, %gateway, "added default route");
                Ok(())
            }
            Err(e) if errno_of(&e) == Some(Errno::EEXIST) => Ok(()),
            Err(e) => Err(default_route_error(name, gateway, e)),
        }
    }

    async fn route_add_default(
        &self,
        index: u32,
        gateway: Ipv4Addr,
    ) -> std::result::Result<(), rtnetlink::Error> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle.route().add(msg).execute().await
    }
}

fn default_route_error(name: &str, gateway: Ipv4Addr, e: rtnetlink::Error) -> NetlinkError {
    NetlinkError::rtnl("add default route", format!("via {gateway} dev {name}"), e)
}

/// A unicast 0.0.0.0/0 route in the main table. The dump has every table, and the
/// table id sits in the header unless it is above 255.
fn is_main_default(route: &RouteMessage) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && route.header.destination_prefix_length == 0
        && route.header.kind == RouteType::Unicast
}

fn metric(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

/// RTA_OIF, or the first next hop's interface for a multipath route.
fn output_ifindex(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
        _ => None,
    })
}
