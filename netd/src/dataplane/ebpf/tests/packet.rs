//! Building test frames with correct checksums, and reading them back with every
//! checksum verified from scratch (netd-common's RFC 1071 arithmetic, not the helpers the
//! datapath uses).

use std::net::Ipv4Addr;

use netd_common::csum::{finish, pseudo_header, sum_bytes};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const RST: u8 = 0x04;
pub const FIN: u8 = 0x01;

/// An IPv4 packet to build.
#[derive(Clone)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset (host order): 0x2000 is MF, the low 13 bits the offset in
    /// 8-byte units.
    pub frag: u16,
    /// Option bytes (a multiple of 4).
    pub options: Vec<u8>,
    /// The transport header and payload, checksum filled in by the builder.
    pub l4: Vec<u8>,
    /// Compute the transport checksum (false for a later fragment or a bare payload).
    pub l4_csum: bool,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: Vec<u8>) -> Self {
        Ip {
            src,
            dst,
            proto,
            ttl: 64,
            id: 0x1234,
            frag: 0,
            options: Vec::new(),
            l4,
            l4_csum: true,
        }
    }

    /// The IPv4 header and payload with correct checksums.
    pub fn bytes(&self) -> Vec<u8> {
        let ihl = 20 + self.options.len();
        let mut l4 = self.l4.clone();
        if self.l4_csum {
            fill_l4_csum(self.src, self.dst, self.proto, &mut l4, None);
        }
        let mut h = vec![0u8; ihl];
        h[0] = 0x40 | (ihl / 4) as u8;
        h[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.id.to_be_bytes());
        h[6..8].copy_from_slice(&self.frag.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        h[20..].copy_from_slice(&self.options);
        let c = finish(sum_bytes(0, &h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(&l4);
        h
    }
}

/// Fills the transport checksum of `l4` (TCP, UDP or ICMP). `len` overrides the length
/// used in the pseudo-header (the original datagram's, for a quoted header).
pub fn fill_l4_csum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &mut [u8], len: Option<u16>) {
    let off = match proto {
        TCP => 16,
        UDP => 6,
        _ => 2,
    };
    if l4.len() < off + 2 {
        return;
    }
    l4[off] = 0;
    l4[off + 1] = 0;
    let seed = if proto == ICMP {
        0
    } else {
        pseudo_header(
            src.octets(),
            dst.octets(),
            proto,
            len.unwrap_or(l4.len() as u16),
        )
    };
    let mut c = finish(sum_bytes(seed, l4));
    if proto == UDP && c == 0 {
        c = 0xffff;
    }
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// An ICMP echo request (type 8) or reply (0).
pub fn echo(kind: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut e = vec![kind, 0, 0, 0];
    e.extend_from_slice(&id.to_be_bytes());
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(b"netd-ping");
    e
}

/// An ICMP error quoting `quoted` (an IPv4 packet's bytes, truncated as the sender likes).
pub fn icmp_error(kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut e = vec![kind, code, 0, 0, 0, 0, 0x05, 0xdc];
    e.extend_from_slice(quoted);
    e
}

/// An Ethernet frame.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A parsed and checksum-verified IPv4 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Offset of the transport header in the frame.
    pub l4: usize,
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Verifies the IPv4 header checksum at `ip` within `frame`, and returns its length.
pub fn check_ip_csum(frame: &[u8], ip: usize) -> usize {
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    assert_eq!(
        finish(sum_bytes(0, &frame[ip..ip + ihl])),
        0,
        "IPv4 header checksum at {ip} is wrong"
    );
    ihl
}

/// Parses an Ethernet/IPv4 frame, asserting that the IP checksum and (for a complete,
/// unfragmented TCP/UDP/ICMP packet) the transport checksum are right.
pub fn parse(frame: &[u8]) -> Parsed {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "not IPv4");
    let ihl = check_ip_csum(frame, 14);
    let tot = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let (src, dst) = (addr(&frame[26..30]), addr(&frame[30..34]));
    let proto = frame[23];
    let l4 = 14 + ihl;
    let frag = u16::from_be_bytes([frame[20], frame[21]]);
    let seg = &frame[l4..14 + tot];
    if frag & 0x3fff == 0 {
        let seed = if proto == ICMP {
            0
        } else {
            pseudo_header(src.octets(), dst.octets(), proto, seg.len() as u16)
        };
        let udp_none = proto == UDP && seg[6] == 0 && seg[7] == 0;
        if !udp_none {
            assert_eq!(
                finish(sum_bytes(seed, seg)),
                0,
                "transport checksum of proto {proto} is wrong"
            );
        }
    }
    let (sport, dport) = if frag & 0x1fff == 0 && seg.len() >= 4 {
        (
            u16::from_be_bytes([seg[0], seg[1]]),
            u16::from_be_bytes([seg[2], seg[3]]),
        )
    } else {
        (0, 0)
    };
    Parsed {
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        src,
        dst,
        ttl: frame[22],
        proto,
        sport,
        dport,
        l4,
    }
}

/// The packet quoted in the ICMP error `frame` (parsed with `parse`): its addresses and
/// ports, with its IP header checksum verified.
pub fn quoted(frame: &[u8], p: &Parsed) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = p.l4 + 8;
    let ihl = check_ip_csum(frame, ip);
    let l4 = ip + ihl;
    (
        addr(&frame[ip + 12..ip + 16]),
        u16::from_be_bytes([frame[l4], frame[l4 + 1]]),
        addr(&frame[ip + 16..ip + 20]),
        u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]),
    )
}
