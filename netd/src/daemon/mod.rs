//! The daemon: owns the desired state, the netlink handle and the dataplane, applies every
//! change as a transaction, and reconciles the kernel with the state at start.

mod endpoints;
mod host_ports;
mod networks;
mod ports;
mod reconcile;
mod service;
mod txn;

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc};

use anyhow::{Context as _, anyhow};
use tracing::info;

pub use service::Daemon;
use service::Inner;

use crate::{
    api::types::{DaemonInfo, NetworkCreate},
    dataplane::{
        Dataplane, DataplaneKind, UplinkView,
        ebpf::{EbpfConfig, EbpfDataplane},
        iptables::{IptablesConfig, IptablesDataplane},
    },
    model::{DEFAULT_BRIDGE, DEFAULT_NETWORK, DEFAULT_SUBNET, PortRange},
    netlink::{Netlink, Netns},
    state::StateStore,
};

/// Host ports chosen for specs without one: the Linux default ephemeral range, as Docker
/// uses.
const AUTO_HOST_PORTS: PortRange = PortRange {
    start: 32768,
    end: 60999,
};

/// Everything `netd daemon` is started with.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The API's UNIX socket.
    pub socket: PathBuf,
    /// Where the desired state is persisted.
    pub state_dir: PathBuf,
    /// bpffs directory for pinned maps and links; bpffs is mounted there if missing.
    pub bpffs: PathBuf,
    /// Uplink interface; the interface of the default route when `None`.
    pub uplink: Option<String>,
    /// Enter this network namespace before anything else (the lab and the tests run the
    /// daemon in a fake host namespace this way, sharing the mount namespace).
    pub netns: Option<PathBuf>,
    pub dataplane: DataplaneKind,
    /// Create the default network `netd0` on first start.
    pub default_network: bool,
    /// Masquerade to this address instead of the uplink's first address.
    pub snat_ip: Option<Ipv4Addr>,
    /// Source ports for masquerade when the original one is taken; kept clear of the
    /// host's ephemeral range.
    pub snat_ports: PortRange,
    /// Capacity of the conntrack table.
    pub conntrack_max: u32,
    /// Capacity of the NAT table: two entries per translated flow, so twice
    /// `conntrack_max` unless set.
    pub nat_max: u32,
    /// cgroup v2 whose processes reach published ports at 127.0.0.1 and the host's own
    /// addresses; the v2 root (every process of the daemon's namespace) when `None`.
    pub cgroup: Option<PathBuf>,
}

impl DaemonConfig {
    /// The defaults `netd daemon` documents.
    pub fn with_defaults() -> Self {
        DaemonConfig {
            socket: PathBuf::from("/run/netd/netd.sock"),
            state_dir: PathBuf::from("/var/lib/netd"),
            bpffs: PathBuf::from("/sys/fs/bpf/netd"),
            uplink: None,
            netns: None,
            dataplane: DataplaneKind::Ebpf,
            default_network: true,
            snat_ip: None,
            snat_ports: PortRange {
                start: 61000,
                end: 65535,
            },
            conntrack_max: 262_144,
            // Every translated flow holds two NAT entries (forward and reverse).
            nat_max: 2 * 262_144,
            cgroup: None,
        }
    }
}

