//! Host-local access to published ports, at the socket layer (cgroup sock_addr programs,
//! as Cilium's bpf_sock.c does): a host process's `connect()` (TCP, connected UDP) or
//! `sendmsg()` (unconnected UDP) to a published port on 127.0.0.0/8 or on a host address
//! is redirected to the container before any packet exists, so there is no proxy and no
//! route_localnet; `recvmsg()` and `getpeername()` show the address the process used.
//!
//! These programs never refuse a syscall: anything they do not translate goes on as the
//! process asked.

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map},
    maps::{Array, LruHashMap},
    programs::SockAddrContext,
};
use netd_common::sock::{MAX_SOCK_REV, SockConfig, SockRevKey, SockRevValue, is_loopback};

use crate::ports;

const AF_INET: u32 = 2;
/// Lets the syscall proceed (0 would fail it with EPERM).
const ALLOW: i32 = 1;

#[map]
static NETD_SOCK_CONFIG: Array<SockConfig> = Array::with_max_entries(1, 0);

#[map]
static NETD_SOCK_REV: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::with_max_entries(MAX_SOCK_REV, 0);

/// `connect()` of TCP and UDP sockets.
#[cgroup_sock_addr(connect4)]
pub fn netd_sock_connect4(ctx: SockAddrContext) -> i32 {
    to_container(&ctx);
    ALLOW
}

/// `sendmsg()`/`sendto()` with an address, on UDP sockets.
#[cgroup_sock_addr(sendmsg4)]
pub fn netd_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    to_container(&ctx);
    ALLOW
}

/// `recvmsg()`/`recvfrom()` with an address, on UDP sockets: the source of a reply.
#[cgroup_sock_addr(recvmsg4)]
pub fn netd_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    to_published(&ctx);
    ALLOW
}

/// `getpeername()` of a socket that [`netd_sock_connect4`] translated.
#[cgroup_sock_addr(getpeername4)]
pub fn netd_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    to_published(&ctx);
    ALLOW
}

/// The address the hook works on, when the socket is an IPv4 socket of the namespace
/// netd serves. Programs on the v2 root cgroup see every namespace's sockets; the
/// others, and everything before userspace has written the cookie, are left alone.
#[inline(always)]
fn served(ctx: &SockAddrContext) -> Option<*mut bpf_sock_addr> {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands sock_addr programs a valid context.
    if unsafe { (*sa).user_family } != AF_INET {
        return None;
    }
    let want = NETD_SOCK_CONFIG.get(0)?.netns_cookie;
    // SAFETY: the helper only reads the context.
    if want == 0 || unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != want {
        return None;
    }
    Some(sa)
}

/// A destination that is a published port becomes the container's address; what the
/// process asked for is remembered for replies and `getpeername()`.
#[inline(always)]
fn to_container(ctx: &SockAddrContext) {
    let Some(sa) = served(ctx) else { return };
    // SAFETY: a valid context; these fields are readable in connect4 and sendmsg4.
    let (proto, dst_be, dport_be) =
        unsafe { ((*sa).protocol as u8, (*sa).user_ip4, (*sa).user_port as u16) };
    // Loopback is never a packet's destination on the wire, so only the socket layer
    // may match it; other destinations must be host addresses, as on the wire.
    let target = if is_loopback(dst_be) {
        ports::published(proto, dst_be, dport_be)
    } else {
        ports::lookup(proto, dst_be, dport_be)
    };
    let Some(t) = target else { return };
    let key = SockRevKey {
        // SAFETY: the helper only reads the context.
        socket_cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        container_ip_be: t.ip_be,
        container_port_be: t.port_be,
        _pad: 0,
    };
    let orig = SockRevValue {
        host_ip_be: dst_be,
        host_port_be: dport_be,
        _pad: 0,
    };
    // Without the reverse entry the process would see replies from an address it never
    // used and drop them; better to leave the syscall untranslated.
    if NETD_SOCK_REV.insert(key, orig, 0).is_err() {
        return;
    }
    // SAFETY: user_ip4 and user_port are writable (4 bytes) in connect4 and sendmsg4;
    // user_port holds the port in network order in its low 16 bits.
    unsafe {
        (*sa).user_ip4 = t.ip_be;
        (*sa).user_port = u32::from(t.port_be);
    }
}

/// A container address this socket was translated to becomes the published address
/// the process used.
#[inline(always)]
fn to_published(ctx: &SockAddrContext) {
    let Some(sa) = served(ctx) else { return };
    let key = SockRevKey {
        // SAFETY: the helper only reads the context.
        socket_cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        // SAFETY: a valid context; readable in recvmsg4 and getpeername4.
        container_ip_be: unsafe { (*sa).user_ip4 },
        container_port_be: unsafe { (*sa).user_port } as u16,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(orig) = (unsafe { NETD_SOCK_REV.get(key) }).copied() else {
        return;
    };
    // SAFETY: writable (4 bytes) in recvmsg4 and getpeername4.
    unsafe {
        (*sa).user_ip4 = orig.host_ip_be;
        (*sa).user_port = u32::from(orig.host_port_be);
    }
}
