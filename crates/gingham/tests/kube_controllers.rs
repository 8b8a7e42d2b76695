//! `gingham kube-controllers` as a process, against `gingham lab apiserver` (the Kubernetes API
//! double) on one SQLite datastore, driven by the real kubectl.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `gingham ARGS` and returns it with the first line it printed.
fn start(args: &[&str], db: &Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(args)
        .arg("--datastore")
        .arg(format!("sqlite:{}", db.display()))
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("KUBECONFIG")
        .env(
            "GINGHAM_LOG",
            std::env::var("GINGHAM_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gingham starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reads");
    (Process(child), line.trim().to_owned())
}

/// Resident memory of a process, in KiB.
fn rss_kib(p: &Process) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.0.id())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn kubectl(dir: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(gingham_testkit::require_tool("kubectl"))
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls the datastore every 10 ms until `f` holds; returns how long it took.
fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn kube_controllers_refuses_a_kubeconfig_it_cannot_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite:{}", dir.path().join("g.db").display());
    let missing = dir.path().join("missing-kubeconfig");
    let out = common::gingham_in(
        &[
            "kube-controllers",
            "--datastore",
            &db,
            "--kubeconfig",
            missing.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing-kubeconfig"), "{err}");
    // Without one at all: a usage error naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["kube-controllers", "--datastore", &db])
        .env_remove("KUBECONFIG")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kubeconfig"));
}

#[test]
fn sys_kube_controllers_follow_kubectl() {
    gingham_testkit::require_tool("kubectl");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gingham.db");
    let kc = dir.path().join("kubeconfig");
    let kc_s = kc.to_str().expect("utf-8");
    let (_api, url) = start(
        &[
            "lab",
            "apiserver",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
            kc_s,
        ],
        &db,
    );
    assert!(url.starts_with("http://"), "{url}");
    let (_ctl, health) = start(
        &[
            "kube-controllers",
            "--kubeconfig",
            kc_s,
            "--health-listen",
            "127.0.0.1:0",
        ],
        &db,
    );
    let health: std::net::SocketAddr = health
        .strip_prefix("health: http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the health address first: {health:?}"));
    let store = gingham_datastore_sqlite::SqliteStore::open(&db).expect("opens");
    let client = gingham_api::Client::new(std::sync::Arc::new(store));
    let has = |ns: Option<&str>, name: &str, kind| client.get(kind, ns, name).is_ok();
    use gingham_model::{Kind, Resource};
    until("ready", Duration::from_secs(10), || {
        gingham_health::http_get(health, "/readiness").is_ok_and(|r| r.starts_with("HTTP/1.0 200"))
    });

    let file = dir.path().join("np.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: default}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    )
    .expect("writes");
    kubectl(
        dir.path(),
        &kc,
        &["apply", "-f", file.to_str().expect("utf-8")],
    );
    let t = until("knp.default.deny-all", Duration::from_secs(1), || {
        has(Some("default"), "knp.default.deny-all", Kind::NetworkPolicy)
    });
    eprintln!("knp.default.deny-all {t:?} after kubectl apply returned");

    kubectl(
        dir.path(),
        &kc,
        &["label", "namespace", "default", "team=x"],
    );
    until("kns.default relabelled", Duration::from_secs(1), || {
        matches!(client.get(Kind::Profile, None, "kns.default"),
            Ok(Resource::Profile(p)) if p.spec.labels_to_apply.get("pcns.team").map(String::as_str) == Some("x"))
    });
    kubectl(dir.path(), &kc, &["delete", "netpol", "deny-all"]);
    until(
        "knp.default.deny-all removed",
        Duration::from_secs(1),
        || !has(Some("default"), "knp.default.deny-all", Kind::NetworkPolicy),
    );

    // 1,000 NetworkPolicies with one kubectl apply, until all are in the datastore.
    let mut many = String::new();
    for i in 0..1000 {
        many.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np-{i}, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: a{i}}}}}\n  ingress: [{{ports: [{{port: 80}}]}}]\n"
        ));
    }
    let file = dir.path().join("many.yaml");
    std::fs::write(&file, many).expect("writes");
    let start = Instant::now();
    kubectl(
        dir.path(),
        &kc,
        &["apply", "-f", file.to_str().expect("utf-8")],
    );
    let applied = start.elapsed();
    let count = || {
        client
            .list(Kind::NetworkPolicy, Some("default"))
            .map(|(l, _)| l.len())
            .unwrap_or(0)
    };
    until(
        "1,000 policies in the datastore",
        Duration::from_secs(60),
        || count() == 1000,
    );
    eprintln!(
        "1,000 NetworkPolicies: kubectl apply returned after {applied:?}, all in the datastore after {:?}",
        start.elapsed()
    );
    let r = gingham_health::http_get(health, "/metrics").expect("metrics");
    assert!(r.contains("gingham_kube_controllers_ready 1"), "{r}");
}

