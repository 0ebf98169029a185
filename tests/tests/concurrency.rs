//! Concurrent CLI calls are serialized safely: all succeed, nothing is handed out twice.

use std::{collections::BTreeSet, net::Ipv4Addr, thread};

use netd_tests::{Lab, cli::first_ip, process::addrs};

#[test]
fn parallel_endpoint_creates_all_succeed_with_distinct_addresses() {
    let lab = Lab::new();
    lab.network_create("busy", &["--subnet", "10.70.0.0/24"]);
    let names: Vec<String> = (0..8).map(|i| lab.name(&format!("e{i}"))).collect();
    let ips: Vec<Ipv4Addr> = thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| s.spawn(|| first_ip(&lab.endpoint_create(n, "busy", &[]))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a create failed"))
            .collect()
    });
    let distinct: BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 8, "addresses handed out twice: {ips:?}");
    // Each namespace really carries its own address.
    for (name, ip) in names.iter().zip(&ips) {
        assert!(
            addrs(name)
                .unwrap()
                .contains(&("eth0".into(), format!("{ip}/24"))),
            "{name} lacks {ip}"
        );
    }
    let net = &lab.netd_json(&["network", "inspect", "busy"])[0];
    assert_eq!(net["endpoints"].as_array().unwrap().len(), 8, "{net}");
}

#[test]
fn parallel_network_creates_get_distinct_subnets() {
    let lab = Lab::new();
    let subnets: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let lab = &lab;
                s.spawn(move || {
                    lab.network_create(&format!("n{i}"), &[])["subnet"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a create failed"))
            .collect()
    });
    let distinct: BTreeSet<_> = subnets.iter().collect();
    assert_eq!(distinct.len(), 4, "subnets handed out twice: {subnets:?}");
}
