//! `apply` of 10,000 NetworkPolicies into each backend (SQLite, etcd), against a baseline
//! measured in the same run: the backend's own floor, the same 10,000 stored values written
//! with raw transactions (no parsing, validation, conditions or bookkeeping).
//!
//! Run: `cargo bench -p gingham-api --bench apply` (needs `etcd`, from Debian's etcd-server).
//! `APPLY_BENCH_N` changes the number of policies, `APPLY_BENCH_REPS` the repetitions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gingham_api::{Client, WriteMode};
use gingham_datastore::{Datastore, Op, Txn};
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
use gingham_datastore_sqlite::SqliteStore;
use gingham_model::Resource;
use gingham_testkit::etcd::EtcdServer;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` policies in namespace `ns`, each with a selector and two rules, as a user would write.
fn policies_yaml(ns: &str, n: usize) -> String {
    let mut out = String::with_capacity(n * 400);
    for i in 0..n {
        out.push_str(&format!(
            "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-{i}
  namespace: {ns}
spec:
  order: {order}
  selector: app == 'svc-{i}' && tier in {{'web', 'api'}}
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'client-{m}'
    destination:
      ports: [80, 443, '8000:8100']
  egress:
  - action: Allow
---
",
            order = i % 1000,
            m = i % 97
        ));
    }
    out
}

fn load(yaml: &str) -> Vec<Resource> {
    gingham_model::load("bench.yaml", yaml)
        .expect("generated YAML is valid")
        .into_iter()
        .flat_map(|d| d.resources)
        .collect()
}

/// The full apply path: parse, default, validate, then the all-or-nothing write.
fn apply(store: &Arc<dyn Datastore>, yaml: &str) -> Duration {
    let t = Instant::now();
    let resources = load(yaml);
    let out = Client::new(store.clone())
        .write_all(&resources, WriteMode::Apply)
        .expect("apply");
    assert_eq!(out.len(), resources.len());
    t.elapsed()
}

/// The floor: the same bytes under fresh keys, in as few raw transactions as the backend allows.
fn raw(store: &Arc<dyn Datastore>, values: &[(String, Vec<u8>)]) -> Duration {
    let limits = store.txn_limits();
    let t = Instant::now();
    let mut txn = Txn::new();
    let mut bytes = 0;
    for (k, v) in values {
        if txn.ops.len() + 1 > limits.max_ops || bytes + k.len() + v.len() > limits.max_bytes {
            assert!(store.txn(&txn).expect("raw txn").committed());
            txn = Txn::new();
            bytes = 0;
        }
        bytes += k.len() + v.len();
        txn.ops.push(Op::Put {
            key: k.clone(),
            value: v.clone(),
        });
    }
    assert!(store.txn(&txn).expect("raw txn").committed());
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(name: &str, store: Arc<dyn Datastore>, n: usize, reps: usize) {
    let mut applied = Vec::new();
    let mut floors = Vec::new();
    let mut parsing = Vec::new();
    for rep in 0..reps {
        let yaml = policies_yaml(&format!("bench-{rep}"), n);
        let t = Instant::now();
        std::hint::black_box(load(&yaml));
        parsing.push(t.elapsed());
        applied.push(apply(&store, &yaml));
        let values: Vec<(String, Vec<u8>)> = load(&yaml)
            .iter()
            .map(|r| (format!("/bench/raw/{rep}{}", r.key()), r.to_stored()))
            .collect();
        floors.push(raw(&store, &values));
    }
    let (a, f, p) = (median(applied), median(floors), median(parsing));
    println!(
        "{name:<7} apply {n} policies: {:>8.1} ms ({:>7.0} policies/s; of which parse+validate {:>6.1} ms) | raw writes of the same bytes: {:>7.1} ms | apply/raw = {:.2}",
        a.as_secs_f64() * 1e3,
        n as f64 / a.as_secs_f64(),
        p.as_secs_f64() * 1e3,
        f.as_secs_f64() * 1e3,
        a.as_secs_f64() / f.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less arguments; only measure for real runs.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_usize("APPLY_BENCH_N", 10_000);
    let reps = env_usize("APPLY_BENCH_REPS", 3);
    let dir = tempfile::tempdir().expect("temporary directory");
    let sqlite: Arc<dyn Datastore> =
        Arc::new(SqliteStore::open(dir.path().join("bench.db")).expect("open sqlite"));
    run("sqlite", sqlite, n, reps);

    let server = EtcdServer::start();
    let etcd: Arc<dyn Datastore> = Arc::new(
        EtcdStore::connect(EtcdConfig {
            endpoints: vec![server.endpoint()],
            ..EtcdConfig::default()
        })
        .expect("connect to etcd"),
    );
    run("etcd", etcd, n, reps);
}
