//! Connection tracking: one entry per flow, keyed by its original tuple, holding state,
//! timestamps and the translated tuple. Expiry is enforced by userspace GC from the
//! state's timeout; the datapath only records activity.
//!
//! Apart from that, UDP flows that host processes open to containers are remembered by
//! their reply tuple (they are not translated, so conntrack does not hold them): a reply
//! goes to the host socket's local port, which may be a published port, and must not be
//! taken for a new hairpin flow. Those entries expire by their timestamp alone.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_coarse_ns,
};
use netd_common::{
    conntrack::{
        CT_CLOSED, CT_F_DNAT, CT_F_SEEN_REPLY, CT_F_SNAT, CT_NEW, CtEntry, FlowKey, HostFlow,
        IPPROTO_TCP, SECOND_NS, host_flow_live, tcp_initial_state, timeout_ns, transition,
    },
    stats::DropReason,
};

use crate::{
    maps::{NETD_CT, NETD_HOST_FLOWS, NETD_PORT_STATS},
    parse::{Ip4, L4Kind},
};

/// CLOCK_MONOTONIC in nanoseconds, the clock userspace compares against, as of the last
/// tick: timestamps that decide timeouts of seconds need no better, and reading it costs
/// no clock-source read (~35 ns a packet less, BPF_PROG_TEST_RUN).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The packet's TCP flags, if it is TCP and carries them (a later fragment does not).
#[inline(always)]
fn tcp_flags(ip: &Ip4) -> Option<u8> {
    (ip.proto == IPPROTO_TCP && ip.kind == L4Kind::Ports).then_some(ip.tcp_flags)
}

/// Translation flags of a flow from its two tuples.
#[inline(always)]
fn nat_flags(orig: &FlowKey, translated: &FlowKey) -> u8 {
    let mut f = 0;
    if orig.saddr_be != translated.saddr_be || orig.sport_be != translated.sport_be {
        f |= CT_F_SNAT;
    }
    if orig.daddr_be != translated.daddr_be || orig.dport_be != translated.dport_be {
        f |= CT_F_DNAT;
    }
    f
}

/// Starts tracking flow `orig` (translated to `translated`) with the packet `ip`, which
/// travels in the reply direction if `reply` (an entry being restored).
#[inline(always)]
pub fn create(
    orig: &FlowKey,
    translated: &FlowKey,
    ip: &Ip4,
    reply: bool,
    pub_id: u32,
) -> Result<(), DropReason> {
    let now = now();
    let mut flags = nat_flags(orig, translated);
    let state = match tcp_flags(ip) {
        Some(f) => tcp_initial_state(f),
        None if reply => netd_common::conntrack::CT_ESTABLISHED,
        None => CT_NEW,
    };
    if reply {
        flags |= CT_F_SEEN_REPLY;
    }
    let entry = CtEntry {
        created_ns: now,
        last_seen_ns: now,
        translated: *translated,
        pub_id,
        state,
        flags,
        _pad: [0; 2],
    };
    NETD_CT
        .insert(orig, entry, u64::from(BPF_ANY))
        .map_err(|_| DropReason::NatInsert)
}

/// Records a packet of a tracked flow (restoring the entry if it was evicted) and counts
/// it for the flow's publication.
#[inline(always)]
pub fn touch(
    orig: &FlowKey,
    translated: &FlowKey,
    ip: &Ip4,
    reply: bool,
    pub_id: u32,
    len: u32,
) -> Result<(), DropReason> {
    let Some(ct) = NETD_CT.get_ptr_mut(orig) else {
        create(orig, translated, ip, reply, pub_id)?;
        count_port(pub_id, len);
        return Ok(());
    };
    // SAFETY: a map value; concurrent writers race benignly on these plain fields.
    let ct = unsafe { &mut *ct };
    // A later TCP fragment keeps the state and only refreshes the timestamp.
    let (state, flags) = transition(ip.proto, ct.state, ct.flags, reply, tcp_flags(ip));
    let now = now();
    // Refresh the timestamp at most once a second: fewer cache-line writes per flow.
    if state != ct.state || flags != ct.flags || now.wrapping_sub(ct.last_seen_ns) > SECOND_NS {
        ct.state = state;
        ct.flags = flags;
        ct.last_seen_ns = now;
    }
    count_port(ct.pub_id, len);
    Ok(())
}

