//! Privileged tests of the netlink layer. Each test runs on a thread that first moves
//! itself into a private network namespace, so nothing here touches the root namespace;
//! named namespaces get unique names and are removed by guards, even on failure.
//! They need root and fail (never skip) without it.

use std::{
    future::Future,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use ipnet::Ipv4Net;
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::{LinkDummy, LinkUnspec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the netlink tests create namespaces, bridges and veths and need root: \
         run them as root, e.g. `sudo -E cargo test -p netd --lib netlink::`"
    );
}

/// Run `test` on a new thread that lives in a private network namespace, on a
/// current-thread runtime built there. Panics propagate to the caller.
fn in_private_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    require_root();
    let outcome = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) for the test thread");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        runtime.block_on(test());
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A unique namespace name for this test process.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "ndtest-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named namespace that is removed when the guard drops, even if the test panicked.
struct NamedNetns {
    netns: Option<Netns>,
    name: String,
    path: PathBuf,
}

impl NamedNetns {
    fn create() -> Self {
        let name = unique_name();
        let netns = Netns::create_named(&name).expect("create a named namespace");
        let path = Path::new(Netns::NAMED_DIR).join(&name);
        NamedNetns {
            netns: Some(netns),
            name,
            path,
        }
    }

    fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("namespace is open until drop")
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        drop(self.netns.take());
        if let Err(e) = Netns::remove_named(&self.path) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Inode of a namespace file: equal inodes mean the same namespace.
fn ns_inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat namespace file").ino()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("valid CIDR")
}

async fn link_names(nl: &Netlink) -> Vec<String> {
    let mut names: Vec<String> = nl
        .links()
        .await
        .expect("list links")
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    names
}

async fn add_dummy(nl: &Netlink, name: &str) -> u32 {
    nl.handle
        .link()
        .add(LinkDummy::new(name).build())
        .execute()
        .await
        .expect("create dummy");
    nl.link_by_name(name)
        .await
        .expect("get dummy")
        .expect("dummy exists")
        .index
}

#[test]
fn bridge_is_created_idempotently_and_refuses_non_bridges() {
    in_private_netns(|| async {
        let nl = Netlink::new().expect("netlink");
        let gw = net("10.88.0.1/24");
        assert_eq!(nl.link_by_name("ndt-br0").await.expect("lookup"), None);

        let index = nl
            .ensure_bridge("ndt-br0", gw, 1400)
            .await
            .expect("create bridge");
        let link = nl
            .link_by_index(index)
            .await
            .expect("lookup")
            .expect("bridge exists");
        assert_eq!(link.name, "ndt-br0");
        assert_eq!(link.kind.as_deref(), Some("bridge"));
        assert_eq!(link.mtu, 1400);
        assert!(link.up, "bridge is up");
        assert_eq!(link.mac, Some(MacAddr::from_ipv4(gw.addr()).0));
        assert_eq!(nl.ipv4_addrs(index).await.expect("addrs"), vec![gw]);

        // Again, after someone set it down and changed its MTU: repaired, not duplicated.
        let down = LinkUnspec::new_with_index(index).down().mtu(1300).build();
        nl.handle
            .link()
            .change(down)
            .execute()
            .await
            .expect("set bridge down");
        assert_eq!(
            nl.ensure_bridge("ndt-br0", gw, 1400)
                .await
                .expect("ensure again"),
            index
        );
        let link = nl
            .link_by_index(index)
            .await
            .expect("lookup")
            .expect("bridge exists");
        assert!(link.up && link.mtu == 1400, "repaired: {link:?}");
        assert_eq!(nl.ipv4_addrs(index).await.expect("addrs"), vec![gw]);
        assert_eq!(link_names(&nl).await, ["lo", "ndt-br0"]);

        add_dummy(&nl, "ndt-dummy0").await;
        let err = nl
            .ensure_bridge("ndt-dummy0", gw, 1500)
            .await
            .expect_err("not a bridge");
        assert_eq!(
            (err.op, err.object.as_str()),
            ("create bridge", "ndt-dummy0")
        );
        assert!(err.detail.contains("is dummy, not a bridge"), "{err}");
        let dummy = nl
            .link_by_name("ndt-dummy0")
            .await
            .expect("lookup")
            .expect("dummy kept");
        assert!(
            nl.ipv4_addrs(dummy.index).await.expect("addrs").is_empty(),
            "dummy untouched"
        );

        let err = nl
            .ensure_bridge("ndt-name-too-long", gw, 1500)
            .await
            .expect_err("long name");
        assert!(err.to_string().contains("longer than 15 bytes"), "{err}");
    });
}

