//! `port publish|unpublish`.

use std::{borrow::Cow, net::Ipv4Addr};

use tracing::info;

use super::{
    host_ports,
    service::{Inner, publication_view},
    txn::{Undo, UndoLog},
};
use crate::{
    api::types::{PortPublish, PortUnpublish, PublicationInfo},
    error::{Error, Result},
    model::{PortRange, Publication},
    state::{
        Delta,
        portspec::{self, PortSpec},
    },
};

impl Inner {
    pub(crate) async fn port_publish(&mut self, req: PortPublish) -> Result<Vec<PublicationInfo>> {
        self.refresh_uplink_addrs().await?;
        let publication = self.plan_publication(&req)?;
        let mut undo = UndoLog::default();
        let view = publication_view(&publication, &self.state)?;
        self.dataplane.publish(&view)?;
        undo.push(Undo::DataplaneUnpublish {
            publication: publication.clone(),
            network: view.network.clone(),
            container_ip: view.container_ip,
        });
        self.commit_delta(Delta::Publish(publication.clone()), undo)
            .await?;
        info!(publication = %publication, "port published");
        Ok(vec![self.publication_info(&publication)?])
    }

    /// Validate a publish request against the state; touches nothing.
    fn plan_publication(&self, req: &PortPublish) -> Result<Publication> {
        let endpoint = self
            .state
            .endpoint(&req.endpoint)
            .ok_or_else(|| Error::not_found("endpoint", &req.endpoint))?;
        let spec: PortSpec = req.spec.parse()?;
        let network = match &req.network {
            Some(n) => n.clone(),
            None => endpoint
                .attachments
                .first()
                .map(|a| a.network.clone())
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "endpoint {} is not connected to any network",
                        endpoint.name
                    ))
                })?,
        };
        let net = self.network(&network)?;
        if endpoint.attachment(&network).is_none() {
            return Err(Error::Conflict(format!(
                "endpoint {} is not connected to network {network}",
                endpoint.name
            )));
        }
        if net.internal {
            return Err(Error::Conflict(format!(
                "network {network} is internal: its endpoints cannot publish ports"
            )));
        }
        if let Some(ip) = spec.host_ip {
            self.check_host_ip(ip)?;
        }
        let host_ports = self.free_host_ports(&spec)?;
        // A host range onto one container port means "one free port of the range".
        let container_ports = if spec.container_ports.len() == host_ports.len() {
            spec.container_ports
        } else {
            PortRange::single(spec.container_ports.start)
        };
        Ok(Publication {
            endpoint: endpoint.name.clone(),
            network,
            proto: spec.proto,
            host_ip: spec.bind_ip(),
            host_ports,
            container_ports,
        })
    }

    /// The host ports for `spec`: clear of the other publications and of the host's own
    /// sockets. A port a process holds is refused when asked for by number, as Docker
    /// refuses it (publishing would take that process's traffic: sshd's, say); when netd
    /// picks the port, it moves on past held ones.
    fn free_host_ports(&self, spec: &PortSpec) -> Result<PortRange> {
        let explicit = spec
            .host_ports
            .is_some_and(|h| h.len() == spec.container_ports.len());
        let ip = spec.bind_ip();
        // Ports found held, as publications, so that the next choice passes them by.
        let mut held: Vec<Publication> = Vec::new();
        loop {
            let existing: Cow<'_, [Publication]> = if held.is_empty() {
                Cow::Borrowed(&self.state.publications)
            } else {
                Cow::Owned([&self.state.publications[..], &held[..]].concat())
            };
            let ports = portspec::resolve_host_ports(spec, &existing, self.auto_ports)?;
            let busy = host_ports::first_in_use(spec.proto, ip, ports).map_err(|e| {
                Error::Internal(format!(
                    "checking whether host ports {ports}/{} are free: {e}",
                    spec.proto
                ))
            })?;
            let Some(port) = busy else {
                return Ok(ports);
            };
            if explicit {
                return Err(Error::Conflict(format!(
                    "host port {}:{port}/{} is in use on the host: a process holds it, and \
                     publishing it would take that process's traffic; choose another host port",
                    ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    spec.proto
                )));
            }
            held.push(Publication {
                endpoint: String::new(),
                network: String::new(),
                proto: spec.proto,
                host_ip: ip,
                host_ports: PortRange::single(port),
                container_ports: PortRange::single(port),
            });
        }
    }

    /// Pick up addresses added to (or removed from) the uplink since the daemon started,
    /// so that publishing on a new address works without a restart.
    async fn refresh_uplink_addrs(&mut self) -> Result<()> {
        let addrs: Vec<Ipv4Addr> = self
            .netlink
            .ipv4_addrs(self.uplink.ifindex)
            .await?
            .into_iter()
            .map(|a| a.addr())
            .collect();
        if addrs != self.uplink.addrs {
            info!(uplink = %self.uplink.ifname, ?addrs, "uplink addresses changed");
            let mut uplink = self.uplink.clone();
            uplink.addrs = addrs;
            self.dataplane.set_uplink(&uplink)?;
            self.uplink = uplink;
        }
        Ok(())
    }

    /// A publication's host address must be one this host answers on.
    fn check_host_ip(&self, ip: Ipv4Addr) -> Result<()> {
        let ours = ip.is_unspecified()
            || ip.is_loopback()
            || self.uplink.addrs.contains(&ip)
            || self.uplink.snat_ip == Some(ip);
        if ours {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "host IP {ip} is not an address of this host (uplink {} has {:?}); use 0.0.0.0, 127.0.0.1 or an uplink address",
                self.uplink.ifname, self.uplink.addrs
            )))
        }
    }

    pub(crate) async fn port_unpublish(
        &mut self,
        req: PortUnpublish,
    ) -> Result<Vec<PublicationInfo>> {
        if self.state.endpoint(&req.endpoint).is_none() {
            return Err(Error::not_found("endpoint", &req.endpoint));
        }
        let spec = req
            .spec
            .as_deref()
            .map(|s| s.parse::<PortSpec>().map_err(Error::from))
            .transpose()?;
        let matches = |p: &Publication| {
            p.endpoint == req.endpoint && spec.as_ref().is_none_or(|s| s.matches(p))
        };
        let gone: Vec<Publication> = self
            .state
            .publications
            .iter()
            .filter(|p| matches(p))
            .cloned()
            .collect();
        if gone.is_empty() {
            let what = req.spec.as_deref().unwrap_or("any port");
            return Err(Error::NotFound {
                kind: "publication",
                name: format!("{what} of endpoint {}", req.endpoint),
            });
        }
        let infos = gone
            .iter()
            .map(|p| self.publication_info(p))
            .collect::<Result<Vec<_>>>()?;
        let mut undo = UndoLog::default();
        for p in &gone {
            let view = publication_view(p, &self.state)?;
            let (network, container_ip) = (view.network.clone(), view.container_ip);
            if let Err(e) = self.dataplane.unpublish(&view) {
                undo.rollback(&self.netlink, self.dataplane.as_mut()).await;
                return Err(e.into());
            }
            undo.push(Undo::DataplanePublish {
                publication: p.clone(),
                network,
                container_ip,
            });
        }
        let count = gone.len();
        self.commit_delta(Delta::Unpublish(gone), undo).await?;
        info!(endpoint = %req.endpoint, count, "ports unpublished");
        Ok(infos)
    }
}
