//! The benchmark topologies, built fresh for every variant and round.
//!
//! netd (ebpf, iptables):
//! ```text
//!  wan ns             host ns (netd daemon)                       server ns (endpoint)
//!  wan0 203.0.113.2 --- up0 203.0.113.1   bridge 198.51.100.1 --- eth0 198.51.100.x
//! ```
//! limit: the same client and server over one veth pair, nothing in between:
//! ```text
//!  client ns wan0 203.0.113.2 --- server ns eth0 203.0.113.1
//! ```
//! routed (only when asked for): a namespace that only forwards, no bridge, NAT or netd:
//! ```text
//!  wan ns             router ns (ip_forward)                      server ns
//!  wan0 203.0.113.2 --- up0 203.0.113.1   eth1 198.51.100.1 ----- eth0 198.51.100.2
//! ```
//! The wan is the client for DNAT scenarios and the server for SNAT ones.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use netd_tests::{NetnsGuard, netns::netns_path};

use super::{daemon::Netd, iperf::IperfServer, netns, rr::EchoServer, sample::Variant};

/// The host's uplink address; wan clients connect to published ports here.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The wan namespace's address; SNAT scenarios' servers listen here.
pub const WAN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The bridge network netd creates for the benchmark.
pub const NETWORK: &str = "bench";
pub const SUBNET: &str = "198.51.100.0/24";

/// A server the scenarios talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Iperf,
    Rr,
    Crr,
    Udp,
    /// TCP_CRR of the scale scenario. A container port of its own: a wan client that
    /// reuses source ports would otherwise open flows whose reply tuple (container:port
    /// -> client:port) equals that of a closed flow through another published port.
    Scale,
}

impl Service {
    /// The port the server listens on.
    pub fn port(self) -> u16 {
        match self {
            Service::Iperf => 5201,
            Service::Rr => 7001,
            Service::Crr => 7002,
            Service::Udp => 7003,
            Service::Scale => 7004,
        }
    }

    /// The host port that netd publishes it on (below the clients' ephemeral range).
    pub fn host_port(self) -> u16 {
        match self {
            Service::Iperf => 8001,
            Service::Rr => 8002,
            Service::Crr => 8003,
            Service::Udp => 8004,
            Service::Scale => 9000,
        }
    }

    /// Docker's publish spec for it.
    pub fn spec(self) -> String {
        let proto = if self == Service::Udp { "udp" } else { "tcp" };
        format!("{}:{}/{proto}", self.host_port(), self.port())
    }
}

/// Who talks to whom in one direction.
#[derive(Debug, Clone)]
pub struct Route {
    pub client_ns: String,
    pub server_ns: String,
    pub target: Ipv4Addr,
    /// Through netd's DNAT: connect to the published host port, not the server's own.
    pub published: bool,
}

impl Route {
    pub fn addr(&self, s: Service) -> SocketAddr {
        let port = if self.published {
            s.host_port()
        } else {
            s.port()
        };
        SocketAddr::from((self.target, port))
    }
    pub fn client_path(&self) -> PathBuf {
        netns_path(&self.client_ns)
    }
    pub fn server_path(&self) -> PathBuf {
        netns_path(&self.server_ns)
    }
}

/// A built topology. Field order is drop order: servers, then the daemon (which removes
/// the endpoint namespaces), then the namespaces this topology created.
pub struct Topology {
    pub variant: Variant,
    _echo: Vec<EchoServer>,
    _iperf: Vec<IperfServer>,
    pub netd: Option<Netd>,
    /// The endpoint that runs the servers, and one that only holds unused publications.
    pub server_ep: String,
    pub idle_ep: String,
    /// Prefix for further endpoint names in this topology.
    pub name_prefix: String,
    pub dnat: Route,
    pub snat: Route,
    _wan: NetnsGuard,
    _host: NetnsGuard,
    /// routed: the server's namespace (netd's are the daemon's to remove).
    _server: Option<NetnsGuard>,
}

impl Topology {
    /// Build the topology of `variant`; `prefix` makes every name unique.
    pub fn build(
        variant: Variant,
        prefix: &str,
        netd_bin: &Path,
        run_dir: &Path,
        logs: &Path,
    ) -> Result<Topology> {
        match variant {
            Variant::Limit => build_limit(prefix),
            Variant::Routed => build_routed(prefix),
            Variant::Ebpf | Variant::Iptables => {
                build_netd(variant, prefix, netd_bin, run_dir, logs)
            }
        }
        .with_context(|| format!("building the {} topology", variant.name()))
    }

    /// The namespace netd runs in (for limit: the server's; for routed: the router's).
    pub fn host_ns(&self) -> &str {
        self._host.name()
    }
}

fn build_limit(prefix: &str) -> Result<Topology> {
    let client = NetnsGuard::create(&format!("{prefix}c"))?;
    let server = NetnsGuard::create(&format!("{prefix}s"))?;
    netns::veth_pair(
        client.name(),
        "wan0",
        WAN_ADDR,
        server.name(),
        "eth0",
        HOST_ADDR,
    )?;
    without_netd(Variant::Limit, prefix, client, server, None, HOST_ADDR)
}

