//! TCP and UDP clients and servers that run inside a namespace and report what the peer
//! received: the bytes, and the address and port they came from. Every socket has a
//! timeout, so a broken path fails the test instead of hanging it.

use std::{
    io::{self, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};

use crate::netns::{in_netns, spawn_in_netns};

/// The longest any single socket operation may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a UDP client resends while it has no reply (the first datagram may be lost
/// while ARP resolves).
const UDP_RETRY: Duration = Duration::from_millis(300);

/// What a server received from one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The payload, as the server read it.
    pub data: Vec<u8>,
    /// The client's address and port as the server saw them (after any NAT).
    pub peer: SocketAddr,
}

/// A server running in a namespace on its own thread; [`join`](Self::join) returns what
/// it received.
pub struct Server {
    /// The address it listens on (the real port when bound to port 0).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Bound<Received>,
}

/// The thread of [`spawn_bound`]: the outer result is entering the namespace.
pub type Bound<T> = thread::JoinHandle<anyhow::Result<anyhow::Result<T>>>;

/// Open a socket inside the namespace at `netns` on a thread of its own (`open` returns
/// it and the address it is bound to), then `serve` it on that thread. Returns once the
/// socket is bound, so that a client can connect at once, or with the error of binding.
pub fn spawn_bound<S, T, O, F>(
    netns: &Path,
    open: O,
    serve: F,
) -> anyhow::Result<(SocketAddr, Bound<T>)>
where
    O: FnOnce() -> anyhow::Result<(S, SocketAddr)> + Send + 'static,
    F: FnOnce(S) -> anyhow::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = spawn_in_netns(netns, move || match open() {
        Ok((socket, addr)) => {
            let _ = ready_tx.send(Ok(addr));
            serve(socket)
        }
        Err(e) => {
            let _ = ready_tx.send(Err(anyhow!("{e:#}")));
            Err(e)
        }
    })?;
    let context = || format!("starting a server in {}", netns.display());
    match ready_rx.recv_timeout(IO_TIMEOUT) {
        Ok(bound) => Ok((bound.with_context(context)?, handle)),
        // The thread ended without reporting: it could not enter the namespace.
        Err(_) => match handle.join() {
            Ok(Err(e)) => Err(e).with_context(context),
            _ => Err(anyhow!("the server thread ended early")).with_context(context),
        },
    }
}

impl Server {
    /// A TCP server in `netns` on `bind` that accepts one connection, reads until the
    /// client shuts down its side, echoes everything back and closes.
    pub fn tcp(netns: &Path, bind: SocketAddr) -> anyhow::Result<Server> {
        let open = move || {
            let listener =
                TcpListener::bind(bind).with_context(|| format!("binding TCP {bind}"))?;
            let addr = listener.local_addr().context("local_addr")?;
            Ok((listener, addr))
        };
        Self::start(netns, open, |listener, stop| {
            serve_tcp_once(&listener, stop)
        })
    }

    /// A UDP server in `netns` on `bind` that echoes every datagram and reports the first.
    pub fn udp(netns: &Path, bind: SocketAddr) -> anyhow::Result<Server> {
        let open = move || {
            let socket = UdpSocket::bind(bind).with_context(|| format!("binding UDP {bind}"))?;
            let addr = socket.local_addr().context("local_addr")?;
            Ok((socket, addr))
        };
        Self::start(netns, open, |socket, stop| serve_udp(&socket, stop))
    }

    fn start<S, O, F>(netns: &Path, open: O, serve: F) -> anyhow::Result<Server>
    where
        O: FnOnce() -> anyhow::Result<(S, SocketAddr)> + Send + 'static,
        F: FnOnce(S, &AtomicBool) -> anyhow::Result<Received> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let (addr, handle) = spawn_bound(netns, open, move |s| serve(s, &thread_stop))?;
        Ok(Server { addr, stop, handle })
    }

    /// Call after the client is done: stop the server and return what it received from its
    /// first client, or an error if nothing reached it.
    pub fn join(self) -> anyhow::Result<Received> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow!("server thread on {} panicked", self.addr))??
    }
}

