//! Read-only views: a node's blocks, utilisation (`ipam show`), one address (`ipam show --ip`)
//! and the consistency check (`ipam check`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::addr::{self, Family, RangeSet, Reservations};
use crate::block::sanitize_handle;
use crate::error::Result;
use crate::ipam::{Ipam, parse};
use crate::pool::PoolSpec;
use crate::stored::{self, BlockAffinity, IpamHandle};

/// Utilisation of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockUsage {
    pub cidr: IpNet,
    /// The stored affinity (`host:<node>`), if any.
    pub affinity: Option<String>,
    pub total: u64,
    /// Allocated or cooling down.
    pub in_use: u64,
    /// Covered by an IPReservation (allocated or not).
    pub reserved: u64,
    /// Neither allocated nor reserved.
    pub free: u64,
}

/// Utilisation of one pool (totals cover the whole pool CIDR, blocks or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub total: u128,
    pub in_use: u128,
    pub reserved: u128,
    pub free: u128,
    pub blocks: Vec<BlockUsage>,
}

/// The result of [`Ipam::show`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
    /// Blocks that lie in no pool (their pool was deleted).
    pub orphan_blocks: Vec<BlockUsage>,
}

/// One allocated address (for `ipam show --ip`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationInfo {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle_id: Option<String>,
    pub attrs: BTreeMap<String, String>,
    /// The block's affinity, e.g. `host:node-1`.
    pub block_affinity: Option<String>,
}

/// The state of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocationStatus {
    NotAssigned,
    /// Released, still cooling down.
    CoolingDown {
        ip: IpAddr,
        block: IpNet,
    },
    InUse(AllocationInfo),
}

/// An allocation whose owner is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakedAllocation {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle_id: Option<String>,
    pub attrs: BTreeMap<String, String>,
}

/// A block or affinity that belongs to a node that no longer exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGone {
    pub node: String,
    pub block: IpNet,
}

/// An affinity record that does not match its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinityProblem {
    pub node: String,
    pub block: IpNet,
    pub problem: String,
}

/// A handle whose recorded count for a block differs from the block's allocations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleMismatch {
    pub handle_id: String,
    pub block: String,
    /// The count in the handle record (0 if the record or its entry is missing).
    pub recorded: i64,
    /// The addresses the block actually holds for the handle.
    pub actual: i64,
}

/// What a workload endpoint says it holds, for [`Ipam::check_with_endpoints`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointClaim {
    /// How the endpoint is named in reports, e.g. `shop/node--a-k8s-web-eth0`.
    pub endpoint: String,
    /// The container the endpoint belongs to, as the runtime named it; its addresses must be
    /// held by a handle for that container (`<network>.<containerID>`).
    pub container_id: String,
    pub ips: Vec<IpAddr>,
}

/// An address an endpoint lists that IPAM does not hold for the endpoint's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointMismatch {
    pub endpoint: String,
    pub ip: IpAddr,
    /// What IPAM records instead: the handle holding it, or why none does.
    pub problem: String,
}

/// An address listed by more than one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedAddress {
    pub ip: IpAddr,
    pub endpoints: Vec<String>,
}

/// True if `handle` is a handle of container `container_id`: the ID itself or
/// `<network>.<containerID>`.
pub fn handle_is_for_container(handle: &str, container_id: &str) -> bool {
    let handle = sanitize_handle(handle);
    !container_id.is_empty()
        && (handle == container_id
            || handle
                .strip_suffix(container_id)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// The result of [`Ipam::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub blocks: usize,
    pub allocations: usize,
    pub handles: usize,
    /// Allocations without a handle, or whose owner the caller says is gone.
    pub leaked: Vec<LeakedAllocation>,
    pub blocks_of_missing_nodes: Vec<NodeGone>,
    pub affinities_of_missing_nodes: Vec<NodeGone>,
    pub affinity_problems: Vec<AffinityProblem>,
    pub handle_mismatches: Vec<HandleMismatch>,
    /// Keys whose value cannot be read.
    pub corrupt: Vec<String>,
    /// Endpoint addresses that IPAM holds for another owner, or not at all.
    pub endpoint_mismatches: Vec<EndpointMismatch>,
    /// Addresses more than one endpoint lists.
    pub shared_addresses: Vec<SharedAddress>,
}

impl CheckReport {
    /// True if nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty()
            && self.blocks_of_missing_nodes.is_empty()
            && self.affinities_of_missing_nodes.is_empty()
            && self.affinity_problems.is_empty()
            && self.handle_mismatches.is_empty()
            && self.corrupt.is_empty()
            && self.endpoint_mismatches.is_empty()
            && self.shared_addresses.is_empty()
    }
}

