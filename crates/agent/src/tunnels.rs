//! Tunnel addresses, as calico-node's `allocateip` gives them: while an enabled IPv4 pool with
//! `vxlanMode` (resp. `ipipMode`) other than `Never` selects the node and allows tunnel
//! addresses, the node holds one address from such a pool (IPAM handle
//! `vxlan-tunnel-addr-<node>`, attributes `node` and `type: vxlanTunnelAddress`; IPIP:
//! `ipip-tunnel-addr-<node>`, `ipipTunnelAddress`), recorded on its Node
//! (`spec.ipv4VXLANTunnelAddr`, `spec.bgp.ipv4IPIPTunnelAddr`); when no such pool remains the
//! address is released and the field cleared. IPv6 VXLAN likewise: an IPv6 pool with
//! `vxlanMode` on gives `spec.ipv6VXLANTunnelAddr` (`vxlan-v6-tunnel-addr-<node>`,
//! `vxlanV6TunnelAddress`). Idempotent: an address that is still the node's,
//! by its IPAM attributes, in a pool that still qualifies, is kept.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gingham_datastore::Datastore;
use gingham_ipam::{AllocationStatus, AssignRequest, Ipam, PoolSpec, Use};
use gingham_model::{AllowedUse, IpPool, Kind, Labels, Node, Resource};
use gingham_selector::Selector;
use ipnet::IpNet;

/// The kinds of tunnel address a node may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    Vxlan,
    VxlanV6,
    Ipip,
}

impl TunnelKind {
    pub const ALL: [TunnelKind; 3] = [TunnelKind::Vxlan, TunnelKind::VxlanV6, TunnelKind::Ipip];

    /// Whether the address is IPv6.
    pub fn v6(self) -> bool {
        self == TunnelKind::VxlanV6
    }