/// What conntrack knows about a packet that has no NAT entry.
pub enum Tracked {
    /// Nothing: a new flow.
    No,
    /// An untranslated tracked flow; the packet has been recorded.
    Untranslated,
    /// A translated flow whose NAT entries were both evicted: restore them from here so
    /// the flow keeps its translation.
    Lost { translated: FlowKey, pub_id: u32 },
}

/// Looks `key` up as the original or the reply tuple of a tracked flow.
#[inline(always)]
pub fn find(key: &FlowKey, ip: &Ip4, len: u32) -> Result<Tracked, DropReason> {
    // SAFETY: the entry is copied out at once.
    if let Some(ct) = unsafe { NETD_CT.get(key) } {
        let (translated, pub_id) = (ct.translated, ct.pub_id);
        if translated == *key {
            touch(key, key, ip, false, 0, len)?;
            return Ok(Tracked::Untranslated);
        }
        return Ok(Tracked::Lost { translated, pub_id });
    }
    let rev = key.reversed();
    // SAFETY: as above.
    if let Some(ct) = unsafe { NETD_CT.get(rev) }
        && ct.translated == rev
    {
        touch(&rev, &rev, ip, true, 0, len)?;
        return Ok(Tracked::Untranslated);
    }
    Ok(Tracked::No)
}

/// Whether the flow whose original tuple is `orig` is over: TCP closed (RST, or FIN both
/// ways), or idle beyond its state's timeout but not collected yet. `false` when
/// conntrack does not know the flow: its NAT pair may still carry a live one.
#[inline(always)]
pub fn is_stale(orig: &FlowKey) -> bool {
    // SAFETY: the entry is copied out at once.
    let Some(ct) = unsafe { NETD_CT.get(orig) }.copied() else {
        return false;
    };
    // A timestamp a little ahead of `now`, written by another CPU, is not idle.
    let idle = now().saturating_sub(ct.last_seen_ns);
    (orig.proto == IPPROTO_TCP && ct.state == CT_CLOSED) || idle > timeout_ns(orig.proto, ct.state)
}

/// Stops tracking the flow whose original tuple is `orig` (its NAT pair is gone).
#[inline(always)]
pub fn forget(orig: &FlowKey) {
    let _ = NETD_CT.remove(orig);
}

/// The translation conntrack recorded for the flow whose original tuple is `key`, with
/// its publication, if the flow is translated: what is left of a flow whose NAT pair the
/// LRU evicted.
#[inline(always)]
pub fn translation(key: &FlowKey) -> Option<(FlowKey, u32)> {
    // SAFETY: the entry is copied out at once.
    let ct = unsafe { NETD_CT.get(key) }?;
    (ct.translated != *key).then_some((ct.translated, ct.pub_id))
}

/// Remembers a datagram `key` that a host process sent to a container, by the tuple of
/// the container's replies. Writes only a new entry, or a timestamp a second old.
#[inline(always)]
pub fn record_host_flow(key: &FlowKey) {
    let reply = key.reversed();
    let now = now();
    if let Some(f) = NETD_HOST_FLOWS.get_ptr_mut(reply) {
        // SAFETY: a map value; concurrent writers race benignly on the timestamp.
        let f = unsafe { &mut *f };
        if now.wrapping_sub(f.last_seen_ns) > SECOND_NS {
            f.last_seen_ns = now;
        }
        return;
    }
    // Another CPU inserting the same flow meanwhile is as good.
    let _ = NETD_HOST_FLOWS.insert(
        reply,
        HostFlow { last_seen_ns: now },
        u64::from(BPF_NOEXIST),
    );
}

/// Whether a datagram `key` from a container replies to a live flow that a host process
/// opened (see [`record_host_flow`]). A hit keeps the flow alive, so a container that
/// answers a single request at length is not cut off.
#[inline(always)]
pub fn is_host_reply(key: &FlowKey) -> bool {
    let Some(f) = NETD_HOST_FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a map value; concurrent writers race benignly on the timestamp.
    let f = unsafe { &mut *f };
    let now = now();
    if !host_flow_live(f.last_seen_ns, now) {
        return false;
    }
    if now.wrapping_sub(f.last_seen_ns) > SECOND_NS {
        f.last_seen_ns = now;
    }
    true
}

/// Adds the packet to its publication's counters.
#[inline(always)]
pub fn count_port(pub_id: u32, len: u32) {
    if pub_id == 0 {
        return;
    }
    if let Some(s) = NETD_PORT_STATS.get_ptr_mut(pub_id) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += u64::from(len);
    }
}
