//! The CLI (placeholder).
