//! The kernel side of the iptables dataplane: the iptables binaries, sysctls, bridge-port
//! flags and interface counters, all in the calling thread's network namespace.
//!
//! Namespace rules this file relies on: a child process inherits the network namespace of
//! the thread that forks it; files under /proc/sys/net act on the namespace of the thread
//! that opens them; /proc/thread-self/net shows the calling thread's namespace (whereas
//! /proc/self/net follows the main thread, and /sys/class/net the namespace of whoever
//! mounted sysfs, so neither is used).

use std::{
    io::Write,
    process::{Command, Stdio},
};

use rtnetlink::{LinkBridgePort, packet_core::NetlinkMessage, packet_route::RouteNetlinkMessage};

use crate::dataplane::{DataplaneError, InterfaceCounters, Result, nlsync};

const IPTABLES_SAVE: &str = "iptables-save";
const IPTABLES_RESTORE: &str = "iptables-restore";

fn run_failed(what: &str, e: std::io::Error) -> DataplaneError {
    let hint = if e.kind() == std::io::ErrorKind::NotFound {
        " (install the iptables package: `cargo xtask setup` or `apt-get install iptables`)"
    } else {
        ""
    };
    DataplaneError::new(format!("running {what}"), format!("{e}{hint}"))
}

/// The rules of every table, as `iptables-save` prints them; with `counters`, every rule
/// carries `[packets:bytes]`.
pub fn iptables_save(counters: bool) -> Result<String> {
    let mut cmd = Command::new(IPTABLES_SAVE);
    if counters {
        cmd.arg("-c");
    }
    let o = cmd.output().map_err(|e| run_failed(IPTABLES_SAVE, e))?;
    if !o.status.success() {
        return Err(DataplaneError::new(
            IPTABLES_SAVE,
            format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Feed `script` to `iptables-restore --noflush`: each `*table ... COMMIT` block is applied
/// atomically, and only the chains the script names are touched.
pub fn iptables_restore(script: &str) -> Result<()> {
    let mut child = Command::new(IPTABLES_RESTORE)
        // The xtables lock (iptables-legacy) is waited for, but not forever.
        .args(["--noflush", "--wait", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| run_failed(IPTABLES_RESTORE, e))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| run_failed(IPTABLES_RESTORE, e))?;
    if out.status.success() {
        if let Some(Err(e)) = written {
            return Err(DataplaneError::new(
                format!("writing to {IPTABLES_RESTORE}"),
                e,
            ));
        }
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(DataplaneError::new(
        format!("{IPTABLES_RESTORE} --noflush"),
        format!(
            "{}: {}{}",
            out.status,
            stderr.trim(),
            failing_line(&stderr, script)
        ),
    ))
}

/// iptables-restore names the failing line by number; quote it.
fn failing_line(stderr: &str, script: &str) -> String {
    let no = stderr
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    match no.and_then(|n| script.lines().nth(n.wrapping_sub(1))) {
        Some(line) => format!(" (line: {line:?})"),
        None => String::new(),
    }
}

/// Write a sysctl under /proc/sys, in the calling thread's network namespace.
pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value)
        .map_err(|e| DataplaneError::new(format!("setting {key}={value} ({path})"), e))
}

/// Let the bridge route packets with loopback addresses, so that a connection to a port
/// published on 127.0.0.1 can be DNATed out of it (Docker sets this with the userland
/// proxy off; the raw-table drop keeps neighbours from abusing it).
pub fn set_route_localnet(bridge: &str) -> Result<()> {
    // The conf key contains the interface name, which may itself contain dots.
    let path = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    std::fs::write(&path, "1").map_err(|e| {
        DataplaneError::new(
            format!("setting route_localnet on bridge {bridge} ({path})"),
            e,
        )
    })
}

/// Send bridged IPv4 traffic through iptables, as Docker does when icc=false or hairpin
/// NAT needs it: without it, FORWARD never sees container-to-container packets.
/// Per network namespace since Linux 5.3.
pub fn enable_bridge_netfilter() -> Result<()> {
    write_sysctl("net.bridge.bridge-nf-call-iptables", "1")
}

/// Turn hairpin mode on for a bridge port, over rtnetlink (`ip link set PORT type
/// bridge_slave hairpin on`): a container that connects to its own published port gets
/// the DNATed packet back through the port it came from.
pub fn set_hairpin(ifindex: u32, on: bool) -> Result<()> {
    let link = LinkBridgePort::new(ifindex).hairpin(on).build();
    let req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
    nlsync::route_batch(vec![req])
        .and_then(|mut r| r.remove(0))
        .map_err(|e| {
            DataplaneError::new(
                format!("setting hairpin_mode on bridge port ifindex {ifindex}"),
                e,
            )
        })
}

/// Per-interface counters from /proc/thread-self/net/dev, for the named interfaces.
pub fn interface_counters(wanted: &[(u32, String)]) -> Result<Vec<InterfaceCounters>> {
    let path = "/proc/thread-self/net/dev";
    let text = std::fs::read_to_string(path)
        .map_err(|e| DataplaneError::new(format!("reading {path}"), e))?;
    Ok(parse_net_dev(&text, wanted))
}

fn parse_net_dev(text: &str, wanted: &[(u32, String)]) -> Vec<InterfaceCounters> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let Some((ifindex, ifname)) = wanted.iter().find(|(_, n)| n == name.trim()) else {
            continue;
        };
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
        if v.len() >= 10 {
            out.push(InterfaceCounters {
                ifindex: *ifindex,
                ifname: ifname.clone(),
                rx_bytes: v[0],
                rx_packets: v[1],
                tx_bytes: v[8],
                tx_packets: v[9],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_parsing_picks_wanted_interfaces() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
bridge1: 5000      40    0    0    0     0          0         0     7000      60    0    0    0     0       0          0
";
        let got = parse_net_dev(text, &[(7, "bridge1".into()), (9, "absent".into())]);
        assert_eq!(
            got,
            [InterfaceCounters {
                ifindex: 7,
                ifname: "bridge1".into(),
                rx_packets: 40,
                rx_bytes: 5000,
                tx_packets: 60,
                tx_bytes: 7000
            }]
        );
    }

    #[test]
    fn failing_line_is_quoted() {
        let script = "*nat\n-A DOCKER bogus\nCOMMIT\n";
        assert_eq!(
            failing_line("iptables-restore: line 2 failed", script),
            " (line: \"-A DOCKER bogus\")"
        );
        assert_eq!(failing_line("something else", script), "");
    }
}
