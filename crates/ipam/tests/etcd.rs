//! IPAM under contention on a real etcd 3.4 (a system test: needs the `etcd` binary).

mod common;

use common::{assign_and_release_concurrently, pool};
use gingham_datastore::Datastore;
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
use gingham_testkit::etcd::EtcdServer;

#[test]
fn sys_fifty_threads_on_five_etcd_clients() {
    let server = EtcdServer::start();
    let stores: Vec<EtcdStore> = (0..5)
        .map(|_| {
            EtcdStore::connect(EtcdConfig {
                endpoints: vec![server.endpoint()],
                ..EtcdConfig::default()
            })
            .expect("connect to etcd")
        })
        .collect();
    let refs: Vec<&dyn Datastore> = stores.iter().map(|s| s as &dyn Datastore).collect();
    assign_and_release_concurrently(&refs, &["n1"], &[pool("p", "10.0.0.0/24")], 1);
    assign_and_release_concurrently(&refs, &["n1", "n2"], &[pool("p", "10.0.0.0/25")], 2);
}
