//! Requests and replies of the API. Requests carry user input as strings: the daemon
//! parses them, so every client gets the same validation and the same messages.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::DataplaneKind,
    error::ErrorKind,
    model::{Endpoint, Network, Publication},
};

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

/// `GET /info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub dataplane: DataplaneKind,
    pub uplink: String,
    pub uplink_addrs: Vec<Ipv4Addr>,
    pub state_dir: String,
    pub bpffs: String,
}

/// `POST /networks`: `netd network create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    /// CIDR; when absent, the first free 172.17-31.0.0/16, then a /20 of 192.168.0.0/16.
    pub subnet: Option<String>,
    /// Defaults to the first address of the subnet.
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    #[serde(default)]
    pub internal: bool,
    /// Defaults to true.
    pub icc: Option<bool>,
    /// Defaults to true.
    pub masquerade: Option<bool>,
    /// Defaults to 1500.
    pub mtu: Option<u32>,
    /// Defaults to `nd-<name>` cut to 15 bytes.
    pub bridge: Option<String>,
}

/// A network and who is on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub network: Network,
    /// Endpoint name and its address on this network.
    pub endpoints: Vec<(String, Ipv4Addr)>,
}

/// `POST /endpoints`: `netd endpoint create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCreate {
    pub name: String,
    /// Defaults to the default network.
    pub network: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    /// Attach this existing namespace instead of creating /run/netns/NAME.
    pub netns: Option<String>,
}

/// An endpoint and what it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub publications: Vec<Publication>,
}

/// `POST /endpoints/{name}/connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointConnect {
    pub network: String,
    pub ip: Option<String>,
    pub mac: Option<String>,
}

/// `POST /endpoints/{name}/disconnect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDisconnect {
    pub network: String,
}

/// `POST /ports`: `netd port publish ENDPOINT SPEC`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPublish {
    pub endpoint: String,
    /// Docker's `[HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]`.
    pub spec: String,
    /// Which of the endpoint's networks receives the traffic; its first one by default.
    pub network: Option<String>,
}

/// `POST /ports/unpublish`: `netd port unpublish ENDPOINT [SPEC]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortUnpublish {
    pub endpoint: String,
    /// Without a spec, everything the endpoint publishes.
    pub spec: Option<String>,
}

/// A publication as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicationInfo {
    #[serde(flatten)]
    pub publication: Publication,
    pub container_ip: Ipv4Addr,
}

/// `POST /conntrack/flush`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackFlush {
    /// Only the flows of this endpoint's addresses.
    pub endpoint: Option<String>,
}

/// Reply to `POST /conntrack/flush`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackFlushed {
    pub removed: u64,
}
