//! Cost of the IPAM hot paths (the CNI ADD and DEL) against an in-memory store, so that the
//! numbers measure IPAM's own work (reads, JSON, compare-and-swap) rather than a disk.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gingham_ipam::Ipam;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{mem, pool, req};

fn bench(c: &mut Criterion) {
    let pools = [pool("default-ipv4-ippool", "10.244.0.0/16")];

    // A node with an empty, already claimed block: one ADD followed by its DEL.
    let s = mem();
    let ipam = Ipam::new(&s);
    ipam.auto_assign(&req("warm", "n1", 1, &pools)).unwrap();
    ipam.release_by_handle("warm").unwrap();
    c.bench_function("assign+release 1 address (warm block)", |b| {
        b.iter(|| {
            let r = ipam.auto_assign(&req("pod", "n1", 1, &pools)).unwrap();
            black_box(&r);
            ipam.release_by_handle("pod").unwrap();
        })
    });

    // A busy node: 1000 addresses held in 16 blocks, the last one with room.
    let s = mem();
    let ipam = Ipam::new(&s);
    for i in 0..1000 {
        ipam.auto_assign(&req(&format!("p{i}"), "n1", 1, &pools))
            .unwrap();
    }
    c.bench_function("assign+release 1 address (node holds 1000)", |b| {
        b.iter(|| {
            let r = ipam.auto_assign(&req("pod", "n1", 1, &pools)).unwrap();
            black_box(&r);
            ipam.release_by_handle("pod").unwrap();
        })
    });

    c.bench_function("check (1000 allocations)", |b| {
        b.iter(|| black_box(ipam.check(&|_, _| true, &["n1".to_owned()]).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
