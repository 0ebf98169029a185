//! Port specs in Docker's `-p` syntax and the choice of host ports.
//!
//! `[HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]`, with Docker's meaning:
//! - no host port: the lowest free block of host ports in the automatic range (Docker
//!   uses the ephemeral range 32768-60999);
//! - `HOST_IP::PORT`: the same, bound to one host address;
//! - host and container ranges of equal length map one to one;
//! - a host range with a single container port means "one free port of that range";
//! - a single host port with a container range is an error, as in Docker.
//!
//! IPv6 host addresses and protocols other than tcp/udp are refused with a message that
//! says so; netd's dataplanes are IPv4-only.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use crate::model::{PortRange, Proto, Publication};

/// A parsed `-p` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    /// As written: `None` when no host IP was given, `Some(0.0.0.0)` when every address
    /// was asked for explicitly. Both publish on every address (see [`PortSpec::bind_ip`]);
    /// they differ only in what they match (see [`PortSpec::matches`]).
    pub host_ip: Option<Ipv4Addr>,
    /// `None` lets netd choose.
    pub host_ports: Option<PortRange>,
    pub container_ports: PortRange,
    pub proto: Proto,
}

/// A port spec that cannot be parsed or satisfied. Every message quotes the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    #[error(
        "invalid port spec {spec:?}: {reason}; expected [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]"
    )]
    Invalid { spec: String, reason: String },
    #[error(
        "port spec {spec:?}: host port {wanted} is already published ({existing}); unpublish it or choose another host port"
    )]
    Conflict {
        spec: String,
        wanted: String,
        existing: String,
    },
    #[error(
        "port spec {spec:?}: no {len} free {proto} host port(s) left in {range}; unpublish something or give explicit host ports"
    )]
    NoFreePort {
        spec: String,
        proto: Proto,
        range: PortRange,
        len: u32,
    },
}

impl From<PortSpecError> for crate::error::Error {
    fn from(e: PortSpecError) -> Self {
        match e {
            PortSpecError::Invalid { .. } => crate::error::Error::Invalid(e.to_string()),
            _ => crate::error::Error::Conflict(e.to_string()),
        }
    }
}

fn invalid(spec: &str, reason: impl Into<String>) -> PortSpecError {
    PortSpecError::Invalid {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

/// Why a string is not a port number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPort {
    Empty,
    NotANumber,
    Zero,
    AboveMax,
}

/// `s` as a port number, 1-65535: ASCII digits only (u16's parser would also take a
/// sign, "+5"). Callers say why in their own words.
pub fn port_number(s: &str) -> Result<u16, BadPort> {
    if s.is_empty() {
        return Err(BadPort::Empty);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadPort::NotANumber);
    }
    match s.parse::<u32>() {
        Ok(0) => Err(BadPort::Zero),
        Ok(p) if p <= 65535 => Ok(p as u16),
        _ => Err(BadPort::AboveMax),
    }
}

fn parse_port(spec: &str, what: &str, s: &str) -> Result<u16, PortSpecError> {
    port_number(s).map_err(|e| {
        invalid(
            spec,
            match e {
                BadPort::Empty => format!("empty {what}"),
                BadPort::NotANumber => format!("{what} {s:?} is not a number"),
                BadPort::Zero => format!("{what} 0 is not a valid port (1-65535)"),
                BadPort::AboveMax => format!("{what} {s} is above 65535"),
            },
        )
    })
}

fn parse_range(spec: &str, what: &str, s: &str) -> Result<PortRange, PortSpecError> {
    match s.split_once('-') {
        None => Ok(PortRange::single(parse_port(spec, what, s)?)),
        Some((a, b)) => {
            let start = parse_port(spec, what, a)?;
            let end = parse_port(spec, what, b)?;
            if end < start {
                return Err(invalid(
                    spec,
                    format!("{what} range {s}: end {end} is below start {start}"),
                ));
            }
            Ok(PortRange { start, end })
        }
    }
}

