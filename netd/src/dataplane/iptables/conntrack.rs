//! The kernel's connection tracking table, which carries the iptables path's NAT state:
//! read from /proc/thread-self/net/nf_conntrack (CONFIG_NF_CONNTRACK_PROCFS), entries
//! deleted over ctnetlink. Both act on the calling thread's network namespace.

use std::net::Ipv4Addr;

use rtnetlink::sys::protocols::NETLINK_NETFILTER;

use crate::dataplane::{DataplaneError, Flow, Result, nlsync};

const PROC_CONNTRACK: &str = "/proc/thread-self/net/nf_conntrack";

/// One direction of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Ports for TCP/UDP; for ICMP the echo id in both.
    pub sport: u16,
    pub dport: u16,
}

/// One IPv4 entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub proto: String,
    pub proto_num: u8,
    pub timeout_secs: u64,
    /// TCP state, or the entry's flags for other protocols.
    pub state: String,
    pub original: Tuple,
    pub reply: Tuple,
    /// ICMP type and code of the original direction.
    pub icmp: Option<(u8, u8)>,
}

impl Entry {
    fn involves(&self, ip: Ipv4Addr) -> bool {
        [
            self.original.src,
            self.original.dst,
            self.reply.src,
            self.reply.dst,
        ]
        .contains(&ip)
    }

    /// The flow as `netd conntrack ls` shows it: the original tuple, and the tuple the
    /// peer sees after NAT (the reply direction turned around).
    pub fn to_flow(&self) -> Flow {
        let (o, r) = (self.original, self.reply);
        Flow {
            proto: self.proto.clone(),
            original: format!("{}:{} -> {}:{}", o.src, o.sport, o.dst, o.dport),
            translated: format!("{}:{} -> {}:{}", r.dst, r.dport, r.src, r.sport),
            state: self.state.clone(),
            // The procfs table has no creation time unless nf_conntrack_timestamp is on.
            age_secs: 0,
            expires_in_secs: self.timeout_secs,
        }
    }
}

/// Parse the procfs table, keeping IPv4 TCP, UDP and ICMP entries.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Entry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() != Some(&"ipv4") || f.len() < 6 {
        return None;
    }
    let proto = f[2].to_string();
    let proto_num: u8 = f[3].parse().ok()?;
    let timeout_secs = f[4].parse().ok()?;
    let mut state = String::new();
    let mut tuples: Vec<Tuple> = Vec::new();
    let mut cur: Option<Tuple> = None;
    let mut icmp = (None, None);
    for field in &f[5..] {
        match field.split_once('=') {
            None if field.starts_with('[') => {
                if state.is_empty() {
                    state = field.trim_matches(|c| c == '[' || c == ']').to_string();
                }
            }
            None => state = field.to_string(),
            Some(("src", v)) => {
                tuples.extend(cur.take());
                cur = Some(Tuple {
                    src: v.parse().ok()?,
                    dst: Ipv4Addr::UNSPECIFIED,
                    sport: 0,
                    dport: 0,
                });
            }
            Some((k, v)) => {
                let t = cur.as_mut()?;
                match k {
                    "dst" => t.dst = v.parse().ok()?,
                    "sport" => t.sport = v.parse().ok()?,
                    "dport" => t.dport = v.parse().ok()?,
                    "id" => (t.sport, t.dport) = (v.parse().ok()?, v.parse().ok()?),
                    "type" if tuples.is_empty() => icmp.0 = v.parse().ok(),
                    "code" if tuples.is_empty() => icmp.1 = v.parse().ok(),
                    _ => {}
                }
            }
        }
    }
    tuples.extend(cur.take());
    let [original, reply] = tuples.get(..2)?.try_into().ok()?;
    let icmp = icmp.0.zip(icmp.1);
    Some(Entry {
        proto,
        proto_num,
        timeout_secs,
        state,
        original,
        reply,
        icmp,
    })
}

/// The current IPv4 entries.
pub fn read() -> Result<Vec<Entry>> {
    match std::fs::read_to_string(PROC_CONNTRACK) {
        Ok(text) => Ok(parse(&text)),
        Err(e) => Err(DataplaneError::new(format!("reading {PROC_CONNTRACK}"), e)),
    }
}

// ctnetlink constants from linux/netfilter/nfnetlink.h and nfnetlink_conntrack.h.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLA_F_NESTED: u16 = 1 << 15;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;

fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::with_capacity((len + 3) & !3);
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize((len + 3) & !3, 0);
    out
}

fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    attr(kind | NLA_F_NESTED, &parts.concat())
}

