//! Kubernetes benchmarks (issue 13), each beside a baseline measured in the same run, with the
//! release `gingham` binary and the real `kubectl`:
//!
//! - **1,000 NetworkPolicies with one `kubectl apply`**: from kubectl's start until all 1,000
//!   `knp.default.*` are in the datastore, with `gingham lab apiserver` (the API double on SQLite)
//!   and `gingham kube-controllers` running (target ≤ 2 s). Baselines: the same file written
//!   straight into a SQLite datastore with `gingham apply -f` (the Calico path without
//!   Kubernetes), and kubectl alone (its wall time until it returns, and its own CPU time). The
//!   CPU each process spent in the round shows where the time goes. Several rounds, each on a
//!   fresh datastore; median and spread (min–max).
//! - **Controller memory per pod**: resident memory of `gingham kube-controllers` with 0, 1,000
//!   and 5,000 pods (and their WorkloadEndpoints, as the CNI plugin writes them) in the double,
//!   in KiB per pod beside the empty baseline.
//!
//! Run: `cargo bench -p gingham --bench kube` or `scripts/bench kube` (no root needed).
//! `KUBE_BENCH_ROUNDS` (default 5) sets the rounds; `KUBE_BENCH_PODS=1000,5000` the pod counts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gingham_model::{Kind, Resource};

#[path = "support/kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::{Cluster, Process, until};

const POLICIES: usize = 1000;

/// How long the controllers may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// CPU time (user + system) a process spent so far.
fn cpu(p: &Process) -> Duration {
    proc_cpu(&format!("/proc/{}/stat", p.0.id()), 11)
}

/// Fields `at` and `at + 1` of a /proc stat file (counted after the command name), as CPU time.
/// /proc reports in USER_HZ, which is 100 on Linux.
fn proc_cpu(path: &str, at: usize) -> Duration {
    let stat = std::fs::read_to_string(path).expect("the process is running");
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f[at].parse::<u64>().expect("ticks") + f[at + 1].parse::<u64>().expect("ticks");
    Duration::from_millis(ticks * 10)
}

/// Runs kubectl; returns its wall time and its own CPU time (user + system).
fn kubectl(c: &Cluster, dir: &Path, args: &[&str]) -> (Duration, Duration) {
    let cpu_before = children_cpu();
    let t = Instant::now();
    c.kubectl(dir, args);
    let wall = t.elapsed();
    (wall, children_cpu().saturating_sub(cpu_before))
}

/// CPU time (user + system) of this process's waited-for children.
fn children_cpu() -> Duration {
    proc_cpu("/proc/self/stat", 13)
}

fn policies_yaml() -> String {
    let mut s = String::new();
    for i in 0..POLICIES {
        s.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np-{i}, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: a{i}}}}}\n  ingress: [{{ports: [{{port: 80}}]}}]\n"
        ));
    }
    s
}

