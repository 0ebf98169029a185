//! Real topologies for traffic tests: every namespace is owned by a thread that created
//! it with unshare(CLONE_NEWNET) and runs jobs in it; child processes and threads it
//! starts inherit it. Namespaces vanish with their threads, veths with them.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::mpsc::{Sender, channel},
    thread::JoinHandle,
    time::Duration,
};

use nix::sched::{CloneFlags, unshare};

use super::harness::require_root;

type Job = Box<dyn FnOnce() + Send>;

/// Socket timeout: a broken path fails fast.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// A network namespace and the thread that lives in it.
pub struct Ns {
    pub name: &'static str,
    /// A path to the namespace that iproute2 accepts (`ip link set X netns PATH`).
    pub path: String,
    tx: Option<Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl Ns {
    pub fn new(name: &'static str) -> Ns {
        require_root();
        let (tx, rx) = channel::<Job>();
        let (ptx, prx) = channel();
        let handle = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            ptx.send(format!("/proc/{}/task/{tid}/ns/net", std::process::id()))
                .unwrap();
            while let Ok(job) = rx.recv() {
                job();
            }
        });
        let path = prx.recv().expect("namespace thread started");
        let ns = Ns {
            name,
            path,
            tx: Some(tx),
            handle: Some(handle),
        };
        ns.sh(&["ip link set lo up"]);
        ns
    }

    /// Runs `f` in the namespace and returns its result (a panic is re-raised here).
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (rtx, rrx) = channel();
        let job: Job = Box::new(move || {
            let _ = rtx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.tx
            .as_ref()
            .unwrap()
            .send(job)
            .expect("namespace thread alive");
        match rrx.recv().expect("job result") {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Runs shell-free `ip`/`sysctl`-style commands (split on spaces) in the namespace.
    pub fn sh(&self, cmds: &[&str]) {
        let cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
        let name = self.name;
        self.run(move || {
            for c in cmds {
                let argv: Vec<&str> = c.split_whitespace().collect();
                let out = Command::new(argv[0])
                    .args(&argv[1..])
                    .output()
                    .unwrap_or_else(|e| panic!("{c}: {e}"));
                assert!(
                    out.status.success(),
                    "[{name}] {c}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        });
    }

    /// Whether `cmd` succeeds in the namespace.
    pub fn ok(&self, cmd: &str) -> bool {
        let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        self.run(move || {
            Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What a server saw: the peer address of each connection or datagram and its bytes.
pub type Seen = Vec<(SocketAddrV4, Vec<u8>)>;

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("unexpected IPv6 peer {a}"),
    }
}

/// Starts a TCP server in `ns` on `port` that answers every connection by echoing each
/// read with the prefix "echo:", for `conns` connections; returns what it saw.
pub fn tcp_echo(ns: &Ns, port: u16, conns: usize) -> JoinHandle<Seen> {
    let (tx, rx) = channel();
    ns.run(move || {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind tcp");
        tx.send(std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..conns {
                let Ok((mut s, peer)) = l.accept() else { break };
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let mut reply = b"echo:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if s.write_all(&reply).is_err() {
                        break;
                    }
                }
                seen.push((v4(peer), got));
            }
            seen
        }))
        .unwrap();
    });
    rx.recv().unwrap()
}

/// A TCP client connection made from `ns`.
pub struct Client(pub TcpStream);

impl Client {
    pub fn connect(ns: &Ns, to: SocketAddrV4) -> std::io::Result<Client> {
        ns.run(move || {
            let s = TcpStream::connect_timeout(&SocketAddr::V4(to), TIMEOUT)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            Ok(Client(s))
        })
    }

    /// Sends `msg` and reads back exactly the echo of it.
    pub fn roundtrip(&mut self, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        self.0.write_all(msg)?;
        let mut want = vec![0u8; msg.len() + 5];
        self.0.read_exact(&mut want)?;
        Ok(want)
    }
}

/// Starts a UDP echo server in `ns` for `n` datagrams; returns what it saw.
pub fn udp_echo(ns: &Ns, port: u16, n: usize) -> JoinHandle<Seen> {
    let (tx, rx) = channel();
    ns.run(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind udp");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            for _ in 0..n {
                let Ok((len, peer)) = s.recv_from(&mut buf) else {
                    break;
                };
                let _ = s.send_to(&buf[..len], peer);
                seen.push((v4(peer), buf[..len].to_vec()));
            }
            seen
        }))
        .unwrap();
    });
    rx.recv().unwrap()
}

/// Sends one datagram from `ns` (from `sport`) and waits for the echo.
pub fn udp_roundtrip(
    ns: &Ns,
    sport: u16,
    to: SocketAddrV4,
    msg: &'static [u8],
) -> std::io::Result<Vec<u8>> {
    ns.run(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, sport))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send_to(msg, to)?;
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(buf[..n].to_vec())
    })
}
