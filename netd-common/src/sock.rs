//! Host-local access to published ports: the cgroup socket-address programs rewrite a
//! host process's `connect()`/`sendmsg()` to a published port into the container's
//! address, and translate the peer back for `recvmsg()`/`getpeername()`.
//!
//! A program on a cgroup sees the sockets of every network namespace whose processes are
//! in that cgroup (the v2 root: the whole machine), so it acts only on sockets of the
//! namespace whose cookie is in [`SockConfig`].

use crate::{assert_size, pod};

/// Settings of the socket programs, index 0 of [`SOCK_CONFIG`].
pub const SOCK_CONFIG: &str = "NETD_SOCK_CONFIG";
/// What each translated socket originally addressed ([`SockRevKey`] -> [`SockRevValue`]),
/// so replies and `getpeername()` show the published address, not the container's.
pub const SOCK_REV: &str = "NETD_SOCK_REV";

/// Translated (socket, peer) pairs remembered at once; the LRU evicts the oldest.
pub const MAX_SOCK_REV: u32 = 65536;

/// Index 0 of [`SOCK_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockConfig {
    /// Cookie of the network namespace the daemon serves (`SO_NETNS_COOKIE`, Linux 5.14);
    /// 0 until set, and the programs translate nothing while it is 0.
    pub netns_cookie: u64,
}
assert_size!(SockConfig, 8);

/// Key of [`SOCK_REV`]: one socket and the container address it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevKey {
    /// `bpf_get_socket_cookie()`: unique per socket for the machine's uptime.
    pub socket_cookie: u64,
    pub container_ip_be: u32,
    pub container_port_be: u16,
    pub _pad: u16,
}
assert_size!(SockRevKey, 16);

/// Value of [`SOCK_REV`]: the host address and port the application used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevValue {
    pub host_ip_be: u32,
    pub host_port_be: u16,
    pub _pad: u16,
}
assert_size!(SockRevValue, 8);

pod!(SockConfig, SockRevKey, SockRevValue);

/// The loopback network, 127.0.0.0/8, in network byte order as the programs read it.
const LOOPBACK_NET_BE: u32 = u32::from_ne_bytes([127, 0, 0, 0]);
const LOOPBACK_MASK_BE: u32 = u32::from_ne_bytes([255, 0, 0, 0]);

/// Whether `addr_be` is a loopback address (127.0.0.0/8). Ports published on every
/// address are reachable on all of them, as through docker-proxy listening on 0.0.0.0.
#[inline(always)]
pub const fn is_loopback(addr_be: u32) -> bool {
    addr_be & LOOPBACK_MASK_BE == LOOPBACK_NET_BE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(a: [u8; 4]) -> u32 {
        u32::from_ne_bytes(a)
    }

    #[test]
    fn loopback_is_the_whole_slash_8() {
        assert!(is_loopback(be([127, 0, 0, 1])));
        assert!(is_loopback(be([127, 255, 3, 9])));
        assert!(!is_loopback(be([128, 0, 0, 1])));
        assert!(!is_loopback(be([10, 127, 0, 1])));
        assert!(!is_loopback(be([203, 0, 113, 2])));
    }
}
