//! `netd run` against the fake daemon: the endpoint is removed on every exit path, the
//! command's status comes back, and signals stop setup or reach the command.
//!
//! The fake hands out /proc/self/ns/net as the endpoint's namespace, so entering it
//! changes nothing. That still needs CAP_SYS_ADMIN: without it every spawn fails with
//! EPERM, and the tests assert exit status 126 instead of the command's.

use std::{path::Path, time::Duration};

use tokio::sync::mpsc;

use crate::{
    api::{
        client::{Client, ClientError},
        server::tests::{Harness, fake::FakeApi},
        types::{EndpointCreate, NetworkCreate},
    },
    cli::{CliError, EXIT_UNREACHABLE, RunArgs, run::Signals},
    error::ErrorKind,
};

/// A `netd run` that takes longer than this is hung.
const TIMEOUT: Duration = Duration::from_secs(20);

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

async fn harness() -> Harness {
    let api = FakeApi {
        netns_path: Some("/proc/self/ns/net".into()),
        ..Default::default()
    };
    let h = Harness::start(api).await;
    let netd0 = NetworkCreate {
        name: "netd0".into(),
        ..Default::default()
    };
    h.client().network_create(&netd0).await.unwrap();
    h
}

fn args(name: Option<&str>, publish: &[&str], command: &[&str]) -> RunArgs {
    RunArgs {
        name: name.map(str::to_string),
        network: None,
        publish: publish.iter().map(|s| s.to_string()).collect(),
        ip: None,
        command: command.iter().map(|s| s.to_string()).collect(),
    }
}

/// Signals that never come.
fn no_signals() -> Signals {
    Signals::from_channel(mpsc::unbounded_channel().1)
}

async fn run(client: &Client, args: RunArgs, signals: Signals) -> Result<u8, CliError> {
    let run = args.run_with(client, signals);
    tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("netd run hung")
}

/// The command's status when it could run, 126 when entering the namespace was refused.
fn assert_status(result: Result<u8, CliError>, status: u8) {
    match result {
        Ok(code) if privileged() => assert_eq!(code, status),
        Err(CliError::Exec { code, .. }) if !privileged() => assert_eq!(code, 126),
        other => panic!(
            "expected status {status} (privileged: {}), got {other:?}",
            privileged()
        ),
    }
}

fn assert_nothing_left(h: &Harness) {
    let s = h.api.state.lock().unwrap();
    assert!(s.endpoints.is_empty(), "endpoints left: {:?}", s.endpoints);
    assert!(
        s.publications.is_empty(),
        "publications left: {:?}",
        s.publications
    );
}

#[tokio::test]
async fn exits_with_the_commands_status_and_removes_the_endpoint() {
    let h = harness().await;
    let client = h.client();
    let result = run(
        &client,
        args(None, &["8080:80"], &["sh", "-c", "exit 7"]),
        no_signals(),
    );
    assert_status(result.await, 7);
    assert_nothing_left(&h);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_publication_rolls_back_the_endpoint() {
    let h = harness().await;
    let client = h.client();
    let result = run(
        &client,
        args(Some("web"), &["8080:80", "bogus"], &["true"]),
        no_signals(),
    );
    match result.await {
        Err(CliError::Client(ClientError::Api(e))) => assert_eq!(e.kind, ErrorKind::Invalid),
        other => panic!("expected the daemon's refusal, got {other:?}"),
    }
    assert_nothing_left(&h);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_name_clash_leaves_the_existing_endpoint_alone() {
    let h = harness().await;
    let keep = EndpointCreate {
        name: "keep".into(),
        ..Default::default()
    };
    h.client().endpoint_create(&keep).await.unwrap();
    let client = h.client();
    let result = run(&client, args(Some("keep"), &[], &["true"]), no_signals());
    match result.await {
        Err(CliError::Client(ClientError::Api(e))) => assert_eq!(e.kind, ErrorKind::Conflict),
        other => panic!("expected a conflict, got {other:?}"),
    }
    h.client().endpoint_inspect("keep").await.unwrap();
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_command_is_127_and_removes_the_endpoint() {
    let h = harness().await;
    let client = h.client();
    let result = run(
        &client,
        args(None, &[], &["/nonexistent/netd-test-cmd"]),
        no_signals(),
    )
    .await;
    let Err(CliError::Exec { code, message }) = result else {
        panic!("{result:?}")
    };
    assert_eq!(code, if privileged() { 127 } else { 126 }, "{message}");
    assert!(message.contains("/nonexistent/netd-test-cmd"), "{message}");
    assert_nothing_left(&h);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_signal_during_setup_stops_before_the_command_runs() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(libc::SIGTERM).unwrap();
    let client = h.client();
    let result = run(
        &client,
        args(None, &["80"], &["sh", "-c", &script]),
        Signals::from_channel(rx),
    );
    assert_eq!(result.await.unwrap(), 128 + libc::SIGTERM as u8);
    assert!(!marker.exists(), "the command ran after the signal");
    assert_nothing_left(&h);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn sigterm_reaches_the_command_then_the_endpoint_goes() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let script = format!("touch {}; exec sleep 60", marker.display());
    let (tx, rx) = mpsc::unbounded_channel();
    // Signal once the command is up, so that forwarding, not setup, handles it.
    let sender = tokio::spawn({
        let marker = marker.clone();
        async move {
            while !Path::new(&marker).exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tx.send(libc::SIGTERM).unwrap();
        }
    });
    let client = h.client();
    let result = run(
        &client,
        args(None, &[], &["sh", "-c", &script]),
        Signals::from_channel(rx),
    )
    .await;
    sender.abort();
    assert_status(result, 128 + libc::SIGTERM as u8);
    assert_nothing_left(&h);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn an_absent_daemon_is_exit_status_3() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(dir.path().join("none.sock"));
    let err = run(&client, args(None, &[], &["true"]), no_signals())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), EXIT_UNREACHABLE, "{err}");
}
