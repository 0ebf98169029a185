//! `netd daemon`: options onto [`DaemonConfig`], then the daemon's own blocking entry points.

use std::{net::Ipv4Addr, path::PathBuf};

use clap::Args;

use super::CliError;
use crate::{
    daemon::{self, DaemonConfig},
    dataplane::DataplaneKind,
    model::PortRange,
};

fn defaults() -> DaemonConfig {
    DaemonConfig::with_defaults()
}

/// Options of `netd daemon`.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Where networks, endpoints and publications are persisted
    #[arg(long, value_name = "DIR", default_value_os_t = defaults().state_dir)]
    pub state_dir: PathBuf,
    /// bpffs directory for pinned maps and links (bpffs is mounted there if missing)
    #[arg(long, value_name = "DIR", default_value_os_t = defaults().bpffs)]
    pub bpffs: PathBuf,
    /// Uplink interface [default: the interface of the default route]
    #[arg(long, value_name = "IFACE")]
    pub uplink: Option<String>,
    /// Enter this network namespace first and serve it (mounts stay shared)
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// What carries the traffic
    #[arg(long, value_enum, default_value_t = defaults().dataplane)]
    pub dataplane: DataplaneKind,
    /// Do not create the default network netd0 on first start
    #[arg(long)]
    pub no_default_network: bool,
    /// Masquerade to this address [default: the uplink's first address]
    #[arg(long, value_name = "IP")]
    pub snat_ip: Option<Ipv4Addr>,
    /// Source ports for masquerade when the original one is taken
    #[arg(long, value_name = "START-END", value_parser = parse_port_range,
          default_value_t = defaults().snat_ports)]
    pub snat_ports: PortRange,
    /// Capacity of the conntrack table
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          default_value_t = defaults().conntrack_max)]
    pub conntrack_max: u32,
    /// Capacity of the NAT table (two entries per translated flow) [default: twice
    /// --conntrack-max]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub nat_max: Option<u32>,
    /// cgroup v2 whose processes reach published ports at 127.0.0.1 and the host's
    /// addresses [default: the v2 root: /sys/fs/cgroup/unified or /sys/fs/cgroup]
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Detach every program and remove every pin under --bpffs, then exit (networks and
    /// endpoints are left alone)
    #[arg(long)]
    pub cleanup: bool,
}

impl DaemonArgs {
    /// The daemon's configuration; `socket` is the global `--socket`.
    pub fn config(&self, socket: PathBuf) -> DaemonConfig {
        // Start from the defaults so that options the CLI does not know keep theirs.
        let mut cfg = DaemonConfig::with_defaults();
        cfg.socket = socket;
        cfg.state_dir = self.state_dir.clone();
        cfg.bpffs = self.bpffs.clone();
        cfg.uplink = self.uplink.clone();
        cfg.netns = self.netns.clone();
        cfg.dataplane = self.dataplane;
        cfg.default_network = !self.no_default_network;
        cfg.snat_ip = self.snat_ip;
        cfg.snat_ports = self.snat_ports;
        cfg.conntrack_max = self.conntrack_max;
        cfg.nat_max = self
            .nat_max
            .unwrap_or_else(|| self.conntrack_max.saturating_mul(2));
        cfg.cgroup = self.cgroup.clone();
        cfg
    }

    /// Run the daemon, or clean up with `--cleanup`; blocks until it is done.
    pub fn run(&self, socket: PathBuf) -> Result<(), CliError> {
        let cfg = self.config(socket);
        let result = if self.cleanup {
            daemon::cleanup(cfg)
        } else {
            daemon::run(cfg)
        };
        result.map_err(CliError::Daemon)
    }
}

/// `START-END`, inclusive, `START <= END`, no port 0.
pub fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let bad = || format!("invalid port range {s:?}: expected START-END, e.g. 61000-65535");
    let (start, end) = s.split_once('-').ok_or_else(bad)?;
    let start: u16 = start.trim().parse().map_err(|_| bad())?;
    let end: u16 = end.trim().parse().map_err(|_| bad())?;
    if start == 0 || start > end {
        return Err(bad());
    }
    Ok(PortRange { start, end })
}
