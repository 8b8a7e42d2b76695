//! The datastore contract on the Kubernetes datastore, against the API double with Calico's
//! CRDs installed, through real kube-rs clients.
//!
//! The contract's checks write keys such as `/l/b/2` with arbitrary bytes; the Kubernetes
//! datastore only holds keys that are Calico objects. [`Contract`] writes each test key as the
//! GlobalNetworkSet `l.b.2` (`/` becomes `.`, which keeps the keys' order and prefixes) whose
//! spec carries the bytes, so every check runs through the store's real mapping, requests and
//! watches. What KDD does not promise (one revision per transaction, creation revisions) is
//! declared in [`Harness::promises`]; `compact` does nothing on KDD (kube-apiserver compacts its
//! own history), so compaction is checked on the API server's datastore instead.

mod common;

use std::time::Duration;

use common::Cluster;
use gingham_datastore::contract::{self, Harness, Promises};
use gingham_datastore::{
    Compare, Datastore, Error, Event, KeyValue, Listing, Op, Result, Revision, Txn, TxnLimits,
    TxnOutcome, Watch,
};
use gingham_datastore_kdd::KddStore;
use gingham_model::Kind;
use serde_json::json;

const KIND: Kind = Kind::GlobalNetworkSet;

fn to_store(key: &str) -> String {
    KIND.key(None, &key.trim_start_matches('/').replace('/', "."))
}

fn from_store(key: &str) -> String {
    let name = key
        .strip_prefix(&KIND.key_prefix(None))
        .unwrap_or_else(|| panic!("{key} is no contract key"));
    format!("/{}", name.replace('.', "/"))
}

fn value_to_store(key: &str, payload: &[u8]) -> Vec<u8> {
    let name = to_store(key).rsplit('/').next().unwrap().to_owned();
    serde_json::to_vec(
        &json!({"apiVersion": "projectcalico.org/v3", "kind": KIND.name(),
        "metadata": {"name": name}, "spec": {"nets": [], "payload": payload}}),
    )
    .unwrap()
}

fn value_from_store(value: &[u8]) -> Vec<u8> {
    if value.is_empty() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(value).unwrap();
    serde_json::from_value(v["spec"]["payload"].clone()).expect("a contract value")
}

fn kv_from_store(kv: KeyValue) -> KeyValue {
    KeyValue {
        key: from_store(&kv.key),
        value: value_from_store(&kv.value),
        ..kv
    }
}

/// The contract's keys and values as GlobalNetworkSets in a [`KddStore`].
struct Contract(KddStore);

impl Datastore for Contract {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.0.get(&to_store(key))?.map(kv_from_store))
    }
    fn list(&self, prefix: &str) -> Result<Listing> {
        let l = self.0.list(&to_store(prefix))?;
        Ok(Listing {
            kvs: l.kvs.into_iter().map(kv_from_store).collect(),
            revision: l.revision,
        })
    }
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let mapped = Txn {
            compares: txn
                .compares
                .iter()
                .map(|c| match c {
                    Compare::ModRevision { key, revision } => Compare::ModRevision {
                        key: to_store(key),
                        revision: *revision,
                    },
                    Compare::Absent { key } => Compare::Absent { key: to_store(key) },
                    Compare::Exists { key } => Compare::Exists { key: to_store(key) },
                })
                .collect(),
            ops: txn
                .ops
                .iter()
                .map(|o| match o {
                    Op::Put { key, value } => Op::Put {
                        key: to_store(key),
                        value: value_to_store(key, value),
                    },
                    Op::Delete { key } => Op::Delete { key: to_store(key) },
                })
                .collect(),
        };
        Ok(match self.0.txn(&mapped)? {
            TxnOutcome::Failed { failed_keys } => TxnOutcome::Failed {
                failed_keys: failed_keys.iter().map(|k| from_store(k)).collect(),
            },
            ok => ok,
        })
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        Ok(Box::new(ContractWatch(
            self.0.watch(&to_store(prefix), after)?,
        )))
    }
    fn revision(&self) -> Result<Revision> {
        self.0.revision()
    }
    fn compact(&self, revision: Revision) -> Result<()> {
        self.0.compact(revision)
    }
    fn txn_limits(&self) -> TxnLimits {
        self.0.txn_limits()
    }
}

