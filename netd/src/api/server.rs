//! The HTTP server: serves an [`Api`] on a UNIX socket, one JSON route per API call.
//!
//! Requests are handled concurrently; the daemon serializes mutations itself. Each request
//! runs in a task of its own, which hyper cannot cancel: a client that hangs up in the
//! middle of a call (Ctrl-C on the CLI) makes hyper drop the connection's futures, and
//! would otherwise stop the daemon's transaction between two kernel steps, before it
//! could roll back or commit. Shutdown waits for these tasks too.
//!
//! The socket is created with mode 0660 in a 0755 directory, a stale socket left by a
//! killed daemon is replaced, and a live one is refused.
//!
//! Statuses beyond the error mapping of [`super`]: creations (`POST /networks`,
//! `/endpoints`, `/ports`) answer 201, removals (`DELETE`) 204 without a body, everything
//! else 200. An unknown path is 404, a known path with the wrong method 405 (with
//! `Allow`), an unreadable or malformed JSON body 400; all of them carry an
//! [`ApiError`]. An empty body counts as `{}`.

use std::{
    convert::Infallible,
    future::Future,
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::{debug, error, info, warn};

use super::{Api, types::ApiError};
use crate::error::{Error, ErrorKind};

/// Largest request body accepted; the biggest real request is a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may run on after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for an answer when probing an existing socket file.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "another daemon is already listening on {0}: stop it, or start this one with another --socket"
    )]
    AlreadyRunning(PathBuf),
    #[error("{0} exists and is not a socket: remove it, or choose another --socket")]
    NotASocket(PathBuf),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ServeError {
    fn io(context: &'static str, path: &Path, source: io::Error) -> Self {
        ServeError::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Serve `api` on the UNIX socket `socket` until `shutdown` resolves, then finish the
/// requests in flight and remove the socket file.
pub async fn serve<A: Api>(
    api: Arc<A>,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = bind(socket).await?;
    let _socket_file = SocketFile::new(socket);
    info!(socket = %socket.display(), "API listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    // Every request task holds a sender; recv() answers None once all of them are gone.
    let (in_flight, mut requests_done) = mpsc::channel::<Infallible>(1);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(
                        api.clone(),
                        stream,
                        stop_rx.clone(),
                        in_flight.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    warn!(socket = %socket.display(), error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    drop(in_flight);
    let drain = async {
        while conns.join_next().await.is_some() {}
        // Requests whose client hung up run on without a connection.
        let _ = requests_done.recv().await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        warn!(
            pending = conns.len(),
            "API requests still running at shutdown; aborting them"
        );
        conns.abort_all();
    }
    info!(socket = %socket.display(), "API stopped");
    Ok(())
}

/// Create the socket's directory, clear a stale socket, bind, and restrict access.
async fn bind(socket: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| ServeError::io("creating the socket directory", dir, e))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServeError::NotASocket(socket.to_path_buf()));
        }
        Ok(_) => {
            if is_alive(socket).await {
                return Err(ServeError::AlreadyRunning(socket.to_path_buf()));
            }
            debug!(socket = %socket.display(), "removing a stale API socket");
            match std::fs::remove_file(socket) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ServeError::io("removing the stale socket", socket, e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServeError::io("inspecting", socket, e)),
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| ServeError::io("binding the API socket", socket, e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| ServeError::io("setting the mode of", socket, e))?;
    Ok(listener)
}

/// Whether something accepts connections on `socket`. A socket file whose daemon died
/// refuses connections (ECONNREFUSED).
async fn is_alive(socket: &Path) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(socket)).await,
        Ok(Ok(_))
    )
}

/// Removes the socket file on drop, unless another process has replaced it meanwhile.
struct SocketFile {
    path: PathBuf,
    ino: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: &Path) -> Self {
        let ino = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        SocketFile {
            path: path.to_path_buf(),
            ino,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some()
            && current == self.ino
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            warn!(socket = %self.path.display(), error = %e, "removing the API socket failed");
        }
    }
}

