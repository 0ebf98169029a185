//! Scaffolding of the host-access tests: threads in network namespaces of their own, a
//! bpffs mount and a cgroup per test, servers that log what they receive, and client
//! sockets created inside the test cgroup by a child process.

use std::{
    ffi::CString,
    fs,
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};

use super::super::default_cgroup;

/// Bounds every socket operation of the clients.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a server waits for a client's bytes: long enough for a test to restart the
/// dataplane between connecting and sending.
const SERVER_IDLE: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Panics (never skips) when the test cannot do its job without root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this privileged host-access test needs root (it loads eBPF programs, creates network \
         namespaces and cgroups and mounts bpffs); run it as root, e.g. through `cargo xtask test`"
    );
}

fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bpffs mount for one test; unmounted and removed on drop.
pub struct TestBpffs(pub PathBuf);

impl TestBpffs {
    pub fn mounted() -> Self {
        let path = PathBuf::from(format!("/tmp/{}", unique("netd-test-sock-bpffs")));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let t = TestBpffs(path);
        mount(
            Some("bpf"),
            &t.0,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mounting bpffs on {}: {e}", t.0.display()));
        t
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        // Lazily, so an fd still open elsewhere cannot make this fail.
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A cgroup of the v2 hierarchy for one test's client processes; removed on drop (its
/// processes have exited by then, and removing it detaches whatever is attached to it).
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    pub fn create() -> Self {
        let root = default_cgroup().expect("a cgroup v2 hierarchy on this machine");
        let path = root.join(unique("netd-test-sock"));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        TestCgroup(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Runs `f` on a thread of its own network namespace and returns its result.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    require_root();
    let handle = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) on a test thread");
        f()
    });
    handle
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

pub use crate::dataplane::ebpf::tests::harness::{ifindex, ip};

/// Keeps router solicitations and DAD off the veths (this thread's /proc/sys/net).
pub fn no_ipv6() {
    for conf in ["all", "default"] {
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
    }
}

pub fn v4(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in a network namespace of its own that runs closures on request: the
/// container and the wan of the lab. The namespace goes when the thread ends.
pub struct NsThread {
    jobs: Option<mpsc::Sender<Job>>,
    tid: i32,
    handle: Option<JoinHandle<()>>,
}

impl NsThread {
    pub fn new() -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) on a namespace thread");
            // SAFETY: gettid cannot fail.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            for job in rx {
                job();
            }
        });
        let tid = tid_rx.recv().expect("the namespace thread started");
        NsThread {
            jobs: Some(jobs),
            tid,
            handle: Some(handle),
        }
    }

    /// Runs `f` in the namespace; its panic is the caller's.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .unwrap()
            .send(job)
            .expect("the namespace thread is alive");
        match rx.recv().expect("the namespace thread ran the job") {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Moves interface `ifname` of the calling thread's namespace into this one (a
    /// thread id names the thread's namespace).
    pub fn take(&self, ifname: &str) {
        ip(&["link", "set", ifname, "netns", &self.tid.to_string()]);
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What a server socket received, as `"<proto> <local> saw <peer>: <payload>"`, which
/// is also what it answers.
type Log = Arc<Mutex<Vec<String>>>;

fn serve_tcp(l: TcpListener, stop: Arc<AtomicBool>, log: Log) {
    l.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, peer)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        // A connection of its own thread, so an idle client cannot hold up the next.
        let log = log.clone();
        std::thread::spawn(move || {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(SERVER_IDLE)).unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap_or(0);
            let line = format!(
                "tcp {} saw {peer}: {}",
                s.local_addr().unwrap(),
                String::from_utf8_lossy(&buf[..n])
            );
            log.lock().unwrap().push(line.clone());
            let _ = s.write_all(line.as_bytes());
        });
    }
}

fn serve_udp(s: UdpSocket, stop: Arc<AtomicBool>, log: Log) {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let local = s.local_addr().unwrap();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = s.recv_from(&mut buf) else {
            continue;
        };
        let line = format!(
            "udp {local} saw {peer}: {}",
            String::from_utf8_lossy(&buf[..n])
        );
        log.lock().unwrap().push(line.clone());
        let _ = s.send_to(line.as_bytes(), peer);
    }
}

