//! Every bad input gets its own clear error, a script-friendly exit code, and changes
//! nothing: the listings, the host's links and addresses and the namespaces stay as they
//! were.

use netd_tests::{
    Lab, Server,
    cli::{EXIT_API, EXIT_USAGE, assert_refused},
};

/// Run `netd ARGS...`, expect it refused with `code`, naming `names` and one of `problem`,
/// and expect nothing changed.
fn refused_args(lab: &Lab, args: &[&str], code: i32, names: &[&str], problem: &[&str]) {
    let before = lab.snapshot();
    let out = lab.netd(args);
    assert_refused(&out, code, names, problem);
    assert_eq!(
        lab.snapshot(),
        before,
        "`netd {}` changed something",
        args.join(" ")
    );
}

/// [`refused_args`] with the arguments as one line split at spaces.
fn refused(lab: &Lab, line: &str, code: i32, names: &[&str], problem: &[&str]) {
    let args: Vec<&str> = line.split_whitespace().collect();
    refused_args(lab, &args, code, names, problem);
}

const NOT_FOUND: &[&str] = &["not found", "no such", "unknown", "does not exist"];
const EXISTS: &[&str] = &["already exists", "already in use", "exists"];
const INVALID: &[&str] = &["invalid", "malformed", "not a valid"];
const OUTSIDE: &[&str] = &["outside", "doesn't contain", "does not contain", "not in"];

#[test]
fn unknown_networks_and_endpoints_are_not_found() {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", "10.30.0.0/24"]);
    let a = lab.name("a");
    for line in [
        format!("endpoint create {a} --network nosuch"),
        "network rm nosuch".into(),
        "network inspect nosuch".into(),
        "endpoint rm nosuch".into(),
        "endpoint inspect nosuch".into(),
        "port publish nosuch 8080:80".into(),
    ] {
        refused(&lab, &line, EXIT_API, &["nosuch"], NOT_FOUND);
    }
    lab.endpoint_create(&a, "app", &[]);
    refused(
        &lab,
        &format!("endpoint connect {a} nosuch"),
        EXIT_API,
        &["nosuch"],
        NOT_FOUND,
    );
}

#[test]
fn duplicate_names_are_refused() {
    let lab = Lab::new();
    lab.network_create("dup", &["--subnet", "10.31.0.0/24"]);
    refused(
        &lab,
        "network create dup --subnet 10.32.0.0/24",
        EXIT_API,
        &["dup"],
        EXISTS,
    );
    let a = lab.name("a");
    lab.endpoint_create(&a, "dup", &[]);
    refused(
        &lab,
        &format!("endpoint create {a} --network dup"),
        EXIT_API,
        &[&a],
        EXISTS,
    );
}

#[test]
fn subnet_and_gateway_errors() {
    let lab = Lab::new();
    lab.network_create("first", &["--subnet", "10.33.0.0/24"]);
    let overlap = &["overlap"];
    refused(
        &lab,
        "network create wide --subnet 10.33.0.0/16",
        EXIT_API,
        &["10.33.0.0/16"],
        overlap,
    );
    refused(
        &lab,
        "network create same --subnet 10.33.0.0/24",
        EXIT_API,
        &["10.33.0.0/24"],
        overlap,
    );
    let gw_outside = "network create gw --subnet 10.34.0.0/24 --gateway 10.35.0.1";
    refused(&lab, gw_outside, EXIT_API, &["10.35.0.1"], OUTSIDE);
    for bad in ["10.0.0.0/33", "banana", "10.0.0.1/24", "10.0.0/24"] {
        refused(
            &lab,
            &format!("network create bad --subnet {bad}"),
            EXIT_API,
            &[bad],
            INVALID,
        );
    }
    let bad_gw = "network create bad --subnet 10.36.0.0/24 --gateway 10.36.0.x";
    refused(&lab, bad_gw, EXIT_API, &["10.36.0.x"], INVALID);
    let range_outside = "network create bad --subnet 10.36.0.0/24 --ip-range 10.37.0.0/25";
    refused(&lab, range_outside, EXIT_API, &["10.37.0.0/25"], OUTSIDE);
}

#[test]
fn address_errors() {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", "10.38.0.0/24"]);
    let (a, b) = (lab.name("a"), lab.name("b"));
    let create = |name: &str, opts: &str| format!("endpoint create {name} --network app {opts}");
    refused(
        &lab,
        &create(&a, "--ip 10.99.0.5"),
        EXIT_API,
        &["10.99.0.5"],
        OUTSIDE,
    );
    refused(
        &lab,
        &create(&a, "--ip 10.38.0.300"),
        EXIT_API,
        &["10.38.0.300"],
        INVALID,
    );
    lab.endpoint_create(&a, "app", &["--ip", "10.38.0.10"]);
    let in_use = &["in use", "already"];
    refused(
        &lab,
        &create(&b, "--ip 10.38.0.10"),
        EXIT_API,
        &["10.38.0.10"],
        in_use,
    );
    for mac in ["zz:42:0a:26:00:0b", "02:42:0a"] {
        refused(
            &lab,
            &create(&b, &format!("--mac {mac}")),
            EXIT_API,
            &[mac],
            INVALID,
        );
    }
}

