//! `reach` over 1,000 pods: one matrix (1,000,000 verdicts from the reference evaluator) for a
//! cluster of 20 namespaces with namespace profiles and 100 policies.
//!
//! Run: `cargo bench -p gingham-calc --bench reach`. `REACH_BENCH_PODS` changes the pod count.

use std::time::Instant;

use gingham_calc::{Snapshot, reach};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let pods: usize = std::env::var("REACH_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut text = String::new();
    for n in 0..20 {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: team{}}}}}\n---\n",
            n % 4
        ));
    }
    for i in 0..pods {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod{i}, namespace: ns{}, labels: {{app: app{}, tier: t{}}}}}\nspec: {{nodeName: node{}}}\nstatus: {{podIP: 10.{}.{}.{}}}\n---\n",
            i % 20,
            i % 50,
            i % 3,
            i % 10,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    for p in 0..100 {
        text.push_str(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{p}, namespace: ns{}}}\nspec:\n  podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: team{}}}}}\n      podSelector: {{matchLabels: {{tier: t{}}}}}\n    ports: [{{port: 80}}]\n---\n",
            p % 20,
            p % 50,
            p % 4,
            p % 3
        ));
    }
    let t = Instant::now();
    let resources = gingham_model::load_resources("bench.yaml", &text).expect("valid input");
    let snap = Snapshot::build(&resources);
    let load = t.elapsed();
    let endpoints = reach::matrix_endpoints(&snap);
    let t = Instant::now();
    let m = reach::matrix(&snap, &endpoints, 6, Some(80)).expect("matrix");
    let took = t.elapsed();
    let allowed: usize = m
        .allowed
        .values()
        .map(|row| row.values().filter(|v| **v).count())
        .sum();
    let flows = endpoints.len() * endpoints.len();
    println!(
        "reach over {} pods: {flows} verdicts in {:.2} s ({:.0} verdicts/s, {allowed} allowed); loading and compiling the input {:.0} ms",
        endpoints.len(),
        took.as_secs_f64(),
        flows as f64 / took.as_secs_f64(),
        load.as_secs_f64() * 1e3
    );
}
