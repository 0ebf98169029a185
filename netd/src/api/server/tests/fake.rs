//! The fake daemon of the router tests: in memory, with just enough logic to produce
//! every error kind and every reply type.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use ipnet::Ipv4Net;
use tokio::sync::Barrier;

use crate::{
    api::{Api, types::*},
    dataplane::{DataplaneKind, DataplaneStats, Flow, InterfaceCounters},
    error::{Error, Result},
    model::{Attachment, Endpoint, MacAddr, NetnsRef, Network, PortRange, Proto, Publication},
};

#[derive(Default)]
pub(crate) struct FakeState {
    pub(crate) networks: Vec<Network>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) publications: Vec<PublicationInfo>,
    pub(crate) flushes: Vec<ConntrackFlush>,
}

/// An in-memory daemon with just enough logic to produce every error kind.
#[derive(Default)]
pub(crate) struct FakeApi {
    pub(crate) state: Mutex<FakeState>,
    /// `info` waits on the first barrier, then on the second if any: lets a test hold a
    /// request inside the handler.
    /// The namespace path of endpoints created without one, instead of /run/netns/NAME.
    pub(crate) netns_path: Option<std::path::PathBuf>,
    pub(crate) info_gates: Option<(Arc<Barrier>, Option<Arc<Barrier>>)>,
    /// How many `info` calls got past their gates.
    pub(crate) infos_done: AtomicUsize,
}

impl FakeApi {
    fn net_info(s: &FakeState, n: &Network) -> NetworkInfo {
        let endpoints = s
            .endpoints
            .iter()
            .filter_map(|e| e.attachment(&n.name).map(|a| (e.name.clone(), a.ip)))
            .collect();
        NetworkInfo {
            network: n.clone(),
            endpoints,
        }
    }

    fn ep_info(s: &FakeState, e: &Endpoint) -> EndpointInfo {
        let publications = s
            .publications
            .iter()
            .filter(|p| p.publication.endpoint == e.name)
            .map(|p| p.publication.clone())
            .collect();
        EndpointInfo {
            endpoint: e.clone(),
            publications,
        }
    }

    fn attach(s: &FakeState, network: &str, ip: Option<String>) -> Result<Attachment> {
        let net = s.networks.iter().find(|n| n.name == network);
        let net = net.ok_or_else(|| Error::not_found("network", network))?;
        let ip = match ip {
            Some(ip) => ip
                .parse()
                .map_err(|_| Error::Invalid(format!("invalid IP {ip:?}")))?,
            None => {
                let used = s.endpoints.iter().flat_map(|e| &e.attachments).count() as u32;
                Ipv4Addr::from(u32::from(net.gateway) + 1 + used)
            }
        };
        Ok(Attachment {
            network: network.to_string(),
            ip,
            mac: MacAddr::from_ipv4(ip),
            host_ifname: format!("vh{}", u32::from(ip) & 0xffff),
            ifname: "eth0".to_string(),
        })
    }

    fn endpoint_mut<'a>(s: &'a mut FakeState, name: &str) -> Result<&'a mut Endpoint> {
        s.endpoints
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::not_found("endpoint", name))
    }
}

/// `[HOST_PORT:]CONTAINER_PORT[/udp]`; a missing host port becomes 32768.
fn fake_spec(spec: &str) -> Result<(Proto, u16, u16)> {
    let bad = || Error::Invalid(format!("invalid port spec {spec:?}"));
    let (ports, proto) = match spec.split_once('/') {
        Some((p, "udp")) => (p, Proto::Udp),
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some(_) => return Err(bad()),
        None => (spec, Proto::Tcp),
    };
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (h.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?),
        None => (32768, ports.parse().map_err(|_| bad())?),
    };
    Ok((proto, host, container))
}

impl Api for FakeApi {
    async fn info(&self) -> Result<DaemonInfo> {
        if let Some((entered, release)) = &self.info_gates {
            entered.wait().await;
            if let Some(release) = release {
                release.wait().await;
            }
        }
        self.infos_done.fetch_add(1, Ordering::SeqCst);
        Ok(DaemonInfo {
            version: "test".into(),
            dataplane: DataplaneKind::Ebpf,
            uplink: "eth9".into(),
            uplink_addrs: vec![Ipv4Addr::new(203, 0, 113, 2)],
            state_dir: "/tmp/state".into(),
            bpffs: "/tmp/bpf".into(),
        })
    }

