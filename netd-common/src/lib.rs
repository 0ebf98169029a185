//! Types shared by the eBPF programs (netd-ebpf) and the userspace loader (netd).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding and a compile-time size
//! check, so both sides agree on the layout byte for byte; fields in network byte order
//! end in `_be`. Values hold no `bool`, `Option` or enum: flags are integer bits. Pure
//! logic both sides need (checksum folding, TCP state transitions) lives here and is
//! unit-tested on the host. With the `user` feature the types implement `aya::Pod`.
#![cfg_attr(not(test), no_std)]

pub mod conntrack;
pub mod csum;
pub mod endpoint;
pub mod maps;
pub mod nat;
pub mod ports;
pub mod sock;
pub mod stats;

/// Implements `aya::Pod` for plain map types when building the userspace side.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, has no implicit padding (checked by
            // the size assertion next to it) and every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use pod;

/// Asserts a shared type's size at compile time, so that a field added without updating
/// the padding (or the other side) fails the build instead of corrupting a map.
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
pub(crate) use assert_size;
