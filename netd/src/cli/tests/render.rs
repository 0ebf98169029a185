//! Rendering of tables and mappings, from fixed API replies.

use std::net::Ipv4Addr;

use crate::{
    api::types::{EndpointInfo, NetworkInfo, PublicationInfo},
    cli::{endpoint, network, port, stats},
    dataplane::{
        DataplaneStats, DropCounter, Flow, InterfaceCounters, PortCounters, TableOccupancy,
    },
    model::{Attachment, Endpoint, MacAddr, NetnsRef, Network, PortRange, Proto, Publication},
};

fn network(name: &str, id: u32, subnet: &str) -> Network {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    Network {
        name: name.into(),
        id,
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: format!("nd-{name}"),
    }
}

fn publication(
    host_ip: Option<Ipv4Addr>,
    host: PortRange,
    container: PortRange,
    proto: Proto,
) -> Publication {
    Publication {
        endpoint: "web".into(),
        network: "netd0".into(),
        proto,
        host_ip,
        host_ports: host,
        container_ports: container,
    }
}

#[test]
fn renders_networks() {
    let mut blue = network("blue", 12, "10.1.0.0/24");
    blue.internal = true;
    blue.icc = false;
    blue.mtu = 9000;
    let list = [
        NetworkInfo {
            network: network("netd0", 1, "172.17.0.0/16"),
            endpoints: vec![("web".into(), Ipv4Addr::new(172, 17, 0, 2))],
        },
        NetworkInfo {
            network: blue,
            endpoints: vec![],
        },
    ];
    assert_eq!(
        network::render_list(&list),
        "NAME    ID   SUBNET          GATEWAY      BRIDGE      MTU   ENDPOINTS   OPTIONS\n\
         netd0    1   172.17.0.0/16   172.17.0.1   nd-netd0   1500           1   -\n\
         blue    12   10.1.0.0/24     10.1.0.1     nd-blue    9000           0   internal,icc=false\n"
    );
}

#[test]
fn renders_endpoints_with_all_attachments_and_ports() {
    let att = |network: &str, ip: Ipv4Addr, ifname: &str| Attachment {
        network: network.into(),
        ip,
        mac: MacAddr::from_ipv4(ip),
        host_ifname: "vh0".into(),
        ifname: ifname.into(),
    };
    let web = EndpointInfo {
        endpoint: Endpoint {
            name: "web".into(),
            netns: NetnsRef {
                path: "/run/netns/web".into(),
                owned: true,
            },
            attachments: vec![
                att("netd0", Ipv4Addr::new(172, 17, 0, 2), "eth0"),
                att("blue", Ipv4Addr::new(10, 1, 0, 2), "eth1"),
            ],
        },
        publications: vec![
            publication(
                None,
                PortRange::single(8080),
                PortRange::single(80),
                Proto::Tcp,
            ),
            publication(
                Some(Ipv4Addr::LOCALHOST),
                PortRange {
                    start: 5300,
                    end: 5301,
                },
                PortRange { start: 53, end: 54 },
                Proto::Udp,
            ),
        ],
    };
    assert_eq!(
        endpoint::render_list(&[web]),
        "NAME   NETWORKS     ADDRESSES             NETNS            PORTS\n\
         web    netd0,blue   172.17.0.2,10.1.0.2   /run/netns/web   0.0.0.0:8080->80/tcp, 127.0.0.1:5300-5301->53-54/udp\n"
    );
}

#[test]
fn renders_publications() {
    let info = |p| PublicationInfo {
        publication: p,
        container_ip: Ipv4Addr::new(172, 17, 0, 2),
    };
    let list = [
        info(publication(
            None,
            PortRange::single(32768),
            PortRange::single(80),
            Proto::Tcp,
        )),
        info(publication(
            Some(Ipv4Addr::LOCALHOST),
            PortRange {
                start: 8000,
                end: 8010,
            },
            PortRange { start: 80, end: 90 },
            Proto::Udp,
        )),
    ];
    assert_eq!(
        port::render_mappings(&list),
        "0.0.0.0:32768->80/tcp\n127.0.0.1:8000-8010->80-90/udp\n"
    );
    assert_eq!(
        port::render_list(&list),
        "ENDPOINT   PROTO   HOST                  CONTAINER\n\
         web        tcp     0.0.0.0:32768         172.17.0.2:80\n\
         web        udp     127.0.0.1:8000-8010   172.17.0.2:80-90\n"
    );
}

#[test]
fn renders_stats_sections() {
    let stats = DataplaneStats {
        dataplane: "ebpf".into(),
        interfaces: vec![InterfaceCounters {
            ifindex: 4,
            ifname: "eth9".into(),
            rx_packets: 3,
            rx_bytes: 180,
            tx_packets: 12,
            tx_bytes: 1024,
        }],
        drops: vec![DropCounter {
            reason: "spoofed_source".into(),
            packets: 7,
        }],
        ports: vec![PortCounters {
            publication: "0.0.0.0:8080->web:80/tcp".into(),
            packets: 5,
            bytes: 300,
        }],
        tables: vec![
            TableOccupancy {
                name: "conntrack".into(),
                entries: 1,
                capacity: 8,
            },
            TableOccupancy {
                name: "nat".into(),
                entries: 0,
                capacity: 0,
            },
        ],
    };
    assert_eq!(
        stats::render_stats(&stats),
        "Dataplane: ebpf\n\n\
         INTERFACE   IFINDEX   RX PACKETS   RX BYTES   TX PACKETS   TX BYTES\n\
         eth9              4            3        180           12       1024\n\n\
         DROP REASON      PACKETS\n\
         spoofed_source         7\n\n\
         PUBLICATION                PACKETS   BYTES\n\
         0.0.0.0:8080->web:80/tcp         5     300\n\n\
         TABLE       ENTRIES   CAPACITY     USE\n\
         conntrack         1          8   12.5%\n\
         nat               0          0       -\n"
    );
}

#[test]
fn renders_flows_and_durations() {
    let flow = Flow {
        proto: "tcp".into(),
        original: "172.17.0.2:40000 -> 198.51.100.1:80".into(),
        translated: "203.0.113.2:40000 -> 198.51.100.1:80".into(),
        state: "established".into(),
        age_secs: 65,
        expires_in_secs: 7440,
    };
    assert_eq!(
        stats::render_flows(&[flow]),
        "PROTO   ORIGINAL                              TRANSLATED                             STATE           AGE   EXPIRES IN\n\
         tcp     172.17.0.2:40000 -> 198.51.100.1:80   203.0.113.2:40000 -> 198.51.100.1:80   established   1m05s        2h04m\n"
    );
    let cases = [
        (0, "0s"),
        (59, "59s"),
        (60, "1m00s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (90_061, "1d01h"),
    ];
    for (secs, want) in cases {
        assert_eq!(stats::duration(secs), want);
    }
}
