//! The API client the CLI uses: one typed method per route, one connection per request.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1,
    header::{CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use super::types::*;
use crate::{
    dataplane::{DataplaneStats, Flow},
    error::ErrorKind,
};

/// How long connecting to the daemon may take; a daemon that is up accepts at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request did not get a successful reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot reach the daemon at {}: is `netd daemon` running? ({source})", socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The connection broke or timed out before a reply arrived.
    #[error("the daemon at {} did not answer: {detail}", socket.display())]
    NoReply { socket: PathBuf, detail: String },
    /// The daemon refused the request.
    #[error("{}", .0.message)]
    Api(ApiError),
    /// The reply is not what this client understands (a different netd version?).
    #[error("unexpected reply from the daemon ({status}): {detail}")]
    Protocol { status: StatusCode, detail: String },
}

impl ClientError {
    /// The API error kind, when the daemon refused the request.
    pub fn api_kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api(e) => Some(e.kind),
            _ => None,
        }
    }

    /// Whether the daemon could not be reached at all (or went away mid-request).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::NoReply { .. }
        )
    }
}

/// A client of the daemon listening on a UNIX socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Option<Duration>,
}

impl Client {
    /// A client of the daemon at `socket`. Requests wait for their reply as long as the
    /// daemon takes, as Docker's client does; see [`Client::with_timeout`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: None,
        }
    }

    /// Give up on a request (connect, send and reply) after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /info`.
    pub async fn info(&self) -> Result<DaemonInfo, ClientError> {
        self.call(Method::GET, "/info", None::<&()>).await
    }

    /// `POST /networks`.
    pub async fn network_create(&self, req: &NetworkCreate) -> Result<NetworkInfo, ClientError> {
        self.call(Method::POST, "/networks", Some(req)).await
    }

    /// `GET /networks`.
    pub async fn network_list(&self) -> Result<Vec<NetworkInfo>, ClientError> {
        self.call(Method::GET, "/networks", None::<&()>).await
    }

    /// `GET /networks/{name}`.
    pub async fn network_inspect(&self, name: &str) -> Result<NetworkInfo, ClientError> {
        let path = named_path("/networks", name, "")?;
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `DELETE /networks/{name}`.
    pub async fn network_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = named_path("/networks", name, "")?;
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// `POST /endpoints`.
    pub async fn endpoint_create(&self, req: &EndpointCreate) -> Result<EndpointInfo, ClientError> {
        self.call(Method::POST, "/endpoints", Some(req)).await
    }

    /// `GET /endpoints`.
    pub async fn endpoint_list(&self) -> Result<Vec<EndpointInfo>, ClientError> {
        self.call(Method::GET, "/endpoints", None::<&()>).await
    }

    /// `GET /endpoints/{name}`.
    pub async fn endpoint_inspect(&self, name: &str) -> Result<EndpointInfo, ClientError> {
        let path = named_path("/endpoints", name, "")?;
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `DELETE /endpoints/{name}`.
    pub async fn endpoint_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = named_path("/endpoints", name, "")?;
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// `POST /endpoints/{name}/connect`.
    pub async fn endpoint_connect(
        &self,
        name: &str,
        req: &EndpointConnect,
    ) -> Result<EndpointInfo, ClientError> {
        let path = named_path("/endpoints", name, "/connect")?;
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `POST /endpoints/{name}/disconnect`.
    pub async fn endpoint_disconnect(
        &self,
        name: &str,
        req: &EndpointDisconnect,
    ) -> Result<EndpointInfo, ClientError> {
        let path = named_path("/endpoints", name, "/disconnect")?;
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `POST /ports`.
    pub async fn port_publish(
        &self,
        req: &PortPublish,
    ) -> Result<Vec<PublicationInfo>, ClientError> {
        self.call(Method::POST, "/ports", Some(req)).await
    }

    /// `POST /ports/unpublish`.
    pub async fn port_unpublish(
        &self,
        req: &PortUnpublish,
    ) -> Result<Vec<PublicationInfo>, ClientError> {
        self.call(Method::POST, "/ports/unpublish", Some(req)).await
    }

    /// `GET /ports`.
    pub async fn port_list(&self) -> Result<Vec<PublicationInfo>, ClientError> {
        self.call(Method::GET, "/ports", None::<&()>).await
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Result<DataplaneStats, ClientError> {
        self.call(Method::GET, "/stats", None::<&()>).await
    }

    /// `GET /conntrack`.
    pub async fn conntrack_list(&self) -> Result<Vec<Flow>, ClientError> {
        self.call(Method::GET, "/conntrack", None::<&()>).await
    }

    /// `POST /conntrack/flush`.
    pub async fn conntrack_flush(
        &self,
        req: &ConntrackFlush,
    ) -> Result<ConntrackFlushed, ClientError> {
        self.call(Method::POST, "/conntrack/flush", Some(req)).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let exchange = self.exchange(method, path, body);
        let (status, bytes) =
            match self.timeout {
                Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| {
                    ClientError::NoReply {
                        socket: self.socket.clone(),
                        detail: format!("no reply within {t:?}"),
                    }
                })??,
                None => exchange.await?,
            };
        decode(status, &bytes)
    }

    /// Send one request on a fresh connection and read the whole reply.
    async fn exchange<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Protocol {
                status: StatusCode::OK,
                detail: format!("encoding the request: {e}"),
            })?),
            None => Bytes::new(),
        };
        let stream = self.connect().await?;
        let no_reply = |e: hyper::Error| ClientError::NoReply {
            socket: self.socket.clone(),
            detail: e.to_string(),
        };
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(no_reply)?;
        // The connection future drives the I/O; it ends when the reply is read.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API client connection ended with an error");
            }
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "netd")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol {
                status: StatusCode::OK,
                detail: format!("building the request for {path}: {e}"),
            })?;
        let resp = sender.send_request(req).await.map_err(no_reply)?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(no_reply)?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn connect(&self) -> Result<UnixStream, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            socket: self.socket.clone(),
            source,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(unreachable(e)),
            Err(_) => Err(unreachable(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting took longer than {CONNECT_TIMEOUT:?}"),
            ))),
        }
    }
}

