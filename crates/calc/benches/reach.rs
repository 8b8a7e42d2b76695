//! `reach` and `diff` over 1,000 pods: one matrix (1,000,000 cells) for a cluster of 20
//! namespaces with namespace profiles and 100 policies, grouped (endpoints policy cannot tell
//! apart share a verdict) and, in the same run, ungrouped (every cell evaluated; the two must be
//! equal); then the difference one added policy makes.
//!
//! Run: `cargo bench -p gingham-calc --bench reach`. `REACH_BENCH_PODS` changes the pod count.

use std::time::Instant;

use gingham_calc::{Snapshot, diff, reach};

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
    let flows = endpoints.len() * endpoints.len();
    let classes = reach::classes(&snap, &endpoints);
    let class_count = classes.iter().max().map_or(0, |m| m + 1);
    let t = Instant::now();
    let m = reach::matrix(&snap, &endpoints, 6, Some(80)).expect("matrix");
    let took = t.elapsed();
    let allowed: usize = m
        .allowed
        .values()
        .map(|row| row.values().filter(|v| **v).count())
        .sum();
    println!(
        "reach over {} pods ({class_count} classes of endpoints policy cannot tell apart): {flows} cells in {:.3} s ({allowed} allowed); loading and compiling the input {:.0} ms",
        endpoints.len(),
        took.as_secs_f64(),
        load.as_secs_f64() * 1e3
    );
    // The same run's ungrouped path: every cell decided by the evaluator (skipped above 2,000
    // pods unless REACH_BENCH_EACH=1: it takes minutes there).
    if pods <= 2_000 || std::env::var("REACH_BENCH_EACH").is_ok_and(|v| v == "1") {
        let t = Instant::now();
        let each = reach::matrix_each(&snap, &endpoints, 6, Some(80)).expect("matrix");
        let took_each = t.elapsed();
        assert_eq!(each, m, "the grouped matrix differs from the ungrouped one");
        println!(
            "reach ungrouped (every cell evaluated): {:.2} s ({:.0} verdicts/s); grouped is {:.0}x faster and equal",
            took_each.as_secs_f64(),
            flows as f64 / took_each.as_secs_f64(),
            took_each.as_secs_f64() / took.as_secs_f64()
        );
    }
    // diff: the same cluster with a policy first in line denying tier t1 to app7's pods.
    let change = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: app7-not-t1}\nspec:\n  order: 1\n  selector: app == 'app7'\n  ingress:\n  - {action: Deny, source: {selector: tier == 't1'}}\n  - {action: Pass}\n";
    let after_text = format!("{text}{change}");
    let after = Snapshot::build(
        &gingham_model::load_resources("bench.yaml", &after_text).expect("valid input"),
    );
    let t = Instant::now();
    let d = diff::diff(&snap, &after, &[(6, Some(80))]).expect("diff");
    let took = t.elapsed();
    println!(
        "diff over {} pods (one port, a policy denying some clients): {} gained, {} lost (each with its cause) in {:.3} s",
        endpoints.len(),
        d.gained.len(),
        d.lost.len(),
        took.as_secs_f64()
    );
}
