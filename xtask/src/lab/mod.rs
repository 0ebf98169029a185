//! `cargo xtask run`: the lab. netd runs in a "host" namespace behind an uplink to a
//! "wan" namespace; a demo network with two endpoints serving HTTP shows that it works.
//! Everything lives in namespaces the lab creates, and goes away on Ctrl-C, on `--once`
//! after the checks, and on any error. The root namespace is never touched.

mod checks;
mod server;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use netd_tests::{
    Lab, LabConfig,
    lab::{HOST_ADDR, UPLINK, WAN_ADDR},
    netns::{NETNS_DIR, list_netns},
    process::ip,
};
use serde_json::Value;

use crate::{cargo, setup, signals};
use server::DemoServer;

/// The port the demo servers listen on, and the host port that publishes one of them.
const DEMO_PORT: u16 = 8080;
/// The demo network's name.
const DEMO_NETWORK: &str = "demo";

/// Options of `cargo xtask run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Tear down right after the checks (exit status: whether they passed)
    #[arg(long)]
    once: bool,
    /// Build and run netd with the release profile
    #[arg(long)]
    release: bool,
    /// Name prefix of the lab's namespaces; a number is added when it is taken
    #[arg(long, default_value = "netdlab")]
    prefix: String,
}

fn say(msg: &str) {
    eprintln!("[lab] {msg}");
}

/// Run the lab.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    signals::install()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and needs root; run `sudo -E cargo xtask run`");
    }
    setup::run()?;
    signals::check()?;
    let netd = cargo::netd_binary(args.release)?;
    signals::check()?;
    let prefix = free_prefix(&args.prefix);
    let dir = std::env::temp_dir().join(format!("{prefix}.{}", std::process::id()));
    say(&format!("starting netd in namespace {prefix}-host"));
    let mut session = Session {
        lab: None,
        demo: None,
    };
    session.lab = Some(Lab::start(LabConfig {
        prefix: prefix.clone(),
        dir: dir.clone(),
        default_network: true,
        daemon_args: Vec::new(),
        daemon_bin: Some(netd.clone()),
    })?);
    signals::check()?;
    let lab = session.lab.as_ref().ok_or_else(|| anyhow!("no lab"))?;
    let demo = Demo::create(lab)?;
    print_summary(lab, &demo);
    println!("checks:");
    let passed = checks::run(&demo);
    session.demo = Some(demo);
    if args.once {
        return if passed {
            Ok(())
        } else {
            Err(anyhow!("some lab checks failed"))
        };
    }
    print_next_steps(&session, &netd);
    if !passed {
        say("some checks failed; the lab stays up so that you can look");
    }
    wait_for_ctrl_c(&mut session)
}

/// `base`, or `base2`, `base3`... whichever has no namespace yet.
fn free_prefix(base: &str) -> String {
    let taken = list_netns();
    (1..)
        .map(|n| {
            if n == 1 {
                base.to_string()
            } else {
                format!("{base}{n}")
            }
        })
        .find(|p| !taken.iter().any(|t| t.starts_with(&format!("{p}-"))))
        .expect("an unbounded range has a free name")
}