impl Ipam<'_> {
    /// The blocks `node` holds a confirmed affinity to, both families, in key order. The agent
    /// installs a blackhole route for each.
    pub fn blocks_for_node(&self, node: &str) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            for (cidr, aff) in self.list_affinities(node, family)? {
                if aff.value.is_confirmed() {
                    out.push(cidr);
                }
            }
        }
        Ok(out)
    }

    /// The addresses `handle_id` holds, following its handle record.
    pub fn ips_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>> {
        let handle = sanitize_handle(handle_id);
        let Some(h) = self.read_handle(handle)? else {
            return Ok(Vec::new());
        };
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let mut out = Vec::new();
        for entry in h.value.block.keys() {
            let Ok(cidr) = entry.parse::<IpNet>() else {
                continue;
            };
            if let Some(b) = self.read_block(&cidr, cooldown)? {
                out.extend(b.value.ips_by_handle(handle));
            }
        }
        Ok(out)
    }

    /// Every allocated address (cooling-down ones aside), with its handle, attributes and
    /// block affinity, in block order: what a garbage collector walks.
    pub fn allocations(&self) -> Result<Vec<AllocationInfo>> {
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let mut out = Vec::new();
        for b in self.list_blocks(None, cooldown)? {
            let b = &b.value;
            for o in 0..b.num_addresses() {
                let Some(a) = b.active(o) else {
                    continue;
                };
                out.push(AllocationInfo {
                    ip: b.ip_at(o),
                    block: b.cidr,
                    handle_id: a
                        .handle_id
                        .as_deref()
                        .map(|h| sanitize_handle(h).to_owned()),
                    attrs: a.secondary.clone().unwrap_or_default(),
                    block_affinity: b.affinity.clone(),
                });
            }
        }
        Ok(out)
    }

    /// What holds `ip`, if anything.
    pub fn get_allocation(&self, ip: IpAddr) -> Result<AllocationStatus> {
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let blocks = self.list_blocks(Some(Family::of(ip)), cooldown)?;
        let Some(b) = blocks.iter().find(|b| b.value.cidr.contains(&ip)) else {
            return Ok(AllocationStatus::NotAssigned);
        };
        let b = &b.value;
        let o = b.ordinal(ip).expect("block contains the address");
        if !b.is_taken(o) {
            return Ok(AllocationStatus::NotAssigned);
        }
        let Some(a) = b.active(o) else {
            return Ok(AllocationStatus::CoolingDown { ip, block: b.cidr });
        };
        Ok(AllocationStatus::InUse(AllocationInfo {
            ip,
            block: b.cidr,
            handle_id: a
                .handle_id
                .as_deref()
                .map(|h| sanitize_handle(h).to_owned()),
            attrs: a.secondary.clone().unwrap_or_default(),
            block_affinity: b.affinity.clone(),
        }))
    }

    /// Utilisation per pool and per block (`ipam show [--show-blocks]`). `pools` should be
    /// every pool, enabled or not; a block belongs to the first pool that contains it.
    pub fn show(&self, pools: &[PoolSpec], reservations: &[IpNet]) -> Result<Usage> {
        let res = Reservations::new(reservations);
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let mut usage = Usage {
            pools: pools
                .iter()
                .map(|p| PoolUsage {
                    name: p.name.clone(),
                    cidr: p.cidr,
                    total: 0,
                    in_use: 0,
                    reserved: 0,
                    free: 0,
                    blocks: Vec::new(),
                })
                .collect(),
            orphan_blocks: Vec::new(),
        };
        for b in self.list_blocks(None, cooldown)? {
            let b = b.value;
            let bu = BlockUsage {
                cidr: b.cidr,
                affinity: b.affinity.clone(),
                total: b.num_addresses() as u64,
                in_use: b.num_in_use() as u64,
                reserved: b.num_reserved(&res) as u64,
                free: b.num_free(&res) as u64,
            };
            match usage
                .pools
                .iter_mut()
                .find(|p| p.cidr.contains(&b.cidr) || b.cidr.contains(&p.cidr))
            {
                Some(p) => p.blocks.push(bu),
                None => usage.orphan_blocks.push(bu),
            }
        }
        for p in &mut usage.pools {
            let family = Family::of_net(&p.cidr);
            let (a, z) = addr::range(&p.cidr);
            p.total = addr::size(&p.cidr);
            p.reserved = res.set(family).count_within(a, z);
            p.in_use = p.blocks.iter().map(|b| u128::from(b.in_use)).sum();
            let in_blocks_free: u128 = p.blocks.iter().map(|b| u128::from(b.free)).sum();
            // Space outside every block: the pool minus reservations minus the blocks.
            let mut covered = RangeSet::new();
            for b in &p.blocks {
                let (s, e) = addr::range(&b.cidr);
                covered.insert(s.max(a), e.min(z));
            }
            let reserved_set = res.set(family);
            let mut outside: u128 = p.total.saturating_sub(covered.count_within(a, z));
            // Reserved addresses outside the blocks are not free either.
            let reserved_outside =
                p.reserved
                    .saturating_sub(count_intersection(reserved_set, &covered, a, z));
            outside = outside.saturating_sub(reserved_outside);
            p.free = in_blocks_free.saturating_add(outside);
        }
        Ok(usage)
    }

    /// [`Ipam::check`], and also every endpoint's addresses against IPAM: each address an
    /// endpoint lists must be allocated to a handle of the endpoint's container, and no address
    /// may be listed by two endpoints.
    pub fn check_with_endpoints(
        &self,
        is_live: &dyn Fn(&str, &BTreeMap<String, String>) -> bool,
        live_nodes: &[String],
        endpoints: &[EndpointClaim],
    ) -> Result<CheckReport> {
        let mut report = self.check(is_live, live_nodes)?;
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let blocks = self.list_blocks(None, cooldown)?;
        let mut listed: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for e in endpoints {
            for ip in &e.ips {
                listed.entry(*ip).or_default().push(e.endpoint.clone());
                let problem = match blocks.iter().find(|b| b.value.cidr.contains(ip)) {
                    None => Some("IPAM has no block holding it (it is not allocated)".to_owned()),
                    Some(b) => {
                        let b = &b.value;
                        let o = b.ordinal(*ip).expect("the block contains the address");
                        match b.active(o) {
                            None => Some("IPAM has it free (not allocated)".to_owned()),
                            Some(a) => match a.handle_id.as_deref() {
                                None => Some("IPAM holds it without a handle".to_owned()),
                                Some(h) if handle_is_for_container(h, &e.container_id) => None,
                                Some(h) => Some(format!(
                                    "IPAM holds it for handle {}, not for this endpoint's container {}",
                                    sanitize_handle(h),
                                    e.container_id
                                )),
                            },
                        }
                    }
                };
                if let Some(problem) = problem {
                    report.endpoint_mismatches.push(EndpointMismatch {
                        endpoint: e.endpoint.clone(),
                        ip: *ip,
                        problem,
                    });
                }
            }
        }
        for (ip, mut eps) in listed {
            if eps.len() > 1 {
                eps.sort();
                report
                    .shared_addresses
                    .push(SharedAddress { ip, endpoints: eps });
            }
        }
        Ok(report)
    }

    /// Checks the IPAM data for leaks and inconsistencies (`ipam check`). `is_live(handle,
    /// attrs)` says whether an allocation's owner still exists (the caller knows pods, workload
    /// endpoints and tunnel addresses); `live_nodes` lists the nodes that exist.
    pub fn check(
        &self,
        is_live: &dyn Fn(&str, &BTreeMap<String, String>) -> bool,
        live_nodes: &[String],
    ) -> Result<CheckReport> {
        let nodes: BTreeSet<&str> = live_nodes.iter().map(String::as_str).collect();
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let mut report = CheckReport::default();

        // Blocks and their allocations.
        let mut actual: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut block_hosts: BTreeMap<IpNet, Option<String>> = BTreeMap::new();
        for kv in self.store.list(stored::BLOCK_PREFIX)?.kvs {
            if stored::parse_block_key(&kv.key).is_none() {
                continue;
            }
            let block = match self.decode_block(&kv, cooldown) {
                Ok(b) => b.value,
                Err(e) => {
                    report.corrupt.push(format!("{}: {e}", kv.key));
                    continue;
                }
            };
            report.blocks += 1;
            block_hosts.insert(block.cidr, block.host().map(str::to_owned));
            if let Some(host) = block.host()
                && !nodes.contains(host)
            {
                report.blocks_of_missing_nodes.push(NodeGone {
                    node: host.to_owned(),
                    block: block.cidr,
                });
            }
            for o in 0..block.num_addresses() {
                let Some(a) = block.active(o) else {
                    continue;
                };
                report.allocations += 1;
                let attrs = a.secondary.clone().unwrap_or_default();
                let handle = a
                    .handle_id
                    .as_deref()
                    .map(|h| sanitize_handle(h).to_owned());
                match &handle {
                    Some(h) => {
                        *actual
                            .entry((h.clone(), block.cidr.to_string()))
                            .or_insert(0) += 1;
                        if !is_live(h, &attrs) {
                            report.leaked.push(LeakedAllocation {
                                ip: block.ip_at(o),
                                block: block.cidr,
                                handle_id: handle.clone(),
                                attrs,
                            });
                        }
                    }
                    None => report.leaked.push(LeakedAllocation {
                        ip: block.ip_at(o),
                        block: block.cidr,
                        handle_id: None,
                        attrs,
                    }),
                }
            }
        }

        // Handles against the blocks.
        let mut recorded: BTreeMap<(String, String), i64> = BTreeMap::new();
        for kv in self.store.list(stored::HANDLE_PREFIX)?.kvs {
            let id = kv.key[stored::HANDLE_PREFIX.len()..].to_owned();
            let h: IpamHandle = match parse(&kv, |b| serde_json::from_slice(b)) {
                Ok(h) => h,
                Err(e) => {
                    report.corrupt.push(format!("{}: {e}", kv.key));
                    continue;
                }
            };
            report.handles += 1;
            for (block, n) in h.block {
                recorded.insert((sanitize_handle(&id).to_owned(), block), n);
            }
        }
        let keys: BTreeSet<&(String, String)> = actual.keys().chain(recorded.keys()).collect();
        for k in keys {
            let a = actual.get(k).copied().unwrap_or(0);
            let r = recorded.get(k).copied().unwrap_or(0);
            if a != r {
                report.handle_mismatches.push(HandleMismatch {
                    handle_id: k.0.clone(),
                    block: k.1.clone(),
                    recorded: r,
                    actual: a,
                });
            }
        }

        // Affinities against the blocks and the nodes.
        let mut affine: BTreeSet<(String, IpNet)> = BTreeSet::new();
        for kv in self.store.list(stored::HOST_PREFIX)?.kvs {
            let Some((node, cidr)) = stored::parse_affinity_key(&kv.key) else {
                continue;
            };
            let aff: BlockAffinity = match parse(&kv, BlockAffinity::from_bytes) {
                Ok(a) => a,
                Err(e) => {
                    report.corrupt.push(format!("{}: {e}", kv.key));
                    continue;
                }
            };
            affine.insert((node.clone(), cidr));
            if !nodes.contains(node.as_str()) {
                report.affinities_of_missing_nodes.push(NodeGone {
                    node: node.clone(),
                    block: cidr,
                });
            }
            let problem = match block_hosts.get(&cidr) {
                None => Some("the block does not exist".to_owned()),
                Some(h) if h.as_deref() != Some(node.as_str()) => Some(match h {
                    Some(h) => format!("the block is affine to node {h}"),
                    None => "the block has no affinity".to_owned(),
                }),
                Some(_) if !aff.is_confirmed() => {
                    Some(format!("the affinity is left in state {:?}", aff.state))
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                report.affinity_problems.push(AffinityProblem {
                    node,
                    block: cidr,
                    problem,
                });
            }
        }
        for (cidr, host) in &block_hosts {
            if let Some(h) = host
                && !affine.contains(&(h.clone(), *cidr))
            {
                report.affinity_problems.push(AffinityProblem {
                    node: h.clone(),
                    block: *cidr,
                    problem: "the block is affine to the node but the node has no affinity record"
                        .into(),
                });
            }
        }
        Ok(report)
    }
}

/// How many addresses of `[a, z]` lie in both sets.
fn count_intersection(x: &RangeSet, y: &RangeSet, a: u128, z: u128) -> u128 {
    // Both sets are small (reservations and blocks); count x within each range of y.
    y.ranges()
        .iter()
        .filter_map(|&(s, e)| {
            let (s, e) = (s.max(a), e.min(z));
            (s <= e).then(|| x.count_within(s, e))
        })
        .sum()
}
