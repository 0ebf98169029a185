//! Scenarios 1-5: traffic through one published port (DNAT) or out of a container (SNAT),
//! the same for every variant. Each measurement returns its metrics; the caller
//! interleaves variants measurement by measurement.

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use super::{
    iperf, rr,
    sample::{Metric, Scenario},
    stats::percentile,
    topology::{Service, Topology},
    udp,
};

/// One traffic measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    BulkDnat1,
    BulkDnat4,
    BulkSnat1,
    RrDnat,
    CrrDnat,
    CrrSnat,
    UdpSnat,
}

/// A measured metric with its raw facts.
pub type Reading = (Metric, f64, Value);

impl Measurement {
    pub const ALL: [Measurement; 7] = [
        Measurement::BulkDnat1,
        Measurement::BulkDnat4,
        Measurement::BulkSnat1,
        Measurement::RrDnat,
        Measurement::CrrDnat,
        Measurement::CrrSnat,
        Measurement::UdpSnat,
    ];

    pub fn scenario(self) -> Scenario {
        match self {
            Measurement::BulkDnat1 | Measurement::BulkDnat4 => Scenario::BulkDnat,
            Measurement::BulkSnat1 => Scenario::BulkSnat,
            Measurement::RrDnat => Scenario::RrDnat,
            Measurement::CrrDnat | Measurement::CrrSnat => Scenario::Crr,
            Measurement::UdpSnat => Scenario::UdpSnat,
        }
    }

    /// Name used for a failure of the whole measurement.
    pub fn name(self) -> &'static str {
        match self {
            Measurement::BulkDnat1 => "1 stream",
            Measurement::BulkDnat4 => "4 streams",
            Measurement::BulkSnat1 => "1 stream",
            Measurement::RrDnat => "transactions",
            Measurement::CrrDnat => "DNAT connections",
            Measurement::CrrSnat => "SNAT connections",
            Measurement::UdpSnat => "datagrams received",
        }
    }

    /// Runs the measurement; bulk TCP with congestion control `cc`.
    pub fn run(self, topo: &Topology, duration: Duration, cc: &str) -> Result<Vec<Reading>> {
        let secs = duration.as_secs().max(1) as u32;
        let bulk = |snat, streams| bulk(topo, snat, streams, secs, cc, self.name());
        match self {
            Measurement::BulkDnat1 => bulk(false, 1),
            Measurement::BulkDnat4 => bulk(false, 4),
            Measurement::BulkSnat1 => bulk(true, 1),
            Measurement::RrDnat => rr(topo, duration),
            Measurement::CrrDnat => crr(topo, false, duration, "DNAT"),
            Measurement::CrrSnat => crr(topo, true, duration, "SNAT"),
            Measurement::UdpSnat => udp(topo, duration),
        }
    }
}

fn bulk(
    topo: &Topology,
    snat: bool,
    streams: u32,
    secs: u32,
    cc: &str,
    name: &str,
) -> Result<Vec<Reading>> {
    let route = if snat { &topo.snat } else { &topo.dnat };
    let addr = route.addr(Service::Iperf);
    let r = iperf::client(
        &route.client_ns,
        route.target,
        addr.port(),
        streams,
        secs,
        cc,
    )?;
    let detail = json!({ "target": addr.to_string(), "streams": streams, "secs": secs, "congestion": cc, "retransmits": r.retransmits });
    Ok(vec![(Metric::higher(name, "Gbit/s"), r.gbit_per_s, detail)])
}

fn rr(topo: &Topology, duration: Duration) -> Result<Vec<Reading>> {
    let addr = topo.dnat.addr(Service::Rr);
    let mut r = rr::rr_client(&topo.dnat.client_path(), addr, duration)?;
    let p50 = percentile(&mut r.latency_ns, 0.50)
        .ok_or_else(|| anyhow!("TCP_RR to {addr}: no transaction completed"))?;
    let p99 = percentile(&mut r.latency_ns, 0.99).unwrap_or(p50);
    let detail =
        json!({ "target": addr.to_string(), "transactions": r.transactions, "secs": r.secs });
    Ok(vec![
        (
            Metric::higher("transactions", "1/s"),
            r.transactions as f64 / r.secs,
            detail,
        ),
        (
            Metric::lower("latency p50", "µs"),
            p50 as f64 / 1e3,
            Value::Null,
        ),
        (
            Metric::lower("latency p99", "µs"),
            p99 as f64 / 1e3,
            Value::Null,
        ),
    ])
}

/// TCP_CRR; `label` (DNAT/SNAT) is part of the metric names.
pub fn crr(topo: &Topology, snat: bool, duration: Duration, label: &str) -> Result<Vec<Reading>> {
    let route = if snat { &topo.snat } else { &topo.dnat };
    let addr = route.addr(Service::Crr);
    crr_to(&route.client_path(), addr, duration, label)
}

/// TCP_CRR from the namespace at `client` to `addr`; metrics are `{label} connections`,
/// `{label} connect p50`/`p99` (connect() time: the first-packet latency).
pub fn crr_to(
    client: &std::path::Path,
    addr: std::net::SocketAddr,
    duration: Duration,
    label: &str,
) -> Result<Vec<Reading>> {
    let mut r = rr::crr_client(client, addr, duration)?;
    let p50 = percentile(&mut r.connect_ns, 0.50).unwrap_or(0);
    let p99 = percentile(&mut r.connect_ns, 0.99).unwrap_or(0);
    let detail = json!({
        "target": addr.to_string(), "connections": r.connections, "failures": r.failures,
        "first_error": r.first_error, "secs": r.secs,
    });
    Ok(vec![
        (
            Metric::higher(format!("{label} connections"), "1/s"),
            r.connections as f64 / r.secs,
            detail,
        ),
        (
            Metric::lower(format!("{label} connect p50"), "µs"),
            p50 as f64 / 1e3,
            Value::Null,
        ),
        (
            Metric::lower(format!("{label} connect p99"), "µs"),
            p99 as f64 / 1e3,
            Value::Null,
        ),
    ])
}

fn udp(topo: &Topology, duration: Duration) -> Result<Vec<Reading>> {
    let route = &topo.snat;
    let addr = route.addr(Service::Udp);
    let r = udp::udp_rate(&route.client_path(), &route.server_path(), addr, duration)?;
    let detail = json!({ "target": addr.to_string(), "sent": r.sent, "received": r.received, "secs": r.secs, "payload_bytes": 18 });
    Ok(vec![
        (
            Metric::higher("datagrams received", "pkt/s"),
            r.received as f64 / r.secs,
            detail,
        ),
        (
            Metric::higher("datagrams sent", "pkt/s"),
            r.sent as f64 / r.secs,
            Value::Null,
        ),
    ])
}
