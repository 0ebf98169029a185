//! Connection tracking: the flow key, the entry, TCP state transitions and timeouts.
//!
//! Timeouts follow RFC 5382 (TCP: established idle >= 2 h 4 min, transitory >= 4 min)
//! and RFC 4787 (UDP >= 2 min; 5 min recommended), except that a connection closed by a
//! RST or by FINs in both directions is kept only briefly (for the last ACK and
//! retransmitted FINs), so that connection churn does not fill the table.

use crate::{assert_size, pod};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A flow's 5-tuple as it appears on the wire at the point of lookup. For ICMP echo the
/// identifier is the "port": `sport_be` of a request and `dport_be` of a reply, the other
/// port 0, so that the reply's key is the request's [`FlowKey::reversed`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
assert_size!(FlowKey, 16);

impl FlowKey {
    /// The key of a packet travelling the other way.
    #[inline(always)]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            saddr_be: self.daddr_be,
            daddr_be: self.saddr_be,
            sport_be: self.dport_be,
            dport_be: self.sport_be,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// TCP: SYN seen, no reply yet (also UDP/ICMP before the first reply).
pub const CT_NEW: u8 = 1;
/// Traffic seen both ways (TCP: handshake done or picked up mid-stream).
pub const CT_ESTABLISHED: u8 = 2;
/// TCP: a FIN seen in one direction.
pub const CT_CLOSING: u8 = 3;
/// TCP: RST, or FIN in both directions.
pub const CT_CLOSED: u8 = 4;
/// TCP: the responder answered the SYN, the originator has not acknowledged it yet. A
/// partially open connection is transitory (RFC 5382): a SYN flood whose SYN-ACKs are
/// never acknowledged must not hold entries for the established timeout.
pub const CT_SYN_RECV: u8 = 5;

/// The flow is source-translated (masquerade, or the hairpin's source half).
pub const CT_F_SNAT: u8 = 1 << 0;
/// The flow is destination-translated (a published port).
pub const CT_F_DNAT: u8 = 1 << 1;
/// A packet of the reply direction was seen.
pub const CT_F_SEEN_REPLY: u8 = 1 << 2;
/// TCP FIN seen from the originator.
pub const CT_F_FIN_ORIG: u8 = 1 << 3;
/// TCP FIN seen from the responder.
pub const CT_F_FIN_REPLY: u8 = 1 << 4;

/// One tracked flow, keyed by its original tuple (as the initiator sent it) in
/// [`crate::maps::CONNTRACK`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC as of the last tick) at creation.
    pub created_ns: u64,
    /// Last packet (refreshed at most once a second per flow).
    pub last_seen_ns: u64,
    /// The original tuple after translation, as the peer sees it (the key itself when the
    /// flow is not translated).
    pub translated: FlowKey,
    /// Publication the flow came in through (0: none).
    pub pub_id: u32,
    /// One of the `CT_*` states (not a range: `CT_SYN_RECV` came last).
    pub state: u8,
    /// `CT_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}
assert_size!(CtEntry, 40);

/// A flow that a host process opened to a container (UDP), keyed in
/// [`crate::maps::HOST_FLOWS`] by the tuple of the container's replies. netd does not
/// translate such a flow; it only has to recognise its replies, whose destination port is
/// the host socket's local port and may be a published one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFlow {
    /// `bpf_ktime_get_coarse_ns` of the last packet (refreshed at most once a second); the
    /// entry counts for [`UDP_TIMEOUT`] after it.
    pub last_seen_ns: u64,
}
assert_size!(HostFlow, 8);

