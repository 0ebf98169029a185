//! HTTP server over a UNIX socket (placeholder).