struct ContractWatch(Box<dyn Watch>);

impl Watch for ContractWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        Ok(self.0.next(timeout)?.map(|e| Event {
            kind: e.kind,
            kv: kv_from_store(e.kv),
            prev: e.prev.map(kv_from_store),
        }))
    }
}

struct KddHarness(Cluster);

impl KddHarness {
    fn new() -> Self {
        Self(Cluster::start())
    }
}

impl Harness for KddHarness {
    fn connect(&self) -> Box<dyn Datastore> {
        Box::new(Contract(self.0.connect()))
    }
    fn restart(&mut self) {
        self.0.restart();
    }
    fn child_env(&self) -> Option<Vec<(String, String)>> {
        Some(vec![(
            "KUBECONFIG".into(),
            self.0.kubeconfig.display().to_string(),
        )])
    }
    fn promises(&self) -> Promises {
        Promises {
            one_revision_per_txn: false,
            create_revision: false,
        }
    }
}

fn open_from_env() -> Box<dyn Datastore> {
    Box::new(Contract(
        KddStore::from_env().expect("KddStore from KUBECONFIG"),
    ))
}

#[test]
fn single_key_operations() {
    contract::single_key_operations(&mut KddHarness::new());
}

#[test]
fn list_by_prefix() {
    contract::list_by_prefix(&mut KddHarness::new());
}

#[test]
fn transactions() {
    contract::transactions(&mut KddHarness::new());
}

#[test]
fn watch_events() {
    contract::watch_events(&mut KddHarness::new());
}

#[test]
fn watch_across_writers_and_resume() {
    contract::watch_across_writers_and_resume(&mut KddHarness::new());
}

#[test]
fn cas_contention() {
    contract::cas_contention(&mut KddHarness::new());
}

#[test]
fn restart_and_resume() {
    contract::restart_and_resume(&mut KddHarness::new());
}

#[test]
fn processes_write_concurrently() {
    contract::processes_write_concurrently(&mut KddHarness::new(), "contract_child");
}

/// Not a test on its own: the child process of `processes_write_concurrently`.
#[test]
#[ignore = "runs only as the child of processes_write_concurrently"]
fn contract_child() {
    contract::child_writer(open_from_env);
}

/// Kubernetes compacts its own history; a watch from before it ends with `Compacted`, and
/// listing then watching from the listing's revision recovers.
#[test]
fn watch_from_compacted_history_fails_with_compacted() {
    let cluster = Cluster::start();
    let s = Contract(cluster.connect());
    let r1 = s.put("/c/a", b"1").unwrap();
    s.put("/c/a", b"2").unwrap();
    let r3 = s.put("/c/b", b"3").unwrap();
    cluster.backing.compact(r3).unwrap();
    let err = match s.watch("/c/", r1) {
        Err(e) => e,
        Ok(mut w) => match w.next(Duration::from_secs(10)) {
            Err(e) => e,
            other => panic!("a watch from a compacted revision must fail, got {other:?}"),
        },
    };
    assert!(
        matches!(err, Error::Compacted { requested, .. } if requested == r1),
        "{err}"
    );
    let listing = s.list("/c/").unwrap();
    assert_eq!(listing.kvs.len(), 2);
    let mut w = s.watch("/c/", listing.revision).unwrap();
    let r4 = s.put("/c/a", b"4").unwrap();
    let e = w.next(Duration::from_secs(10)).unwrap().expect("an event");
    assert_eq!((e.kv.key.as_str(), e.revision()), ("/c/a", r4));
}
