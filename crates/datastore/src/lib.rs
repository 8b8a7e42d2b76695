//! The datastore contract: a revisioned key-value store with compare-and-swap, transactions and
//! resumable watches, in the style of etcd v3.
//!
//! Every backend (embedded SQLite, etcd) implements [`Datastore`]; the [`contract`] module holds one
//! test suite that runs unchanged against each of them.
//! This crate knows nothing of Calico resources: keys are strings, values are bytes.
//! The key layout (`/calico/resources/v3/projectcalico.org/<plural>/...`) lives in `gingham-model`.
//!
//! Semantics, shared by all backends:
//! - One global revision counter, starting at 1 for an empty store and incremented by every
//!   committed write (a transaction with several operations increments it once).
//! - Each key records `create_revision`, `mod_revision` and `version` (number of writes since it
//!   was created), exactly as etcd does.
//! - A watch from revision `after` yields every event with revision greater than `after`, in
//!   revision order (and, inside one transaction, in the order of its operations).
//!   A watch whose start has been compacted away fails with [`Error::Compacted`]; the caller
//!   recovers by listing again and watching from the listing's revision.
//! - Calls are synchronous and the trait object is `Send + Sync`, so the CNI plugin, the CLI and
//!   the agent share one API. Backends that are asynchronous inside (etcd) own their runtime.

pub mod atomic;
pub mod contract;
pub mod mem;

use std::time::Duration;

/// A global store revision. Revision 0 means "before anything"; the first write gets 2 or more,
/// depending on the backend's starting point, so callers never assume particular values.
pub type Revision = i64;

/// One stored key with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (in its current life).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation, starting at 1.
    pub version: i64,
}

/// The result of a list: the matching keys in key order and the store revision they were read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// A condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key exists and its `mod_revision` equals the given one.
    ModRevision { key: String, revision: Revision },
    /// The key does not exist.
    Absent { key: String },
    /// The key exists (any revision).
    Exists { key: String },
}

impl Compare {
    pub fn key(&self) -> &str {
        match self {
            Compare::ModRevision { key, .. }
            | Compare::Absent { key }
            | Compare::Exists { key } => key,
        }
    }
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite.
    Put { key: String, value: Vec<u8> },
    /// Delete; deleting an absent key is not an error inside a transaction.
    Delete { key: String },
}

/// If every comparison holds, apply every operation atomically; otherwise apply nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every comparison held; the writes were committed at this revision (the current revision
    /// if there were no writes).
    Committed { revision: Revision },
    /// At least one comparison failed; nothing was written. Lists the keys whose comparison failed.
    Failed { failed_keys: Vec<String> },
}

