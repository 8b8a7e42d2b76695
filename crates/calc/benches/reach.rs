//! `reach` and `diff` over a cluster of 20 namespaces with namespace profiles, 100 policies and
//! pods declaring two ports: at 1,000 pods (every declared port, and one port) and at 10,000
//! pods (one port). Each figure is printed beside the baseline measured in the same run: the
//! path before the compact matrix and the [`gingham_calc::eval::Evaluator`] (class pairs decided
//! with full traces, every cell copied into a map of names), and at 1,000 pods the ungrouped
//! matrix (every cell evaluated). All of them must agree, cell by cell and pair by pair.
//!
//! Run: `cargo bench -p gingham-calc --bench reach`. `REACH_BENCH_PODS=N` measures N pods
//! (one port) instead of the 1,000 and 10,000 pod runs. `REACH_BENCH_CLI=path/to/gingham` also
//! times the command line (`gingham reach -f`, `gingham diff --before --after`) at 1,000 pods on
//! files written to a temporary directory. `REACH_BENCH_BASELINE=0` skips the baselines (for
//! profiling the new path).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gingham_calc::input::PodPorts;
use gingham_calc::{Snapshot, diff, reach};

/// The policy that the diff adds, first in line: tier t1 may no longer reach app7's pods.
const CHANGE: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: app7-not-t1}\nspec:\n  order: 1\n  selector: app == 'app7'\n  ingress:\n  - {action: Deny, source: {selector: tier == 't1'}}\n  - {action: Pass}\n";

fn cluster(pods: usize) -> String {
    let mut text = String::new();
    for n in 0..20 {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: team{}}}}}\n---\n",
            n % 4
        ));
    }
    for i in 0..pods {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod{i}, namespace: ns{}, labels: {{app: app{}, tier: t{}}}}}\nspec: {{nodeName: node{}, containers: [{{name: c, ports: [{{name: http, containerPort: 80}}, {{name: metrics, containerPort: 8080}}]}}]}}\nstatus: {{podIP: 10.{}.{}.{}}}\n---\n",
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
    text
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("reach/diff benchmark on {threads} cores");
    match std::env::var("REACH_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(pods) => run(pods, false),
        None => {
            run(1_000, true);
            run(10_000, false);
        }
    }
}

/// One cluster size: reach (every declared port when `all_ports`, and port 80) and diff, each
/// beside its baseline.
fn run(pods: usize, all_ports: bool) {
    let baseline = std::env::var("REACH_BENCH_BASELINE").map_or(true, |v| v != "0");
    let text = cluster(pods);
    let after_text = format!("{text}{CHANGE}");
    let (snap, load) = timed(|| {
        Snapshot::build(&gingham_model::load_resources("bench.yaml", &text).expect("valid input"))
    });
    let after = Snapshot::build(
        &gingham_model::load_resources("bench.yaml", &after_text).expect("valid input"),
    );
    let endpoints = reach::matrix_endpoints(&snap);
    let n = endpoints.len();
    let classes = reach::classes(&snap, &endpoints);
    let class_count = classes.iter().max().map_or(0, |m| m + 1);
    println!(
        "\n{n} pods ({class_count} classes of endpoints policy cannot tell apart); loading and compiling the input {:.0} ms",
        secs(load) * 1e3
    );
    let one_port = vec![(6, Some(80))];
    let mut cases = Vec::new();
    if all_ports {
        let every = reach::probes(6, None, &reach::declared_ports(&snap, &PodPorts::new()));
        assert!(every.len() > 1, "the pods declare several ports");
        cases.push(("every declared port", every));
    }
    cases.push(("one port", one_port));
    for (what, probes) in &cases {
        let ports: Vec<String> = probes
            .iter()
            .map(|(_, p)| p.map_or("-".into(), |p| p.to_string()))
            .collect();
        let label = format!("{what} (TCP {})", ports.join(", "));
        // reach: the new path, then the baseline.
        let (matrices, took) =
            timed(|| reach::matrices(&snap, &endpoints, probes).expect("matrix"));
        if !baseline {
            let (d, took_diff) = timed(|| diff::diff(&snap, &after, probes).expect("diff"));
            println!(
                "  {label}: reach {:.3} s, diff {:.3} s ({} gained, {} lost)",
                secs(took),
                secs(took_diff),
                d.gained.len(),
                d.lost.len()
            );
            continue;
        }
        let took_base: Duration = probes
            .iter()
            .zip(&matrices)
            .map(|(&(pr, port), m)| baseline_reach(&snap, &endpoints, pr, port, m))
            .sum();
        let allowed: usize = matrices.iter().map(reach::Matrix::allowed_count).sum();
        println!(
            "  reach, {label}: {} cells ({allowed} allowed) in {:.3} s; baseline (traced class pairs, map of names) {:.3} s: {:.1}x faster, every cell equal",
            n * n * probes.len(),
            secs(took),
            secs(took_base),
            secs(took_base) / secs(took)
        );
        // diff: the new path, then the baseline.
        let (d, took) = timed(|| diff::diff(&snap, &after, probes).expect("diff"));
        let (d_base, took_base) = timed(|| diff::diff_traced(&snap, &after, probes).expect("diff"));
        assert_eq!(d, d_base, "diff differs from its baseline");
        println!(
            "  diff, {label}: {} gained, {} lost (each with its cause) in {:.3} s; baseline {:.3} s: {:.1}x faster, equal",
            d.gained.len(),
            d.lost.len(),
            secs(took),
            secs(took_base),
            secs(took_base) / secs(took)
        );
    }
    if all_ports && baseline {
        // The ungrouped path: every cell decided with its trace (one port).
        let (each, took_each) =
            timed(|| reach::matrix_each(&snap, &endpoints, 6, Some(80)).expect("matrix"));
        let (m, took) = timed(|| reach::matrix(&snap, &endpoints, 6, Some(80)).expect("matrix"));
        assert_eq!(each, m, "the grouped matrix differs from the ungrouped one");
        println!(
            "  reach ungrouped (every cell evaluated with its trace), one port: {:.2} s; grouped {:.3} s: {:.0}x faster, every cell equal",
            secs(took_each),
            secs(took),
            secs(took_each) / secs(took)
        );
        if let Ok(cli) = std::env::var("REACH_BENCH_CLI") {
            command_line(&cli, &text, &after_text);
        }
    }
}

