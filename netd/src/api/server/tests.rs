//! Router tests: a fake in-memory [`Api`] served on a real UNIX socket in a temp dir, driven
//! by the real [`Client`] and by raw HTTP for what the client never sends.

pub(crate) mod fake;

use std::{
    net::Ipv4Addr, os::unix::fs::PermissionsExt, path::Path, sync::atomic::Ordering, time::Duration,
};

use fake::FakeApi;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{Barrier, oneshot},
    task::JoinHandle,
};

use super::*;
use crate::api::{client::Client, client::ClientError, types::*};

/// Every socket operation in these tests gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A server on a socket in its own temp dir; stops and is awaited on [`Harness::stop`].
pub(crate) struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    pub(crate) api: Arc<FakeApi>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Harness {
    pub(crate) async fn start(api: FakeApi) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: serve creates it.
        let socket = dir.path().join("run/netd.sock");
        Self::start_at(dir, socket, api).await
    }

    pub(crate) async fn start_at(dir: tempfile::TempDir, socket: PathBuf, api: FakeApi) -> Harness {
        let api = Arc::new(api);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn({
            let (api, socket) = (api.clone(), socket.clone());
            async move {
                serve(api, &socket, async move {
                    let _ = stopped.await;
                })
                .await
            }
        });
        let h = Harness {
            _dir: dir,
            socket,
            api,
            stop: Some(stop),
            task,
        };
        // Wait until the socket answers, so that tests do not race the bind.
        for _ in 0..500 {
            if UnixStream::connect(&h.socket).await.is_ok() {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server did not come up on {}", h.socket.display());
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.socket).with_timeout(TIMEOUT)
    }

    pub(crate) async fn stop(mut self) -> Result<(), ServeError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(TIMEOUT, &mut self.task)
            .await
            .expect("serve did not stop")
            .unwrap()
    }
}

/// Send one raw HTTP/1.1 request; returns the status, the head and the body.
async fn raw(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let exchange = async {
        let mut s = UnixStream::connect(socket).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("raw request timed out");
    let (head, body) = out.split_once("\r\n\r\n").expect("no HTTP head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn api_error(body: &str) -> ApiError {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an ApiError ({e}): {body}"))
}

