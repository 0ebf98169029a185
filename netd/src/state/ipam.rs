//! IPAM: validation of a network's addressing, the default subnet pools, and address
//! allocation. Pure functions over [`crate::model`] types; the caller persists the result.
//!
//! Decisions, following Docker (moby `api/types/network/ipam.go`, Docker 26+):
//! - A subnet or ip-range with host bits set is rejected with the masked form
//!   ("invalid subnet 172.20.0.5/16: it should be 172.20.0.0/16"); older Docker silently
//!   truncated, which hid typos.
//! - The default gateway is the subnet's first host address.
//! - A gateway or ip-range without a subnet is refused ("every ip-range or gateway must
//!   have a corresponding subnet"), rather than checked against a pool subnet.
//! - A requested `--ip` must lie in the subnet, but may lie outside `--ip-range`: that is
//!   how Docker users keep static addresses clear of dynamic ones.
//! - Dynamic allocation is serial: it continues after the last address handed out and
//!   wraps, so a just-freed address is not reused at once.

use std::{collections::BTreeSet, net::Ipv4Addr, str::FromStr};

use ipnet::Ipv4Net;

use crate::model::Network;

/// The longest prefix a network may have: a /30 holds the gateway and one endpoint.
pub const MAX_PREFIX: u8 = 30;

/// A failure of address management. Every message names the input or the network and
/// address concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid {what} {input:?}: {reason}")]
    Malformed {
        what: &'static str,
        input: String,
        reason: String,
    },
    #[error("invalid {what} {input}: it should be {masked} (host bits must be zero)")]
    HostBits {
        what: &'static str,
        input: String,
        masked: Ipv4Net,
    },
    #[error(
        "invalid subnet {subnet}: the prefix must be /{MAX_PREFIX} or shorter to hold a gateway and an endpoint"
    )]
    TooSmall { subnet: Ipv4Net },
    #[error("invalid gateway {gateway}: parent subnet {subnet} doesn't contain this address")]
    GatewayOutside { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("invalid gateway {gateway}: it is the {role} of subnet {subnet}")]
    GatewayReserved {
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
        role: &'static str,
    },
    #[error(
        "invalid {what} {input:?}: every ip-range or gateway must have a corresponding subnet; pass --subnet as well"
    )]
    NoSubnet { what: &'static str, input: String },
    #[error("invalid ip-range {range}: parent subnet {subnet} doesn't contain it")]
    RangeOutside { range: Ipv4Net, subnet: Ipv4Net },
    #[error(
        "subnet {subnet} overlaps subnet {other_subnet} of network {other:?}; choose another --subnet"
    )]
    Overlap {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error(
        "no free subnet left in the default pools (172.17.0.0/16-172.31.0.0/16, 192.168.0.0/16 in /20s); pass --subnet explicitly"
    )]
    PoolsExhausted,
    #[error("address {ip} is outside subnet {subnet} of network {network:?}")]
    AddressOutside {
        ip: Ipv4Addr,
        network: String,
        subnet: Ipv4Net,
    },
    #[error("address {ip} is the {role} of network {network:?} and cannot be assigned")]
    AddressReserved {
        ip: Ipv4Addr,
        network: String,
        role: &'static str,
    },
    #[error("address {ip} is already in use on network {network:?}")]
    AddressInUse { ip: Ipv4Addr, network: String },
    #[error(
        "network {network:?} has no free address in {range}; remove an endpoint or widen the --ip-range"
    )]
    Exhausted { network: String, range: Ipv4Net },
}

impl IpamError {
    /// Whether the request clashes with existing state (as opposed to being malformed).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            IpamError::Overlap { .. }
                | IpamError::PoolsExhausted
                | IpamError::AddressInUse { .. }
                | IpamError::Exhausted { .. }
        )
    }
}

impl From<IpamError> for crate::error::Error {
    fn from(e: IpamError) -> Self {
        if e.is_conflict() {
            crate::error::Error::Conflict(e.to_string())
        } else {
            crate::error::Error::Invalid(e.to_string())
        }
    }
}

/// Parse an IPv4 address given as `what` (e.g. "gateway", "--ip").
pub fn parse_ipv4(s: &str, what: &'static str) -> Result<Ipv4Addr, IpamError> {
    let reason = if s.contains(':') {
        "IPv6 is not supported; expected an IPv4 address such as 172.20.0.2"
    } else {
        "expected an IPv4 address such as 172.20.0.2"
    };
    Ipv4Addr::from_str(s.trim()).map_err(|_| IpamError::Malformed {
        what,
        input: s.to_string(),
        reason: reason.into(),
    })
}

