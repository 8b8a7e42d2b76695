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
