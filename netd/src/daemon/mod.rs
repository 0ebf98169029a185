//! The daemon (placeholder).
