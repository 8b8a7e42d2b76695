//! The IPAM client: datastore access, configuration and block claiming. Assignment, release and
//! reporting live in sibling modules as further `impl Ipam` blocks.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gingham_datastore::{Compare, Datastore, KeyValue, Op, Revision, Txn};
use ipnet::IpNet;

use crate::addr::Family;
use crate::block::host_affinity;
use crate::error::{Error, Result};
use crate::stored::{
    self, AffinityState, AllocationBlock, BlockAffinity, CONFIG_KEY, IpamHandle, StoredConfig,
};

/// How many compare-and-swap conflicts one operation tolerates before giving up.
pub const DEFAULT_MAX_CONFLICTS: usize = 100;

/// Blocks a node may own when neither the request nor the configuration says (Calico's cap).
pub const DEFAULT_MAX_BLOCKS_PER_HOST: usize = 20;

/// How long another node must have held an empty block before a node short of space may
/// reclaim it (Calico's `EmptyBlockMinReclaimAge`).
pub const EMPTY_BLOCK_MIN_RECLAIM_AGE: Duration = Duration::from_secs(60);

/// The global IPAM configuration (`/calico/ipam/v2/config`), as `calicoctl ipam configure` sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// Never borrow addresses from blocks affine to other nodes.
    pub strict_affinity: bool,
    /// Claim new blocks when a node's blocks are full.
    pub auto_allocate_blocks: bool,
    /// 0 means Calico's default cap of 20.
    pub max_blocks_per_host: u32,
    /// How long a released address stays unusable (0 = reuse at once, still FIFO).
    pub ip_cooldown_seconds: u32,
}

impl Default for IpamConfig {
    /// What Calico assumes when no configuration is stored.
    fn default() -> Self {
        Self {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            ip_cooldown_seconds: 0,
        }
    }
}

/// A value read from the datastore with the revision to compare against when writing it back.
#[derive(Clone, Debug)]
pub(crate) struct Versioned<T> {
    pub value: T,
    pub rev: Revision,
}

/// A source of the current time (injectable so that tests can move time).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Calico-style block IPAM over any [`Datastore`].
///
/// Every change is a compare-and-swap transaction over the keys it read, retried on conflict,
/// so any number of clients (threads or processes) may share one store. An assignment writes
/// the block and the handle in one transaction.
#[derive(Clone)]
pub struct Ipam<'a> {
    pub(crate) store: &'a dyn Datastore,
    clock: Clock,
    pub(crate) max_conflicts: usize,
}

impl<'a> Ipam<'a> {
    pub fn new(store: &'a dyn Datastore) -> Self {
        Self {
            store,
            clock: Arc::new(SystemTime::now),
            max_conflicts: DEFAULT_MAX_CONFLICTS,
        }
    }

    /// Replaces the clock (for tests of cooldown and block reclaiming).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how many compare-and-swap conflicts an operation tolerates.
    pub fn with_max_conflicts(mut self, n: usize) -> Self {
        self.max_conflicts = n.max(1);
        self
    }

    pub(crate) fn now(&self) -> SystemTime {
        (self.clock)()
    }

    // ===== configuration =====

    /// The stored configuration, or Calico's defaults when none is stored.
    pub fn config(&self) -> Result<IpamConfig> {
        Ok(match self.read_config()? {
            None => IpamConfig::default(),
            Some(v) => IpamConfig {
                strict_affinity: v.value.strict_affinity,
                auto_allocate_blocks: v.value.auto_allocate_blocks,
                max_blocks_per_host: v.value.max_blocks_per_host.clamp(0, i64::from(u32::MAX))
                    as u32,
                ip_cooldown_seconds: v.value.ip_cooldown_seconds.clamp(0, i64::from(u32::MAX))
                    as u32,
            },
        })
    }