fn wait_for_ctrl_c(session: &mut Session) -> anyhow::Result<()> {
    say("up; press Ctrl-C to tear it down");
    while !signals::stopped() {
        let lab = session.lab.as_mut().ok_or_else(|| anyhow!("no lab"))?;
        if let Some(status) = lab.daemon_mut().exited() {
            bail!(
                "netd daemon exited ({status}); its log:\n{}",
                lab.daemon().log()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// An endpoint of the demo network.
struct DemoEndpoint {
    name: String,
    ip: Ipv4Addr,
}

/// The demo network, its endpoints and the servers in them.
struct Demo {
    endpoints: [DemoEndpoint; 2],
    gateway: Ipv4Addr,
    subnet: String,
    /// The wan namespace, where the outside clients run.
    wan: PathBuf,
    /// `netd port publish` output, or why it failed.
    published: Result<String, String>,
    // Dropped (stopped) before the lab, by Session.
    _servers: Vec<DemoServer>,
}

impl Demo {
    fn create(lab: &Lab) -> anyhow::Result<Demo> {
        let network = netd_json(lab, &["network", "create", DEMO_NETWORK, "--json"])?;
        let gateway = json_ip(&network["gateway"]).context("the demo network's gateway")?;
        let subnet = network["subnet"].as_str().unwrap_or("?").to_string();
        let endpoints =
            [lab.name("web1"), lab.name("web2")].map(|name| -> anyhow::Result<DemoEndpoint> {
                let info = netd_json(
                    lab,
                    &[
                        "endpoint",
                        "create",
                        &name,
                        "--network",
                        DEMO_NETWORK,
                        "--json",
                    ],
                )?;
                let ip = json_ip(&info["attachments"][0]["ip"])
                    .with_context(|| format!("{name}'s address"))?;
                Ok(DemoEndpoint { name, ip })
            });
        let [a, b] = endpoints;
        let endpoints = [a?, b?];
        signals::check()?;
        let any = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), DEMO_PORT);
        let mut servers = Vec::new();
        for e in &endpoints {
            servers.push(DemoServer::start(&lab.netns_path(&e.name), &e.name, any)?);
        }
        let wan_bind = SocketAddr::new(WAN_ADDR.into(), DEMO_PORT);
        servers.push(DemoServer::start(&lab.wan().path(), "wan", wan_bind)?);
        let spec = format!("{DEMO_PORT}:{DEMO_PORT}");
        let published = netd(lab, &["port", "publish", &endpoints[0].name, &spec])
            .map_err(|e| format!("{e:#}"));
        Ok(Demo {
            endpoints,
            gateway,
            subnet,
            wan: lab.wan().path(),
            published,
            _servers: servers,
        })
    }
}

/// `netd ARGS...` that must succeed; its stdout.
fn netd(lab: &Lab, args: &[&str]) -> anyhow::Result<String> {
    let out = lab.netd(args);
    if !out.success() {
        bail!("`netd {}` failed: {}", args.join(" "), out.all().trim());
    }
    Ok(out.stdout)
}

fn netd_json(lab: &Lab, args: &[&str]) -> anyhow::Result<Value> {
    let stdout = netd(lab, args)?;
    serde_json::from_str(&stdout)
        .with_context(|| format!("`netd {}` printed no JSON: {stdout}", args.join(" ")))
}

fn json_ip(v: &Value) -> anyhow::Result<Ipv4Addr> {
    let s = v.as_str().ok_or_else(|| anyhow!("no address in {v}"))?;
    s.parse().with_context(|| format!("bad address {s:?}"))
}

fn print_summary(lab: &Lab, demo: &Demo) {
    let d = lab.daemon();
    println!("netd lab:");
    println!(
        "  daemon:    pid {} in namespace {}",
        d.pid().unwrap_or(0),
        lab.host().name()
    );
    println!("  socket:    {}", d.socket().display());
    println!("  log:       {}", d.log_path().display());
    println!(
        "  uplink:    {UPLINK} {HOST_ADDR} -> wan namespace {} ({WAN_ADDR})",
        lab.wan().name()
    );
    println!(
        "  network:   {DEMO_NETWORK} {} gateway {}",
        demo.subnet, demo.gateway
    );
    for e in &demo.endpoints {
        println!(
            "  endpoint:  {} {} serving HTTP on :{DEMO_PORT}",
            e.name, e.ip
        );
    }
    match &demo.published {
        Ok(mapping) => println!(
            "  published: {} -> {}",
            mapping.trim(),
            demo.endpoints[0].name
        ),
        Err(e) => println!("  published: failed: {e}"),
    }
}

fn print_next_steps(session: &Session, netd: &Path) {
    let (Some(lab), Some(demo)) = (&session.lab, &session.demo) else {
        return;
    };
    let [a, b] = &demo.endpoints;
    let host = lab.host().name();
    println!(
        "\nTry (as root, in another terminal):
  export NETD_SOCKET={socket}
  alias netd={netd}
  netd network ls
  netd endpoint ls
  netd endpoint inspect {a}
  netd endpoint create {prefix}-web3 --network {DEMO_NETWORK}
  ip netns exec {prefix}-web3 ping -c 1 {b_ip}
  netd port publish {b} 9090:{DEMO_PORT}
  netd run --network {DEMO_NETWORK} -- ip -4 addr show dev eth0
  netd stats
  ip -n {host} -br link     # the daemon's view: bridge, veths, uplink
Ctrl-C here tears the whole lab down.",
        socket = lab.daemon().socket().display(),
        netd = netd.display(),
        a = a.name,
        b = b.name,
        b_ip = b.ip,
        prefix = lab.prefix(),
    );
}

/// The lab and its demo; dropping it tears everything down, in order.
struct Session {
    lab: Option<Lab>,
    demo: Option<Demo>,
}

impl Drop for Session {
    fn drop(&mut self) {
        say("tearing down");
        drop(self.demo.take());
        let Some(lab) = self.lab.take() else { return };
        // Endpoints created with other names (`netd run`, a user's own) have namespaces
        // outside the lab's prefix: ask the daemon for them while it still runs.
        let extra = owned_namespaces(&lab);
        drop(lab);
        for name in extra {
            if Path::new(NETNS_DIR).join(&name).exists()
                && let Err(e) = ip(&["netns", "delete", name.as_str()])
            {
                say(&format!("could not delete namespace {name}: {e:#}"));
            }
        }
        say("done");
    }
}

/// Names of the /run/netns namespaces that netd created for its endpoints.
fn owned_namespaces(lab: &Lab) -> Vec<String> {
    let Ok(list) = netd_json(lab, &["endpoint", "ls", "--json"]) else {
        return Vec::new();
    };
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["netns"]["owned"].as_bool() == Some(true))
        .filter_map(|e| e["netns"]["path"].as_str().map(PathBuf::from))
        .filter(|p| p.parent() == Some(Path::new(NETNS_DIR)))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}
