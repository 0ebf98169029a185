//! Counting and verdicts: per-interface counters, drops by reason.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use netd_common::stats::{DropReason, IfaceCounters};

use crate::maps::{NETD_DROPS, NETD_IFACE_STATS};

/// Which way a packet crosses the interface the program is attached to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// TC ingress: the host receives the packet.
    Rx,
    /// TC egress: the host sends the packet.
    Tx,
}

/// The ifindex of the interface the program runs on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the kernel hands TC programs a valid __sk_buff.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Counts the packet on its interface.
#[inline(always)]
pub fn count_iface(ctx: &TcContext, dir: Dir) {
    count(ifindex(ctx), u64::from(ctx.len()), dir);
}

/// Counts a packet of `len` bytes on interface `ifindex`.
#[inline(always)]
pub fn count(ifindex: u32, len: u64, dir: Dir) {
    match NETD_IFACE_STATS.get_ptr_mut(ifindex) {
        Some(c) => {
            // SAFETY: per-CPU value, only this CPU writes it while the program runs.
            let c = unsafe { &mut *c };
            if dir == Dir::Rx {
                c.rx_packets += 1;
                c.rx_bytes += len;
            } else {
                c.tx_packets += 1;
                c.tx_bytes += len;
            }
        }
        None => {
            // Userspace creates the entry when it attaches; this covers a race with that.
            let mut c = IfaceCounters::default();
            if dir == Dir::Rx {
                c.rx_packets = 1;
                c.rx_bytes = len;
            } else {
                c.tx_packets = 1;
                c.tx_bytes = len;
            }
            let _ = NETD_IFACE_STATS.insert(ifindex, c, 0);
        }
    }
}

/// Counts the drop under its reason and returns the verdict that drops the packet.
#[inline(always)]
pub fn drop_with(reason: DropReason) -> i32 {
    if let Some(c) = NETD_DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
    TC_ACT_SHOT
}

/// Let the packet continue on its way.
pub const PASS: i32 = TC_ACT_OK;
