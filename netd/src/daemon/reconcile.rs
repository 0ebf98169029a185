//! Bringing the kernel in line with the persisted state after a start, a restart or a
//! kill -9: recreate what went missing, forget endpoints whose namespace is gone, and
//! leave alone whatever still works.

use ipnet::Ipv4Net;
use tracing::{info, warn};

use super::service::{Inner, network_view, publication_view};
use crate::{
    dataplane::{EndpointView, SyncView},
    error::{Error, Result},
    model::{Attachment, Endpoint},
    netlink::Netns,
};

impl Inner {
    /// `saved`: whether the state came from the store. A first start writes nothing
    /// back, so that it stays a first start (and creates the default network) until a
    /// change is committed, even when creating that network fails.
    pub(crate) async fn reconcile(&mut self, saved: bool) -> Result<()> {
        self.dataplane.set_uplink(&self.uplink)?;
        for net in self.state.networks.clone() {
            let gateway = Ipv4Net::new(net.gateway, net.subnet.prefix_len())
                .map_err(|e| Error::Internal(format!("gateway of network {}: {e}", net.name)))?;
            self.netlink
                .ensure_bridge(&net.bridge, gateway, net.mtu)
                .await?;
        }
        let mut gone = Vec::new();
        for endpoint in self.state.endpoints.clone() {
            if !Netns::exists(&endpoint.netns.path) {
                gone.push(endpoint);
                continue;
            }
            let ns = Netns::open(&endpoint.netns.path)?;
            for (i, att) in endpoint.attachments.iter().enumerate() {
                // One endpoint that cannot be repaired must not keep the daemon, and so
                // every other endpoint, from starting: it stays listed, to be fixed or
                // removed through the API.
                if let Err(e) = self.repair_attachment(&endpoint, &ns, att, i == 0).await {
                    warn!(
                        endpoint = %endpoint.name, network = %att.network, error = %e,
                        "could not repair the attachment; disconnect and connect it again, or remove the endpoint"
                    );
                }
            }
        }
        if !gone.is_empty() {
            self.forget_endpoints(&gone).await?;
        }
        self.sync_dataplane().await?;
        if saved {
            self.store.save(&self.state)?;
        }
        Ok(())
    }

    /// Recreate a veth pair that is missing or no longer on its bridge.
    async fn repair_attachment(
        &mut self,
        endpoint: &Endpoint,
        ns: &Netns,
        att: &Attachment,
        default_route: bool,
    ) -> Result<()> {
        let net = self.network(&att.network)?.clone();
        let bridge_ifindex = self.ifindex(&net.bridge).await?;
        match self.netlink.link_by_name(&att.host_ifname).await? {
            Some(link) if link.master == Some(bridge_ifindex) => return Ok(()),
            Some(_) => {
                // Its bridge was recreated underneath it: the old pair is useless.
                self.netlink.delete_link(&att.host_ifname).await?;
            }
            None => {}
        }
        info!(endpoint = %endpoint.name, network = %net.name, "recreating a missing veth pair");
        self.plug(ns, &net, att, default_route).await?;
        Ok(())
    }

    /// Drop endpoints whose namespace disappeared, with their publications and leftovers.
    /// The caller persists the state.
    async fn forget_endpoints(&mut self, gone: &[Endpoint]) -> Result<()> {
        for endpoint in gone {
            warn!(endpoint = %endpoint.name, netns = %endpoint.netns.path.display(), "namespace is gone; removing the endpoint");
            for att in &endpoint.attachments {
                // The pair dies with its namespace; this only catches a half-dead one.
                self.netlink.delete_link(&att.host_ifname).await?;
            }
            if endpoint.netns.owned {
                Netns::remove_named(&endpoint.netns.path)?;
            }
        }
        self.state
            .endpoints
            .retain(|e| gone.iter().all(|g| g.name != e.name));
        self.state
            .publications
            .retain(|p| gone.iter().all(|g| g.name != p.endpoint));
        Ok(())
    }

    /// Hand the whole state to the dataplane, which keeps what matches.
    pub(crate) async fn sync_dataplane(&mut self) -> Result<()> {
        let state = self.state.clone();
        let mut view = SyncView::default();
        for net in &state.networks {
            view.networks
                .push(network_view(net, self.ifindex(&net.bridge).await?));
        }
        for endpoint in &state.endpoints {
            for att in &endpoint.attachments {
                let network = state
                    .network(&att.network)
                    .ok_or_else(|| Error::not_found("network", &att.network))?;
                // Without its veth (a repair failed) there is nothing to attach to.
                let Some(veth) = self.netlink.link_by_name(&att.host_ifname).await? else {
                    warn!(
                        endpoint = %endpoint.name, network = %att.network,
                        veth = %att.host_ifname, "the attachment has no veth; the dataplane skips it"
                    );
                    continue;
                };
                view.endpoints.push(EndpointView {
                    endpoint: &endpoint.name,
                    network,
                    attachment: att,
                    host_ifindex: veth.index,
                    bridge_ifindex: self.ifindex(&network.bridge).await?,
                });
            }
        }
        for p in &state.publications {
            view.publications.push(publication_view(p, &state)?);
        }
        self.dataplane.sync(&view)?;
        Ok(())
    }
}
