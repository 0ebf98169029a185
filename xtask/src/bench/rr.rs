//! TCP_RR and TCP_CRR as netperf runs them, written here because netperf is not in
//! Debian: a 1-byte request and a 1-byte response, on one connection (RR) or on a new
//! connection each time (CRR, client closes first so TIME_WAIT stays on its side).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use netd_tests::in_netns;

/// Every socket gives up after this long, so a broken path fails the measurement instead
/// of hanging the run.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A server that answers every byte it reads with the same byte, one connection at a time
/// (as netperf's netserver handles a single test). Stops on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl EchoServer {
    /// Listen on 0.0.0.0:`port` inside the namespace at `ns`.
    pub fn start(ns: &Path, port: u16) -> Result<Self> {
        let listener = in_netns(ns, move || {
            TcpListener::bind(("0.0.0.0", port))
                .with_context(|| format!("binding the echo server to port {port}"))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("echo-{port}"))
            .spawn(move || serve(&listener, &flag))
            .context("spawning the echo server thread")?;
        Ok(EchoServer {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        // poll with a timeout rather than a blocking accept, so the stop flag is seen;
        // a ready listener returns at once, so this adds no latency to accept.
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) == 0 {
            continue;
        }
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
        let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
        let mut buf = [0u8; 64];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 || conn.write_all(&buf[..n]).is_err() || stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    Ok(())
}

/// Result of a TCP_RR run.
#[derive(Debug)]
pub struct RrResult {
    pub transactions: u64,
    pub secs: f64,
    /// Round-trip time of every transaction.
    pub latency_ns: Vec<u64>,
}

/// One connection, 1-byte ping-pong for `duration`, from inside the namespace at `ns`.
pub fn rr_client(ns: &Path, target: SocketAddr, duration: Duration) -> Result<RrResult> {
    in_netns(ns, move || -> Result<RrResult> {
        let mut s = connect(target)?;
        let mut latency_ns = Vec::with_capacity(1 << 18);
        let mut byte = [1u8; 1];
        let start = Instant::now();
        while start.elapsed() < duration {
            let t0 = Instant::now();
            s.write_all(&byte)
                .with_context(|| format!("TCP_RR request to {target}"))?;
            s.read_exact(&mut byte)
                .with_context(|| format!("TCP_RR response from {target}"))?;
            latency_ns.push(t0.elapsed().as_nanos() as u64);
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(RrResult {
            transactions: latency_ns.len() as u64,
            secs,
            latency_ns,
        })
    })?
}

/// Result of a TCP_CRR run.
#[derive(Debug)]
pub struct CrrResult {
    pub connections: u64,
    pub failures: u64,
    pub secs: f64,
    /// How long each connect() took: SYN out to SYN-ACK back, the first-packet latency.
    pub connect_ns: Vec<u64>,
    pub first_error: Option<String>,
}

/// New connection, 1-byte request, 1-byte response, close; repeated for `duration`.
pub fn crr_client(ns: &Path, target: SocketAddr, duration: Duration) -> Result<CrrResult> {
    in_netns(ns, move || -> Result<CrrResult> {
        let mut r = CrrResult {
            connections: 0,
            failures: 0,
            secs: 0.0,
            connect_ns: Vec::with_capacity(1 << 17),
            first_error: None,
        };
        let start = Instant::now();
        while start.elapsed() < duration {
            match one_crr(target) {
                Ok(connect_ns) => {
                    r.connections += 1;
                    r.connect_ns.push(connect_ns);
                }
                Err(e) => {
                    r.failures += 1;
                    r.first_error.get_or_insert_with(|| format!("{e:#}"));
                    // A path that fails every time should fail fast, not spin for the
                    // whole duration.
                    if r.connections == 0 && r.failures >= 3 {
                        break;
                    }
                }
            }
        }
        r.secs = start.elapsed().as_secs_f64();
        // A few resets among tens of thousands of connections are the path's business
        // and are reported; a path that mostly fails has no rate worth quoting.
        if r.connections == 0 || r.failures * 100 > r.connections {
            bail!(
                "TCP_CRR to {target}: {} connections, {} failed; first error: {}",
                r.connections,
                r.failures,
                r.first_error.as_deref().unwrap_or("-")
            );
        }
        Ok(r)
    })?
}

fn one_crr(target: SocketAddr) -> Result<u64> {
    let t0 = Instant::now();
    let mut s = connect(target)?;
    let connect_ns = t0.elapsed().as_nanos() as u64;
    let mut byte = [1u8; 1];
    s.write_all(&byte).context("request")?;
    s.read_exact(&mut byte).context("response")?;
    Ok(connect_ns)
}

fn connect(target: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}
