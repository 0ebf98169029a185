//! The daemon: owns the desired state, the netlink handle and the dataplane, applies every
//! change as a transaction, and reconciles the kernel with the state at start.

use std::{net::Ipv4Addr, path::PathBuf};

use crate::{dataplane::DataplaneKind, model::PortRange};

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
    /// Capacity of the NAT table (two entries per masqueraded flow).
    pub nat_max: u32,
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
            snat_ports: PortRange { start: 61000, end: 65535 },
            conntrack_max: 262_144,
            nat_max: 262_144,
        }
    }
}

/// Run the daemon until SIGINT or SIGTERM. Blocking: enters `cfg.netns` first, then builds
/// its own tokio runtime.
pub fn run(_cfg: DaemonConfig) -> anyhow::Result<()> {
    anyhow::bail!("the daemon is not wired yet")
}

/// `netd daemon --cleanup`: detach every program and remove every pin under `cfg.bpffs`,
/// so that nothing of netd's dataplane is left in the kernel. Networks and endpoints are
/// left alone.
pub fn cleanup(_cfg: DaemonConfig) -> anyhow::Result<()> {
    anyhow::bail!("cleanup is not wired yet")
}
