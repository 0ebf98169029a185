//! Address translation: entries in pairs, port allocation, restoring an evicted half.
//!
//! A translated flow with original tuple `O` and translated tuple `T` has two NAT
//! entries: `O -> T` for the original direction and `rev(T) -> rev(O)` for replies. They
//! are inserted reverse first, both with BPF_NOEXIST: a taken reverse key means the
//! candidate port is in use; a taken forward key means another CPU created the same flow
//! meanwhile, and the reverse half is rolled back unless that flow uses it too. When the
//! LRU evicts one half of a live flow, the next packet that hits the other half restores
//! it, so an established flow never changes its translation (Cilium #34833).

use core::ptr::write_volatile;

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32, programs::TcContext};
use netd_common::{
    conntrack::FlowKey,
    nat::{DataplaneConfig, NAT_DIR_ORIGINAL, NAT_DIR_REPLY, NatEntry, NextHop, SNAT_PROBES},
    stats::DropReason,
};

use crate::{
    conntrack::{self, now},
    csum,
    maps::{NETD_CONFIG, NETD_NAT},
    parse::Ip4,
};

/// The dataplane settings (zeroed until userspace writes them).
#[inline(always)]
pub fn config() -> DataplaneConfig {
    NETD_CONFIG.get(0).copied().unwrap_or_default()
}

/// The NAT entry for a packet with tuple `key`, if any, copied out. Restores the other
/// half of the pair if the LRU evicted it.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<NatEntry> {
    // SAFETY: the entry is copied out at once.
    let e = *unsafe { NETD_NAT.get(key) }?;
    let partner = e.rewrite.reversed();
    if NETD_NAT.get_ptr(partner).is_none() {
        let restored = NatEntry {
            rewrite: key.reversed(),
            created_ns: e.created_ns,
            dir: if e.dir == NAT_DIR_ORIGINAL {
                NAT_DIR_REPLY
            } else {
                NAT_DIR_ORIGINAL
            },
            flags: e.flags,
            _pad: [0; 2],
            pub_id: e.pub_id,
            hop: NextHop::default(),
        };
        // If another flow took the key meanwhile there is nothing safe to do.
        let _ = NETD_NAT.insert(partner, restored, u64::from(BPF_NOEXIST));
    }
    Some(e)
}

/// Keeps `hop` as the next hop of the flow whose NAT entry is keyed by `key` (see
/// [`NatEntry::hop`]). Two CPUs doing it at once write the same answer.
#[inline(always)]
pub fn remember_hop(key: &FlowKey, hop: &NextHop) {
    if let Some(e) = NETD_NAT.get_ptr_mut(key) {
        // SAFETY: a map value, valid for the program's run. Volatile writes keep their
        // order, and the stamp goes last: a reader never takes a half-written hop for a
        // fresh one.
        unsafe {
            let h = &raw mut (*e).hop;
            write_volatile(&raw mut (*h).dmac, hop.dmac);
            write_volatile(&raw mut (*h).smac, hop.smac);
            write_volatile(&raw mut (*h).ifindex, hop.ifindex);
            write_volatile(&raw mut (*h).max_len, hop.max_len);
            write_volatile(&raw mut (*h).kind, hop.kind);
            write_volatile(&raw mut (*h).looked_up, hop.looked_up);
        }
    }
}

/// The NAT entry for `key` without restoring anything (for a quick classification).
#[inline(always)]
pub fn peek(key: &FlowKey) -> Option<NatEntry> {
    // SAFETY: the entry is copied out at once.
    unsafe { NETD_NAT.get(key) }.copied()
}

/// Applies the NAT entry `e` (found for tuple `key`) to the packet and records it in
/// conntrack.
#[inline(always)]
pub fn apply(ctx: &TcContext, ip: &Ip4, key: &FlowKey, e: &NatEntry) -> Result<(), DropReason> {
    csum::rewrite(ctx, ip, key, &e.rewrite)?;
    let reply = e.dir == NAT_DIR_REPLY;
    let (orig, translated) = if reply {
        (e.rewrite.reversed(), key.reversed())
    } else {
        (*key, e.rewrite)
    };
    conntrack::touch(&orig, &translated, ip, reply, e.pub_id, ctx.len())
}

/// Why a pair could not be inserted.
enum PairError {
    /// The reverse key is taken: the translated tuple is in use.
    Taken,
    /// The forward key exists: the flow was created concurrently.
    Exists,
}

