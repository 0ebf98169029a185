//! The lab's demo service: a tiny HTTP/1.0 server on a thread inside an endpoint's
//! namespace that tells each client who answered and which address it saw the client
//! come from, so a check can tell plain routing from NAT.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use netd_tests::traffic::{Bound, spawn_bound, tcp_request};

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A running demo server; stopped and joined on drop.
pub struct DemoServer {
    stop: Arc<AtomicBool>,
    handle: Option<Bound<()>>,
}

impl DemoServer {
    /// Serve on `bind` inside the namespace at `netns`, answering as `name`.
    pub fn start(netns: &Path, name: &str, bind: SocketAddr) -> anyhow::Result<DemoServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stop, name) = (stop.clone(), name.to_string());
        let open = move || {
            let listener = TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
            listener
                .set_nonblocking(true)
                .context("nonblocking listener")?;
            Ok((listener, bind))
        };
        let (_, handle) = spawn_bound(netns, open, move |listener| {
            serve(&listener, &name, &thread_stop);
            Ok(())
        })?;
        Ok(DemoServer {
            stop,
            handle: Some(handle),
        })
    }
}

fn serve(listener: &TcpListener, name: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                // One bad client must not end the demo.
                let _ = answer(stream, peer, name);
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(mut stream: TcpStream, peer: SocketAddr, name: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    // Read the request head (or until the client shuts down its side).
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut buf)? {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("hello from {name}; you are {peer}\n");
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes())
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// What a demo server answered: who it is and where it saw the request come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub server: String,
    pub client: SocketAddr,
}

/// `GET /` from inside `netns` to `dst`.
pub fn get(netns: &Path, dst: SocketAddr) -> anyhow::Result<Answer> {
    let reply = tcp_request(netns, None, dst, b"GET / HTTP/1.0\r\n\r\n")?;
    let reply = String::from_utf8_lossy(&reply);
    parse_answer(&reply).ok_or_else(|| anyhow!("unexpected reply from {dst}: {reply:?}"))
}

fn parse_answer(reply: &str) -> Option<Answer> {
    let (_, body) = reply.split_once("\r\n\r\n")?;
    let rest = body.trim().strip_prefix("hello from ")?;
    let (server, client) = rest.split_once("; you are ")?;
    Some(Answer {
        server: server.to_string(),
        client: client.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let reply = "HTTP/1.0 200 OK\r\nContent-Length: 40\r\n\r\nhello from web1; you are 10.0.0.3:40000\n";
        let answer = parse_answer(reply).unwrap();
        assert_eq!(
            answer,
            Answer {
                server: "web1".into(),
                client: "10.0.0.3:40000".parse().unwrap()
            }
        );
        assert_eq!(parse_answer("HTTP/1.0 200 OK\r\n\r\nsomething else"), None);
    }
}
