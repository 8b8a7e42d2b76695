//! Names that cannot round-trip through datastore keys are refused before anything is written,
//! and the assignment loop is bounded even when the stored data is not what it expects
//! (issue 11: a node name with `/` made CNI ADD write without end).

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{mem, pool, req};
use gingham_datastore::mem::MemStore;
use gingham_datastore::{Datastore, Listing, Result, Revision, Txn, TxnOutcome, Watch};
use gingham_ipam::{AssignIpRequest, Error, Ipam};

/// Runs `f` on a thread and waits at most `secs` for it (an endless loop fails the test
/// instead of hanging it).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("still running after {secs} s: an unbounded loop"))
}

#[test]
fn invalid_node_names_write_nothing() {
    for node in ["a/b", "Node-A", "n_1", "-n", "n..x", ""] {
        let store = std::sync::Arc::new(mem());
        let s = store.clone();
        let before = store.revision().unwrap();
        let n = node.to_owned();
        let err = within(10, move || {
            let ipam = Ipam::new(s.as_ref());
            ipam.auto_assign(&req("net.c1", &n, 1, &[pool("p", "10.0.0.0/24")]))
                .map(|_| ())
        })
        .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{node:?}: {err}");
        assert!(err.to_string().contains("node"), "{err}");
        assert_eq!(
            store.revision().unwrap(),
            before,
            "{node:?}: nothing written"
        );
        let ipam = Ipam::new(store.as_ref());
        let err = ipam
            .assign_ip(&AssignIpRequest {
                ip: Some("10.0.0.9".parse().unwrap()),
                handle_id: "net.c1".into(),
                node: node.into(),
                pools: vec![pool("p", "10.0.0.0/24")],
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{node:?}: {err}");
        assert_eq!(store.revision().unwrap(), before);
    }
    // A handle with '/' would name another key.
    let store = mem();
    let before = store.revision().unwrap();
    let ipam = Ipam::new(&store);
    let err = ipam
        .auto_assign(&req("net/evil", "n1", 1, &[pool("p", "10.0.0.0/24")]))
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert_eq!(store.revision().unwrap(), before);
}

/// A store that hides block affinities from listings: the assignment loop never sees the
/// block it claims, as happened with a node name containing `/`.
struct HidesAffinities(MemStore);

impl Datastore for HidesAffinities {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn get(&self, key: &str) -> Result<Option<gingham_datastore::KeyValue>> {
        self.0.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Listing> {
        let mut l = self.0.list(prefix)?;
        l.kvs
            .retain(|kv| !kv.key.starts_with("/calico/ipam/v2/host/"));
        Ok(l)
    }
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        self.0.txn(txn)
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        self.0.watch(prefix, after)
    }
    fn revision(&self) -> Result<Revision> {
        self.0.revision()
    }
    fn compact(&self, revision: Revision) -> Result<()> {
        self.0.compact(revision)
    }
}

#[test]
fn the_assignment_loop_is_bounded() {
    let store = std::sync::Arc::new(HidesAffinities(mem()));
    let s = store.clone();
    let err = within(20, move || {
        Ipam::new(s.as_ref())
            .auto_assign(&req("net.c1", "n1", 1, &[pool("p", "10.0.0.0/24")]))
            .map(|_| ())
    })
    .unwrap_err();
    assert!(matches!(err, Error::NoProgress { .. }), "{err}");
    assert!(err.to_string().contains("ipam check"), "{err}");
    // A bounded number of writes, not hundreds of thousands.
    let rev = store.revision().unwrap();
    assert!(rev < 1000, "{rev} writes");
}
