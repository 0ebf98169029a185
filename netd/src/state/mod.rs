//! Persistence of the desired state, and the pure logic around it: IPAM, subnet pools,
//! port specs and name validation.

pub mod ipam;
mod journal;
pub mod names;
pub mod portspec;
mod store;

pub use journal::Delta;
pub use names::{NameError, validate_ifname, validate_name};
pub use store::StateStore;

/// A failure to read or write the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt state: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("state directory {path} is locked by another netd daemon (pid {pid})")]
    Locked { path: String, pid: String },
}
