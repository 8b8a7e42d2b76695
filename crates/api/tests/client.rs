//! The resource client over the in-memory store: write modes, compare-and-swap, all-or-nothing,
//! and large writes split to the backend's transaction limits.

use std::sync::Arc;

use gingham_api::{ApiError, Client, Outcome, WriteMode};
use gingham_datastore::mem::MemStore;
use gingham_datastore::{Datastore, TxnLimits};
use gingham_model::{Kind, Resource};

fn resources(yaml: &str) -> Vec<Resource> {
    gingham_model::load("test.yaml", yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .flat_map(|d| d.resources)
        .collect()
}

fn policies(ns: &str, n: usize, order: u32) -> Vec<Resource> {
    let yaml: String = (0..n)
        .map(|i| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: p{i}\n  namespace: {ns}\nspec:\n  order: {order}\n  selector: app == 'a{i}'\n  ingress:\n  - action: Allow\n---\n"
            )
        })
        .collect();
    resources(&yaml)
}

#[test]
fn create_replace_apply_and_outcomes() {
    let store = MemStore::new();
    let client = Client::new(Arc::new(store.clone()));
    let v1 = policies("ns1", 3, 100);
    assert_eq!(
        client.write_all(&v1, WriteMode::Create).unwrap(),
        vec![Outcome::Created; 3]
    );
    let err = client.write_all(&v1[..1], WriteMode::Create).unwrap_err();
    assert!(matches!(err, ApiError::AlreadyExists { .. }), "{err}");

    let stored = client.get(Kind::NetworkPolicy, Some("ns1"), "p0").unwrap();
    let uid = stored.meta().uid.clone().expect("a uid is assigned");
    assert!(stored.meta().resource_version.is_some());

    // Apply the same content: nothing changes; a new order: replaced, identity kept.
    assert_eq!(
        client.write_all(&v1, WriteMode::Apply).unwrap(),
        vec![Outcome::Unchanged; 3]
    );
    let v2 = policies("ns1", 3, 200);
    assert_eq!(
        client.write_all(&v2, WriteMode::Replace).unwrap(),
        vec![Outcome::Replaced; 3]
    );
    let after = client.get(Kind::NetworkPolicy, Some("ns1"), "p0").unwrap();
    assert_eq!(after.meta().uid.as_deref(), Some(uid.as_str()));

    // Replace of a missing resource fails and writes nothing of the others.
    let mut mixed = policies("ns1", 2, 300);
    mixed.extend(policies("ns2", 1, 300));
    let before = store.revision().unwrap();
    let err = client.write_all(&mixed, WriteMode::Replace).unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }), "{err}");
    assert_eq!(store.revision().unwrap(), before, "nothing was written");
}

#[test]
fn stale_resource_version_is_a_conflict() {
    let client = Client::new(Arc::new(MemStore::new()));
    client
        .write_all(&policies("ns", 1, 1), WriteMode::Create)
        .unwrap();
    let mut r = client.get(Kind::NetworkPolicy, Some("ns"), "p0").unwrap();
    let stale = r.meta().resource_version.clone();
    client
        .write_all(&policies("ns", 1, 2), WriteMode::Apply)
        .unwrap();
    r.meta_mut().resource_version = stale;
    let err = client.write_all(&[r], WriteMode::Replace).unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err}");
}

#[test]
fn the_same_resource_twice_is_refused() {
    let client = Client::new(Arc::new(MemStore::new()));
    let mut twice = policies("ns", 1, 1);
    twice.extend(policies("ns", 1, 2));
    let err = client.write_all(&twice, WriteMode::Apply).unwrap_err();
    assert!(matches!(err, ApiError::Duplicate { .. }), "{err}");
    assert!(err.to_string().contains("ns/p0"), "{err}");
}

fn pool(name: &str, cidr: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}}}\n---\n"
    )
}