#[test]
fn an_exhausted_subnet_is_refused() {
    let lab = Lab::new();
    // A /30 holds the gateway and one endpoint.
    lab.network_create("tiny", &["--subnet", "10.39.0.0/30"]);
    lab.endpoint_create(&lab.name("a"), "tiny", &[]);
    let line = format!("endpoint create {} --network tiny", lab.name("b"));
    refused(
        &lab,
        &line,
        EXIT_API,
        &["tiny"],
        &["no free", "exhausted", "full"],
    );
}

#[test]
fn a_network_with_endpoints_is_not_removed() {
    let lab = Lab::new();
    lab.network_create("busy", &["--subnet", "10.40.0.0/24"]);
    let a = lab.name("a");
    lab.endpoint_create(&a, "busy", &[]);
    refused(
        &lab,
        "network rm busy",
        EXIT_API,
        &["busy", &a],
        &["endpoint"],
    );
}

#[test]
fn malformed_port_specs_are_refused() {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", "10.41.0.0/24"]);
    let a = lab.name("a");
    lab.endpoint_create(&a, "app", &[]);
    for (spec, name) in [
        ("80:abc", "abc"),
        ("70000", "70000"),
        ("80/sctp", "sctp"),
        ("90-80", "90-80"),
        ("1.2.3:8080:80", "1.2.3"),
    ] {
        refused(
            &lab,
            &format!("port publish {a} {spec}"),
            EXIT_API,
            &[name],
            INVALID,
        );
    }
    refused_args(&lab, &["port", "publish", &a, ""], EXIT_API, &[], INVALID);
    // A conflicting publication is refused too (its own kind of error).
    lab.netd_ok(&["port", "publish", &a, "8080:80"]);
    let conflict = &["conflict", "already", "in use"];
    refused(
        &lab,
        &format!("port publish {a} 8080:81"),
        EXIT_API,
        &["8080"],
        conflict,
    );
    // `netd run -p` takes the same spec and creates nothing when it is bad.
    let run = format!(
        "run --name {} --network app -p 80:abc -- true",
        lab.name("r")
    );
    refused(&lab, &run, EXIT_API, &["abc"], INVALID);
}

#[test]
fn a_port_a_host_process_holds_is_refused_or_passed_by() {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", "10.42.0.0/24"]);
    let a = lab.name("a");
    lab.endpoint_create(&a, "app", &[]);
    // Services of the host: publishing their ports would take their traffic.
    let host = lab.host().path();
    let _tcp = Server::tcp(&host, "0.0.0.0:2222".parse().unwrap()).unwrap();
    let _udp = Server::udp(&host, "127.0.0.1:5353".parse().unwrap()).unwrap();
    let _auto = Server::tcp(&host, "0.0.0.0:32768".parse().unwrap()).unwrap();
    let held = &["in use on the host"];
    for (spec, port) in [
        ("2222:22", "2222"),
        ("127.0.0.1:2222:22", "2222"),
        ("5353:53/udp", "5353"),
        ("127.0.0.1:5353:53/udp", "5353"),
    ] {
        refused(
            &lab,
            &format!("port publish {a} {spec}"),
            EXIT_API,
            &[port],
            held,
        );
    }
    // The other protocol's port, and another address's, are free.
    lab.netd_ok(&["port", "publish", &a, "2222:22/udp"]);
    lab.netd_ok(&["port", "publish", &a, "203.0.113.2:5353:53/udp"]);
    // When netd picks the port, it passes held ones by: in a range, and in its own.
    lab.netd_ok(&["port", "publish", &a, "2222-2224:23"]);
    lab.netd_ok(&["port", "publish", &a, "24"]);
    let list = lab.netd_json(&["port", "ls", &a, "--json"]);
    let chosen = |container: u16| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["container_ports"]["start"] == container && p["proto"] == "tcp")
            .unwrap_or_else(|| panic!("no publication of {container}: {list}"))["host_ports"]
            ["start"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(chosen(23), 2223, "{list}");
    assert_eq!(chosen(24), 32769, "{list}");
}

#[test]
fn malformed_options_are_usage_errors() {
    let lab = Lab::new();
    refused(
        &lab,
        "network create n --icc maybe",
        EXIT_USAGE,
        &["maybe"],
        INVALID,
    );
    refused(
        &lab,
        "network create n --mtu big",
        EXIT_USAGE,
        &["big"],
        INVALID,
    );
    refused(
        &lab,
        "network create n --mtu 20",
        EXIT_API,
        &["20"],
        &["out of range", "invalid"],
    );
}
