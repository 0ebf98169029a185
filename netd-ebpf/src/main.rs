//! netd's TC programs: one entry point per attach point. Each entry point counts the
//! packet and runs its `try_` function; an `Err(reason)` drops the packet and counts the
//! reason.
#![no_std]
#![no_main]

mod maps;
mod verdict;

use aya_ebpf::{macros::classifier, programs::TcContext};
use netd_common::stats::DropReason;

use verdict::{Dir, PASS, count_iface, drop_with};

/// Host side of a container's veth, TC ingress: what the container sends.
#[classifier]
pub fn netd_veth_ingress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Rx);
    match try_veth_ingress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

fn try_veth_ingress(_ctx: &TcContext) -> Result<i32, DropReason> {
    Ok(PASS)
}

/// Host side of a container's veth, TC egress: what the container receives.
#[classifier]
pub fn netd_veth_egress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Tx);
    match try_veth_egress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

fn try_veth_egress(_ctx: &TcContext) -> Result<i32, DropReason> {
    Ok(PASS)
}

/// Uplink, TC ingress: what the wan sends.
#[classifier]
pub fn netd_uplink_ingress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Rx);
    match try_uplink_ingress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

fn try_uplink_ingress(_ctx: &TcContext) -> Result<i32, DropReason> {
    Ok(PASS)
}

/// Uplink, TC egress: what leaves for the wan.
#[classifier]
pub fn netd_uplink_egress(ctx: TcContext) -> i32 {
    count_iface(&ctx, Dir::Tx);
    match try_uplink_egress(&ctx) {
        Ok(action) => action,
        Err(reason) => drop_with(reason),
    }
}

fn try_uplink_egress(_ctx: &TcContext) -> Result<i32, DropReason> {
    Ok(PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
