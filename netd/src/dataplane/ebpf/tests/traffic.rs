//! Tier-3 tests inside this module: real TCP/UDP/ICMP between a wan namespace, a host
//! namespace running the dataplane, and two container namespaces on two networks,
//! asserting what the peers saw.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddrV4},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{
    harness::{TestBpffs, ifindex},
    topo::{Client, Ns, TIMEOUT, tcp_echo, udp_echo, udp_roundtrip},
};
use crate::{
    dataplane::{
        Dataplane, EndpointView, NetworkView, PublicationView, SyncView, UplinkView,
        ebpf::{EbpfConfig, EbpfDataplane},
    },
    model::{Attachment, MacAddr, Network, PortRange, Proto, Publication},
};

pub(super) const HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub(super) const C1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub(super) const C2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
pub(super) const GW2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

type Shared = Arc<Mutex<Option<EbpfDataplane>>>;

/// wan -- up0/host(brA, brB) -- c1 on A, c2 on B; tcp 8080 published to c2:80.
pub(super) struct World {
    wan: Ns,
    pub(super) host: Ns,
    pub(super) c1: Ns,
    pub(super) c2: Ns,
    dp: Shared,
    bpffs: PathBuf,
}

pub(super) fn network(id: u32, third: u8) -> Network {
    Network {
        name: format!("n{id}"),
        id,
        subnet: format!("10.{third}.0.0/24").parse().unwrap(),
        gateway: Ipv4Addr::new(10, third, 0, 1),
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: format!("br{id}"),
    }
}

fn attachment(net: &Network, ip: Ipv4Addr, host: &str) -> Attachment {
    Attachment {
        network: net.name.clone(),
        ip,
        mac: MacAddr::from_ipv4(ip),
        host_ifname: host.into(),
        ifname: "eth0".into(),
    }
}

/// Programs everything through `sync`, as a daemon does at start. Runs in the host ns.
fn program(dp: &mut EbpfDataplane) {
    let (n1, n2) = (network(1, 1), network(2, 2));
    let (a1, a2) = (attachment(&n1, C1, "h1"), attachment(&n2, C2, "h2"));
    let up = UplinkView {
        ifindex: ifindex("up0"),
        ifname: "up0".into(),
        mac: [0; 6],
        addrs: vec![HOST],
        snat_ip: None,
        peer_ingress: false,
    };
    dp.set_uplink(&up).expect("set_uplink");
    let publication = Publication {
        endpoint: "c2".into(),
        network: n2.name.clone(),
        proto: Proto::Tcp,
        host_ip: None,
        host_ports: PortRange::single(8080),
        container_ports: PortRange::single(80),
    };
    let all = SyncView {
        networks: vec![
            NetworkView {
                network: &n1,
                bridge_ifindex: ifindex("br1"),
            },
            NetworkView {
                network: &n2,
                bridge_ifindex: ifindex("br2"),
            },
        ],
        endpoints: vec![
            EndpointView {
                endpoint: "c1",
                network: &n1,
                attachment: &a1,
                host_ifindex: ifindex("h1"),
                bridge_ifindex: ifindex("br1"),
            },
            EndpointView {
                endpoint: "c2",
                network: &n2,
                attachment: &a2,
                host_ifindex: ifindex("h2"),
                bridge_ifindex: ifindex("br2"),
            },
        ],
        publications: vec![PublicationView {
            publication: &publication,
            network: &n2,
            container_ip: C2,
        }],
    };
    dp.sync(&all).expect("sync");
}

