//! The daemon's service object: one lock around the desired state and the kernel handles,
//! so concurrent API calls are applied one at a time.

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::txn::UndoLog;
use crate::{
    api::{Api, types::*},
    dataplane::{Dataplane, DataplaneStats, Flow, NetworkView, PublicationView, UplinkView},
    error::{Error, Result},
    model::{DesiredState, Network, PortRange, Publication},
    netlink::Netlink,
    state::{Delta, StateStore},
};

/// Everything a mutation touches, behind the daemon's lock.
pub(crate) struct Inner {
    pub(crate) state: DesiredState,
    pub(crate) store: StateStore,
    pub(crate) netlink: Netlink,
    pub(crate) dataplane: Box<dyn Dataplane>,
    pub(crate) uplink: UplinkView,
    /// Host ports handed out when a spec leaves the host port out.
    pub(crate) auto_ports: PortRange,
    /// When the state last changed; the journal is compacted once changes pause.
    pub(crate) last_change: Instant,
}

/// How long changes must pause before the journal is folded into a snapshot.
const COMPACT_AFTER_IDLE: Duration = Duration::from_millis(250);

/// The running daemon; implements the [`Api`].
pub struct Daemon {
    inner: Mutex<Inner>,
    info: DaemonInfo,
}

impl Daemon {
    pub(crate) fn new(inner: Inner, info: DaemonInfo) -> Self {
        Daemon {
            inner: Mutex::new(inner),
            info,
        }
    }

    /// Runs for the daemon's lifetime: writes a snapshot when the state journal is due
    /// for compaction and no change came for [`COMPACT_AFTER_IDLE`], so that the
    /// O(state) write (tens of milliseconds at ten thousand publications) lands between
    /// requests rather than on one.
    pub(crate) async fn compact_when_idle(self: Arc<Self>) {
        loop {
            tokio::time::sleep(COMPACT_AFTER_IDLE).await;
            let mut inner = self.inner.lock().await;
            if inner.last_change.elapsed() < COMPACT_AFTER_IDLE
                || !inner.store.compaction_due(&inner.state)
            {
                continue;
            }
            let Inner { store, state, .. } = &mut *inner;
            match store.save(state) {
                Ok(()) => debug!("state journal compacted into a snapshot"),
                // The journal stays valid; the next pause retries.
                Err(e) => warn!(error = %e, "compacting the state journal"),
            }
        }
    }
}

impl Inner {
    /// Persist `next` and make it the current state. When the write fails the kernel
    /// steps in `undo` are reversed, so memory, disk and kernel stay in agreement.
    pub(crate) async fn commit(&mut self, next: DesiredState, undo: UndoLog) -> Result<()> {
        if let Err(e) = self.store.save(&next) {
            undo.rollback(&self.netlink, self.dataplane.as_mut()).await;
            return Err(e.into());
        }
        self.state = next;
        self.last_change = Instant::now();
        Ok(())
    }

    /// Persist one publication change and apply it to the state in place: a journal
    /// line instead of a copy and a rewrite of the whole state, which at thousands of
    /// publications cost tens of milliseconds per port. When the write fails the kernel
    /// steps in `undo` are reversed and the state is left as it was.
    pub(crate) async fn commit_delta(&mut self, delta: Delta, undo: UndoLog) -> Result<()> {
        if let Err(e) = self.store.record(&delta, &self.state) {
            undo.rollback(&self.netlink, self.dataplane.as_mut()).await;
            return Err(e.into());
        }
        delta.apply(&mut self.state);
        self.last_change = Instant::now();
        Ok(())
    }

    /// Pass a step's success on with its undo log; on failure, reverse what the log
    /// recorded and pass the error on.
    pub(crate) async fn rollback_on_err<T>(
        &mut self,
        result: Result<T>,
        undo: UndoLog,
    ) -> Result<(T, UndoLog)> {
        match result {
            Ok(v) => Ok((v, undo)),
            Err(e) => {
                undo.rollback(&self.netlink, self.dataplane.as_mut()).await;
                Err(e)
            }
        }
    }

    pub(crate) fn network(&self, name: &str) -> Result<&Network> {
        self.state
            .network(name)
            .ok_or_else(|| Error::not_found("network", name))
    }

    /// The ifindex of a link netd manages; its absence is a broken host, not bad input.
    pub(crate) async fn ifindex(&self, name: &str) -> Result<u32> {
        match self.netlink.link_by_name(name).await? {
            Some(link) => Ok(link.index),
            None => Err(Error::Internal(format!(
                "interface {name} is missing; restart the daemon to recreate it"
            ))),
        }
    }

    /// The address a publication forwards to.
    pub(crate) fn container_ip(&self, p: &Publication) -> Result<Ipv4Addr> {
        self.state
            .endpoint(&p.endpoint)
            .and_then(|e| e.attachment(&p.network))
            .map(|a| a.ip)
            .ok_or_else(|| Error::Internal(format!("publication {p} has no endpoint address")))
    }

    pub(crate) fn publication_info(&self, p: &Publication) -> Result<PublicationInfo> {
        Ok(PublicationInfo {
            publication: p.clone(),
            container_ip: self.container_ip(p)?,
        })
    }

    pub(crate) fn network_info(&self, net: &Network) -> NetworkInfo {
        let endpoints = self
            .state
            .endpoints_on(&net.name)
            .filter_map(|e| e.attachment(&net.name).map(|a| (e.name.clone(), a.ip)))
            .collect();
        NetworkInfo {
            network: net.clone(),
            endpoints,
        }
    }

