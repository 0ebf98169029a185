//! IPv4 addresses on links.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage},
};
use tracing::info;

use super::{Netlink, NetlinkError, Result, errno_of};

impl Netlink {
    /// The IPv4 addresses of link `index`, with their prefix lengths.
    pub async fn ipv4_addrs(&self, index: u32) -> Result<Vec<Ipv4Net>> {
        let mut req = self.handle.address().get().set_link_index_filter(index);
        // Ask the kernel for IPv4 only rather than filtering every family here.
        req.message_mut().header.family = AddressFamily::Inet;
        let msgs: Vec<AddressMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::rtnl("list addresses of", format!("#{index}"), e))?;
        Ok(msgs.iter().filter_map(ipv4_net).collect())
    }

    /// Add `addr` to link `index` (`name` is for messages).
    pub async fn add_ipv4_addr(&self, index: u32, name: &str, addr: Ipv4Net) -> Result<()> {
        self.try_add_ipv4_addr(index, addr)
            .await
            .map_err(|e| NetlinkError::rtnl("add address", format!("{addr} to {name}"), e))?;
        info!(link = name, %addr, "added address");
        Ok(())
    }

    /// Add `addr` to link `index` unless it is already there.
    pub async fn ensure_ipv4_addr(&self, index: u32, name: &str, addr: Ipv4Net) -> Result<()> {
        if self.ipv4_addrs(index).await?.contains(&addr) {
            return Ok(());
        }
        match self.try_add_ipv4_addr(index, addr).await {
            Ok(()) => {
                info!(link = name, %addr, "added address");
                Ok(())
            }
            // Added concurrently: the state we want.
            Err(e) if errno_of(&e) == Some(Errno::EEXIST) => Ok(()),
            Err(e) => Err(NetlinkError::rtnl(
                "add address",
                format!("{addr} to {name}"),
                e,
            )),
        }
    }

    async fn try_add_ipv4_addr(&self, index: u32, addr: Ipv4Net) -> Result<(), rtnetlink::Error> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
    }
}

/// The local address of an IPv4 address message. IFA_LOCAL is the interface's own
/// address; IFA_ADDRESS differs from it only on point-to-point links (the peer).
fn ipv4_net(msg: &AddressMessage) -> Option<Ipv4Net> {
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(IpAddr::V4(ip)) if want_local => Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) if !want_local => Some(*ip),
            _ => None,
        })
    };
    let ip = pick(true).or_else(|| pick(false))?;
    Ipv4Net::new(ip, msg.header.prefix_len).ok()
}
