//! TCP bulk throughput with Debian's iperf3, run inside the namespaces through `ip netns
//! exec`; the client's `-J` report is parsed for the receiver's rate.

use std::{
    io::Read,
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use netd_tests::netns::netns_path;
use serde_json::Value;

use super::netns;

/// An `iperf3 -s` running inside a namespace; killed (by its pid) on drop.
pub struct IperfServer {
    child: Child,
}

impl IperfServer {
    pub fn start(ns_name: &str, port: u16) -> Result<Self> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns_name, "iperf3", "-s", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3; install it with `apt-get install iperf3` (cargo xtask setup does)")?;
        let mut server = IperfServer { child };
        if let Err(e) = netns::wait_tcp_listen(&netns_path(ns_name), port, Duration::from_secs(10))
        {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("iperf3 -s in {ns_name} exited with {status}; is iperf3 installed?");
            }
            return Err(e);
        }
        Ok(server)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        // `ip netns exec` execs iperf3, so the pid is iperf3's own.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Throughput of one iperf3 run.
#[derive(Debug)]
pub struct IperfResult {
    pub gbit_per_s: f64,
    pub retransmits: u64,
}

/// `iperf3 -c target -p port -P streams -t secs -C cc -J` inside `ns_name`.
pub fn client(
    ns_name: &str,
    target: Ipv4Addr,
    port: u16,
    streams: u32,
    secs: u32,
    cc: &str,
) -> Result<IperfResult> {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns_name,
            "iperf3",
            "-c",
            &target.to_string(),
            "-p",
            &port.to_string(),
        ])
        .args([
            "-P",
            &streams.to_string(),
            "-t",
            &secs.to_string(),
            "-C",
            cc,
            "-J",
            "--connect-timeout",
            "5000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the iperf3 client")?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(secs) + 20);
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("iperf3 stdout"))?;
    // Read on a thread so a hung client can still be killed at the deadline.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("iperf3 client to {target}:{port} did not finish within {secs}+20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader
        .join()
        .map_err(|_| anyhow!("iperf3 reader panicked"))?;
    let parsed = parse(&out)
        .with_context(|| format!("iperf3 -c {target}:{port} -P {streams} ({status})"))?;
    Ok(parsed)
}

/// The receiver's rate from iperf3's JSON report; iperf3 reports its own failures in an
/// `error` field.
fn parse(json: &str) -> Result<IperfResult> {
    let v: Value = serde_json::from_str(json)
        .with_context(|| format!("parsing iperf3 JSON: {:.200}", json.trim()))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 JSON has no end.sum_received.bits_per_second"))?;
    let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok(IperfResult {
        gbit_per_s: bps / 1e9,
        retransmits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_receiver_rate_and_errors() {
        let ok = r#"{"start":{},"end":{"sum_sent":{"bits_per_second":2.1e10,"retransmits":3},"sum_received":{"bits_per_second":2.0e10}}}"#;
        let r = parse(ok).unwrap();
        assert!((r.gbit_per_s - 20.0).abs() < 1e-9);
        assert_eq!(r.retransmits, 3);
        let err =
            r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert!(
            parse(err)
                .unwrap_err()
                .to_string()
                .contains("Connection refused")
        );
        assert!(parse("not json").is_err());
    }
}
