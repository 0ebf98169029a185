//! A programmed dataplane in a private namespace, and a runner that pushes crafted frames
//! through its programs with BPF_PROG_TEST_RUN.

use std::{net::Ipv4Addr, path::Path};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use netd_common::{conntrack::FlowKey, nat::NatEntry};

use super::{
    harness::{Iface, ip, veth_pair},
    packet,
};
use crate::{
    dataplane::{
        Dataplane, EndpointView, NetworkView, PublicationView, UplinkView,
        ebpf::{
            EbpfConfig, EbpfDataplane,
            loader::{
                PROG_UPLINK_EGRESS, PROG_UPLINK_INGRESS, PROG_VETH_EGRESS, PROG_VETH_INGRESS,
            },
            netdev,
        },
    },
    model::{Attachment, MacAddr, Network, PortRange, Proto, Publication},
};

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;

pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const WAN_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

/// One container of the lab.
pub struct Container {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub veth: Iface,
    pub gateway: Ipv4Addr,
}

/// Which program a frame goes through.
#[derive(Clone, Copy)]
pub enum Hook {
    VethIngress,
    VethEgress,
    UplinkIngress,
    UplinkEgress,
}

/// Networks: A and B (masquerade), I (internal), N (icc off), M (masquerade off). Every
/// network has one container; A has two (c1, c3). Published: tcp 8080 -> c2:80, udp 5353
/// -> c2:53, tcp 20000-20009 -> c1:30000-30009.
pub struct Lab {
    pub dp: EbpfDataplane,
    pub uplink: Iface,
    pub c1: Container,
    pub c2: Container,
    pub c3: Container,
    pub ci: Container,
    pub cn: Container,
    pub cm: Container,
    pub bridge_b_mac: [u8; 6],
    pub networks: Vec<Network>,
    pub publications: Vec<(Publication, Ipv4Addr)>,
}

fn net(id: u32, name: &str, third: u8, f: impl FnOnce(&mut Network)) -> Network {
    let mut n = Network {
        name: name.into(),
        id,
        subnet: format!("10.{third}.0.0/24").parse().unwrap(),
        gateway: Ipv4Addr::new(10, third, 0, 1),
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: format!("br{name}"),
    };
    f(&mut n);
    n
}

impl Lab {
    /// Builds the lab in the calling thread's namespace (call inside `in_netns`).
    pub fn new(bpffs: &Path, snat_ports: PortRange) -> Lab {
        let networks = vec![
            net(1, "a", 1, |_| {}),
            net(2, "b", 2, |_| {}),
            net(3, "i", 3, |n| n.internal = true),
            net(4, "n", 4, |n| n.icc = false),
            net(5, "m", 5, |n| n.masquerade = false),
        ];
        let mut bridges = Vec::new();
        for n in &networks {
            ip(&["link", "add", &n.bridge, "type", "bridge"]);
            let c = std::ffi::CString::new(n.bridge.clone()).unwrap();
            // SAFETY: c is NUL-terminated.
            bridges.push(unsafe { libc::if_nametoindex(c.as_ptr()) });
        }
        let (uplink, _wan) = veth_pair("up0", "wan0");
        // Routing for the fast path's FIB lookups: the wan behind a resolved gateway.
        ip(&["addr", "add", "203.0.113.2/24", "dev", "up0"]);
        ip(&["route", "add", "default", "via", "203.0.113.1"]);
        ip(&[
            "neigh",
            "add",
            "203.0.113.1",
            "lladdr",
            "02:aa:00:00:00:01",
            "dev",
            "up0",
            "nud",
            "permanent",
        ]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .expect("enabling forwarding in the lab namespace");
        let mk = |n: &Network, host: &str, peer: &str, last: u8| {
            let ip = Ipv4Addr::new(10, n.subnet.network().octets()[1], 0, last);
            Container {
                ip,
                mac: MacAddr::from_ipv4(ip).0,
                veth: veth_pair(host, peer).0,
                gateway: n.gateway,
            }
        };
        let c1 = mk(&networks[0], "h1", "p1", 2);
        let c2 = mk(&networks[1], "h2", "p2", 2);
        let c3 = mk(&networks[0], "h3", "p3", 3);
        let ci = mk(&networks[2], "hi", "pi", 2);
        let cn = mk(&networks[3], "hn", "pn", 2);
        let cm = mk(&networks[4], "hm", "pm", 2);
        let cfg = EbpfConfig {
            bpffs: bpffs.to_path_buf(),
            conntrack_max: 4096,
            nat_max: 8192,
            snat_ports,
        };
        let mut dp = EbpfDataplane::open(&cfg).expect("open the dataplane");
        let up = UplinkView {
            ifindex: uplink.index,
            ifname: uplink.name.clone(),
            mac: [2, 0, 0, 0, 0, 2],
            addrs: vec![UPLINK_IP],
            snat_ip: None,
            peer_ingress: true,
        };
        dp.set_uplink(&up).expect("set_uplink");
        for (n, b) in networks.iter().zip(&bridges) {
            dp.add_network(&NetworkView {
                network: n,
                bridge_ifindex: *b,
            })
            .expect("add_network");
        }
        let bridge_b_mac = netdev::mac(bridges[1]).unwrap();
        let lab_eps = [(&c1, 0), (&c2, 1), (&c3, 0), (&ci, 2), (&cn, 3), (&cm, 4)];
        for (c, n) in lab_eps {
            let att = Attachment {
                network: networks[n].name.clone(),
                ip: c.ip,
                mac: MacAddr(c.mac),
                host_ifname: c.veth.name.clone(),
                ifname: "eth0".into(),
            };
            let v = EndpointView {
                endpoint: "ep",
                network: &networks[n],
                attachment: &att,
                host_ifindex: c.veth.index,
                bridge_ifindex: bridges[n],
            };
            dp.add_endpoint(&v).expect("add_endpoint");
        }
        let pubs = vec![
            (publication("c2", "b", Proto::Tcp, 8080, 8080, 80), c2.ip),
            (publication("c2", "b", Proto::Udp, 5353, 5353, 53), c2.ip),
            (
                publication("c1", "a", Proto::Tcp, 20000, 20009, 30000),
                c1.ip,
            ),
        ];
        let mut lab = Lab {
            dp,
            uplink,
            c1,
            c2,
            c3,
            ci,
            cn,
            cm,
            bridge_b_mac,
            networks,
            publications: Vec::new(),
        };
        for (p, ip) in pubs {
            lab.publish(p, ip);
        }
        lab
    }

    pub fn network(&self, name: &str) -> &Network {
        self.networks.iter().find(|n| n.name == name).unwrap()
    }

    pub fn publish(&mut self, p: Publication, container_ip: Ipv4Addr) {
        let network = self.network(&p.network).clone();
        self.dp
            .publish(&PublicationView {
                publication: &p,
                network: &network,
                container_ip,
            })
            .expect("publish");
        self.publications.push((p, container_ip));
    }

    /// Runs `frame` through the program of `hook` as if it crossed `ifindex`; returns the
    /// verdict and the frame as the program left it.
    pub fn run(&mut self, hook: Hook, ifindex: u32, frame: &[u8]) -> (i32, Vec<u8>) {
        self.run_received(hook, ifindex, 0, frame)
    }

    /// Like [`Lab::run`], for a frame that the host received on `ingress_ifindex` (0: one
    /// the host created itself), as a forwarded or redirected packet is.
    pub fn run_received(
        &mut self,
        hook: Hook,
        ifindex: u32,
        ingress_ifindex: u32,
        frame: &[u8],
    ) -> (i32, Vec<u8>) {
        let name = match hook {
            Hook::VethIngress => PROG_VETH_INGRESS,
            Hook::VethEgress => PROG_VETH_EGRESS,
            Hook::UplinkIngress => PROG_UPLINK_INGRESS,
            Hook::UplinkEgress => PROG_UPLINK_EGRESS,
        };
        let prog: &SchedClassifier = self.dp.ebpf.program(name).unwrap().try_into().unwrap();
        // struct __sk_buff up to and including `ifindex` (offset 40): the kernel runs
        // the program on that device; `ingress_ifindex` (36) becomes the skb's skb_iif.
        let mut ctx = [0u8; 44];
        ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value as i32, out)
    }

