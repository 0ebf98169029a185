//! Removing things removes everything they were made of, and a failed create leaves
//! nothing behind.

use netd_tests::{
    Lab, NetnsGuard,
    cli::{EXIT_API, first_ip},
    process::{ip, links},
};

#[test]
fn endpoint_rm_leaves_no_link_namespace_or_address() {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", "10.20.0.0/24"]);
    let before = lab.snapshot();
    let a = lab.name("a");
    let info = lab.endpoint_create(&a, "app", &[]);
    let host_if = info["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    let a_ip = first_ip(&info);
    assert!(lab.host_links().contains(&host_if));
    assert!(lab.netns_path(&a).exists());

    let out = lab.netd_ok(&["endpoint", "rm", &a]);
    assert_eq!(out.trim(), a);
    assert!(
        !lab.host_links().contains(&host_if),
        "{host_if} left in the host namespace"
    );
    assert!(!lab.netns_path(&a).exists(), "namespace {a} left behind");
    let neighbours = ip(&["-n", lab.host().name(), "neigh", "show", &a_ip.to_string()]).unwrap();
    assert!(
        !neighbours.contains("PERMANENT"),
        "a static neighbour for {a_ip} is left: {neighbours}"
    );
    assert_eq!(
        lab.snapshot(),
        before,
        "endpoint rm must restore the state before create"
    );

    // Its address is free again: IPAM hands it out once the rest of the pool is used.
    let b = lab.name("b");
    let b_ip = first_ip(&lab.endpoint_create(&b, "app", &["--ip", &a_ip.to_string()]));
    assert_eq!(b_ip, a_ip);
}

#[test]
fn network_rm_leaves_no_bridge_or_address() {
    let lab = Lab::new();
    let before = lab.snapshot();
    let net = lab.network_create("gone", &["--subnet", "10.21.0.0/24"]);
    let bridge = net["bridge"].as_str().unwrap().to_string();
    assert!(lab.host_links().contains(&bridge));
    let a = lab.name("a");
    lab.endpoint_create(&a, "gone", &[]);
    lab.netd_ok(&["endpoint", "rm", &a]);

    let out = lab.netd_ok(&["network", "rm", "gone"]);
    assert_eq!(out.trim(), "gone");
    assert!(
        !lab.host_links().contains(&bridge),
        "bridge {bridge} left behind"
    );
    assert!(
        !lab.host_addrs()
            .iter()
            .any(|(_, a)| a.starts_with("10.21.0.")),
        "{:?}",
        lab.host_addrs()
    );
    assert_eq!(lab.snapshot(), before);
    // The name and the subnet can be used again.
    lab.network_create("gone", &["--subnet", "10.21.0.0/24"]);
}

#[test]
fn a_failed_endpoint_create_leaves_no_veth() {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", "10.22.0.0/24"]);
    // A runtime's namespace that already has an eth0: moving the endpoint's veth in as
    // eth0 fails after the veth pair exists, so the create must roll it back.
    let runtime_ns = NetnsGuard::new().unwrap();
    ip(&[
        "-n",
        runtime_ns.name(),
        "link",
        "add",
        "eth0",
        "type",
        "bridge",
    ])
    .unwrap();
    let before = lab.snapshot();
    let name = lab.name("clash");
    let path = runtime_ns.path();
    let out = lab.netd(&[
        "endpoint",
        "create",
        &name,
        "--network",
        "app",
        "--netns",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.code, EXIT_API, "{out}");
    assert!(
        out.stderr.contains("eth0"),
        "the message should name the clashing eth0: {out}"
    );
    assert_eq!(
        lab.snapshot(),
        before,
        "the failed create left something behind"
    );
    assert_eq!(
        links(runtime_ns.name()).unwrap(),
        ["lo", "eth0"],
        "the runtime's namespace changed"
    );

    // The address it had reserved is free for the next endpoint.
    let ok = lab.endpoint_create(&lab.name("next"), "app", &[]);
    assert_eq!(first_ip(&ok).octets()[..3], [10, 22, 0]);
}