    pub(crate) fn endpoint_info(&self, name: &str) -> Result<EndpointInfo> {
        let endpoint = self
            .state
            .endpoint(name)
            .ok_or_else(|| Error::not_found("endpoint", name))?;
        let publications = self
            .state
            .publications
            .iter()
            .filter(|p| p.endpoint == name)
            .cloned()
            .collect();
        Ok(EndpointInfo {
            endpoint: endpoint.clone(),
            publications,
        })
    }

    async fn stats(&self) -> Result<DataplaneStats> {
        let mut stats = self.dataplane.stats()?;
        let links = self.netlink.links().await?;
        for iface in &mut stats.interfaces {
            if iface.ifname.is_empty()
                && let Some(link) = links.iter().find(|l| l.index == iface.ifindex)
            {
                iface.ifname = link.name.clone();
            }
        }
        Ok(stats)
    }
}

/// A publication together with what the dataplane needs to program it.
pub(crate) fn publication_view<'a>(
    p: &'a Publication,
    state: &'a DesiredState,
) -> Result<PublicationView<'a>> {
    let network = state
        .network(&p.network)
        .ok_or_else(|| Error::not_found("network", &p.network))?;
    let container_ip = state
        .endpoint(&p.endpoint)
        .and_then(|e| e.attachment(&p.network))
        .map(|a| a.ip)
        .ok_or_else(|| Error::Internal(format!("publication {p} has no endpoint address")))?;
    Ok(PublicationView {
        publication: p,
        network,
        container_ip,
    })
}

pub(crate) fn network_view(net: &Network, bridge_ifindex: u32) -> NetworkView<'_> {
    NetworkView {
        network: net,
        bridge_ifindex,
    }
}

impl Api for Daemon {
    async fn info(&self) -> Result<DaemonInfo> {
        let mut info = self.info.clone();
        info.uplink_addrs = self.inner.lock().await.uplink.addrs.clone();
        Ok(info)
    }

    async fn network_create(&self, req: NetworkCreate) -> Result<NetworkInfo> {
        self.inner.lock().await.network_create(req).await
    }
    async fn network_list(&self) -> Result<Vec<NetworkInfo>> {
        let inner = self.inner.lock().await;
        Ok(inner
            .state
            .networks
            .iter()
            .map(|n| inner.network_info(n))
            .collect())
    }
    async fn network_inspect(&self, name: String) -> Result<NetworkInfo> {
        let inner = self.inner.lock().await;
        Ok(inner.network_info(inner.network(&name)?))
    }
    async fn network_remove(&self, name: String) -> Result<()> {
        self.inner.lock().await.network_remove(&name).await
    }

    async fn endpoint_create(&self, req: EndpointCreate) -> Result<EndpointInfo> {
        self.inner.lock().await.endpoint_create(req).await
    }
    async fn endpoint_list(&self) -> Result<Vec<EndpointInfo>> {
        let inner = self.inner.lock().await;
        inner
            .state
            .endpoints
            .iter()
            .map(|e| inner.endpoint_info(&e.name))
            .collect()
    }
    async fn endpoint_inspect(&self, name: String) -> Result<EndpointInfo> {
        self.inner.lock().await.endpoint_info(&name)
    }
    async fn endpoint_remove(&self, name: String) -> Result<()> {
        self.inner.lock().await.endpoint_remove(&name).await
    }
    async fn endpoint_connect(&self, name: String, req: EndpointConnect) -> Result<EndpointInfo> {
        self.inner.lock().await.endpoint_connect(&name, req).await
    }
    async fn endpoint_disconnect(
        &self,
        name: String,
        req: EndpointDisconnect,
    ) -> Result<EndpointInfo> {
        self.inner
            .lock()
            .await
            .endpoint_disconnect(&name, &req.network)
            .await
    }

    async fn port_publish(&self, req: PortPublish) -> Result<Vec<PublicationInfo>> {
        self.inner.lock().await.port_publish(req).await
    }
    async fn port_unpublish(&self, req: PortUnpublish) -> Result<Vec<PublicationInfo>> {
        self.inner.lock().await.port_unpublish(req).await
    }
    async fn port_list(&self) -> Result<Vec<PublicationInfo>> {
        let inner = self.inner.lock().await;
        inner
            .state
            .publications
            .iter()
            .map(|p| inner.publication_info(p))
            .collect()
    }

    async fn stats(&self) -> Result<DataplaneStats> {
        self.inner.lock().await.stats().await
    }
    async fn conntrack_list(&self) -> Result<Vec<Flow>> {
        Ok(self.inner.lock().await.dataplane.conntrack()?)
    }
    async fn conntrack_flush(&self, req: ConntrackFlush) -> Result<ConntrackFlushed> {
        let mut inner = self.inner.lock().await;
        let removed = match req.endpoint {
            None => inner.dataplane.flush_conntrack(None)?,
            Some(name) => {
                let ips: Vec<Ipv4Addr> = inner
                    .state
                    .endpoint(&name)
                    .ok_or_else(|| Error::not_found("endpoint", &name))?
                    .attachments
                    .iter()
                    .map(|a| a.ip)
                    .collect();
                inner.dataplane.flush_conntrack(Some(&ips))?
            }
        };
        Ok(ConntrackFlushed { removed })
    }
}
