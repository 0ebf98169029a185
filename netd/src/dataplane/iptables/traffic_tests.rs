//! Privileged traffic test: the rules carry real TCP between a fake wan, a fake host
//! running the dataplane, and a container, each a network namespace owned by a worker
//! thread. Asserts what the server saw as its peer, which is what NAT is about.

use std::{
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::RouteNetlinkMessage,
};

use super::{
    tests::{attachment, ifindex, network, new_link, publication, require_root, rtnl},
    *,
};

type Job = Box<dyn FnOnce() + Send>;

/// A thread that lives in its own network namespace and runs jobs there. Dropping it
/// ends the thread; the namespace goes with its last user.
struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    /// Holds the namespace for moving links into it.
    fd: File,
    thread: Option<JoinHandle<()>>,
}

impl Netns {
    fn new() -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (fd_tx, fd_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            fd_tx
                .send(File::open("/proc/thread-self/ns/net").expect("open own netns"))
                .expect("send netns fd");
            new_link(LinkUnspec::new_with_index(1).up().build(), false);
            for job in rx {
                job();
            }
        });
        let fd = fd_rx.recv().expect("netns worker started");
        Netns {
            jobs: Some(jobs),
            fd,
            thread: Some(thread),
        }
    }

    /// Run `f` in the namespace and return its result.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .as_ref()
            .expect("worker alive")
            .send(job)
            .expect("netns worker alive");
        rx.recv()
            .expect("the job panicked in its namespace (see its message above)")
    }

    fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn add_addr(ifname: &str, ip: Ipv4Addr, prefix: u8) {
    let msg = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(ifindex(ifname))
        .address(ip, prefix)
        .build();
    rtnl(RouteNetlinkMessage::NewAddress(msg), true);
    new_link(
        LinkUnspec::new_with_index(ifindex(ifname)).up().build(),
        false,
    );
}

fn add_route(dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix)
        .gateway(gateway)
        .build();
    rtnl(RouteNetlinkMessage::NewRoute(msg), true);
}

