//! The lab's connectivity checks: real traffic, judged by what the far end saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context as _, bail};
use netd_tests::{
    lab::{HOST_ADDR, WAN_ADDR},
    netns::netns_path,
    process::netns_exec,
};

use super::{DEMO_PORT, Demo, server::get};

/// One check's outcome.
struct Outcome {
    what: String,
    result: anyhow::Result<String>,
}

/// Run every check, print the results; true when all of them passed.
pub fn run(demo: &Demo) -> bool {
    let [a, b] = &demo.endpoints;
    let outcomes = [
        Outcome {
            what: format!("{} -> {}:{DEMO_PORT} over TCP", a.name, b.ip),
            result: direct(&a.name, a.ip, &b.name, b.ip),
        },
        Outcome {
            what: format!("{} -> {}:{DEMO_PORT} over TCP", b.name, a.ip),
            result: direct(&b.name, b.ip, &a.name, a.ip),
        },
        Outcome {
            what: format!("{} -> gateway {} (ping)", a.name, demo.gateway),
            result: ping(&a.name, demo.gateway),
        },
        Outcome {
            what: format!(
                "wan {WAN_ADDR} -> published {HOST_ADDR}:{DEMO_PORT} -> {}",
                a.name
            ),
            result: published(demo, &a.name),
        },
        Outcome {
            what: format!("{} -> wan {WAN_ADDR}:{DEMO_PORT}, masqueraded", b.name),
            result: masqueraded(&b.name),
        },
    ];
    let mut ok = true;
    for o in &outcomes {
        match &o.result {
            Ok(detail) => println!("  ok    {}: {detail}", o.what),
            Err(e) => {
                ok = false;
                println!("  FAIL  {}: {e:#}", o.what);
            }
        }
    }
    ok
}

/// A request from endpoint `from` reaches `to`'s server, which sees `from`'s own address.
fn direct(from: &str, from_ip: Ipv4Addr, to: &str, to_ip: Ipv4Addr) -> anyhow::Result<String> {
    let answer = get(&netns_path(from), SocketAddr::new(to_ip.into(), DEMO_PORT))?;
    if answer.server != to {
        bail!("answered by {}, not {to}", answer.server);
    }
    if answer.client.ip() != IpAddr::V4(from_ip) {
        bail!(
            "{to} saw the request come from {}, not {from_ip}",
            answer.client
        );
    }
    Ok(format!("{to} answered and saw {}", answer.client))
}

fn ping(from: &str, to: Ipv4Addr) -> anyhow::Result<String> {
    let to = to.to_string();
    let out = netns_exec(from, &["ping", "-c", "1", "-W", "2", to.as_str()])?;
    if !out.success() {
        bail!("ping failed: {}", out.all().trim());
    }
    let rtt = out
        .stdout
        .lines()
        .find(|l| l.contains("time="))
        .unwrap_or("reply received");
    Ok(rtt.trim().to_string())
}

/// The wan reaches the published port on the host's uplink address, and the endpoint sees
/// the wan client's real address.
fn published(demo: &Demo, to: &str) -> anyhow::Result<String> {
    demo.published
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let answer =
        get(&demo.wan, SocketAddr::new(HOST_ADDR.into(), DEMO_PORT)).context("connecting")?;
    if answer.server != to {
        bail!("answered by {}, not {to}", answer.server);
    }
    if answer.client.ip() != IpAddr::V4(WAN_ADDR) {
        bail!("{to} saw the client as {}, not {WAN_ADDR}", answer.client);
    }
    Ok(format!(
        "{to} answered and saw the real client {}",
        answer.client
    ))
}

/// An endpoint reaches the wan's server, which sees the host's uplink address.
fn masqueraded(from: &str) -> anyhow::Result<String> {
    let answer = get(
        &netns_path(from),
        SocketAddr::new(WAN_ADDR.into(), DEMO_PORT),
    )
    .context("connecting")?;
    if answer.client.ip() != IpAddr::V4(HOST_ADDR) {
        bail!("the wan saw {}, not the host's {HOST_ADDR}", answer.client);
    }
    Ok(format!("the wan saw {}", answer.client))
}