/// Overlapping IP pools are refused as libcalico-go refuses them: against stored pools and
/// within one write, naming both pools; nothing is written. Re-applying a pool, or moving a
/// pool's CIDR (replacing it by name) is not an overlap with itself.
#[test]
fn overlapping_pools_are_refused() {
    let client = Client::new(Arc::new(MemStore::new()));
    client
        .write_all(&resources(&pool("a", "10.244.0.0/16")), WriteMode::Apply)
        .expect("first pool");
    // Against a stored pool.
    let err = client
        .write_all(&resources(&pool("b", "10.244.128.0/17")), WriteMode::Apply)
        .unwrap_err();
    assert!(matches!(err, ApiError::PoolOverlap { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("IPPool b")
            && text.contains("10.244.128.0/17")
            && text.contains("IPPool a (10.244.0.0/16)"),
        "{text}"
    );
    // Within one write, with an unrelated resource: nothing of it is written.
    let mut both = resources(&(pool("c", "10.9.0.0/24") + &pool("d", "10.9.0.128/25")));
    both.extend(policies("ns", 1, 1));
    let err = client.write_all(&both, WriteMode::Apply).unwrap_err();
    assert!(matches!(err, ApiError::PoolOverlap { .. }), "{err}");
    assert_eq!(client.list(Kind::IpPool, None).unwrap().0.len(), 1);
    assert_eq!(client.list(Kind::NetworkPolicy, None).unwrap().0.len(), 0);
    // The same pool again, or the pool itself with a new CIDR: not an overlap.
    client
        .write_all(&resources(&pool("a", "10.244.0.0/16")), WriteMode::Apply)
        .expect("re-applied");
    client
        .write_all(&resources(&pool("a", "10.245.0.0/16")), WriteMode::Apply)
        .expect("a pool does not overlap itself");
    client
        .write_all(&resources(&pool("b", "10.244.128.0/17")), WriteMode::Apply)
        .expect("no longer overlapping");
}

#[test]
fn large_writes_fit_the_backend_limits() {
    // etcd-like limits: 128 operations per transaction.
    let store = MemStore::new().with_limits(TxnLimits {
        max_ops: 128,
        max_bytes: 64 * 1024,
    });
    let client = Client::new(Arc::new(store.clone()));
    let many = policies("big", 1000, 1);
    let out = client.write_all(&many, WriteMode::Apply).unwrap();
    assert_eq!(out.len(), 1000);
    let (listed, _) = client.list(Kind::NetworkPolicy, Some("big")).unwrap();
    assert_eq!(listed.len(), 1000);
    // Deleting them all also splits.
    let targets: Vec<_> = listed
        .iter()
        .map(|r| {
            (
                Kind::NetworkPolicy,
                r.meta().namespace.clone(),
                r.meta().name.clone(),
            )
        })
        .collect();
    assert_eq!(client.delete_all(&targets).unwrap().len(), 1000);
    assert!(
        client
            .list(Kind::NetworkPolicy, Some("big"))
            .unwrap()
            .0
            .is_empty()
    );
}

/// Re-applying a Pod (an endpoint without interface or addresses) relabels the running
/// workload's endpoint and keeps what the CNI plugin wrote.
#[test]
fn reapplied_pods_keep_the_cni_fields() {
    let client = Client::new(Arc::new(MemStore::new()));
    let pod = |labels: &str| {
        resources(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: shop, labels: {{{labels}}}}}\nspec: {{nodeName: n1}}\n"
        ))
    };
    client
        .write_all(&pod("app: web"), WriteMode::Apply)
        .unwrap();
    // The plugin fills in the interface and the address.
    let Resource::WorkloadEndpoint(mut wep) = client
        .list(Kind::WorkloadEndpoint, Some("shop"))
        .unwrap()
        .0
        .remove(0)
    else {
        panic!("a workload endpoint")
    };
    wep.spec.interface_name = "cali0123456789a".into();
    wep.spec.mac = "aa:bb:cc:dd:ee:ff".into();
    wep.spec.ip_networks = vec!["10.0.0.5/32".parse().unwrap()];
    wep.spec.container_id = "c1".into();
    client
        .write_all(&[Resource::WorkloadEndpoint(wep)], WriteMode::Apply)
        .unwrap();
    // The pod is applied again with another label.
    client
        .write_all(&pod("app: web, tier: front"), WriteMode::Apply)
        .unwrap();
    let Resource::WorkloadEndpoint(after) = client
        .list(Kind::WorkloadEndpoint, Some("shop"))
        .unwrap()
        .0
        .remove(0)
    else {
        panic!("a workload endpoint")
    };
    assert_eq!(
        after.metadata.labels.get("tier").map(String::as_str),
        Some("front")
    );
    assert_eq!(after.spec.interface_name, "cali0123456789a");
    assert_eq!(after.spec.ip_networks.len(), 1);
    assert_eq!(after.spec.container_id, "c1");
}

