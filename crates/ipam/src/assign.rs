//! Assignment: automatic (`AutoAssign`) and of a specific address (`AssignIP`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use gingham_datastore::{Op, Txn};
use ipnet::IpNet;

use crate::addr::{self, Family, Reservations};
use crate::block::{AssignRefusal, host_affinity};
use crate::error::{Error, Result};
use crate::ipam::{
    DEFAULT_MAX_BLOCKS_PER_HOST, EMPTY_BLOCK_MIN_RECLAIM_AGE, Ipam, IpamConfig, Versioned, compare,
    put_block,
};
use crate::pool::{PoolSpec, Use};
use crate::stored::{self, AllocationBlock, BlockAffinity};
use crate::time;

/// A request for automatically chosen addresses (Calico's `AutoAssignArgs`).
#[derive(Clone, Debug, Default)]
pub struct AssignRequest {
    /// The owner of the addresses, e.g. `k8s-pod-network.<containerID>`.
    pub handle_id: String,
    /// Attributes stored with the allocation (`namespace`, `pod`, `node`, `timestamp`, ...).
    pub attrs: BTreeMap<String, String>,
    /// The node the addresses are for.
    pub node: String,
    pub num_v4: usize,
    pub num_v6: usize,
    /// Candidate pools (already narrowed by annotations or CNI config, if any).
    pub pools_v4: Vec<PoolSpec>,
    pub pools_v6: Vec<PoolSpec>,
    /// Every IPReservation CIDR; reserved addresses are never handed out.
    pub reservations: Vec<IpNet>,
    /// A per-request block limit; the stricter of this and the configuration applies.
    pub max_blocks_per_host: Option<usize>,
    /// What the addresses are for; pools must allow it. Defaults to `Workload`.
    pub intended_use: Use,
}

/// One assigned address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub ip: IpAddr,
    /// The block the address came from.
    pub block: IpNet,
    /// The name of the pool the block belongs to.
    pub pool: String,
    /// True if the block is affine to another node (the address needs a host route there).
    pub borrowed: bool,
}

/// The addresses of a successful [`Ipam::auto_assign`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssignResult {
    pub v4: Vec<Assigned>,
    pub v6: Vec<Assigned>,
}

/// A request for one specific address (Calico's `AssignIPArgs`; the CNI `ipAddrs` annotation).
#[derive(Clone, Debug, Default)]
pub struct AssignIpRequest {
    pub ip: Option<IpAddr>,
    pub handle_id: String,
    pub attrs: BTreeMap<String, String>,
    pub node: String,
    /// All pools (of any family); the address must lie in an enabled one.
    pub pools: Vec<PoolSpec>,
    pub reservations: Vec<IpNet>,
    pub intended_use: Use,
}

/// How many wholly reserved blocks one search for a new block steps over at most.
const MAX_RESERVED_SKIPS: usize = 1 << 16;

/// The outcome of trying one block.
enum BlockTry {
    Assigned(Vec<IpAddr>),
    Full,
    Conflict,
}

/// What the search for a new block found.
enum Usable {
    /// A block CIDR nobody has created: claim it.
    Free(IpNet),
    /// An existing block affine to this node with room, but no affinity record for it.
    AffineUnrecorded(Box<Versioned<AllocationBlock>>),
    None,
}