    async fn network_create(&self, req: NetworkCreate) -> Result<NetworkInfo> {
        let mut s = self.state.lock().unwrap();
        if req.name == "boom" {
            return Err(Error::Internal(
                "creating bridge nd-boom: kernel said no".into(),
            ));
        }
        if s.networks.iter().any(|n| n.name == req.name) {
            return Err(Error::Conflict(format!(
                "network {:?} already exists",
                req.name
            )));
        }
        let subnet = req.subnet.as_deref().unwrap_or("10.9.0.0/24");
        let subnet: Ipv4Net = subnet
            .parse()
            .map_err(|_| Error::Invalid(format!("invalid subnet {subnet:?}")))?;
        let network = Network {
            name: req.name.clone(),
            id: s.networks.len() as u32 + 1,
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            ip_range: None,
            internal: req.internal,
            icc: req.icc.unwrap_or(true),
            masquerade: req.masquerade.unwrap_or(true),
            mtu: req.mtu.unwrap_or(1500),
            bridge: req.bridge.unwrap_or_else(|| format!("nd-{}", req.name)),
        };
        s.networks.push(network.clone());
        Ok(Self::net_info(&s, &network))
    }

    async fn network_list(&self) -> Result<Vec<NetworkInfo>> {
        let s = self.state.lock().unwrap();
        Ok(s.networks.iter().map(|n| Self::net_info(&s, n)).collect())
    }

    async fn network_inspect(&self, name: String) -> Result<NetworkInfo> {
        let s = self.state.lock().unwrap();
        let n = s.networks.iter().find(|n| n.name == name);
        Ok(Self::net_info(
            &s,
            n.ok_or_else(|| Error::not_found("network", &name))?,
        ))
    }

