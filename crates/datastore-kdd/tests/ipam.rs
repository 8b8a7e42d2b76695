//! IPAM on the Kubernetes datastore: blocks, handles and affinities as Calico's CRDs, and 50
//! concurrent assignments from two hosts through `gingham_ipam` hand no address out twice.

mod common;
#[path = "../../ipam/tests/common/mod.rs"]
mod ipam_common;

use common::Cluster;
use gingham_datastore::Datastore;
use gingham_datastore_kdd::KddStore;
use gingham_ipam::Ipam;
use gingham_ipam::stored::{self, CONFIG_KEY};
use ipam_common::{assign_and_release_concurrently, pool, req};

#[test]
fn fifty_concurrent_assignments_from_two_hosts() {
    let cluster = Cluster::start();
    // Two clients per host, as two CNI plugin processes on each node would be.
    let stores: Vec<KddStore> = (0..4).map(|_| cluster.connect()).collect();
    let refs: Vec<&dyn Datastore> = stores.iter().map(|s| s as &dyn Datastore).collect();
    assign_and_release_concurrently(&refs, &["n1", "n2"], &[pool("p", "10.0.0.0/24")], 1);
    // Two blocks for two hosts, two addresses each: a host that fills its block borrows.
    assign_and_release_concurrently(&refs, &["n1", "n2"], &[pool("p", "10.0.0.0/25")], 2);
}

#[test]
fn ipam_objects_are_calicos_crds() {
    let cluster = Cluster::start();
    let s = cluster.connect();
    let pools = [pool("p", "10.1.0.0/24")];
    let got = Ipam::new(&s)
        .auto_assign(&req("k8s-pod-network.abc", "node-1", 1, &pools))
        .unwrap();
    let ip = got.v4[0].ip;
    // What the API server holds, read as any Kubernetes client reads it.
    let backing = &cluster.backing;
    let raw = |plural: &str, name: &str| -> serde_json::Value {
        let kv = backing
            .get(&format!(
                "{}crd.projectcalico.org/{plural}/{name}",
                gingham_kubeapi::REGISTRY_PREFIX
            ))
            .unwrap()
            .unwrap_or_else(|| panic!("{plural}/{name} is stored"));
        serde_json::from_slice(&kv.value).unwrap()
    };
    let block = raw("ipamblocks", "10-1-0-0-26");
    assert_eq!(block["kind"], "IPAMBlock");
    assert_eq!(block["spec"]["cidr"], "10.1.0.0/26");
    assert_eq!(block["spec"]["affinity"], "host:node-1");
    assert_eq!(
        block["spec"]["attributes"][0]["handle_id"],
        "k8s-pod-network.abc"
    );
    let aff = raw("blockaffinities", "node-1-10-1-0-0-26");
    assert_eq!(
        aff["spec"],
        serde_json::json!({"state": "confirmed", "node": "node-1", "type": "host",
            "cidr": "10.1.0.0/26", "deleted": "false"})
    );
    let handle = raw("ipamhandles", "k8s-pod-network.abc");
    assert_eq!(handle["spec"]["handleID"], "k8s-pod-network.abc");
    assert_eq!(handle["spec"]["block"]["10.1.0.0/26"], 1);
    // And the IPAM reads them back.
    assert_eq!(
        Ipam::new(&s).ips_by_handle("k8s-pod-network.abc").unwrap(),
        vec![ip]
    );
    let listing = s.list(stored::IPAM_PREFIX).unwrap();
    let keys: Vec<&str> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/calico/ipam/v2/assignment/ipv4/block/10.1.0.0-26",
            "/calico/ipam/v2/handle/k8s-pod-network.abc",
            "/calico/ipam/v2/host/node-1/ipv4/block/10.1.0.0-26",
        ]
    );
    // The configuration is the IPAMConfig `default`.
    s.put(CONFIG_KEY, br#"{"strict_affinity":true}"#).unwrap();
    let cfg = raw("ipamconfigs", "default");
    assert_eq!(cfg["spec"]["strictAffinity"], true);
    assert_eq!(
        s.get(CONFIG_KEY).unwrap().unwrap().value,
        br#"{"strict_affinity":true}"#
    );
}
