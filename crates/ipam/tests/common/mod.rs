//! Shared helpers for the IPAM integration tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use gingham_datastore::{
    Compare, Datastore, Error, KeyValue, Listing, Op, Result, Revision, Txn, TxnOutcome, Watch,
};
use gingham_ipam::{AssignRequest, Ipam, PoolSpec};
use ipnet::IpNet;

/// A throwaway in-memory store (stand-in until `gingham_datastore::mem::MemStore` lands).
#[derive(Default)]
pub struct TestStore {
    inner: Mutex<(Revision, BTreeMap<String, KeyValue>)>,
}

impl TestStore {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new((1, BTreeMap::new())),
        }
    }
}

impl Datastore for TestStore {
    fn describe(&self) -> String {
        "test-memory".into()
    }
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.inner.lock().unwrap().1.get(key).cloned())
    }
    fn list(&self, prefix: &str) -> Result<Listing> {
        let g = self.inner.lock().unwrap();
        Ok(Listing {
            kvs: g
                .1
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v.clone())
                .collect(),
            revision: g.0,
        })
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision> {
        let t = Txn::new()
            .when(Compare::Absent { key: key.into() })
            .then(Op::Put {
                key: key.into(),
                value: value.to_vec(),
            });
        match self.txn(&t)? {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::Failed { .. } => Err(Error::AlreadyExists { key: key.into() }),
        }
    }
    fn update(&self, _key: &str, _value: &[u8], _expected: Option<Revision>) -> Result<Revision> {
        Err(Error::Backend("not used by IPAM".into()))
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<Revision> {
        let t = Txn::new().then(Op::Put {
            key: key.into(),
            value: value.to_vec(),
        });
        match self.txn(&t)? {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::Failed { .. } => unreachable!(),
        }
    }
    fn delete(&self, key: &str, _expected: Option<Revision>) -> Result<KeyValue> {
        let mut g = self.inner.lock().unwrap();
        let kv =
            g.1.remove(key)
                .ok_or_else(|| Error::NotFound { key: key.into() })?;
        g.0 += 1;
        Ok(kv)
    }
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let mut g = self.inner.lock().unwrap();
        let failed: Vec<String> = txn
            .compares
            .iter()
            .filter(|c| match c {
                Compare::ModRevision { key, revision } => {
                    g.1.get(key).map(|kv| kv.mod_revision) != Some(*revision)
                }
                Compare::Absent { key } => g.1.contains_key(key),
                Compare::Exists { key } => !g.1.contains_key(key),
            })
            .map(|c| c.key().to_owned())
            .collect();
        if !failed.is_empty() {
            return Ok(TxnOutcome::Failed {
                failed_keys: failed,
            });
        }
        if txn.ops.is_empty() {
            return Ok(TxnOutcome::Committed { revision: g.0 });
        }
        g.0 += 1;
        let rev = g.0;
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    let (create, version) = match g.1.get(key) {
                        Some(kv) => (kv.create_revision, kv.version + 1),
                        None => (rev, 1),
                    };
                    g.1.insert(
                        key.clone(),
                        KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: create,
                            mod_revision: rev,
                            version,
                        },
                    );
                }
                Op::Delete { key } => {
                    g.1.remove(key);
                }
            }
        }
        Ok(TxnOutcome::Committed { revision: rev })
    }
    fn watch(&self, _prefix: &str, _after: Revision) -> Result<Box<dyn Watch>> {
        Err(Error::Backend("not used by IPAM".into()))
    }
    fn revision(&self) -> Result<Revision> {
        Ok(self.inner.lock().unwrap().0)
    }
    fn compact(&self, _revision: Revision) -> Result<()> {
        Ok(())
    }
}

/// A fresh in-memory store.
pub fn mem() -> TestStore {
    TestStore::new()
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn pool(name: &str, cidr: &str) -> PoolSpec {
    PoolSpec::new(name, net(cidr))
}

/// A request for `n4` IPv4 addresses from `pools`.
pub fn req(handle: &str, node: &str, n4: usize, pools: &[PoolSpec]) -> AssignRequest {
    let mut attrs = BTreeMap::new();
    attrs.insert("node".to_owned(), node.to_owned());
    attrs.insert("pod".to_owned(), handle.to_owned());
    attrs.insert("namespace".to_owned(), "default".to_owned());
    AssignRequest {
        handle_id: handle.to_owned(),
        attrs,
        node: node.to_owned(),
        num_v4: n4,
        pools_v4: pools.to_vec(),
        ..Default::default()
    }
}

/// The raw JSON stored under `key`.
pub fn raw(store: &dyn Datastore, key: &str) -> Option<String> {
    store
        .get(key)
        .unwrap()
        .map(|kv| String::from_utf8(kv.value).unwrap())
}

/// How many concurrent callers the concurrency tests run.
pub const THREADS: usize = 50;

/// Runs `THREADS` concurrent assignments (thread `i` uses `stores[i % len]` and node
/// `nodes[i % len]`), checks the result, then releases everything concurrently.
pub fn assign_and_release_concurrently(
    stores: &[&dyn Datastore],
    nodes: &[&str],
    pools: &[PoolSpec],
    per_thread: usize,
) {
    let results: Vec<Vec<IpAddr>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let store = stores[i % stores.len()];
                let node = nodes[i % nodes.len()];
                sc.spawn(move || {
                    let ipam = Ipam::new(store);
                    let r = ipam
                        .auto_assign(&req(&format!("h{i}"), node, per_thread, pools))
                        .unwrap_or_else(|e| panic!("thread {i}: {e}"));
                    r.v4.into_iter().map(|a| a.ip).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<IpAddr> = results.iter().flatten().copied().collect();
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(all.len(), THREADS * per_thread);
    assert_eq!(distinct.len(), all.len(), "an address was handed out twice");

    let ipam = Ipam::new(stores[0]);
    let live_nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    let report = ipam.check(&|_, _| true, &live_nodes).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, all.len());
    assert_eq!(report.handles, THREADS);
    for (i, got) in results.iter().enumerate() {
        let mut held = ipam.ips_by_handle(&format!("h{i}")).unwrap();
        held.sort();
        let mut want = got.clone();
        want.sort();
        assert_eq!(held, want, "handle h{i}");
    }

    std::thread::scope(|sc| {
        for i in 0..THREADS {
            let store = stores[i % stores.len()];
            sc.spawn(move || {
                let released = Ipam::new(store)
                    .release_by_handle(&format!("h{i}"))
                    .unwrap();
                assert_eq!(released.len(), per_thread, "thread {i}");
            });
        }
    });
    let report = ipam.check(&|_, _| true, &live_nodes).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, 0);
    assert_eq!(report.handles, 0);
    let usage = ipam.show(pools, &[]).unwrap();
    assert!(usage.pools.iter().all(|p| p.in_use == 0));
    // Every node's blocks can now be released.
    for n in nodes {
        ipam.release_empty_blocks(n).unwrap();
    }
    assert_eq!(ipam.check(&|_, _| true, &[]).unwrap().blocks, 0);
}
