//! What the benchmark measures and records: variants, scenarios, samples and failures,
//! and the recorder that prints one progress line per measurement.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

/// A path the same traffic is sent through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// netd with its eBPF dataplane.
    Ebpf,
    /// netd with Docker's iptables rules.
    Iptables,
    /// A plain veth pair between client and server: no bridge, routing or NAT.
    Limit,
    /// A plain router between client and server: a namespace that forwards between two
    /// veth pairs, without a bridge, NAT, firewall rules or netd. Not run unless asked
    /// for: it shows what any namespace in the middle costs, which `limit` does not have
    /// and netd's variants cannot avoid.
    Routed,
}

impl Variant {
    /// Every variant, in the order the plots give their bars and the report merges their
    /// metrics in (the report's columns follow the run's own order).
    pub const ALL: [Variant; 4] = [
        Variant::Ebpf,
        Variant::Iptables,
        Variant::Limit,
        Variant::Routed,
    ];
    /// The variants a run measures unless `--variants` says otherwise.
    pub const DEFAULT: [Variant; 3] = [Variant::Ebpf, Variant::Iptables, Variant::Limit];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Ebpf => "ebpf",
            Variant::Iptables => "iptables",
            Variant::Limit => "limit",
            Variant::Routed => "routed",
        }
    }

    /// Whether this variant runs netd (and so has published ports to scale and program).
    pub fn is_netd(self) -> bool {
        matches!(self, Variant::Ebpf | Variant::Iptables)
    }
}

/// The scenarios of issue 4, numbered as there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    BulkDnat,
    BulkSnat,
    RrDnat,
    Crr,
    UdpSnat,
    Scale,
    Programming,
    Memory,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::BulkDnat,
        Scenario::BulkSnat,
        Scenario::RrDnat,
        Scenario::Crr,
        Scenario::UdpSnat,
        Scenario::Scale,
        Scenario::Programming,
        Scenario::Memory,
    ];

    pub fn number(self) -> u8 {
        Scenario::ALL
            .iter()
            .position(|s| *s == self)
            .map_or(0, |i| i as u8 + 1)
    }

    pub fn id(self) -> &'static str {
        match self {
            Scenario::BulkDnat => "bulk_dnat",
            Scenario::BulkSnat => "bulk_snat",
            Scenario::RrDnat => "rr_dnat",
            Scenario::Crr => "crr",
            Scenario::UdpSnat => "udp_snat",
            Scenario::Scale => "scale",
            Scenario::Programming => "programming",
            Scenario::Memory => "memory",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::BulkDnat => "TCP bulk throughput, wan client -> published port (DNAT)",
            Scenario::BulkSnat => "TCP bulk throughput, container -> wan server (SNAT)",
            Scenario::RrDnat => "TCP_RR, 1-byte request/response through DNAT",
            Scenario::Crr => "TCP_CRR, new connections through DNAT and SNAT",
            Scenario::UdpSnat => "UDP small-packet rate, container -> wan (SNAT)",
            Scenario::Scale => "Scale: new connections to the last-published port",
            Scenario::Programming => "Programming latency",
            Scenario::Memory => "Memory",
        }
    }

    /// Scale, programming and memory are about netd's published ports; a veth pair or a
    /// plain router has none.
    pub fn applies_to(self, v: Variant) -> bool {
        v.is_netd()
            || matches!(
                self,
                Scenario::BulkDnat
                    | Scenario::BulkSnat
                    | Scenario::RrDnat
                    | Scenario::Crr
                    | Scenario::UdpSnat
            )
    }

    /// Parse a number (`3`) or an id (`rr_dnat`).
    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.id() == s || sc.number().to_string() == s)
    }
}

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub variant: Variant,
    pub scenario: Scenario,
    /// Stable name; the report aggregates samples by (scenario, metric).
    pub metric: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub value: f64,
    /// Raw facts behind the number (counts, durations, iperf3's own summary).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// A measurement that produced no number.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub round: u32,
    pub variant: Variant,
    pub scenario: Scenario,
    /// `None` when the whole scenario (or the topology) failed.
    pub metric: Option<String>,
    pub error: String,
}