    async fn network_remove(&self, name: String) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let i = s.networks.iter().position(|n| n.name == name);
        let i = i.ok_or_else(|| Error::not_found("network", &name))?;
        if s.endpoints.iter().any(|e| e.attachment(&name).is_some()) {
            return Err(Error::Conflict(format!("network {name:?} has endpoints")));
        }
        s.networks.remove(i);
        Ok(())
    }

    async fn endpoint_create(&self, req: EndpointCreate) -> Result<EndpointInfo> {
        let mut s = self.state.lock().unwrap();
        if s.endpoints.iter().any(|e| e.name == req.name) {
            return Err(Error::Conflict(format!(
                "endpoint {:?} already exists",
                req.name
            )));
        }
        let network = req.network.unwrap_or_else(|| "netd0".into());
        let attachment = Self::attach(&s, &network, req.ip)?;
        let netns = match req.netns {
            Some(p) => NetnsRef {
                path: p.into(),
                owned: false,
            },
            None => NetnsRef {
                path: self
                    .netns_path
                    .clone()
                    .unwrap_or_else(|| format!("/run/netns/{}", req.name).into()),
                owned: true,
            },
        };
        let e = Endpoint {
            name: req.name,
            netns,
            attachments: vec![attachment],
        };
        s.endpoints.push(e.clone());
        Ok(Self::ep_info(&s, &e))
    }

    async fn endpoint_list(&self) -> Result<Vec<EndpointInfo>> {
        let s = self.state.lock().unwrap();
        Ok(s.endpoints.iter().map(|e| Self::ep_info(&s, e)).collect())
    }

    async fn endpoint_inspect(&self, name: String) -> Result<EndpointInfo> {
        let s = self.state.lock().unwrap();
        let e = s.endpoints.iter().find(|e| e.name == name);
        Ok(Self::ep_info(
            &s,
            e.ok_or_else(|| Error::not_found("endpoint", &name))?,
        ))
    }

    async fn endpoint_remove(&self, name: String) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let i = s.endpoints.iter().position(|e| e.name == name);
        s.endpoints
            .remove(i.ok_or_else(|| Error::not_found("endpoint", &name))?);
        s.publications.retain(|p| p.publication.endpoint != name);
        Ok(())
    }

    async fn endpoint_connect(&self, name: String, req: EndpointConnect) -> Result<EndpointInfo> {
        let mut s = self.state.lock().unwrap();
        let mut attachment = Self::attach(&s, &req.network, req.ip)?;
        let e = Self::endpoint_mut(&mut s, &name)?;
        if e.attachment(&req.network).is_some() {
            return Err(Error::Conflict(format!(
                "{name} is already on {}",
                req.network
            )));
        }
        attachment.ifname = format!("eth{}", e.attachments.len());
        e.attachments.push(attachment);
        let e = e.clone();
        Ok(Self::ep_info(&s, &e))
    }

    async fn endpoint_disconnect(
        &self,
        name: String,
        req: EndpointDisconnect,
    ) -> Result<EndpointInfo> {
        let mut s = self.state.lock().unwrap();
        let e = Self::endpoint_mut(&mut s, &name)?;
        let before = e.attachments.len();
        e.attachments.retain(|a| a.network != req.network);
        if e.attachments.len() == before {
            return Err(Error::not_found(
                "attachment",
                format!("{name} on {}", req.network),
            ));
        }
        let e = e.clone();
        Ok(Self::ep_info(&s, &e))
    }

    async fn port_publish(&self, req: PortPublish) -> Result<Vec<PublicationInfo>> {
        let mut s = self.state.lock().unwrap();
        let (proto, host, container) = fake_spec(&req.spec)?;
        let e = Self::endpoint_mut(&mut s, &req.endpoint)?;
        let a = &e.attachments[0];
        let p = PublicationInfo {
            publication: Publication {
                endpoint: req.endpoint.clone(),
                network: req.network.unwrap_or_else(|| a.network.clone()),
                proto,
                host_ip: None,
                host_ports: PortRange::single(host),
                container_ports: PortRange::single(container),
            },
            container_ip: a.ip,
        };
        if s.publications
            .iter()
            .any(|q| q.publication.conflicts_with(&p.publication))
        {
            return Err(Error::Conflict(format!(
                "port {host}/{proto} is already published"
            )));
        }
        s.publications.push(p.clone());
        Ok(vec![p])
    }

    async fn port_unpublish(&self, req: PortUnpublish) -> Result<Vec<PublicationInfo>> {
        let mut s = self.state.lock().unwrap();
        Self::endpoint_mut(&mut s, &req.endpoint)?;
        let spec = req.spec.as_deref().map(fake_spec).transpose()?;
        let matches = |p: &PublicationInfo| {
            p.publication.endpoint == req.endpoint
                && spec.is_none_or(|(proto, _, c)| {
                    p.publication.proto == proto && p.publication.container_ports.start == c
                })
        };
        let removed: Vec<_> = s
            .publications
            .iter()
            .filter(|p| matches(p))
            .cloned()
            .collect();
        s.publications.retain(|p| !matches(p));
        Ok(removed)
    }

    async fn port_list(&self) -> Result<Vec<PublicationInfo>> {
        Ok(self.state.lock().unwrap().publications.clone())
    }

    async fn stats(&self) -> Result<DataplaneStats> {
        Ok(DataplaneStats {
            dataplane: "ebpf".into(),
            interfaces: vec![InterfaceCounters {
                ifindex: 7,
                ifname: "eth9".into(),
                rx_packets: 10,
                rx_bytes: 1000,
                tx_packets: 20,
                tx_bytes: 2000,
            }],
            ..Default::default()
        })
    }

    async fn conntrack_list(&self) -> Result<Vec<Flow>> {
        Ok(vec![Flow {
            proto: "tcp".into(),
            original: "10.9.0.2:40000 -> 198.51.100.1:80".into(),
            translated: "203.0.113.2:40000 -> 198.51.100.1:80".into(),
            state: "established".into(),
            age_secs: 5,
            expires_in_secs: 7435,
        }])
    }

    async fn conntrack_flush(&self, req: ConntrackFlush) -> Result<ConntrackFlushed> {
        let mut s = self.state.lock().unwrap();
        if let Some(name) = &req.endpoint {
            Self::endpoint_mut(&mut s, name)?;
        }
        s.flushes.push(req);
        Ok(ConntrackFlushed {
            removed: s.flushes.len() as u64,
        })
    }
}
