//! The control plane's error type. Every message names the object and says what the user
//! can do; the API maps the kind to an HTTP status and the CLI to an exit code.

use serde::{Deserialize, Serialize};

/// What kind of failure an [`Error`] is, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request names something that does not exist.
    NotFound,
    /// The request clashes with existing state (a name, an address, a port).
    Conflict,
    /// The request is malformed (a CIDR, a MAC, a port spec...).
    Invalid,
    /// The kernel or the host refused; the message says which object and why.
    Internal,
}

/// A control-plane error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("netlink: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error("dataplane: {0}")]
    Dataplane(#[from] crate::dataplane::DataplaneError),
    #[error("state: {0}")]
    State(#[from] crate::state::StateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The kind reported over the API.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Invalid(_) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Internal => "internal",
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
