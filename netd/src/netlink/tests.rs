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
use rtnetlink::{LinkUnspec, LinkVeth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

mod attach;
mod netns;

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

/// A link that is not a bridge: a veth pair NAME / NAME-p (this kernel has no dummy).
async fn add_veth_pair(nl: &Netlink, name: &str) -> u32 {
    let peer = format!("{name}-p");
    nl.handle
        .link()
        .add(LinkVeth::new(name, &peer).build())
        .execute()
        .await
        .expect("create veth");
    nl.link_by_name(name)
        .await
        .expect("get veth")
        .expect("veth exists")
        .index
}

/// A valid request on 10.88.0.0/24; tests change one field to make it fail.
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

        add_veth_pair(&nl, "ndt-other0").await;
        let err = nl
            .ensure_bridge("ndt-other0", gw, 1500)
            .await
            .expect_err("not a bridge");
        assert_eq!(
            (err.op, err.object.as_str()),
            ("create bridge", "ndt-other0")
        );
        assert!(err.detail.contains("is veth, not a bridge"), "{err}");
        let other = nl
            .link_by_name("ndt-other0")
            .await
            .expect("lookup")
            .expect("veth kept");
        assert!(
            nl.ipv4_addrs(other.index).await.expect("addrs").is_empty(),
            "the veth is untouched"
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
        add_veth_pair(&nl, "ndt-other0").await;
        assert!(nl.delete_link("ndt-other0").await.expect("delete present"));
        assert_eq!(link_names(&nl).await, ["lo"], "both ends are gone");
        assert!(!nl.delete_link("ndt-other0").await.expect("delete again"));
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
        add_veth_pair(&nl, "ndt-probe0").await;
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
