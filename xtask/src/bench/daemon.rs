//! One `netd daemon` for one benchmark topology: started inside the topology's host
//! namespace with its own socket, state dir and bpffs, stopped and cleaned up on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netd_tests::netns::{delete_netns, netns_path};
use nix::{
    mount::{MntFlags, umount2},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

use super::{api::ApiClient, sample::Variant};

/// A running daemon and everything it was given.
pub struct Netd {
    child: Child,
    binary: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    host_ns: PathBuf,
    variant: Variant,
    pub api: ApiClient,
    /// Endpoints created through this daemon; their namespaces are removed on drop.
    pub endpoints: Vec<String>,
}

impl Netd {
    /// Start `binary daemon` in `host_ns` with `uplink`, files under `dir`, its output
    /// into `log` (kept after the run, next to the results).
    pub fn start(
        binary: &Path,
        variant: Variant,
        host_ns: &Path,
        uplink: &str,
        dir: &Path,
        log_path: &Path,
    ) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = fs::File::create(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("daemon")
            .args(common_args(variant, host_ns, dir))
            .args(["--uplink", uplink, "--no-default-network"]);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let socket = dir.join("sock");
        let mut netd = Netd {
            child,
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            log: log_path.to_path_buf(),
            host_ns: host_ns.to_path_buf(),
            variant,
            api: ApiClient::new(&socket),
            endpoints: Vec::new(),
        };
        netd.wait_ready(Duration::from_secs(30))?;
        Ok(netd)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "netd daemon --dataplane {} exited with {status}: {}",
                    self.variant.name(),
                    self.log_tail()
                );
            }
            if self.dir.join("sock").exists() && self.api.get("/info").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "netd daemon did not answer GET /info within {timeout:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("log {}: {}", self.log.display(), tail.join(" | "))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Create an endpoint on `network`; returns its namespace path.
    pub fn endpoint_create(&mut self, name: &str, network: &str) -> Result<PathBuf> {
        let reply = self
            .api
            .post("/endpoints", &json!({ "name": name, "network": network }))?;
        self.endpoints.push(name.to_string());
        let path = reply["netns"]["path"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| netns_path(name));
        Ok(path)
    }

    pub fn endpoint_remove(&mut self, name: &str) -> Result<()> {
        self.api.delete(&format!("/endpoints/{name}"))?;
        self.endpoints.retain(|e| e != name);
        Ok(())
    }

    pub fn publish(&mut self, endpoint: &str, spec: &str) -> Result<Value> {
        self.api
            .post("/ports", &json!({ "endpoint": endpoint, "spec": spec }))
    }

    pub fn unpublish(&mut self, endpoint: &str, spec: Option<&str>) -> Result<Value> {
        self.api.post(
            "/ports/unpublish",
            &json!({ "endpoint": endpoint, "spec": spec }),
        )
    }

    /// `NETD_SOCKET=S netd port publish ENDPOINT SPEC`, as a user would type it.
    pub fn cli_publish(&self, endpoint: &str, spec: &str) -> Result<()> {
        let out = Command::new(&self.binary)
            .env("NETD_SOCKET", self.dir.join("sock"))
            .args(["port", "publish", endpoint, spec])
            .output()
            .context("running netd port publish")?;
        if !out.status.success() {
            bail!(
                "netd port publish {endpoint} {spec}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn stop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The flags the daemon and its `--cleanup` share.
fn common_args(variant: Variant, host_ns: &Path, dir: &Path) -> Vec<String> {
    let s = |p: PathBuf| p.display().to_string();
    vec![
        "--netns".into(),
        s(host_ns.to_path_buf()),
        "--socket".into(),
        s(dir.join("sock")),
        "--state-dir".into(),
        s(dir.join("state")),
        "--bpffs".into(),
        s(dir.join("bpffs")),
        "--dataplane".into(),
        variant.name().into(),
    ]
}

impl Drop for Netd {
    fn drop(&mut self) {
        // The daemon leaves bridges, veths, pins and links in place when it stops (so
        // traffic survives a restart): remove all of it here. Everything is best effort;
        // the host namespace's deletion afterwards takes the interfaces with it.
        if let Ok(list) = self.api.get("/endpoints")
            && let Some(list) = list.as_array()
        {
            for ep in list {
                if let Some(name) = ep["name"].as_str()
                    && !self.endpoints.iter().any(|e| e == name)
                {
                    self.endpoints.push(name.to_string());
                }
            }
        }
        self.stop();
        let _ = Command::new(&self.binary)
            .arg("daemon")
            .args(common_args(self.variant, &self.host_ns, &self.dir))
            .arg("--cleanup")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for name in &self.endpoints {
            let _ = delete_netns(name);
        }
        unmount_below(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Detach every mount at or below `dir` (the daemon's bpffs), deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = umount2(p, MntFlags::MNT_DETACH);
    }
}
