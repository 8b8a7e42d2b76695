//! All-or-nothing transactions of any size on a backend that limits the size of one transaction
//! (etcd: 128 operations, ~1.5 MiB), with a write-ahead intent record.
//!
//! [`Atomic`] wraps a store. A transaction that fits the backend's limits is sent as it is, with
//! one more condition: no large write is pending (the intent key is absent). A larger one goes
//! through five steps:
//!
//! 1. **Lock**: create the intent key `/gingham/txn/intent` (state `preparing`) if it is absent.
//!    Every write through this layer, small or large, requires the key to be absent, so from here
//!    on no other writer changes anything.
//! 2. **Plan**: write every operation, encoded in chunks under `/gingham/txn-plan/<id>/`, each
//!    chunk write conditional on the intent being unchanged. Nothing is visible yet: the data keys
//!    are untouched, and the private prefixes are outside `/calico/`.
//! 3. **Verify**: read every compared key and check its condition. Because the lock excludes
//!    every other writer since step 1, what holds now holds at the commit point.
//! 4. **Commit**: one small transaction turns the intent into `committed`, only if it is still
//!    the one written in step 1. This is the linearization point: from here the write will be
//!    completed, by this process or by whoever comes next.
//! 5. **Apply and finish**: the operations go to their keys in batches, each batch conditional on
//!    the committed intent (so a batch replayed late cannot overwrite a newer write), and a last
//!    transaction deletes the intent and its plan and bumps `/gingham/txn/epoch`.
//!
//! Whoever finds an intent settles it. A `committed` one is rolled forward at once (the operations
//! are idempotent puts and deletes). A `preparing` one has changed nothing, so readers ignore it;
//! a writer waits for it, and rolls it back if its writer's heartbeat (`/gingham/txn/heartbeat`,
//! refreshed while preparing) has not moved for [`AtomicOptions::stale_after`] by the waiter's
//! own clock. A writer rolled back while alive (frozen, say) fails its next conditional write and
//! starts over, so a rollback never races a commit.
//!
//! Reads see a whole write or none of it: a list at revision `R` is returned only if no large
//! write was half applied at `R` (no committed intent now, and the epoch, bumped when a write
//! finishes, is not newer than `R`); otherwise it is read again.
//!
//! The guarantee covers writers that go through this layer (every gingham process does); a
//! foreign tool writing the same keys between steps 3 and 4 is not excluded by the lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    Compare, Datastore, Error, KeyValue, Listing, Op, Result, Revision, Txn, TxnLimits, TxnOutcome,
    Watch, compare_holds,
};

/// The prefix of the intent's bookkeeping keys (read by every consistent read).
pub const STATE_PREFIX: &str = "/gingham/txn/";
/// The intent record: absent when no large write is pending.
pub const INTENT_KEY: &str = "/gingham/txn/intent";
/// Rewritten by the writer while it prepares, so that others can tell it is alive.
pub const HEARTBEAT_KEY: &str = "/gingham/txn/heartbeat";
/// Rewritten when a large write finishes; its mod revision is the last finish.
pub const EPOCH_KEY: &str = "/gingham/txn/epoch";
/// Where plans are written: `/gingham/txn-plan/<id>/<chunk>`.
pub const PLAN_PREFIX: &str = "/gingham/txn-plan/";

/// Timing of the protocol.
#[derive(Clone, Copy, Debug)]
pub struct AtomicOptions {
    /// How often a preparing writer refreshes its heartbeat.
    pub heartbeat: Duration,
    /// A preparing intent whose heartbeat has not moved for this long is rolled back by a writer
    /// that needs the lock.
    pub stale_after: Duration,
    /// How long a writer waits for another large write before giving up.
    pub wait_limit: Duration,
}

impl Default for AtomicOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            stale_after: Duration::from_secs(2),
            wait_limit: Duration::from_secs(120),
        }
    }
}

/// A store whose transactions are all-or-nothing whatever their size.
pub struct Atomic {
    inner: Arc<dyn Datastore>,
    options: AtomicOptions,
}

