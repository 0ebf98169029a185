//! Privileged tests of host-local access: real sockets of a "host" network namespace
//! (a test thread that unshared its own) reach a server in a container namespace behind
//! a bridge and a veth, through the socket programs attached to a cgroup the test
//! creates.
//!
//! The client sockets are created by a short-lived child process that first moves itself
//! into the test cgroup and then hands them back over SCM_RIGHTS: a socket belongs to the
//! cgroup of the process that created it, so the test process itself stays where it is
//! and nothing else of the machine is affected. They need root and panic without it.

mod harness;

use std::{
    fs, io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use self::harness::{
    NsThread, Servers, TIMEOUT, TestBpffs, TestCgroup, ifindex, in_netns, ip, no_ipv6,
    require_root, tcp_connect, tcp_exchange, udp_exchange, udp_socket, v4,
};
use super::{default_cgroup, is_cgroup2, netns_cookie};
use crate::{
    dataplane::{
        Dataplane, EndpointView, NetworkView, PublicationView, UplinkView,
        ebpf::{EbpfConfig, EbpfDataplane, bpffs::LINKS_DIR},
    },
    model::{Attachment, MacAddr, Network, PortRange, Proto, Publication},
};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// TCP and UDP on every host address, to container port 80.
const PUBLISHED: u16 = 18080;
/// TCP on 127.0.0.1 only, to container port 80.
const LOCAL_ONLY: u16 = 18081;
/// TCP range on every host address, 18100-18101 to container ports 80-81.
const RANGE: u16 = 18100;
const UNPUBLISHED: u16 = 18090;

fn network() -> Network {
    Network {
        name: "sk".into(),
        id: 7,
        subnet: "10.98.0.0/24".parse().unwrap(),
        gateway: GATEWAY,
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: "sbr0".into(),
    }
}

fn publication(
    proto: Proto,
    host_ip: Option<Ipv4Addr>,
    host: (u16, u16),
    container: (u16, u16),
) -> Publication {
    Publication {
        endpoint: "c1".into(),
        network: "sk".into(),
        proto,
        host_ip,
        host_ports: PortRange {
            start: host.0,
            end: host.1,
        },
        container_ports: PortRange {
            start: container.0,
            end: container.1,
        },
    }
}

fn publications() -> Vec<Publication> {
    vec![
        publication(Proto::Tcp, None, (PUBLISHED, PUBLISHED), (80, 80)),
        publication(Proto::Udp, None, (PUBLISHED, PUBLISHED), (80, 80)),
        publication(
            Proto::Tcp,
            Some(LOOPBACK),
            (LOCAL_ONLY, LOCAL_ONLY),
            (80, 80),
        ),
        publication(Proto::Tcp, None, (RANGE, RANGE + 1), (80, 81)),
    ]
}

/// The lab, built on the calling thread (the "host", in a namespace of its own): a
/// bridge with the gateway address, a container namespace behind a veth with servers on
/// ports 80 and 81, an uplink veth to a wan namespace, the dataplane with the ports of
/// [`publications`], and the socket programs on a test cgroup.
struct Lab {
    // Dropped in this order: servers, namespaces, dataplane, pins, cgroup.
    servers: Servers,
    container: NsThread,
    wan: NsThread,
    dp: Option<EbpfDataplane>,
    cfg: EbpfConfig,
    bpffs: TestBpffs,
    cgroup: TestCgroup,
}

impl Lab {
    fn new() -> Self {
        require_root();
        let cgroup = TestCgroup::create();
        let bpffs = TestBpffs::mounted();
        no_ipv6();
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .expect("enabling forwarding in the host namespace");
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "sbr0", "type", "bridge"]);
        ip(&["addr", "add", "10.98.0.1/24", "dev", "sbr0"]);
        ip(&["link", "set", "sbr0", "up"]);
        ip(&["link", "add", "sh0", "type", "veth", "peer", "name", "sc0"]);
        ip(&[
            "link",
            "set",
            "sc0",
            "address",
            &MacAddr::from_ipv4(CONTAINER).to_string(),
        ]);
        ip(&["link", "set", "sh0", "master", "sbr0", "up"]);
        ip(&["link", "add", "su0", "type", "veth", "peer", "name", "sw0"]);
        ip(&["addr", "add", "203.0.113.2/24", "dev", "su0"]);
        ip(&["link", "set", "su0", "up"]);

        let container = NsThread::new();
        container.take("sc0");
        let servers = container.run(|| {
            no_ipv6();
            ip(&["link", "set", "lo", "up"]);
            ip(&["addr", "add", "10.98.0.2/24", "dev", "sc0"]);
            ip(&["link", "set", "sc0", "up"]);
            ip(&["route", "add", "default", "via", "10.98.0.1"]);
            Servers::start(&[v4(CONTAINER, 80), v4(CONTAINER, 81)])
        });
        let wan = NsThread::new();
        wan.take("sw0");
        wan.run(|| {
            no_ipv6();
            ip(&["addr", "add", "203.0.113.1/24", "dev", "sw0"]);
            ip(&["link", "set", "sw0", "up"]);
        });

        let cfg = EbpfConfig {
            bpffs: bpffs.0.clone(),
            conntrack_max: 4096,
            nat_max: 4096,
            snat_ports: PortRange {
                start: 61000,
                end: 65535,
            },
        };
        let mut lab = Lab {
            servers,
            container,
            wan,
            dp: None,
            cfg,
            bpffs,
            cgroup,
        };
        lab.open();
        lab
    }

    /// Opens (or reopens, as a restarted daemon does) the dataplane and programs it.
    fn open(&mut self) {
        let mut dp = EbpfDataplane::open(&self.cfg).expect("opening the eBPF dataplane");
        let net = network();
        let att = Attachment {
            network: net.name.clone(),
            ip: CONTAINER,
            mac: MacAddr::from_ipv4(CONTAINER),
            host_ifname: "sh0".into(),
            ifname: "sc0".into(),
        };
        let bridge = ifindex("sbr0");
        let uplink = UplinkView {
            ifindex: ifindex("su0"),
            ifname: "su0".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec![UPLINK],
            snat_ip: None,
            peer_ingress: false,
        };
        dp.set_uplink(&uplink).expect("set_uplink");
        dp.add_network(&NetworkView {
            network: &net,
            bridge_ifindex: bridge,
        })
        .expect("add_network");
        let ep = EndpointView {
            endpoint: "c1",
            network: &net,
            attachment: &att,
            host_ifindex: ifindex("sh0"),
            bridge_ifindex: bridge,
        };
        dp.add_endpoint(&ep).expect("add_endpoint");
        for p in &publications() {
            dp.publish(&PublicationView {
                publication: p,
                network: &net,
                container_ip: CONTAINER,
            })
            .unwrap_or_else(|e| panic!("publishing {p}: {e}"));
        }
        let attached = dp
            .attach_host_access(Some(&self.cgroup.0))
            .expect("attach_host_access");
        assert_eq!(attached, self.cgroup.0);
        self.dp = Some(dp);
    }

    fn cgroup(&self) -> &Path {
        &self.cgroup.0
    }

    /// The socket link pins under the bpffs directory, sorted.
    fn sock_pins(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.bpffs.0.join(LINKS_DIR))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.retain(|n| n.starts_with("sock-"));
        v.sort();
        v
    }

    /// (pin name, link id, program id) of every socket link pin.
    fn link_ids(&self) -> Vec<(String, u32, u32)> {
        use aya::programs::links::{FdLink, PinnedLink};
        self.sock_pins()
            .into_iter()
            .map(|name| {
                let path = self.bpffs.0.join(LINKS_DIR).join(&name);
                let link = FdLink::from(
                    PinnedLink::from_pin(&path).unwrap_or_else(|e| panic!("{name}: {e}")),
                );
                let info = link
                    .info()
                    .unwrap_or_else(|e| panic!("link info of {name}: {e}"));
                (name, info.id(), info.program_id())
            })
            .collect()
    }
}

