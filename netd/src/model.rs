//! The desired state: networks, endpoints and published ports as the user asked for them.
//!
//! These are plain data, persisted by [`crate::state`] and handed to the netlink layer and
//! to the dataplane. Nothing here talks to the kernel.

use std::{fmt, net::Ipv4Addr, path::PathBuf, str::FromStr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Name of the network created on first start, as `docker0` is for Docker.
pub const DEFAULT_NETWORK: &str = "netd0";
/// Interface name of the default network's bridge.
pub const DEFAULT_BRIDGE: &str = "netd0";
/// The default network's subnet, the same as docker0's.
pub const DEFAULT_SUBNET: &str = "172.17.0.0/16";

/// A bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// Small number that identifies the network in dataplane maps; unique, never reused
    /// while the network exists.
    pub id: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Addresses are allocated from this range only (Docker's `--ip-range`).
    pub ip_range: Option<Ipv4Net>,
    /// No traffic to or from outside the subnet, no published ports.
    pub internal: bool,
    /// Inter-container communication inside the network.
    pub icc: bool,
    /// SNAT what leaves through the uplink.
    pub masquerade: bool,
    pub mtu: u32,
    /// Name of the Linux bridge.
    pub bridge: String,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Docker's derivation: 02:42 followed by the four bytes of the IPv4 address.
    pub fn from_ipv4(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Error for a string that is not a MAC address an interface can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: {reason}")]
pub struct MacParseError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| MacParseError {
            input: s.to_string(),
            reason,
        };
        let malformed = || err("expected six hex bytes separated by ':', e.g. 02:42:ac:11:00:02");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(malformed)?;
            // Two hex digits exactly: from_str_radix alone also takes a sign ("+2").
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| malformed())?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        if out[0] & 1 == 1 {
            // A multicast source address would be dropped by every bridge.
            return Err(err(
                "it is a multicast address (the first byte is odd); an interface needs a unicast one, e.g. 02:42:ac:11:00:02",
            ));
        }
        if out == [0; 6] {
            return Err(err(
                "the all-zero address cannot be assigned to an interface",
            ));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where an endpoint's network namespace lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsRef {
    /// A path that holds the namespace open, e.g. /run/netns/NAME.
    pub path: PathBuf,
    /// netd created it (and removes it with the endpoint); otherwise a runtime owns it.
    pub owned: bool,
}

/// An endpoint's membership in one network: one veth pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// The veth end on the host, enslaved to the bridge.
    pub host_ifname: String,
    /// The veth end inside the namespace: eth0, eth1, ...
    pub ifname: String,
}

/// A "container": a network namespace attached to one or more networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub netns: NetnsRef,
    /// The first attachment carries the default route.
    pub attachments: Vec<Attachment>,
}

impl Endpoint {
    /// The attachment to `network`, if the endpoint is connected to it.
    pub fn attachment(&self, network: &str) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.network == network)
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[expect(
    clippy::len_without_is_empty,
    reason = "a range holds at least one port"
)]
impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A published port (or range): HOST_IP:HOST_PORTS -> endpoint:CONTAINER_PORTS.
///
/// Host and container ranges have the same length; port `host.start + i` maps to
/// `container.start + i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub endpoint: String,
    /// The network whose address of the endpoint receives the traffic.
    pub network: String,
    pub proto: Proto,
    /// `None` is every host address (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    pub host_ports: PortRange,
    pub container_ports: PortRange,
}

impl Publication {
    /// Two publications conflict when they could receive the same packet.
    pub fn conflicts_with(&self, other: &Publication) -> bool {
        self.proto == other.proto
            && self.host_ports.overlaps(&other.host_ports)
            && match (self.host_ip, other.host_ip) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a == b,
            }
    }
}

impl fmt::Display for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(
            f,
            "{ip}:{}->{}:{}/{}",
            self.host_ports, self.endpoint, self.container_ports, self.proto
        )
    }
}

/// Everything netd has been asked to build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Per network, the last address handed out: allocation continues after it, so a
    /// freed address is not reused at once (stale flows would reach the new owner).
    #[serde(default)]
    pub ipam_cursor: std::collections::BTreeMap<String, Ipv4Addr>,
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    pub publications: Vec<Publication>,
    /// Allocated (network name, address) pairs are derived from `endpoints`; this is only
    /// the next network id to hand out.
    pub next_network_id: u32,
}

impl DesiredState {
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
    /// Endpoints attached to `network`.
    pub fn endpoints_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints
            .iter()
            .filter(move |e| e.attachment(network).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_from_ip_matches_docker() {
        let mac = MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
    }

    #[test]
    fn mac_parse_rejects_garbage() {
        assert!("02:42:ac:11:00:02".parse::<MacAddr>().is_ok());
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "2:42:ac:11:00:02",
            "+2:42:ac:11:00:02",
            "02:42:ac:11:00:+2",
            "02-42-ac-11-00-02",
            "02:42:ac:11:00:02:",
        ] {
            let e = bad.parse::<MacAddr>().expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("expected six hex bytes"), "{e}");
        }
        assert_eq!(
            "02:42:AC:11:00:02".parse::<MacAddr>().unwrap().to_string(),
            "02:42:ac:11:00:02"
        );
    }

    #[test]
    fn mac_parse_names_multicast_and_all_zero() {
        for bad in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "33:33:00:00:00:01",
        ] {
            let e = bad.parse::<MacAddr>().expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("multicast"), "{e}");
            assert!(!e.contains("six hex bytes"), "{e}");
        }
        let e = "00:00:00:00:00:00"
            .parse::<MacAddr>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"00:00:00:00:00:00\""), "{e}");
        assert!(e.contains("all-zero"), "{e}");
        // Zero bytes elsewhere are fine.
        assert!("02:00:00:00:00:00".parse::<MacAddr>().is_ok());
    }

    #[test]
    fn publications_conflict_on_overlap_and_wildcard() {
        let p = |ip: Option<Ipv4Addr>, s, e, proto| Publication {
            endpoint: "a".into(),
            network: "n".into(),
            proto,
            host_ip: ip,
            host_ports: PortRange { start: s, end: e },
            container_ports: PortRange { start: s, end: e },
        };
        let lo = Some(Ipv4Addr::LOCALHOST);
        assert!(p(None, 80, 90, Proto::Tcp).conflicts_with(&p(lo, 90, 95, Proto::Tcp)));
        assert!(!p(None, 80, 90, Proto::Tcp).conflicts_with(&p(None, 80, 90, Proto::Udp)));
        assert!(!p(lo, 80, 80, Proto::Tcp).conflicts_with(&p(
            Some(Ipv4Addr::new(10, 0, 0, 1)),
            80,
            80,
            Proto::Tcp
        )));
        assert!(!p(None, 80, 89, Proto::Tcp).conflicts_with(&p(None, 90, 99, Proto::Tcp)));
    }
}