    /// The IPAM handle of `node`'s address.
    pub fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::Vxlan => format!("vxlan-tunnel-addr-{node}"),
            TunnelKind::VxlanV6 => format!("vxlan-v6-tunnel-addr-{node}"),
            TunnelKind::Ipip => format!("ipip-tunnel-addr-{node}"),
        }
    }

    /// The allocation's `type` attribute.
    pub fn attr_type(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => gingham_ipam::TYPE_VXLAN_TUNNEL,
            TunnelKind::VxlanV6 => gingham_ipam::TYPE_VXLAN_V6_TUNNEL,
            TunnelKind::Ipip => gingham_ipam::TYPE_IPIP_TUNNEL,
        }
    }

    /// Whether `pool` calls for this kind of address.
    fn wants(self, pool: &IpPool) -> bool {
        match self {
            TunnelKind::Vxlan | TunnelKind::VxlanV6 => pool.spec.vxlan().enabled(),
            TunnelKind::Ipip => pool.spec.ipip().enabled(),
        }
    }

    /// The Node field holding the address (empty: none).
    pub fn get(self, node: &Node) -> &str {
        match self {
            TunnelKind::Vxlan => &node.spec.ipv4_vxlan_tunnel_addr,
            TunnelKind::VxlanV6 => &node.spec.ipv6_vxlan_tunnel_addr,
            TunnelKind::Ipip => node
                .spec
                .bgp
                .as_ref()
                .map_or("", |b| b.ipv4_ipip_tunnel_addr.as_str()),
        }
    }

    fn set(self, node: &mut Node, addr: String) {
        match self {
            TunnelKind::Vxlan => node.spec.ipv4_vxlan_tunnel_addr = addr,
            TunnelKind::VxlanV6 => node.spec.ipv6_vxlan_tunnel_addr = addr,
            TunnelKind::Ipip => {
                let bgp = node.spec.bgp.get_or_insert_with(Default::default);
                bgp.ipv4_ipip_tunnel_addr = addr;
                // Calico drops a BGP section left empty (an empty one is invalid).
                if bgp.is_empty() {
                    node.spec.bgp = None;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("IPAM: {0}")]
    Ipam(#[from] gingham_ipam::Error),
    #[error("datastore: {0}")]
    Datastore(#[from] gingham_datastore::Error),
    #[error("Node {node} cannot be read: {reason}")]
    Node { node: String, reason: String },
}

/// A pool as IPAM sees it; with `node_labels`, its nodeSelector is evaluated for that node
/// (an unparsable selector selects nothing), else it counts as selecting. `None` without a CIDR.
pub fn pool_spec(pool: &IpPool, node_labels: Option<&Labels>) -> Option<PoolSpec> {
    let cidr = pool.spec.cidr?;
    let mut spec = PoolSpec::new(pool.metadata.name.clone(), cidr);
    if let Some(b) = pool.spec.block_size {
        spec = spec.with_block_size(b);
    }
    spec.disabled = pool.spec.disabled;
    spec.node_selector_matches = match node_labels {
        None => true,
        Some(labels) => {
            pool.spec.node_selector.trim().is_empty()
                || Selector::parse(&pool.spec.node_selector).is_ok_and(|s| s.matches(labels))
        }
    };
    if !pool.spec.allowed_uses.is_empty() {
        spec.allowed_uses = pool
            .spec
            .allowed_uses
            .iter()
            .map(|u| match u {
                AllowedUse::Workload => Use::Workload,
                AllowedUse::Tunnel => Use::Tunnel,
                AllowedUse::LoadBalancer => Use::LoadBalancer,
            })
            .collect();
    }
    Some(spec)
}

/// The pools `node` may take a `kind` tunnel address from (Calico's
/// `determineEnabledPoolCIDRs`): of the kind's family, enabled, selecting the node, allowing
/// tunnels, with the encapsulation on.
pub fn tunnel_pools(kind: TunnelKind, node: &Node, pools: &[IpPool]) -> Vec<PoolSpec> {
    pools
        .iter()
        .filter(|p| kind.wants(p))
        .filter_map(|p| pool_spec(p, Some(&node.metadata.labels)))
        .filter(|s| {
            s.cidr.addr().is_ipv6() == kind.v6()
                && !s.disabled
                && s.node_selector_matches
                && s.allows(Use::Tunnel)
        })
        .collect()
}

/// Gives `node` the tunnel addresses its pools call for and takes back the others, writing the
/// Node when a field changes. Returns the Node as stored afterwards (`None`: no such Node,
/// nothing done).
pub fn reconcile(
    store: &dyn Datastore,
    node_name: &str,
    pools: &[IpPool],
    reservations: &[IpNet],
) -> Result<Option<Node>, TunnelError> {
    let key = Kind::Node.key(None, node_name);
    let Some(kv) = store.get(&key)? else {
        tracing::debug!(node = node_name, "no Node resource yet: no tunnel address");
        return Ok(None);
    };
    let node = match Resource::from_stored(Kind::Node, &kv.value) {
        Ok(Resource::Node(n)) => n,
        Ok(_) => unreachable!("a Node key decodes to a Node"),
        Err(e) => {
            return Err(TunnelError::Node {
                node: node_name.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let ipam = Ipam::new(store);
    let mut updated = node.clone();
    let mut taken: Vec<(TunnelKind, IpAddr)> = Vec::new();
    let result = (|| -> Result<(), TunnelError> {
        for kind in TunnelKind::ALL {
            let candidates = tunnel_pools(kind, &node, pools);
            if candidates.is_empty() {
                remove(&ipam, &mut updated, kind)?;
            } else if let Some(ip) = ensure(&ipam, &mut updated, kind, candidates, reservations)? {
                taken.push((kind, ip));
            }
        }
        Ok(())
    })();
    let result = result.and_then(|()| {
        if updated != node {
            let stored = Resource::Node(updated.clone()).to_stored();
            store.update(&key, &stored, Some(kv.mod_revision))?;
            tracing::info!(
                node = node_name,
                vxlan = TunnelKind::Vxlan.get(&updated),
                vxlan_v6 = TunnelKind::VxlanV6.get(&updated),
                ipip = TunnelKind::Ipip.get(&updated),
                "tunnel addresses recorded on the Node"
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        // As calico-node: what this pass took goes back, so a retry starts clean.
        for (kind, ip) in taken {
            if let Err(re) = ipam.release_by_handle(&kind.handle(node_name)) {
                tracing::error!(%ip, error = %re, "could not release a tunnel address after a failure");
            }
        }
        return Err(e);
    }
    Ok(Some(updated))
}

/// Keeps the node's address if it is still its own and in a candidate pool; else takes a new
/// one. Returns the address taken, if one was.
fn ensure(
    ipam: &Ipam<'_>,
    node: &mut Node,
    kind: TunnelKind,
    candidates: Vec<PoolSpec>,
    reservations: &[IpNet],
) -> Result<Option<IpAddr>, TunnelError> {
    let name = node.metadata.name.clone();
    let handle = kind.handle(&name);
    let current = kind.get(node).to_owned();
    let mut release = true;
    if let Ok(ip) = current.parse::<IpAddr>() {
        match ipam.get_allocation(ip)? {
            AllocationStatus::InUse(info) => {
                let ours = info.attrs.get(gingham_ipam::ATTR_TYPE).map(String::as_str)
                    == Some(kind.attr_type())
                    && info.attrs.get(gingham_ipam::ATTR_NODE) == Some(&name);
                if ours {
                    if candidates.iter().any(|p| p.cidr.contains(&ip)) {
                        return Ok(None);
                    }
                    tracing::info!(%ip, kind = kind.attr_type(), "tunnel address no longer in a qualifying pool; replacing it");
                } else {
                    // Someone else's address (a workload's): leave it, take another.
                    tracing::warn!(%ip, kind = kind.attr_type(), "the Node's tunnel address belongs to something else; taking another");
                    release = false;
                }
            }
            _ => {
                tracing::info!(%ip, kind = kind.attr_type(), "the Node's tunnel address is not allocated; taking one")
            }
        }
    }
    if release {
        ipam.release_by_handle(&handle)?;
    }
    let (pools_v4, pools_v6) = if kind.v6() {
        (Vec::new(), candidates)
    } else {
        (candidates, Vec::new())
    };
    let req = AssignRequest {
        handle_id: handle,
        attrs: BTreeMap::from([
            (gingham_ipam::ATTR_NODE.to_owned(), name.clone()),
            (
                gingham_ipam::ATTR_TYPE.to_owned(),
                kind.attr_type().to_owned(),
            ),
        ]),
        node: name,
        num_v4: usize::from(!kind.v6()),
        num_v6: usize::from(kind.v6()),
        pools_v4,
        pools_v6,
        reservations: reservations.to_vec(),
        max_blocks_per_host: None,
        intended_use: Use::Tunnel,
    };
    let got = ipam.auto_assign(&req)?;
    let Some(a) = got.v4.first().or(got.v6.first()) else {
        return Ok(None);
    };
    tracing::info!(ip = %a.ip, kind = kind.attr_type(), "tunnel address assigned");
    kind.set(node, a.ip.to_string());
    Ok(Some(a.ip))
}

/// Releases the node's address of `kind` and clears the field.
fn remove(ipam: &Ipam<'_>, node: &mut Node, kind: TunnelKind) -> Result<(), TunnelError> {
    let released = ipam.release_by_handle(&kind.handle(&node.metadata.name))?;
    if !released.is_empty() {
        tracing::info!(
            ?released,
            kind = kind.attr_type(),
            "tunnel address released (no pool calls for it)"
        );
    }
    if !kind.get(node).is_empty() {
        kind.set(node, String::new());
    }
    Ok(())
}
