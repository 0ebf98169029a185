//! Named namespaces: lifecycle, validation, and compatibility with iproute2.

use super::*;

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
        // The last mount on a path is the visible one.
        .rfind(|l| l.split(' ').nth(4) == Some(dir))
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

/// The daemon runs a multi-thread runtime; its worker threads are created after the
/// namespace switch and must inherit it, and [`Netns::netlink`] must work there too.
#[test]
fn netlink_works_on_a_multi_thread_runtime() {
    require_root();
    let outcome = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) for the test thread");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        runtime.block_on(async {
            // Spawned, so it runs on a worker thread rather than this one.
            tokio::spawn(async {
                let nl = Netlink::new().expect("netlink");
                let gw = net("10.88.0.1/24");
                let bridge = nl.ensure_bridge("ndt-br0", gw, 1500).await.expect("bridge");
                let ns = NamedNetns::create();
                let req = request(ns.netns(), bridge, "ndt-veth0", net("10.88.0.2/24"));
                nl.attach_endpoint(&req).await.expect("attach");
                let inner = ns.netns().netlink().expect("netlink in netns");
                assert_eq!(link_names(&inner).await, ["eth0", "lo"]);
                assert_eq!(link_names(&nl).await, ["lo", "ndt-br0", "ndt-veth0"]);
            })
            .await
            .expect("test task");
        });
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
