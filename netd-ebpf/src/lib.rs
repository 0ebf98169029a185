#![no_std]
// Present so that netd can name this crate as a build-dependency: cargo then rebuilds
// netd's build script, and with it the BPF object, whenever this crate changes.
