//! TCP and UDP sockets created in a namespace, and echo servers that record every peer and
//! every byte they received.

use std::{
    io::{self, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
};

/// How long any socket operation that must succeed may wait.
pub const IO: Duration = Duration::from_secs(10);
/// How long a connection that must be blocked is given before it counts as blocked: long
/// enough for a SYN retransmission (1 s), short enough to keep negative tests fast.
pub const BLOCKED: Duration = Duration::from_millis(2500);
/// How often a blocked server thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Run `f` on a thread inside the namespace at `ns`; panics if the namespace cannot be
/// entered.
pub fn in_ns<T, F>(ns: &Path, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    netd_tests::in_netns(ns, f).unwrap_or_else(|e| panic!("{e:#}"))
}

fn v4(a: SocketAddr) -> io::Result<SockaddrIn> {
    match a {
        SocketAddr::V4(v4) => Ok(SockaddrIn::from(v4)),
        SocketAddr::V6(_) => Err(io::Error::other(format!("not IPv4: {a}"))),
    }
}

fn set_io_timeouts(s: &TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(IO))?;
    s.set_write_timeout(Some(IO))
}

/// A TCP connection from namespace `ns` to `dst`, from `src` when given (SO_REUSEADDR, so
/// a port in TIME_WAIT can be reused), giving up after `timeout`. The stream has [`IO`]
/// read and write timeouts.
pub fn tcp_connect(
    ns: &Path,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    in_ns(ns, move || connect_here(src, dst, timeout))
}

/// A listener with SO_REUSEADDR, as servers set it: an earlier server on the same port
/// may have closed first and left its side of a connection in TIME_WAIT.
fn listen_here(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = tcp_socket(Some(addr))?;
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(128)?)?;
    Ok(TcpListener::from(fd))
}

/// A TCP socket, bound with SO_REUSEADDR to `addr` when one is given.
fn tcp_socket(addr: Option<SocketAddr>) -> io::Result<std::os::fd::OwnedFd> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if let Some(addr) = addr {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        bind(fd.as_raw_fd(), &v4(addr)?)?;
    }
    Ok(fd)
}

fn connect_here(
    src: Option<SocketAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let stream = TcpStream::from(tcp_socket(src)?);
    // A blocking connect gives up after SO_SNDTIMEO (with EINPROGRESS).
    stream.set_write_timeout(Some(timeout))?;
    connect(stream.as_raw_fd(), &v4(dst)?).map_err(|e| match e {
        nix::errno::Errno::EINPROGRESS => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {dst}: no answer within {timeout:?}"),
        ),
        e => io::Error::from(e),
    })?;
    set_io_timeouts(&stream)?;
    Ok(stream)
}

/// Connect, send `payload`, shut down the write side, read the reply to the end.
pub fn tcp_exchange(
    ns: &Path,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    payload: &[u8],
) -> io::Result<Vec<u8>> {
    let mut s = tcp_connect(ns, src, dst, IO)?;
    s.write_all(payload)?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok(reply)
}

/// Send `payload` on an open connection to an echo server and read the echo.
pub fn echo(stream: &mut TcpStream, payload: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(payload)?;
    let mut reply = vec![0; payload.len()];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// Assert that a TCP connection from `ns` to `dst` cannot be made; `what` says what is
/// tested.
pub fn assert_tcp_blocked(ns: &Path, src: Option<SocketAddr>, dst: SocketAddr, what: &str) {
    if let Ok(s) = tcp_connect(ns, src, dst, BLOCKED) {
        panic!(
            "{what}: the connection to {dst} was established (local {:?}), it must be blocked",
            s.local_addr()
        );
    }
}

/// One connection an echo server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The client as the server saw it (after any NAT).
    pub peer: SocketAddr,
    /// Everything received so far.
    pub data: Vec<u8>,
}

/// A TCP server in a namespace that accepts any number of connections and echoes each
/// until its client closes; it records every peer and byte. Stopped on drop.
pub struct TcpEcho {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl TcpEcho {
    /// Listen on `addr` in `ns`.
    pub fn start(ns: &Path, addr: SocketAddr) -> TcpEcho {
        let listener = in_ns(ns, move || listen_here(addr))
            .unwrap_or_else(|e| panic!("binding TCP {addr} in {}: {e}", ns.display()));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local_addr");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let accept = thread::spawn(move || accept_loop(&listener, &c, &s));
        TcpEcho {
            addr,
            conns,
            stop,
            accept: Some(accept),
        }
    }

