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
