//! The contract suite against the in-memory backend.

use gingham_datastore::Datastore;
use gingham_datastore::contract::Harness;
use gingham_datastore::mem::MemStore;

struct MemHarness(MemStore);

impl MemHarness {
    fn new() -> Self {
        Self(MemStore::new())
    }
}

impl Harness for MemHarness {
    fn connect(&self) -> Box<dyn Datastore> {
        Box::new(self.0.clone())
    }
    /// Memory does not survive a real restart; "restart" keeps the data, which is what the
    /// suite checks of durable backends.
    fn restart(&mut self) {}
    fn child_env(&self) -> Option<Vec<(String, String)>> {
        None
    }
}

gingham_datastore::contract_tests!(memory, MemHarness::new());

/// The atomic layer over a store with etcd's limits keeps the contract.
struct AtomicHarness(MemStore);

impl Harness for AtomicHarness {
    fn connect(&self) -> Box<dyn Datastore> {
        Box::new(gingham_datastore::atomic::Atomic::new(
            std::sync::Arc::new(self.0.clone()),
            Default::default(),
        ))
    }
    fn restart(&mut self) {}
    fn child_env(&self) -> Option<Vec<(String, String)>> {
        None
    }
}

gingham_datastore::contract_tests!(
    atomic_over_memory,
    AtomicHarness(MemStore::new().with_limits(gingham_datastore::TxnLimits {
        max_ops: 128,
        max_bytes: 1024 * 1024,
    }))
);
