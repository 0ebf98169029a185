//! Whether a host port is held by a socket of the daemon's namespace. Publishing it would
//! take the traffic away from the process that holds it (sshd on 22, for the wan and for
//! host-local access alike); Docker refuses such a port ("address already in use").
//!
//! The question is asked the way a server would: by binding the port, then letting go.
//! TCP binds with SO_REUSEADDR, so that listeners and sockets bound without it count, and
//! connections lingering in TIME_WAIT do not; UDP binds without it, so that any bound
//! socket counts.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
};

use nix::{
    errno::Errno,
    sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt::ReuseAddr,
    },
};

use crate::model::{PortRange, Proto};

/// Whether binding `port` for `proto` on `ip` (every address when `None`) collides with a
/// socket of this namespace.
pub(crate) fn in_use(proto: Proto, ip: Option<Ipv4Addr>, port: u16) -> io::Result<bool> {
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)?;
    if proto == Proto::Tcp {
        setsockopt(&fd, ReuseAddr, &true)?;
    }
    let addr = SockaddrIn::from(SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port));
    match bind(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(false),
        Err(Errno::EADDRINUSE) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The first port of `ports` that [`in_use`] finds taken.
pub(crate) fn first_in_use(
    proto: Proto,
    ip: Option<Ipv4Addr>,
    ports: PortRange,
) -> io::Result<Option<u16>> {
    for port in ports.start..=ports.end {
        if in_use(proto, ip, port)? {
            return Ok(Some(port));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;

    const LOOPBACK: Option<Ipv4Addr> = Some(Ipv4Addr::LOCALHOST);

    #[test]
    fn a_listener_or_a_bound_datagram_socket_holds_its_port() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        assert!(in_use(Proto::Tcp, LOOPBACK, port).unwrap());
        // A wildcard bind collides with a listener on one address, too.
        assert!(in_use(Proto::Tcp, None, port).unwrap());
        drop(tcp);
        assert!(!in_use(Proto::Tcp, LOOPBACK, port).unwrap());

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        assert!(in_use(Proto::Udp, LOOPBACK, port).unwrap());
        drop(udp);
        assert!(!in_use(Proto::Udp, LOOPBACK, port).unwrap());
    }

    #[test]
    fn a_closed_connection_does_not_hold_its_port() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (accepted, _) = server.accept().unwrap();
        let port = server.local_addr().unwrap().port();
        // The server side closes first and keeps the pair in TIME_WAIT.
        drop(accepted);
        drop(server);
        drop(client);
        assert!(!in_use(Proto::Tcp, LOOPBACK, port).unwrap());
    }

    #[test]
    fn the_first_taken_port_of_a_range_is_named() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let single = PortRange {
            start: port,
            end: port,
        };
        assert_eq!(
            first_in_use(Proto::Udp, LOOPBACK, single).unwrap(),
            Some(port)
        );
        // Another process may hold a port just below; none is above the one found.
        let below = PortRange {
            start: port.saturating_sub(5).max(1),
            end: port,
        };
        let found = first_in_use(Proto::Udp, LOOPBACK, below).unwrap();
        assert!(found.is_some_and(|p| p <= port), "{found:?}");
    }
}