/// Serve one connection until the client closes it or shutdown is asked for.
async fn serve_connection<A: Api>(
    api: Arc<A>,
    stream: UnixStream,
    mut stop: watch::Receiver<bool>,
    in_flight: mpsc::Sender<Infallible>,
) {
    let service = service_fn(move |req| {
        let (api, in_flight) = (api.clone(), in_flight.clone());
        let request = tokio::spawn(async move {
            let _in_flight = in_flight;
            handle(&*api, req).await
        });
        async move {
            Ok::<_, Infallible>(request.await.unwrap_or_else(|e| {
                error!(error = %e, "an API request task failed");
                error_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Internal,
                    format!("the daemon failed while handling the request: {e}"),
                )
            }))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // The guard wait_for returns is not Send: drop it before the select goes on.
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "API connection ended with an error");
    }
}

/// The routes of [`super`]'s list, by path; the method is checked separately so that a
/// known path with a wrong method gets 405 rather than 404.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Info,
    Networks,
    Network(String),
    Endpoints,
    Endpoint(String),
    EndpointConnect(String),
    EndpointDisconnect(String),
    Ports,
    PortsUnpublish,
    Stats,
    Conntrack,
    ConntrackFlush,
}

impl Route {
    /// Match a request path; `Err` carries a reply for a path that cannot be decoded.
    fn parse(path: &str) -> Result<Option<Route>, String> {
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode_segment)
            .collect::<Result<_, _>>()?;
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        Ok(Some(match s.as_slice() {
            ["info"] => Route::Info,
            ["networks"] => Route::Networks,
            ["networks", name] => Route::Network(name.to_string()),
            ["endpoints"] => Route::Endpoints,
            ["endpoints", name] => Route::Endpoint(name.to_string()),
            ["endpoints", name, "connect"] => Route::EndpointConnect(name.to_string()),
            ["endpoints", name, "disconnect"] => Route::EndpointDisconnect(name.to_string()),
            ["ports"] => Route::Ports,
            ["ports", "unpublish"] => Route::PortsUnpublish,
            ["stats"] => Route::Stats,
            ["conntrack"] => Route::Conntrack,
            ["conntrack", "flush"] => Route::ConntrackFlush,
            _ => return Ok(None),
        }))
    }

    fn allowed(&self) -> &'static [Method] {
        match self {
            Route::Info | Route::Stats | Route::Conntrack => &[Method::GET],
            Route::Networks | Route::Endpoints | Route::Ports => &[Method::GET, Method::POST],
            Route::Network(_) | Route::Endpoint(_) => &[Method::GET, Method::DELETE],
            Route::EndpointConnect(_)
            | Route::EndpointDisconnect(_)
            | Route::PortsUnpublish
            | Route::ConntrackFlush => &[Method::POST],
        }
    }
}