#[test]
fn sys_kube_controllers_memory_per_1000_pods() {
    gingham_testkit::require_tool("kubectl");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gingham.db");
    let kc = dir.path().join("kubeconfig");
    let kc_s = kc.to_str().expect("utf-8");
    let (_api, _) = start(
        &[
            "lab",
            "apiserver",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
            kc_s,
        ],
        &db,
    );
    let (ctl, health) = start(
        &[
            "kube-controllers",
            "--kubeconfig",
            kc_s,
            "--health-listen",
            "127.0.0.1:0",
        ],
        &db,
    );
    let health: std::net::SocketAddr = health
        .strip_prefix("health: http://")
        .and_then(|a| a.parse().ok())
        .expect("the health address");
    until("ready", Duration::from_secs(10), || {
        gingham_health::http_get(health, "/readiness").is_ok_and(|r| r.starts_with("HTTP/1.0 200"))
    });
    let before = rss_kib(&ctl);
    // The last pod's endpoint, as the CNI plugin would have written it: once it carries the
    // pod's labels, the controllers have seen every pod.
    let store = gingham_datastore_sqlite::SqliteStore::open(&db).expect("opens");
    let client = gingham_api::Client::new(std::sync::Arc::new(store));
    let wep = gingham_model::load_resources(
        "wep.yaml",
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--a-k8s-pod--999-eth0, namespace: default}\nspec: {orchestrator: k8s, node: node-a, pod: pod-999, endpoint: eth0, containerID: c999, interfaceName: cali0123456789a, ipNetworks: [10.0.0.9/32]}\n",
    )
    .expect("loads");
    client
        .write_all(&wep, gingham_api::WriteMode::Create)
        .expect("writes");
    let mut pods = String::new();
    for i in 0..1000 {
        pods.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{i}, namespace: default, labels: {{app: web, idx: n{i}}}}}\nspec:\n  nodeName: node-a\n  containers: [{{name: c, image: busybox, ports: [{{name: http, containerPort: 80}}]}}]\n"
        ));
    }
    let file = dir.path().join("pods.yaml");
    std::fs::write(&file, pods).expect("writes");
    kubectl(
        dir.path(),
        &kc,
        &["apply", "-f", file.to_str().expect("utf-8")],
    );
    until(
        "the controllers saw every pod",
        Duration::from_secs(60),
        || {
            matches!(client.get(gingham_model::Kind::WorkloadEndpoint, Some("default"), "node--a-k8s-pod--999-eth0"),
            Ok(gingham_model::Resource::WorkloadEndpoint(w)) if w.metadata.labels.get("idx").map(String::as_str) == Some("n999"))
        },
    );
    let after = rss_kib(&ctl);
    eprintln!(
        "kube-controllers resident memory: {before} KiB before, {after} KiB with 1,000 pods ({} KiB per 1,000 pods)",
        after.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(before) < 100 * 1024,
        "{before} KiB -> {after} KiB"
    );
}