/// A metric about to be recorded.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

impl Metric {
    pub fn higher(name: impl Into<String>, unit: &'static str) -> Self {
        Metric {
            name: name.into(),
            unit,
            higher_is_better: true,
        }
    }
    pub fn lower(name: impl Into<String>, unit: &'static str) -> Self {
        Metric {
            name: name.into(),
            unit,
            higher_is_better: false,
        }
    }
}

/// Collects samples and failures and prints the progress display.
#[derive(Debug)]
pub struct Recorder {
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
    pub rounds: u32,
    started: Instant,
}

impl Recorder {
    pub fn new(rounds: u32) -> Self {
        Recorder {
            samples: Vec::new(),
            failures: Vec::new(),
            rounds,
            started: Instant::now(),
        }
    }

    fn prefix(&self, round: u32, variant: Variant, scenario: Scenario) -> String {
        let t = self.started.elapsed().as_secs();
        format!(
            "[{:>3}:{:02} round {round}/{} {:<8}] {} {:<12}",
            t / 60,
            t % 60,
            self.rounds,
            variant.name(),
            scenario.number(),
            scenario.id()
        )
    }

    pub fn record(
        &mut self,
        round: u32,
        variant: Variant,
        scenario: Scenario,
        metric: &Metric,
        value: f64,
        detail: Value,
    ) {
        println!(
            "{} {:<40} {:>12} {}",
            self.prefix(round, variant, scenario),
            metric.name,
            fmt_value(value),
            metric.unit
        );
        self.samples.push(Sample {
            round,
            variant,
            scenario,
            metric: metric.name.clone(),
            unit: metric.unit,
            higher_is_better: metric.higher_is_better,
            value,
            detail,
        });
    }

    pub fn fail(
        &mut self,
        round: u32,
        variant: Variant,
        scenario: Scenario,
        metric: Option<&str>,
        error: &anyhow::Error,
    ) {
        let error = format!("{error:#}");
        println!(
            "{} {:<40} error: {error}",
            self.prefix(round, variant, scenario),
            metric.unwrap_or("(scenario)")
        );
        self.failures.push(Failure {
            round,
            variant,
            scenario,
            metric: metric.map(str::to_string),
            error,
        });
    }

    /// A progress line for a long step that is not itself a sample.
    pub fn note(&self, round: u32, variant: Variant, scenario: Scenario, what: &str) {
        println!("{} {what}", self.prefix(round, variant, scenario));
    }

    /// Every applicable (scenario, variant) pair without a single sample.
    pub fn missing(
        &self,
        variants: &[Variant],
        scenarios: &[Scenario],
    ) -> Vec<(Scenario, Variant)> {
        let mut missing = Vec::new();
        for &s in scenarios {
            for &v in variants {
                if s.applies_to(v)
                    && !self
                        .samples
                        .iter()
                        .any(|x| x.scenario == s && x.variant == v)
                {
                    missing.push((s, v));
                }
            }
        }
        missing
    }
}

/// Three significant digits or so, without exponent notation.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_numbers_and_parse() {
        assert_eq!(Scenario::BulkDnat.number(), 1);
        assert_eq!(Scenario::Memory.number(), 8);
        assert_eq!(Scenario::parse("3"), Some(Scenario::RrDnat));
        assert_eq!(Scenario::parse("scale"), Some(Scenario::Scale));
        assert_eq!(Scenario::parse("9"), None);
    }

    #[test]
    fn missing_ignores_inapplicable_pairs() {
        let mut r = Recorder::new(1);
        r.record(
            1,
            Variant::Limit,
            Scenario::RrDnat,
            &Metric::higher("tps", "1/s"),
            1.0,
            Value::Null,
        );
        let missing = r.missing(&[Variant::Limit], &[Scenario::RrDnat, Scenario::Scale]);
        assert!(missing.is_empty(), "{missing:?}");
        let missing = r.missing(&[Variant::Limit, Variant::Ebpf], &[Scenario::RrDnat]);
        assert_eq!(missing, vec![(Scenario::RrDnat, Variant::Ebpf)]);
    }
}
