//! `netd run`: a throwaway container that exists exactly as long as its command. Every
//! test ends by comparing a snapshot with the one taken before the run.

use std::{os::unix::process::CommandExt as _, thread, time::Duration};

use netd_tests::{
    Lab,
    cli::Snapshot,
    process::{Background, COMMAND_TIMEOUT},
};
use nix::sys::signal::{Signal, killpg};

/// A lab with a network `app` on `subnet`, and its snapshot before any run.
fn lab_with_network(subnet: &str) -> (Lab, Snapshot) {
    let lab = Lab::new();
    lab.network_create("app", &["--subnet", subnet]);
    let before = lab.snapshot();
    (lab, before)
}

/// `netd run --name NAME --network app OPTIONS... -- CMD...`.
fn run_args<'a>(name: &'a str, options: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--name", name, "--network", "app"];
    args.extend_from_slice(options);
    args.push("--");
    args.extend_from_slice(cmd);
    args
}

#[test]
fn run_tears_down_after_its_command_exits() {
    let (lab, before) = lab_with_network("10.60.0.0/24");
    let r = lab.name("r");
    // The command runs inside the endpoint: it sees eth0 with an address of the network.
    let out = lab.netd(&run_args(
        &r,
        &[],
        &["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
    ));
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("inet 10.60.0."), "{out}");
    assert_eq!(lab.snapshot(), before, "netd run left something behind");
}

#[test]
fn run_exits_with_the_status_of_its_command() {
    let (lab, before) = lab_with_network("10.61.0.0/24");
    let r = lab.name("r");
    let out = lab.netd(&run_args(&r, &[], &["sh", "-c", "exit 7"]));
    assert_eq!(out.code, 7, "{out}");
    let out = lab.netd(&run_args(&r, &[], &["/nonexistent/cmd"]));
    assert_eq!(out.code, 127, "{out}");
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn run_publishes_while_it_runs_and_unpublishes_after() {
    let (lab, before) = lab_with_network("10.62.0.0/24");
    let r = lab.name("r");
    // The command inherits NETD_SOCKET, so it can look at its own publication.
    let bin = netd_tests::netd_bin().unwrap();
    let bin = bin.to_str().unwrap();
    let out = lab.netd(&run_args(
        &r,
        &["-p", "8080:80"],
        &[bin, "port", "ls", "--json"],
    ));
    assert!(out.success(), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let p = &listed[0];
    assert_eq!(p["endpoint"], r.as_str(), "{listed}");
    assert_eq!(p["host_ports"]["start"], 8080, "{listed}");
    assert_eq!(p["container_ports"]["start"], 80, "{listed}");
    assert_eq!(lab.snapshot(), before);
}

fn endpoint_names(lab: &Lab) -> Vec<String> {
    let list = lab.netd_json(&["endpoint", "ls", "--json"]);
    let names = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str());
    names.map(String::from).collect()
}

#[test]
fn run_tears_down_after_ctrl_c() {
    let (lab, before) = lab_with_network("10.63.0.0/24");
    let r = lab.name("r");
    let mut cmd = lab.netd_command(&run_args(&r, &[], &["sleep", "600"]));
    // Its own process group, which receives the SIGINT as a terminal's Ctrl-C would.
    cmd.process_group(0);
    let running = Background::spawn(&mut cmd).unwrap();
    let mut waited = 0;
    while !(endpoint_names(&lab).contains(&r) && lab.netns_path(&r).exists()) {
        assert!(waited < 300, "netd run did not create endpoint {r}");
        thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    // Let it get to the command, so that both netd and sleep get the signal.
    thread::sleep(Duration::from_millis(500));
    killpg(running.pid(), Signal::SIGINT).unwrap();
    let out = running.wait(COMMAND_TIMEOUT).unwrap();
    assert_eq!(
        out.code,
        128 + 2,
        "netd run should exit as its interrupted command: {out}"
    );
    assert_eq!(
        lab.snapshot(),
        before,
        "netd run left something behind after Ctrl-C"
    );
}
