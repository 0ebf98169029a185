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
