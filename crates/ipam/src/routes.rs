//! What the blocks say about routing, as felix's route resolver reads them: each block goes to
//! the node it is affine to, and each address allocated to another node (a borrowed address,
//! by its allocation's `node` attribute) goes to that node.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Result;
use crate::ipam::Ipam;
use crate::stored::{self, BLOCK_PREFIX};

/// The allocation attribute naming the node an address is used on.
pub const ATTR_NODE: &str = "node";
/// The allocation attribute saying what an address is for (tunnel addresses).
pub const ATTR_TYPE: &str = "type";
/// The allocation attribute naming a pod's namespace (set by the CNI plugin for Kubernetes pods).
pub const ATTR_NAMESPACE: &str = "namespace";
/// The allocation attribute naming a pod (set by the CNI plugin for Kubernetes pods).
pub const ATTR_POD: &str = "pod";
/// `type` of a node's IPv4 VXLAN tunnel address.
pub const TYPE_VXLAN_TUNNEL: &str = "vxlanTunnelAddress";
/// `type` of a node's IPv6 VXLAN tunnel address.
pub const TYPE_VXLAN_V6_TUNNEL: &str = "vxlanV6TunnelAddress";
/// `type` of a node's IPIP tunnel address.
pub const TYPE_IPIP_TUNNEL: &str = "ipipTunnelAddress";
/// Every `type` of a node's tunnel address, WireGuard's (which Calico gives) included.
pub const TUNNEL_TYPES: [&str; 5] = [
    TYPE_VXLAN_TUNNEL,
    TYPE_VXLAN_V6_TUNNEL,
    TYPE_IPIP_TUNNEL,
    "wireguardTunnelAddress",
    "wireguardV6TunnelAddress",
];

/// One block as routes see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRoutes {
    pub cidr: IpNet,
    /// The node the block is affine to (`host:<node>`), if any.
    pub node: Option<String>,
    /// Active allocations used on a node other than the block's: address and node.
    pub borrowed: Vec<(IpAddr, String)>,
}

impl Ipam<'_> {
    /// Every readable block with its affine node and borrowed addresses, in key order. A block
    /// that cannot be read is skipped with a warning (the others still route).
    pub fn block_routes(&self) -> Result<Vec<BlockRoutes>> {
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let listing = self.store.list(BLOCK_PREFIX)?;
        let mut out = Vec::new();
        for kv in &listing.kvs {
            if stored::parse_block_key(&kv.key).is_none() {
                continue;
            }
            let b = match self.decode_block(kv, cooldown) {
                Ok(b) => b.value,
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "unreadable IPAM block; no routes for it");
                    continue;
                }
            };
            let node = b.host().map(str::to_owned);
            let mut borrowed = Vec::new();
            for ordinal in 0..b.allocations.len() {
                let Some(attr) = b.active(ordinal) else {
                    continue;
                };
                let user = attr
                    .secondary
                    .as_ref()
                    .and_then(|s| s.get(ATTR_NODE))
                    .filter(|n| !n.is_empty());
                match user {
                    Some(user) if Some(user) != node.as_ref() => {
                        borrowed.push((b.ip_at(ordinal), user.clone()))
                    }
                    Some(_) => {}
                    None if node.is_none() => tracing::warn!(
                        ip = %b.ip_at(ordinal),
                        "no route for an address of a block without affinity: IPAM does not record its node"
                    ),
                    None => {}
                }
            }
            out.push(BlockRoutes {
                cidr: b.cidr,
                node,
                borrowed,
            });
        }
        Ok(out)
    }
}
