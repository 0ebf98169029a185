//! Argument parsing, exit codes and rendering of the CLI; the daemon is not involved.

use std::{net::Ipv4Addr, path::PathBuf};

use clap::{CommandFactory, Parser, error::ErrorKind as ClapKind};

use super::*;
use crate::{
    api::types::ApiError, daemon::DaemonConfig, dataplane::DataplaneKind, error::ErrorKind,
    model::PortRange,
};

mod render;
mod run_cleanup;

fn parse(args: &[&str]) -> Cli {
    let mut argv = vec!["netd"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse_err(args: &[&str]) -> clap::Error {
    let mut argv = vec!["netd"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => e,
    }
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn socket_is_global_with_env_and_default() {
    assert_eq!(
        parse(&["stats"]).socket,
        DaemonConfig::with_defaults().socket
    );
    assert_eq!(
        parse(&["--socket", "/tmp/a.sock", "stats"]).socket,
        PathBuf::from("/tmp/a.sock")
    );
    assert_eq!(
        parse(&["network", "ls", "--socket", "/tmp/b.sock"]).socket,
        PathBuf::from("/tmp/b.sock")
    );
    let cmd = Cli::command();
    let socket = cmd
        .get_arguments()
        .find(|a| a.get_id() == "socket")
        .unwrap();
    assert_eq!(
        socket.get_env().and_then(|e| e.to_str()),
        Some("NETD_SOCKET")
    );
}

#[test]
fn network_create_passes_values_through() {
    let cli = parse(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.0.0.0/33",
        "--gateway",
        "10.0.0.1",
        "--ip-range",
        "10.0.0.128/25",
        "--internal",
        "--icc",
        "false",
        "--masquerade",
        "true",
        "--mtu",
        "1400",
        "--bridge",
        "br-blue",
        "--json",
    ]);
    let Command::Network(NetworkCommand::Create(args)) = cli.command else {
        panic!("{cli:?}")
    };
    let req = args.request();
    // Validation is the daemon's: a bad CIDR goes through as typed.
    assert_eq!(req.subnet.as_deref(), Some("10.0.0.0/33"));
    assert_eq!(req.gateway.as_deref(), Some("10.0.0.1"));
    assert_eq!(req.ip_range.as_deref(), Some("10.0.0.128/25"));
    assert!(req.internal);
    assert_eq!(
        (req.icc, req.masquerade, req.mtu),
        (Some(false), Some(true), Some(1400))
    );
    assert_eq!(req.bridge.as_deref(), Some("br-blue"));
    assert!(args.output.json);

    let Command::Network(NetworkCommand::Create(args)) = parse(&["network", "create", "x"]).command
    else {
        panic!()
    };
    let req = args.request();
    assert_eq!(
        (req.name.as_str(), req.icc, req.masquerade, req.internal),
        ("x", None, None, false)
    );
    assert_eq!(
        parse_err(&["network", "create", "x", "--icc", "maybe"]).kind(),
        ClapKind::InvalidValue
    );
    assert_eq!(
        parse_err(&["network", "create", "x", "--icc"]).kind(),
        ClapKind::InvalidValue
    );
}

#[test]
fn multi_name_commands_need_a_name() {
    let Command::Endpoint(EndpointCommand::Rm { names }) =
        parse(&["endpoint", "rm", "a", "b"]).command
    else {
        panic!()
    };
    assert_eq!(names, ["a", "b"]);
    assert!(matches!(
        parse(&["network", "remove", "a"]).command,
        Command::Network(NetworkCommand::Rm { .. })
    ));
    for args in [
        &["network", "rm"][..],
        &["endpoint", "inspect"],
        &["network", "inspect"],
    ] {
        assert_eq!(
            parse_err(args).kind(),
            ClapKind::MissingRequiredArgument,
            "{args:?}"
        );
    }
    let Command::Network(NetworkCommand::Inspect { names, json }) =
        parse(&["network", "inspect", "a", "b", "--json"]).command
    else {
        panic!()
    };
    assert_eq!(
        (names, json),
        (vec!["a".to_string(), "b".to_string()], true)
    );
}

#[test]
fn endpoint_commands_parse() {
    let cli = parse(&[
        "endpoint",
        "create",
        "web",
        "--network",
        "blue",
        "--ip",
        "10.0.0.9",
        "--mac",
        "02:00:00:00:00:01",
        "--netns",
        "/proc/1/ns/net",
    ]);
    let Command::Endpoint(EndpointCommand::Create {
        name,
        network,
        ip,
        mac,
        netns,
        output,
    }) = cli.command
    else {
        panic!()
    };
    assert_eq!(name, "web");
    assert_eq!(network.as_deref(), Some("blue"));
    assert_eq!(ip.as_deref(), Some("10.0.0.9"));
    assert_eq!(mac.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(netns.as_deref(), Some("/proc/1/ns/net"));
    assert!(!output.json);
    let cli = parse(&["endpoint", "connect", "web", "red", "--ip", "10.1.0.5"]);
    let Command::Endpoint(EndpointCommand::Connect {
        name, network, ip, ..
    }) = cli.command
    else {
        panic!()
    };
    assert_eq!(
        (name.as_str(), network.as_str(), ip.as_deref()),
        ("web", "red", Some("10.1.0.5"))
    );
    assert!(matches!(
        parse(&["endpoint", "disconnect", "web", "red"]).command,
        Command::Endpoint(EndpointCommand::Disconnect { .. })
    ));
    assert!(matches!(
        parse(&["endpoint", "ls", "--json"]).command,
        Command::Endpoint(EndpointCommand::Ls(Output { json: true }))
    ));
}

#[test]
fn port_specs_pass_through() {
    let spec = "127.0.0.1:8000-8010:80-90/udp";
    let cli = parse(&["port", "publish", "web", spec, "--network", "blue"]);
    let Command::Port(PortCommand::Publish {
        endpoint,
        spec: got,
        network,
        ..
    }) = cli.command
    else {
        panic!()
    };
    assert_eq!(
        (endpoint.as_str(), got.as_str(), network.as_deref()),
        ("web", spec, Some("blue"))
    );
    // A malformed spec is the daemon's to refuse, with its message.
    let cli = parse(&["port", "publish", "web", "80:80:80:80/sctp"]);
    let Command::Port(PortCommand::Publish { spec, .. }) = cli.command else {
        panic!()
    };
    assert_eq!(spec, "80:80:80:80/sctp");
    let Command::Port(PortCommand::Unpublish { spec, .. }) =
        parse(&["port", "unpublish", "web"]).command
    else {
        panic!()
    };
    assert_eq!(spec, None);
    let Command::Port(PortCommand::Ls { endpoint, output }) =
        parse(&["port", "ls", "--json"]).command
    else {
        panic!()
    };
    assert_eq!((endpoint, output.json), (None, true));
}

#[test]
fn run_takes_the_command_verbatim() {
    let cli = parse(&[
        "run",
        "--name",
        "web",
        "-p",
        "8080:80",
        "--publish",
        "53/udp",
        "--ip",
        "10.0.0.5",
        "--",
        "sh",
        "-c",
        "echo -n hi",
    ]);
    let Command::Run(args) = cli.command else {
        panic!()
    };
    assert_eq!(args.name.as_deref(), Some("web"));
    assert_eq!(args.publish, ["8080:80", "53/udp"]);
    assert_eq!(args.ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(args.command, ["sh", "-c", "echo -n hi"]);
    // Without `--`, options after CMD belong to CMD.
    let Command::Run(args) =
        parse(&["run", "--network", "blue", "ping", "-c", "1", "--name", "x"]).command
    else {
        panic!()
    };
    assert_eq!(args.network.as_deref(), Some("blue"));
    assert_eq!(args.name, None);
    assert_eq!(args.command, ["ping", "-c", "1", "--name", "x"]);
    assert_eq!(
        parse_err(&["run", "-p", "80"]).kind(),
        ClapKind::MissingRequiredArgument
    );
}

#[test]
fn run_names_are_random_and_well_formed() {
    let (a, b) = (run::random_name(), run::random_name());
    assert_ne!(a, b);
    for n in [a, b] {
        assert_eq!(n.len(), 12, "{n}");
        assert!(
            n.starts_with("run-") && n[4..].chars().all(|c| c.is_ascii_hexdigit()),
            "{n}"
        );
    }
}

#[test]
fn daemon_defaults_are_the_daemons() {
    let Command::Daemon(args) = parse(&["daemon"]).command else {
        panic!()
    };
    let got = args.config(PathBuf::from("/run/netd/netd.sock"));
    let want = DaemonConfig::with_defaults();
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    assert!(!args.cleanup);
}

#[test]
fn daemon_options_reach_the_config() {
    let cli = parse(&[
        "daemon",
        "--socket",
        "/tmp/s.sock",
        "--state-dir",
        "/tmp/st",
        "--bpffs",
        "/tmp/bpf",
        "--uplink",
        "up0",
        "--netns",
        "/run/netns/host",
        "--dataplane",
        "iptables",
        "--no-default-network",
        "--snat-ip",
        "203.0.113.7",
        "--snat-ports",
        "40000-40999",
        "--conntrack-max",
        "1024",
        "--nat-max",
        "2048",
        "--cleanup",
    ]);
    let Command::Daemon(args) = &cli.command else {
        panic!()
    };
    let cfg = args.config(cli.socket.clone());
    assert_eq!(cfg.socket, PathBuf::from("/tmp/s.sock"));
    assert_eq!(cfg.state_dir, PathBuf::from("/tmp/st"));
    assert_eq!(cfg.bpffs, PathBuf::from("/tmp/bpf"));
    assert_eq!(cfg.uplink.as_deref(), Some("up0"));
    assert_eq!(cfg.netns, Some(PathBuf::from("/run/netns/host")));
    assert_eq!(cfg.dataplane, DataplaneKind::Iptables);
    assert!(!cfg.default_network);
    assert_eq!(cfg.snat_ip, Some(Ipv4Addr::new(203, 0, 113, 7)));
    assert_eq!(
        cfg.snat_ports,
        PortRange {
            start: 40000,
            end: 40999
        }
    );
    assert_eq!((cfg.conntrack_max, cfg.nat_max), (1024, 2048));
    assert!(args.cleanup);
}

#[test]
fn daemon_rejects_bad_values() {
    for bad in ["65535-1", "0-10", "100", "a-b", "1-70000"] {
        assert_eq!(
            parse_err(&["daemon", "--snat-ports", bad]).kind(),
            ClapKind::ValueValidation,
            "{bad}"
        );
    }
    assert_eq!(
        parse_err(&["daemon", "--conntrack-max", "0"]).kind(),
        ClapKind::ValueValidation
    );
    assert_eq!(
        parse_err(&["daemon", "--snat-ip", "::1"]).kind(),
        ClapKind::ValueValidation
    );
    assert_eq!(
        parse_err(&["daemon", "--dataplane", "nft"]).kind(),
        ClapKind::InvalidValue
    );
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    assert_eq!(parse_err(&["bogus"]).exit_code(), i32::from(EXIT_USAGE));
    assert_eq!(
        parse_err(&["network", "ls", "--bogus"]).exit_code(),
        i32::from(EXIT_USAGE)
    );
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("3    the daemon cannot be reached"), "{help}");
}

#[test]
fn errors_map_to_exit_codes() {
    let unreachable = ClientError::Unreachable {
        socket: "/nope".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    assert_eq!(CliError::from(unreachable).exit_code(), EXIT_UNREACHABLE);
    let no_reply = ClientError::NoReply {
        socket: "/x".into(),
        detail: "reset".into(),
    };
    assert_eq!(CliError::from(no_reply).exit_code(), EXIT_UNREACHABLE);
    for kind in [
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Invalid,
        ErrorKind::Internal,
    ] {
        let e = CliError::from(ClientError::Api(ApiError {
            kind,
            message: "m".into(),
        }));
        assert_eq!(e.exit_code(), EXIT_API);
        assert_eq!(e.to_string(), "m");
    }
    assert_eq!(
        CliError::Exec {
            message: String::new(),
            code: 127
        }
        .exit_code(),
        127
    );
}
