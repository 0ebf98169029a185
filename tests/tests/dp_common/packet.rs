//! A packet tap (AF_PACKET) on one interface of a namespace: it sees every frame the
//! interface receives before TC and the IP stack, so a test can prove that a packet it
//! expects to be dropped did arrive (and was dropped by netd, not lost on the way).

use std::{
    ffi::CString,
    io,
    net::{Ipv4Addr, UdpSocket},
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use super::sockets::in_ns;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;

/// An IPv4 TCP or UDP packet seen by a [`Tap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A packet socket bound to one interface.
pub struct Tap(UdpSocket);

impl Tap {
    /// Tap `ifname` in namespace `ns` (the interface is looked up inside it).
    pub fn open(ns: &Path, ifname: &str) -> Tap {
        let name = ifname.to_string();
        let fd = in_ns(ns, move || open_here(&name))
            .unwrap_or_else(|e| panic!("tapping {ifname} in {}: {e}", ns.display()));
        // recv and SO_RCVTIMEO work the same on a packet socket; UdpSocket gives both.
        Tap(UdpSocket::from(fd))
    }

    /// The IPv4 TCP/UDP packets received within `window`.
    pub fn collect(&self, window: Duration) -> Vec<Seen> {
        self.frames(window)
            .iter()
            .filter_map(|f| parse_frame(f))
            .collect()
    }

    /// Every frame received (or sent) on the interface within `window`.
    pub fn frames(&self, window: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if self
                .0
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                break;
            }
            if let Ok(n) = self.0.recv(&mut buf) {
                out.push(buf[..n].to_vec());
            }
        }
        out
    }

    /// Send a raw Ethernet frame out of the tapped interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.0.send(frame).map(|_| ())
    }
}

/// An ARP reply frame (broadcast) saying that `ip` is at `mac`, from `mac`.
pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op 2 (reply).
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// Whether the TCP or UDP checksum of an IPv4 frame (Ethernet, no VLAN) is right; `None`
/// for other frames, fragments, and UDP without a checksum.
pub fn l4_checksum_ok(f: &[u8]) -> Option<bool> {
    if f.len() < 34 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if frag != 0 || total > ip.len() || total < ihl + 8 || !matches!(ip[9], 6 | 17) {
        return None;
    }
    let l4 = &ip[ihl..total];
    if ip[9] == 17 && l4[6..8] == [0, 0] {
        return None;
    }
    let mut pseudo = Vec::with_capacity(12 + l4.len());
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, ip[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    Some(super::icmp::checksum(&pseudo) == 0)
}

/// Parse a frame into its IPv4 TCP/UDP tuple.
pub fn seen(f: &[u8]) -> Option<Seen> {
    parse_frame(f)
}

fn open_here(ifname: &str) -> io::Result<OwnedFd> {
    let c_name = CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: plain syscalls on values we own; the fd is wrapped at once.
    unsafe {
        let ifindex = libc::if_nametoindex(c_name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        );
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        let rc = libc::bind(
            raw,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Ethernet (no VLAN) + IPv4 + TCP/UDP ports.
fn parse_frame(f: &[u8]) -> Option<Seen> {
    if f.len() < 14 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.len() < ihl + 4 || !matches!(ip[9], 6 | 17) {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    Some(Seen {
        src: addr(12),
        dst: addr(16),
        proto: ip[9],
        sport: u16::from_be_bytes([ip[ihl], ip[ihl + 1]]),
        dport: u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]),
    })
}
