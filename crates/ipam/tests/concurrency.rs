//! Many concurrent callers on one store: no address is ever handed out twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::{THREADS, assign_and_release_concurrently, mem, pool, req};
use gingham_ipam::Ipam;

#[test]
fn fifty_threads_one_node_memory() {
    let s = mem();
    assign_and_release_concurrently(&[&s], &["n1"], &[pool("p", "10.0.0.0/24")], 1);
}

#[test]
fn fifty_threads_two_nodes_memory() {
    let s = mem();
    assign_and_release_concurrently(&[&s], &["n1", "n2"], &[pool("p", "10.0.0.0/24")], 1);
}

#[test]
fn fifty_threads_spanning_blocks_and_borrowing_memory() {
    // 100 addresses from a /25 (two blocks) for two nodes: each claims one block, and whoever
    // fills up first borrows from the other.
    let s = mem();
    assign_and_release_concurrently(&[&s], &["n1", "n2"], &[pool("p", "10.0.0.0/25")], 2);
}

#[test]
fn concurrent_assigns_never_overfill_a_pool() {
    // 50 threads want 2 addresses each from 64: at most 32 succeed, and a request that fails
    // leaves nothing behind (a loser may briefly hold a last single address, so a couple of
    // addresses can end up unused).
    let s = mem();
    let pools = [pool("p", "10.0.0.0/26")];
    let ok: Vec<Vec<IpAddr>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..THREADS)
            .map(|i| {
                let s = &s;
                let pools = &pools;
                sc.spawn(move || {
                    let node = if i % 2 == 0 { "n1" } else { "n2" };
                    Ipam::new(s)
                        .auto_assign(&req(&format!("h{i}"), node, 2, pools))
                        .ok()
                        .map(|r| r.v4.into_iter().map(|a| a.ip).collect::<Vec<_>>())
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!((28..=32).contains(&ok.len()), "{} succeeded", ok.len());
    let distinct: BTreeSet<IpAddr> = ok.iter().flatten().copied().collect();
    assert_eq!(distinct.len(), 2 * ok.len());
    let live: BTreeSet<String> = (0..THREADS)
        .filter(|i| {
            !Ipam::new(&s)
                .ips_by_handle(&format!("h{i}"))
                .unwrap()
                .is_empty()
        })
        .map(|i| format!("h{i}"))
        .collect();
    assert_eq!(live.len(), ok.len());
    let report = Ipam::new(&s)
        .check(
            &|h: &str, _: &BTreeMap<String, String>| live.contains(h),
            &["n1".into(), "n2".into()],
        )
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, 2 * ok.len());
}