impl Atomic {
    /// Wraps `store`, unless it already takes transactions of any size (it has no limits, or it
    /// is already wrapped).
    pub fn wrap(store: Arc<dyn Datastore>) -> Arc<dyn Datastore> {
        if store.atomic_at_any_size() {
            return store;
        }
        Arc::new(Self::new(store, AtomicOptions::default()))
    }

    pub fn new(inner: Arc<dyn Datastore>, options: AtomicOptions) -> Self {
        Self { inner, options }
    }

    pub fn inner(&self) -> &Arc<dyn Datastore> {
        &self.inner
    }

    /// Settles whatever large write is pending (completing or rolling it back as needed), then
    /// returns. What every writer does before it needs the lock.
    pub fn settle(&self) -> Result<()> {
        let deadline = Instant::now() + self.options.wait_limit;
        // (intent mod revision, heartbeat mod revision) and when it was first seen.
        let mut seen: Option<((Revision, Revision), Instant)> = None;
        loop {
            let st = self.state()?;
            let Some(intent) = &st.intent else {
                return Ok(());
            };
            match intent.phase {
                Phase::Committed => {
                    self.roll_forward(intent)?;
                    seen = None;
                }
                Phase::Preparing => {
                    let mark = (intent.kv.mod_revision, st.heartbeat);
                    match seen {
                        Some((m, since)) if m == mark => {
                            if since.elapsed() >= self.options.stale_after {
                                tracing::warn!(
                                    id = intent.id(),
                                    "rolling back a large write whose writer stopped answering"
                                );
                                self.roll_back(intent)?;
                                seen = None;
                                continue;
                            }
                        }
                        _ => seen = Some((mark, Instant::now())),
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Unavailable(format!(
                            "another large write has been in progress for more than {}s; try again later",
                            self.options.wait_limit.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Reads the bookkeeping keys.
    fn state(&self) -> Result<State> {
        let listing = self.inner.list(STATE_PREFIX)?;
        let mut st = State {
            intent: None,
            heartbeat: 0,
            epoch: 0,
        };
        for kv in listing.kvs {
            match kv.key.as_str() {
                INTENT_KEY => st.intent = Some(Intent::parse(kv)?),
                HEARTBEAT_KEY => st.heartbeat = kv.mod_revision,
                EPOCH_KEY => st.epoch = kv.mod_revision,
                _ => {}
            }
        }
        Ok(st)
    }

    /// Completes a committed write from its plan.
    fn roll_forward(&self, intent: &Intent) -> Result<()> {
        let prefix = plan_prefix(intent.id());
        let listing = self.inner.list(&prefix)?;
        if listing.kvs.len() != intent.chunks {
            // Finished meanwhile by someone else (the plan goes with the intent)?
            if self.state()?.intent.as_ref().map(|i| i.kv.mod_revision)
                != Some(intent.kv.mod_revision)
            {
                return Ok(());
            }
            return Err(Error::Backend(format!(
                "the plan of the committed write {} has {} of its {} chunks; it cannot be completed",
                intent.id(),
                listing.kvs.len(),
                intent.chunks
            )));
        }
        let plan: Vec<u8> = listing
            .kvs
            .iter()
            .flat_map(|kv| kv.value.iter().copied())
            .collect();
        let ops = decode_ops(&plan).map_err(|e| {
            Error::Backend(format!(
                "the plan of the committed write {} cannot be read: {e}",
                intent.id()
            ))
        })?;
        tracing::info!(
            id = intent.id(),
            ops = ops.len(),
            "completing a committed large write"
        );
        self.apply(intent.kv.mod_revision, intent.id(), intent.chunks, &ops)?;
        Ok(())
    }

    /// Deletes a preparing intent (and its plan) if it is still the one observed.
    fn roll_back(&self, intent: &Intent) -> Result<()> {
        let mut txn = Txn::new().when(Compare::ModRevision {
            key: INTENT_KEY.into(),
            revision: intent.kv.mod_revision,
        });
        txn.ops.extend(cleanup_ops(intent.id(), intent.chunks));
        self.inner.txn(&txn)?;
        Ok(())
    }

    /// Step 5: applies `ops` in batches while the intent is the committed one, then finishes.
    /// Returns the revision of the finish, or `None` if someone else finished first.
    fn apply(
        &self,
        committed: Revision,
        id: Revision,
        chunks: usize,
        ops: &[Op],
    ) -> Result<Option<Revision>> {
        let guard = || Compare::ModRevision {
            key: INTENT_KEY.into(),
            revision: committed,
        };
        let limits = self.inner.txn_limits();
        for batch in batches(ops, limits, 1) {
            let mut txn = Txn::new().when(guard());
            txn.ops.extend(batch.iter().cloned());
            if !self.inner.txn(&txn)?.committed() {
                return Ok(None);
            }
        }
        let mut txn = Txn::new().when(guard());
        txn.ops.extend(cleanup_ops(id, chunks));
        txn.ops.push(Op::Put {
            key: EPOCH_KEY.into(),
            value: id.to_string().into_bytes(),
        });
        match self.inner.txn(&txn)? {
            TxnOutcome::Committed { revision } => Ok(Some(revision)),
            TxnOutcome::Failed { .. } => Ok(None),
        }
    }

    fn fits(&self, txn: &Txn) -> bool {
        let limits = self.inner.txn_limits();
        txn.compares.len() + txn.ops.len() < limits.max_ops
            && txn_bytes(txn) + INTENT_KEY.len() <= limits.max_bytes
    }

    /// A transaction that fits one backend transaction, with the no-pending-write condition.
    fn small_txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let mut guarded = txn.clone();
        guarded.compares.push(Compare::Absent {
            key: INTENT_KEY.into(),
        });
        loop {
            match self.inner.txn(&guarded)? {
                TxnOutcome::Failed { failed_keys }
                    if failed_keys.iter().any(|k| k == INTENT_KEY) =>
                {
                    self.settle()?;
                }
                TxnOutcome::Failed { failed_keys } => {
                    return Ok(TxnOutcome::Failed { failed_keys });
                }
                ok => return Ok(ok),
            }
        }
    }

    /// Steps 1 to 5 for a transaction too large for one backend transaction.
    fn large_txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let limits = self.inner.txn_limits();
        let chunk_bytes = limits.max_bytes.saturating_sub(128).max(1);
        let plan = encode_ops(&txn.ops);
        let chunks: Vec<&[u8]> = plan.chunks(chunk_bytes).collect();
        // The finish deletes the intent, the heartbeat and every chunk in one transaction.
        if chunks.len() + 4 > limits.max_ops {
            return Err(Error::Backend(format!(
                "a write of {} bytes is larger than this datastore can take at once ({} bytes)",
                plan.len(),
                (limits.max_ops - 4).saturating_mul(chunk_bytes)
            )));
        }
        // A rolled-back attempt (this process looked dead to another writer) starts over.
        for _ in 0..3 {
            if let Some(outcome) = self.try_large(txn, &chunks)? {
                return Ok(outcome);
            }
            tracing::warn!("a large write was rolled back by another writer; starting over");
        }
        Err(Error::Unavailable(
            "a large write was rolled back three times by other writers that took this process for dead; nothing was written"
                .into(),
        ))
    }

    fn try_large(&self, txn: &Txn, chunks: &[&[u8]]) -> Result<Option<TxnOutcome>> {
        // Step 1: the lock.
        let preparing = Intent::value(Phase::Preparing, chunks.len());
        let acquire = Txn::new()
            .when(Compare::Absent {
                key: INTENT_KEY.into(),
            })
            .then(Op::Put {
                key: INTENT_KEY.into(),
                value: preparing,
            })
            .then(Op::Put {
                key: HEARTBEAT_KEY.into(),
                value: b"0".to_vec(),
            });
        let id = loop {
            match self
                .inner
                .txn(&acquire)
                .map_err(|e| annotate(e, "nothing was written"))?
            {
                TxnOutcome::Committed { revision } => break revision,
                TxnOutcome::Failed { .. } => self.settle()?,
            }
        };
        let held = || Compare::ModRevision {
            key: INTENT_KEY.into(),
            revision: id,
        };
        let prepared = std::thread::scope(|scope| {
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let heartbeat = scope.spawn(move || {
                let mut beat = 0u64;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(self.options.heartbeat)
                {
                    beat += 1;
                    let txn = Txn::new().when(held()).then(Op::Put {
                        key: HEARTBEAT_KEY.into(),
                        value: beat.to_string().into_bytes(),
                    });
                    match self.inner.txn(&txn) {
                        Ok(TxnOutcome::Committed { .. }) => {}
                        // Rolled back, or the store is unreachable: the writer finds out.
                        Ok(TxnOutcome::Failed { .. }) | Err(_) => return,
                    }
                }
            });
            let result = self.prepare(txn, chunks, id);
            drop(stop);
            let _ = heartbeat.join();
            result
        });
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Best effort: release the lock now rather than after the heartbeat goes stale.
                let _ = self.roll_back(&Intent::mine(id, chunks.len()));
                return Err(annotate(e, "nothing was written"));
            }
        };
        match prepared {
            Prepared::RolledBack => return Ok(None),
            Prepared::Failed(failed_keys) => {
                self.roll_back(&Intent::mine(id, chunks.len()))?;
                return Ok(Some(TxnOutcome::Failed { failed_keys }));
            }
            Prepared::Ready => {}
        }
        // Step 4: the commit point.
        let commit = Txn::new().when(held()).then(Op::Put {
            key: INTENT_KEY.into(),
            value: Intent::value(Phase::Committed, chunks.len()),
        });
        let committed = match self.inner.txn(&commit) {
            Ok(TxnOutcome::Committed { revision }) => revision,
            Ok(TxnOutcome::Failed { .. }) => return Ok(None),
            Err(e) => {
                return Err(annotate(
                    e,
                    "whether the write was committed is settled by the next gingham command that reads or writes this datastore: all of it or none of it",
                ));
            }
        };
        // Step 5.
        let finished = self.apply(committed, id, chunks.len(), &txn.ops).map_err(|e| {
            annotate(
                e,
                "the write is committed: the next gingham command that reads or writes this datastore completes it",
            )
        })?;
        let revision = match finished {
            Some(r) => r,
            // Completed by someone else.
            None => self.inner.revision()?,
        };
        Ok(Some(TxnOutcome::Committed { revision }))
    }

    /// Steps 2 and 3, under the lock.
    fn prepare(&self, txn: &Txn, chunks: &[&[u8]], id: Revision) -> Result<Prepared> {
        for (i, chunk) in chunks.iter().enumerate() {
            let put = Txn::new()
                .when(Compare::ModRevision {
                    key: INTENT_KEY.into(),
                    revision: id,
                })
                .then(Op::Put {
                    key: chunk_key(id, i),
                    value: chunk.to_vec(),
                });
            if !self.inner.txn(&put)?.committed() {
                return Ok(Prepared::RolledBack);
            }
        }
        let current = self.read_keys(txn.compares.iter().map(Compare::key))?;
        let failed: Vec<String> = txn
            .compares
            .iter()
            .filter(|c| !compare_holds(c, current.get(c.key()).and_then(Option::as_ref)))
            .map(|c| c.key().to_owned())
            .collect();
        if failed.is_empty() {
            Ok(Prepared::Ready)
        } else {
            Ok(Prepared::Failed(failed))
        }
    }

    /// The current value of each key; keys sharing a parent are read with one listing when
    /// there are many of them.
    fn read_keys<'a>(
        &self,
        keys: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, Option<KeyValue>>> {
        const LIST_THRESHOLD: usize = 16;
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for k in keys {
            let parent = k.rfind('/').map_or("", |i| &k[..=i]);
            groups.entry(parent).or_default().push(k);
        }
        let mut out = HashMap::new();
        for (parent, keys) in groups {
            if keys.len() >= LIST_THRESHOLD {
                let mut listed: HashMap<String, KeyValue> = self
                    .inner
                    .list(parent)?
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.key.clone(), kv))
                    .collect();
                for k in keys {
                    out.insert(k.to_owned(), listed.remove(k));
                }
            } else {
                for k in keys {
                    out.insert(k.to_owned(), self.inner.get(k)?);
                }
            }
        }
        Ok(out)
    }
}

enum Prepared {
    Ready,
    Failed(Vec<String>),
    RolledBack,
}

struct State {
    intent: Option<Intent>,
    /// Mod revision of the heartbeat (0: absent).
    heartbeat: Revision,
    /// Mod revision of the epoch (0: absent).
    epoch: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Committed,
}

struct Intent {
    kv: KeyValue,
    phase: Phase,
    chunks: usize,
}

impl Intent {
    /// The id of a write is the revision that created its intent.
    fn id(&self) -> Revision {
        self.kv.create_revision
    }