/// What the container's server answers to `msg` from the gateway's port `client_port`
/// on its `port`.
fn answer(proto: &str, port: u16, client_port: u16, msg: &str) -> String {
    format!("{proto} {CONTAINER}:{port} saw {GATEWAY}:{client_port}: {msg}")
}

/// TCP to `dst` from the test cgroup reaches container port `port`; the bytes go both
/// ways and getpeername() shows `dst`.
fn assert_tcp_reaches(lab: &Lab, dst: SocketAddrV4, port: u16) {
    let s = tcp_connect(lab.cgroup(), dst).unwrap_or_else(|e| panic!("TCP connect to {dst}: {e}"));
    assert_eq!(
        s.peer_addr().unwrap(),
        SocketAddr::V4(dst),
        "getpeername() after connecting to {dst}"
    );
    let local = s.local_addr().unwrap();
    assert_eq!(
        local.ip(),
        GATEWAY,
        "the kernel routed the translated connection over the bridge"
    );
    let msg = format!("hello {dst}");
    let got = tcp_exchange(s, &msg);
    let want = answer("tcp", port, local.port(), &msg);
    assert_eq!(got, want, "answer through {dst}");
    assert!(
        lab.servers.received().contains(&want),
        "the server logged {want:?}: {:?}",
        lab.servers.received()
    );
}

