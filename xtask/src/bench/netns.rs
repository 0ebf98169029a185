//! Network namespaces for the benchmark: named ones under /run/netns (so that netd, `ip
//! netns exec` and iperf3 can use them), threads that enter them, and per-namespace
//! sysctls. The root namespace is never touched: every write happens from a thread that
//! has entered the benchmark's own namespace.

use std::{
    fs,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

/// Prefix of every namespace the benchmark creates; followed by the pid of the xtask
/// process, so a later run can tell stale namespaces of a killed run from live ones.
pub const PREFIX: &str = "nbx";

/// A named network namespace (/run/netns/NAME) that is deleted on drop.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
}

impl NamedNetns {
    /// Create `/run/netns/NAME` with lo up.
    pub fn create(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = NamedNetns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// `/run/netns/NAME`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Delete a named namespace if it exists; never fails (used in Drop and cleanup).
pub fn delete_netns(name: &str) {
    if netns_path(name).exists() {
        let _ = Command::new("ip")
            .args(["netns", "delete", name])
            .stderr(Stdio::null())
            .status();
    }
}

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
/// the pid of a process that no longer exists.
pub fn remove_stale() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("bench: removing stale namespace {name} of a finished run (pid {pid})");
            delete_netns(&name);
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

/// Run `f` on a new thread that has entered the network namespace at `ns`. Sockets
/// created there stay in that namespace whatever thread uses them later.
pub fn in_netns<T, F>(ns: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = ns.to_path_buf();
    thread::Builder::new()
        .name("bench-netns".into())
        .spawn(move || {
            enter(&ns)?;
            f()
        })
        .context("spawning a thread")?
        .join()
        .map_err(|_| anyhow!("a benchmark thread panicked"))?
}

/// Move the calling thread into the network namespace at `ns`. Only this thread moves:
/// setns(CLONE_NEWNET) is per task.
fn enter(ns: &Path) -> Result<()> {
    let file = fs::File::open(ns)
        .with_context(|| format!("opening network namespace {}", ns.display()))?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {}", ns.display()))
}

/// Make the namespace a good benchmark client: TIME_WAIT sockets may be reused (without
/// it TCP_CRR runs out of source ports within seconds), and ephemeral ports stay clear
/// of every port the benchmark publishes.
pub fn tune_client(ns: &Path) -> Result<()> {
    let path = ns.to_path_buf();
    in_netns(ns, move || {
        // /proc/sys/net follows the netns of the task that opens the file, i.e. this
        // thread, not the process.
        let set = |key: &str, value: &str| -> Result<()> {
            let file = format!("/proc/sys/net/ipv4/{key}");
            fs::write(&file, value)
                .with_context(|| format!("writing {value:?} to {file} in {}", path.display()))?;
            let back = fs::read_to_string(&file)?;
            if back.split_whitespace().collect::<Vec<_>>()
                != value.split_whitespace().collect::<Vec<_>>()
            {
                bail!(
                    "{file} in {} reads {back:?} after writing {value:?}",
                    path.display()
                );
            }
            Ok(())
        };
        set("tcp_tw_reuse", "1")?;
        set(
            "ip_local_port_range",
            &format!("{} {}", super::CLIENT_PORTS.0, super::CLIENT_PORTS.1),
        )
    })
}

/// Wait until something listens on TCP `port` inside the namespace at `ns`.
pub fn wait_tcp_listen(ns: &Path, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let path = ns.to_path_buf();
    loop {
        let listening = in_netns(ns, move || {
            // thread-self, not self: /proc/self/net shows the main thread's namespace.
            // iperf3 listens on a dual-stack socket, which shows in tcp6 only.
            let v4 = fs::read_to_string("/proc/thread-self/net/tcp")?;
            let v6 = fs::read_to_string("/proc/thread-self/net/tcp6").unwrap_or_default();
            Ok(tcp_table_listens(&v4, port) || tcp_table_listens(&v6, port))
        })?;
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