/// An IPCTNL_MSG_CT_DELETE request: with `entry`, for that entry; without, for every IPv4
/// entry of the namespace.
fn delete_request(entry: Option<&Entry>) -> Vec<u8> {
    // nfgenmsg: family AF_INET, version 0, resource id 0.
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
    if let Some(e) = entry {
        let o = e.original;
        let ip = nested(
            CTA_TUPLE_IP,
            &[
                attr(CTA_IP_V4_SRC, &o.src.octets()),
                attr(CTA_IP_V4_DST, &o.dst.octets()),
            ],
        );
        let mut proto = vec![attr(CTA_PROTO_NUM, &[e.proto_num])];
        match e.icmp {
            Some((kind, code)) => {
                proto.push(attr(CTA_PROTO_ICMP_ID, &o.sport.to_be_bytes()));
                proto.push(attr(CTA_PROTO_ICMP_TYPE, &[kind]));
                proto.push(attr(CTA_PROTO_ICMP_CODE, &[code]));
            }
            None => {
                proto.push(attr(CTA_PROTO_SRC_PORT, &o.sport.to_be_bytes()));
                proto.push(attr(CTA_PROTO_DST_PORT, &o.dport.to_be_bytes()));
            }
        }
        body.extend(nested(
            CTA_TUPLE_ORIG,
            &[ip, nested(CTA_TUPLE_PROTO, &proto)],
        ));
    }
    let len = 16 + body.len();
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // sequence number and port id
    msg.extend(body);
    msg
}

/// Delete the entries that involve any of `ips` (every IPv4 entry when `None`); returns
/// how many were deleted. An entry that expired meanwhile is not an error.
pub fn flush(ips: Option<&[Ipv4Addr]>) -> Result<u64> {
    let entries = read()?;
    let Some(ips) = ips else {
        nlsync::request(NETLINK_NETFILTER, &delete_request(None))
            .map_err(|e| DataplaneError::new("flushing the conntrack table", e))?;
        return Ok(entries.len() as u64);
    };
    let mut deleted = 0;
    for e in entries
        .iter()
        .filter(|e| ips.iter().any(|ip| e.involves(*ip)))
    {
        match nlsync::request(NETLINK_NETFILTER, &delete_request(Some(e))) {
            Ok(()) => deleted += 1,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => {
                return Err(DataplaneError::new(
                    format!("deleting conntrack entry {}", e.to_flow().original),
                    err,
                ));
            }
        }
    }
    Ok(deleted)
}

/// Flows as the API shows them.
pub fn flows() -> Result<Vec<Flow>> {
    Ok(read()?.iter().map(Entry::to_flow).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ipv4     2 tcp      6 431999 ESTABLISHED src=203.0.113.9 dst=203.0.113.1 sport=40000 dport=8080 src=192.0.2.2 dst=203.0.113.9 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=192.0.2.2 dst=198.51.100.53 sport=5353 dport=53 [UNREPLIED] src=198.51.100.53 dst=203.0.113.1 sport=53 dport=5353 mark=0 zone=0 use=2
ipv4     2 icmp     1 29 src=192.0.2.2 dst=198.51.100.1 type=8 code=0 id=77 src=198.51.100.1 dst=203.0.113.1 type=0 code=0 id=77 mark=0 use=1
ipv6     10 tcp      6 10 SYN_SENT src=::1 dst=::1 sport=1 dport=2 [UNREPLIED] src=::1 dst=::1 sport=2 dport=1 mark=0 use=1
";

    #[test]
    fn parses_tcp_udp_icmp_and_skips_ipv6() {
        let e = parse(SAMPLE);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].state, "ESTABLISHED");
        assert_eq!(e[0].timeout_secs, 431_999);
        assert_eq!(e[0].reply.src, Ipv4Addr::new(192, 0, 2, 2));
        let f = e[0].to_flow();
        assert_eq!(f.original, "203.0.113.9:40000 -> 203.0.113.1:8080");
        assert_eq!(f.translated, "203.0.113.9:40000 -> 192.0.2.2:80");
        assert_eq!(e[1].state, "UNREPLIED");
        assert_eq!(
            e[1].to_flow().translated,
            "203.0.113.1:5353 -> 198.51.100.53:53"
        );
        assert_eq!(e[2].icmp, Some((8, 0)));
        assert_eq!((e[2].original.sport, e[2].original.dport), (77, 77));
        assert!(e[0].involves(Ipv4Addr::new(192, 0, 2, 2)));
        assert!(!e[2].involves(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn delete_request_layout() {
        let all = delete_request(None);
        assert_eq!(all.len(), 20);
        assert_eq!(u16::from_ne_bytes([all[4], all[5]]), 0x0102);
        let e = &parse(SAMPLE)[0];
        let one = delete_request(Some(e));
        assert_eq!(
            u32::from_ne_bytes(one[..4].try_into().unwrap()) as usize,
            one.len()
        );
        // The source address and the big-endian source port are in the message.
        assert!(one.windows(4).any(|w| w == [203, 0, 113, 9]));
        assert!(one.windows(2).any(|w| w == 40000u16.to_be_bytes()));
    }
}