#[test]
fn delete_link_reports_whether_it_existed() {
    in_private_netns(|| async {
        let nl = Netlink::new().expect("netlink");
        assert!(!nl.delete_link("ndt-absent").await.expect("delete absent"));
        add_dummy(&nl, "ndt-dummy0").await;
        assert!(nl.delete_link("ndt-dummy0").await.expect("delete present"));
        assert_eq!(nl.link_by_name("ndt-dummy0").await.expect("lookup"), None);
        assert!(!nl.delete_link("ndt-dummy0").await.expect("delete again"));
    });
}

fn request<'a>(
    netns: &'a Netns,
    bridge: u32,
    host_ifname: &'a str,
    addr: Ipv4Net,
) -> AttachRequest<'a> {
    AttachRequest {
        netns,
        bridge_ifindex: bridge,
        host_ifname,
        ifname: "eth0",
        mac: MacAddr::from_ipv4(addr.addr()),
        addr,
        gateway: Ipv4Addr::new(10, 88, 0, 1),
        default_route: true,
        mtu: 1450,
    }
}

#[test]
fn attach_endpoint_configures_the_namespace_and_carries_tcp() {
    in_private_netns(|| async {
        let nl = Netlink::new().expect("netlink");
        let gw = net("10.88.0.1/24");
        let bridge = nl.ensure_bridge("ndt-br0", gw, 1450).await.expect("bridge");
        let ns = NamedNetns::create();
        let addr = net("10.88.0.2/24");
        let req = request(ns.netns(), bridge, "ndt-veth0", addr);
        let host_index = nl.attach_endpoint(&req).await.expect("attach");

        let host = nl
            .link_by_index(host_index)
            .await
            .expect("lookup")
            .expect("host end");
        assert_eq!(host.name, "ndt-veth0");
        assert_eq!(host.kind.as_deref(), Some("veth"));
        assert_eq!((host.master, host.up, host.mtu), (Some(bridge), true, 1450));
        assert_eq!(
            link_names(&nl).await,
            ["lo", "ndt-br0", "ndt-veth0"],
            "no peer left on the host"
        );
        assert_eq!(nl.default_route_ifindex().await.expect("route"), None);

        let inner = ns.netns().netlink().expect("netlink in netns");
        assert_eq!(link_names(&inner).await, ["eth0", "lo"]);
        let eth0 = inner
            .link_by_name("eth0")
            .await
            .expect("lookup")
            .expect("eth0");
        assert_eq!(eth0.mac, Some(req.mac.0));
        assert_eq!(
            (eth0.mtu, eth0.up, eth0.kind.as_deref()),
            (1450, true, Some("veth"))
        );
        assert_eq!(
            inner.ipv4_addrs(eth0.index).await.expect("addrs"),
            vec![addr]
        );
        assert_eq!(
            inner.default_route_ifindex().await.expect("route"),
            Some(eth0.index)
        );
        assert!(
            inner
                .link_by_name("lo")
                .await
                .expect("lookup")
                .expect("lo")
                .up,
            "lo is up"
        );

        // TCP from inside the namespace to a listener on the gateway address.
        let listener = tokio::net::TcpListener::bind((gw.addr(), 0))
            .await
            .expect("listen");
        let server = SocketAddr::from((gw.addr(), listener.local_addr().expect("addr").port()));
        let client = connect_from(ns.path.clone(), server, b"ping from eth0".to_vec());
        let (mut conn, peer) = tokio::time::timeout(IO_TIMEOUT, listener.accept())
            .await
            .expect("accept timed out")
            .expect("accept");
        assert_eq!(
            peer.ip(),
            IpAddr::V4(addr.addr()),
            "the client's source is its eth0 address"
        );
        let mut got = [0u8; 14];
        tokio::time::timeout(IO_TIMEOUT, conn.read_exact(&mut got))
            .await
            .expect("read timed out")
            .expect("read");
        assert_eq!(&got, b"ping from eth0");
        conn.write_all(b"pong from host").await.expect("write");
        conn.shutdown().await.expect("shutdown");
        let reply = client.join().expect("client thread").expect("client");
        assert_eq!(reply, b"pong from host");
    });
}