impl World {
    pub(super) fn new(bpffs: &Path) -> World {
        let (wan, host, c1, c2) = (
            Ns::new("wan"),
            Ns::new("host"),
            Ns::new("c1"),
            Ns::new("c2"),
        );
        host.sh(&[
            "ip link add br1 type bridge",
            "ip addr add 10.1.0.1/24 dev br1",
            "ip link set br1 up",
            "ip link add br2 type bridge",
            "ip addr add 10.2.0.1/24 dev br2",
            "ip link set br2 up",
            "ip link add up0 type veth peer name wan0",
            &format!("ip link set wan0 netns {}", wan.path),
            "ip addr add 203.0.113.2/24 dev up0",
            "ip link set up0 up",
            "ip route add default via 203.0.113.1",
            "sysctl -qw net.ipv4.ip_forward=1",
        ]);
        wan.sh(&[
            "ip addr add 203.0.113.1/24 dev wan0",
            "ip link set wan0 up",
            "ip route add 10.0.0.0/8 via 203.0.113.2",
        ]);
        for (ns, host_if, ip, br) in [(&c1, "h1", C1, "br1"), (&c2, "h2", C2, "br2")] {
            let peer = format!("{host_if}c");
            host.sh(&[
                &format!("ip link add {host_if} type veth peer name {peer}"),
                &format!("ip link set {peer} netns {}", ns.path),
                &format!("ip link set {host_if} master {br}"),
                &format!("ip link set {host_if} up"),
            ]);
            let o = ip.octets();
            ns.sh(&[
                &format!("ip link set {peer} address {}", MacAddr::from_ipv4(ip)),
                &format!("ip addr add {ip}/24 dev {peer}"),
                &format!("ip link set {peer} up"),
                &format!("ip route add default via {}.{}.{}.1", o[0], o[1], o[2]),
            ]);
        }
        let world = World {
            wan,
            host,
            c1,
            c2,
            dp: Arc::new(Mutex::new(None)),
            bpffs: bpffs.to_path_buf(),
        };
        world.open();
        world
    }

    /// Opens the dataplane (again) in the host namespace and programs it.
    fn open(&self) {
        let (dp, bpffs) = (self.dp.clone(), self.bpffs.clone());
        self.host.run(move || {
            let cfg = EbpfConfig {
                bpffs,
                conntrack_max: 4096,
                nat_max: 8192,
                snat_ports: PortRange {
                    start: 61000,
                    end: 61999,
                },
            };
            let mut d = EbpfDataplane::open(&cfg).expect("open");
            program(&mut d);
            *dp.lock().unwrap() = Some(d);
        });
    }

    /// Drops the dataplane object, as a killed daemon would; pins keep everything.
    fn close(&self) {
        let dp = self.dp.clone();
        self.host.run(move || drop(dp.lock().unwrap().take()));
    }

    pub(super) fn with_dp<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut EbpfDataplane) -> R + Send + 'static,
    ) -> R {
        let dp = self.dp.clone();
        self.host
            .run(move || f(dp.lock().unwrap().as_mut().expect("dataplane open")))
    }

    fn drops(&self, reason: &'static str) -> u64 {
        self.with_dp(move |dp| {
            dp.stats()
                .unwrap()
                .drops
                .iter()
                .find(|d| d.reason == reason)
                .unwrap()
                .packets
        })
    }
}

/// Sends `len` bytes and returns what the server counted (the server replies with the
/// byte count it read, as 8 bytes, after our half-close).
fn bulk(ns: &Ns, to: SocketAddrV4, len: usize) -> u64 {
    let mut c = Client::connect(ns, to).expect("connect for bulk transfer");
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    c.0.write_all(&data).expect("bulk write");
    c.0.shutdown(Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    c.0.read_exact(&mut n).expect("bulk count");
    u64::from_be_bytes(n)
}

/// A server that counts the bytes of one connection and checks their pattern.
fn counter(ns: &Ns, port: u16) -> std::thread::JoinHandle<Option<Ipv4Addr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || {
        let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        tx.send(std::thread::spawn(move || {
            let (mut s, peer) = l.accept().ok()?;
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut total = 0usize;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = s.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                assert!(
                    buf[..n]
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == ((total + i) % 251) as u8),
                    "corrupted stream"
                );
                total += n;
            }
            s.write_all(&(total as u64).to_be_bytes()).ok()?;
            match peer {
                std::net::SocketAddr::V4(a) => Some(*a.ip()),
                _ => None,
            }
        }))
        .unwrap();
    });
    rx.recv().unwrap()
}