fn serve_tcp_once(listener: &TcpListener, stop: &AtomicBool) -> anyhow::Result<Received> {
    listener
        .set_nonblocking(true)
        .context("nonblocking listener")?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let (mut stream, peer) = loop {
        match listener.accept() {
            Ok(conn) => break conn,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Joined after its client finished: a connection would be in the backlog by now.
                if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                    return Err(anyhow!(
                        "no TCP connection reached {:?}",
                        listener.local_addr()
                    ));
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false).context("blocking stream")?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .context("read timeout")?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .context("write timeout")?;
    let mut data = Vec::new();
    stream
        .read_to_end(&mut data)
        .with_context(|| format!("reading from {peer}"))?;
    stream
        .write_all(&data)
        .with_context(|| format!("echoing to {peer}"))?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(Received { data, peer })
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool) -> anyhow::Result<Received> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .context("read timeout")?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut first = None;
    let mut buf = vec![0u8; 65536];
    // Keep echoing after the first datagram until joined: the client may resend when an
    // echo is lost.
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer);
                first.get_or_insert(Received {
                    data: buf[..n].to_vec(),
                    peer,
                });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("recv_from"),
        }
    }
    first.ok_or_else(|| anyhow!("no UDP datagram reached {:?}", socket.local_addr()))
}

/// Connect from `netns` to `dst` over TCP (from `src` if given), send `payload`, shut down
/// the write side and return everything the server sent back.
pub fn tcp_request(
    netns: &Path,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let payload = payload.to_vec();
    in_netns(netns, move || -> anyhow::Result<Vec<u8>> {
        let mut stream = tcp_connect(src, dst)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream
            .write_all(&payload)
            .with_context(|| format!("sending to {dst}"))?;
        stream.shutdown(Shutdown::Write).context("shutdown")?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .with_context(|| format!("reading the reply of {dst}"))?;
        Ok(reply)
    })?
}

/// A TCP connection with a connect timeout, bound to `src` first when given.
fn tcp_connect(src: Option<SocketAddr>, dst: SocketAddr) -> anyhow::Result<TcpStream> {
    let Some(src) = src else {
        return TcpStream::connect_timeout(&dst, IO_TIMEOUT)
            .with_context(|| format!("connecting to {dst}"));
    };
    // std cannot bind before connect; do it with the raw socket calls.
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    let to_v4 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => Ok(SockaddrIn::from(v4)),
        SocketAddr::V6(_) => Err(anyhow!("only IPv4 is supported: {a}")),
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &to_v4(src)?)
        .with_context(|| format!("binding {src}"))?;
    let stream = TcpStream::from(fd);
    // A blocking connect would ignore our timeout: use a send timeout, which connect obeys.
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&stream), &to_v4(dst)?)
        .with_context(|| format!("connecting {src} to {dst}"))?;
    Ok(stream)
}

/// Send `payload` from `netns` to `dst` over UDP (from `src` if given, else an ephemeral
/// port), resending until the echo arrives; returns the echo.
pub fn udp_request(
    netns: &Path,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let payload = payload.to_vec();
    in_netns(netns, move || -> anyhow::Result<Vec<u8>> {
        let bind = src.unwrap_or_else(|| "0.0.0.0:0".parse().expect("literal"));
        let socket = UdpSocket::bind(bind).with_context(|| format!("binding UDP {bind}"))?;
        socket.set_read_timeout(Some(UDP_RETRY))?;
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            socket
                .send_to(&payload, dst)
                .with_context(|| format!("sending to {dst}"))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == dst => return Ok(buf[..n].to_vec()),
                Ok((_, from)) => return Err(anyhow!("reply to {dst} came from {from}")),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).with_context(|| format!("receiving from {dst}")),
            }
        }
        Err(anyhow!("no UDP reply from {dst} within {IO_TIMEOUT:?}"))
    })?
}
