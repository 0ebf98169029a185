//! Interface facts the maps need, looked up in the calling thread's network namespace
//! (the daemon's): names for attaching, and bridge MAC addresses.

use std::{ffi::CStr, io};

use crate::dataplane::DataplaneError;

/// The name of interface `ifindex`.
pub fn ifname(ifindex: u32) -> Result<String, DataplaneError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(DataplaneError::new(
            format!("looking up interface {ifindex}"),
            format!(
                "{}; is the daemon in the right network namespace?",
                io::Error::last_os_error()
            ),
        ));
    }
    // SAFETY: if_indextoname NUL-terminated the name inside buf.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// The MAC address of interface `ifindex` (SIOCGIFHWADDR on a socket of this namespace).
pub fn mac(ifindex: u32) -> Result<[u8; 6], DataplaneError> {
    let name = ifname(ifindex)?;
    let err = |e: io::Error| DataplaneError::new(format!("reading the MAC address of {name}"), e);
    // SAFETY: ifreq is plain data; the name fits (IF_NAMESIZE incl. NUL); the fd is ours
    // and closed below.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        let r = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req);
        let e = io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err(e));
        }
        let d = req.ifr_ifru.ifru_hwaddr.sa_data;
        Ok([
            d[0] as u8, d[1] as u8, d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8,
        ])
    }
}