/// The baseline reach (today's path: class pairs decided with full traces, every cell copied
/// into a map of names), timed, then checked equal to `m` cell by cell (not timed). Up to 2,000
/// endpoints the whole map is built, as `reach` built it; above, each row's map is built,
/// compared and dropped (the same work; the whole map of 100,000,000 cells would take some
/// 6 GB).
fn baseline_reach(
    snap: &Snapshot,
    endpoints: &[String],
    pr: u8,
    port: Option<u16>,
    m: &reach::Matrix,
) -> Duration {
    let check = |i: usize, from: &String, row: &BTreeMap<String, bool>| {
        for (j, to) in endpoints.iter().enumerate() {
            assert_eq!(m.allowed_at(i, j), row[to], "{from} → {to}");
        }
    };
    if endpoints.len() <= 2_000 {
        let (map, took) =
            timed(|| reach::matrix_as_map(snap, endpoints, pr, port).expect("matrix"));
        assert_eq!(map.len(), endpoints.len());
        for (i, from) in endpoints.iter().enumerate() {
            check(i, from, &map[from]);
        }
        return took;
    }
    let (grid, mut took) =
        timed(|| reach::Grid::decide_traced(snap, endpoints, pr, port).expect("matrix"));
    for (i, from) in endpoints.iter().enumerate() {
        let (row, took_row) = timed(|| {
            endpoints
                .iter()
                .enumerate()
                .map(|(j, to)| (to.clone(), grid.allowed(i, j)))
                .collect::<BTreeMap<String, bool>>()
        });
        took += took_row;
        check(i, from, &row);
    }
    took
}

/// Times the release command line on the cluster written to files, three times each.
fn command_line(cli: &str, before: &str, after: &str) {
    let dir = std::env::temp_dir().join(format!("gingham-reach-bench-{}", std::process::id()));
    let (bdir, adir) = (dir.join("before"), dir.join("after"));
    std::fs::create_dir_all(&bdir).expect("temporary directory");
    std::fs::create_dir_all(&adir).expect("temporary directory");
    std::fs::write(bdir.join("cluster.yaml"), before).expect("write");
    std::fs::write(adir.join("cluster.yaml"), after).expect("write");
    let file = bdir.join("cluster.yaml");
    let file = file.to_str().expect("utf-8 path");
    let (b, a) = (bdir.to_str().expect("path"), adir.to_str().expect("path"));
    let runs: [(&str, Vec<&str>); 4] = [
        (
            "reach -f FILE --port 80",
            vec!["reach", "-f", file, "--port", "80"],
        ),
        (
            "reach -f FILE --port 80 -o json",
            vec!["reach", "-f", file, "--port", "80", "-o", "json"],
        ),
        (
            "reach -f FILE (every declared port)",
            vec!["reach", "-f", file],
        ),
        (
            "diff --before DIR --after DIR",
            vec!["diff", "--before", b, "--after", a],
        ),
    ];
    for (what, args) in runs {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..3 {
            let (out, took) = timed(|| {
                std::process::Command::new(cli)
                    .args(&args)
                    .output()
                    .expect("run gingham")
            });
            assert!(
                out.status.success() || what.starts_with("diff"),
                "gingham {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            bytes = out.stdout.len();
            times.push(secs(took));
        }
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        println!(
            "  command line, gingham {what}: {} s ({:.1} MB of output)",
            shown.join(" / "),
            bytes as f64 / 1e6
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
