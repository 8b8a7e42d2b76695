//! Shared helpers for the IPAM integration tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_ipam::{AssignRequest, Ipam, PoolSpec};
use ipnet::IpNet;

pub fn mem() -> MemStore {
    MemStore::new()
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn pool(name: &str, cidr: &str) -> PoolSpec {
    PoolSpec::new(name, net(cidr))
}

/// A request for `n4` IPv4 addresses from `pools`.
pub fn req(handle: &str, node: &str, n4: usize, pools: &[PoolSpec]) -> AssignRequest {
    let mut attrs = BTreeMap::new();
    attrs.insert("node".to_owned(), node.to_owned());
    attrs.insert("pod".to_owned(), handle.to_owned());
    attrs.insert("namespace".to_owned(), "default".to_owned());
    AssignRequest {
        handle_id: handle.to_owned(),
        attrs,
        node: node.to_owned(),
        num_v4: n4,
        pools_v4: pools.to_vec(),
        ..Default::default()
    }
}

/// The raw JSON stored under `key`.
pub fn raw(store: &dyn Datastore, key: &str) -> Option<String> {
    store
        .get(key)
        .unwrap()
        .map(|kv| String::from_utf8(kv.value).unwrap())
}

/// How many concurrent callers the concurrency tests run.
pub const THREADS: usize = 50;

/// Runs `THREADS` concurrent assignments (thread `i` uses `stores[i % len]` and node
/// `nodes[i % len]`), checks the result, then releases everything concurrently.
pub fn assign_and_release_concurrently(
    stores: &[&dyn Datastore],
    nodes: &[&str],
    pools: &[PoolSpec],
    per_thread: usize,
) {
    let results: Vec<Vec<IpAddr>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let store = stores[i % stores.len()];
                let node = nodes[i % nodes.len()];
                sc.spawn(move || {
                    let ipam = Ipam::new(store);
                    let r = ipam
                        .auto_assign(&req(&format!("h{i}"), node, per_thread, pools))
                        .unwrap_or_else(|e| panic!("thread {i}: {e}"));
                    r.v4.into_iter().map(|a| a.ip).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<IpAddr> = results.iter().flatten().copied().collect();
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(all.len(), THREADS * per_thread);
    assert_eq!(distinct.len(), all.len(), "an address was handed out twice");

    let ipam = Ipam::new(stores[0]);
    let live_nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    let report = ipam.check(&|_, _| true, &live_nodes).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, all.len());
    assert_eq!(report.handles, THREADS);
    for (i, got) in results.iter().enumerate() {
        let mut held = ipam.ips_by_handle(&format!("h{i}")).unwrap();
        held.sort();
        let mut want = got.clone();
        want.sort();
        assert_eq!(held, want, "handle h{i}");
    }

    std::thread::scope(|sc| {
        for i in 0..THREADS {
            let store = stores[i % stores.len()];
            sc.spawn(move || {
                let released = Ipam::new(store)
                    .release_by_handle(&format!("h{i}"))
                    .unwrap();
                assert_eq!(released.len(), per_thread, "thread {i}");
            });
        }
    });
    let report = ipam.check(&|_, _| true, &live_nodes).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, 0);
    assert_eq!(report.handles, 0);
    let usage = ipam.show(pools, &[]).unwrap();
    assert!(usage.pools.iter().all(|p| p.in_use == 0));
    // Every node's blocks can now be released.
    for n in nodes {
        ipam.release_empty_blocks(n).unwrap();
    }
    assert_eq!(ipam.check(&|_, _| true, &[]).unwrap().blocks, 0);
}
