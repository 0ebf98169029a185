//! attach_endpoint: what it builds, that it carries traffic, and its rollback.

use super::*;

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
        add_veth_pair(&nl, "ndt-taken").await;
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
        add_veth_pair(&inner, "eth0").await;
        let err = nl.attach_endpoint(&base).await.expect_err("eth0 taken");
        assert!(
            err.detail.contains("eth0 already exists in the namespace"),
            "{err}"
        );
        assert_eq!(link_names(&nl).await, host_before);
        assert!(
            inner
                .delete_link("eth0")
                .await
                .expect("delete the squatting eth0")
        );

        // None of the failures left anything that gets in the way of a good request.
        nl.attach_endpoint(&base)
            .await
            .expect("attach after failures");
        assert_eq!(link_names(&inner).await, ["eth0", "lo"]);
    });
}
