//! Release of addresses (by address or by handle) and of block affinities.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gingham_datastore::{Op, Revision, Txn};
use ipnet::IpNet;

use crate::addr::Family;
use crate::block::sanitize_handle;
use crate::error::Result;
use crate::ipam::{Ipam, compare, put_block};
use crate::stored::{self, AllocationBlock};

/// What [`Ipam::release_ips`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// Addresses that were allocated and are now released.
    pub released: Vec<IpAddr>,
    /// Addresses that were not allocated (or not by the expected handle); nothing changed.
    pub not_allocated: Vec<IpAddr>,
}

impl Ipam<'_> {
    /// Releases the given addresses, whoever holds them. Idempotent: addresses that are not
    /// allocated are reported, not an error. An affine block that becomes empty stays (see
    /// [`Ipam::release_empty_blocks`]); a non-affine block that becomes empty is deleted.
    pub fn release_ips(&self, ips: &[IpAddr]) -> Result<ReleaseOutcome> {
        self.release_ips_of_handle(ips, None)
    }

    /// Like [`Ipam::release_ips`], but releases an address only while `handle` holds it.
    pub fn release_ips_of_handle(
        &self,
        ips: &[IpAddr],
        handle: Option<&str>,
    ) -> Result<ReleaseOutcome> {
        let mut out = ReleaseOutcome::default();
        let config = self.config()?;
        let cooldown = i64::from(config.ip_cooldown_seconds);
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        for family in [Family::V4, Family::V6] {
            let wanted: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| Family::of(*ip) == family)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let blocks: Vec<IpNet> = self
                .list_blocks(Some(family), cooldown)?
                .into_iter()
                .map(|b| b.value.cidr)
                .collect();
            for ip in wanted {
                match blocks.iter().find(|b| b.contains(&ip)) {
                    Some(b) => by_block.entry(*b).or_default().push(ip),
                    None => out.not_allocated.push(ip),
                }
            }
        }
        for (cidr, ips) in by_block {
            let (released, skipped) = self.release_in_block(&cidr, &ips, handle, cooldown)?;
            out.released.extend(released);
            out.not_allocated.extend(skipped);
        }
        Ok(out)
    }

    fn release_in_block(
        &self,
        cidr: &IpNet,
        ips: &[IpAddr],
        handle: Option<&str>,
        cooldown: i64,
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        let handle = handle.map(sanitize_handle);
        self.retry(&format!("releasing addresses in block {cidr}"), |_| {
            let Some(block) = self.read_block(cidr, cooldown)? else {
                return Ok(Some((Vec::new(), ips.to_vec())));
            };
            let held: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| {
                    let Some(o) = block.value.ordinal(*ip) else {
                        return false;
                    };
                    match (block.value.active(o), handle) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(a), Some(h)) => {
                            a.handle_id.as_deref().map(sanitize_handle) == Some(h)
                        }
                    }
                })
                .collect();
            let skipped: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| !held.contains(ip))
                .collect();
            if held.is_empty() {
                return Ok(Some((Vec::new(), skipped)));
            }
            let mut b = block.value.clone();
            let released = b.release(&held, cooldown, self.now());
            let mut per_handle: BTreeMap<String, i64> = BTreeMap::new();
            for (_, h) in &released {
                if let Some(h) = h {
                    *per_handle.entry(h.clone()).or_insert(0) += 1;
                }
            }
            let mut txn = self.block_write(block.rev, &mut b);
            for (h, n) in per_handle {
                txn = self.add_handle_decrement(txn, &h, cidr, Some(n))?;
            }
            if !self.commit(&txn)? {
                return Ok(None);
            }
            let released: Vec<IpAddr> = released.into_iter().map(|(ip, _)| ip).collect();
            tracing::info!(block = %cidr, ?released, "released addresses");
            Ok(Some((released, skipped)))
        })
    }

    /// The compare and write of an updated block: deleted if it is now empty and affine to no
    /// node, rewritten otherwise.
    fn block_write(&self, rev: Revision, b: &mut AllocationBlock) -> Txn {
        let key = stored::block_key(&b.cidr);
        let txn = Txn::new().when(compare(&key, Some(rev)));
        if b.is_empty() && b.affinity.is_none() && b.host_affinity.is_none() {
            tracing::info!(block = %b.cidr, "deleting empty block that has no affinity");
            txn.then(Op::Delete { key })
        } else {
            txn.then(put_block(&key, b, true))
        }
    }

    /// Adds to `txn` the decrement of a handle's count for a block (`None` removes the entry);
    /// the handle is deleted when no entry is left. A missing handle is left alone.
    fn add_handle_decrement(
        &self,
        txn: Txn,
        handle: &str,
        cidr: &IpNet,
        by: Option<i64>,
    ) -> Result<Txn> {
        let Some(h) = self.read_handle(handle)? else {
            tracing::warn!(%handle, block = %cidr, "released addresses of a handle that has no record");
            return Ok(txn);
        };
        let key = stored::handle_key(handle);
        let mut value = h.value;
        let entry = cidr.to_string();
        let left = match (value.block.get(&entry), by) {
            (Some(n), Some(by)) => n - by,
            _ => 0,
        };
        if left > 0 {
            value.block.insert(entry, left);
        } else {
            value.block.remove(&entry);
        }
        let txn = txn.when(compare(&key, Some(h.rev)));
        Ok(if value.block.is_empty() {
            txn.then(Op::Delete { key })
        } else {
            txn.then(Op::Put {
                key,
                value: stored::to_json(&value),
            })
        })
    }

    /// Releases every address held by `handle_id` (the CNI DEL path). Idempotent: an unknown
    /// handle releases nothing. Returns the released addresses.
    pub fn release_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>> {
        let handle = sanitize_handle(handle_id);
        let Some(h) = self.read_handle(handle)? else {
            tracing::debug!(%handle, "release by handle: no such handle");
            return Ok(Vec::new());
        };
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let mut released = Vec::new();
        for entry in h.value.block.keys() {
            let Ok(cidr) = entry.parse::<IpNet>() else {
                tracing::warn!(%handle, %entry, "handle names a malformed block CIDR; skipping it");
                continue;
            };
            let ips = self.retry(
                &format!("releasing handle {handle} in block {cidr}"),
                |_| {
                    let block = self.read_block(&cidr, cooldown)?;
                    let mut txn = Txn::new();
                    let mut ips = Vec::new();
                    match &block {
                        None => {
                            txn = txn.when(compare(&stored::block_key(&cidr), None));
                        }
                        Some(block) => {
                            let mut b = block.value.clone();
                            ips = b.release_by_handle(handle, cooldown, self.now());
                            txn = if ips.is_empty() {
                                txn.when(compare(&stored::block_key(&cidr), Some(block.rev)))
                            } else {
                                self.block_write(block.rev, &mut b)
                            };
                        }
                    }
                    // The handle no longer holds anything in this block.
                    let txn = self.add_handle_decrement(txn, handle, &cidr, None)?;
                    Ok(self.commit(&txn)?.then_some(ips))
                },
            )?;
            if !ips.is_empty() {
                tracing::info!(%handle, block = %cidr, ?ips, "released addresses by handle");
            }
            released.extend(ips);
        }
        Ok(released)
    }

    /// Releases `node`'s affinity to block `cidr`: an empty block is deleted, a non-empty one
    /// loses its affinity (its addresses stay allocated). With `must_be_empty`, a non-empty block
    /// is left alone. Returns true if an affinity was released; a stale affinity (its block is
    /// affine elsewhere) is deleted and reported as false.
    pub fn release_affinity(&self, node: &str, cidr: &IpNet, must_be_empty: bool) -> Result<bool> {
        let cooldown = i64::from(self.config()?.ip_cooldown_seconds);
        let aff_key = stored::affinity_key(node, cidr);
        self.retry(&format!("releasing the affinity of node {node} to block {cidr}"), |_| {
            let Some(aff) = self.read_affinity(node, cidr)? else {
                return Ok(Some(false));
            };
            let block = self.read_block(cidr, cooldown)?;
            let txn = Txn::new().when(compare(&aff_key, Some(aff.rev)));
            let (txn, released) = match block {
                None => (
                    txn.when(compare(&stored::block_key(cidr), None)),
                    true,
                ),
                Some(b) if b.value.host() != Some(node) => {
                    tracing::warn!(%node, block = %cidr, affinity = ?b.value.affinity, "deleting stale affinity");
                    (txn.when(compare(&stored::block_key(cidr), Some(b.rev))), false)
                }
                Some(b) if must_be_empty && !b.value.is_empty() => return Ok(Some(false)),
                Some(b) => {
                    let key = stored::block_key(cidr);
                    let txn = txn.when(compare(&key, Some(b.rev)));
                    let txn = if b.value.is_empty() {
                        txn.then(Op::Delete { key })
                    } else {
                        let mut nb = b.value.clone();
                        nb.affinity = None;
                        nb.affinity_claim_time = None;
                        nb.host_affinity = None;
                        txn.then(put_block(&key, &mut nb, true))
                    };
                    (txn, true)
                }
            };
            let txn = txn.then(Op::Delete {
                key: aff_key.clone(),
            });
            if !self.commit(&txn)? {
                return Ok(None);
            }
            if released {
                tracing::info!(%node, block = %cidr, "released block affinity");
            }
            Ok(Some(released))
        })
    }

    /// Releases every affinity of `node` (both families); see [`Ipam::release_affinity`].
    /// Returns the blocks released. Used when a node is deleted (`must_be_empty` false) and by
    /// the periodic cleanup of empty blocks (true).
    pub fn release_host_affinities(&self, node: &str, must_be_empty: bool) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            for (cidr, _) in self.list_affinities(node, family)? {
                if self.release_affinity(node, &cidr, must_be_empty)? {
                    out.push(cidr);
                }
            }
        }
        Ok(out)
    }

    /// Releases `node`'s affinity to each of its blocks that holds no address, deleting those
    /// blocks. (Calico's controller does this once a block has been seen empty twice.)
    pub fn release_empty_blocks(&self, node: &str) -> Result<Vec<IpNet>> {
        self.release_host_affinities(node, true)
    }
}
