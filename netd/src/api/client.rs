//! HTTP client over a UNIX socket, for the CLI (placeholder).
