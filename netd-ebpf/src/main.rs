//! netd's TC programs: one entry point per attach point. Each entry point counts the
//! packet and runs its `try_` function; an `Err(reason)` drops the packet and counts the
//! reason. The logic lives in one module per concern.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod forward;
mod frag;
mod icmp;
mod isolation;
mod maps;
mod nat;
mod parse;
mod pkt;
mod ports;
mod sock;
mod uplink;
mod verdict;
mod veth;

use aya_ebpf::{macros::classifier, programs::TcContext};

use verdict::{Dir, count_iface, drop_with};

/// Host side of a container's veth, TC ingress: what the container sends.
#[classifier]
pub fn netd_veth_ingress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Rx);
    match veth::try_ingress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

/// Host side of a container's veth, TC egress: what the container receives.
#[classifier]
pub fn netd_veth_egress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Tx);
    match veth::try_egress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

/// Uplink, TC ingress: what the wan sends.
#[classifier]
pub fn netd_uplink_ingress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Rx);
    match uplink::try_ingress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

/// Uplink, TC egress: what leaves for the wan.
#[classifier]
pub fn netd_uplink_egress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Tx);
    match uplink::try_egress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
