//! netd: Docker-style container networking whose NAT, published ports and isolation run
//! in eBPF programs instead of iptables.
//!
//! Layers, each owning its kind of object: [`model`] (desired state as data), [`state`]
//! (persistence, IPAM, parsing), [`netlink`] (links, addresses, namespaces),
//! [`dataplane`] (maps or rules), [`daemon`] (orchestration and transactions), [`api`]
//! (HTTP on a UNIX socket) and [`cli`].

pub mod api;
pub mod cli;
pub mod daemon;
pub mod dataplane;
pub mod error;
pub mod model;
pub mod netlink;
pub mod state;

/// Keeps glibc from holding on to the memory of large blocks once they are freed.
///
/// glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB)
/// and serves blocks that big from the heap from then on, where a thread arena keeps
/// them resident. After a few seconds of new connections, the conntrack collector's
/// copies of the tables left ~3 MiB in its thread's arena (RSS 12.2 MiB instead of 9.3,
/// bench scenario 8 after 4). Setting the threshold fixes it at the default 128 KiB:
/// large blocks stay mmapped and go back to the kernel when freed.
pub(crate) fn return_large_blocks_when_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning; no pointer is involved.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Hands the heap's free memory back to the kernel. glibc keeps what a burst of work
/// freed (the kernel's BTF parsed at start-up, a conntrack collection's copy of the
/// tables) in the heap for ever; a long-running daemon gives it back after such bursts.
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