/// Unconnected UDP to `dst` reaches container port 80 and the answer comes from `dst`.
fn assert_udp_reaches(lab: &Lab, dst: SocketAddrV4) {
    let s = udp_socket(lab.cgroup());
    let msg = format!("datagram to {dst}");
    let (got, from) = udp_exchange(&s, dst, &msg);
    let want = answer("udp", 80, s.local_addr().unwrap().port(), &msg);
    assert_eq!(got, want, "UDP answer through {dst}");
    assert_eq!(
        from,
        SocketAddr::V4(dst),
        "recvfrom() shows the address the datagram was sent to"
    );
    assert!(lab.servers.received().contains(&want));
}

fn refused(r: io::Result<TcpStream>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{what}: {e}"),
        Ok(s) => panic!("{what}: connected to {:?}", s.peer_addr()),
    }
}

#[test]
fn finds_the_v2_hierarchy_and_the_namespace_cookie() {
    let root = default_cgroup().expect("this machine has a cgroup v2 hierarchy");
    assert!(is_cgroup2(&root), "{} is not cgroup2", root.display());
    assert!(!is_cgroup2(Path::new("/proc")), "/proc is not a cgroup");
    let here = netns_cookie().expect("SO_NETNS_COOKIE");
    assert_ne!(here, 0);
    assert_eq!(netns_cookie().unwrap(), here, "the cookie is stable");
    let other = in_netns(|| netns_cookie().expect("SO_NETNS_COOKIE in a new namespace"));
    assert_ne!(other, here, "another namespace has another cookie");
}

/// TCP, connected and unconnected UDP from the host reach the container through
/// 127.0.0.0/8, the uplink address and the gateway, singles and ranges, and the process
/// sees the address it used.
#[test]
fn host_reaches_published_ports_over_tcp_and_udp() {
    in_netns(|| {
        let lab = Lab::new();
        assert_eq!(
            lab.sock_pins().len(),
            4,
            "one pinned link per hook: {:?}",
            lab.sock_pins()
        );
        assert_tcp_reaches(&lab, v4(LOOPBACK, PUBLISHED), 80);
        assert_tcp_reaches(&lab, v4(Ipv4Addr::new(127, 0, 0, 2), PUBLISHED), 80);
        assert_tcp_reaches(&lab, v4(UPLINK, PUBLISHED), 80);
        assert_tcp_reaches(&lab, v4(GATEWAY, PUBLISHED), 80);
        assert_tcp_reaches(&lab, v4(LOOPBACK, LOCAL_ONLY), 80);
        assert_tcp_reaches(&lab, v4(LOOPBACK, RANGE + 1), 81);
        assert_tcp_reaches(&lab, v4(UPLINK, RANGE), 80);
        assert_udp_reaches(&lab, v4(LOOPBACK, PUBLISHED));
        assert_udp_reaches(&lab, v4(UPLINK, PUBLISHED));

        // Connected UDP: connect() is translated, send()/recv() need nothing more, and
        // getpeername()/recvfrom() show the published address.
        let dst = v4(LOOPBACK, PUBLISHED);
        let s = udp_socket(lab.cgroup());
        s.connect(dst).expect("connecting UDP");
        assert_eq!(s.peer_addr().unwrap(), SocketAddr::V4(dst));
        s.send(b"connected").expect("send on connected UDP");
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).expect("an answer on connected UDP");
        let want = answer("udp", 80, s.local_addr().unwrap().port(), "connected");
        assert_eq!(String::from_utf8_lossy(&buf[..n]), want);
        assert_eq!(from, SocketAddr::V4(dst));
    });
}