pod!(FlowKey, CtEntry, HostFlow);

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Whether a TCP segment with `tcp_flags` can open a connection: a SYN without ACK.
/// Anything else belongs to a connection that already exists somewhere.
#[inline(always)]
pub const fn tcp_opens(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The state of a new TCP entry created by a packet with `tcp_flags`.
#[inline(always)]
pub const fn tcp_initial_state(tcp_flags: u8) -> u8 {
    if tcp_opens(tcp_flags) {
        CT_NEW
    } else if tcp_flags & TCP_RST != 0 {
        CT_CLOSED
    } else {
        // Picked up mid-stream (after a flush or a lost entry): let it continue.
        CT_ESTABLISHED
    }
}

/// The next `(state, flags)` of a TCP flow after a packet with `tcp_flags`, travelling in
/// the reply direction if `reply`.
#[inline(always)]
pub const fn tcp_transition(state: u8, flags: u8, reply: bool, tcp_flags: u8) -> (u8, u8) {
    let mut flags = flags;
    if reply {
        flags |= CT_F_SEEN_REPLY;
    }
    if tcp_flags & TCP_RST != 0 {
        return (CT_CLOSED, flags);
    }
    // A new SYN from the originator on a closed flow reuses the tuple: start over.
    if state == CT_CLOSED && !reply && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return (
            CT_NEW,
            flags & !(CT_F_FIN_ORIG | CT_F_FIN_REPLY | CT_F_SEEN_REPLY),
        );
    }
    if tcp_flags & TCP_FIN != 0 {
        flags |= if reply { CT_F_FIN_REPLY } else { CT_F_FIN_ORIG };
    }
    let both_fin = CT_F_FIN_ORIG | CT_F_FIN_REPLY;
    let state = if state == CT_CLOSED || flags & both_fin == both_fin {
        CT_CLOSED
    } else if flags & both_fin != 0 {
        CT_CLOSING
    } else if state == CT_NEW && reply {
        // Half open until the originator acknowledges the reply.
        CT_SYN_RECV
    } else if state == CT_SYN_RECV && !reply && tcp_flags & TCP_ACK != 0 {
        CT_ESTABLISHED
    } else {
        state
    };
    (state, flags)
}

/// The next `(state, flags)` of a flow of protocol `proto` after a packet travelling in
/// the reply direction if `reply`. `tcp_flags` is `None` when the packet carries no
/// transport header (a later fragment): for TCP that says nothing about the connection,
/// so the state stays as it is (the caller still refreshes the timestamp); running the
/// datagram machine instead would turn a closed flow back to established.
#[inline(always)]
pub const fn transition(
    proto: u8,
    state: u8,
    flags: u8,
    reply: bool,
    tcp_flags: Option<u8>,
) -> (u8, u8) {
    match tcp_flags {
        Some(f) if proto == IPPROTO_TCP => tcp_transition(state, flags, reply, f),
        _ if proto == IPPROTO_TCP => (state, flags),
        _ => datagram_transition(state, flags, reply),
    }
}

/// The state of a UDP or ICMP flow after a packet.
#[inline(always)]
pub const fn datagram_transition(state: u8, flags: u8, reply: bool) -> (u8, u8) {
    if reply {
        (CT_ESTABLISHED, flags | CT_F_SEEN_REPLY)
    } else {
        (state, flags)
    }
}

pub const SECOND_NS: u64 = 1_000_000_000;
/// RFC 5382 REQ-5: established idle timeout at least 2 h 4 min.
pub const TCP_ESTABLISHED_TIMEOUT: u64 = (2 * 3600 + 4 * 60) * SECOND_NS;
/// RFC 5382 REQ-5: transitory idle timeout at least 4 min.
pub const TCP_TRANSITORY_TIMEOUT: u64 = 4 * 60 * SECOND_NS;
/// After RST or FINs both ways: long enough for the last ACK and retransmitted FINs.
pub const TCP_CLOSED_TIMEOUT: u64 = 10 * SECOND_NS;
/// RFC 4787 REQ-5: at least 2 min; 5 min is the recommended value.
pub const UDP_TIMEOUT: u64 = 5 * 60 * SECOND_NS;
/// RFC 5508 REQ-1: ICMP query mappings at least 60 s.
pub const ICMP_TIMEOUT: u64 = 60 * SECOND_NS;

/// Whether a [`HostFlow`] last seen at `last_seen_ns` still counts at `now_ns` (a
/// timestamp a little ahead of `now_ns`, written by another CPU, counts).
#[inline(always)]
pub const fn host_flow_live(last_seen_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen_ns) <= UDP_TIMEOUT
}

/// How long a flow in `state` may stay idle.
pub const fn timeout_ns(proto: u8, state: u8) -> u64 {
    match proto {
        IPPROTO_TCP => match state {
            CT_ESTABLISHED => TCP_ESTABLISHED_TIMEOUT,
            CT_CLOSED => TCP_CLOSED_TIMEOUT,
            _ => TCP_TRANSITORY_TIMEOUT,
        },
        IPPROTO_UDP => UDP_TIMEOUT,
        _ => ICMP_TIMEOUT,
    }
}