fn parse_proto(spec: &str, s: &str) -> Result<Proto, PortSpecError> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "" => Err(invalid(spec, "empty protocol after '/'")),
        "sctp" => Err(invalid(
            spec,
            "protocol sctp is not supported by netd (tcp or udp)",
        )),
        other => Err(invalid(
            spec,
            format!("unknown protocol {other:?} (tcp or udp)"),
        )),
    }
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec.contains('[') || spec.matches(':').count() > 2 {
            return Err(invalid(spec, "IPv6 host addresses are not supported"));
        }
        let (addr_ports, proto) = match spec.rsplit_once('/') {
            Some((l, p)) => (l, parse_proto(spec, p)?),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = addr_ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => {
                if h.is_empty() {
                    return Err(invalid(
                        spec,
                        "empty host port (omit it, or write HOST_IP::PORT for an automatic one)",
                    ));
                }
                (None, Some(*h), *c)
            }
            [ip, h, c] => {
                if ip.is_empty() {
                    return Err(invalid(
                        spec,
                        "empty host IP (omit it to publish on every address)",
                    ));
                }
                (Some(*ip), (!h.is_empty()).then_some(*h), *c)
            }
            _ => unreachable!("at most two ':' were checked above"),
        };
        let host_ip = ip
            .map(|ip| {
                Ipv4Addr::from_str(ip)
                    .map_err(|_| invalid(spec, format!("host IP {ip:?} is not an IPv4 address")))
            })
            .transpose()?;
        let container_ports = parse_range(spec, "container port", container)?;
        let host_ports = host
            .map(|h| parse_range(spec, "host port", h))
            .transpose()?;
        if let Some(h) = host_ports {
            check_lengths(spec, h, container_ports)?;
        }
        Ok(PortSpec {
            host_ip,
            host_ports,
            container_ports,
            proto,
        })
    }
}

fn check_lengths(spec: &str, host: PortRange, container: PortRange) -> Result<(), PortSpecError> {
    if host.len() == container.len() || container.len() == 1 {
        return Ok(());
    }
    if host.len() == 1 {
        return Err(invalid(
            spec,
            format!(
                "a single host port {host} cannot publish the container range {container}; give a host range of {} ports",
                container.len()
            ),
        ));
    }
    Err(invalid(
        spec,
        format!(
            "host range {host} has {} ports but container range {container} has {}",
            host.len(),
            container.len()
        ),
    ))
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.host_ip, self.host_ports) {
            (Some(ip), Some(h)) => write!(f, "{ip}:{h}:")?,
            (Some(ip), None) => write!(f, "{ip}::")?,
            (None, Some(h)) => write!(f, "{h}:")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.container_ports, self.proto)
    }
}

impl PortSpec {
    /// The host address to publish on: `None` is every address, whether the spec left the
    /// IP out or wrote 0.0.0.0 (Docker's spelling of "every address").
    pub fn bind_ip(&self) -> Option<Ipv4Addr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }

    /// Whether `netd port unpublish ENDPOINT SPEC` removes `p` (the caller checks the
    /// endpoint). The spec that published `p` matches it:
    /// - a host range onto one container port matches the port chosen from that range;
    /// - other host ports must be equal, and no host port matches any;
    /// - no host IP matches any address; an explicit 0.0.0.0 only a publication on every
    ///   address; any other IP only a publication on that IP.
    pub fn matches(&self, p: &Publication) -> bool {
        let ports = match self.host_ports {
            None => true,
            Some(h) if h.len() == self.container_ports.len() => h == p.host_ports,
            // "One free port of the range" (check_lengths allows no other mismatch).
            Some(h) => h.start <= p.host_ports.start && p.host_ports.end <= h.end,
        };
        let ip = match self.host_ip {
            None => true,
            Some(ip) if ip.is_unspecified() => p.host_ip.is_none_or(|a| a.is_unspecified()),
            Some(ip) => p.host_ip == Some(ip),
        };
        self.proto == p.proto && self.container_ports == p.container_ports && ports && ip
    }
}

/// The host ports `spec` will use, given what is already published: as many as the
/// container range has, contiguous.
///
/// Explicit host ports must not conflict with an existing publication (same protocol,
/// overlapping ports, and equal host IPs or either one the wildcard). A host range with a
/// single container port yields the first free port of that range; a spec without host
/// ports yields the lowest free block of `auto_range`.
pub fn resolve_host_ports(
    spec: &PortSpec,
    existing: &[Publication],
    auto_range: PortRange,
) -> Result<PortRange, PortSpecError> {
    let want = spec.container_ports.len();
    let candidate = |host_ports| Publication {
        endpoint: String::new(),
        network: String::new(),
        proto: spec.proto,
        host_ip: spec.bind_ip(),
        host_ports,
        container_ports: spec.container_ports,
    };
    match spec.host_ports {
        Some(h) if h.len() == want => {
            let c = candidate(h);
            match existing.iter().find(|p| p.conflicts_with(&c)) {
                Some(p) => Err(PortSpecError::Conflict {
                    spec: spec.to_string(),
                    wanted: format!(
                        "{}:{h}/{}",
                        spec.bind_ip().unwrap_or(Ipv4Addr::UNSPECIFIED),
                        spec.proto
                    ),
                    existing: p.to_string(),
                }),
                None => Ok(h),
            }
        }
        Some(h) => first_free_block(spec, existing, h, 1),
        None => first_free_block(spec, existing, auto_range, want),
    }
}