#[test]
fn real_traffic_masquerade_published_ports_hairpin_isolation() {
    let bpffs = TestBpffs::mounted("traffic");
    let w = World::new(bpffs.path());

    // Masquerade: the wan sees the host's address; TCP, UDP (port kept) and ping work.
    let srv = tcp_echo(&w.wan, 9000, 1);
    let mut c = Client::connect(&w.c1, SocketAddrV4::new(WAN, 9000)).expect("c1 -> wan");
    assert_eq!(c.roundtrip(b"hi").unwrap(), b"echo:hi");
    drop(c);
    assert_eq!(
        *srv.join().unwrap()[0].0.ip(),
        HOST,
        "the wan server saw the masquerade address"
    );
    let usrv = udp_echo(&w.wan, 9001, 1);
    assert_eq!(
        udp_roundtrip(&w.c1, 5000, SocketAddrV4::new(WAN, 9001), b"udp").unwrap(),
        b"udp"
    );
    assert_eq!(usrv.join().unwrap()[0].0, SocketAddrV4::new(HOST, 5000));
    assert!(
        w.c1.ok("ping -c 1 -W 2 203.0.113.1"),
        "ICMP echo through masquerade"
    );

    // Published port from the wan: the container sees the client's real address.
    let web = tcp_echo(&w.c2, 80, 2);
    let mut c =
        Client::connect(&w.wan, SocketAddrV4::new(HOST, 8080)).expect("wan -> published port");
    assert_eq!(c.roundtrip(b"from wan").unwrap(), b"echo:from wan");
    drop(c);
    // Hairpin: c1 reaches c2's published port on the host address.
    let mut c = Client::connect(&w.c1, SocketAddrV4::new(HOST, 8080)).expect("hairpin");
    assert_eq!(c.roundtrip(b"hairpin").unwrap(), b"echo:hairpin");
    drop(c);
    let seen = web.join().unwrap();
    assert_eq!(
        *seen[0].0.ip(),
        WAN,
        "the published container saw the wan client"
    );
    assert_eq!(
        *seen[1].0.ip(),
        GW2,
        "hairpin is SNATed to the target network's gateway"
    );

    // Isolation: c1 cannot reach c2 directly, the wan cannot route to containers.
    let before = w.drops("isolation");
    assert!(Client::connect(&w.c1, SocketAddrV4::new(C2, 80)).is_err());
    assert!(w.drops("isolation") > before);
    let before = w.drops("wan_to_container");
    assert!(Client::connect(&w.wan, SocketAddrV4::new(C1, 22)).is_err());
    assert!(w.drops("wan_to_container") > before);

    // Bulk transfers, checksums verified by the receivers (rx checksumming off, so a
    // veth does not mark packets as verified). First the senders offload (GSO,
    // CHECKSUM_PARTIAL: the translated pseudo-header seed must be right when the checksum
    // is finally computed in software at the next hop), then they do not (complete
    // checksums: the incremental updates must be right).
    w.with_dp(|dp| {
        let p = Publication {
            endpoint: "c2".into(),
            network: "n2".into(),
            proto: Proto::Tcp,
            host_ip: None,
            host_ports: PortRange::single(8081),
            container_ports: PortRange::single(81),
        };
        dp.publish(&PublicationView {
            publication: &p,
            network: &network(2, 2),
            container_ip: C2,
        })
        .unwrap();
    });
    w.wan.sh(&["ethtool -K wan0 rx off"]);
    w.host.sh(&[
        "ethtool -K up0 tx off",
        "ethtool -K h1 tx off",
        "ethtool -K h2 tx off",
    ]);
    w.c1.sh(&["ethtool -K h1c rx off"]);
    w.c2.sh(&["ethtool -K h2c rx off"]);
    for (round, port) in [("offloaded", 9100u16), ("software", 9102)] {
        if round == "software" {
            w.wan.sh(&["ethtool -K wan0 tx off"]);
            w.c1.sh(&["ethtool -K h1c tx off"]);
            w.c2.sh(&["ethtool -K h2c tx off"]);
        }
        let cnt = counter(&w.wan, port);
        assert_eq!(
            bulk(&w.c1, SocketAddrV4::new(WAN, port), 2 << 20),
            2 << 20,
            "{round}: SNAT"
        );
        assert_eq!(cnt.join().unwrap(), Some(HOST), "{round}");
        let cnt = counter(&w.c2, 81);
        assert_eq!(
            bulk(&w.wan, SocketAddrV4::new(HOST, 8081), 2 << 20),
            2 << 20,
            "{round}: DNAT"
        );
        assert_eq!(cnt.join().unwrap(), Some(WAN), "{round}");
        let cnt = counter(&w.c2, 81);
        assert_eq!(
            bulk(&w.c1, SocketAddrV4::new(HOST, 8081), 1 << 20),
            1 << 20,
            "{round}: hairpin"
        );
        assert_eq!(cnt.join().unwrap(), Some(GW2), "{round}");
    }

    // Fast path: datagrams from the wan to a published port never pass the host's IP
    // forwarding (they go straight into the container's namespace).
    let dns = udp_echo(&w.c2, 53, 20);
    w.with_dp(|dp| {
        let p = Publication {
            endpoint: "c2".into(),
            network: "n2".into(),
            proto: Proto::Udp,
            host_ip: None,
            host_ports: PortRange::single(5353),
            container_ports: PortRange::single(53),
        };
        dp.publish(&PublicationView {
            publication: &p,
            network: &network(2, 2),
            container_ip: C2,
        })
        .unwrap();
    });
    let before = w.host.run(forwarded_datagrams);
    w.wan.run(|| {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        for _ in 0..20 {
            s.send_to(b"one way", SocketAddrV4::new(HOST, 5353))
                .unwrap();
        }
    });
    let seen = dns.join().unwrap();
    assert_eq!(seen.len(), 20, "the container received every datagram");
    // Neither the datagrams nor the answers are forwarded by the host stack (without the
    // fast paths that would be 40).
    let forwarded = w.host.run(forwarded_datagrams) - before;
    assert!(
        forwarded < 10,
        "known flows bypass the host stack ({forwarded} forwarded)"
    );

    let stats = w.with_dp(|dp| dp.stats().unwrap());
    let p = stats
        .ports
        .iter()
        .find(|p| p.publication.contains(":8080->"))
        .unwrap();
    assert!(p.packets >= 8, "{p:?}");
    drop(w);
    drop(bpffs);
}

