//! `netd info`, `netd stats` and `netd conntrack ...`: what the daemon and its
//! dataplane report.

use clap::Subcommand;

use super::{CliError, EXIT_OK, Output, emit, emit_json, table::Table};
use crate::{
    api::{
        client::Client,
        types::{ConntrackFlush, DaemonInfo},
    },
    dataplane::{DataplaneStats, Flow},
};

/// `netd conntrack` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// List tracked flows with their original and translated tuples
    #[command(visible_alias = "list")]
    Ls(Output),
    /// Remove tracked flows (e.g. a stale UDP flow after a restart)
    Flush {
        /// Only the flows of this endpoint's addresses
        #[arg(long, value_name = "NAME")]
        endpoint: Option<String>,
    },
}

impl ConntrackCommand {
    pub(super) async fn run(self, client: &Client) -> Result<u8, CliError> {
        match self {
            ConntrackCommand::Ls(out) => {
                let flows = client.conntrack_list().await?;
                if out.json {
                    emit_json(&flows)?
                } else {
                    emit(&render_flows(&flows))?
                }
            }
            ConntrackCommand::Flush { endpoint } => {
                let flushed = client.conntrack_flush(&ConntrackFlush { endpoint }).await?;
                let s = if flushed.removed == 1 { "" } else { "s" };
                emit(&format!("removed {} flow{s}\n", flushed.removed))?;
            }
        }
        Ok(EXIT_OK)
    }
}

/// `netd info`.
pub(super) async fn info(client: &Client, out: Output) -> Result<u8, CliError> {
    let info = client.info().await?;
    if out.json {
        emit_json(&info)?
    } else {
        emit(&render_info(&info))?
    }
    Ok(EXIT_OK)
}

/// `netd stats`.
pub(super) async fn stats(client: &Client, out: Output) -> Result<u8, CliError> {
    let stats = client.stats().await?;
    if out.json {
        emit_json(&stats)?
    } else {
        emit(&render_stats(&stats))?
    }
    Ok(EXIT_OK)
}

/// `netd info` as `key: value` lines.
pub fn render_info(info: &DaemonInfo) -> String {
    let addrs: Vec<String> = info.uplink_addrs.iter().map(ToString::to_string).collect();
    let dataplane = serde_json::to_value(info.dataplane)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", info.dataplane));
    format!(
        "Version:      {}\nDataplane:    {}\nUplink:       {} ({})\nState dir:    {}\nBPF pins:     {}\n",
        info.version,
        dataplane,
        info.uplink,
        if addrs.is_empty() {
            "no address".to_string()
        } else {
            addrs.join(", ")
        },
        info.state_dir,
        info.bpffs
    )
}

/// `netd stats` as four tables, one per kind of counter.
pub fn render_stats(stats: &DataplaneStats) -> String {
    let mut ifaces = Table::new(&[
        "INTERFACE",
        "IFINDEX",
        "RX PACKETS",
        "RX BYTES",
        "TX PACKETS",
        "TX BYTES",
    ])
    .right_align(&[1, 2, 3, 4, 5]);
    for i in &stats.interfaces {
        ifaces.row([
            i.ifname.clone(),
            i.ifindex.to_string(),
            i.rx_packets.to_string(),
            i.rx_bytes.to_string(),
            i.tx_packets.to_string(),
            i.tx_bytes.to_string(),
        ]);
    }
    let mut drops = Table::new(&["DROP REASON", "PACKETS"]).right_align(&[1]);
    for d in &stats.drops {
        drops.row([d.reason.clone(), d.packets.to_string()]);
    }
    let mut ports = Table::new(&["PUBLICATION", "PACKETS", "BYTES"]).right_align(&[1, 2]);
    for p in &stats.ports {
        ports.row([
            p.publication.clone(),
            p.packets.to_string(),
            p.bytes.to_string(),
        ]);
    }
    let mut tables = Table::new(&["TABLE", "ENTRIES", "CAPACITY", "USE"]).right_align(&[1, 2, 3]);
    for t in &stats.tables {
        let used = if t.capacity == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", t.entries as f64 * 100.0 / t.capacity as f64)
        };
        tables.row([
            t.name.clone(),
            t.entries.to_string(),
            t.capacity.to_string(),
            used,
        ]);
    }
    format!(
        "Dataplane: {}\n\n{}\n{}\n{}\n{}",
        stats.dataplane,
        ifaces.render(),
        drops.render(),
        ports.render(),
        tables.render()
    )
}

/// The `netd conntrack ls` table.
pub fn render_flows(flows: &[Flow]) -> String {
    let mut t = Table::new(&[
        "PROTO",
        "ORIGINAL",
        "TRANSLATED",
        "STATE",
        "AGE",
        "EXPIRES IN",
    ])
    .right_align(&[4, 5]);
    for f in flows {
        t.row([
            f.proto.clone(),
            f.original.clone(),
            f.translated.clone(),
            f.state.clone(),
            duration(f.age_secs),
            duration(f.expires_in_secs),
        ]);
    }
    t.render()
}

/// Seconds as `45s`, `3m05s`, `2h04m` or `3d02h`: two units are enough to read an age.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}