/// etcd's limits: 128 operations and about 1 MiB per transaction.
const ETCD_LIKE: TxnLimits = TxnLimits {
    max_ops: 128,
    max_bytes: 1024 * 1024,
};

/// A write split over several etcd-sized transactions, interrupted (the writing process dies) at
/// every step, leaves all of it or none of it for the next reader, and the next writer goes on.
#[test]
fn an_interrupted_large_write_is_all_or_nothing() {
    let old = policies("big", 300, 1);
    let new = policies("big", 300, 2);
    let mut budget = 0;
    let mut interrupted = 0;
    loop {
        let store = MemStore::new().with_limits(ETCD_LIKE);
        let client = Client::new(Arc::new(store.clone()));
        client.write_all(&old, WriteMode::Apply).unwrap();
        let dying = Client::new(Arc::new(gingham_datastore::mem::Dying::new(
            Arc::new(store.clone()),
            budget,
        )));
        if dying.write_all(&new, WriteMode::Apply).is_ok() {
            break;
        }
        interrupted += 1;
        let (listed, _) = Client::new(Arc::new(store.clone()))
            .list(Kind::NetworkPolicy, Some("big"))
            .unwrap();
        assert_eq!(listed.len(), 300);
        let orders: std::collections::BTreeSet<String> = listed
            .iter()
            .map(|r| serde_json::to_value(r).unwrap()["spec"]["order"].to_string())
            .collect();
        assert_eq!(
            orders.len(),
            1,
            "interrupted after {budget} writes: {orders:?}"
        );
        client.write_all(&old, WriteMode::Apply).unwrap();
        budget += 1;
    }
    assert!(interrupted >= 4, "the write took {interrupted} steps");
}

/// Identical applies at once, without resourceVersion, all succeed (each plans again from a
/// fresh read when another one got there first), on a store with etcd's limits and without.
#[test]
fn concurrent_identical_applies_all_succeed() {
    for limits in [ETCD_LIKE, TxnLimits::UNLIMITED] {
        let store = MemStore::new().with_limits(limits);
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let client = Client::new(Arc::new(store));
                    let mut applied = policies("race", 150, 7);
                    applied.extend(policies("race2", 3, 7));
                    barrier.wait();
                    client.write_all(&applied, WriteMode::Apply)
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join().unwrap() {
                panic!("limits {limits:?}: {e}");
            }
        }
    }
}

#[test]
fn conflicts_are_explained_in_words() {
    let client = Client::new(Arc::new(MemStore::new()));
    client
        .write_all(&policies("ns", 1, 1), WriteMode::Create)
        .unwrap();
    let mut r = client.get(Kind::NetworkPolicy, Some("ns"), "p0").unwrap();
    let stale = r.meta().resource_version.clone().unwrap();
    client
        .write_all(&policies("ns", 1, 2), WriteMode::Apply)
        .unwrap();
    let now = client.get(Kind::NetworkPolicy, Some("ns"), "p0").unwrap();
    let now = now.meta().resource_version.clone().unwrap();
    r.meta_mut().resource_version = Some(stale.clone());
    let err = client.write_all(&[r], WriteMode::Replace).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "NetworkPolicy ns/p0 was changed by someone else since resourceVersion {stale} was read: it is now at resourceVersion {now}; get it again and retry, or leave resourceVersion out to overwrite it"
        )
    );
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("app".to_owned(), Some("a".to_owned()));
    client
        .label(Kind::NetworkPolicy, Some("ns"), "p0", &labels, false)
        .unwrap();
    labels.insert("app".to_owned(), Some("b".to_owned()));
    let err = client
        .label(Kind::NetworkPolicy, Some("ns"), "p0", &labels, false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "NetworkPolicy ns/p0 already has label \"app\" with value \"a\"; nothing was changed (use --overwrite to replace it)"
    );
}
