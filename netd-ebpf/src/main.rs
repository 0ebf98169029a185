#![no_std]
#![no_main]

use aya_ebpf::{bindings::TC_ACT_OK, macros::{classifier, map}, maps::PerCpuHashMap, programs::TcContext};

#[map]
static IFACE_STATS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(1024, 0);

#[classifier]
pub fn netd_count(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if let Some(v) = IFACE_STATS.get_ptr_mut(&ifindex) {
        unsafe { *v += 1 };
    } else {
        let _ = IFACE_STATS.insert(&ifindex, &1, 0);
    }
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