impl Ipam<'_> {
    /// Assigns `num_v4` IPv4 and `num_v6` IPv6 addresses to `handle_id` on `node`, the way Calico
    /// does: first from the node's confirmed affine blocks, then from a newly claimed block, then
    /// (unless strict affinity is on) borrowed from other nodes' blocks. All or nothing: if the
    /// request cannot be met in full, whatever this call took is released and an error says why.
    pub fn auto_assign(&self, req: &AssignRequest) -> Result<AssignResult> {
        crate::names::check_handle(&req.handle_id)?;
        crate::names::check_node(&req.node)?;
        for (pools, fam) in [(&req.pools_v4, Family::V4), (&req.pools_v6, Family::V6)] {
            if let Some(p) = pools.iter().find(|p| p.family() != fam) {
                return Err(Error::Invalid(format!(
                    "pool {} ({}) is given as an {fam} pool",
                    p.name, p.cidr
                )));
            }
        }
        let config = self.config()?;
        let reservations = Reservations::new(&req.reservations);
        tracing::info!(node = %req.node, handle = %req.handle_id, v4 = req.num_v4, v6 = req.num_v6, "auto-assigning addresses");
        let mut result = AssignResult::default();
        if req.num_v4 > 0 {
            result.v4 = self.auto_assign_family(Family::V4, req, &config, &reservations)?;
        }
        if req.num_v6 > 0 {
            match self.auto_assign_family(Family::V6, req, &config, &reservations) {
                Ok(v6) => result.v6 = v6,
                Err(e) => {
                    self.roll_back(&req.handle_id, &result.v4);
                    return Err(e);
                }
            }
        }
        Ok(result)
    }

    fn roll_back(&self, handle: &str, got: &[Assigned]) {
        if got.is_empty() {
            return;
        }
        let ips: Vec<IpAddr> = got.iter().map(|a| a.ip).collect();
        if let Err(e) = self.release_ips_of_handle(&ips, Some(handle)) {
            tracing::error!(%handle, error = %e, ?ips, "could not release a partial assignment; `gingham ipam check` will report it");
        }
    }

    fn auto_assign_family(
        &self,
        family: Family,
        req: &AssignRequest,
        config: &IpamConfig,
        reservations: &Reservations,
    ) -> Result<Vec<Assigned>> {
        let num = match family {
            Family::V4 => req.num_v4,
            Family::V6 => req.num_v6,
        };
        let given = match family {
            Family::V4 => &req.pools_v4,
            Family::V6 => &req.pools_v6,
        };
        let pools = select_pools(family, &req.node, given, req.intended_use)?;
        let mut got = Vec::new();
        match self.fill(
            family,
            num,
            req,
            &pools,
            given,
            config,
            reservations,
            &mut got,
        ) {
            Ok(()) => Ok(got),
            Err(e) => {
                self.roll_back(&req.handle_id, &got);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        family: Family,
        num: usize,
        req: &AssignRequest,
        pools: &[PoolSpec],
        given: &[PoolSpec],
        config: &IpamConfig,
        reservations: &Reservations,
        got: &mut Vec<Assigned>,
    ) -> Result<()> {
        let node = req.node.as_str();
        let cooldown = i64::from(config.ip_cooldown_seconds);
        let max_blocks = effective_max_blocks(req.max_blocks_per_host, config);
        let mut conflicts = 0usize;
        let mut cleaned_strays = false;
        let conflict = |conflicts: &mut usize| -> Result<()> {
            *conflicts += 1;
            if *conflicts >= self.max_conflicts {
                return Err(Error::Contention {
                    what: format!("assigning {family} addresses to node {node}"),
                    attempts: *conflicts,
                });
            }
            crate::ipam::backoff(*conflicts);
            Ok(())
        };

        // Phase 1 and 2: the node's own blocks, claiming new ones as needed. Every round either
        // assigns, claims or repairs a block, or counts a conflict; a round that does none of
        // these (stored data this loop cannot see, e.g. an affinity under a key it cannot
        // parse) must not repeat forever, writing each time: the rounds are bounded.
        let mut no_new_blocks_reason = None;
        let max_rounds = num + 4 * max_blocks + 2 * self.max_conflicts + 16;
        let mut rounds = 0usize;
        'outer: while got.len() < num {
            rounds += 1;
            if rounds > max_rounds {
                return Err(Error::NoProgress {
                    what: format!("assigning {family} addresses to node {node}"),
                    rounds: max_rounds,
                });
            }
            let rem = num - got.len();
            let affinities = self.list_affinities(node, family)?;
            let (allowed, others): (Vec<_>, Vec<_>) = affinities
                .into_iter()
                .partition(|(cidr, _)| pool_of(pools, cidr).is_some());
            if !cleaned_strays {
                cleaned_strays = true;
                self.release_strays(node, given, &others);
            }
            let owned = allowed.len();
            for (cidr, aff) in allowed {
                if reservations.matches_whole(&cidr) {
                    continue;
                }
                let Some(block) = self.block_for_affinity(node, &cidr, &aff, cooldown)? else {
                    // The affinity was repaired or removed; look again.
                    conflict(&mut conflicts)?;
                    continue 'outer;
                };
                if block.value.num_free(reservations) == 0 {
                    continue;
                }
                match self.try_block(&block, rem, req, reservations)? {
                    BlockTry::Assigned(ips) => {
                        let pool = pool_of(pools, &cidr).expect("partitioned by pool");
                        got.extend(ips.into_iter().map(|ip| Assigned {
                            ip,
                            block: cidr,
                            pool: pool.name.clone(),
                            borrowed: false,
                        }));
                        continue 'outer;
                    }
                    BlockTry::Full => continue,
                    BlockTry::Conflict => {
                        conflict(&mut conflicts)?;
                        continue 'outer;
                    }
                }
            }

            // No block of this node has room.
            if owned >= max_blocks {
                return Err(Error::BlockLimit {
                    family,
                    node: node.to_owned(),
                    owned,
                    max: max_blocks,
                });
            }
            if !config.auto_allocate_blocks {
                no_new_blocks_reason =
                    Some("automatic block allocation is disabled (autoAllocateBlocks=false)");
                break;
            }
            match self.find_usable_block(node, pools, reservations, cooldown)? {
                Usable::Free(cidr) => {
                    let aff = self.read_affinity(node, &cidr)?;
                    if !self.claim_block(node, &cidr, aff.map(|a| a.rev))? {
                        conflict(&mut conflicts)?;
                    }
                }
                Usable::AffineUnrecorded(block) => {
                    let aff = self.read_affinity(node, &block.value.cidr)?;
                    if !self.confirm_affinity(node, &block, aff.map(|a| a.rev))? {
                        conflict(&mut conflicts)?;
                    }
                }
                Usable::None => {
                    no_new_blocks_reason = Some("every block of the pools is claimed");
                    break;
                }
            }
        }
        if got.len() >= num {
            return Ok(());
        }

        // Phase 3: borrow from blocks affine to other nodes (or to none).
        if !config.strict_affinity {
            self.borrow(
                family,
                num,
                req,
                pools,
                reservations,
                cooldown,
                got,
                &mut || conflict(&mut conflicts),
            )?;
            if got.len() >= num {
                return Ok(());
            }
        }

        let why = no_new_blocks_reason.unwrap_or("no new block could be claimed");
        let reason = if config.strict_affinity {
            format!(
                "all blocks affine to the node are full, {why}, and strict affinity forbids borrowing"
            )
        } else {
            format!(
                "all blocks affine to the node are full, {why}, and no other block has a free address to borrow"
            )
        };
        Err(Error::Exhausted {
            family,
            node: node.to_owned(),
            pools: pools
                .iter()
                .map(PoolSpec::label)
                .collect::<Vec<_>>()
                .join(", "),
            reason: format!("{reason} (assigned {} of {num} requested)", got.len()),
        })
    }

    /// Releases, if empty, blocks still affine to `node` that lie in a pool that no longer
    /// selects it (best effort, as Calico does before assigning).
    fn release_strays(
        &self,
        node: &str,
        given: &[PoolSpec],
        others: &[(IpNet, Versioned<BlockAffinity>)],
    ) {
        for (cidr, _) in others {
            let Some(pool) = given.iter().find(|p| p.cidr.contains(cidr)) else {
                continue;
            };
            if pool.node_selector_matches {
                continue;
            }
            match self.release_affinity(node, cidr, true) {
                Ok(true) => {
                    tracing::info!(%node, block = %cidr, pool = %pool.name, "released empty block of a pool that no longer selects the node")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%node, block = %cidr, error = %e, "could not release stray block")
                }
            }
        }
    }

    /// The block an affinity refers to, repairing what Calico would repair: a missing block is
    /// created, a block affine elsewhere makes the affinity stale (deleted), an unconfirmed
    /// affinity of a matching block is confirmed. Returns `None` after any such repair (or a
    /// failed attempt at one); the caller looks again.
    fn block_for_affinity(
        &self,
        node: &str,
        cidr: &IpNet,
        aff: &Versioned<BlockAffinity>,
        cooldown: i64,
    ) -> Result<Option<Versioned<AllocationBlock>>> {
        let Some(block) = self.read_block(cidr, cooldown)? else {
            tracing::info!(%node, block = %cidr, "affinity without a block; creating the block");
            self.claim_block(node, cidr, Some(aff.rev))?;
            return Ok(None);
        };
        if block.value.host() != Some(node) || block.value.affinity.is_none() {
            tracing::warn!(%node, block = %cidr, affinity = ?block.value.affinity, "deleting stale block affinity");
            let key = stored::affinity_key(node, cidr);
            let txn = Txn::new()
                .when(compare(&key, Some(aff.rev)))
                .then(Op::Delete { key });
            self.commit(&txn)?;
            return Ok(None);
        }
        if !aff.value.is_confirmed() {
            self.confirm_affinity(node, &block, Some(aff.rev))?;
            return Ok(None);
        }
        Ok(Some(block))
    }

    /// Takes up to `num` addresses from one block and records them on the handle, in one
    /// transaction over both.
    fn try_block(
        &self,
        block: &Versioned<AllocationBlock>,
        num: usize,
        req: &AssignRequest,
        reservations: &Reservations,
    ) -> Result<BlockTry> {
        let mut b = block.value.clone();
        let ips = b.auto_assign(num, &req.handle_id, &req.attrs, reservations);
        if ips.is_empty() {
            return Ok(BlockTry::Full);
        }
        if self.write_assignment(block, &mut b, &req.handle_id, ips.len())? {
            tracing::info!(node = %req.node, handle = %req.handle_id, block = %b.cidr, ?ips, "assigned addresses");
            Ok(BlockTry::Assigned(ips))
        } else {
            Ok(BlockTry::Conflict)
        }
    }

    /// Writes a block with new allocations and adds `count` to the handle's entry for it, if
    /// neither changed since they were read.
    fn write_assignment(
        &self,
        read: &Versioned<AllocationBlock>,
        updated: &mut AllocationBlock,
        handle_id: &str,
        count: usize,
    ) -> Result<bool> {
        let handle = self.read_handle(handle_id)?;
        let handle_rev = handle.as_ref().map(|h| h.rev);
        let mut h = handle.map(|h| h.value).unwrap_or_default();
        *h.block.entry(updated.cidr.to_string()).or_insert(0) += count as i64;
        let block_key = stored::block_key(&updated.cidr);
        let handle_key = stored::handle_key(handle_id);
        let txn = Txn::new()
            .when(compare(&block_key, Some(read.rev)))
            .when(compare(&handle_key, handle_rev))
            .then(put_block(&block_key, updated, true))
            .then(Op::Put {
                key: handle_key,
                value: stored::to_json(&h),
            });
        self.commit(&txn)
    }

    /// Finds a block to claim: the first unclaimed block on the node's walk through the pools,
    /// else an empty block another node has held for a while (reclaimed here).
    fn find_usable_block(
        &self,
        node: &str,
        pools: &[PoolSpec],
        reservations: &Reservations,
        cooldown: i64,
    ) -> Result<Usable> {
        let Some(family) = pools.first().map(PoolSpec::family) else {
            return Ok(Usable::None);
        };
        let existing: HashMap<IpNet, Versioned<AllocationBlock>> = self
            .list_blocks(Some(family), cooldown)?
            .into_iter()
            .map(|b| (b.value.cidr, b))
            .collect();
        let mut empties = Vec::new();
        for pool in pools {
            if reservations.matches_whole(&pool.cidr) {
                continue;
            }
            // The walk meets an unclaimed block within (existing blocks + 1) steps unless every
            // block exists; blocks skipped for reservations are bounded separately so that a
            // huge, partly reserved IPv6 pool cannot make this loop endless.
            let in_pool = existing.keys().filter(|c| pool.cidr.contains(*c)).count();
            let mut reserved_skips = 0usize;
            for cidr in pool.walk(node) {
                if reservations.matches_whole(&cidr) {
                    reserved_skips += 1;
                    if reserved_skips > MAX_RESERVED_SKIPS + in_pool {
                        break;
                    }
                    continue;
                }
                match existing.get(&cidr) {
                    None => return Ok(Usable::Free(cidr)),
                    Some(b)
                        if b.value.host() == Some(node) && b.value.num_free(reservations) > 0 =>
                    {
                        return Ok(Usable::AffineUnrecorded(Box::new(b.clone())));
                    }
                    Some(b) if b.value.is_empty() && b.value.num_free(reservations) > 0 => {
                        empties.push(b.clone());
                    }
                    Some(_) => {}
                }
            }
        }
        let now = self.now();
        for b in empties {
            let claimed = b
                .value
                .affinity_claim_time
                .as_deref()
                .and_then(time::parse)
                .unwrap_or(std::time::UNIX_EPOCH);
            if now.duration_since(claimed).unwrap_or_default() < EMPTY_BLOCK_MIN_RECLAIM_AGE {
                tracing::debug!(block = %b.value.cidr, "empty block was claimed recently; not reclaiming it");
                continue;
            }
            let cidr = b.value.cidr;
            let key = stored::block_key(&cidr);
            let mut txn = Txn::new()
                .when(compare(&key, Some(b.rev)))
                .then(Op::Delete { key });
            if let Some(owner) = b.value.host() {
                txn = txn.then(Op::Delete {
                    key: stored::affinity_key(owner, &cidr),
                });
            }
            if self.commit(&txn)? {
                tracing::info!(%node, block = %cidr, previous = ?b.value.affinity, "reclaimed an empty block");
                return Ok(Usable::Free(cidr));
            }
        }
        Ok(Usable::None)
    }

    #[allow(clippy::too_many_arguments)]
    fn borrow(
        &self,
        family: Family,
        num: usize,
        req: &AssignRequest,
        pools: &[PoolSpec],
        reservations: &Reservations,
        cooldown: i64,
        got: &mut Vec<Assigned>,
        on_conflict: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let blocks = self.list_blocks(Some(family), cooldown)?;
        for pool in pools {
            let mut mine: Vec<&Versioned<AllocationBlock>> = blocks
                .iter()
                .filter(|b| pool.cidr.contains(&b.value.cidr))
                .collect();
            mine.sort_by_key(|b| pool.walk_position(&req.node, &b.value.cidr));
            for b in mine {
                let cidr = b.value.cidr;
                if reservations.matches_whole(&cidr) {
                    continue;
                }
                let mut current = b.clone();
                loop {
                    if got.len() >= num {
                        return Ok(());
                    }
                    if current.value.num_free(reservations) == 0 {
                        break;
                    }
                    match self.try_block(&current, num - got.len(), req, reservations)? {
                        BlockTry::Assigned(ips) => {
                            let borrowed = current.value.host() != Some(req.node.as_str());
                            if borrowed {
                                tracing::info!(node = %req.node, block = %cidr, owner = ?current.value.affinity, ?ips, "borrowed addresses");
                            }
                            got.extend(ips.into_iter().map(|ip| Assigned {
                                ip,
                                block: cidr,
                                pool: pool.name.clone(),
                                borrowed,
                            }));
                        }
                        BlockTry::Full => break,
                        BlockTry::Conflict => on_conflict()?,
                    }
                    match self.read_block(&cidr, cooldown)? {
                        Some(v) => current = v,
                        None => break,
                    }
                }
            }
        }
        Ok(())
    }

    /// Assigns one specific address to `handle_id` on `node` (Calico's `AssignIP`). The address
    /// must lie in an enabled pool that allows the intended use, must not be reserved, and must be
    /// free. Its block is claimed for the node if it does not exist yet.
    pub fn assign_ip(&self, req: &AssignIpRequest) -> Result<Assigned> {
        let Some(ip) = req.ip else {
            return Err(Error::Invalid("no address given".into()));
        };
        crate::names::check_handle(&req.handle_id)?;
        crate::names::check_node(&req.node)?;
        for p in &req.pools {
            p.validate()?;
        }
        let enabled: Vec<&PoolSpec> = req.pools.iter().filter(|p| !p.disabled).collect();
        let Some(pool) = enabled.iter().find(|p| p.cidr.contains(&ip)) else {
            let list = enabled
                .iter()
                .map(|p| p.label())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::NotInPool {
                ip,
                pools: if list.is_empty() { "none".into() } else { list },
            });
        };
        if !pool.allows(req.intended_use) {
            return Err(Error::UseNotAllowed {
                ip,
                pool: pool.name.clone(),
                allowed: pool
                    .allowed_uses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                wanted: req.intended_use.to_string(),
            });
        }
        if let Some(cidr) = req.reservations.iter().find(|r| r.contains(&ip)) {
            return Err(Error::Reserved { ip, cidr: *cidr });
        }
        let config = self.config()?;
        let cooldown = i64::from(config.ip_cooldown_seconds);
        let cidr = addr::block_containing(ip, pool.block_size);
        let node = req.node.as_str();
        self.retry(&format!("assigning {ip} to node {node}"), |_| {
            let Some(block) = self.read_block(&cidr, cooldown)? else {
                let aff = self.read_affinity(node, &cidr)?;
                self.claim_block(node, &cidr, aff.map(|a| a.rev))?;
                return Ok(None);
            };
            if config.strict_affinity && block.value.host() != Some(node) {
                return Err(Error::AffinityMismatch {
                    ip,
                    block: cidr,
                    owner: match &block.value.affinity {
                        Some(a) => format!("has affinity {a}"),
                        None => "has no affinity".into(),
                    },
                    node: node.to_owned(),
                });
            }
            let mut b = block.value.clone();
            match b.assign(ip, &req.handle_id, &req.attrs) {
                Ok(()) => {}
                Err(AssignRefusal::InUse { handle }) => return Err(Error::InUse { ip, handle }),
                Err(AssignRefusal::CoolingDown) => return Err(Error::CoolingDown { ip }),
                Err(AssignRefusal::OutsideBlock) => {
                    return Err(Error::Corrupt {
                        key: stored::block_key(&cidr),
                        reason: format!("block does not contain {ip}"),
                    });
                }
            }
            if !self.write_assignment(&block, &mut b, &req.handle_id, 1)? {
                return Ok(None);
            }
            tracing::info!(%node, handle = %req.handle_id, %ip, "assigned requested address");
            Ok(Some(Assigned {
                ip,
                block: cidr,
                pool: pool.name.clone(),
                borrowed: block.value.affinity.as_deref() != Some(host_affinity(node).as_str()),
            }))
        })
    }
}