    pub fn up_in(&mut self, frame: &[u8]) -> (i32, Vec<u8>) {
        let i = self.uplink.index;
        self.run(Hook::UplinkIngress, i, frame)
    }

    pub fn up_out(&mut self, frame: &[u8]) -> (i32, Vec<u8>) {
        let i = self.uplink.index;
        self.run(Hook::UplinkEgress, i, frame)
    }

    /// Removes the NAT entry for the tuple `src -> dst` (as the LRU would evict it);
    /// whether it was there.
    pub fn remove_nat(&mut self, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> bool {
        self.dp.maps.nat.remove(&flow_key(src, dst, proto)).is_ok()
    }

    /// The NAT entry for the tuple `src -> dst`.
    pub fn nat(&self, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> NatEntry {
        self.dp
            .maps
            .nat
            .get(&flow_key(src, dst, proto), 0)
            .expect("a NAT entry")
    }

    /// Overwrites the NAT entry for the tuple `src -> dst`.
    pub fn set_nat(&mut self, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8, e: NatEntry) {
        self.dp
            .maps
            .nat
            .insert(flow_key(src, dst, proto), e, 0)
            .expect("writing a NAT entry");
    }

    /// Drops counted under `reason` so far.
    pub fn drops(&self, reason: &str) -> u64 {
        self.dp
            .stats()
            .unwrap()
            .drops
            .iter()
            .find(|d| d.reason == reason)
            .map(|d| d.packets)
            .unwrap_or_else(|| panic!("no drop reason {reason}"))
    }
}

fn publication(ep: &str, net: &str, proto: Proto, hs: u16, he: u16, cs: u16) -> Publication {
    Publication {
        endpoint: ep.into(),
        network: net.into(),
        proto,
        host_ip: None,
        host_ports: PortRange { start: hs, end: he },
        container_ports: PortRange {
            start: cs,
            end: cs + (he - hs),
        },
    }
}

/// A frame from a container (its own MACs) carrying `ip`.
pub fn from_container(c: &Container, ip: &packet::Ip) -> Vec<u8> {
    packet::eth([0x02, 0x42, 0, 0, 0, 1], c.mac, 0x0800, &ip.bytes())
}

/// The tuple `src -> dst` as the maps key it.
pub fn flow_key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> FlowKey {
    FlowKey {
        saddr_be: u32::from_ne_bytes(src.0.octets()),
        daddr_be: u32::from_ne_bytes(dst.0.octets()),
        sport_be: src.1.to_be(),
        dport_be: dst.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// A frame as the uplink carries it.
pub fn on_uplink(ip: &packet::Ip) -> Vec<u8> {
    packet::eth([0x02, 0, 0, 0, 0, 2], WAN_MAC, 0x0800, &ip.bytes())
}
