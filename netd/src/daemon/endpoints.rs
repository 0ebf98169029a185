//! `endpoint create|rm|connect|disconnect`.

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use tracing::{info, warn};

use super::{
    networks::fnv1a,
    service::{Inner, publication_view},
    txn::{Undo, UndoLog},
};
use crate::{
    api::types::{EndpointConnect, EndpointCreate, EndpointInfo},
    dataplane::EndpointView,
    error::{Error, Result},
    model::{Attachment, DEFAULT_NETWORK, Endpoint, MacAddr, NetnsRef, Network},
    netlink::{AttachRequest, Netns},
    state::{ipam, names},
};

impl Inner {
    pub(crate) async fn endpoint_create(&mut self, req: EndpointCreate) -> Result<EndpointInfo> {
        names::validate_name("endpoint", &req.name)?;
        if self.state.endpoint(&req.name).is_some() {
            return Err(Error::Conflict(format!(
                "endpoint {} already exists",
                req.name
            )));
        }
        let net = self
            .network(req.network.as_deref().unwrap_or(DEFAULT_NETWORK))?
            .clone();
        let attachment = self.plan_attachment(
            &req.name,
            &net,
            req.ip.as_deref(),
            req.mac.as_deref(),
            "eth0",
        )?;
        let mut undo = UndoLog::default();
        let result = self
            .create_endpoint_objects(&req, &net, &attachment, &mut undo)
            .await;
        let (endpoint, undo) = self.rollback_on_err(result, undo).await?;
        let mut next = self.state.clone();
        next.ipam_cursor.insert(net.name.clone(), attachment.ip);
        next.endpoints.push(endpoint);
        self.commit(next, undo).await?;
        info!(endpoint = %req.name, network = %net.name, ip = %attachment.ip, "endpoint created");
        self.endpoint_info(&req.name)
    }