#[test]
fn established_flows_survive_a_restart_and_cleanup_removes_everything() {
    let bpffs = TestBpffs::mounted("restart");
    let w = World::new(bpffs.path());
    let web = tcp_echo(&w.c2, 80, 1);
    let out = tcp_echo(&w.wan, 9000, 2);
    let mut inbound = Client::connect(&w.wan, SocketAddrV4::new(HOST, 8080)).unwrap();
    let mut outbound = Client::connect(&w.c1, SocketAddrV4::new(WAN, 9000)).unwrap();
    assert_eq!(inbound.roundtrip(b"1").unwrap(), b"echo:1");
    assert_eq!(outbound.roundtrip(b"1").unwrap(), b"echo:1");

    // The daemon goes away: pinned links and maps keep translating.
    w.close();
    assert_eq!(inbound.roundtrip(b"2").unwrap(), b"echo:2");
    assert_eq!(outbound.roundtrip(b"2").unwrap(), b"echo:2");
    // It comes back: same flows, same translations.
    w.open();
    assert_eq!(inbound.roundtrip(b"3").unwrap(), b"echo:3");
    assert_eq!(outbound.roundtrip(b"3").unwrap(), b"echo:3");
    let flows = w.with_dp(|dp| dp.conntrack().unwrap());
    assert!(
        flows.iter().any(
            |f| f.original.starts_with("10.1.0.2:") && f.translated.starts_with("203.0.113.2:")
        ),
        "{flows:?}"
    );
    drop((inbound, outbound));
    assert_eq!(*web.join().unwrap()[0].0.ip(), WAN);

    // Cleanup detaches everything: a new connection from c1 is no longer masqueraded
    // (the wan routes 10/8 back to the host, so it still connects).
    w.close();
    EbpfDataplane::cleanup(&w.bpffs).expect("cleanup");
    assert!(
        std::fs::read_dir(w.bpffs.join("maps")).is_err(),
        "no map pins left"
    );
    assert!(
        std::fs::read_dir(w.bpffs.join("links")).is_err(),
        "no link pins left"
    );
    let mut c = Client::connect(&w.c1, SocketAddrV4::new(WAN, 9000)).unwrap();
    assert_eq!(c.roundtrip(b"plain").unwrap(), b"echo:plain");
    drop(c);
    let seen = out.join().unwrap();
    assert_eq!(*seen[0].0.ip(), HOST);
    assert_eq!(*seen[1].0.ip(), C1, "after cleanup nothing translates");
    drop(w);
    drop(bpffs);
}

/// The host namespace's IP ForwDatagrams counter (/proc/net/snmp is per namespace).
fn forwarded_datagrams() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}
