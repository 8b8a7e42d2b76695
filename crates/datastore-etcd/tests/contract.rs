//! The contract suite against a real etcd 3.4 started on a loopback port (a system test: it
//! needs the `etcd` binary, from Debian's etcd-server).

use gingham_datastore::Datastore;
use gingham_datastore::contract::Harness;
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
use gingham_testkit::etcd::EtcdServer;

struct EtcdHarness {
    server: EtcdServer,
}

impl EtcdHarness {
    fn new() -> Self {
        Self {
            server: EtcdServer::start(),
        }
    }

    /// The child process reaches the server through Calico's own variable.
    fn from_env() -> Box<dyn Datastore> {
        Box::new(EtcdStore::connect(EtcdConfig::from_env()).expect("connect to the parent's etcd"))
    }
}

impl Harness for EtcdHarness {
    fn connect(&self) -> Box<dyn Datastore> {
        let cfg = EtcdConfig {
            endpoints: vec![self.server.endpoint()],
            ..EtcdConfig::default()
        };
        Box::new(EtcdStore::connect(cfg).expect("connect to etcd"))
    }
    fn restart(&mut self) {
        self.server.restart();
    }
    fn child_env(&self) -> Option<Vec<(String, String)>> {
        Some(vec![("ETCD_ENDPOINTS".into(), self.server.endpoint())])
    }
}

gingham_datastore::contract_tests!(sys_etcd, EtcdHarness::new(), child: EtcdHarness::from_env);