/// Unpublished ports, ports published on another address, and sockets of another
/// namespace in the same cgroup are left alone; a port published on 127.0.0.1 is not
/// reachable from the wan, while the wildcard one is.
#[test]
fn translates_only_published_ports_of_the_daemons_namespace() {
    in_netns(|| {
        let lab = Lab::new();
        let cg = lab.cgroup().to_path_buf();
        refused(
            tcp_connect(&cg, v4(LOOPBACK, UNPUBLISHED)),
            "an unpublished port on 127.0.0.1",
        );
        refused(
            tcp_connect(&cg, v4(UPLINK, UNPUBLISHED)),
            "an unpublished port on the uplink",
        );
        refused(
            tcp_connect(&cg, v4(UPLINK, LOCAL_ONLY)),
            "a 127.0.0.1 port on the uplink address",
        );
        refused(
            tcp_connect(&cg, v4(GATEWAY, LOCAL_ONLY)),
            "a 127.0.0.1 port on the gateway",
        );
        refused(
            tcp_connect(&cg, v4(LOOPBACK, RANGE + 2)),
            "a port after the range",
        );
        assert!(
            lab.servers.received().is_empty(),
            "nothing reached the container: {:?}",
            lab.servers.received()
        );

        // Another namespace, same cgroup: its own 127.0.0.1 answers, not the container.
        let other = NsThread::new();
        let (got, peer, port) = other.run(move || {
            ip(&["link", "set", "lo", "up"]);
            let local = Servers::start(&[v4(LOOPBACK, PUBLISHED)]);
            let s = tcp_connect(&cg, v4(LOOPBACK, PUBLISHED))
                .expect("connecting in the other namespace");
            let peer = s.peer_addr().unwrap();
            let port = s.local_addr().unwrap().port();
            let got = tcp_exchange(s, "other");
            drop(local);
            (got, peer, port)
        });
        assert_eq!(
            got,
            format!("tcp {LOOPBACK}:{PUBLISHED} saw {LOOPBACK}:{port}: other")
        );
        assert_eq!(peer, SocketAddr::V4(v4(LOOPBACK, PUBLISHED)));
        assert!(
            lab.servers.received().is_empty(),
            "the other namespace reached the container: {:?}",
            lab.servers.received()
        );

        // Nor does a container reach the 127.0.0.1 port through the host's addresses.
        let from_container = lab.container.run(|| {
            let c = |ip| TcpStream::connect_timeout(&SocketAddr::V4(v4(ip, LOCAL_ONLY)), TIMEOUT);
            [c(GATEWAY), c(UPLINK)]
        });
        for r in from_container {
            refused(r, "a container to the 127.0.0.1 port");
        }
        assert!(
            lab.servers.received().is_empty(),
            "{:?}",
            lab.servers.received()
        );

        // The wan reaches the wildcard port (so the path works) but not the 127.0.0.1 one.
        let (wild, local_only) = lab.wan.run(|| {
            let c = |port| TcpStream::connect_timeout(&SocketAddr::V4(v4(UPLINK, port)), TIMEOUT);
            let wild = c(PUBLISHED).map(|s| {
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                tcp_exchange(s, "from the wan")
            });
            (wild, c(LOCAL_ONLY).map(|s| s.peer_addr().ok()))
        });
        let wild = wild.expect("the wan reaches the port published on every address");
        assert!(
            wild.starts_with(&format!("tcp {CONTAINER}:80 saw {WAN}:")),
            "{wild}"
        );
        match local_only {
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED),
                "wan to the 127.0.0.1 port: {e}"
            ),
            Ok(p) => panic!("the wan reached the port published on 127.0.0.1 ({p:?})"),
        }
        assert_eq!(
            lab.servers.received().len(),
            1,
            "only the wildcard connection arrived: {:?}",
            lab.servers.received()
        );
    });
}