/// Connect from inside the namespace at `netns`, send `payload`, return the reply.
fn connect_from(
    netns: PathBuf,
    server: SocketAddr,
    payload: Vec<u8>,
) -> std::thread::JoinHandle<std::io::Result<Vec<u8>>> {
    std::thread::spawn(move || {
        let ns = Netns::open(&netns).map_err(std::io::Error::other)?;
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
        let mut stream = TcpStream::connect_timeout(&server, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(&payload)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        Ok(reply)
    })
}

#[test]
fn second_attachment_keeps_the_first_default_route() {
    in_private_netns(|| async {
        let nl = Netlink::new().expect("netlink");
        let br0 = nl
            .ensure_bridge("ndt-br0", net("10.88.0.1/24"), 1500)
            .await
            .expect("br0");
        let br1 = nl
            .ensure_bridge("ndt-br1", net("10.89.0.1/24"), 1500)
            .await
            .expect("br1");
        let ns = NamedNetns::create();
        let first = request(ns.netns(), br0, "ndt-veth0", net("10.88.0.2/24"));
        nl.attach_endpoint(&first).await.expect("attach eth0");
        let second = AttachRequest {
            ifname: "eth1",
            gateway: Ipv4Addr::new(10, 89, 0, 1),
            default_route: false,
            ..request(ns.netns(), br1, "ndt-veth1", net("10.89.0.7/24"))
        };
        let host1 = nl.attach_endpoint(&second).await.expect("attach eth1");
        assert_eq!(
            nl.link_by_index(host1)
                .await
                .expect("lookup")
                .expect("veth1")
                .master,
            Some(br1)
        );

        let inner = ns.netns().netlink().expect("netlink in netns");
        let eth0 = inner
            .link_by_name("eth0")
            .await
            .expect("lookup")
            .expect("eth0");
        let eth1 = inner
            .link_by_name("eth1")
            .await
            .expect("lookup")
            .expect("eth1");
        assert_eq!(
            inner.ipv4_addrs(eth1.index).await.expect("addrs"),
            vec![net("10.89.0.7/24")]
        );
        assert_eq!(
            eth1.mac,
            Some(MacAddr::from_ipv4(Ipv4Addr::new(10, 89, 0, 7)).0)
        );
        assert_eq!(
            inner.default_route_ifindex().await.expect("route"),
            Some(eth0.index)
        );
    });
}

#[test]
fn failed_attach_leaves_nothing_behind() {
    in_private_netns(|| async {
        let nl = Netlink::new().expect("netlink");
        let bridge = nl
            .ensure_bridge("ndt-br0", net("10.88.0.1/24"), 1500)
            .await
            .expect("bridge");
        add_dummy(&nl, "ndt-taken").await;
        let ns = NamedNetns::create();
        let inner = ns.netns().netlink().expect("netlink in netns");
        let base = request(ns.netns(), bridge, "ndt-veth0", net("10.88.0.2/24"));
        let host_before = link_names(&nl).await;
        let inner_before = link_names(&inner).await;

        // Fails at the last step, after the peer is configured inside the namespace.
        let off_link = AttachRequest {
            gateway: Ipv4Addr::new(10, 99, 0, 1),
            ..base
        };
        let err = nl
            .attach_endpoint(&off_link)
            .await
            .expect_err("gateway not on-link");
        assert_eq!(err.op, "add default route", "{err}");
        assert_eq!(err.detail, "Network is unreachable", "{err}");
        assert_eq!(link_names(&nl).await, host_before);
        assert_eq!(link_names(&inner).await, inner_before);

        // Fails while enslaving the host end.
        let err = nl
            .attach_endpoint(&AttachRequest {
                bridge_ifindex: 9999,
                ..base
            })
            .await;
        let err = err.expect_err("no such bridge");
        assert_eq!(err.op, "set master of", "{err}");
        assert_eq!(link_names(&nl).await, host_before);
        assert_eq!(link_names(&inner).await, inner_before);

        // Refused before anything is created.
        let err = nl
            .attach_endpoint(&AttachRequest {
                ifname: "eth0-name-too-long",
                ..base
            })
            .await;
        assert!(
            err.expect_err("long name")
                .detail
                .contains("longer than 15")
        );

        // A taken host name is an error, and the existing link is not "rolled back".
        let err = nl
            .attach_endpoint(&AttachRequest {
                host_ifname: "ndt-taken",
                ..base
            })
            .await;
        assert!(
            err.expect_err("taken")
                .detail
                .contains("ndt-taken already exists on the host")
        );
        assert_eq!(
            link_names(&nl).await,
            host_before,
            "ndt-taken is still there"
        );

        // The same for a taken name inside the namespace.
        add_dummy(&inner, "eth0").await;
        let err = nl.attach_endpoint(&base).await.expect_err("eth0 taken");
        assert!(
            err.detail.contains("eth0 already exists in the namespace"),
            "{err}"
        );
        assert_eq!(link_names(&nl).await, host_before);
        assert!(inner.delete_link("eth0").await.expect("delete dummy eth0"));

        // None of the failures left anything that gets in the way of a good request.
        nl.attach_endpoint(&base)
            .await
            .expect("attach after failures");
        assert_eq!(link_names(&inner).await, ["eth0", "lo"]);
    });
}

#[test]
fn named_netns_lifecycle() {
    in_private_netns(|| async {
        let own_before = ns_inode(Path::new("/proc/thread-self/ns/net"));
        let ns = NamedNetns::create();
        assert!(Netns::exists(&ns.path));
        assert_eq!(ns.netns().path(), ns.path);
        assert_ne!(ns_inode(&ns.path), own_before, "a new namespace, not ours");
        assert_mount_is_shared(Path::new(Netns::NAMED_DIR));

        let err = Netns::create_named(&ns.name).expect_err("duplicate name");
        let expected = format!("network namespace {} already exists", ns.name);
        assert!(err.to_string().contains(&expected), "{err}");
        assert!(
            Netns::exists(&ns.path),
            "the failed duplicate did not clobber it"
        );

        // A netlink socket inside it, without moving this thread.
        let inner = ns.netns().netlink().expect("netlink in netns");
        assert_eq!(link_names(&inner).await, ["lo"]);
        assert_eq!(ns_inode(Path::new("/proc/thread-self/ns/net")), own_before);

        // enter() moves only the calling thread.
        let (path, target) = (ns.path.clone(), ns_inode(&ns.path));
        let entered = std::thread::spawn(move || {
            Netns::enter(&path).expect("enter");
            ns_inode(Path::new("/proc/thread-self/ns/net"))
        });
        assert_eq!(entered.join().expect("enter thread"), target);
        assert_eq!(ns_inode(Path::new("/proc/thread-self/ns/net")), own_before);

        for (path, why) in [
            ("/proc/self/status", "not a namespace file"),
            ("/proc/thread-self/ns/uts", "not a network namespace"),
            (
                "/run/netns/ndtest-does-not-exist",
                "No such file or directory",
            ),
        ] {
            let err = Netns::open(Path::new(path)).expect_err(path);
            assert!(err.detail.contains(why), "{path}: {err}");
            assert!(!Netns::exists(Path::new(path)));
        }
        for bad in ["", "a/b", ".."] {
            Netns::create_named(bad).expect_err("invalid name");
        }

        drop(inner);
        let path = ns.path.clone();
        drop(ns);
        assert!(!path.exists() && !Netns::exists(&path), "removed");
        Netns::remove_named(&path).expect("removing twice is fine");
    });
}

/// /run/netns must be a shared mount point for `ip netns exec` to see our mounts.
fn assert_mount_is_shared(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_str().expect("utf-8 path");
    let line = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(dir))
        .last()
        .unwrap_or_else(|| panic!("{dir} is not a mount point"));
    assert!(line.contains(" shared:"), "{dir} is not shared: {line}");
}

