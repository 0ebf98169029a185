//! Benchmark-only helpers for network namespaces: per-namespace sysctls, waiting for a
//! listener, veth pairs, and the sweep of namespaces that killed runs left behind. The
//! namespaces themselves are the test harness's guards ([`netd_tests::NetnsGuard`]), and
//! code runs inside them through [`netd_tests::in_netns`]. The root namespace is never
//! touched: every write happens from a thread that has entered the benchmark's own
//! namespace.

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netd_tests::{
    in_netns,
    netns::{delete_netns, list_netns},
};

/// Prefix of every namespace the benchmark creates; followed by the pid of the xtask
/// process, so a later run can tell stale namespaces of a killed run from live ones.
pub const PREFIX: &str = "nbx";

/// Run `ip ARGS`, turning a failure into an error that carries ip's message.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2); install it with `apt-get install iproute2`")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Remove namespaces left behind by benchmark runs that were killed: their names carry
/// the pid of a process that no longer exists. Kept apart from the test harness's sweep,
/// which knows only its own names (`nt<pid>x<n>`), so that neither removes the other's.
pub fn remove_stale() {
    for name in list_netns() {
        if let Some(pid) = owner_pid(&name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("bench: removing stale namespace {name} of a finished run (pid {pid})");
            let _ = delete_netns(&name);
        }
    }
}

/// The pid in a benchmark namespace name `nbx<pid>-...`.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if rest[digits.len()..].starts_with('-') {
        digits.parse().ok()
    } else {
        None
    }
}

/// Make the namespace a good benchmark client: TIME_WAIT sockets may be reused (without
/// it TCP_CRR runs out of source ports within seconds), and ephemeral ports stay clear
/// of every port the benchmark publishes.
pub fn tune_client(ns: &Path) -> Result<()> {
    let path = ns.to_path_buf();
    in_netns(ns, move || {
        set_ipv4(&path, "tcp_tw_reuse", "1")?;
        set_ipv4(
            &path,
            "ip_local_port_range",
            &format!("{} {}", super::CLIENT_PORTS.0, super::CLIENT_PORTS.1),
        )
    })?
}

/// Make the namespace a router: it forwards IPv4 between its interfaces.
pub fn enable_forwarding(ns: &Path) -> Result<()> {
    let path = ns.to_path_buf();
    in_netns(ns, move || set_ipv4(&path, "ip_forward", "1"))?
}

/// Write `value` to /proc/sys/net/ipv4/`key` and check that it reads back, from a thread
/// inside the namespace at `ns`: /proc/sys/net follows the netns of the task that opens
/// the file, i.e. this thread, not the process.
fn set_ipv4(ns: &Path, key: &str, value: &str) -> Result<()> {
    let file = format!("/proc/sys/net/ipv4/{key}");
    fs::write(&file, value)
        .with_context(|| format!("writing {value:?} to {file} in {}", ns.display()))?;
    let back = fs::read_to_string(&file)?;
    if back.split_whitespace().collect::<Vec<_>>() != value.split_whitespace().collect::<Vec<_>>() {
        bail!(
            "{file} in {} reads {back:?} after writing {value:?}",
            ns.display()
        );
    }
    Ok(())
}

/// Wait until something listens on TCP `port` inside the namespace at `ns`.
pub fn wait_tcp_listen(ns: &Path, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let path = ns.to_path_buf();
    loop {
        let listening = in_netns(ns, move || -> Result<bool> {
            // thread-self, not self: /proc/self/net shows the main thread's namespace.
            // iperf3 listens on a dual-stack socket, which shows in tcp6 only.
            let v4 = fs::read_to_string("/proc/thread-self/net/tcp")?;
            let v6 = fs::read_to_string("/proc/thread-self/net/tcp6").unwrap_or_default();
            Ok(tcp_table_listens(&v4, port) || tcp_table_listens(&v6, port))
        })??;
        if listening {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "nothing listens on TCP port {port} in {} after {timeout:?}",
                path.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a /proc/net/tcp table has a socket in LISTEN state (0A) on `port`.
fn tcp_table_listens(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3
            && f[3] == "0A"
            && f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

/// A veth pair `a` (in namespace `ns_a`, address `addr_a`/24) <-> `b` (in `ns_b`,
/// `addr_b`/24), both up. Created directly inside the namespaces.
pub fn veth_pair(
    ns_a: &str,
    a: &str,
    addr_a: Ipv4Addr,
    ns_b: &str,
    b: &str,
    addr_b: Ipv4Addr,
) -> Result<()> {
    ip(&[
        "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
    ])?;
    ip(&["-n", ns_a, "addr", "add", &format!("{addr_a}/24"), "dev", a])?;
    ip(&["-n", ns_b, "addr", "add", &format!("{addr_b}/24"), "dev", b])?;
    ip(&["-n", ns_a, "link", "set", a, "up"])?;
    ip(&["-n", ns_b, "link", "set", b, "up"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_benchmark_names() {
        assert_eq!(owner_pid("nbx1234-h1"), Some(1234));
        assert_eq!(owner_pid("nbx1234"), None);
        assert_eq!(owner_pid("nbxab-1"), None);
        assert_eq!(owner_pid("srv"), None);
    }

    #[test]
    fn tcp_table_listen_detection() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:1B59 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert!(tcp_table_listens(table, 5201));
        assert!(!tcp_table_listens(table, 7001));
    }
}
