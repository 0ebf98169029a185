//! `network create` and `network rm`.

use ipnet::Ipv4Net;
use tracing::info;

use super::{
    service::{Inner, network_view},
    txn::{Undo, UndoLog},
};
use crate::{
    api::types::{NetworkCreate, NetworkInfo},
    error::{Error, Result},
    model::Network,
    state::{ipam, names},
};

/// Linux caps interface names at 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

impl Inner {
    pub(crate) async fn network_create(&mut self, req: NetworkCreate) -> Result<NetworkInfo> {
        let net = self.plan_network(&req).await?;
        let mut undo = UndoLog::default();
        let result = self.apply_network(&net, &mut undo).await;
        let ((), undo) = self.rollback_on_err(result, undo).await?;
        let mut next = self.state.clone();
        next.next_network_id = net.id + 1;
        next.networks.push(net.clone());
        self.commit(next, undo).await?;
        info!(network = %net.name, subnet = %net.subnet, bridge = %net.bridge, "network created");
        Ok(self.network_info(&net))
    }

    /// Validate a create request against the current state; touches nothing.
    async fn plan_network(&self, req: &NetworkCreate) -> Result<Network> {
        names::validate_name("network", &req.name)?;
        if self.state.network(&req.name).is_some() {
            return Err(Error::Conflict(format!(
                "network {} already exists",
                req.name
            )));
        }
        let existing = &self.state.networks;
        let (subnet, gateway, ip_range) = ipam::plan_network(
            req.subnet.as_deref(),
            req.gateway.as_deref(),
            req.ip_range.as_deref(),
            existing,
        )?;
        let bridge = match &req.bridge {
            Some(b) => b.clone(),
            None => default_bridge_name(&req.name),
        };
        names::validate_ifname("bridge", &bridge)?;
        if let Some(other) = existing.iter().find(|n| n.bridge == bridge) {
            return Err(Error::Conflict(format!(
                "bridge {bridge} is already used by network {}",
                other.name
            )));
        }
        if self.netlink.link_by_name(&bridge).await?.is_some() {
            return Err(Error::Conflict(format!(
                "an interface named {bridge} already exists on the host; choose another --bridge"
            )));
        }
        let mtu = req.mtu.unwrap_or(1500);
        if !(68..=65535).contains(&mtu) {
            return Err(Error::Invalid(format!(
                "MTU {mtu} is out of range: it must be between 68 and 65535"
            )));
        }
        let id = existing
            .iter()
            .map(|n| n.id + 1)
            .max()
            .unwrap_or(1)
            .max(self.state.next_network_id)
            .max(1);
        Ok(Network {
            name: req.name.clone(),
            id,
            subnet,
            gateway,
            ip_range,
            internal: req.internal,
            icc: req.icc.unwrap_or(true),
            // An internal network never leaves its subnet, so there is nothing to masquerade.
            masquerade: !req.internal && req.masquerade.unwrap_or(true),
            mtu,
            bridge,
        })
    }

    /// Create the bridge and tell the dataplane, recording how to undo each step.
    pub(crate) async fn apply_network(&mut self, net: &Network, undo: &mut UndoLog) -> Result<()> {
        let gateway = Ipv4Net::new(net.gateway, net.subnet.prefix_len())
            .map_err(|e| Error::Internal(format!("gateway of network {}: {e}", net.name)))?;
        // Before the call: it creates the bridge first and may fail after (MTU, address,
        // up). plan_network found the name free, and deleting a missing link is a no-op.
        undo.push(Undo::DeleteLink(net.bridge.clone()));
        let index = self
            .netlink
            .ensure_bridge(&net.bridge, gateway, net.mtu)
            .await?;
        self.dataplane.add_network(&network_view(net, index))?;
        undo.push(Undo::DataplaneNetwork {
            network: net.clone(),
            bridge_ifindex: index,
        });
        Ok(())
    }

    pub(crate) async fn network_remove(&mut self, name: &str) -> Result<()> {
        let net = self.network(name)?.clone();
        let users: Vec<&str> = self
            .state
            .endpoints_on(name)
            .map(|e| e.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "network {name} has active endpoints ({}); remove or disconnect them first",
                users.join(", ")
            )));
        }
        let index = self
            .netlink
            .link_by_name(&net.bridge)
            .await?
            .map(|l| l.index)
            .unwrap_or(0);
        self.dataplane.remove_network(&network_view(&net, index))?;
        if let Err(e) = self.netlink.delete_link(&net.bridge).await {
            // Put the network back into the dataplane: the bridge is still there.
            if let Err(undo_err) = self.dataplane.add_network(&network_view(&net, index)) {
                tracing::warn!(network = %name, error = %undo_err, "rollback step failed");
            }
            return Err(e.into());
        }
        let mut next = self.state.clone();
        next.networks.retain(|n| n.name != name);
        next.ipam_cursor.remove(name);
        // The bridge is gone; if the write fails, the next start recreates it from the
        // old state, which is the state the user still sees.
        self.commit(next, UndoLog::default()).await?;
        info!(network = %name, "network removed");
        Ok(())
    }
}

/// `nd-<name>` when that fits in an interface name; otherwise `nd-` and 12 hex digits
/// of a hash of the whole name, so that long names sharing a prefix
/// (`myapplication_front`, `myapplication_back`) get different bridges. Only the name
/// goes in, so a network keeps its bridge name across restarts and releases.
pub(crate) fn default_bridge_name(network: &str) -> String {
    let name = format!("nd-{network}");
    if name.len() <= IFNAMSIZ_MAX {
        return name;
    }
    format!("nd-{:012x}", fnv1a(network.bytes()) & 0xffff_ffff_ffff)
}

/// 64-bit FNV-1a: stable across builds and releases, unlike std's hasher, as a name
/// derived from it must be (bridges here, veths in [`super::endpoints::host_ifname`]).
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{daemon::endpoints::host_ifname, state::names};

    #[test]
    fn default_bridge_name_is_nd_name_when_it_fits() {
        assert_eq!(default_bridge_name("net"), "nd-net");
        // 12 characters: exactly 15 bytes with the prefix.
        assert_eq!(default_bridge_name("abcdefghijkl"), "nd-abcdefghijkl");
    }

    #[test]
    fn long_network_names_sharing_a_prefix_get_distinct_bridges() {
        let front = default_bridge_name("myapplication_front");
        let back = default_bridge_name("myapplication_back");
        assert_ne!(front, back);
        for (net, bridge) in [
            ("myapplication_front", &front),
            ("myapplication_back", &back),
        ] {
            assert!(bridge.starts_with("nd-"), "{bridge}");
            assert_eq!(bridge.len(), IFNAMSIZ_MAX, "{bridge}");
            names::validate_ifname("bridge", bridge).unwrap();
            // Stable: the same name always gives the same bridge.
            assert_eq!(&default_bridge_name(net), bridge);
        }
        // Just one byte too long for nd-NAME.
        let thirteen = default_bridge_name("abcdefghijklm");
        assert_ne!(thirteen, default_bridge_name("abcdefghijkl"));
        assert_ne!(thirteen, "nd-abcdefghijkl");
        // Golden values: the same name gets the same bridge from one release to the next.
        assert_eq!(front, "nd-168b20bb9cc3");
        assert_eq!(back, "nd-9fc06c1a35cf");
    }

    #[test]
    fn hashed_names_stay_what_they_were() {
        // The published FNV-1a 64 test vector.
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        // A veth's name from before the hash was shared: a restart must find it again.
        assert_eq!(host_ifname("web", "front"), "nd9e82f56a12");
    }
}
