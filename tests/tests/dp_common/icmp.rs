//! ICMP over raw sockets: echo requests built by hand (so the test controls the identifier)
//! and a sniffer that sees every ICMP packet delivered in a namespace, with the addresses
//! of its IP header.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};

use super::sockets::{IO, in_ns};

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;

/// An ICMP packet as received, with its IP header's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmp {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ty: u8,
    pub code: u8,
    /// Identifier and sequence of echo messages (the first four bytes after the checksum).
    pub id: u16,
    pub seq: u16,
    /// Everything after the 8-byte ICMP header.
    pub body: Vec<u8>,
    /// The whole ICMP message, header included (for checksum checks).
    pub raw: Vec<u8>,
}

impl Icmp {
    /// The ICMP checksum is right.
    pub fn checksum_ok(&self) -> bool {
        checksum(&self.raw) == 0
    }

    /// The quoted IPv4 header of an error message has a right checksum.
    pub fn inner_ip_checksum_ok(&self) -> bool {
        let ihl = usize::from(self.body.first().map_or(0, |b| b & 0x0f)) * 4;
        ihl >= 20 && self.body.len() >= ihl && checksum(&self.body[..ihl]) == 0
    }
}

/// A raw ICMP socket in a namespace. It receives a copy of every ICMP packet the
/// namespace's stack receives (the kernel still answers echo requests itself).
pub struct RawIcmp(UdpSocket);

impl RawIcmp {
    /// Open one in `ns`.
    pub fn open(ns: &Path) -> RawIcmp {
        let fd = in_ns(ns, || {
            socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::Icmp,
            )
        })
        .unwrap_or_else(|e| panic!("raw ICMP socket in {}: {e}", ns.display()));
        // A raw IPv4 socket speaks sendto/recvfrom with sockaddr_in like a UDP socket.
        RawIcmp(UdpSocket::from(fd))
    }

    /// Send an echo request to `dst`.
    pub fn send_echo(&self, dst: Ipv4Addr, id: u16, seq: u16, payload: &[u8]) -> io::Result<()> {
        let mut pkt = vec![ECHO_REQUEST, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(payload);
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        self.0.send_to(&pkt, SocketAddr::new(dst.into(), 0))?;
        Ok(())
    }

    /// The next ICMP packet within `timeout` that satisfies `want`.
    pub fn wait_for(&self, timeout: Duration, want: impl Fn(&Icmp) -> bool) -> Option<Icmp> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let left = left.max(Duration::from_millis(1));
            self.0.set_read_timeout(Some(left)).ok()?;
            let Ok(n) = self.0.recv(&mut buf) else {
                continue;
            };
            if let Some(p) = parse(&buf[..n])
                && want(&p)
            {
                return Some(p);
            }
        }
        None
    }

    /// Every ICMP packet received within `window`.
    pub fn collect(&self, window: Duration) -> Vec<Icmp> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(p) =
            self.wait_for(deadline.saturating_duration_since(Instant::now()), |_| true)
        {
            out.push(p);
        }
        out
    }
}

/// Ping `dst` from `ns` with identifier `id`, resending until the reply (echo reply, same
/// identifier, from `dst`, same payload) arrives; returns it, or `None` after [`IO`].
pub fn ping(ns: &Path, dst: Ipv4Addr, id: u16) -> Option<Icmp> {
    let raw = RawIcmp::open(ns);
    let payload = format!("netd ping {id}").into_bytes();
    let deadline = Instant::now() + IO;
    let mut seq = 0;
    while Instant::now() < deadline {
        seq += 1;
        raw.send_echo(dst, id, seq, &payload).ok()?;
        let reply = raw.wait_for(Duration::from_millis(300), |p| {
            p.ty == ECHO_REPLY && p.id == id && p.src == dst && p.body == payload
        });
        if reply.is_some() {
            return reply;
        }
    }
    None
}

/// Parse an IPv4 packet carrying ICMP.
pub fn parse(pkt: &[u8]) -> Option<Icmp> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    if pkt.get(9) != Some(&1) || pkt.len() < ihl + 8 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]);
    let icmp = &pkt[ihl..];
    Some(Icmp {
        src: addr(12),
        dst: addr(16),
        ty: icmp[0],
        code: icmp[1],
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        body: icmp[8..].to_vec(),
        raw: icmp.to_vec(),
    })
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The inner IPv4 header and the first 8 bytes of its payload, as an ICMP error carries
/// them: (src, dst, proto, sport, dport).
pub fn inner_tuple(body: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, u16, u16)> {
    let ihl = usize::from(body.first()? & 0x0f) * 4;
    if body.len() < ihl + 4 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
    Some((
        addr(12),
        addr(16),
        body[9],
        u16::from_be_bytes([body[ihl], body[ihl + 1]]),
        u16::from_be_bytes([body[ihl + 2], body[ihl + 3]]),
    ))
}
