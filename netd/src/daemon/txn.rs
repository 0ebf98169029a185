//! Undo logs: every mutation records how to reverse each kernel step it takes, so a
//! failure half-way leaves the host as it was.

use std::path::PathBuf;

use tracing::warn;

use crate::{
    dataplane::{Dataplane, EndpointView, NetworkView, PublicationView},
    model::{Attachment, Network, Publication},
    netlink::{Netlink, Netns},
};

/// One step to reverse.
#[derive(Debug)]
pub(crate) enum Undo {
    /// Delete a link netd created (a bridge, or the host end of a veth pair).
    DeleteLink(String),
    /// Remove a namespace netd created.
    RemoveNetns(PathBuf),
    /// Remove a network from the dataplane.
    DataplaneNetwork {
        network: Network,
        bridge_ifindex: u32,
    },
    /// Remove an endpoint attachment from the dataplane.
    DataplaneEndpoint {
        endpoint: String,
        network: Network,
        attachment: Attachment,
        host_ifindex: u32,
        bridge_ifindex: u32,
    },
    /// Withdraw a publication from the dataplane.
    DataplaneUnpublish {
        publication: Publication,
        network: Network,
        container_ip: std::net::Ipv4Addr,
    },
    /// Put a publication back into the dataplane (undoing an unpublish).
    DataplanePublish {
        publication: Publication,
        network: Network,
        container_ip: std::net::Ipv4Addr,
    },
}

/// The steps taken so far, reversed on [`UndoLog::rollback`].
#[derive(Debug, Default)]
pub(crate) struct UndoLog(Vec<Undo>);

impl UndoLog {
    pub(crate) fn push(&mut self, undo: Undo) {
        self.0.push(undo);
    }

    /// Reverse every recorded step, newest first. Failures are logged and do not stop
    /// the rest: the error the caller reports is the one that caused the rollback.
    pub(crate) async fn rollback(self, netlink: &Netlink, dataplane: &mut dyn Dataplane) {
        for undo in self.0.into_iter().rev() {
            let result: Result<(), String> = match &undo {
                Undo::DeleteLink(name) => netlink
                    .delete_link(name)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Undo::RemoveNetns(path) => Netns::remove_named(path).map_err(|e| e.to_string()),
                Undo::DataplaneNetwork {
                    network,
                    bridge_ifindex,
                } => dataplane
                    .remove_network(&NetworkView {
                        network,
                        bridge_ifindex: *bridge_ifindex,
                    })
                    .map_err(|e| e.to_string()),
                Undo::DataplaneEndpoint {
                    endpoint,
                    network,
                    attachment,
                    host_ifindex,
                    bridge_ifindex,
                } => dataplane
                    .remove_endpoint(&EndpointView {
                        endpoint,
                        network,
                        attachment,
                        host_ifindex: *host_ifindex,
                        bridge_ifindex: *bridge_ifindex,
                    })
                    .map_err(|e| e.to_string()),
                Undo::DataplaneUnpublish {
                    publication,
                    network,
                    container_ip,
                } => dataplane
                    .unpublish(&PublicationView {
                        publication,
                        network,
                        container_ip: *container_ip,
                    })
                    .map_err(|e| e.to_string()),
                Undo::DataplanePublish {
                    publication,
                    network,
                    container_ip,
                } => dataplane
                    .publish(&PublicationView {
                        publication,
                        network,
                        container_ip: *container_ip,
                    })
                    .map_err(|e| e.to_string()),
            };
            if let Err(error) = result {
                warn!(?undo, %error, "rollback step failed");
            }
        }
    }
}