impl TxnOutcome {
    pub fn committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`: the new key-value. For `Delete`: the key, an empty value, and `mod_revision`
    /// set to the revision of the deletion.
    pub kv: KeyValue,
    /// The value before this event, when the backend knows it (always for deletes).
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Errors every backend reports the same way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} does not exist")]
    NotFound { key: String },
    #[error(
        "{key} was changed by someone else (expected revision {expected}, found {found}); read it again and retry"
    )]
    Conflict {
        key: String,
        expected: Revision,
        /// The current mod revision, or 0 when the key no longer exists.
        found: Revision,
    },
    #[error(
        "revision {requested} has been compacted (the oldest watchable revision is {compacted}); list again and watch from the listing's revision"
    )]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The datastore cannot be reached; the message says which and why.
    #[error("{0}")]
    Unavailable(String),
    #[error("the datastore is read-only: {0}")]
    ReadOnly(String),
    #[error("invalid datastore configuration: {0}")]
    Config(String),
    #[error("datastore error: {0}")]
    Backend(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open watch. Events come in revision order.
pub trait Watch: Send {
    /// Waits up to `timeout` for the next event. `Ok(None)` means no event arrived in time; the
    /// watch stays usable. After an error the watch is finished; resume with a new watch from the
    /// last revision seen.
    fn next(&mut self, timeout: Duration) -> Result<Option<Event>>;
}

/// The revisioned key-value store.
pub trait Datastore: Send + Sync {
    /// A short description for logs and errors, e.g. `sqlite:/var/lib/gingham/gingham.db`.
    fn describe(&self) -> String;

    fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order, with the revision of the read.
    fn list(&self, prefix: &str) -> Result<Listing>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] if it exists. Returns the new revision.
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision> {
        let txn = Txn::new()
            .when(Compare::Absent { key: key.into() })
            .then(Op::Put {
                key: key.into(),
                value: value.to_vec(),
            });
        match self.txn(&txn)? {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::Failed { .. } => Err(Error::AlreadyExists { key: key.into() }),
        }
    }

    /// Replaces the value of an existing key. With `expected` set, only if the key's
    /// `mod_revision` equals it ([`Error::Conflict`] otherwise). [`Error::NotFound`] if absent.
    fn update(&self, key: &str, value: &[u8], expected: Option<Revision>) -> Result<Revision> {
        let compare = match expected {
            Some(revision) => Compare::ModRevision {
                key: key.into(),
                revision,
            },
            None => Compare::Exists { key: key.into() },
        };
        let txn = Txn::new().when(compare).then(Op::Put {
            key: key.into(),
            value: value.to_vec(),
        });
        match self.txn(&txn)? {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::Failed { .. } => Err(self.explain_failure(key, expected)?),
        }
    }

    /// Creates or replaces, unconditionally.
    fn put(&self, key: &str, value: &[u8]) -> Result<Revision> {
        let txn = Txn::new().then(Op::Put {
            key: key.into(),
            value: value.to_vec(),
        });
        match self.txn(&txn)? {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::Failed { .. } => Err(Error::Backend(format!(
                "unconditional write of {key} reported a failed comparison"
            ))),
        }
    }

    /// Deletes an existing key, optionally only at the `expected` mod revision. Returns the
    /// deleted key-value. [`Error::NotFound`] if absent.
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        loop {
            let Some(current) = self.get(key)? else {
                return Err(Error::NotFound { key: key.into() });
            };
            if let Some(e) = expected
                && e != current.mod_revision
            {
                return Err(Error::Conflict {
                    key: key.into(),
                    expected: e,
                    found: current.mod_revision,
                });
            }
            let txn = Txn::new()
                .when(Compare::ModRevision {
                    key: key.into(),
                    revision: current.mod_revision,
                })
                .then(Op::Delete { key: key.into() });
            match self.txn(&txn)? {
                TxnOutcome::Committed { .. } => return Ok(current),
                // Changed between the read and the delete: with a CAS that is a conflict,
                // without one we read again.
                TxnOutcome::Failed { .. } if expected.is_some() => {
                    return Err(self.explain_failure(key, expected)?);
                }
                TxnOutcome::Failed { .. } => continue,
            }
        }
    }

    /// The error for a failed conditional write of `key`: not found, or a conflict.
    #[doc(hidden)]
    fn explain_failure(&self, key: &str, expected: Option<Revision>) -> Result<Error> {
        Ok(match (self.get(key)?, expected) {
            (None, None) => Error::NotFound { key: key.into() },
            (None, Some(e)) => Error::Conflict {
                key: key.into(),
                expected: e,
                found: 0,
            },
            (Some(kv), e) => Error::Conflict {
                key: key.into(),
                expected: e.unwrap_or(0),
                found: kv.mod_revision,
            },
        })
    }

    /// Applies a multi-key transaction atomically.
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome>;

    /// Watches every key starting with `prefix` for events with revision greater than `after`.
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>>;

    /// The store's current revision.
    fn revision(&self) -> Result<Revision>;

    /// Forgets the history before `revision`, as etcd does: afterwards a watch must start at
    /// `revision` or later (`after >= revision - 1`); earlier starts fail with
    /// [`Error::Compacted`]. Compacting to a revision at or below the last compaction is a no-op.
    fn compact(&self, revision: Revision) -> Result<()>;

    /// How big one transaction may be on this backend (etcd refuses more than 128 operations or
    /// about 1.5 MiB in one request by default). [`atomic::Atomic`] takes transactions of any
    /// size on such a backend, all-or-nothing.
    fn txn_limits(&self) -> TxnLimits {
        TxnLimits::UNLIMITED
    }

    /// Whether a transaction of any size is applied all-or-nothing (no limits, or the
    /// [`atomic::Atomic`] layer). [`atomic::Atomic::wrap`] wraps the stores that say no.
    fn atomic_at_any_size(&self) -> bool {
        self.txn_limits() == TxnLimits::UNLIMITED
    }
}

/// The largest transaction a backend accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLimits {
    /// Compares plus operations.
    pub max_ops: usize,
    /// Total bytes of keys and values.
    pub max_bytes: usize,
}

impl TxnLimits {
    pub const UNLIMITED: TxnLimits = TxnLimits {
        max_ops: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// Checks one comparison against the current value of its key (`None`: absent).
pub fn compare_holds(compare: &Compare, current: Option<&KeyValue>) -> bool {
    match (compare, current) {
        (Compare::ModRevision { revision, .. }, Some(kv)) => kv.mod_revision == *revision,
        (Compare::ModRevision { .. }, None) => false,
        (Compare::Absent { .. }, cur) => cur.is_none(),
        (Compare::Exists { .. }, cur) => cur.is_some(),
    }
}
