//! The KddStore's Kubernetes-backed keys against the Kubernetes API double with Calico's CRDs:
//! Calico Nodes as Node annotations, WorkloadEndpoints as Pods (written as the CNI plugin's
//! annotation patches), read-only `knp.`/`kns.` views, watches of pods, and a transaction
//! mixing a Node with a CRD key undone when the CRD part fails.

mod common;

use std::time::Duration;

use common::Cluster;
use gingham_datastore::{Compare, Datastore, Error, EventKind, Op, Txn, TxnOutcome};
use gingham_datastore_kdd::k8s_backed::{self, NODE_IPV4_VXLAN_TUNNEL_ADDR};
use gingham_model::kind::KEY_ROOT;
use gingham_model::{Kind, Node, Resource};
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// A kube-rs client of the cluster on its own small runtime.
struct Kube {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Kube {
    fn new(c: &Cluster) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = c.url();
        let client = rt.block_on(async {
            kube::Client::try_from(kube::Config::new(url.parse().expect("a URL"))).expect("client")
        });
        Self { rt, client }
    }

    fn create<K>(&self, api: Api<K>, obj: serde_json::Value) -> K
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let o: K = serde_json::from_value(obj).expect("object");
        self.rt
            .block_on(api.create(&PostParams::default(), &o))
            .expect("created")
    }

    fn node(&self, name: &str) -> KubeNode {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        self.rt.block_on(api.get(name)).expect("node")
    }
}

fn calico_node(value: &[u8]) -> Node {
    match Resource::from_stored(Kind::Node, value).expect("a Node") {
        Resource::Node(n) => n,
        other => panic!("not a Node: {other:?}"),
    }
}