    fn read_config(&self) -> Result<Option<Versioned<StoredConfig>>> {
        let Some(kv) = self.store.get(CONFIG_KEY)? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: parse(&kv, |b| serde_json::from_slice(b))?,
            rev: kv.mod_revision,
        }))
    }

    /// Stores the configuration, refusing the combinations Calico refuses.
    pub fn set_config(&self, cfg: IpamConfig) -> Result<()> {
        if !cfg.strict_affinity && !cfg.auto_allocate_blocks {
            return Err(Error::Config(
                "strictAffinity and autoAllocateBlocks cannot both be false (a node could then get no address at all)".into(),
            ));
        }
        if cfg.max_blocks_per_host > 0 && !cfg.strict_affinity {
            return Err(Error::Config(format!(
                "maxBlocksPerHost {} requires strictAffinity=true",
                cfg.max_blocks_per_host
            )));
        }
        if cfg.ip_cooldown_seconds > 1200 {
            return Err(Error::Config(format!(
                "ipCooldownSeconds {} is too large (valid: 0-1200)",
                cfg.ip_cooldown_seconds
            )));
        }
        self.retry("writing the IPAM configuration", |_| {
            let current = self.read_config()?;
            let mut stored = current
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default();
            stored.strict_affinity = cfg.strict_affinity;
            stored.auto_allocate_blocks = cfg.auto_allocate_blocks;
            stored.max_blocks_per_host = i64::from(cfg.max_blocks_per_host);
            stored.ip_cooldown_seconds = i64::from(cfg.ip_cooldown_seconds);
            let txn = Txn::new()
                .when(compare(CONFIG_KEY, current.map(|c| c.rev)))
                .then(Op::Put {
                    key: CONFIG_KEY.to_owned(),
                    value: stored::to_json(&stored),
                });
            Ok(self.commit(&txn)?.then_some(()))
        })
    }

    // ===== reading =====

    /// Reads a block, checks its structure and applies any due cooldown expiry in memory (as
    /// Calico does on every read).
    pub(crate) fn read_block(
        &self,
        cidr: &IpNet,
        cooldown: i64,
    ) -> Result<Option<Versioned<AllocationBlock>>> {
        let Some(kv) = self.store.get(&stored::block_key(cidr))? else {
            return Ok(None);
        };
        self.decode_block(&kv, cooldown).map(Some)
    }

    pub(crate) fn decode_block(
        &self,
        kv: &KeyValue,
        cooldown: i64,
    ) -> Result<Versioned<AllocationBlock>> {
        let mut b: AllocationBlock = parse(kv, |b| serde_json::from_slice(b))?;
        b.validate().map_err(|reason| Error::Corrupt {
            key: kv.key.clone(),
            reason,
        })?;
        b.garbage_collect(cooldown, self.now());
        Ok(Versioned {
            value: b,
            rev: kv.mod_revision,
        })
    }

    /// Every block of a family (or of both), in key order. Keys that are not blocks are skipped.
    pub(crate) fn list_blocks(
        &self,
        family: Option<Family>,
        cooldown: i64,
    ) -> Result<Vec<Versioned<AllocationBlock>>> {
        let prefix = match family {
            Some(f) => stored::block_prefix(f),
            None => stored::BLOCK_PREFIX.to_owned(),
        };
        let listing = self.store.list(&prefix)?;
        let mut out = Vec::with_capacity(listing.kvs.len());
        for kv in &listing.kvs {
            if stored::parse_block_key(&kv.key).is_none() {
                tracing::warn!(key = %kv.key, "ignoring a key under the block prefix that is not a block");
                continue;
            }
            out.push(self.decode_block(kv, cooldown)?);
        }
        Ok(out)
    }

    pub(crate) fn read_handle(&self, handle: &str) -> Result<Option<Versioned<IpamHandle>>> {
        let Some(kv) = self.store.get(&stored::handle_key(handle))? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: parse(&kv, |b| serde_json::from_slice(b))?,
            rev: kv.mod_revision,
        }))
    }

    pub(crate) fn read_affinity(
        &self,
        node: &str,
        cidr: &IpNet,
    ) -> Result<Option<Versioned<BlockAffinity>>> {
        let Some(kv) = self.store.get(&stored::affinity_key(node, cidr))? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: parse(&kv, BlockAffinity::from_bytes)?,
            rev: kv.mod_revision,
        }))
    }

    /// A node's affinities of one family, in key order.
    pub(crate) fn list_affinities(
        &self,
        node: &str,
        family: Family,
    ) -> Result<Vec<(IpNet, Versioned<BlockAffinity>)>> {
        let listing = self
            .store
            .list(&stored::node_affinity_prefix(node, family))?;
        let mut out = Vec::new();
        for kv in &listing.kvs {
            let Some((n, cidr)) = stored::parse_affinity_key(&kv.key) else {
                tracing::warn!(key = %kv.key, "ignoring a malformed block affinity key");
                continue;
            };
            if n != node {
                continue;
            }
            out.push((
                cidr,
                Versioned {
                    value: parse(kv, BlockAffinity::from_bytes)?,
                    rev: kv.mod_revision,
                },
            ));
        }
        Ok(out)
    }

    // ===== writing =====

    /// Applies a transaction; `Ok(false)` means a comparison failed (someone else wrote first).
    pub(crate) fn commit(&self, txn: &Txn) -> Result<bool> {
        Ok(self.store.txn(txn)?.committed())
    }

    /// Runs `attempt` until it returns `Some`, counting each `None` as a conflict and backing off
    /// a little (with jitter) before the next try.
    pub(crate) fn retry<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut(usize) -> Result<Option<T>>,
    ) -> Result<T> {
        for n in 0..self.max_conflicts {
            if let Some(v) = attempt(n)? {
                return Ok(v);
            }
            tracing::debug!(what, conflict = n + 1, "datastore conflict; retrying");
            backoff(n);
        }
        Err(Error::Contention {
            what: what.to_owned(),
            attempts: self.max_conflicts,
        })
    }

    /// Creates `cidr` as a new block affine to `node` together with a confirmed affinity, in one
    /// transaction that fails if the block exists or the affinity changed. (Calico does this in
    /// three steps, pending affinity → block → confirmed, because its older stores had no
    /// multi-key transactions; one atomic step leaves no half-claimed state behind.)
    pub(crate) fn claim_block(
        &self,
        node: &str,
        cidr: &IpNet,
        affinity_rev: Option<Revision>,
    ) -> Result<bool> {
        let mut block = AllocationBlock::new_empty(*cidr, Some(host_affinity(node)), self.now());
        let block_key = stored::block_key(cidr);
        let aff_key = stored::affinity_key(node, cidr);
        let txn = Txn::new()
            .when(Compare::Absent {
                key: block_key.clone(),
            })
            .when(compare(&aff_key, affinity_rev))
            .then(put_block(&block_key, &mut block, false))
            .then(Op::Put {
                key: aff_key,
                value: stored::to_json(&BlockAffinity::new(AffinityState::Confirmed)),
            });
        let ok = self.commit(&txn)?;
        if ok {
            tracing::info!(%node, block = %cidr, "claimed block");
        }
        Ok(ok)
    }

    /// Confirms `node`'s affinity to an existing block that is affine to it, bumping the block so
    /// that a concurrent releaser that read it earlier fails its compare-and-swap.
    pub(crate) fn confirm_affinity(
        &self,
        node: &str,
        block: &Versioned<AllocationBlock>,
        affinity_rev: Option<Revision>,
    ) -> Result<bool> {
        let cidr = block.value.cidr;
        let block_key = stored::block_key(&cidr);
        let aff_key = stored::affinity_key(node, &cidr);
        let mut b = block.value.clone();
        let txn = Txn::new()
            .when(compare(&block_key, Some(block.rev)))
            .when(compare(&aff_key, affinity_rev))
            .then(put_block(&block_key, &mut b, true))
            .then(Op::Put {
                key: aff_key,
                value: stored::to_json(&BlockAffinity::new(AffinityState::Confirmed)),
            });
        let ok = self.commit(&txn)?;
        if ok {
            tracing::info!(%node, block = %cidr, "confirmed block affinity");
        }
        Ok(ok)
    }
}

