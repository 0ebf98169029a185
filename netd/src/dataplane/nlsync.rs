//! Synchronous netlink requests for the dataplanes, whose steps run inside the daemon's
//! transactions and are not async. Every call opens its own socket in the calling
//! thread's network namespace and sends all of its messages in one datagram: the kernel
//! runs them in order and acknowledges each, failed or not, so several changes to one
//! interface cost one round trip.

use std::{io, os::fd::AsRawFd, time::Duration};

use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage},
    packet_route::RouteNetlinkMessage,
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};

/// A kernel that never answers must fail the request, not hang the daemon.
const TIMEOUT: Duration = Duration::from_secs(5);

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;

/// Sends one request (which must ask for an ack) and waits for its answer.
pub fn request(protocol: isize, msg: &[u8]) -> io::Result<()> {
    let code = exchange(protocol, msg, 1)?[0];
    errno_result(code)
}

/// Sends `msgs` to rtnetlink in one datagram and returns each one's result, in order.
/// Adds `NLM_F_REQUEST | NLM_F_ACK` to each message's flags and numbers them; the other
/// flags (`NLM_F_CREATE`, ...) are the caller's.
pub fn route_batch(
    msgs: Vec<NetlinkMessage<RouteNetlinkMessage>>,
) -> io::Result<Vec<io::Result<()>>> {
    let n = msgs.len();
    let mut buf = Vec::new();
    for (seq, mut msg) in (1..).zip(msgs) {
        msg.header.flags |= NLM_F_REQUEST | NLM_F_ACK;
        msg.header.sequence_number = seq;
        msg.finalize();
        let start = buf.len();
        buf.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut buf[start..]);
        buf.resize(align(buf.len()), 0);
    }
    let codes = exchange(NETLINK_ROUTE, &buf, n)?;
    Ok(codes.into_iter().map(errno_result).collect())
}

fn errno_result(code: i32) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Sends `buf` and returns the error codes (0: done) of the first `acks` NLMSG_ERROR
/// answers, which the kernel sends in the order of the requests.
fn exchange(protocol: isize, buf: &[u8], acks: usize) -> io::Result<Vec<i32>> {
    let mut sock = Socket::new(protocol)?;
    set_recv_timeout(&sock, TIMEOUT)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(buf, 0)?;
    let mut codes = Vec::with_capacity(acks);
    while codes.len() < acks {
        let (answer, _) = sock.recv_from_full()?;
        codes.extend(error_codes(&answer));
    }
    codes.truncate(acks);
    Ok(codes)
}

/// The error codes of the NLMSG_ERROR messages in one datagram; other messages (echoes)
/// are skipped.
fn error_codes(buf: &[u8]) -> Vec<i32> {
    let mut codes = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
        if kind == NLMSG_ERROR && off + NLMSG_HDRLEN + 4 <= buf.len() {
            let at = off + NLMSG_HDRLEN;
            codes.push(i32::from_ne_bytes(
                buf[at..at + 4].try_into().expect("4 bytes"),
            ));
        }
        if len < NLMSG_HDRLEN {
            break;
        }
        off += align(len);
    }
    codes
}

fn set_recv_timeout(sock: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: the fd is a live socket owned by `sock`; `tv` outlives the call and its size
    // is passed along.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m.resize(align(len), 0);
        m
    }

    #[test]
    fn error_codes_are_read_in_order_and_echoes_skipped() {
        let mut dgram = msg(NLMSG_ERROR, &(-17i32).to_ne_bytes());
        dgram.extend(msg(44, b"echoed filter"));
        dgram.extend(msg(NLMSG_ERROR, &0i32.to_ne_bytes()));
        assert_eq!(error_codes(&dgram), [-17, 0]);
    }

    #[test]
    fn a_truncated_message_ends_the_scan() {
        let mut dgram = msg(NLMSG_ERROR, &(-2i32).to_ne_bytes());
        dgram.extend_from_slice(&[0xff; 6]);
        assert_eq!(error_codes(&dgram), [-2]);
    }

    #[test]
    fn errno_zero_is_done_and_negative_is_that_error() {
        assert!(errno_result(0).is_ok());
        assert_eq!(errno_result(-17).unwrap_err().raw_os_error(), Some(17));
    }
}