/// Name of a state for `netd conntrack ls`.
pub const fn state_name(proto: u8, state: u8) -> &'static str {
    match (proto, state) {
        (IPPROTO_TCP, CT_NEW) => "syn_sent",
        (IPPROTO_TCP, CT_SYN_RECV) => "syn_recv",
        (IPPROTO_TCP, CT_CLOSING) => "closing",
        (IPPROTO_TCP, CT_CLOSED) => "closed",
        (_, CT_ESTABLISHED) => "established",
        (_, CT_NEW) => "unreplied",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_then_fin_both_ways_closes() {
        let s = tcp_initial_state(TCP_SYN);
        assert_eq!(s, CT_NEW);
        let (s, f) = tcp_transition(s, 0, true, TCP_SYN | TCP_ACK);
        assert_eq!(s, CT_SYN_RECV);
        let (s, f) = tcp_transition(s, f, false, TCP_ACK);
        assert_eq!(s, CT_ESTABLISHED);
        assert_eq!(timeout_ns(IPPROTO_TCP, s), TCP_ESTABLISHED_TIMEOUT);
        let (s, f) = tcp_transition(s, f, false, TCP_FIN | TCP_ACK);
        assert_eq!(s, CT_CLOSING);
        assert_eq!(timeout_ns(IPPROTO_TCP, s), TCP_TRANSITORY_TIMEOUT);
        let (s, f) = tcp_transition(s, f, true, TCP_FIN | TCP_ACK);
        assert_eq!(s, CT_CLOSED);
        let (s, _) = tcp_transition(s, f, false, TCP_ACK);
        assert_eq!(s, CT_CLOSED, "the last ACK keeps it closed");
    }

    #[test]
    fn an_unacknowledged_syn_ack_stays_transitory() {
        let (s, f) = tcp_transition(CT_NEW, 0, true, TCP_SYN | TCP_ACK);
        assert_eq!(s, CT_SYN_RECV, "half open");
        assert_eq!(timeout_ns(IPPROTO_TCP, s), TCP_TRANSITORY_TIMEOUT);
        assert_eq!(state_name(IPPROTO_TCP, s), "syn_recv");
        // Retransmitted SYN-ACKs and SYNs keep it half open.
        let (s, f) = tcp_transition(s, f, true, TCP_SYN | TCP_ACK);
        assert_eq!(s, CT_SYN_RECV);
        let (s, f) = tcp_transition(s, f, false, TCP_SYN);
        assert_eq!(s, CT_SYN_RECV);
        // An ACK from the responder's side does not complete it either.
        let (s, f) = tcp_transition(s, f, true, TCP_ACK);
        assert_eq!(s, CT_SYN_RECV);
        // Only the originator's ACK does.
        assert_eq!(tcp_transition(s, f, false, TCP_ACK).0, CT_ESTABLISHED);
        // An originator ACK before any reply does not establish anything.
        assert_eq!(tcp_transition(CT_NEW, 0, false, TCP_ACK).0, CT_NEW);
        // A RST or FINs both ways still close a half-open flow.
        assert_eq!(tcp_transition(s, f, true, TCP_RST).0, CT_CLOSED);
        let (s2, f2) = tcp_transition(s, f, false, TCP_FIN | TCP_ACK);
        assert_eq!(s2, CT_CLOSING);
        assert_eq!(tcp_transition(s2, f2, true, TCP_FIN | TCP_ACK).0, CT_CLOSED);
    }

    #[test]
    fn a_later_tcp_fragment_keeps_the_state() {
        for s in [CT_NEW, CT_SYN_RECV, CT_ESTABLISHED, CT_CLOSING, CT_CLOSED] {
            for reply in [false, true] {
                assert_eq!(
                    transition(IPPROTO_TCP, s, CT_F_SNAT, reply, None),
                    (s, CT_F_SNAT),
                    "state {s}, reply {reply}"
                );
            }
        }
        // With flags, TCP runs its own machine; datagrams run theirs either way.
        assert_eq!(
            transition(IPPROTO_TCP, CT_CLOSED, 0, true, Some(TCP_ACK)).0,
            CT_CLOSED
        );
        assert_eq!(
            transition(IPPROTO_UDP, CT_NEW, 0, true, None),
            (CT_ESTABLISHED, CT_F_SEEN_REPLY)
        );
        assert_eq!(
            transition(IPPROTO_ICMP, CT_NEW, 0, false, None),
            (CT_NEW, 0)
        );
    }

    #[test]
    fn every_state_has_a_name() {
        for s in [CT_NEW, CT_SYN_RECV, CT_ESTABLISHED, CT_CLOSING, CT_CLOSED] {
            assert_ne!(state_name(IPPROTO_TCP, s), "unknown", "state {s}");
        }
        for s in [CT_NEW, CT_ESTABLISHED] {
            assert_ne!(state_name(IPPROTO_UDP, s), "unknown", "state {s}");
        }
    }

    #[test]
    fn rst_closes_and_new_syn_reopens() {
        let (s, f) = tcp_transition(CT_ESTABLISHED, CT_F_SEEN_REPLY, true, TCP_RST);
        assert_eq!(s, CT_CLOSED);
        assert_eq!(timeout_ns(IPPROTO_TCP, s), TCP_CLOSED_TIMEOUT);
        let (s, f) = tcp_transition(s, f, false, TCP_SYN);
        assert_eq!((s, f & CT_F_SEEN_REPLY), (CT_NEW, 0));
        // A SYN from the responder's side does not reopen.
        assert_eq!(tcp_transition(CT_CLOSED, 0, true, TCP_SYN).0, CT_CLOSED);
    }

    #[test]
    fn fin_from_one_side_twice_is_still_closing() {
        let (s, f) = tcp_transition(CT_ESTABLISHED, 0, false, TCP_FIN);
        let (s, _) = tcp_transition(s, f, false, TCP_FIN);
        assert_eq!(s, CT_CLOSING);
    }

    #[test]
    fn mid_stream_pickup_is_established() {
        assert_eq!(tcp_initial_state(TCP_ACK), CT_ESTABLISHED);
        assert_eq!(tcp_initial_state(TCP_SYN | TCP_ACK), CT_ESTABLISHED);
        assert_eq!(tcp_initial_state(TCP_RST | TCP_ACK), CT_CLOSED);
    }

    #[test]
    fn timeouts_meet_the_rfcs() {
        assert!(timeout_ns(IPPROTO_TCP, CT_ESTABLISHED) >= 7440 * SECOND_NS);
        assert!(timeout_ns(IPPROTO_TCP, CT_NEW) >= 240 * SECOND_NS);
        assert!(timeout_ns(IPPROTO_TCP, CT_CLOSING) >= 240 * SECOND_NS);
        assert!(timeout_ns(IPPROTO_UDP, CT_NEW) >= 120 * SECOND_NS);
        assert!(timeout_ns(IPPROTO_ICMP, CT_NEW) >= 60 * SECOND_NS);
    }

    #[test]
    fn only_a_bare_syn_opens_a_connection() {
        assert!(tcp_opens(TCP_SYN));
        assert!(!tcp_opens(TCP_SYN | TCP_ACK));
        assert!(!tcp_opens(TCP_ACK));
        assert!(!tcp_opens(TCP_FIN | TCP_ACK));
        assert!(!tcp_opens(TCP_RST));
    }

    #[test]
    fn host_flows_expire_after_the_udp_timeout() {
        let t = 1000 * SECOND_NS;
        assert!(host_flow_live(t, t));
        assert!(host_flow_live(t, t + UDP_TIMEOUT));
        assert!(!host_flow_live(t, t + UDP_TIMEOUT + 1));
        assert!(
            host_flow_live(t + SECOND_NS, t),
            "written ahead by another CPU"
        );
    }

    #[test]
    fn datagram_reply_establishes() {
        assert_eq!(datagram_transition(CT_NEW, 0, false), (CT_NEW, 0));
        assert_eq!(
            datagram_transition(CT_NEW, 0, true),
            (CT_ESTABLISHED, CT_F_SEEN_REPLY)
        );
    }

    #[test]
    fn reversed_twice_is_identity() {
        let k = FlowKey {
            saddr_be: 1,
            daddr_be: 2,
            sport_be: 3,
            dport_be: 4,
            proto: 6,
            _pad: [0; 3],
        };
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().saddr_be, 2);
        assert_eq!(k.reversed().sport_be, 4);
    }
}