/// The pool (of `pools`) that contains a block.
fn pool_of<'p>(pools: &'p [PoolSpec], block: &IpNet) -> Option<&'p PoolSpec> {
    pools.iter().find(|p| p.cidr.contains(block))
}

/// The pools of one family that may serve `node` for `intended_use`, in the given order.
fn select_pools(
    family: Family,
    node: &str,
    given: &[PoolSpec],
    intended_use: Use,
) -> Result<Vec<PoolSpec>> {
    for p in given {
        p.validate()?;
    }
    let selecting: Vec<&PoolSpec> = given
        .iter()
        .filter(|p| !p.disabled && p.node_selector_matches)
        .collect();
    if selecting.is_empty() {
        let reason = if given.is_empty() {
            "no pools are configured".to_owned()
        } else {
            format!(
                "none of the pools is enabled and selects the node (pools: {})",
                given
                    .iter()
                    .map(|p| {
                        let why = if p.disabled {
                            "disabled"
                        } else {
                            "nodeSelector does not match"
                        };
                        format!("{} {}", p.label(), why)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Error::NoPool {
            family,
            node: node.to_owned(),
            reason,
        });
    }
    let allowed: Vec<PoolSpec> = selecting
        .iter()
        .filter(|p| p.allows(intended_use))
        .map(|p| (*p).clone())
        .collect();
    if allowed.is_empty() {
        return Err(Error::NoPool {
            family,
            node: node.to_owned(),
            reason: format!(
                "no pool that selects the node allows use {intended_use} (pools: {})",
                selecting
                    .iter()
                    .map(|p| p.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(allowed)
}

/// The stricter of the request's and the configuration's block limit, or Calico's default.
fn effective_max_blocks(requested: Option<usize>, config: &IpamConfig) -> usize {
    let global = config.max_blocks_per_host as usize;
    let n = match requested {
        Some(r) if r > 0 && global > 0 => r.min(global),
        Some(r) if r > 0 => r,
        _ => global,
    };
    if n == 0 {
        DEFAULT_MAX_BLOCKS_PER_HOST
    } else {
        n
    }
}