/// Parse an IPv4 CIDR block given as `what` (e.g. "subnet"), rejecting host bits.
pub fn parse_cidr(s: &str, what: &'static str) -> Result<Ipv4Net, IpamError> {
    let malformed = |reason: &str| IpamError::Malformed {
        what,
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if s.contains(':') {
        return Err(malformed(
            "IPv6 is not supported; expected an IPv4 CIDR block such as 172.20.0.0/16",
        ));
    }
    if !s.contains('/') {
        return Err(malformed(
            "missing the prefix length; expected CIDR notation such as 172.20.0.0/16",
        ));
    }
    let net = Ipv4Net::from_str(s.trim())
        .map_err(|_| malformed("invalid CIDR block notation; expected e.g. 172.20.0.0/16"))?;
    if net.addr() != net.network() {
        return Err(IpamError::HostBits {
            what,
            input: s.to_string(),
            masked: net.trunc(),
        });
    }
    Ok(net)
}

/// Which reserved address `ip` is in `subnet`, if any.
fn reserved_role(ip: Ipv4Addr, subnet: &Ipv4Net) -> Option<&'static str> {
    if ip == subnet.network() {
        Some("network address")
    } else if ip == subnet.broadcast() {
        Some("broadcast address")
    } else {
        None
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Check a new network's addressing against Docker's rules and the existing networks;
/// returns (subnet, gateway, ip_range) with the default gateway filled in.
pub fn validate_network(
    subnet: &str,
    gateway: Option<&str>,
    ip_range: Option<&str>,
    existing: &[Network],
) -> Result<(Ipv4Net, Ipv4Addr, Option<Ipv4Net>), IpamError> {
    let subnet = parse_cidr(subnet, "subnet")?;
    if subnet.prefix_len() > MAX_PREFIX {
        return Err(IpamError::TooSmall { subnet });
    }
    let gateway = match gateway {
        None => first_host(&subnet),
        Some(g) => {
            let gateway = parse_ipv4(g, "gateway")?;
            if !subnet.contains(&gateway) {
                return Err(IpamError::GatewayOutside { gateway, subnet });
            }
            if let Some(role) = reserved_role(gateway, &subnet) {
                return Err(IpamError::GatewayReserved {
                    gateway,
                    subnet,
                    role,
                });
            }
            gateway
        }
    };
    let ip_range = match ip_range {
        None => None,
        Some(r) => {
            let range = parse_cidr(r, "ip-range")?;
            if !subnet.contains(&range) {
                return Err(IpamError::RangeOutside { range, subnet });
            }
            Some(range)
        }
    };
    if let Some(other) = existing.iter().find(|n| overlaps(&n.subnet, &subnet)) {
        return Err(IpamError::Overlap {
            subnet,
            other: other.name.clone(),
            other_subnet: other.subnet,
        });
    }
    Ok((subnet, gateway, ip_range))
}

/// [`validate_network`] for a create request, with the subnet picked from the default
/// pools when none is given. As in Docker and podman, a gateway or ip-range needs an
/// explicit subnet: checked against a subnet the user never saw, it would be refused for
/// a reason they cannot act on, or accepted in a subnet they did not expect.
pub fn plan_network(
    subnet: Option<&str>,
    gateway: Option<&str>,
    ip_range: Option<&str>,
    existing: &[Network],
) -> Result<(Ipv4Net, Ipv4Addr, Option<Ipv4Net>), IpamError> {
    let chosen;
    let subnet = match (subnet, gateway, ip_range) {
        (Some(s), _, _) => s,
        (None, Some(input), _) => {
            return Err(IpamError::NoSubnet {
                what: "gateway",
                input: input.into(),
            });
        }
        (None, None, Some(input)) => {
            return Err(IpamError::NoSubnet {
                what: "ip-range",
                input: input.into(),
            });
        }
        (None, None, None) => {
            chosen = choose_subnet(existing)?.to_string();
            &chosen
        }
    };
    validate_network(subnet, gateway, ip_range, existing)
}

fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Docker's default address pools, in the order Docker tries them: 172.17.0.0/16 to
/// 172.31.0.0/16, then 192.168.0.0/16 cut into /20s.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let b172 =
        (17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid /16"));
    let b192 =
        (0u8..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid /20"));
    b172.chain(b192)
}

/// The first default pool that overlaps no existing network.
pub fn choose_subnet(existing: &[Network]) -> Result<Ipv4Net, IpamError> {
    default_pools()
        .find(|p| !existing.iter().any(|n| overlaps(&n.subnet, p)))
        .ok_or(IpamError::PoolsExhausted)
}

/// Check that `ip` may be assigned on `net`: inside the subnet, not reserved, not used.
fn check_requested(
    net: &Network,
    used: &BTreeSet<Ipv4Addr>,
    ip: Ipv4Addr,
) -> Result<(), IpamError> {
    if !net.subnet.contains(&ip) {
        return Err(IpamError::AddressOutside {
            ip,
            network: net.name.clone(),
            subnet: net.subnet,
        });
    }
    let role = reserved_role(ip, &net.subnet).or((ip == net.gateway).then_some("gateway"));
    if let Some(role) = role {
        return Err(IpamError::AddressReserved {
            ip,
            network: net.name.clone(),
            role,
        });
    }
    if used.contains(&ip) {
        return Err(IpamError::AddressInUse {
            ip,
            network: net.name.clone(),
        });
    }
    Ok(())
}

/// Pick an address on `net`: `requested` if it is free, otherwise the next free address
/// of the ip-range (or the subnet) after `cursor`, wrapping around.
pub fn allocate(
    net: &Network,
    used: &BTreeSet<Ipv4Addr>,
    cursor: Option<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    if let Some(ip) = requested {
        check_requested(net, used, ip)?;
        return Ok(ip);
    }
    let range = net.ip_range.unwrap_or(net.subnet);
    let (lo, hi) = (u32::from(range.network()), u32::from(range.broadcast()));
    let start = match cursor.map(u32::from) {
        Some(c) if (lo..hi).contains(&c) => c + 1,
        _ => lo,
    };
    // Each address is visited once: start..=hi, then lo..start.
    (start..=hi)
        .chain(lo..start)
        .map(Ipv4Addr::from)
        .find(|ip| check_requested(net, used, *ip).is_ok())
        .ok_or_else(|| IpamError::Exhausted {
            network: net.name.clone(),
            range,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str) -> Network {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Network {
            name: name.into(),
            id: 1,
            subnet,
            gateway: first_host(&subnet),
            ip_range: None,
            internal: false,
            icc: true,
            masquerade: true,
            mtu: 1500,
            bridge: format!("br-{name}"),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn err_mentions<T: std::fmt::Debug>(r: Result<T, IpamError>, needles: &[&str]) -> IpamError {
        let e = r.expect_err("expected an error");
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "{msg:?} should mention {n:?}");
        }
        e
    }

    #[test]
    fn validate_defaults_gateway_to_first_host() {
        let (s, g, r) = validate_network("172.20.0.0/16", None, None, &[]).unwrap();
        assert_eq!(s.to_string(), "172.20.0.0/16");
        assert_eq!(g, ip("172.20.0.1"));
        assert_eq!(r, None);
        let (_, g, r) = validate_network(
            "10.1.2.0/24",
            Some("10.1.2.254"),
            Some("10.1.2.128/25"),
            &[],
        )
        .unwrap();
        assert_eq!(g, ip("10.1.2.254"));
        assert_eq!(r.unwrap().to_string(), "10.1.2.128/25");
        // /30 is the smallest accepted.
        validate_network("10.9.9.0/30", None, None, &[]).unwrap();
    }

    #[test]
    fn validate_rejects_malformed_cidrs_naming_input() {
        for bad in [
            "172.20.0.0",
            "172.20.0.0/33",
            "172.20.0/16",
            "abc/16",
            "",
            "300.1.1.0/24",
        ] {
            let e = err_mentions(
                validate_network(bad, None, None, &[]),
                &["subnet", &format!("{bad:?}")],
            );
            assert!(matches!(e, IpamError::Malformed { .. }), "{bad}: {e:?}");
        }
        err_mentions(
            validate_network("fd00::/64", None, None, &[]),
            &["fd00::/64", "IPv6"],
        );
        err_mentions(
            validate_network("172.20.0.0", None, None, &[]),
            &["prefix length"],
        );
    }

    #[test]
    fn validate_rejects_host_bits_like_docker() {
        err_mentions(
            validate_network("172.20.0.5/16", None, None, &[]),
            &["invalid subnet 172.20.0.5/16", "it should be 172.20.0.0/16"],
        );
        err_mentions(
            validate_network("10.0.0.0/16", None, Some("10.0.1.7/24"), &[]),
            &["ip-range 10.0.1.7/24", "10.0.1.0/24"],
        );
    }

    #[test]
    fn validate_rejects_too_small_subnet() {
        for s in ["10.0.0.0/31", "10.0.0.1/32"] {
            err_mentions(validate_network(s, None, None, &[]), &[s, "/30"]);
        }
    }

    #[test]
    fn validate_gateway_rules() {
        err_mentions(
            validate_network("10.0.0.0/24", Some("10.0.1.1"), None, &[]),
            &["10.0.1.1", "10.0.0.0/24", "doesn't contain"],
        );
        err_mentions(
            validate_network("10.0.0.0/24", Some("10.0.0.0"), None, &[]),
            &["10.0.0.0", "network address"],
        );
        err_mentions(
            validate_network("10.0.0.0/24", Some("10.0.0.255"), None, &[]),
            &["10.0.0.255", "broadcast"],
        );
        err_mentions(
            validate_network("10.0.0.0/24", Some("10.0.0.x"), None, &[]),
            &["gateway", "\"10.0.0.x\""],
        );
        err_mentions(
            validate_network("10.0.0.0/24", Some("::1"), None, &[]),
            &["\"::1\"", "IPv6"],
        );
    }

    #[test]
    fn validate_ip_range_rules() {
        err_mentions(
            validate_network("10.0.0.0/24", None, Some("10.0.1.0/24"), &[]),
            &["10.0.1.0/24", "10.0.0.0/24"],
        );
        err_mentions(
            validate_network("10.0.0.0/24", None, Some("10.0.0.0/23"), &[]),
            &["10.0.0.0/23"],
        );
        err_mentions(
            validate_network("10.0.0.0/24", None, Some("nope"), &[]),
            &["ip-range", "\"nope\""],
        );
        // ip-range equal to the subnet is fine.
        validate_network("10.0.0.0/24", None, Some("10.0.0.0/24"), &[]).unwrap();
    }

    #[test]
    fn validate_rejects_overlap_naming_other_network() {
        let existing = [net("netd0", "172.17.0.0/16"), net("db", "10.5.0.0/24")];
        err_mentions(
            validate_network("172.17.5.0/24", None, None, &existing),
            &["172.17.5.0/24", "netd0", "172.17.0.0/16"],
        );
        err_mentions(
            validate_network("10.0.0.0/8", None, None, &existing),
            &["10.0.0.0/8", "\"db\"", "10.5.0.0/24"],
        );
        validate_network("10.6.0.0/24", None, None, &existing).unwrap();
    }

    #[test]
    fn plan_refuses_gateway_or_ip_range_without_subnet() {
        let existing = [net("netd0", "172.17.0.0/16")];
        // 172.18.0.1 lies in the subnet that would be picked: still refused, as in Docker.
        let e = err_mentions(
            plan_network(None, Some("172.18.0.1"), None, &existing),
            &["gateway \"172.18.0.1\"", "must have a corresponding subnet"],
        );
        assert!(!e.is_conflict());
        err_mentions(
            plan_network(None, None, Some("172.18.1.0/24"), &existing),
            &[
                "ip-range \"172.18.1.0/24\"",
                "must have a corresponding subnet",
            ],
        );
        err_mentions(
            plan_network(None, Some("10.0.0.1"), Some("10.0.0.0/25"), &existing),
            &["gateway \"10.0.0.1\"", "--subnet"],
        );
    }

    #[test]
    fn plan_picks_a_subnet_or_validates_the_given_one() {
        let existing = [net("netd0", "172.17.0.0/16")];
        let (s, g, r) = plan_network(None, None, None, &existing).unwrap();
        assert_eq!(
            (s.to_string(), g, r),
            ("172.18.0.0/16".into(), ip("172.18.0.1"), None)
        );
        let (s, g, r) = plan_network(
            Some("10.0.0.0/24"),
            Some("10.0.0.9"),
            Some("10.0.0.0/25"),
            &existing,
        )
        .unwrap();
        assert_eq!(s.to_string(), "10.0.0.0/24");
        assert_eq!(g, ip("10.0.0.9"));
        assert_eq!(r.unwrap().to_string(), "10.0.0.0/25");
        err_mentions(
            plan_network(Some("172.17.0.0/24"), None, None, &existing),
            &["172.17.0.0/24", "netd0"],
        );
    }

    #[test]
    fn choose_subnet_walks_docker_pools() {
        assert_eq!(choose_subnet(&[]).unwrap().to_string(), "172.17.0.0/16");
        let existing = [net("netd0", "172.17.0.0/16"), net("b", "172.18.0.0/24")];
        assert_eq!(
            choose_subnet(&existing).unwrap().to_string(),
            "172.19.0.0/16"
        );
        let mut all: Vec<Network> = (17..=31)
            .map(|b| net(&format!("n{b}"), &format!("172.{b}.0.0/16")))
            .collect();
        assert_eq!(choose_subnet(&all).unwrap().to_string(), "192.168.0.0/20");
        all.push(net("home", "192.168.1.0/24"));
        assert_eq!(choose_subnet(&all).unwrap().to_string(), "192.168.16.0/20");
        all.push(net("big", "192.168.0.0/16"));
        err_mentions(choose_subnet(&all), &["--subnet"]);
        assert_eq!(default_pools().count(), 15 + 16);
    }

    #[test]
    fn allocate_serially_after_cursor_skipping_reserved_and_used() {
        let n = net("web", "10.0.0.0/29"); // .0 net, .1 gw, .2-.6 hosts, .7 bcast
        let mut used = BTreeSet::new();
        assert_eq!(allocate(&n, &used, None, None).unwrap(), ip("10.0.0.2"));
        used.insert(ip("10.0.0.2"));
        assert_eq!(
            allocate(&n, &used, Some(ip("10.0.0.2")), None).unwrap(),
            ip("10.0.0.3")
        );
        // After a cursor at .5, .6 is next even though .3 is free.
        assert_eq!(
            allocate(&n, &used, Some(ip("10.0.0.5")), None).unwrap(),
            ip("10.0.0.6")
        );
        // At the end it wraps and skips broadcast, network, gateway and used .2.
        assert_eq!(
            allocate(&n, &used, Some(ip("10.0.0.6")), None).unwrap(),
            ip("10.0.0.3")
        );
        // A cursor outside the range starts at its beginning.
        assert_eq!(
            allocate(&n, &used, Some(ip("192.0.2.1")), None).unwrap(),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn allocate_respects_ip_range() {
        let mut n = net("web", "10.0.0.0/24");
        n.ip_range = Some("10.0.0.128/30".parse().unwrap());
        let mut used = BTreeSet::new();
        let mut got = vec![];
        for _ in 0..4 {
            let a = allocate(&n, &used, got.last().copied(), None).unwrap();
            used.insert(a);
            got.push(a);
        }
        assert_eq!(
            got,
            ["10.0.0.128", "10.0.0.129", "10.0.0.130", "10.0.0.131"].map(ip)
        );
        err_mentions(
            allocate(&n, &used, None, None),
            &["\"web\"", "10.0.0.128/30", "no free address"],
        );
        // A static address outside the range but inside the subnet is allowed, as in Docker.
        assert_eq!(
            allocate(&n, &used, None, Some(ip("10.0.0.9"))).unwrap(),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn allocate_reports_exhaustion() {
        let n = net("tiny", "10.0.0.0/30"); // only .2 is assignable
        let used = BTreeSet::from([ip("10.0.0.2")]);
        let e = err_mentions(
            allocate(&n, &used, None, None),
            &["network \"tiny\" has no free address in 10.0.0.0/30"],
        );
        assert!(e.is_conflict());
    }

    #[test]
    fn allocate_requested_rules() {
        let n = net("web", "10.0.0.0/24");
        let used = BTreeSet::from([ip("10.0.0.7")]);
        assert_eq!(
            allocate(&n, &used, None, Some(ip("10.0.0.8"))).unwrap(),
            ip("10.0.0.8")
        );
        let e = err_mentions(
            allocate(&n, &used, None, Some(ip("10.0.0.7"))),
            &["address 10.0.0.7 is already in use on network \"web\""],
        );
        assert!(e.is_conflict());
        err_mentions(
            allocate(&n, &used, None, Some(ip("10.0.1.7"))),
            &["10.0.1.7", "outside", "10.0.0.0/24", "\"web\""],
        );
        err_mentions(
            allocate(&n, &used, None, Some(ip("10.0.0.1"))),
            &["10.0.0.1", "gateway", "\"web\""],
        );
        err_mentions(
            allocate(&n, &used, None, Some(ip("10.0.0.0"))),
            &["10.0.0.0", "network address"],
        );
        let e = err_mentions(
            allocate(&n, &used, None, Some(ip("10.0.0.255"))),
            &["10.0.0.255", "broadcast"],
        );
        assert!(!e.is_conflict());
    }

    #[test]
    fn parse_ipv4_names_what_and_input() {
        assert_eq!(parse_ipv4("10.0.0.1", "--ip").unwrap(), ip("10.0.0.1"));
        err_mentions(
            parse_ipv4("10.0.0.256", "--ip"),
            &["--ip", "\"10.0.0.256\""],
        );
        err_mentions(parse_ipv4("fe80::1", "--ip"), &["IPv6"]);
    }

    #[test]
    fn errors_map_to_api_kinds() {
        use crate::error::{Error, ErrorKind};
        let e: Error = IpamError::AddressInUse {
            ip: ip("10.0.0.2"),
            network: "n".into(),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let e: Error = parse_cidr("x", "subnet").unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::Invalid);
    }
}