/// Turn a reply into the route's type, or into the daemon's error.
fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, ClientError> {
    if status.is_success() {
        // 204 No Content decodes as `()`.
        let body: &[u8] = if body.is_empty() { b"null" } else { body };
        return serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
            status,
            detail: format!("cannot decode the reply: {e}"),
        });
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => Err(ClientError::Api(e)),
        Err(_) => Err(ClientError::Protocol {
            status,
            detail: String::from_utf8_lossy(body).chars().take(200).collect(),
        }),
    }
}

/// `{prefix}/{name}{suffix}` with `name` percent-encoded. An empty name would turn
/// `/networks/{name}` into another route, so it is refused here.
fn named_path(prefix: &str, name: &str, suffix: &str) -> Result<String, ClientError> {
    if name.is_empty() {
        return Err(ClientError::Api(ApiError {
            kind: ErrorKind::Invalid,
            message: "a name must not be empty".to_string(),
        }));
    }
    Ok(format!("{prefix}/{}{suffix}", encode_segment(name)))
}

/// Percent-encode a name for use as one path segment.
pub(crate) fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_bytes() {
        assert_eq!(encode_segment("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(encode_segment("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode_segment(".."), "..");
    }

    #[test]
    fn decodes_errors_and_empty_replies() {
        let unit: () = decode(StatusCode::NO_CONTENT, b"").unwrap();
        assert_eq!(unit, ());
        let err = decode::<()>(
            StatusCode::CONFLICT,
            br#"{"kind":"conflict","message":"taken"}"#,
        )
        .unwrap_err();
        assert_eq!(err.api_kind(), Some(ErrorKind::Conflict));
        assert_eq!(err.to_string(), "taken");
        let err = decode::<()>(StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
        let err = decode::<DaemonInfo>(StatusCode::OK, b"{}").unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
    }
}