/// `ModRevision` when the key was read, `Absent` when it was not there.
pub(crate) fn compare(key: &str, rev: Option<Revision>) -> Compare {
    match rev {
        Some(revision) => Compare::ModRevision {
            key: key.to_owned(),
            revision,
        },
        None => Compare::Absent {
            key: key.to_owned(),
        },
    }
}

/// The write of a block; like Calico's `updateBlock`, an update bumps the sequence number.
pub(crate) fn put_block(key: &str, block: &mut AllocationBlock, update: bool) -> Op {
    if update {
        block.sequence_number = block.sequence_number.wrapping_add(1);
    }
    Op::Put {
        key: key.to_owned(),
        value: stored::to_json(block),
    }
}

pub(crate) fn parse<T>(kv: &KeyValue, f: impl FnOnce(&[u8]) -> serde_json::Result<T>) -> Result<T> {
    f(&kv.value).map_err(|e| Error::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

thread_local! {
    static JITTER: Cell<u64> = Cell::new({
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let id = std::thread::current().id();
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&id, &mut h);
        (t ^ std::hash::Hasher::finish(&h) ^ u64::from(std::process::id())) | 1
    });
}

/// Sleeps a short random time that grows with the number of conflicts so far.
pub(crate) fn backoff(conflicts: usize) {
    let r = JITTER.with(|c| {
        let mut x = c.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x
    });
    let cap_us = 100 * (conflicts.min(20) as u64 + 1);
    std::thread::sleep(Duration::from_micros(r % cap_us));
}