/// Servers on `addrs` (TCP and UDP on each) in the calling thread's namespace; stopped
/// on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    log: Log,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(addrs: &[SocketAddrV4]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Log::default();
        let mut threads = Vec::new();
        for a in addrs {
            let l = TcpListener::bind(a).unwrap_or_else(|e| panic!("binding TCP {a}: {e}"));
            let u = UdpSocket::bind(a).unwrap_or_else(|e| panic!("binding UDP {a}: {e}"));
            // Threads share the namespace of the thread that spawns them.
            let (s, g) = (stop.clone(), log.clone());
            threads.push(std::thread::spawn(move || serve_tcp(l, s, g)));
            let (s, g) = (stop.clone(), log.clone());
            threads.push(std::thread::spawn(move || serve_udp(u, s, g)));
        }
        Servers { stop, log, threads }
    }

    /// Every line logged so far.
    pub fn received(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sockets of each `kind` (SOCK_STREAM, SOCK_DGRAM) in the calling thread's namespace,
/// created by a child process that moved itself into `cgroup` first.
pub fn sockets_in_cgroup(cgroup: &Path, kinds: &[libc::c_int]) -> Vec<OwnedFd> {
    const MAX: usize = 4;
    assert!(kinds.len() <= MAX);
    let mut pair = [0 as RawFd; 2];
    // SAFETY: pair has room for the two fds.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: socketpair returned two fds that we now own.
    let (parent, child) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let procs = CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let mut list = [0 as libc::c_int; MAX];
    list[..kinds.len()].copy_from_slice(kinds);
    let (count, child_fd) = (kinds.len(), child.as_raw_fd());
    let mut cmd = Command::new("true");
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls on memory it owns (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            // "0" moves the writing process.
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            libc::close(fd);
            let mut fds = [0 as libc::c_int; MAX];
            for (fd, kind) in fds.iter_mut().zip(list).take(count) {
                *fd = libc::socket(libc::AF_INET, kind, 0);
                if *fd < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            send_fds(child_fd, &fds[..count])
        });
    }
    let status = cmd.status().expect("spawning the socket-making child");
    assert!(status.success(), "the socket-making child failed: {status}");
    drop(child);
    recv_fds(&parent, kinds.len())
}

/// Sends `fds` over the UNIX socket `sock` (async-signal-safe: stack buffers only).
fn send_fds(sock: RawFd, fds: &[libc::c_int]) -> io::Result<()> {
    let mut cbuf = [0u64; 8];
    let bytes = size_of_val(fds) as u32;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr points at live stack buffers; the CMSG macros stay inside cbuf,
    // which has room for 8 fds.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(c),
            bytes as usize,
        );
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv_fds(sock: &OwnedFd, n: usize) -> Vec<OwnedFd> {
    let mut cbuf = [0u64; 8];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: as in send_fds; the received fds are new and become ours.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&cbuf);
        let r = libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        );
        assert!(
            r >= 0,
            "receiving the sockets: {}",
            io::Error::last_os_error()
        );
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(
            !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS,
            "no sockets received"
        );
        let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
        (0..n)
            .map(|i| OwnedFd::from_raw_fd(data.add(i).read_unaligned()))
            .collect()
    }
}

/// A TCP socket made in the test cgroup, connected to `dst`.
pub fn tcp_connect(cgroup: &Path, dst: SocketAddrV4) -> io::Result<TcpStream> {
    let fd = sockets_in_cgroup(cgroup, &[libc::SOCK_STREAM]).remove(0);
    let s = TcpStream::from(fd);
    // SO_SNDTIMEO also bounds a blocking connect().
    s.set_write_timeout(Some(TIMEOUT))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sa is a valid sockaddr_in of the size given.
    let r = unsafe {
        libc::connect(
            s.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// Sends `msg` over a connected stream and returns the whole answer.
pub fn tcp_exchange(mut s: TcpStream, msg: &str) -> String {
    s.write_all(msg.as_bytes()).expect("sending over TCP");
    s.shutdown(std::net::Shutdown::Write)
        .expect("shutting down the write side");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reading the TCP answer");
    out
}

/// A UDP socket made in the test cgroup.
pub fn udp_socket(cgroup: &Path) -> UdpSocket {
    let s = UdpSocket::from(sockets_in_cgroup(cgroup, &[libc::SOCK_DGRAM]).remove(0));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Sends `msg` to `dst` and returns the answer and the address it came from.
pub fn udp_exchange(s: &UdpSocket, dst: SocketAddrV4, msg: &str) -> (String, SocketAddr) {
    s.send_to(msg.as_bytes(), dst).expect("sending over UDP");
    let mut buf = [0u8; 512];
    let (n, from) = s
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no UDP answer through {dst}: {e}"));
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}