/// Run the daemon until SIGINT or SIGTERM. Blocking: enters `cfg.netns` first, so that
/// every thread of the runtime built afterwards lives in it.
pub fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    crate::return_large_blocks_when_freed();
    if let Some(ns) = &cfg.netns {
        Netns::enter(ns).with_context(|| format!("entering network namespace {}", ns.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(cfg))
}

async fn serve(cfg: DaemonConfig) -> anyhow::Result<()> {
    // Refuse before touching the kernel: a second daemon with another state directory
    // would otherwise reconcile the host against a different state.
    if std::os::unix::net::UnixStream::connect(&cfg.socket).is_ok() {
        return Err(anyhow!(
            "another netd daemon is serving {}; stop it or pass another --socket",
            cfg.socket.display()
        ));
    }
    let store = StateStore::open(&cfg.state_dir)?;
    let netlink = Netlink::new()?;
    let uplink = find_uplink(&netlink, &cfg).await?;
    crate::netlink::enable_ip_forward()?;
    let dataplane = open_dataplane(&cfg)?;
    let saved = store.load()?;
    let first_start = saved.is_none();
    let mut inner = Inner {
        state: saved.unwrap_or_default(),
        store,
        netlink,
        dataplane,
        uplink: uplink.clone(),
        auto_ports: AUTO_HOST_PORTS,
        last_change: std::time::Instant::now(),
    };
    inner
        .reconcile(!first_start)
        .await
        .context("reconciling the host with the saved state")?;
    if first_start && cfg.default_network && inner.state.network(DEFAULT_NETWORK).is_none() {
        inner
            .network_create(NetworkCreate {
                name: DEFAULT_NETWORK.into(),
                subnet: Some(DEFAULT_SUBNET.into()),
                bridge: Some(DEFAULT_BRIDGE.into()),
                ..Default::default()
            })
            .await
            .context("creating the default network")?;
    }
    let info = DaemonInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        dataplane: cfg.dataplane,
        uplink: uplink.ifname.clone(),
        uplink_addrs: uplink.addrs.clone(),
        state_dir: cfg.state_dir.display().to_string(),
        bpffs: cfg.bpffs.display().to_string(),
    };
    // Loading the eBPF object parsed the kernel's BTF: megabytes, freed since.
    crate::release_free_memory();
    info!(uplink = %uplink.ifname, socket = %cfg.socket.display(), dataplane = ?cfg.dataplane, "netd daemon ready");
    let daemon = Arc::new(Daemon::new(inner, info));
    tokio::spawn(daemon.clone().compact_when_idle());
    crate::api::server::serve(daemon, &cfg.socket, shutdown_signal()).await?;
    // Bridges, veths, pinned maps and links stay: traffic keeps flowing while the daemon
    // is down, and the next start picks everything up again.
    info!("netd daemon stopped; the dataplane stays in place");
    Ok(())
}

fn open_dataplane(cfg: &DaemonConfig) -> anyhow::Result<Box<dyn Dataplane>> {
    match cfg.dataplane {
        DataplaneKind::Ebpf => {
            let mut dataplane = EbpfDataplane::open(&EbpfConfig {
                bpffs: cfg.bpffs.clone(),
                conntrack_max: cfg.conntrack_max,
                nat_max: cfg.nat_max,
                snat_ports: cfg.snat_ports,
            })?;
            // The programs compare socket netns cookies with ours, so this runs after
            // Netns::enter.
            dataplane.attach_host_access(cfg.cgroup.as_deref())?;
            Ok(Box::new(dataplane))
        }
        DataplaneKind::Iptables => Ok(Box::new(IptablesDataplane::new(IptablesConfig::default()))),
    }
}

/// The uplink named in the config, or the interface of the default route.
async fn find_uplink(netlink: &Netlink, cfg: &DaemonConfig) -> anyhow::Result<UplinkView> {
    let link = match &cfg.uplink {
        Some(name) => netlink
            .link_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("uplink interface {name} does not exist"))?,
        None => {
            let index = netlink.default_route_ifindex().await?.ok_or_else(|| {
                anyhow!(
                    "there is no IPv4 default route to take the uplink from; pass --uplink IFACE"
                )
            })?;
            netlink
                .link_by_index(index)
                .await?
                .ok_or_else(|| anyhow!("the default route's interface {index} vanished"))?
        }
    };
    let addrs = netlink
        .ipv4_addrs(link.index)
        .await?
        .into_iter()
        .map(|a| a.addr())
        .collect();
    let peer_ingress =
        matches!(link.kind.as_deref(), Some("veth" | "netkit")) && link.peer_netnsid.is_some();
    Ok(UplinkView {
        peer_ingress,
        ifindex: link.index,
        ifname: link.name,
        mac: link.mac.unwrap_or_default(),
        addrs,
        snat_ip: cfg.snat_ip,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the daemon still stops on SIGKILL; keep serving.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}

/// `netd daemon --cleanup`: detach every program and remove every pin under `cfg.bpffs`,
/// so that nothing of netd's dataplane is left in the kernel. Networks and endpoints are
/// left alone.
pub fn cleanup(cfg: DaemonConfig) -> anyhow::Result<()> {
    if let Some(ns) = &cfg.netns {
        Netns::enter(ns).with_context(|| format!("entering network namespace {}", ns.display()))?;
    }
    match cfg.dataplane {
        DataplaneKind::Ebpf => EbpfDataplane::cleanup(&cfg.bpffs)?,
        DataplaneKind::Iptables => IptablesDataplane::cleanup()?,
    }
    Ok(())
}