/// Percent-decode one path segment (the client encodes every byte outside
/// `[A-Za-z0-9._~-]`).
fn decode_segment(segment: &str) -> Result<String, String> {
    let bad = || format!("malformed percent-encoding in path segment {segment:?}");
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Answer one request.
async fn handle<A: Api>(api: &A, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = match Route::parse(&path) {
        Ok(Some(route)) => route,
        Ok(None) => {
            return error_reply(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                format!("no such API route: {method} {path}"),
            );
        }
        Err(message) => return error_reply(StatusCode::BAD_REQUEST, ErrorKind::Invalid, message),
    };
    if !route.allowed().contains(&method) {
        return method_not_allowed(&method, &path, route.allowed());
    }
    let body = match read_body(req.into_body()).await {
        Ok(body) => body,
        Err(refusal) => return refusal.reply(),
    };
    let reply = dispatch(api, route, &method, body).await;
    match reply.status() {
        s if s.is_server_error() => {
            error!(%method, %path, status = s.as_u16(), "API request failed")
        }
        s if !s.is_success() => debug!(%method, %path, status = s.as_u16(), "API request refused"),
        s => debug!(%method, %path, status = s.as_u16(), "API request"),
    }
    reply
}

/// Call the [`Api`] method of `route`; the method was checked against
/// [`Route::allowed`] already.
async fn dispatch<A: Api>(
    api: &A,
    route: Route,
    method: &Method,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    match route {
        Route::Info => reply(StatusCode::OK, api.info().await),
        Route::Networks if post => {
            with_body(&body, StatusCode::CREATED, |req| api.network_create(req)).await
        }
        Route::Networks => reply(StatusCode::OK, api.network_list().await),
        Route::Network(name) if delete => no_content(api.network_remove(name).await),
        Route::Network(name) => reply(StatusCode::OK, api.network_inspect(name).await),
        Route::Endpoints if post => {
            with_body(&body, StatusCode::CREATED, |req| api.endpoint_create(req)).await
        }
        Route::Endpoints => reply(StatusCode::OK, api.endpoint_list().await),
        Route::Endpoint(name) if delete => no_content(api.endpoint_remove(name).await),
        Route::Endpoint(name) => reply(StatusCode::OK, api.endpoint_inspect(name).await),
        Route::EndpointConnect(name) => {
            with_body(&body, StatusCode::OK, |req| api.endpoint_connect(name, req)).await
        }
        Route::EndpointDisconnect(name) => {
            with_body(&body, StatusCode::OK, |req| {
                api.endpoint_disconnect(name, req)
            })
            .await
        }
        Route::Ports if post => {
            with_body(&body, StatusCode::CREATED, |req| api.port_publish(req)).await
        }
        Route::Ports => reply(StatusCode::OK, api.port_list().await),
        Route::PortsUnpublish => {
            with_body(&body, StatusCode::OK, |req| api.port_unpublish(req)).await
        }
        Route::Stats => reply(StatusCode::OK, api.stats().await),
        Route::Conntrack => reply(StatusCode::OK, api.conntrack_list().await),
        Route::ConntrackFlush => {
            with_body(&body, StatusCode::OK, |req| api.conntrack_flush(req)).await
        }
    }
}

/// A request refused before it reaches the [`Api`].
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
}

impl Refusal {
    fn invalid(message: String) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            kind: ErrorKind::Invalid,
            message,
        }
    }

    fn reply(self) -> Response<Full<Bytes>> {
        error_reply(self.status, self.kind, self.message)
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, Refusal> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(Refusal::invalid(format!(
            "cannot read the request body (at most {MAX_BODY} bytes): {e}"
        ))),
    }
}

/// Decode a JSON request body; an empty body counts as `{}` so that requests whose
/// fields are all optional can be sent without one.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| Refusal::invalid(format!("malformed JSON body: {e}")))
}

/// Decode the body, then call the [`Api`] with it.
async fn with_body<T, R, F, Fut>(body: &Bytes, status: StatusCode, call: F) -> Response<Full<Bytes>>
where
    T: DeserializeOwned,
    R: Serialize,
    F: FnOnce(T) -> Fut,
    Fut: Future<Output = Result<R, Error>>,
{
    match parse(body) {
        Ok(req) => reply(status, call(req).await),
        Err(refusal) => refusal.reply(),
    }
}

fn reply<T: Serialize>(status: StatusCode, result: Result<T, Error>) -> Response<Full<Bytes>> {
    match result {
        Ok(value) => json_reply(status, &value),
        Err(e) => api_error_reply(&e),
    }
}

fn no_content(result: Result<(), Error>) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => api_error_reply(&e),
    }
}

/// The HTTP status for an error kind, as documented in [`super`].
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn api_error_reply(e: &Error) -> Response<Full<Bytes>> {
    let kind = e.kind();
    error_reply(status_of(kind), kind, e.to_string())
}

fn error_reply(status: StatusCode, kind: ErrorKind, message: String) -> Response<Full<Bytes>> {
    json_reply(status, &ApiError { kind, message })
}

fn method_not_allowed(method: &Method, path: &str, allowed: &[Method]) -> Response<Full<Bytes>> {
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let allow = allow.join(", ");
    let mut r = error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Invalid,
        format!("method {method} not allowed on {path}; allowed: {allow}"),
    );
    if let Ok(v) = HeaderValue::from_str(&allow) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

fn json_reply<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(e) => {
            let err = ApiError {
                kind: ErrorKind::Internal,
                message: format!("encoding the reply: {e}"),
            };
            // An ApiError of two strings always encodes.
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::to_vec(&err).unwrap_or_default(),
            )
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
pub(crate) mod tests;
