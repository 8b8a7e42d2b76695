//! The contract suite against the SQLite backend, several processes included.

use std::path::PathBuf;

use gingham_datastore::Datastore;
use gingham_datastore::contract::Harness;
use gingham_datastore_sqlite::SqliteStore;

const DB_ENV: &str = "GINGHAM_CONTRACT_SQLITE";

struct SqliteHarness {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteHarness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.db");
        Self { _dir: dir, path }
    }

    fn from_env() -> Box<dyn Datastore> {
        let path = std::env::var(DB_ENV).expect("the parent sets the database path");
        Box::new(SqliteStore::open(path).expect("open the parent's database"))
    }
}

impl Harness for SqliteHarness {
    fn connect(&self) -> Box<dyn Datastore> {
        Box::new(SqliteStore::open(&self.path).expect("open store"))
    }
    /// Every client closes its connection when dropped; reopening the file is the restart.
    fn restart(&mut self) {}
    fn child_env(&self) -> Option<Vec<(String, String)>> {
        Some(vec![(DB_ENV.into(), self.path.display().to_string())])
    }
}

gingham_datastore::contract_tests!(sqlite, SqliteHarness::new(), child: SqliteHarness::from_env);
