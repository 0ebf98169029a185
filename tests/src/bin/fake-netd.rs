//! A stand-in for `netd daemon` that the harness self-test starts, so that the daemon
//! guard's start-up, kill, restart and cleanup are proven without depending on netd.
//!
//! `fake-netd daemon --netns P --socket S --state-dir D --bpffs B [...]`: enters P, mounts
//! bpffs at B, records the namespace it runs in at D/netns, serves S (accepting and closing
//! connections) until SIGTERM or SIGINT.

use std::{fs, os::unix::net::UnixListener, path::PathBuf, thread};

use anyhow::{Context as _, anyhow};
use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, setns},
    sys::signal::{SigSet, Signal},
};

fn arg(args: &[String], flag: &str) -> anyhow::Result<PathBuf> {
    let i = args
        .iter()
        .position(|a| a == flag)
        .ok_or_else(|| anyhow!("missing {flag}"))?;
    args.get(i + 1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("{flag} needs a value"))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (netns, socket) = (arg(&args, "--netns")?, arg(&args, "--socket")?);
    let (state, bpffs) = (arg(&args, "--state-dir")?, arg(&args, "--bpffs")?);

    // Block the stop signals before any thread exists, so that only sigwait sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("blocking signals")?;

    let ns = fs::File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).context("setns")?;
    fs::create_dir_all(&bpffs).context("creating the bpffs dir")?;
    mount(
        Some("bpf"),
        &bpffs,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting bpffs")?;
    fs::create_dir_all(&state).context("creating the state dir")?;
    let inode = fs::read_link("/proc/thread-self/ns/net").context("reading own netns")?;
    fs::write(state.join("netns"), inode.to_string_lossy().as_bytes()).context("netns marker")?;

    let listener = UnixListener::bind(&socket).context("binding the socket")?;
    thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let signal = stop.wait().context("sigwait")?;
    eprintln!("fake-netd: {signal}, stopping");
    let _ = fs::remove_file(&socket);
    Ok(())
}
