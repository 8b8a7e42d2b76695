//! Operations on one allocation block, in memory. The caller reads the block, applies one of
//! these, and writes it back with a compare-and-swap; nothing here touches the datastore.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::addr::{self, Family, Reservations};
use crate::stored::{AllocationAttribute, AllocationBlock};
use crate::time;

/// Handle of the addresses Calico reserves in blocks of Windows nodes; those do not make a block
/// non-empty.
pub const WINDOWS_RESERVED_HANDLE: &str = "windows-reserved-ipam-handle";

/// Strips what Calico's host-local migration bug appended to some handles (everything from `\r`).
pub fn sanitize_handle(h: &str) -> &str {
    h.split('\r').next().unwrap_or(h)
}

/// The affinity string of a node: `host:<node>`.
pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

impl AllocationBlock {
    /// A new, empty block with every ordinal free in ascending order.
    pub fn new_empty(cidr: IpNet, affinity: Option<String>, now: SystemTime) -> Self {
        let n = addr::size(&cidr) as usize;
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as u64;
        let claim_time = affinity.as_ref().map(|_| time::format(now));
        AllocationBlock {
            cidr: cidr.trunc(),
            affinity,
            affinity_claim_time: claim_time,
            allocations: vec![None; n],
            unallocated: (0..n).collect(),
            attributes: Vec::new(),
            // Like Calico, start from the clock so that a deleted and re-created block never
            // repeats a sequence number.
            sequence_number: nanos,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
            host_affinity: None,
            extra: Default::default(),
        }
    }

    pub fn num_addresses(&self) -> usize {
        self.allocations.len()
    }

    /// Checks the structural invariants a block read from the datastore must satisfy.
    pub fn validate(&self) -> Result<(), String> {
        let n = addr::size(&self.cidr);
        if n > 1 << 16 {
            return Err(format!("block {} is too large ({n} addresses)", self.cidr));
        }
        if self.allocations.len() as u128 != n {
            return Err(format!(
                "block {} has {} allocation slots, expected {n}",
                self.cidr,
                self.allocations.len()
            ));
        }
        if let Some(bad) = self
            .allocations
            .iter()
            .flatten()
            .find(|&&i| i >= self.attributes.len())
        {
            return Err(format!(
                "block {} refers to attribute {bad} but has only {}",
                self.cidr,
                self.attributes.len()
            ));
        }
        if let Some(bad) = self
            .unallocated
            .iter()
            .find(|&&o| o >= self.allocations.len())
        {
            return Err(format!(
                "block {} lists free ordinal {bad} outside the block",
                self.cidr
            ));
        }
        Ok(())
    }