#[test]
fn iproute2_sees_named_namespaces() {
    in_private_netns(|| async {
        let nl = Netlink::new().expect("netlink");
        let bridge = nl
            .ensure_bridge("ndt-br0", net("10.88.0.1/24"), 1500)
            .await
            .expect("bridge");
        let ns = NamedNetns::create();
        let req = request(ns.netns(), bridge, "ndt-veth0", net("10.88.0.2/24"));
        nl.attach_endpoint(&req).await.expect("attach");
        // `ip netns exec` mounts the namespace's own /sys, so this reads eth0 inside it.
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "cat",
                "/sys/class/net/eth0/address",
            ])
            .output()
            .expect("run `ip netns exec` (iproute2 must be installed)");
        assert!(
            out.status.success(),
            "ip netns exec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            req.mac.to_string()
        );
    });
}

#[test]
fn ip_forward_is_enabled_in_the_callers_namespace_only() {
    require_root();
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let root_before = std::fs::read_to_string(PATH).expect("read root ip_forward");
    in_private_netns(|| async {
        // Prove /proc/sys/net resolves to this thread's namespace before writing to it:
        // a link that exists only here is visible under conf/.
        let nl = Netlink::new().expect("netlink");
        add_dummy(&nl, "ndt-probe0").await;
        assert!(
            Path::new("/proc/sys/net/ipv4/conf/ndt-probe0").exists(),
            "/proc/sys/net does not follow the thread's namespace; refusing to write to it"
        );
        std::fs::write(PATH, "0").expect("reset ip_forward in the private namespace");
        enable_ip_forward().expect("enable ip_forward");
        assert_eq!(std::fs::read_to_string(PATH).expect("read").trim(), "1");
    });
    let root_after = std::fs::read_to_string(PATH).expect("read root ip_forward");
    assert_eq!(root_after, root_before, "the root namespace is untouched");
}
