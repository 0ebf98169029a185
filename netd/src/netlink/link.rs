//! Links: lookup, state changes, bridges and deletion.

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::{
    LinkBridge, LinkUnspec,
    packet_route::link::{LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage},
};
use tracing::{debug, info};

use super::{LinkInfo, Netlink, NetlinkError, Result, errno_of, validate_ifname};
use crate::model::MacAddr;

impl Netlink {
    /// The link called `name`, or `None` if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        if name.is_empty() || name.len() > super::MAX_IFNAME_LEN {
            // The kernel rejects such a lookup with EINVAL; no link can have that name.
            return Ok(None);
        }
        let stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        single_link(stream, name).await
    }

    /// The link with ifindex `index`, or `None` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>> {
        let stream = self.handle.link().get().match_index(index).execute();
        single_link(stream, &format!("#{index}")).await
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(link_info)
            .try_collect()
            .await
            .map_err(|e| NetlinkError::rtnl("list", "links", e))
    }

    /// Set a link administratively up (`ip link set DEV up`).
    pub async fn set_link_up(&self, index: u32) -> Result<()> {
        self.change_link(
            LinkUnspec::new_with_index(index).up().build(),
            "set up",
            index,
        )
        .await
    }

    /// Set a link's MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.change_link(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            "set mtu of",
            index,
        )
        .await
    }

    /// Enslave a link to a bridge (`ip link set DEV master BR`).
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        match self.handle.link().change(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let (link, bridge) = (self.describe(index).await, self.describe(master).await);
                Err(NetlinkError::rtnl(
                    "set master of",
                    format!("{link} to {bridge}"),
                    e,
                ))
            }
        }
    }

    async fn change_link(&self, msg: LinkMessage, op: &'static str, index: u32) -> Result<()> {
        match self.handle.link().change(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(NetlinkError::rtnl(op, self.describe(index).await, e)),
        }
    }

    /// Delete a link; `Ok(false)` when it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => {
                info!(link = name, "deleted link");
                Ok(true)
            }
            // Someone else removed it between the lookup and the delete.
            Err(e) if errno_of(&e) == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(NetlinkError::rtnl("delete link", name, e)),
        }
    }

    /// Create the bridge if missing, and make sure it has `gateway` (with the subnet's
    /// prefix), `mtu`, and is up. Idempotent. Returns its ifindex.
    pub async fn ensure_bridge(&self, name: &str, gateway: Ipv4Net, mtu: u32) -> Result<u32> {
        validate_ifname("create bridge", name)?;
        let link = match self.link_by_name(name).await? {
            Some(link) => link,
            None => self.create_bridge(name, gateway).await?,
        };
        if link.kind.as_deref() != Some("bridge") {
            let kind = link.kind.as_deref().unwrap_or("a link without a kind");
            return Err(NetlinkError::new(
                "create bridge",
                name,
                format!(
                    "a link with this name exists and is {kind}, not a bridge; \
                     delete it or choose another bridge name"
                ),
            ));
        }
        if link.mtu != mtu {
            // Set through ndo_change_mtu so the bridge keeps it as user-set (Linux 4.17)
            // instead of following the smallest port MTU.
            self.set_mtu(link.index, mtu).await?;
        }
        self.ensure_ipv4_addr(link.index, name, gateway).await?;
        if !link.up {
            self.set_link_up(link.index).await?;
        }
        Ok(link.index)
    }

    async fn create_bridge(&self, name: &str, gateway: Ipv4Net) -> Result<LinkInfo> {
        // A fixed MAC stops the kernel from taking the lowest port MAC, which would change
        // the gateway's MAC under the containers' ARP caches as ports come and go; deriving
        // it from the gateway keeps it the same when the bridge is recreated.
        let mac = MacAddr::from_ipv4(gateway.addr());
        let msg = LinkBridge::new(name).address(mac.0.to_vec()).build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => info!(bridge = name, %gateway, "created bridge"),
            // Created concurrently: use whatever is there (checked by the caller).
            Err(e) if errno_of(&e) == Some(Errno::EEXIST) => {
                debug!(bridge = name, "bridge appeared concurrently");
            }
            Err(e) => return Err(NetlinkError::rtnl("create bridge", name, e)),
        }
        self.link_by_name(name).await?.ok_or_else(|| {
            NetlinkError::new(
                "create bridge",
                name,
                "the bridge vanished right after creation",
            )
        })
    }

    /// "NAME (#INDEX)" for error messages, or "#INDEX" when the lookup fails.
    pub(crate) async fn describe(&self, index: u32) -> String {
        match self.link_by_index(index).await {
            Ok(Some(link)) => format!("{} (#{index})", link.name),
            _ => format!("#{index}"),
        }
    }
}

/// The one link a get-by-name/index request returns; ENODEV means there is none.
async fn single_link(
    stream: impl futures::Stream<Item = std::result::Result<LinkMessage, rtnetlink::Error>>,
    object: &str,
) -> Result<Option<LinkInfo>> {
    let mut stream = std::pin::pin!(stream);
    match stream.next().await {
        None => Ok(None),
        Some(Ok(msg)) => Ok(Some(link_info(msg))),
        Some(Err(e)) if errno_of(&e) == Some(Errno::ENODEV) => Ok(None),
        Some(Err(e)) => Err(NetlinkError::rtnl("get link", object, e)),
    }
}

/// Reduce a kernel link message to what netd uses.
pub(crate) fn link_info(msg: LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        kind: None,
        peer_netnsid: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::Address(mac) => info.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            LinkAttribute::Mtu(mtu) => info.mtu = mtu,
            LinkAttribute::Controller(master) if master != 0 => info.master = Some(master),
            LinkAttribute::LinkNetNsId(id) => info.peer_netnsid = Some(id),
            LinkAttribute::LinkInfo(infos) => {
                for nla in infos {
                    if let NlLinkInfo::Kind(kind) = nla {
                        info.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}
