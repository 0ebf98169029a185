//! The eBPF dataplane (placeholder until the dataplane helper lands it).
