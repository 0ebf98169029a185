//! UDP small-packet rate: one sender blasts 18-byte datagrams (60-byte frames, the
//! Ethernet minimum) with sendmmsg, one receiver counts them with recvmmsg. Batching keeps
//! the syscall cost out of the way so the path's per-packet cost shows.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use netd_tests::in_netns;

const PAYLOAD: usize = 18;
const BATCH: usize = 64;

/// Result of a UDP run.
#[derive(Debug)]
pub struct UdpResult {
    pub sent: u64,
    pub received: u64,
    pub secs: f64,
}

/// Send from the namespace `client_ns` to `target` for `duration`; count what a receiver
/// bound to `target`'s port inside `server_ns` gets.
pub fn udp_rate(
    client_ns: &Path,
    server_ns: &Path,
    target: SocketAddr,
    duration: Duration,
) -> Result<UdpResult> {
    let port = target.port();
    let receiver = in_netns(server_ns, move || -> Result<UdpSocket> {
        let s = UdpSocket::bind(("0.0.0.0", port))
            .with_context(|| format!("binding the UDP receiver to port {port}"))?;
        set_rcvbuf(&s, 8 << 20);
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(s)
    })??;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let rx = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::Builder::new()
            .name("udp-rx".into())
            .spawn(move || receive(&receiver, &stop, &received))
            .context("spawning the UDP receiver")?
    };
    let sent = in_netns(client_ns, move || blast(target, duration));
    // Let the packets still in flight arrive before counting.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    rx.join()
        .map_err(|_| anyhow!("the UDP receiver panicked"))?;
    let (sent, secs) = sent??;
    let received = received.load(Ordering::Relaxed);
    if received == 0 {
        bail!("UDP to {target}: sent {sent} datagrams, none arrived");
    }
    Ok(UdpResult {
        sent,
        received,
        secs,
    })
}

fn blast(target: SocketAddr, duration: Duration) -> Result<(u64, f64)> {
    let s = UdpSocket::bind(("0.0.0.0", 0)).context("binding the UDP sender")?;
    s.connect(target)
        .with_context(|| format!("connecting the UDP sender to {target}"))?;
    let payload = [0x5au8; PAYLOAD];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: PAYLOAD,
        })
        .collect();
    let mut msgs = headers(&mut iov);
    let (mut sent, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < duration {
        // SAFETY: msgs points at BATCH valid headers whose iovecs point at `payload`,
        // which outlives the call; the socket is connected so no address is needed.
        let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        } else {
            // ENOBUFS/ECONNREFUSED (an ICMP error from an earlier datagram) are transient.
            errors += 1;
            if sent == 0 && errors > 1000 {
                bail!(
                    "UDP sender to {target}: sendmmsg keeps failing: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

/// One sendmmsg/recvmmsg header per buffer of `iov`, pointing at it; valid as long as
/// `iov` and its buffers do not move.
fn headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}

fn receive(s: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    let mut bufs = vec![[0u8; 64]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs = headers(&mut iov);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs/iov/bufs stay alive and unmoved for the call; the socket's read
        // timeout (SO_RCVTIMEO) bounds the wait, so the stop flag is seen.
        let n = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn set_rcvbuf(s: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: setsockopt with a pointer to a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
