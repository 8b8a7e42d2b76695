//! CNI ADD latency: `gingham` (block IPAM on SQLite, Calico plumbing, WorkloadEndpoint write)
//! side by side with the reference `ptp` + `host-local` plugins from containernetworking-plugins,
//! in the same run, invoked the same way (a process per call, run in a test-made node namespace).
//! Sequential calls, then bursts of 10 and 30 concurrent calls; p50 and p99 per call.
//!
//! Run (root): `cargo bench -p gingham --bench cni_add`. `CNI_BENCH_N` changes the sequential count.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gingham_testkit::netns::TestNetns;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Plugin {
    name: &'static str,
    binary: String,
    cni_path: String,
    conf: String,
}

/// Runs one CNI call in the node namespace; returns how long the process took.
fn call(node: &TestNetns, p: &Plugin, command: &str, id: &str, netns: &Path) -> Duration {
    use std::io::Write;
    let t = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name(), &p.binary])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &p.cni_path)
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={id}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(p.conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{} {command} {id}: {}{}",
        p.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// ADD latencies: `n` sequential calls, or bursts of `burst` concurrent calls.
fn measure(node: &TestNetns, p: &Plugin, n: usize, burst: usize, tag: &str) -> Vec<Duration> {
    let pods: Vec<TestNetns> = (0..n).map(|_| TestNetns::new("bcp")).collect();
    let mut times = Vec::with_capacity(n);
    for (round, chunk) in pods.chunks(burst).enumerate() {
        let got: Vec<Duration> = std::thread::scope(|sc| {
            let hs: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, pod)| {
                    let id = format!("{tag}{round}x{i}");
                    sc.spawn(move || call(node, p, "ADD", &id, &pod.path()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        times.extend(got);
    }
    for (round, chunk) in pods.chunks(burst).enumerate() {
        for (i, pod) in chunk.iter().enumerate() {
            call(node, p, "DEL", &format!("{tag}{round}x{i}"), &pod.path());
        }
    }
    times.sort();
    times
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    assert!(
        Path::new("/usr/lib/cni/ptp").exists() && Path::new("/usr/lib/cni/host-local").exists(),
        "the reference plugins are missing: apt-get install containernetworking-plugins"
    );
    let n: usize = std::env::var("CNI_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let node = TestNetns::new("bcn");
    let underlay = TestNetns::new("bcu");
    gingham_testkit::netns::wire_to_underlay(
        &node,
        &underlay,
        "dn0",
        "192.168.240.1/24",
        "192.168.240.254/24",
    );

    let gingham = env!("CARGO_BIN_EXE_gingham");
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let pool = tmp.path().join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.96.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: bench-node}\n",
    )
    .unwrap();
    node.exec_ok(&[
        gingham,
        "apply",
        "-f",
        pool.to_str().unwrap(),
        "--datastore",
        &ds,
    ]);
    let ours = Plugin {
        name: "gingham",
        binary: gingham.into(),
        cni_path: "/usr/lib/cni".into(),
        conf: serde_json::json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "gingham",
            "nodename": "bench-node", "datastore": ds, "ipam": {"type": "gingham-ipam"}
        })
        .to_string(),
    };
    let reference = Plugin {
        name: "ptp+host-local",
        binary: "/usr/lib/cni/ptp".into(),
        cni_path: "/usr/lib/cni".into(),
        conf: serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "ptp", "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": "10.97.0.0/16",
                     "dataDir": tmp.path().join("host-local").display().to_string()}
        })
        .to_string(),
    };
    println!("CNI ADD, one process per call, in a node namespace ({n} calls per mode)");
    for (mode, burst) in [
        ("sequential", 1usize),
        ("bursts of 10", 10),
        ("bursts of 30", 30),
    ] {
        let count = if burst == 1 {
            n
        } else {
            burst * (n / burst).max(1)
        };
        let a = measure(&node, &ours, count, burst, &format!("g{burst}"));
        let b = measure(&node, &reference, count, burst, &format!("r{burst}"));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{mode:<13} gingham p50 {:>6.2} ms p99 {:>6.2} ms | ptp+host-local p50 {:>6.2} ms p99 {:>6.2} ms | p50 ratio (ref/ours) {:.2}",
            ms(percentile(&a, 0.5)),
            ms(percentile(&a, 0.99)),
            ms(percentile(&b, 0.5)),
            ms(percentile(&b, 0.99)),
            percentile(&b, 0.5).as_secs_f64() / percentile(&a, 0.5).as_secs_f64()
        );
    }
}
