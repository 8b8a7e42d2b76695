//! Incremental calculation against full recomputation, measured in the same run. The default
//! scale is the issue's: E = 10,000 endpoints on 100 nodes (100 on the measured node) and
//! P = 1,000 policies. Operations: relabel one endpoint (changes set membership), add one
//! endpoint, change one policy; the full calculation; memory per remote endpoint (RSS growth).
//!
//! Run: `cargo bench -p gingham-calc --bench incremental`. `CALC_BENCH_SCALE=small|large`.

// The counting allocator (`tests/support/counting.rs`) is the unsafe code here: a benchmark
// needs to know how many bytes stay allocated, and only a global allocator sees that.
#![allow(unsafe_code)]

#[path = "../tests/support/counting.rs"]
mod counting;

use std::time::{Duration, Instant};

use counting::live;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

use gingham_calc::Snapshot;
use gingham_calc::incremental::{Calculator, Update};
use gingham_model::Resource;

fn load(text: &str) -> Vec<Resource> {
    gingham_model::load_resources("bench.yaml", text).expect("valid generated input")
}

fn endpoint(i: usize, app: &str) -> String {
    let node = format!("node{}", i % NODES);
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-pod{i}-eth0
  namespace: ns{ns}
  labels: {{app: {app}, projectcalico.org/namespace: ns{ns}, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: pod{i}
  endpoint: eth0
  interfaceName: cali{i:011}
  ipNetworks: [10.{a}.{b}.{c}/32]
  profiles: [kns.ns{ns}]
---
",
        ns = i % 20,
        a = (i >> 16) & 255,
        b = (i >> 8) & 255,
        c = i & 255,
    )
}

fn policy(i: usize, port: u16) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: pol{i}}}
spec:
  order: {i}
  selector: app == 'app{sel}'
  ingress:
  - action: Allow
    protocol: TCP
    source: {{selector: app == 'app{src}'}}
    destination: {{ports: [{port}]}}
---
",
        sel = i % 50,
        src = (i * 7) % 50
    )
}

const NODES: usize = 100;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut(usize)) -> Duration {
    median(
        (0..reps)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (p, e) = match std::env::var("CALC_BENCH_SCALE").as_deref() {
        Ok("small") => (100, 1_000),
        Ok("large") => (10_000, 10_000),
        _ => (1_000, 10_000),
    };
    // Namespace profiles as Calico's controllers write them (allow, with namespace labels).
    let profiles: String = (0..20)
        .map(|n| {
            format!(
                "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.ns{n}}}
spec:
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
  labelsToApply: {{pcns.projectcalico.org/name: ns{n}, pcns.team: team{t}}}
---
",
                t = n % 4
            )
        })
        .collect();
    let mut policies = load(&profiles);
    policies.extend(load(&(0..p).map(|i| policy(i, 80)).collect::<String>()));
    let endpoints = load(
        &(0..e)
            .map(|i| endpoint(i, &format!("app{}", i % 50)))
            .collect::<String>(),
    );
    // Memory per remote endpoint: calculator state with and without the endpoints.
    let mut probe = Calculator::new("node0");
    probe.load_all(policies.clone());
    let with_policies = live();
    probe.load_all(policies.iter().chain(&endpoints).cloned().collect());
    let with_endpoints = live();
    drop(probe);
    let per_endpoint = with_endpoints.saturating_sub(with_policies) as f64 / e as f64;
    let mut base = policies;
    base.extend(endpoints);
    let node = "node0";

    let t = Instant::now();
    let mut calc = Calculator::new(node);
    calc.load_all(base.clone());
    let cold_incremental = t.elapsed();
    // One update at a time from empty (what a long watch replay costs).
    let t = Instant::now();
    let mut one_by_one = Calculator::new(node);
    for r in &base {
        one_by_one.apply(Update::Upsert(Box::new(r.clone())));
    }
    let cold_updates = t.elapsed();
    assert_eq!(one_by_one.state(), calc.state());
    let t = Instant::now();
    let full = Snapshot::build(&base).node_program(Some(node));
    let cold_full = t.elapsed();
    assert_eq!(calc.state(), full);

    let reps = 30;
    // Relabel one local endpoint back and forth.
    let relabel: Vec<Resource> = ["app3", "app4"]
        .iter()
        .flat_map(|app| load(&endpoint(10, app)))
        .collect();
    let inc_relabel = time(reps, |i| {
        calc.apply(Update::Upsert(Box::new(relabel[i % 2].clone())));
    });
    // Change one policy's port back and forth.
    let changed: Vec<Resource> = [81u16, 80]
        .iter()
        .flat_map(|port| load(&policy(3, *port)))
        .collect();
    let inc_policy = time(reps, |i| {
        calc.apply(Update::Upsert(Box::new(changed[i % 2].clone())));
    });
    // Add one new local endpoint (a new one each time).
    let adds: Vec<Resource> = (0..reps)
        .flat_map(|i| load(&endpoint(e + i * 10, "app7")))
        .collect();
    let inc_add = time(reps, |i| {
        calc.apply(Update::Upsert(Box::new(adds[i].clone())));
    });
    // The baseline: recompute everything after one change.
    let full_once = time(5, |_| {
        std::hint::black_box(Snapshot::build(&base).node_program(Some(node)));
    });
    let line = |name: &str, d: Duration| {
        println!(
            "{name:<28} {:>10.1} µs   full recompute {:>10.1} µs   speed-up {:>8.0}x",
            d.as_secs_f64() * 1e6,
            full_once.as_secs_f64() * 1e6,
            full_once.as_secs_f64() / d.as_secs_f64()
        )
    };
    println!("P={p} policies, E={e} endpoints ({} on {node})", e / NODES);
    line("relabel one endpoint", inc_relabel);
    line("change one policy", inc_policy);
    line("add one endpoint", inc_add);
    println!(
        "cold start: load_all {:.1} ms, one update per resource {:.1} ms, full calculation {:.1} ms",
        cold_incremental.as_secs_f64() * 1e3,
        cold_updates.as_secs_f64() * 1e3,
        cold_full.as_secs_f64() * 1e3
    );
    println!(
        "memory per remote endpoint (live heap bytes the calculator keeps): {:.0} bytes",
        per_endpoint
    );
}