/// The server's address behind the router.
const ROUTED_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The router's address on the server's side.
const ROUTED_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn build_routed(prefix: &str) -> Result<Topology> {
    let wan = NetnsGuard::create(&format!("{prefix}w"))?;
    let router = NetnsGuard::create(&format!("{prefix}r"))?;
    let server = NetnsGuard::create(&format!("{prefix}s"))?;
    netns::veth_pair(
        wan.name(),
        "wan0",
        WAN_ADDR,
        router.name(),
        "up0",
        HOST_ADDR,
    )?;
    netns::veth_pair(
        router.name(),
        "eth1",
        ROUTED_GATEWAY,
        server.name(),
        "eth0",
        ROUTED_SERVER_ADDR,
    )?;
    for (ns, via) in [(wan.name(), HOST_ADDR), (server.name(), ROUTED_GATEWAY)] {
        netns::ip(&["-n", ns, "route", "add", "default", "via", &via.to_string()])?;
    }
    netns::enable_forwarding(&router.path())?;
    without_netd(
        Variant::Routed,
        prefix,
        wan,
        router,
        Some(server),
        ROUTED_SERVER_ADDR,
    )
}

/// A topology without netd, its links already made: the wan talks to the server at
/// `server_addr`, its own address, in both directions. The server runs in `server`, or
/// in `host` when there is nothing in between.
fn without_netd(
    variant: Variant,
    prefix: &str,
    wan: NetnsGuard,
    host: NetnsGuard,
    server: Option<NetnsGuard>,
    server_addr: Ipv4Addr,
) -> Result<Topology> {
    let server_ns = server.as_ref().unwrap_or(&host).name().to_string();
    netns::tune_client(&wan.path())?;
    netns::tune_client(&netns_path(&server_ns))?;
    let (echo, iperf) = start_servers(wan.name(), &server_ns)?;
    Ok(Topology {
        variant,
        _echo: echo,
        _iperf: iperf,
        netd: None,
        server_ep: String::new(),
        idle_ep: String::new(),
        name_prefix: prefix.to_string(),
        dnat: Route {
            client_ns: wan.name().into(),
            server_ns: server_ns.clone(),
            target: server_addr,
            published: false,
        },
        snat: Route {
            client_ns: server_ns,
            server_ns: wan.name().into(),
            target: WAN_ADDR,
            published: false,
        },
        _wan: wan,
        _host: host,
        _server: server,
    })
}

fn build_netd(
    variant: Variant,
    prefix: &str,
    netd_bin: &Path,
    run_dir: &Path,
    logs: &Path,
) -> Result<Topology> {
    let host = NetnsGuard::create(&format!("{prefix}h"))?;
    let wan = NetnsGuard::create(&format!("{prefix}w"))?;
    netns::veth_pair(host.name(), "up0", HOST_ADDR, wan.name(), "wan0", WAN_ADDR)?;
    netns::ip(&[
        "-n",
        host.name(),
        "route",
        "add",
        "default",
        "via",
        &WAN_ADDR.to_string(),
    ])?;
    netns::tune_client(&wan.path())?;
    let mut netd = Netd::start(
        netd_bin,
        variant,
        &host.path(),
        "up0",
        &run_dir.join(prefix),
        &logs.join(format!("{prefix}-daemon.log")),
    )?;
    netd.api
        .post(
            "/networks",
            &serde_json::json!({ "name": NETWORK, "subnet": SUBNET }),
        )
        .context("creating the benchmark network")?;
    let server_ep = format!("{prefix}s");
    let idle_ep = format!("{prefix}i");
    let server_path = netd
        .endpoint_create(&server_ep, NETWORK)
        .context("creating the server endpoint")?;
    netd.endpoint_create(&idle_ep, NETWORK)
        .context("creating the idle endpoint")?;
    // The server endpoint is also the client of the SNAT scenarios.
    netns::tune_client(&server_path)?;
    let server_ns = server_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| server_ep.clone());
    let (echo, iperf) = start_servers(wan.name(), &server_ns)?;
    for s in [Service::Iperf, Service::Rr, Service::Crr] {
        netd.publish(&server_ep, &s.spec())
            .with_context(|| format!("publishing {}", s.spec()))?;
    }
    Ok(Topology {
        variant,
        _echo: echo,
        _iperf: iperf,
        netd: Some(netd),
        server_ep,
        idle_ep,
        name_prefix: prefix.to_string(),
        dnat: Route {
            client_ns: wan.name().into(),
            server_ns: server_ns.clone(),
            target: HOST_ADDR,
            published: true,
        },
        snat: Route {
            client_ns: server_ns,
            server_ns: wan.name().into(),
            target: WAN_ADDR,
            published: false,
        },
        _wan: wan,
        _host: host,
        _server: None,
    })
}

/// RR/CRR echo servers and iperf3 servers on both sides, so either side can serve.
fn start_servers(wan: &str, server: &str) -> Result<(Vec<EchoServer>, Vec<IperfServer>)> {
    let mut echo = Vec::new();
    let mut iperf = Vec::new();
    for ns in [server, wan] {
        let path = netns_path(ns);
        for s in [Service::Rr, Service::Crr, Service::Scale] {
            echo.push(EchoServer::start(&path, s.port())?);
        }
        iperf.push(IperfServer::start(ns, Service::Iperf.port())?);
    }
    Ok((echo, iperf))
}