/// The lowest block of `len` ports inside `within` that no existing publication of the
/// same protocol and a compatible host IP occupies.
fn first_free_block(
    spec: &PortSpec,
    existing: &[Publication],
    within: PortRange,
    len: u32,
) -> Result<PortRange, PortSpecError> {
    let probe = Publication {
        endpoint: String::new(),
        network: String::new(),
        proto: spec.proto,
        host_ip: spec.bind_ip(),
        host_ports: within,
        container_ports: within,
    };
    let mut taken: Vec<PortRange> = existing
        .iter()
        .filter(|p| p.conflicts_with(&probe))
        .map(|p| p.host_ports)
        .collect();
    taken.sort_unstable();
    // Sweep the occupied ranges in order; `next` is the lowest port not yet ruled out.
    let mut next = u32::from(within.start);
    for t in taken {
        if u32::from(t.start) >= next + len {
            break;
        }
        next = next.max(u32::from(t.end) + 1);
    }
    if next + len - 1 <= u32::from(within.end) {
        let start = next as u16;
        Ok(PortRange {
            start,
            end: (next + len - 1) as u16,
        })
    } else {
        Err(PortSpecError::NoFreePort {
            spec: spec.to_string(),
            proto: spec.proto,
            range: within,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> PortSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn bad(s: &str, needle: &str) {
        let e = s.parse::<PortSpec>().expect_err(s);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{s:?}")),
            "{msg:?} should quote the spec {s:?}"
        );
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert!(matches!(e, PortSpecError::Invalid { .. }));
    }

    fn pr(start: u16, end: u16) -> PortRange {
        PortRange { start, end }
    }

    fn publ(ip: Option<Ipv4Addr>, h: PortRange, proto: Proto) -> Publication {
        Publication {
            endpoint: "web".into(),
            network: "netd0".into(),
            proto,
            host_ip: ip,
            host_ports: h,
            container_ports: h,
        }
    }

    #[test]
    fn parses_docker_forms() {
        let s = parse("80");
        assert_eq!(
            (s.host_ip, s.host_ports, s.container_ports, s.proto),
            (None, None, pr(80, 80), Proto::Tcp)
        );
        let s = parse("8080:80");
        assert_eq!(
            (s.host_ports, s.container_ports),
            (Some(pr(8080, 8080)), pr(80, 80))
        );
        let s = parse("127.0.0.1:8080:80/udp");
        assert_eq!(s.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(s.proto, Proto::Udp);
        let s = parse("0.0.0.0:8080:80");
        assert_eq!(s.host_ip, Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            (s.host_ports, s.container_ports),
            (Some(pr(8080, 8080)), pr(80, 80))
        );
        let s = parse("127.0.0.1::80");
        assert_eq!((s.host_ip, s.host_ports), (Some(Ipv4Addr::LOCALHOST), None));
        let s = parse("20000-20999:20000-20999/TCP");
        assert_eq!(
            (s.host_ports, s.container_ports),
            (Some(pr(20000, 20999)), pr(20000, 20999))
        );
        let s = parse("8000-8010:80");
        assert_eq!(
            (s.host_ports, s.container_ports),
            (Some(pr(8000, 8010)), pr(80, 80))
        );
        let s = parse("5000-5001");
        assert_eq!((s.host_ports, s.container_ports), (None, pr(5000, 5001)));
        assert_eq!(parse("1:65535").container_ports, pr(65535, 65535));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "80/tcp",
            "8080:80/udp",
            "127.0.0.1:8080:80/tcp",
            "127.0.0.1::80/tcp",
            "0.0.0.0:8080:80/tcp",
            "1000-1001:2000-2001/tcp",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_ports() {
        bad("0", "port 0");
        bad("8080:0", "container port 0");
        bad("0:80", "host port 0");
        bad("65536", "above 65535");
        bad("99999999999:80", "above 65535");
        bad("80-70", "end 70 is below start 80");
        bad("http", "\"http\" is not a number");
        bad("-80", "empty container port");
        bad("+80", "not a number");
        bad("", "empty container port");
        bad("80:", "empty container port");
        bad(":80", "empty host port");
        bad("80-", "empty container port");
    }

    #[test]
    fn rejects_bad_proto_and_ip() {
        bad("80/sctp", "sctp is not supported");
        bad("80/icmp", "unknown protocol \"icmp\"");
        bad("80/", "empty protocol");
        bad("1.2.3:80:80", "\"1.2.3\" is not an IPv4 address");
        bad("localhost:80:80", "\"localhost\"");
        bad("::80:80", "IPv6");
        bad("[::1]:80:80", "IPv6");
        bad(":8080:80", "empty host IP");
    }

    #[test]
    fn rejects_range_length_mismatch() {
        bad(
            "8080:80-81",
            "single host port 8080 cannot publish the container range 80-81",
        );
        bad(
            "8000-8002:80-81",
            "host range 8000-8002 has 3 ports but container range 80-81 has 2",
        );
    }

    #[test]
    fn explicit_host_ports_must_not_conflict() {
        let lo = Some(Ipv4Addr::LOCALHOST);
        let existing = [
            publ(None, pr(8080, 8080), Proto::Tcp),
            publ(lo, pr(9000, 9000), Proto::Tcp),
        ];
        let auto = pr(32768, 60999);
        let e = resolve_host_ports(&parse("8080:80"), &existing, auto).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"8080:80/tcp\"") && msg.contains("0.0.0.0:8080->web:8080/tcp"),
            "{msg}"
        );
        // A wildcard conflicts with a specific IP, and vice versa.
        assert!(resolve_host_ports(&parse("127.0.0.1:8080:80"), &existing, auto).is_err());
        assert!(resolve_host_ports(&parse("9000:80"), &existing, auto).is_err());
        // Another protocol or another specific IP does not conflict.
        assert_eq!(
            resolve_host_ports(&parse("8080:80/udp"), &existing, auto).unwrap(),
            pr(8080, 8080)
        );
        assert_eq!(
            resolve_host_ports(&parse("10.0.0.1:9000:80"), &existing, auto).unwrap(),
            pr(9000, 9000)
        );
        // Ranges conflict on any overlap.
        let e = resolve_host_ports(&parse("8070-8080:70-80"), &existing, auto).unwrap_err();
        assert!(matches!(e, PortSpecError::Conflict { .. }), "{e}");
    }

    #[test]
    fn automatic_ports_take_lowest_free_block() {
        let auto = pr(32768, 32775);
        let existing = [
            publ(None, pr(32768, 32768), Proto::Tcp),
            publ(None, pr(32770, 32771), Proto::Tcp),
        ];
        assert_eq!(
            resolve_host_ports(&parse("80"), &existing, auto).unwrap(),
            pr(32769, 32769)
        );
        // A block of 3 skips the gap of one at 32769.
        assert_eq!(
            resolve_host_ports(&parse("80-82"), &existing, auto).unwrap(),
            pr(32772, 32774)
        );
        assert_eq!(
            resolve_host_ports(&parse("80/udp"), &existing, auto).unwrap(),
            pr(32768, 32768)
        );
        let e = resolve_host_ports(&parse("80-84"), &existing, auto).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"80-84/tcp\"")
                && msg.contains("32768-32775")
                && msg.contains("5 free tcp"),
            "{msg}"
        );
        // A range that ends at 65535 is handled without overflow.
        let top = pr(65534, 65535);
        assert_eq!(resolve_host_ports(&parse("80-81"), &[], top).unwrap(), top);
        assert!(resolve_host_ports(&parse("80-82"), &[], top).is_err());
    }

    #[test]
    fn host_range_with_single_container_port_picks_first_free() {
        let existing = [publ(None, pr(8000, 8001), Proto::Tcp)];
        let auto = pr(32768, 60999);
        assert_eq!(
            resolve_host_ports(&parse("8000-8010:80"), &existing, auto).unwrap(),
            pr(8002, 8002)
        );
        let e = resolve_host_ports(&parse("8000-8001:80"), &existing, auto).unwrap_err();
        assert!(e.to_string().contains("8000-8001"), "{e}");
    }

    fn published(ip: Option<Ipv4Addr>, host: PortRange, container: PortRange) -> Publication {
        Publication {
            host_ports: host,
            container_ports: container,
            ..publ(ip, host, Proto::Tcp)
        }
    }

    #[test]
    fn unpublish_by_host_range_matches_the_port_chosen_from_it() {
        // `publish web 8000-8010:80` chose 8003.
        let chosen = published(None, pr(8003, 8003), pr(80, 80));
        for spec in [
            "8000-8010:80",
            "8003-8003:80",
            "8003:80",
            "80",
            "8003:80/tcp",
        ] {
            assert!(parse(spec).matches(&chosen), "{spec} should match {chosen}");
        }
        for spec in [
            "8004-8010:80",
            "7990-8002:80",
            "8000-8010:81",
            "8000-8010:80/udp",
            "8000-8010:80-90",
            "127.0.0.1:8000-8010:80",
        ] {
            assert!(
                !parse(spec).matches(&chosen),
                "{spec} should not match {chosen}"
            );
        }
        // Equal-length ranges map one to one: only the same ranges match.
        let block = published(None, pr(9000, 9009), pr(9000, 9009));
        assert!(parse("9000-9009:9000-9009").matches(&block));
        assert!(parse("9000-9009").matches(&block));
        for spec in ["9000-9010:9000-9010", "9000-9019:9000", "9000-9009:9000"] {
            assert!(
                !parse(spec).matches(&block),
                "{spec} should not match {block}"
            );
        }
    }

    #[test]
    fn unpublish_by_host_ip() {
        let lo = Some(Ipv4Addr::LOCALHOST);
        let all = published(None, pr(8080, 8080), pr(80, 80));
        let local = published(lo, pr(8080, 8080), pr(80, 80));
        // No IP: any address.
        assert!(parse("8080:80").matches(&all) && parse("8080:80").matches(&local));
        assert!(parse("80").matches(&all) && parse("80").matches(&local));
        // An explicit 0.0.0.0: only what is published on every address.
        for spec in ["0.0.0.0:8080:80", "0.0.0.0::80"] {
            assert!(parse(spec).matches(&all), "{spec}");
            assert!(!parse(spec).matches(&local), "{spec}");
        }
        assert!(parse("127.0.0.1:8080:80").matches(&local));
        assert!(!parse("127.0.0.1:8080:80").matches(&all));
        assert!(!parse("10.0.0.1:8080:80").matches(&local));
    }

    #[test]
    fn explicit_any_address_publishes_like_no_address() {
        let explicit = parse("0.0.0.0:8080:80");
        assert_eq!(explicit.host_ip, Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(explicit.bind_ip(), None);
        assert_eq!(
            parse("127.0.0.1:8080:80").bind_ip(),
            Some(Ipv4Addr::LOCALHOST)
        );
        let auto = pr(32768, 60999);
        // It conflicts with a specific address, as a wildcard does.
        let local = [publ(Some(Ipv4Addr::LOCALHOST), pr(8080, 8080), Proto::Tcp)];
        assert!(matches!(
            resolve_host_ports(&explicit, &local, auto),
            Err(PortSpecError::Conflict { .. })
        ));
        let taken = [publ(Some(Ipv4Addr::LOCALHOST), pr(8000, 8001), Proto::Tcp)];
        for spec in ["0.0.0.0:8000-8010:80", "8000-8010:80"] {
            assert_eq!(
                resolve_host_ports(&parse(spec), &taken, auto).unwrap(),
                pr(8002, 8002),
                "{spec}"
            );
        }
        let taken = [publ(
            Some(Ipv4Addr::LOCALHOST),
            pr(32768, 32768),
            Proto::Tcp,
        )];
        assert_eq!(
            resolve_host_ports(&parse("0.0.0.0::80"), &taken, auto).unwrap(),
            pr(32769, 32769)
        );
    }

    #[test]
    fn errors_map_to_api_kinds() {
        use crate::error::{Error, ErrorKind};
        let e: Error = "0".parse::<PortSpec>().unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let existing = [publ(None, pr(80, 80), Proto::Tcp)];
        let e: Error = resolve_host_ports(&parse("80:80"), &existing, pr(1, 2))
            .unwrap_err()
            .into();
        assert_eq!(e.kind(), ErrorKind::Conflict);
    }
}
