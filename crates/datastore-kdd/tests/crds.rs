//! Every CRD kind through the Kubernetes datastore and back, the objects the API server holds,
//! transactions that fail midway, and the errors that name what is wrong.

mod common;

use std::time::Duration;

use common::Cluster;
use gingham_datastore::{Compare, Datastore, Error, EventKind, Op, Txn, TxnOutcome};
use gingham_datastore_kdd::KddStore;
use gingham_datastore_kdd::crd::{self, Layout, METADATA_ANNOTATION};
use gingham_ipam::stored;
use gingham_model::kind::KEY_ROOT;
use serde_json::{Value, json};

/// A key and value of every kind the store keeps as a CRD.
fn samples() -> Vec<(crd::CrdType, String, Value)> {
    let cidr: ipnet::IpNet = "10.9.0.0/26".parse().unwrap();
    crd::crd_types()
        .into_iter()
        .map(|ty| {
            let (key, value) = match ty.layout {
                Layout::Resource => {
                    let name = format!("sample-{}", ty.crd.plural);
                    let (key, ns) = if ty.crd.namespaced {
                        (
                            format!("{KEY_ROOT}/{}/default/{name}", ty.crd.plural),
                            json!("default"),
                        )
                    } else {
                        (format!("{KEY_ROOT}/{}/{name}", ty.crd.plural), Value::Null)
                    };
                    let mut meta = json!({"name": name, "labels": {"app": "a"},
                        "annotations": {"projectcalico.org/x": "y"}});
                    if !ns.is_null() {
                        meta["namespace"] = ns;
                    }
                    (
                        key,
                        json!({"apiVersion": "projectcalico.org/v3", "kind": ty.crd.kind,
                            "metadata": meta, "spec": {"order": 5, "list": ["a", "b"]}}),
                    )
                }
                Layout::IpamBlock => (
                    stored::block_key(&cidr),
                    json!({"cidr": "10.9.0.0/26", "affinity": "host:n1",
                        "allocations": vec![Value::Null; 64], "unallocated": (0..64).collect::<Vec<_>>(),
                        "attributes": [], "sequenceNumber": 1,
                        "sequenceNumberForAllocation": {}, "deleted": false}),
                ),
                Layout::IpamHandle => (
                    stored::handle_key("k8s-pod-network.sample"),
                    json!({"block": {"10.9.0.0/26": 1}, "deleted": false}),
                ),
                Layout::BlockAffinity => (
                    stored::affinity_key("n1", &cidr),
                    json!({"state": "pending", "deleted": false}),
                ),
                Layout::IpamConfig => (
                    stored::CONFIG_KEY.to_owned(),
                    json!({"auto_allocate_blocks": true, "maxBlocksPerHost": 2}),
                ),
            };
            (ty, key, value)
        })
        .collect()
}

/// The value as read back: the server sets uid and creationTimestamp.
fn without_server_fields(mut v: Value) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        assert!(m.remove("uid").is_some(), "uid set: {m:?}");
        assert!(
            m.remove("creationTimestamp").is_some(),
            "creationTimestamp set"
        );
    }
    v
}