    /// The connections accepted so far.
    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().expect("echo log").clone()
    }

    /// Wait (bounded) until at least `n` connections were accepted; returns them all.
    pub fn wait_conns(&self, n: usize) -> Vec<Conn> {
        let deadline = Instant::now() + IO;
        loop {
            let conns = self.conns();
            if conns.len() >= n || Instant::now() >= deadline {
                return conns;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything received from `peer` (empty if it never connected).
    pub fn received_from(&self, peer: SocketAddr) -> Vec<u8> {
        self.conns()
            .into_iter()
            .filter(|c| c.peer == peer)
            .flat_map(|c| c.data)
            .collect()
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, conns: &Arc<Mutex<Vec<Conn>>>, stop: &Arc<AtomicBool>) {
    let mut workers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let index = {
                    let mut log = conns.lock().expect("echo log");
                    log.push(Conn {
                        peer,
                        data: Vec::new(),
                    });
                    log.len() - 1
                };
                let (c, s) = (conns.clone(), stop.clone());
                workers.push(thread::spawn(move || echo_conn(stream, index, &c, &s)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => break,
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

fn echo_conn(mut stream: TcpStream, index: usize, conns: &Mutex<Vec<Conn>>, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(POLL)).is_err()
        || stream.set_write_timeout(Some(IO)).is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                conns.lock().expect("echo log")[index]
                    .data
                    .extend_from_slice(&buf[..n]);
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A UDP server in a namespace that echoes every datagram and records it with its source.
/// Stopped on drop.
pub struct UdpEcho {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Conn>>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl UdpEcho {
    /// Bind `addr` in `ns`.
    pub fn start(ns: &Path, addr: SocketAddr) -> UdpEcho {
        let socket = in_ns(ns, move || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("binding UDP {addr} in {}: {e}", ns.display()));
        socket.set_read_timeout(Some(POLL)).expect("read timeout");
        let addr = socket.local_addr().expect("local_addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let handle = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    // Logged before the echo: a client that has its echo finds it logged.
                    l.lock().expect("udp log").push(Conn {
                        peer,
                        data: buf[..n].to_vec(),
                    });
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        });
        UdpEcho {
            addr,
            log,
            stop,
            handle: Some(handle),
        }
    }

    /// Every datagram received so far, with its source.
    pub fn datagrams(&self) -> Vec<Conn> {
        self.log.lock().expect("udp log").clone()
    }

    /// The distinct sources seen so far, in order of first appearance.
    pub fn peers(&self) -> Vec<SocketAddr> {
        let mut peers: Vec<SocketAddr> = Vec::new();
        for d in self.datagrams() {
            if !peers.contains(&d.peer) {
                peers.push(d.peer);
            }
        }
        peers
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A UDP socket bound in `ns` to `src` (an ephemeral port when `None`), connected to
/// `dst`, with [`IO`] timeouts.
pub fn udp_connected(ns: &Path, src: Option<SocketAddr>, dst: SocketAddr) -> io::Result<UdpSocket> {
    in_ns(ns, move || -> io::Result<UdpSocket> {
        let bind = src.unwrap_or_else(|| "0.0.0.0:0".parse().expect("literal"));
        let s = UdpSocket::bind(bind)?;
        s.connect(dst)?;
        s.set_read_timeout(Some(IO))?;
        s.set_write_timeout(Some(IO))?;
        Ok(s)
    })
}

/// Send `payload` on a connected UDP socket until a reply arrives (the first datagram may
/// be lost while ARP resolves); returns the reply or the socket's error (e.g.
/// `ConnectionRefused` after an ICMP port unreachable).
pub fn udp_ask(s: &UdpSocket, payload: &[u8]) -> io::Result<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    let deadline = Instant::now() + IO;
    let mut buf = vec![0u8; 65536];
    loop {
        s.send(payload)?;
        match s.recv(&mut buf) {
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
    }
}

/// Assert that UDP datagrams from `ns` (from `src`) to `dst` get no reply within
/// [`BLOCKED`].
pub fn assert_udp_blocked(ns: &Path, src: Option<SocketAddr>, dst: SocketAddr, what: &str) {
    let s = udp_connected(ns, src, dst).unwrap_or_else(|e| panic!("{what}: UDP socket: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let deadline = Instant::now() + BLOCKED;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = s.send(b"must not arrive");
        if let Ok(n) = s.recv(&mut buf) {
            panic!(
                "{what}: {dst} answered {:?}; the path must be blocked",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
}
