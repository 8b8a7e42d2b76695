//! An in-memory backend: the contract in its simplest form, for unit tests of the crates above
//! (IPAM, the resource client, the agent's watch loop). Clones share one store.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{
    Compare, Datastore, Error, Event, EventKind, KeyValue, Listing, Op, Result, Revision, Txn,
    TxnLimits, TxnOutcome, Watch, compare_holds,
};

#[derive(Default)]
struct State {
    revision: Revision,
    /// The oldest revision a watch may start at.
    compacted: Revision,
    kvs: BTreeMap<String, KeyValue>,
    /// Every event with revision >= `compacted`, in order.
    log: Vec<Event>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The in-memory store. Cloning gives another handle on the same data.
#[derive(Clone)]
pub struct MemStore {
    shared: Arc<Shared>,
    limits: TxnLimits,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store at revision 1.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    revision: 1,
                    compacted: 0,
                    ..State::default()
                }),
                changed: Condvar::new(),
            }),
            limits: TxnLimits::UNLIMITED,
        }
    }

    /// The same store, refusing transactions beyond `limits` as etcd does (for testing callers
    /// that must split large writes).
    pub fn with_limits(mut self, limits: TxnLimits) -> Self {
        self.limits = limits;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written (every write is
        // prepared before it is applied), so a poisoned lock is still consistent.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Datastore for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().kvs.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        let st = self.lock();
        let kvs = st
            .kvs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(Listing {
            kvs,
            revision: st.revision,
        })
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let ops = txn.compares.len() + txn.ops.len();
        let bytes: usize = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => key.len() + value.len(),
                Op::Delete { key } => key.len(),
            })
            .sum();
        if ops > self.limits.max_ops || bytes > self.limits.max_bytes {
            return Err(Error::Backend(format!(
                "transaction too large: {ops} operations and {bytes} bytes (limits {} and {})",
                self.limits.max_ops, self.limits.max_bytes
            )));
        }
        let mut st = self.lock();
        let failed_keys: Vec<String> = txn
            .compares
            .iter()
            .filter(|c| !compare_holds(c, st.kvs.get(c.key())))
            .map(|c| Compare::key(c).to_owned())
            .collect();
        if !failed_keys.is_empty() {
            return Ok(TxnOutcome::Failed { failed_keys });
        }
        let effective = txn.ops.iter().any(|op| match op {
            Op::Put { .. } => true,
            Op::Delete { key } => st.kvs.contains_key(key),
        });
        if !effective {
            return Ok(TxnOutcome::Committed {
                revision: st.revision,
            });
        }
        let revision = st.revision + 1;
        st.revision = revision;
        for op in &txn.ops {
            let event = match op {
                Op::Put { key, value } => {
                    let prev = st.kvs.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                    };
                    st.kvs.insert(key.clone(), kv.clone());
                    Event {
                        kind: EventKind::Put,
                        kv,
                        prev,
                    }
                }
                Op::Delete { key } => {
                    let Some(prev) = st.kvs.remove(key) else {
                        continue;
                    };
                    Event {
                        kind: EventKind::Delete,
                        kv: deleted_kv(key, revision),
                        prev: Some(prev),
                    }
                }
            };
            st.log.push(event);
        }
        drop(st);
        self.shared.changed.notify_all();
        Ok(TxnOutcome::Committed { revision })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        check_compacted(&self.lock(), after)?;
        Ok(Box::new(MemWatch {
            shared: self.shared.clone(),
            prefix: prefix.to_owned(),
            after,
            pending: VecDeque::new(),
        }))
    }

    fn revision(&self) -> Result<Revision> {
        Ok(self.lock().revision)
    }

    fn txn_limits(&self) -> TxnLimits {
        self.limits
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let mut st = self.lock();
        if revision > st.revision {
            return Err(Error::Backend(format!(
                "cannot compact to revision {revision}: the store is at {}",
                st.revision
            )));
        }
        if revision > st.compacted {
            st.compacted = revision;
            st.log.retain(|e| e.revision() >= revision);
        }
        Ok(())
    }
}

/// A store used by a process that dies after a number of writes: every call after the
/// `budget`-th transaction fails with [`Error::Unavailable`], as the calls of a killed process
/// never arrive. For testing what a writer interrupted at each step leaves behind. Heartbeat
/// writes of the [`crate::atomic`] layer do not count (they come at no fixed step).
pub struct Dying {
    inner: Arc<dyn Datastore>,
    budget: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl Dying {
    pub fn new(inner: Arc<dyn Datastore>, budget: usize) -> Self {
        Self {
            inner,
            budget,
            used: Default::default(),
        }
    }

    fn alive(&self) -> Result<()> {
        if self.used.load(std::sync::atomic::Ordering::SeqCst) >= self.budget {
            return Err(Error::Unavailable("the writing process died".into()));
        }
        Ok(())
    }
}

impl Datastore for Dying {
    fn describe(&self) -> String {
        format!("dying {}", self.inner.describe())
    }
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.alive()?;
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Listing> {
        self.alive()?;
        self.inner.list(prefix)
    }
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        self.alive()?;
        let heartbeat = txn
            .ops
            .iter()
            .any(|o| matches!(o, Op::Put { key, .. } if key == crate::atomic::HEARTBEAT_KEY));
        if !heartbeat {
            self.used.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.txn(txn)
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        self.alive()?;
        self.inner.watch(prefix, after)
    }
    fn revision(&self) -> Result<Revision> {
        self.alive()?;
        self.inner.revision()
    }
    fn compact(&self, revision: Revision) -> Result<()> {
        self.alive()?;
        self.inner.compact(revision)
    }
    fn txn_limits(&self) -> TxnLimits {
        self.inner.txn_limits()
    }
}

/// The key-value a delete event carries.
pub fn deleted_kv(key: &str, revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
    }
}

fn check_compacted(st: &State, after: Revision) -> Result<()> {
    if after + 1 < st.compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted: st.compacted,
        });
    }
    Ok(())
}

struct MemWatch {
    shared: Arc<Shared>,
    prefix: String,
    after: Revision,
    pending: VecDeque<Event>,
}

impl Watch for MemWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            check_compacted(&st, self.after)?;
            if st.revision > self.after {
                let start = st.log.partition_point(|e| e.revision() <= self.after);
                self.pending.extend(
                    st.log[start..]
                        .iter()
                        .filter(|e| e.kv.key.starts_with(&self.prefix))
                        .cloned(),
                );
                self.after = st.revision;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}