#[test]
fn every_crd_kind_round_trips() {
    let cluster = Cluster::start();
    let s = cluster.connect();
    let samples = samples();
    assert!(samples.len() >= 20, "{}", samples.len());
    let start = s.revision().unwrap();
    // One watch over the four IPAM CRD types (the resource kinds share a prefix with the
    // k8s-backed kinds, which cannot be watched yet).
    let mut w = s.watch(stored::IPAM_PREFIX, start).unwrap();
    for (ty, key, value) in &samples {
        let bytes = serde_json::to_vec(value).unwrap();
        let rev = s.create(key, &bytes).unwrap();
        let kv = s
            .get(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} reads back"));
        assert_eq!(kv.mod_revision, rev, "{key}");
        let back: Value = serde_json::from_slice(&kv.value).unwrap();
        let back = match ty.layout {
            Layout::Resource => without_server_fields(back),
            _ => back,
        };
        assert_eq!(&back, value, "{key}");
        // The object the API server holds is Calico's CRD object.
        let ns = value["metadata"]["namespace"].as_str();
        let stored = cluster
            .backing
            .get(&format!(
                "{}crd.projectcalico.org/{}/{}{}",
                gingham_kubeapi::REGISTRY_PREFIX,
                ty.crd.plural,
                ns.map(|n| format!("{n}/")).unwrap_or_default(),
                crd::locate(key).unwrap().name
            ))
            .unwrap()
            .unwrap_or_else(|| panic!("{key}: the CRD object is stored"));
        let obj: Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(obj["apiVersion"], "crd.projectcalico.org/v1", "{key}");
        assert_eq!(obj["kind"], ty.crd.kind, "{key}");
        if ty.layout == Layout::Resource {
            assert_eq!(obj["spec"], value["spec"]);
            assert!(obj["metadata"]["annotations"][METADATA_ANNOTATION].is_string());
            assert_eq!(obj["metadata"]["annotations"]["projectcalico.org/x"], "y");
        }
    }
    // Every kind is listed under its prefix; the watch saw each IPAM creation once, in
    // revision order.
    for (ty, key, _) in &samples {
        let listing = s.list(&ty.key_space()).unwrap();
        assert!(listing.kvs.iter().any(|kv| &kv.key == key), "{key}");
    }
    // A namespace's list asks for that namespace only.
    let in_default = s
        .list(&format!("{KEY_ROOT}/networkpolicies/default/"))
        .unwrap();
    assert_eq!(in_default.kvs.len(), 1);
    assert!(
        s.list(&format!("{KEY_ROOT}/networkpolicies/other/"))
            .unwrap()
            .kvs
            .is_empty()
    );
    let ipam = s.list(stored::IPAM_PREFIX).unwrap();
    assert_eq!(ipam.kvs.len(), 4);
    let mut seen = Vec::new();
    while let Some(e) = w.next(Duration::from_secs(5)).unwrap() {
        assert_eq!(e.kind, EventKind::Put);
        seen.push((e.revision(), e.kv.key));
        if seen.len() == 4 {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "events in revision order");
    let mut keys: Vec<String> = seen.into_iter().map(|(_, k)| k).collect();
    keys.sort();
    let mut want: Vec<String> = samples
        .iter()
        .filter(|(ty, _, _)| ty.layout != Layout::Resource)
        .map(|(_, k, _)| k.clone())
        .collect();
    want.sort();
    assert_eq!(keys, want);
    // Deletes come through too, carrying the last value.
    let (_, key, value) = samples
        .iter()
        .find(|(ty, _, _)| ty.layout == Layout::IpamHandle)
        .unwrap();
    s.delete(key, None).unwrap();
    let e = w.next(Duration::from_secs(5)).unwrap().expect("the delete");
    assert_eq!((e.kind, &e.kv.key), (EventKind::Delete, key));
    let prev: Value = serde_json::from_slice(&e.prev.unwrap().value).unwrap();
    assert_eq!(prev["spec"], value["spec"]);
}

fn pool(name: &str, cidr: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": name}, "spec": {"cidr": cidr}}),
    )
    .unwrap()
}

fn policy_in(ns: &str, name: &str) -> (String, Vec<u8>) {
    (
        format!("{KEY_ROOT}/networkpolicies/{ns}/{name}"),
        serde_json::to_vec(
            &json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": {"selector": "all()"}}),
        )
        .unwrap(),
    )
}

#[test]
fn a_transaction_that_fails_midway_is_undone() {
    let cluster = Cluster::start();
    let s = cluster.connect();
    let a = format!("{KEY_ROOT}/ippools/a");
    let b = format!("{KEY_ROOT}/ippools/b");
    let ra = s.create(&a, &pool("a", "10.0.0.0/16")).unwrap();
    let rb = s.create(&b, &pool("b", "10.1.0.0/16")).unwrap();
    let (np, np_value) = policy_in("no-such-namespace", "p");
    // A compared key and an unconditional one are written, then the API server refuses the
    // policy (its namespace does not exist): both writes are undone.
    let txn = Txn::new()
        .when(Compare::ModRevision {
            key: a.clone(),
            revision: ra,
        })
        .then(Op::Put {
            key: a.clone(),
            value: pool("a", "10.2.0.0/16"),
        })
        .then(Op::Delete { key: b.clone() })
        .then(Op::Put {
            key: np.clone(),
            value: np_value,
        });
    let err = s.txn(&txn).unwrap_err();
    assert!(err.to_string().contains("no-such-namespace"), "{err}");
    let got: Value = serde_json::from_slice(&s.get(&a).unwrap().unwrap().value).unwrap();
    assert_eq!(
        got["spec"]["cidr"], "10.0.0.0/16",
        "the first write is undone"
    );
    let got: Value = serde_json::from_slice(&s.get(&b).unwrap().unwrap().value).unwrap();
    assert_eq!(got["spec"]["cidr"], "10.1.0.0/16", "the delete is undone");
    assert_eq!(s.get(&np).unwrap(), None);

    // A stale comparison fails before anything is written.
    let before = s.revision().unwrap();
    let stale = Txn::new()
        .when(Compare::ModRevision {
            key: b.clone(),
            revision: rb - 1,
        })
        .then(Op::Put {
            key: a.clone(),
            value: pool("a", "10.3.0.0/16"),
        })
        .then(Op::Delete { key: b.clone() });
    assert_eq!(
        s.txn(&stale).unwrap(),
        TxnOutcome::Failed {
            failed_keys: vec![b.clone()]
        }
    );
    assert_eq!(s.revision().unwrap(), before, "nothing written");
}