fn count_policies(client: &gingham_api::Client) -> usize {
    client
        .list(Kind::NetworkPolicy, Some("default"))
        .map(|(l, _)| l.len())
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "median (min–max) ms" of some durations.
fn spread(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    format!(
        "{:>7.0} ms ({:.0}–{:.0})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    )
}

#[derive(Default)]
struct Round {
    total: Vec<Duration>,
    kubectl_wall: Vec<Duration>,
    kubectl_cpu: Vec<Duration>,
    api_cpu: Vec<Duration>,
    ctl_cpu: Vec<Duration>,
    gingham_apply: Vec<Duration>,
}

fn policies(rounds: usize) {
    let mut r = Round::default();
    let yaml = policies_yaml();
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("many.yaml");
        std::fs::write(&file, &yaml).expect("writes");
        let file = file.to_str().expect("utf-8");

        // Baseline: the same file straight into a fresh datastore.
        let db = format!("sqlite:{}", dir.path().join("direct.db").display());
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_gingham"))
            .args(["apply", "-f", file, "--datastore", &db])
            .env_remove("GINGHAM_DATASTORE")
            .output()
            .expect("gingham apply runs");
        r.gingham_apply.push(t.elapsed());
        assert!(
            out.status.success(),
            "gingham apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let c = Cluster::start(dir.path(), READY_WITHIN);
        // Warm kubectl's discovery cache as a user's second command would find it.
        kubectl(&c, dir.path(), &["get", "netpol"]);
        let (api0, ctl0) = (cpu(&c.api), cpu(&c.ctl));
        let t = Instant::now();
        let (wall, kubectl_cpu) = kubectl(&c, dir.path(), &["apply", "-f", file]);
        until(
            "1,000 policies in the datastore",
            Duration::from_secs(120),
            || count_policies(&c.client) == POLICIES,
        );
        r.total.push(t.elapsed());
        r.kubectl_wall.push(wall);
        r.kubectl_cpu.push(kubectl_cpu);
        r.api_cpu.push(cpu(&c.api) - api0);
        r.ctl_cpu.push(cpu(&c.ctl) - ctl0);
        eprintln!(
            "round {}: all in the datastore after {:.0} ms (kubectl returned after {:.0} ms)",
            round + 1,
            ms(*r.total.last().unwrap()),
            ms(wall)
        );
    }
    println!(
        "1,000 NetworkPolicies, one file, median (min–max) of {rounds} rounds, each on a fresh SQLite datastore"
    );
    println!(
        "  kubectl apply → all knp.default.* in the datastore {}   target ≤ 2000 ms",
        spread(&r.total)
    );
    println!(
        "  baseline: gingham apply -f (no Kubernetes)          {}",
        spread(&r.gingham_apply)
    );
    println!(
        "  baseline: kubectl apply until it returns            {}",
        spread(&r.kubectl_wall)
    );
    println!("  CPU spent in the round:");
    println!("    kubectl            {}", spread(&r.kubectl_cpu));
    println!("    lab apiserver      {}", spread(&r.api_cpu));
    println!("    kube-controllers   {}", spread(&r.ctl_cpu));
}

fn pods_yaml(from: usize, to: usize) -> String {
    let mut s = String::new();
    for i in from..to {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{i}, namespace: default, labels: {{app: web, idx: n{i}}}}}\nspec:\n  nodeName: node-a\n  containers: [{{name: c, image: busybox, ports: [{{name: http, containerPort: 80}}]}}]\n"
        ));
    }
    s
}

/// The pods' WorkloadEndpoints as the CNI plugin writes them (before the controllers label them).
fn endpoints(from: usize, to: usize) -> Vec<Resource> {
    let mut s = String::new();
    for i in from..to {
        s.push_str(&format!(
            "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node--a-k8s-pod--{i}-eth0, namespace: default}}\nspec: {{orchestrator: k8s, node: node-a, pod: pod-{i}, endpoint: eth0, containerID: c{i}, interfaceName: cali{i:011x}, ipNetworks: [10.{}.{}.{}/32]}}\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    gingham_model::load_resources("wep.yaml", &s).expect("loads")
}

fn memory(counts: &[usize]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cluster::start(dir.path(), READY_WITHIN);
    std::thread::sleep(Duration::from_secs(1));
    let empty = c.ctl.rss_kib();
    println!("kube-controllers resident memory (pods and their WorkloadEndpoints in the double)");
    println!("  {:>6} pods {:>8} KiB   (the empty baseline)", 0, empty);
    let mut have = 0;
    for &n in counts {
        if n <= have {
            continue;
        }
        c.client
            .write_all(&endpoints(have, n), gingham_api::WriteMode::Create)
            .expect("writes the endpoints");
        let file = dir.path().join(format!("pods-{n}.yaml"));
        std::fs::write(&file, pods_yaml(have, n)).expect("writes");
        c.kubectl(dir.path(), &["create", "-f", file.to_str().expect("utf-8")]);
        let last = format!("node--a-k8s-pod--{}-eth0", n - 1);
        let want = format!("n{}", n - 1);
        until(
            "the controllers saw every pod",
            Duration::from_secs(300),
            || {
                matches!(c.client.get(Kind::WorkloadEndpoint, Some("default"), &last),
                Ok(Resource::WorkloadEndpoint(w)) if w.metadata.labels.get("idx") == Some(&want))
            },
        );
        have = n;
        // Let allocations settle as a steady controller would.
        std::thread::sleep(Duration::from_secs(1));
        let rss = c.ctl.rss_kib();
        println!(
            "  {n:>6} pods {rss:>8} KiB   {:>6.1} KiB per pod above empty ({:.1} MiB per 1,000 pods)",
            rss.saturating_sub(empty) as f64 / n as f64,
            rss.saturating_sub(empty) as f64 / n as f64 * 1000.0 / 1024.0
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    gingham_testkit::require_tool("kubectl");
    let rounds: usize = std::env::var("KUBE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let counts: Vec<usize> = std::env::var("KUBE_BENCH_PODS")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("KUBE_BENCH_PODS: counts such as 1000,5000")
        })
        .collect();
    policies(rounds);
    println!();
    memory(&counts);
}