/// A restarted daemon swaps its programs into the pinned links (same links, new
/// programs) and keeps the reverse entries of sockets translated before; moving to
/// another cgroup detaches the old links; detach and cleanup remove them.
#[test]
fn links_survive_a_restart_and_are_removed_by_cleanup() {
    in_netns(|| {
        let mut lab = Lab::new();
        let dst = v4(LOOPBACK, PUBLISHED);
        let udp = udp_socket(lab.cgroup());
        udp.connect(dst).expect("connecting UDP");
        let tcp = tcp_connect(lab.cgroup(), dst).expect("connecting TCP");
        let before = lab.link_ids();
        assert_eq!(before.len(), 4);

        // The daemon is down: the pinned links keep translating.
        lab.dp = None;
        assert_tcp_reaches(&lab, dst, 80);
        assert_udp_reaches(&lab, dst);
        lab.open();
        let after = lab.link_ids();
        assert_eq!(after.len(), 4);
        for ((name, link, prog), (name2, link2, prog2)) in before.iter().zip(&after) {
            assert_eq!((name, link), (name2, link2), "the same pinned link");
            assert_ne!(prog, prog2, "{name} runs the new program");
        }
        assert_eq!(
            udp.peer_addr().unwrap(),
            SocketAddr::V4(dst),
            "UDP peer after the restart"
        );
        assert_eq!(
            tcp.peer_addr().unwrap(),
            SocketAddr::V4(dst),
            "TCP peer after the restart"
        );
        udp.send(b"again").unwrap();
        let mut buf = [0u8; 512];
        let (_, from) = udp
            .recv_from(&mut buf)
            .expect("an answer after the restart");
        assert_eq!(from, SocketAddr::V4(dst));
        let want = answer("tcp", 80, tcp.local_addr().unwrap().port(), "kept");
        assert_eq!(
            tcp_exchange(tcp, "kept"),
            want,
            "a connection made before the restart"
        );
        assert_tcp_reaches(&lab, dst, 80);

        // Another cgroup: the old one's links go.
        let moved = TestCgroup::create();
        let ino = fs::metadata(&moved.0).unwrap().ino();
        lab.dp
            .as_mut()
            .unwrap()
            .attach_host_access(Some(&moved.0))
            .expect("attaching to another cgroup");
        let pins = lab.sock_pins();
        assert_eq!(pins.len(), 4, "{pins:?}");
        assert!(
            pins.iter().all(|p| p.starts_with(&format!("sock-{ino}-"))),
            "{pins:?}"
        );
        refused(
            tcp_connect(lab.cgroup(), dst),
            "the old cgroup after moving",
        );
        let s = tcp_connect(&moved.0, dst).expect("connecting from the new cgroup");
        assert_eq!(s.peer_addr().unwrap(), SocketAddr::V4(dst));
        drop(s);

        assert_eq!(
            EbpfDataplane::detach_host_access(&lab.cfg.bpffs).expect("detach"),
            4
        );
        assert!(lab.sock_pins().is_empty());
        refused(tcp_connect(&moved.0, dst), "after detach_host_access");

        let cg = lab.cgroup.0.clone();
        lab.dp
            .as_mut()
            .unwrap()
            .attach_host_access(Some(&cg))
            .expect("attaching again");
        assert_tcp_reaches(&lab, dst, 80);
        lab.dp = None;
        EbpfDataplane::cleanup(&lab.cfg.bpffs).expect("cleanup");
        assert!(
            lab.sock_pins().is_empty(),
            "cleanup removed the socket links"
        );
        refused(tcp_connect(lab.cgroup(), dst), "after cleanup");
    });
}