    fn value(phase: Phase, chunks: usize) -> Vec<u8> {
        let phase = match phase {
            Phase::Preparing => "preparing",
            Phase::Committed => "committed",
        };
        format!("{phase} chunks={chunks}").into_bytes()
    }

    /// This writer's own preparing intent, created at revision `id`.
    fn mine(id: Revision, chunks: usize) -> Self {
        Self {
            kv: KeyValue {
                key: INTENT_KEY.into(),
                value: Self::value(Phase::Preparing, chunks),
                create_revision: id,
                mod_revision: id,
                version: 1,
            },
            phase: Phase::Preparing,
            chunks,
        }
    }

    fn parse(kv: KeyValue) -> Result<Self> {
        let text = String::from_utf8_lossy(&kv.value).into_owned();
        let bad = || {
            Error::Backend(format!(
                "the intent record {INTENT_KEY} is unreadable: {text:?}"
            ))
        };
        let (phase, chunks) = text.split_once(" chunks=").ok_or_else(bad)?;
        let phase = match phase {
            "preparing" => Phase::Preparing,
            "committed" => Phase::Committed,
            _ => return Err(bad()),
        };
        let chunks = chunks.parse().map_err(|_| bad())?;
        Ok(Self { kv, phase, chunks })
    }
}

/// Adds what became of the write to an error's message.
fn annotate(e: Error, note: &str) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(format!("{m} ({note})")),
        Error::ReadOnly(m) => Error::ReadOnly(format!("{m} ({note})")),
        Error::Backend(m) => Error::Backend(format!("{m} ({note})")),
        other => other,
    }
}