#[inline(always)]
fn insert_pair(
    o: &FlowKey,
    t: &FlowKey,
    flags: u8,
    pub_id: u32,
    now: u64,
) -> Result<(), PairError> {
    let rev_key = t.reversed();
    let rev = NatEntry {
        rewrite: o.reversed(),
        created_ns: now,
        dir: NAT_DIR_REPLY,
        flags,
        _pad: [0; 2],
        pub_id,
        hop: NextHop::default(),
    };
    // A taken reverse key may hold this very flow's reply half, left behind when the LRU
    // evicted only the forward half: keep it and restore the forward half next to it.
    let own_reverse = NETD_NAT
        .insert(rev_key, rev, u64::from(BPF_NOEXIST))
        .is_err();
    if own_reverse && peek(&rev_key).is_none_or(|e| e.rewrite != rev.rewrite) {
        return Err(PairError::Taken);
    }
    let fwd = NatEntry {
        rewrite: *t,
        created_ns: now,
        dir: NAT_DIR_ORIGINAL,
        flags,
        _pad: [0; 2],
        pub_id,
        hop: NextHop::default(),
    };
    if NETD_NAT.insert(o, fwd, u64::from(BPF_NOEXIST)).is_err() {
        // Roll back the reverse half only if this CPU inserted it and the flow that won
        // has another translation (two CPUs probing different SNAT ports). If the winner
        // translates to `t` too, the reverse half is its own: it found ours in place,
        // took it for its own (same rewrite) and inserted its forward half between our
        // two inserts; removing it would leave that flow without its reply half.
        //
        // No deterministic test: the window lies between two map updates of one program
        // run, and BPF_PROG_TEST_RUN runs a program to its end; no packet can reach this
        // point with the forward key already taken, since every caller looks the key up
        // first and that lookup restores a missing reverse half instead.
        if !own_reverse && peek(o).is_none_or(|e| e.rewrite != *t) {
            let _ = NETD_NAT.remove(rev_key);
        }
        return Err(PairError::Exists);
    }
    Ok(())
}

/// Records the translation `o -> t` of a new flow (no port choice: DNAT, or a restore).
/// Returns the entry that now translates `o`, which is another CPU's if it won a race.
///
/// `opens`: the packet opens a flow (a TCP SYN without ACK, or a datagram of a flow netd
/// does not know). Such a packet may take the reply tuple of a flow that is closed or
/// expired: with one container port published on two host ports, a client that reuses
/// its source port through the other host port has the old flow's reply tuple, and
/// Linux conntrack, too, lets a new SYN replace a TIME_WAIT/CLOSE entry. A restore
/// (`opens` false) never evicts anything.
#[inline(always)]
pub fn create_fixed(
    o: &FlowKey,
    t: &FlowKey,
    flags: u8,
    pub_id: u32,
    opens: bool,
) -> Result<NatEntry, DropReason> {
    let now = now();
    match insert_pair(o, t, flags, pub_id, now) {
        Ok(()) | Err(PairError::Exists) => return peek(o).ok_or(DropReason::NatInsert),
        Err(PairError::Taken) if opens && evict_stale(&t.reversed()) => {}
        Err(PairError::Taken) => return Err(DropReason::NatInsert),
    }
    // Reverse first again: another CPU may have taken the freed key meanwhile.
    match insert_pair(o, t, flags, pub_id, now) {
        Ok(()) | Err(PairError::Exists) => peek(o).ok_or(DropReason::NatInsert),
        Err(PairError::Taken) => Err(DropReason::NatInsert),
    }
}

/// Frees `key` if the flow whose NAT entry holds it is closed or expired: both halves of
/// its pair and its conntrack entry go. Whether the key may be tried again (also when it
/// was freed meanwhile). A live flow, or one conntrack no longer knows (its state is
/// unknown), keeps the key: that is a genuine clash.
///
/// Two CPUs evicting the same flow at once may remove the pair the first of them has just
/// inserted; the surviving half restores the other on its next packet (see [`lookup`]).
#[inline(always)]
fn evict_stale(key: &FlowKey) -> bool {
    let Some(e) = peek(key) else {
        return true;
    };
    // Each half's partner is keyed by its rewrite reversed; the original half's key is
    // the flow's conntrack key.
    let partner = e.rewrite.reversed();
    let orig = if e.dir == NAT_DIR_REPLY {
        partner
    } else {
        *key
    };
    if !conntrack::is_stale(&orig) {
        return false;
    }
    let _ = NETD_NAT.remove(key);
    let _ = NETD_NAT.remove(partner);
    conntrack::forget(&orig);
    true
}

/// Records a source-translated flow `o -> t`, choosing `t`'s source port (or ICMP
/// identifier): the original one when it is free, otherwise from the configured range,
/// starting at a random port and probing linearly at most `SNAT_PROBES` times.
#[inline(always)]
pub fn create_snat(
    o: &FlowKey,
    t: &FlowKey,
    flags: u8,
    pub_id: u32,
    cfg: &DataplaneConfig,
) -> Result<NatEntry, DropReason> {
    let now = now();
    let mut t = *t;
    t.sport_be = o.sport_be;
    match insert_pair(o, &t, flags, pub_id, now) {
        Ok(()) | Err(PairError::Exists) => return peek(o).ok_or(DropReason::NatInsert),
        Err(PairError::Taken) => {}
    }
    let min = u32::from(cfg.snat_port_min);
    let span = u32::from(cfg.snat_port_max).wrapping_sub(min) + 1;
    if min == 0 || span == 0 || span > 65536 {
        return Err(DropReason::NatExhausted);
    }
    // SAFETY: a helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    for i in 0..SNAT_PROBES {
        let port = min + (start + i) % span;
        t.sport_be = (port as u16).to_be();
        match insert_pair(o, &t, flags, pub_id, now) {
            Ok(()) | Err(PairError::Exists) => return peek(o).ok_or(DropReason::NatInsert),
            Err(PairError::Taken) => {}
        }
    }
    Err(DropReason::NatExhausted)
}