#[test]
fn nodes_and_endpoints_through_the_store() {
    let c = Cluster::start();
    let kube = Kube::new(&c);
    kube.create(
        Api::<KubeNode>::all(kube.client.clone()),
        json!({"metadata": {"name": "node-a",
                            "annotations": {"projectcalico.org/IPv4Address": "10.0.0.1/24"}}}),
    );
    kube.create(
        Api::<Namespace>::all(kube.client.clone()),
        json!({"metadata": {"name": "shop", "labels": {"team": "a"}}}),
    );
    let pod = kube.create(
        Api::<Pod>::namespaced(kube.client.clone(), "shop"),
        json!({"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
               "spec": {"nodeName": "node-a",
                        "containers": [{"name": "web", "image": "nginx"}]}}),
    );
    kube.create(
        Api::<NetworkPolicy>::namespaced(kube.client.clone(), "shop"),
        json!({"metadata": {"name": "web", "namespace": "shop"},
               "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}),
    );
    let store = c.connect();

    // The Calico Node is the Kubernetes Node's annotations.
    let node_key = Kind::Node.key(None, "node-a");
    let kv = store.get(&node_key).expect("get").expect("the node");
    let k8s = kube.node("node-a");
    assert_eq!(
        kv.mod_revision.to_string(),
        k8s.metadata.resource_version.clone().expect("rv")
    );
    assert_eq!(
        kv.value,
        k8s_backed::calico_node_from_k8s(&k8s).expect("converts").1
    );
    // The agent records a tunnel address, conditional on what it read.
    let mut n = calico_node(&kv.value);
    n.spec.ipv4_vxlan_tunnel_addr = "10.244.0.1".into();
    let written = Resource::Node(n).to_stored();
    let rev = store
        .update(&node_key, &written, Some(kv.mod_revision))
        .expect("update");
    let k8s = kube.node("node-a");
    assert_eq!(
        k8s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NODE_IPV4_VXLAN_TUNNEL_ADDR))
            .map(String::as_str),
        Some("10.244.0.1")
    );
    let kv2 = store.get(&node_key).expect("get").expect("the node");
    assert_eq!(kv2.value, written);
    assert_eq!(kv2.mod_revision, rev);
    // A second writer with the old revision loses.
    match store.update(&node_key, &written, Some(kv.mod_revision)) {
        Err(Error::Conflict { found, .. }) => assert_eq!(found, rev),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // No Kubernetes Node, no Calico Node to write.
    let err = store
        .create(&Kind::Node.key(None, "node-z"), &written)
        .expect_err("no node");
    assert!(
        err.to_string()
            .contains("register the node with Kubernetes (kubelet) first"),
        "{err}"
    );

    // The pod has no endpoint until the CNI plugin's write; watch the namespace meanwhile.
    let wep_key = Kind::WorkloadEndpoint.key(Some("shop"), "node--a-k8s-web--1-eth0");
    assert_eq!(store.get(&wep_key).expect("get"), None);
    let mut watch = store
        .watch(
            &Kind::WorkloadEndpoint.key_prefix(Some("shop")),
            store.revision().expect("revision"),
        )
        .expect("watch");
    let mut with_ip = pod.clone();
    with_ip.metadata.annotations = Some(
        [
            ("cni.projectcalico.org/podIP", "10.244.0.5/32"),
            ("cni.projectcalico.org/podIPs", "10.244.0.5/32"),
            ("cni.projectcalico.org/containerID", "abc123"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let (_, wep) = k8s_backed::workload_endpoints_from_pod(&with_ip)
        .expect("converts")
        .remove(0);
    store
        .create(&wep_key, &wep)
        .expect("the CNI plugin's create");
    let got = store.get(&wep_key).expect("get").expect("the endpoint");
    let endpoint = |v: &[u8]| match Resource::from_stored(Kind::WorkloadEndpoint, v) {
        Ok(Resource::WorkloadEndpoint(w)) => w,
        other => panic!("not an endpoint: {other:?}"),
    };
    assert_eq!(
        endpoint(&got.value).spec.ip_networks[0].to_string(),
        "10.244.0.5/32"
    );
    assert!(matches!(
        store.create(&wep_key, &wep),
        Err(Error::AlreadyExists { .. })
    ));
    let e = watch
        .next(Duration::from_secs(5))
        .expect("watch")
        .expect("an event");
    assert_eq!(
        (e.kind, e.kv.key.as_str()),
        (EventKind::Put, wep_key.as_str())
    );
    assert_eq!(e.kv.value, got.value);

    // Listing everything shows the Kubernetes-backed keys with the CRD ones.
    let listing = store.list(&format!("{KEY_ROOT}/")).expect("list");
    let keys: Vec<&str> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    for want in [
        node_key.clone(),
        wep_key.clone(),
        Kind::Profile.key(None, "kns.shop"),
        Kind::NetworkPolicy.key(Some("shop"), "knp.default.web"),
    ] {
        assert!(keys.contains(&want.as_str()), "{want} not in {keys:?}");
    }
    // Views of Kubernetes objects are read-only.
    let err = store
        .put(
            &Kind::NetworkPolicy.key(Some("shop"), "knp.default.web"),
            b"{}",
        )
        .expect_err("read-only");
    assert!(
        err.to_string().contains(
            "is read-only in the Kubernetes datastore: it is Kubernetes NetworkPolicy shop/web seen through Calico; change the NetworkPolicy instead"
        ),
        "{err}"
    );

    // The CNI plugin's DEL: the endpoint goes, the watch says so.
    store.delete(&wep_key, None).expect("delete");
    assert_eq!(store.get(&wep_key).expect("get"), None);
    let e = watch
        .next(Duration::from_secs(5))
        .expect("watch")
        .expect("an event");
    assert_eq!(
        (e.kind, e.kv.key.as_str()),
        (EventKind::Delete, wep_key.as_str())
    );
}

#[test]
fn a_transaction_with_a_node_and_a_crd_key_is_undone_when_the_crd_part_fails() {
    let c = Cluster::start();
    let kube = Kube::new(&c);
    kube.create(
        Api::<KubeNode>::all(kube.client.clone()),
        json!({"metadata": {"name": "node-a",
                            "annotations": {"projectcalico.org/IPv4Address": "10.0.0.1/24"}}}),
    );
    let store = c.connect();
    let set_key = Kind::GlobalNetworkSet.key(None, "blocked");
    let set = Resource::from_value(
        Kind::GlobalNetworkSet,
        json!({"metadata": {"name": "blocked"}, "spec": {"nets": ["192.0.2.0/24"]}}),
    )
    .expect("a set")
    .to_stored();
    store.create(&set_key, &set).expect("created");

    let node_key = Kind::Node.key(None, "node-a");
    let kv = store.get(&node_key).expect("get").expect("node");
    let mut n = calico_node(&kv.value);
    n.spec.ipv4_vxlan_tunnel_addr = "10.244.0.1".into();
    let txn = Txn::new()
        .when(Compare::ModRevision {
            key: node_key.clone(),
            revision: kv.mod_revision,
        })
        .when(Compare::Absent {
            key: set_key.clone(),
        })
        .then(Op::Put {
            key: node_key.clone(),
            value: Resource::Node(n.clone()).to_stored(),
        })
        .then(Op::Put {
            key: set_key.clone(),
            value: set.clone(),
        });
    match store.txn(&txn).expect("txn") {
        TxnOutcome::Failed { failed_keys } => {
            assert_eq!(failed_keys, std::slice::from_ref(&set_key))
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // The Node's write was undone.
    let after = store.get(&node_key).expect("get").expect("node");
    assert_eq!(after.value, kv.value);
    assert!(
        !kube
            .node("node-a")
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(NODE_IPV4_VXLAN_TUNNEL_ADDR)
    );

    // The same with the CRD condition holding commits both.
    let kv = store.get(&node_key).expect("get").expect("node");
    let set_rev = store.get(&set_key).expect("get").expect("set").mod_revision;
    let txn = Txn::new()
        .when(Compare::ModRevision {
            key: node_key.clone(),
            revision: kv.mod_revision,
        })
        .when(Compare::ModRevision {
            key: set_key.clone(),
            revision: set_rev,
        })
        .then(Op::Put {
            key: node_key.clone(),
            value: Resource::Node(n).to_stored(),
        })
        .then(Op::Delete {
            key: set_key.clone(),
        });
    assert!(matches!(
        store.txn(&txn).expect("txn"),
        TxnOutcome::Committed { .. }
    ));
    assert_eq!(
        calico_node(&store.get(&node_key).expect("get").expect("node").value)
            .spec
            .ipv4_vxlan_tunnel_addr,
        "10.244.0.1"
    );
    assert_eq!(store.get(&set_key).expect("get"), None);
}
