//! Plugging a namespace into a bridge with one veth pair, all or nothing.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use rtnetlink::{
    LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::link::{InfoData, InfoKind, InfoVeth},
};
use tracing::{info, warn};

use super::{AttachRequest, Netlink, NetlinkError, Result, errno_of, validate_ifname};

/// Smallest MTU an IPv4 link may have (RFC 791), and the largest a veth takes.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

impl Netlink {
    /// Create the veth pair, enslave the host end, move the other end into the
    /// namespace and configure it (name, MAC, address, MTU, up, lo up, default route).
    /// On failure nothing is left behind. Returns the host end's ifindex.
    ///
    /// The rollback runs inside this future: dropping it half-way (cancellation) can
    /// leave the pair behind, so callers should let it finish.
    pub async fn attach_endpoint(&self, req: &AttachRequest<'_>) -> Result<u32> {
        validate(req)?;
        let inner = req.netns.netlink()?;
        self.create_veth(req, &inner).await?;
        match self.configure_attachment(req, &inner).await {
            Ok(index) => {
                info!(
                    link = req.host_ifname, ifname = req.ifname, netns = %req.netns.path().display(),
                    addr = %req.addr, "attached endpoint"
                );
                Ok(index)
            }
            Err(err) => {
                self.roll_back_veth(req.host_ifname).await;
                Err(err)
            }
        }
    }

    /// Create the pair with the peer born inside the namespace under its final name, MAC
    /// and MTU (as `ip link add H type veth peer name eth0 netns NS` does): no temporary
    /// name in the host namespace that could clash, and no rename step to fail.
    async fn create_veth(&self, req: &AttachRequest<'_>, inner: &Netlink) -> Result<()> {
        let object = || {
            format!(
                "{} (peer {} in {})",
                req.host_ifname,
                req.ifname,
                req.netns.path().display()
            )
        };
        // Check both names first: the kernel's EEXIST would not say which one clashed.
        if self.link_by_name(req.host_ifname).await?.is_some() {
            return Err(NetlinkError::new(
                "create veth",
                object(),
                format!(
                    "an interface named {} already exists on the host",
                    req.host_ifname
                ),
            ));
        }
        if inner.link_by_name(req.ifname).await?.is_some() {
            return Err(NetlinkError::new(
                "create veth",
                object(),
                format!(
                    "an interface named {} already exists in the namespace",
                    req.ifname
                ),
            ));
        }
        let peer = LinkUnspec::new_with_name(req.ifname)
            .setns_by_fd(req.netns.as_fd().as_raw_fd())
            .address(req.mac.0.to_vec())
            .mtu(req.mtu)
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(req.host_ifname.to_string())
            .mtu(req.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::rtnl("create veth", object(), e))
    }

    /// Everything after the pair exists; any error here is rolled back by the caller.
    async fn configure_attachment(&self, req: &AttachRequest<'_>, inner: &Netlink) -> Result<u32> {
        let host = self.link_by_name(req.host_ifname).await?.ok_or_else(|| {
            NetlinkError::new(
                "attach",
                req.host_ifname,
                "the veth vanished right after creation",
            )
        })?;
        self.set_master(host.index, req.bridge_ifindex).await?;
        self.set_link_up(host.index).await?;

        let netns = req.netns.path().display();
        let peer = inner.link_by_name(req.ifname).await?.ok_or_else(|| {
            NetlinkError::new(
                "attach",
                format!("{} in {netns}", req.ifname),
                "the veth peer is missing",
            )
        })?;
        let peer_name = format!("{} in {netns}", req.ifname);
        inner
            .add_ipv4_addr(peer.index, &peer_name, req.addr)
            .await?;
        inner.set_link_up(peer.index).await?;
        let lo = inner.link_by_name("lo").await?.ok_or_else(|| {
            NetlinkError::new(
                "attach",
                format!("lo in {netns}"),
                "the namespace has no loopback",
            )
        })?;
        if !lo.up {
            inner.set_link_up(lo.index).await?;
        }
        if req.default_route {
            inner
                .add_default_route(peer.index, &peer_name, req.gateway)
                .await?;
        }
        Ok(host.index)
    }

    /// Delete the host end we created; the kernel deletes the peer with it, wherever it
    /// is. Errors are logged, not returned: the caller reports the original failure.
    async fn roll_back_veth(&self, host_ifname: &str) {
        let msg = LinkUnspec::new_with_name(host_ifname).build();
        match self.handle.link().del_with_message(msg).execute().await {
            Ok(()) => info!(link = host_ifname, "rolled back veth"),
            Err(e) if errno_of(&e) == Some(Errno::ENODEV) => {}
            Err(e) => warn!(link = host_ifname, error = %e, "could not roll back veth"),
        }
    }
}

/// Reject what the kernel would reject anyway, before anything is created.
fn validate(req: &AttachRequest<'_>) -> Result<()> {
    validate_ifname("attach endpoint", req.host_ifname)?;
    validate_ifname("attach endpoint", req.ifname)?;
    if !MTU_RANGE.contains(&req.mtu) {
        return Err(NetlinkError::new(
            "attach endpoint",
            req.host_ifname,
            format!(
                "mtu {} is outside {}..={}",
                req.mtu,
                MTU_RANGE.start(),
                MTU_RANGE.end()
            ),
        ));
    }
    if req.mac.0[0] & 1 == 1 {
        return Err(NetlinkError::new(
            "attach endpoint",
            req.host_ifname,
            format!("MAC {} is a multicast address", req.mac),
        ));
    }
    Ok(())
}