fn kind(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorKind {
    match r {
        Err(ClientError::Api(e)) => e.kind,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn network_routes_round_trip() {
    let h = Harness::start(FakeApi::default()).await;
    let c = h.client();
    assert_eq!(c.info().await.unwrap().uplink, "eth9");
    let req = NetworkCreate {
        name: "blue".into(),
        subnet: Some("10.1.0.0/24".into()),
        internal: true,
        icc: Some(false),
        mtu: Some(1400),
        ..Default::default()
    };
    let created = c.network_create(&req).await.unwrap();
    assert_eq!(created.network.subnet.to_string(), "10.1.0.0/24");
    assert!(created.network.internal && !created.network.icc);
    assert_eq!(created.network.mtu, 1400);
    assert_eq!(c.network_inspect("blue").await.unwrap(), created);
    let names: Vec<_> = c
        .network_list()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.network.name)
        .collect();
    assert_eq!(names, ["blue"]);
    c.network_remove("blue").await.unwrap();
    assert!(c.network_list().await.unwrap().is_empty());
    h.stop().await.unwrap();
}

#[tokio::test]
async fn endpoint_routes_round_trip() {
    let h = Harness::start(FakeApi::default()).await;
    let c = h.client();
    for name in ["netd0", "red"] {
        c.network_create(&NetworkCreate {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // A name that needs percent-encoding reaches the handler intact.
    let name = "web 1/x";
    let req = EndpointCreate {
        name: name.into(),
        ip: Some("10.9.0.50".into()),
        ..Default::default()
    };
    let ep = c.endpoint_create(&req).await.unwrap();
    assert_eq!(ep.endpoint.attachments[0].ip, Ipv4Addr::new(10, 9, 0, 50));
    assert_eq!(ep.endpoint.netns.path, Path::new("/run/netns/web 1/x"));
    assert_eq!(c.endpoint_inspect(name).await.unwrap(), ep);

    let connect = EndpointConnect {
        network: "red".into(),
        ..Default::default()
    };
    let ep = c.endpoint_connect(name, &connect).await.unwrap();
    assert_eq!(ep.endpoint.attachments.len(), 2);
    assert_eq!(ep.endpoint.attachments[1].ifname, "eth1");
    let red = c.network_inspect("red").await.unwrap();
    assert_eq!(
        red.endpoints,
        [(name.to_string(), ep.endpoint.attachments[1].ip)]
    );
    let disconnect = EndpointDisconnect {
        network: "red".into(),
    };
    let ep = c.endpoint_disconnect(name, &disconnect).await.unwrap();
    assert_eq!(ep.endpoint.attachments.len(), 1);

    assert_eq!(c.endpoint_list().await.unwrap(), [ep]);
    c.endpoint_remove(name).await.unwrap();
    assert!(c.endpoint_list().await.unwrap().is_empty());
    h.stop().await.unwrap();
}

#[tokio::test]
async fn port_stats_and_conntrack_routes_round_trip() {
    let h = Harness::start(FakeApi::default()).await;
    let c = h.client();
    c.network_create(&NetworkCreate {
        name: "netd0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ep = EndpointCreate {
        name: "web".into(),
        ..Default::default()
    };
    c.endpoint_create(&ep).await.unwrap();

    let publish = |spec: &str| PortPublish {
        endpoint: "web".into(),
        spec: spec.into(),
        network: None,
    };
    let p = c.port_publish(&publish("8080:80")).await.unwrap();
    assert_eq!(
        (
            p[0].publication.host_ports.start,
            p[0].publication.container_ports.start
        ),
        (8080, 80)
    );
    let udp = c.port_publish(&publish("53/udp")).await.unwrap();
    assert_eq!(udp[0].publication.host_ports.start, 32768);
    assert_eq!(c.port_list().await.unwrap().len(), 2);
    assert_eq!(
        c.endpoint_inspect("web").await.unwrap().publications.len(),
        2
    );

    let unpublish = PortUnpublish {
        endpoint: "web".into(),
        spec: Some("80".into()),
    };
    assert_eq!(c.port_unpublish(&unpublish).await.unwrap(), p);
    assert_eq!(c.port_list().await.unwrap(), udp);

    assert_eq!(c.stats().await.unwrap().interfaces[0].rx_bytes, 1000);
    assert_eq!(c.conntrack_list().await.unwrap()[0].state, "established");
    let flush = ConntrackFlush {
        endpoint: Some("web".into()),
    };
    assert_eq!(c.conntrack_flush(&flush).await.unwrap().removed, 1);
    assert_eq!(h.api.state.lock().unwrap().flushes, [flush]);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn errors_map_to_statuses_and_kinds() {
    let h = Harness::start(FakeApi::default()).await;
    let c = h.client();
    assert_eq!(kind(c.network_inspect("nope").await), ErrorKind::NotFound);
    let (status, _, body) = raw(&h.socket, "GET", "/networks/nope", "").await;
    assert_eq!(status, 404);
    assert_eq!(api_error(&body).message, "network \"nope\" not found");

    let blue = NetworkCreate {
        name: "blue".into(),
        ..Default::default()
    };
    c.network_create(&blue).await.unwrap();
    assert_eq!(kind(c.network_create(&blue).await), ErrorKind::Conflict);
    let (status, _, body) = raw(&h.socket, "POST", "/networks", r#"{"name":"blue"}"#).await;
    assert_eq!((status, api_error(&body).kind), (409, ErrorKind::Conflict));

    let bad = r#"{"name":"x","subnet":"10.0.0.0/33"}"#;
    let (status, _, body) = raw(&h.socket, "POST", "/networks", bad).await;
    assert_eq!((status, api_error(&body).kind), (400, ErrorKind::Invalid));
    assert!(api_error(&body).message.contains("10.0.0.0/33"), "{body}");

    let (status, _, body) = raw(&h.socket, "POST", "/networks", r#"{"name":"boom"}"#).await;
    assert_eq!((status, api_error(&body).kind), (500, ErrorKind::Internal));
    let err = c
        .network_create(&NetworkCreate {
            name: "boom".into(),
            ..Default::default()
        })
        .await;
    assert!(err.unwrap_err().to_string().contains("kernel said no"));
    h.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_json_is_400() {
    let h = Harness::start(FakeApi::default()).await;
    for (path, body) in [
        ("/networks", "{\"name\": "),
        ("/networks", "[1,2]"),
        ("/networks", r#"{"subnet":"10.0.0.0/24"}"#),
        ("/endpoints", r#"{"name":7}"#),
        ("/ports", "not json"),
        ("/endpoints/x/connect", "{}"),
    ] {
        let (status, _, reply) = raw(&h.socket, "POST", path, body).await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        let e = api_error(&reply);
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(
            e.message.starts_with("malformed JSON body"),
            "{}",
            e.message
        );
    }
    // A request whose fields are all optional needs no body.
    let (status, _, reply) = raw(&h.socket, "POST", "/conntrack/flush", "").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        h.api.state.lock().unwrap().flushes,
        [ConntrackFlush { endpoint: None }]
    );
    h.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let h = Harness::start(FakeApi::default()).await;
    for path in [
        "/",
        "/nope",
        "/networks/a/b",
        "/endpoints/a/reconnect",
        "/ports/x",
    ] {
        let (status, _, body) = raw(&h.socket, "GET", path, "").await;
        assert_eq!(status, 404, "{path}");
        assert!(
            api_error(&body).message.contains("no such API route"),
            "{body}"
        );
    }
    for (method, path, allow) in [
        ("DELETE", "/networks", "GET, POST"),
        ("POST", "/networks/a", "GET, DELETE"),
        ("GET", "/endpoints/a/connect", "POST"),
        ("PUT", "/info", "GET"),
        ("GET", "/conntrack/flush", "POST"),
    ] {
        let (status, head, body) = raw(&h.socket, method, path, "").await;
        assert_eq!(status, 405, "{method} {path}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{head}"
        );
        assert_eq!(api_error(&body).kind, ErrorKind::Invalid);
    }
    let (status, _, _) = raw(&h.socket, "GET", "/networks/%zz", "").await;
    assert_eq!(status, 400);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn requests_are_handled_concurrently() {
    // Both requests must be inside the handler at once to pass the barrier.
    let api = FakeApi {
        info_gates: Some((Arc::new(Barrier::new(2)), None)),
        ..Default::default()
    };
    let h = Harness::start(api).await;
    let (a, b) = (h.client(), h.client());
    let (ra, rb) = tokio::join!(a.info(), b.info());
    ra.unwrap();
    rb.unwrap();
    h.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_removes_the_socket() {
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let api = FakeApi {
        info_gates: Some((entered.clone(), Some(release.clone()))),
        ..Default::default()
    };
    let mut h = Harness::start(api).await;
    let socket = h.socket.clone();
    let client = h.client();
    let in_flight = tokio::spawn(async move { client.info().await });
    tokio::time::timeout(TIMEOUT, entered.wait()).await.unwrap();
    let _ = h.stop.take().unwrap().send(());
    tokio::time::timeout(TIMEOUT, release.wait()).await.unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap().version, "test");
    tokio::time::timeout(TIMEOUT, &mut h.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!socket.exists(), "socket left behind");
    let err = Client::new(&socket).info().await.unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(
        err.to_string().contains("is `netd daemon` running?"),
        "{err}"
    );
}

#[tokio::test]
async fn a_request_runs_to_its_end_when_its_client_hangs_up() {
    // hyper drops a connection whose client closes it mid-request, and with it the
    // future it was polling: a daemon transaction there would stop between two steps.
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let api = FakeApi {
        info_gates: Some((entered.clone(), Some(release.clone()))),
        ..Default::default()
    };
    let h = Harness::start(api).await;
    let mut s = UnixStream::connect(&h.socket).await.unwrap();
    s.write_all(b"GET /info HTTP/1.1\r\nHost: netd\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, entered.wait()).await.unwrap();
    drop(s);
    // Time for the server to see the hang-up; the handler must be waiting on `release`
    // whenever that happens.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(TIMEOUT, release.wait()).await.unwrap();
    // A dropped handler has arrived at `release` all the same; only one that ran on
    // counts the call.
    let done = async {
        while h.api.infos_done.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, done)
        .await
        .expect("the request was cancelled when its client hung up");
    h.stop().await.unwrap();
}

#[tokio::test]
async fn socket_mode_stale_socket_and_live_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("netd.sock");
    // A socket file nobody listens on, as a killed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let h = Harness::start_at(dir, socket.clone(), FakeApi::default()).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    let second = serve(
        Arc::new(FakeApi::default()),
        &socket,
        std::future::pending(),
    );
    let err = tokio::time::timeout(TIMEOUT, second)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ServeError::AlreadyRunning(_)), "{err}");
    // The refused second server left the first one's socket alone.
    h.client().info().await.unwrap();
    h.stop().await.unwrap();
    assert!(!socket.exists());
}

#[tokio::test]
async fn creates_the_socket_directory_and_refuses_non_sockets() {
    let h = Harness::start(FakeApi::default()).await;
    let dir_mode = std::fs::metadata(h.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o755);
    h.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = serve(Arc::new(FakeApi::default()), &file, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn routes_decode_percent_encoding() {
    assert_eq!(
        Route::parse("/networks/a%20b").unwrap(),
        Some(Route::Network("a b".into()))
    );
    assert_eq!(Route::parse("/networks/").unwrap(), Some(Route::Networks));
    assert!(Route::parse("/networks/%4").is_err());
    assert!(Route::parse("/networks/%ff").is_err());
    let encoded = crate::api::client::encode_segment("ä/%");
    assert_eq!(
        Route::parse(&format!("/endpoints/{encoded}")).unwrap(),
        Some(Route::Endpoint("ä/%".into()))
    );
}

#[test]
fn statuses_follow_the_documented_mapping() {
    assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
    assert_eq!(status_of(ErrorKind::Conflict), StatusCode::CONFLICT);
    assert_eq!(status_of(ErrorKind::Invalid), StatusCode::BAD_REQUEST);
    assert_eq!(
        status_of(ErrorKind::Internal),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
