//! `netd daemon`: options onto [`DaemonConfig`], then the daemon's own blocking entry points.

use std::{net::Ipv4Addr, path::PathBuf};

use clap::Args;

use super::CliError;
use crate::{
    daemon::{self, DaemonConfig},
    dataplane::DataplaneKind,
    model::PortRange,
    state::portspec::{BadPort, port_number},
};

/// Largest `--conntrack-max`: 2^24 flows, 64 times the default.
///
/// The eBPF conntrack and NAT maps are preallocated LRU hashes: the README measures
/// 116 MiB for the default 262,144 flows (each with two NAT entries), about 464 bytes a
/// flow, so the cap costs about 7.25 GiB of kernel memory: generous (beyond the
/// nf_conntrack_max of busy hosts), yet a size a large host can allocate. Above it, up to
/// u32::MAX, a typo would only fail once the daemon creates the maps, with the kernel's
/// E2BIG or ENOMEM, or succeed and pin most of the host's memory.
pub const CONNTRACK_MAX_LIMIT: u32 = 1 << 24;
/// Largest `--nat-max`: two NAT entries for each of [`CONNTRACK_MAX_LIMIT`] flows.
pub const NAT_MAX_LIMIT: u32 = 2 * CONNTRACK_MAX_LIMIT;

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
    /// Capacity of the conntrack table, at most 16777216 (2^24)
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(CONNTRACK_MAX_LIMIT)),
          default_value_t = defaults().conntrack_max)]
    pub conntrack_max: u32,
    /// Capacity of the NAT table (two entries per translated flow), at most 33554432
    /// (2^25) [default: twice --conntrack-max]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(2..=i64::from(NAT_MAX_LIMIT)))]
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
    let invalid = |reason: String| format!("invalid port range {s:?}: {reason}");
    let (start, end) = s
        .split_once('-')
        .ok_or_else(|| invalid("expected START-END, e.g. 61000-65535".into()))?;
    let port = |what: &str, p: &str| -> Result<u16, String> {
        let p = p.trim();
        port_number(p).map_err(|e| {
            invalid(match e {
                BadPort::Empty | BadPort::NotANumber => format!(
                    "{what} {p:?} is not a port number; expected START-END, e.g. 61000-65535"
                ),
                BadPort::Zero => {
                    format!("{what} is port 0, which cannot be used; ports are 1-65535")
                }
                BadPort::AboveMax => format!("{what} {p} is out of range; ports are 1-65535"),
            })
        })
    };
    let (start, end) = (port("START", start)?, port("END", end)?);
    if start > end {
        return Err(invalid(format!(
            "START {start} is greater than END {end}; did you mean {end}-{start}?"
        )));
    }
    Ok(PortRange { start, end })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        daemon: DaemonArgs,
    }

    fn parse(args: &[&str]) -> Result<DaemonArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("netd").chain(args.iter().copied())).map(|c| c.daemon)
    }

    fn range_err(s: &str) -> String {
        parse_port_range(s).expect_err(s)
    }

    #[test]
    fn port_range_errors_say_what_is_wrong() {
        let cases = [
            ("0-10", "port 0"),
            ("0-0", "port 0"),
            ("10-0", "port 0"),
            ("65535-1", "START 65535 is greater than END 1"),
            ("1-70000", "70000 is out of range"),
            ("+1-10", "\"+1\" is not a port number"),
            ("100", "expected START-END"),
            ("a-b", "\"a\" is not a port number"),
            ("-", "\"\" is not a port number"),
        ];
        for (input, reason) in cases {
            let e = range_err(input);
            assert!(e.contains(&format!("{input:?}")), "{input}: {e}");
            assert!(e.contains(reason), "{input}: {e:?} should say {reason:?}");
        }
        assert!(range_err("65535-1").contains("65535-1"));
        assert!(
            !range_err("0-10").contains("START-END"),
            "{}",
            range_err("0-10")
        );
        assert_eq!(
            parse_port_range("61000-65535"),
            Ok(PortRange {
                start: 61000,
                end: 65535
            })
        );
        assert_eq!(parse_port_range("7-7"), Ok(PortRange::single(7)));
    }

    #[test]
    fn table_sizes_are_capped() {
        let cap = CONNTRACK_MAX_LIMIT.to_string();
        let args = parse(&["--conntrack-max", &cap]).unwrap();
        // The default NAT size, twice the conntrack size, is within its own cap.
        assert_eq!(args.config("/s".into()).nat_max, NAT_MAX_LIMIT);
        parse(&["--nat-max", &NAT_MAX_LIMIT.to_string()]).unwrap();
        for (flag, too_big) in [
            ("--conntrack-max", (CONNTRACK_MAX_LIMIT + 1).to_string()),
            ("--conntrack-max", u32::MAX.to_string()),
            ("--nat-max", (NAT_MAX_LIMIT + 1).to_string()),
            ("--nat-max", u32::MAX.to_string()),
        ] {
            let e = parse(&[flag, &too_big]).expect_err(&too_big);
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag} {too_big}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&too_big) && msg.contains(flag), "{msg}");
        }
    }
}