    /// The node this block is affine to (`host:<node>`, or the deprecated `hostAffinity`).
    pub fn host(&self) -> Option<&str> {
        match &self.affinity {
            Some(a) => a.strip_prefix("host:"),
            None => self.host_affinity.as_deref(),
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    pub fn ordinal(&self, ip: IpAddr) -> Option<usize> {
        if Family::of(ip) != self.family() || !self.cidr.contains(&ip) {
            return None;
        }
        Some((addr::to_u128(ip) - addr::to_u128(self.cidr.network())) as usize)
    }

    pub fn ip_at(&self, ordinal: usize) -> IpAddr {
        addr::from_u128(
            addr::to_u128(self.cidr.network()) + ordinal as u128,
            self.family(),
        )
    }

    /// The attribute of an active (not cooling down) allocation.
    pub fn active(&self, ordinal: usize) -> Option<&AllocationAttribute> {
        let idx = (*self.allocations.get(ordinal)?)?;
        let attr = self.attributes.get(idx)?;
        attr.released_at.is_none().then_some(attr)
    }

    /// True if the ordinal is allocated or cooling down.
    pub fn is_taken(&self, ordinal: usize) -> bool {
        self.allocations.get(ordinal).is_some_and(Option::is_some)
    }

    fn set_seq(&mut self, ordinal: usize) {
        self.sequence_number_for_allocation
            .insert(ordinal.to_string(), self.sequence_number);
    }

    fn find_or_add_attribute(&mut self, handle: &str, attrs: &BTreeMap<String, String>) -> usize {
        let wanted = AllocationAttribute {
            handle_id: Some(handle.to_owned()),
            secondary: (!attrs.is_empty()).then(|| attrs.clone()),
            ..Default::default()
        };
        if let Some(i) = self.attributes.iter().position(|a| *a == wanted) {
            return i;
        }
        self.attributes.push(wanted);
        self.attributes.len() - 1
    }

    /// Allocates up to `num` addresses, taking free ordinals in the order of `unallocated` and
    /// skipping reserved addresses (which stay free, in place). Returns the addresses taken.
    pub fn auto_assign(
        &mut self,
        num: usize,
        handle: &str,
        attrs: &BTreeMap<String, String>,
        reservations: &Reservations,
    ) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        let mut attr_idx = None;
        let free = std::mem::take(&mut self.unallocated);
        let mut kept = Vec::with_capacity(free.len());
        for ordinal in free {
            if self.is_taken(ordinal) {
                // A free list that disagrees with the allocations would hand an address out
                // twice; drop the stale entry instead.
                tracing::warn!(block = %self.cidr, ordinal, "free list names an allocated ordinal; dropping it");
                continue;
            }
            if ips.len() >= num {
                kept.push(ordinal);
                continue;
            }
            let ip = self.ip_at(ordinal);
            if reservations.matches_ip(ip) {
                kept.push(ordinal);
                continue;
            }
            let idx = *attr_idx.get_or_insert_with(|| self.find_or_add_attribute(handle, attrs));
            self.allocations[ordinal] = Some(idx);
            self.set_seq(ordinal);
            ips.push(ip);
        }
        kept.dedup();
        self.unallocated = kept;
        ips
    }

    /// Allocates one specific address. On failure returns the current holder's handle (if the
    /// address is taken) or `Err(None)` if the address is cooling down or not in this block.
    pub fn assign(
        &mut self,
        ip: IpAddr,
        handle: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), AssignRefusal> {
        let ordinal = self.ordinal(ip).ok_or(AssignRefusal::OutsideBlock)?;
        if let Some(idx) = self.allocations[ordinal] {
            let attr = &self.attributes[idx];
            if attr.released_at.is_some() {
                return Err(AssignRefusal::CoolingDown);
            }
            return Err(AssignRefusal::InUse {
                handle: attr
                    .handle_id
                    .as_deref()
                    .map(|h| sanitize_handle(h).to_owned()),
            });
        }
        let idx = self.find_or_add_attribute(handle, attrs);
        self.allocations[ordinal] = Some(idx);
        self.set_seq(ordinal);
        self.unallocated.retain(|&o| o != ordinal);
        Ok(())
    }

    fn add_cooldown_attribute(&mut self, now: SystemTime) -> usize {
        self.attributes.push(AllocationAttribute {
            released_at: Some(time::format(now)),
            ..Default::default()
        });
        self.attributes.len() - 1
    }

    /// Releases the given addresses (duplicates and addresses outside the block are ignored).
    /// Returns, for each address actually released, its handle (sanitized).
    pub fn release(
        &mut self,
        ips: &[IpAddr],
        cooldown_seconds: i64,
        now: SystemTime,
    ) -> Vec<(IpAddr, Option<String>)> {
        let mut ordinals: Vec<usize> = ips
            .iter()
            .filter_map(|ip| self.ordinal(*ip))
            .filter(|&o| self.active(o).is_some())
            .collect();
        ordinals.sort_unstable();
        ordinals.dedup();
        self.release_ordinals(&ordinals, cooldown_seconds, now)
    }

    /// Releases every address held by `handle`; returns them.
    pub fn release_by_handle(
        &mut self,
        handle: &str,
        cooldown_seconds: i64,
        now: SystemTime,
    ) -> Vec<IpAddr> {
        let ordinals: Vec<usize> = (0..self.num_addresses())
            .filter(|&o| {
                self.active(o)
                    .and_then(|a| a.handle_id.as_deref())
                    .is_some_and(|h| sanitize_handle(h) == handle)
            })
            .collect();
        self.release_ordinals(&ordinals, cooldown_seconds, now)
            .into_iter()
            .map(|(ip, _)| ip)
            .collect()
    }

    fn release_ordinals(
        &mut self,
        ordinals: &[usize],
        cooldown_seconds: i64,
        now: SystemTime,
    ) -> Vec<(IpAddr, Option<String>)> {
        if ordinals.is_empty() {
            return Vec::new();
        }
        let released: Vec<(IpAddr, Option<String>)> = ordinals
            .iter()
            .map(|&o| {
                let h = self
                    .active(o)
                    .and_then(|a| a.handle_id.as_deref())
                    .map(|h| sanitize_handle(h).to_owned());
                (self.ip_at(o), h)
            })
            .collect();
        let cool = self.add_cooldown_attribute(now);
        for &o in ordinals {
            self.allocations[o] = Some(cool);
            self.set_seq(o);
        }
        self.garbage_collect(cooldown_seconds, now);
        released
    }

    /// Frees addresses whose cooldown has passed (appending them to the free list) and drops
    /// attributes nothing refers to. With a cooldown of zero or less every released address is
    /// freed at once. Returns true if the block changed.
    pub fn garbage_collect(&mut self, cooldown_seconds: i64, now: SystemTime) -> bool {
        let mut changed = false;
        let cutoff = now
            .checked_sub(Duration::from_secs(cooldown_seconds.max(0) as u64))
            .unwrap_or(UNIX_EPOCH);
        let mut used = vec![false; self.attributes.len()];
        for o in 0..self.allocations.len() {
            let Some(idx) = self.allocations[o] else {
                continue;
            };
            let done = match self.attributes[idx].released_at.as_deref() {
                None => false,
                Some(_) if cooldown_seconds <= 0 => true,
                // An unreadable time cannot hold an address forever.
                Some(t) => time::parse(t).is_none_or(|t| t < cutoff),
            };
            if done {
                self.allocations[o] = None;
                self.unallocated.push(o);
                self.sequence_number_for_allocation.remove(&o.to_string());
                changed = true;
            } else {
                used[idx] = true;
            }
        }
        if used.iter().any(|u| !u) {
            let mut new_index = vec![None; self.attributes.len()];
            let old = std::mem::take(&mut self.attributes);
            for (i, a) in old.into_iter().enumerate() {
                if used[i] {
                    new_index[i] = Some(self.attributes.len());
                    self.attributes.push(a);
                }
            }
            for slot in self.allocations.iter_mut() {
                if let Some(i) = *slot {
                    *slot = new_index[i];
                }
            }
            changed = true;
        }
        changed
    }

    /// True if no address is allocated or cooling down (Windows reserved addresses excepted).
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().flatten().all(|&i| {
            self.attributes[i]
                .handle_id
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(WINDOWS_RESERVED_HANDLE))
        })
    }

    /// Addresses that are neither allocated nor reserved.
    pub fn num_free(&self, reservations: &Reservations) -> usize {
        if reservations.matches_whole(&self.cidr) {
            return 0;
        }
        if !reservations.matches_some(&self.cidr) {
            return self.unallocated.len();
        }
        self.unallocated
            .iter()
            .filter(|&&o| !reservations.matches_ip(self.ip_at(o)))
            .count()
    }

    /// Addresses covered by a reservation, allocated or not.
    pub fn num_reserved(&self, reservations: &Reservations) -> usize {
        reservations.count_in(&self.cidr) as usize
    }

    /// Addresses allocated or cooling down (capacity minus the free list, as Calico counts).
    pub fn num_in_use(&self) -> usize {
        self.num_addresses().saturating_sub(self.unallocated.len())
    }

    /// Active allocations per (sanitized) handle.
    pub fn counts_by_handle(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for o in 0..self.num_addresses() {
            if let Some(h) = self.active(o).and_then(|a| a.handle_id.as_deref()) {
                *out.entry(sanitize_handle(h).to_owned()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Active allocations of `handle`.
    pub fn ips_by_handle(&self, handle: &str) -> Vec<IpAddr> {
        (0..self.num_addresses())
            .filter(|&o| {
                self.active(o)
                    .and_then(|a| a.handle_id.as_deref())
                    .is_some_and(|h| sanitize_handle(h) == handle)
            })
            .map(|o| self.ip_at(o))
            .collect()
    }
}

/// Why a specific address could not be assigned from a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignRefusal {
    OutsideBlock,
    CoolingDown,
    InUse { handle: Option<String> },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str) -> AllocationBlock {
        AllocationBlock::new_empty(
            cidr.parse().unwrap(),
            Some(host_affinity("n1")),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hands_out_in_free_list_order_and_reuses_oldest_freed_last() {
        let mut b = block("10.0.0.0/29");
        let none = Reservations::default();
        let attrs = BTreeMap::new();
        let now = SystemTime::now();
        let got = b.auto_assign(3, "h1", &attrs, &none);
        assert_eq!(got, vec![ip("10.0.0.0"), ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(b.release(&[ip("10.0.0.1")], 0, now).len(), 1);
        // Freed ordinals go to the back of the queue.
        assert_eq!(b.unallocated, vec![3, 4, 5, 6, 7, 1]);
        let got = b.auto_assign(5, "h2", &attrs, &none);
        assert_eq!(
            got,
            ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"].map(ip)
        );
        assert_eq!(b.auto_assign(2, "h3", &attrs, &none), vec![ip("10.0.0.1")]);
        assert!(b.unallocated.is_empty());
        assert!(b.auto_assign(1, "h4", &attrs, &none).is_empty());
    }

    #[test]
    fn skips_reserved_and_shares_attributes() {
        let mut b = block("10.0.0.0/30");
        let res = Reservations::new(&["10.0.0.0/31".parse().unwrap()]);
        let mut attrs = BTreeMap::new();
        attrs.insert("pod".to_owned(), "p".to_owned());
        assert_eq!(b.num_free(&res), 2);
        assert_eq!(b.num_reserved(&res), 2);
        let got = b.auto_assign(4, "h", &attrs, &res);
        assert_eq!(got, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        assert_eq!(b.attributes.len(), 1);
        assert_eq!(b.unallocated, vec![0, 1]);
        assert_eq!(b.num_free(&res), 0);
        assert_eq!(b.counts_by_handle()["h"], 2);
    }

    #[test]
    fn assign_specific_and_conflicts() {
        let mut b = block("fd00::/126");
        let attrs = BTreeMap::new();
        b.assign(ip("fd00::2"), "a", &attrs).unwrap();
        assert_eq!(b.unallocated, vec![0, 1, 3]);
        assert_eq!(
            b.assign(ip("fd00::2"), "b", &attrs),
            Err(AssignRefusal::InUse {
                handle: Some("a".into())
            })
        );
        assert_eq!(
            b.assign(ip("fd00::9"), "b", &attrs),
            Err(AssignRefusal::OutsideBlock)
        );
    }

    #[test]
    fn cooldown_holds_addresses_until_expiry() {
        let mut b = block("10.0.0.0/30");
        let none = Reservations::default();
        let attrs = BTreeMap::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        b.auto_assign(2, "h", &attrs, &none);
        assert_eq!(b.release_by_handle("h", 60, t0).len(), 2);
        assert!(!b.is_empty());
        assert_eq!(b.unallocated, vec![2, 3]);
        assert_eq!(b.active(0), None);
        assert_eq!(
            b.assign(ip("10.0.0.0"), "x", &attrs),
            Err(AssignRefusal::CoolingDown)
        );
        assert!(!b.garbage_collect(60, t0 + Duration::from_secs(30)));
        assert!(b.garbage_collect(60, t0 + Duration::from_secs(61)));
        assert!(b.is_empty());
        assert!(b.attributes.is_empty());
        assert_eq!(b.unallocated, vec![2, 3, 0, 1]);
        assert!(b.sequence_number_for_allocation.is_empty());
    }

    #[test]
    fn garbage_collect_reindexes_attributes() {
        let mut b = block("10.0.0.0/29");
        let none = Reservations::default();
        let attrs = BTreeMap::new();
        b.auto_assign(1, "a", &attrs, &none);
        b.auto_assign(1, "b", &attrs, &none);
        b.auto_assign(1, "c", &attrs, &none);
        b.release_by_handle("a", 0, SystemTime::now());
        assert_eq!(b.attributes.len(), 2);
        assert_eq!(b.ips_by_handle("b"), vec![ip("10.0.0.1")]);
        assert_eq!(b.ips_by_handle("c"), vec![ip("10.0.0.2")]);
        b.validate().unwrap();
    }

    #[test]
    fn stale_free_list_never_double_allocates() {
        let mut b = block("10.0.0.0/30");
        let none = Reservations::default();
        let attrs = BTreeMap::new();
        b.auto_assign(1, "a", &attrs, &none);
        b.unallocated.insert(0, 0); // Corrupt: ordinal 0 is allocated but listed as free.
        let got = b.auto_assign(1, "b", &attrs, &none);
        assert_eq!(got, vec![ip("10.0.0.1")]);
        assert_eq!(b.unallocated, vec![2, 3]);
    }
}
