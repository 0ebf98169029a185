//! Test scaffolding: root check, a private network namespace per test thread, veth pairs,
//! a bpffs directory guard and raw frame injection.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};

/// Panics (never skips) when the test cannot do its job without root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this privileged dataplane test needs root (it loads eBPF programs, creates network namespaces and mounts bpffs); run it as root, e.g. through `cargo xtask test`"
        );
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A bpffs directory for one test under /tmp; unmounted and removed on drop.
pub struct TestBpffs {
    path: PathBuf,
}

impl TestBpffs {
    fn create(tag: &str) -> Self {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/tmp/netd-test-bpffs-{tag}-{}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TestBpffs { path }
    }

    /// A directory with bpffs mounted by the test.
    pub fn mounted(tag: &str) -> Self {
        let t = Self::create(tag);
        mount(
            Some("bpf"),
            &t.path,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mounting bpffs on {}: {e}", t.path.display()));
        t
    }

    /// A plain directory; the code under test has to mount bpffs itself.
    pub fn unmounted(tag: &str) -> Self {
        Self::create(tag)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        // Unmount every bpffs stacked here (the test's and any the code mounted), lazily
        // so an fd still open elsewhere cannot make this fail.
        for _ in 0..4 {
            if umount2(&self.path, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Runs `f` on a new thread that first moves into a network namespace of its own, so
/// nothing the test does touches the root namespace. The namespace dies with the thread.
pub fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    require_root();
    let handle = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) on the test thread");
        f();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// One interface in the test namespace.
pub struct Iface {
    pub name: String,
    pub index: u32,
}

/// Runs iproute2 in the calling thread's namespace; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The index of interface `name` in the calling thread's namespace; panics if none.
pub fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).unwrap();
    // SAFETY: c is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "interface {name} not found in the test namespace");
    index
}

fn iface(name: &str) -> Iface {
    Iface {
        name: name.to_string(),
        index: ifindex(name),
    }
}

/// Creates a veth pair in the calling thread's namespace, both ends up, IPv6 off so that
/// no autoconfiguration traffic disturbs exact counts. Must run inside [`in_netns`].
pub fn veth_pair(a: &str, b: &str) -> (Iface, Iface) {
    ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    for n in [a, b] {
        // The thread's namespace decides which /proc/sys/net this is.
        let p = format!("/proc/sys/net/ipv6/conf/{n}/disable_ipv6");
        fs::write(&p, "1").unwrap_or_else(|e| panic!("writing {p}: {e}"));
        ip(&["link", "set", n, "up"]);
    }
    (iface(a), iface(b))
}

/// Sends `count` frames of `len` bytes out of `iface` with source MAC `src` and an
/// experimental EtherType that no stack consumes.
pub fn send_frames(iface: &Iface, src: [u8; 6], count: usize, len: usize) {
    assert!(len >= 14);
    let mut frame = vec![0u8; len];
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for _ in 0..count {
        send_raw(iface, &frame);
    }
}

/// Sends one raw frame out of `iface` through an AF_PACKET socket.
pub fn send_raw(iface: &Iface, frame: &[u8]) {
    // SAFETY: plain socket syscalls on an fd we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = iface.index as i32;
        sll.sll_halen = 6;
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(
            sent,
            frame.len() as isize,
            "sending on {}: {err}",
            iface.name
        );
    }
}

/// Polls `f` until it returns true, a bounded number of times (receive processing can
/// run after the send returns); the caller asserts the final state itself.
pub fn settle(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