    /// Address, MAC and interface names of a new attachment; touches nothing.
    fn plan_attachment(
        &self,
        endpoint: &str,
        net: &Network,
        ip: Option<&str>,
        mac: Option<&str>,
        ifname: &str,
    ) -> Result<Attachment> {
        let requested = ip
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| Error::Invalid(format!("invalid IP address {s:?}")))
            })
            .transpose()?;
        let on_net: Vec<&Attachment> = self
            .state
            .endpoints_on(&net.name)
            .filter_map(|e| e.attachment(&net.name))
            .collect();
        let used: BTreeSet<Ipv4Addr> = on_net.iter().map(|a| a.ip).collect();
        let cursor = self.state.ipam_cursor.get(&net.name).copied();
        let ip = ipam::allocate(net, &used, cursor, requested)?;
        let mac = match mac {
            Some(s) => s
                .parse::<MacAddr>()
                .map_err(|e| Error::Invalid(e.to_string()))?,
            None => MacAddr::from_ipv4(ip),
        };
        if on_net.iter().any(|a| a.mac == mac) {
            return Err(Error::Conflict(format!(
                "MAC address {mac} is already in use on network {}",
                net.name
            )));
        }
        Ok(Attachment {
            network: net.name.clone(),
            ip,
            mac,
            host_ifname: host_ifname(endpoint, &net.name),
            ifname: ifname.to_string(),
        })
    }

    async fn create_endpoint_objects(
        &mut self,
        req: &EndpointCreate,
        net: &Network,
        att: &Attachment,
        undo: &mut UndoLog,
    ) -> Result<Endpoint> {
        let (netns, handle) = match &req.netns {
            Some(path) => {
                let path = PathBuf::from(path);
                if let Some(other) = self.state.endpoints.iter().find(|e| e.netns.path == path) {
                    return Err(Error::Conflict(format!(
                        "namespace {} is already attached as endpoint {}",
                        path.display(),
                        other.name
                    )));
                }
                let ns = Netns::open(&path).map_err(|e| Error::Invalid(e.to_string()))?;
                (NetnsRef { path, owned: false }, ns)
            }
            None => {
                let path = PathBuf::from(Netns::NAMED_DIR).join(&req.name);
                if path.exists() {
                    return Err(Error::Conflict(format!(
                        "network namespace {} already exists; pass --netns {} to attach it",
                        req.name,
                        path.display()
                    )));
                }
                let ns = Netns::create_named(&req.name)?;
                undo.push(Undo::RemoveNetns(path.clone()));
                (NetnsRef { path, owned: true }, ns)
            }
        };
        self.attach(&req.name, &handle, net, att, true, undo)
            .await?;
        Ok(Endpoint {
            name: req.name.clone(),
            netns,
            attachments: vec![att.clone()],
        })
    }

    /// Create the veth pair of one attachment, configured inside the namespace.
    /// Returns the host end's and the bridge's ifindexes.
    pub(crate) async fn plug(
        &self,
        ns: &Netns,
        net: &Network,
        att: &Attachment,
        default_route: bool,
    ) -> Result<(u32, u32)> {
        let bridge_ifindex = self.ifindex(&net.bridge).await?;
        let addr = Ipv4Net::new(att.ip, net.subnet.prefix_len())
            .map_err(|e| Error::Internal(format!("address of {}: {e}", att.host_ifname)))?;
        let host_ifindex = self
            .netlink
            .attach_endpoint(&AttachRequest {
                netns: ns,
                bridge_ifindex,
                host_ifname: &att.host_ifname,
                ifname: &att.ifname,
                mac: att.mac,
                addr,
                gateway: net.gateway,
                default_route,
                mtu: net.mtu,
            })
            .await?;
        Ok((host_ifindex, bridge_ifindex))
    }

    /// Plug one attachment in: veth pair, then the dataplane.
    pub(crate) async fn attach(
        &mut self,
        endpoint: &str,
        ns: &Netns,
        net: &Network,
        att: &Attachment,
        default_route: bool,
        undo: &mut UndoLog,
    ) -> Result<()> {
        let (host_ifindex, bridge_ifindex) = self.plug(ns, net, att, default_route).await?;
        undo.push(Undo::DeleteLink(att.host_ifname.clone()));
        self.dataplane.add_endpoint(&EndpointView {
            endpoint,
            network: net,
            attachment: att,
            host_ifindex,
            bridge_ifindex,
        })?;
        undo.push(Undo::DataplaneEndpoint {
            endpoint: endpoint.to_string(),
            network: net.clone(),
            attachment: att.clone(),
            host_ifindex,
            bridge_ifindex,
        });
        Ok(())
    }

    /// Take one attachment out of the dataplane and delete its veth pair. Idempotent.
    pub(crate) async fn detach(&mut self, endpoint: &str, att: &Attachment) -> Result<()> {
        let net = self.network(&att.network)?.clone();
        let host_ifindex = self
            .netlink
            .link_by_name(&att.host_ifname)
            .await?
            .map(|l| l.index)
            .unwrap_or(0);
        let bridge_ifindex = self
            .netlink
            .link_by_name(&net.bridge)
            .await?
            .map(|l| l.index)
            .unwrap_or(0);
        self.dataplane.remove_endpoint(&EndpointView {
            endpoint,
            network: &net,
            attachment: att,
            host_ifindex,
            bridge_ifindex,
        })?;
        self.netlink.delete_link(&att.host_ifname).await?;
        Ok(())
    }

    /// Withdraw every publication matching `pred` from the dataplane.
    pub(crate) fn unpublish_where(
        &mut self,
        pred: impl Fn(&crate::model::Publication) -> bool,
    ) -> Result<()> {
        for p in self.state.publications.iter().filter(|p| pred(p)) {
            self.dataplane
                .unpublish(&publication_view(p, &self.state)?)?;
        }
        Ok(())
    }

    pub(crate) async fn endpoint_remove(&mut self, name: &str) -> Result<()> {
        let endpoint = self
            .state
            .endpoint(name)
            .ok_or_else(|| Error::not_found("endpoint", name))?
            .clone();
        // Teardown is idempotent, so on failure the state keeps the endpoint and `rm`
        // can simply be retried.
        self.unpublish_where(|p| p.endpoint == name)?;
        for att in &endpoint.attachments {
            self.detach(name, att).await?;
        }
        if endpoint.netns.owned {
            Netns::remove_named(&endpoint.netns.path)?;
        }
        let ips: Vec<Ipv4Addr> = endpoint.attachments.iter().map(|a| a.ip).collect();
        if let Err(e) = self.dataplane.flush_conntrack(Some(&ips)) {
            warn!(endpoint = %name, error = %e, "could not flush the endpoint's flows");
        }
        let mut next = self.state.clone();
        next.endpoints.retain(|e| e.name != name);
        next.publications.retain(|p| p.endpoint != name);
        self.commit(next, UndoLog::default()).await?;
        info!(endpoint = %name, "endpoint removed");
        Ok(())
    }

    pub(crate) async fn endpoint_connect(
        &mut self,
        name: &str,
        req: EndpointConnect,
    ) -> Result<EndpointInfo> {
        let endpoint = self
            .state
            .endpoint(name)
            .ok_or_else(|| Error::not_found("endpoint", name))?
            .clone();
        let net = self.network(&req.network)?.clone();
        if endpoint.attachment(&net.name).is_some() {
            return Err(Error::Conflict(format!(
                "endpoint {name} is already connected to network {}",
                net.name
            )));
        }
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| endpoint.attachments.iter().all(|a| &a.ifname != n))
            .expect("an unused ethN exists");
        let att =
            self.plan_attachment(name, &net, req.ip.as_deref(), req.mac.as_deref(), &ifname)?;
        let ns = Netns::open(&endpoint.netns.path)?;
        let mut undo = UndoLog::default();
        let result = self
            .attach(
                name,
                &ns,
                &net,
                &att,
                endpoint.attachments.is_empty(),
                &mut undo,
            )
            .await;
        let ((), undo) = self.rollback_on_err(result, undo).await?;
        let mut next = self.state.clone();
        next.ipam_cursor.insert(net.name.clone(), att.ip);
        if let Some(e) = next.endpoints.iter_mut().find(|e| e.name == name) {
            e.attachments.push(att);
        }
        self.commit(next, undo).await?;
        info!(endpoint = %name, network = %net.name, "endpoint connected");
        self.endpoint_info(name)
    }

    pub(crate) async fn endpoint_disconnect(
        &mut self,
        name: &str,
        network: &str,
    ) -> Result<EndpointInfo> {
        let endpoint = self
            .state
            .endpoint(name)
            .ok_or_else(|| Error::not_found("endpoint", name))?
            .clone();
        self.network(network)?;
        let att = endpoint
            .attachment(network)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "endpoint {name} is not connected to network {network}"
                ))
            })?
            .clone();
        // Like Docker, ports published on that network go with it.
        self.unpublish_where(|p| p.endpoint == name && p.network == network)?;
        self.detach(name, &att).await?;
        // The default route went with the first attachment's veth: the next one takes
        // it over, as a restart's repair would give it (Docker, too, moves the default
        // gateway to a remaining network).
        let first = endpoint.attachments.first().map(|a| a.network.as_str());
        if first == Some(network)
            && let Some(next) = endpoint.attachments.iter().find(|a| a.network != network)
        {
            let gateway = self.network(&next.network)?.gateway;
            let inner = Netns::open(&endpoint.netns.path)?.netlink()?;
            let link = inner.link_by_name(&next.ifname).await?.ok_or_else(|| {
                Error::Internal(format!(
                    "{} of endpoint {name} is missing from its namespace",
                    next.ifname
                ))
            })?;
            inner
                .ensure_default_route(link.index, &next.ifname, gateway)
                .await?;
        }
        let mut next = self.state.clone();
        next.publications
            .retain(|p| !(p.endpoint == name && p.network == network));
        if let Some(e) = next.endpoints.iter_mut().find(|e| e.name == name) {
            e.attachments.retain(|a| a.network != network);
        }
        self.commit(next, UndoLog::default()).await?;
        info!(endpoint = %name, network = %network, "endpoint disconnected");
        self.endpoint_info(name)
    }
}

/// Host-side veth name: stable for an (endpoint, network) pair so a restart can recreate
/// it, short enough for IFNAMSIZ.
pub(crate) fn host_ifname(endpoint: &str, network: &str) -> String {
    let h = fnv1a(endpoint.bytes().chain([0]).chain(network.bytes()));
    format!("nd{:010x}", h & 0xff_ffff_ffff)
}
