//! Packet access: straight in the skb's linear data when the bytes lie there, which is
//! where every header of a packet from a veth or the local stack lies, and through
//! `bpf_skb_load_bytes` / `bpf_skb_store_bytes` when they do not (a non-linear packet
//! from elsewhere). A helper call per header read or field write cost about half of the
//! programs' helper time on the bulk paths (perf).
//!
//! Every access reads the data pointers anew: any helper that may change the packet
//! (the checksum helpers, the store helper) makes older ones invalid to the verifier.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;

/// The `T` at `off`, or `None` when the packet is shorter.
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + size_of::<T>() <= end {
        // SAFETY: the bytes lie inside the linear data, checked just above.
        return Some(unsafe { ((start + off) as *const T).read_unaligned() });
    }
    ctx.load(off).ok()
}

/// Writes `v` at `off`; `None` when the packet is shorter. Checksums are the caller's.
#[inline(always)]
pub fn write<T: Copy>(ctx: &TcContext, off: usize, v: T) -> Option<()> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + size_of::<T>() <= end {
        // SAFETY: the bytes lie inside the linear data, checked just above; the verifier
        // makes a cloned skb's header private before the program runs (direct write).
        unsafe { ((start + off) as *mut T).write_unaligned(v) };
        return Some(());
    }
    ctx.store(off, &v, 0).ok()
}