/// Serve `count` connections on `addr` (bound now), answering each with the peer address
/// it saw. Gives up after a deadline so a broken path fails the test instead of hanging.
fn peer_echo_server(addr: &str, count: usize, patience: Duration) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).expect("bind test server");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    std::thread::spawn(move || {
        let deadline = Instant::now() + patience;
        let mut served = 0;
        while served < count && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    let _ = s.write_all(format!("{peer}\n").as_bytes());
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// Connect to `to` and return the peer address the server reported.
fn seen_by_server(to: &str) -> std::io::Result<String> {
    let addr: SocketAddr = to.parse().expect("socket address");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.trim().to_string())
}

fn ip_of(peer: &str) -> &str {
    peer.split(':').next().unwrap_or_default()
}

/// host: bridge br-t 192.0.2.1/24 with the container's veth, uplink up0 203.0.113.1/24;
/// container: 192.0.2.2 behind the bridge; wan: 203.0.113.2 behind the uplink.
fn topology() -> (Netns, Netns, Netns) {
    require_root();
    let (host, ctr, wan) = (Netns::new(), Netns::new(), Netns::new());
    let (ctr_fd, wan_fd) = (ctr.raw_fd(), wan.raw_fd());
    host.run(move || {
        new_link(LinkBridge::new("br-t").up().build(), true);
        add_addr("br-t", Ipv4Addr::new(192, 0, 2, 1), 24);
        new_link(LinkVeth::new("vh-t", "vc-t").build(), true);
        new_link(
            LinkUnspec::new_with_index(ifindex("vh-t"))
                .controller(ifindex("br-t"))
                .up()
                .build(),
            false,
        );
        new_link(
            LinkUnspec::new_with_index(ifindex("vc-t"))
                .setns_by_fd(ctr_fd)
                .build(),
            false,
        );
        new_link(LinkVeth::new("up0", "uw0").build(), true);
        add_addr("up0", Ipv4Addr::new(203, 0, 113, 1), 24);
        new_link(
            LinkUnspec::new_with_index(ifindex("uw0"))
                .setns_by_fd(wan_fd)
                .build(),
            false,
        );
        kernel::write_sysctl("net.ipv4.ip_forward", "1").unwrap();
    });
    ctr.run(|| {
        add_addr("vc-t", Ipv4Addr::new(192, 0, 2, 2), 24);
        add_route(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(192, 0, 2, 1));
    });
    wan.run(|| add_addr("uw0", Ipv4Addr::new(203, 0, 113, 2), 24));
    (host, ctr, wan)
}

#[test]
fn published_port_masquerade_and_hairpin_carry_traffic() {
    let (host, ctr, wan) = topology();
    host.run(|| {
        let net = network("br-t", "192.0.2.0/24");
        let ip = Ipv4Addr::new(192, 0, 2, 2);
        let (br, port) = (ifindex("br-t"), ifindex("vh-t"));
        let att = attachment(&net, ip, "vh-t");
        let publ = publication(&net, 8080, 80, None);
        let up = UplinkView {
            ifindex: ifindex("up0"),
            ifname: "up0".into(),
            mac: [0; 6],
            addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            snat_ip: None,
            peer_ingress: false,
        };
        let mut dp = IptablesDataplane::new(IptablesConfig::default());
        dp.set_uplink(&up).unwrap();
        dp.add_network(&NetworkView {
            network: &net,
            bridge_ifindex: br,
        })
        .unwrap();
        dp.add_endpoint(&EndpointView {
            endpoint: "c1",
            network: &net,
            attachment: &att,
            host_ifindex: port,
            bridge_ifindex: br,
        })
        .unwrap();
        dp.publish(&PublicationView {
            publication: &publ,
            network: &net,
            container_ip: ip,
        })
        .unwrap();
        // Dropping the dataplane leaves the rules in place, as a daemon exit does.
    });
    let server = ctr.run(|| peer_echo_server("0.0.0.0:80", 3, Duration::from_secs(20)));

    // wan -> published port: DNAT, and the container sees the real client address.
    let peer = wan
        .run(|| seen_by_server("203.0.113.1:8080"))
        .expect("wan reaches the published port");
    assert_eq!(
        ip_of(&peer),
        "203.0.113.2",
        "client address must be preserved"
    );
    // host -> 127.0.0.1:published: OUTPUT DNAT with route_localnet, masqueraded to the bridge.
    let peer = host
        .run(|| seen_by_server("127.0.0.1:8080"))
        .expect("host reaches 127.0.0.1:8080");
    assert_eq!(ip_of(&peer), "192.0.2.1");
    // container -> its own published port on the host address: hairpin DNAT + MASQUERADE.
    let peer = ctr
        .run(|| seen_by_server("203.0.113.1:8080"))
        .expect("hairpin to own published port");
    assert_eq!(ip_of(&peer), "192.0.2.1");
    server.join().unwrap();

    // container -> wan: masqueraded to the uplink address.
    let wan_server = wan.run(|| peer_echo_server("203.0.113.2:9000", 1, Duration::from_secs(20)));
    let peer = ctr
        .run(|| seen_by_server("203.0.113.2:9000"))
        .expect("container reaches the wan");
    assert_eq!(
        ip_of(&peer),
        "203.0.113.1",
        "outbound traffic must be masqueraded"
    );
    wan_server.join().unwrap();

    // wan -> container address directly, to a listening server: dropped in raw
    // PREROUTING, and counted (so the failure is the drop, not a missing listener).
    wan.run(|| {
        add_route(
            Ipv4Addr::new(192, 0, 2, 0),
            24,
            Ipv4Addr::new(203, 0, 113, 1),
        )
    });
    let server = ctr.run(|| peer_echo_server("0.0.0.0:80", 1, Duration::from_secs(5)));
    let direct = wan.run(|| seen_by_server("192.0.2.2:80"));
    assert!(
        direct.is_err(),
        "direct access to the container must be dropped, got {direct:?}"
    );
    server.join().unwrap();
    let save = host.run(|| kernel::iptables_save(true).unwrap());
    let dropped = drop_counters(&save)
        .into_iter()
        .find(|d| d.reason == "direct_access_to_container")
        .map(|d| d.packets);
    assert!(
        dropped.unwrap_or(0) >= 1,
        "raw drop counter: {dropped:?}\n{save}"
    );
}