#[test]
fn errors_name_the_key_the_server_and_the_fix() {
    let cluster = Cluster::start();
    let s = cluster.connect();
    let e = s.put("/gingham/atomic/intent", b"{}").unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("/gingham/atomic/intent")),
        "{e}"
    );
    let node = format!("{KEY_ROOT}/nodes/n1");
    let e = s.get(&node).unwrap_err();
    assert!(
        e.to_string().contains(&node) && e.to_string().contains("Kubernetes Nodes"),
        "{e}"
    );
    let e = s.list(&format!("{KEY_ROOT}/")).unwrap_err();
    assert!(e.to_string().contains("not read them yet"), "{e}");
    let key = format!("{KEY_ROOT}/ippools/p");
    let e = s.put(&key, b"not json").unwrap_err();
    assert!(e.to_string().contains(&key), "{e}");
    // The store says it takes any transaction, so the write-ahead layer leaves it alone.
    let arc: std::sync::Arc<dyn Datastore> = std::sync::Arc::new(cluster.connect());
    let wrapped = gingham_datastore::atomic::Atomic::wrap(arc.clone());
    assert!(std::sync::Arc::ptr_eq(&arc, &wrapped));

    // No API server at the kubeconfig's address.
    let dead = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let path = dead.path().join("kubeconfig");
    std::fs::write(&path, gingham_kubeapi::kubeconfig(&url)).unwrap();
    match KddStore::connect(Some(&path)) {
        Err(Error::Unavailable(m)) => assert!(m.contains(&url.replace("http://", "")), "{m}"),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    // A kubeconfig that is not there.
    let missing = dead.path().join("missing");
    match KddStore::connect(Some(&missing)) {
        Err(Error::Config(m)) => assert!(m.contains("missing"), "{m}"),
        Err(e) => panic!("expected Config, got {e}"),
        Ok(_) => panic!("connected without a kubeconfig"),
    }
}

#[test]
fn a_cluster_without_calicos_crds_is_named() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(gingham_kubeapi::ApiServer::start(
            std::sync::Arc::new(gingham_datastore::mem::MemStore::new()),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    match KddStore::connect(Some(&path)) {
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.contains("CRDs installed") && m.contains(&server.url()),
                "{m}"
            );
        }
        Ok(_) => panic!("connected without CRDs"),
    }
    rt.block_on(server.shutdown());
}

#[test]
fn a_watch_resumes_by_itself_when_the_api_server_comes_back() {
    let mut cluster = Cluster::start();
    let s = cluster.connect();
    let a = format!("{KEY_ROOT}/ippools/a");
    let start = s.revision().unwrap();
    let mut w = s.watch(&format!("{KEY_ROOT}/ippools/"), start).unwrap();
    let r1 = s.create(&a, &pool("a", "10.0.0.0/16")).unwrap();
    assert_eq!(
        w.next(Duration::from_secs(5)).unwrap().unwrap().revision(),
        r1
    );
    cluster.restart();
    let r2 = s.put(&a, &pool("a", "10.1.0.0/16")).unwrap();
    let e = w
        .next(Duration::from_secs(15))
        .unwrap()
        .expect("the event after the restart");
    assert_eq!((e.kind, e.revision()), (EventKind::Put, r2));
    assert_eq!(e.prev.map(|p| p.mod_revision), Some(r1));
}
