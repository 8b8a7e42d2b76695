//! Selector matching and parsing throughput.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gingham_selector::{LayeredLabels, Selector};

const FIVE_TERMS: &str =
    "app == 'web' && tier in {'a','b','c'} && has(env) && version != 'v1' && !has(canary)";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Ten labels that satisfy every term.
fn matching() -> BTreeMap<String, String> {
    labels(&[
        ("app", "web"),
        ("tier", "b"),
        ("env", "prod"),
        ("version", "v2"),
        ("team", "payments"),
        ("region", "eu-west-1"),
        ("zone", "eu-west-1a"),
        ("pod-template-hash", "7d9f8c6b5"),
        ("projectcalico.org/namespace", "shop"),
        ("projectcalico.org/orchestrator", "k8s"),
    ])
}

/// Ten labels that pass the first four terms and fail the last, so every term is evaluated.
fn non_matching() -> BTreeMap<String, String> {
    let mut set = matching();
    set.remove("team");
    set.insert("canary".to_owned(), "true".to_owned());
    set
}

fn matching_benches(c: &mut Criterion) {
    let selector = Selector::parse(FIVE_TERMS).expect("benchmark selector parses");
    let yes = matching();
    let no = non_matching();
    assert_eq!(yes.len(), 10);
    assert_eq!(no.len(), 10);
    assert!(selector.matches(&yes));
    assert!(!selector.matches(&no));

    let mut group = c.benchmark_group("match_5_terms_10_labels");
    group.throughput(Throughput::Elements(1));
    group.bench_function("matching", |b| {
        b.iter(|| black_box(&selector).matches(black_box(&yes)))
    });
    group.bench_function("non_matching", |b| {
        b.iter(|| black_box(&selector).matches(black_box(&no)))
    });
    let hash_yes: std::collections::HashMap<String, String> = yes.clone().into_iter().collect();
    group.bench_function("matching_hashmap", |b| {
        b.iter(|| black_box(&selector).matches(black_box(&hash_yes)))
    });
    let own = labels(&[
        ("app", "web"),
        ("tier", "b"),
        ("env", "prod"),
        ("version", "v2"),
    ]);
    let profile = labels(&[
        ("team", "payments"),
        ("region", "eu-west-1"),
        ("zone", "eu-west-1a"),
        ("pod-template-hash", "7d9f8c6b5"),
        ("projectcalico.org/namespace", "shop"),
        ("projectcalico.org/orchestrator", "k8s"),
    ]);
    let layered = LayeredLabels::new(&own).parent(&profile);
    group.bench_function("matching_layered", |b| {
        b.iter(|| black_box(&selector).matches(black_box(&layered)))
    });
    group.finish();
}

fn parse_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, text) in [
        ("five_terms", FIVE_TERMS),
        (
            "k8s_pod_selector",
            "projectcalico.org/orchestrator == 'k8s' && app in { 'web', 'api' } && ! has(canary)",
        ),
        ("single_term", "role == 'db'"),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| Selector::parse(black_box(text)).unwrap())
        });
    }
    group.finish();

    let selector = Selector::parse(FIVE_TERMS).unwrap();
    c.bench_function("unique_id_5_terms", |b| {
        b.iter(|| black_box(&selector).unique_id())
    });
}

criterion_group!(benches, matching_benches, parse_benches);
criterion_main!(benches);