fn plan_prefix(id: Revision) -> String {
    format!("{PLAN_PREFIX}{id:020}/")
}

fn chunk_key(id: Revision, i: usize) -> String {
    format!("{}{i:06}", plan_prefix(id))
}

/// Deletes the intent, the heartbeat and the plan.
fn cleanup_ops(id: Revision, chunks: usize) -> Vec<Op> {
    let mut ops = vec![
        Op::Delete {
            key: INTENT_KEY.into(),
        },
        Op::Delete {
            key: HEARTBEAT_KEY.into(),
        },
    ];
    ops.extend((0..chunks).map(|i| Op::Delete {
        key: chunk_key(id, i),
    }));
    ops
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
    }
}

fn txn_bytes(txn: &Txn) -> usize {
    txn.compares.iter().map(|c| c.key().len()).sum::<usize>()
        + txn.ops.iter().map(op_bytes).sum::<usize>()
}

/// Splits `ops` into runs that fit one transaction along with `reserved` conditions.
fn batches(ops: &[Op], limits: TxnLimits, reserved: usize) -> Vec<&[Op]> {
    let max_ops = limits.max_ops.saturating_sub(reserved).max(1);
    let max_bytes = limits.max_bytes.saturating_sub(INTENT_KEY.len());
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, op) in ops.iter().enumerate() {
        let b = op_bytes(op);
        if i > start && (i - start >= max_ops || bytes.saturating_add(b) > max_bytes) {
            out.push(&ops[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(b);
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

const TAG_PUT: u8 = b'P';
const TAG_DELETE: u8 = b'D';

/// `P <key len u32> <key> <value len u32> <value>` or `D <key len u32> <key>`, concatenated.
fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ops.iter().map(|o| op_bytes(o) + 9).sum());
    for op in ops {
        match op {
            Op::Put { key, value } => {
                out.push(TAG_PUT);
                out.extend_from_slice(&(key.len() as u32).to_be_bytes());
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(value);
            }
            Op::Delete { key } => {
                out.push(TAG_DELETE);
                out.extend_from_slice(&(key.len() as u32).to_be_bytes());
                out.extend_from_slice(key.as_bytes());
            }
        }
    }
    out
}

/// Decodes a whole plan (its chunks concatenated in order; a chunk may end inside an
/// operation).
fn decode_ops(plan: &[u8]) -> std::result::Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    let mut pos = 0;
    while pos < plan.len() {
        let Some((op, used)) = decode_one(&plan[pos..])? else {
            return Err(format!("the plan ends inside an operation at byte {pos}"));
        };
        ops.push(op);
        pos += used;
    }
    Ok(ops)
}

fn decode_one(b: &[u8]) -> std::result::Result<Option<(Op, usize)>, String> {
    let read_len = |at: usize| -> Option<usize> {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let Some(&tag) = b.first() else {
        return Ok(None);
    };
    let Some(klen) = read_len(1) else {
        return Ok(None);
    };
    let Some(key) = b.get(5..5 + klen) else {
        return Ok(None);
    };
    let key = String::from_utf8(key.to_vec()).map_err(|_| "a key is not UTF-8".to_owned())?;
    match tag {
        TAG_DELETE => Ok(Some((Op::Delete { key }, 5 + klen))),
        TAG_PUT => {
            let at = 5 + klen;
            let Some(vlen) = read_len(at) else {
                return Ok(None);
            };
            let Some(value) = b.get(at + 4..at + 4 + vlen) else {
                return Ok(None);
            };
            Ok(Some((
                Op::Put {
                    key,
                    value: value.to_vec(),
                },
                at + 4 + vlen,
            )))
        }
        t => Err(format!("unknown operation tag {t}")),
    }
}

impl Datastore for Atomic {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// The key's value, after completing a committed large write that may not have reached it.
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        loop {
            let kv = self.inner.get(key)?;
            match self.state()?.intent {
                Some(intent) if intent.phase == Phase::Committed => self.roll_forward(&intent)?,
                _ => return Ok(kv),
            }
        }
    }

    /// A listing that shows every large write whole or not at all.
    fn list(&self, prefix: &str) -> Result<Listing> {
        for _ in 0..50 {
            let listing = self.inner.list(prefix)?;
            let st = self.state()?;
            match &st.intent {
                Some(intent) if intent.phase == Phase::Committed => self.roll_forward(intent)?,
                // Preparing since before the read: nothing of it was applied.
                Some(intent) if intent.kv.mod_revision <= listing.revision => return Ok(listing),
                Some(_) => {}
                // No write finished since the read, and none is half applied now.
                None if st.epoch <= listing.revision => return Ok(listing),
                None => {}
            }
        }
        Err(Error::Unavailable(
            "large writes kept landing while reading; try again".into(),
        ))
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        if self.fits(txn) {
            self.small_txn(txn)
        } else {
            self.large_txn(txn)
        }
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        self.inner.watch(prefix, after)
    }

    fn revision(&self) -> Result<Revision> {
        self.inner.revision()
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision)
    }

    fn txn_limits(&self) -> TxnLimits {
        TxnLimits::UNLIMITED
    }

    fn atomic_at_any_size(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_across_chunk_boundaries() {
        let ops = vec![
            Op::Put {
                key: "/a/1".into(),
                value: vec![7; 300],
            },
            Op::Delete { key: "/a/2".into() },
            Op::Put {
                key: "/a/3".into(),
                value: Vec::new(),
            },
        ];
        let plan = encode_ops(&ops);
        assert_eq!(decode_ops(&plan).unwrap(), ops);
        assert!(decode_ops(&plan[..plan.len() - 1]).is_err());
    }

    #[test]
    fn batches_respect_limits() {
        let ops: Vec<Op> = (0..300)
            .map(|i| Op::Put {
                key: format!("/k/{i:03}"),
                value: vec![0; 10],
            })
            .collect();
        let limits = TxnLimits {
            max_ops: 128,
            max_bytes: 1000,
        };
        let b = batches(&ops, limits, 1);
        assert_eq!(b.iter().map(|b| b.len()).sum::<usize>(), 300);
        for batch in b {
            assert!(batch.len() < 128);
            assert!(batch.iter().map(op_bytes).sum::<usize>() + INTENT_KEY.len() <= 1000);
        }
    }
}
