//! `gingham kube-controllers` as a process, against `gingham lab apiserver` (the Kubernetes API
//! double) on one SQLite datastore, driven by the real kubectl.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../benches/support/kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::{Cluster, until};

/// How long the controllers may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

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
    let c = Cluster::start(dir.path(), READY_WITHIN);
    let client = &c.client;
    let has = |ns: Option<&str>, name: &str, kind| client.get(kind, ns, name).is_ok();
    use gingham_model::{Kind, Resource};

    let file = dir.path().join("np.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: default}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    )
    .expect("writes");
    c.kubectl(dir.path(), &["apply", "-f", file.to_str().expect("utf-8")]);
    let t = until("knp.default.deny-all", Duration::from_secs(1), || {
        has(Some("default"), "knp.default.deny-all", Kind::NetworkPolicy)
    });
    eprintln!("knp.default.deny-all {t:?} after kubectl apply returned");

    c.kubectl(dir.path(), &["label", "namespace", "default", "team=x"]);
    until("kns.default relabelled", Duration::from_secs(1), || {
        matches!(client.get(Kind::Profile, None, "kns.default"),
            Ok(Resource::Profile(p)) if p.spec.labels_to_apply.get("pcns.team").map(String::as_str) == Some("x"))
    });
    c.kubectl(dir.path(), &["delete", "netpol", "deny-all"]);
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
    c.kubectl(dir.path(), &["apply", "-f", file.to_str().expect("utf-8")]);
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
    let r = gingham_health::http_get(c.health, "/metrics").expect("metrics");
    assert!(r.contains("gingham_kube_controllers_ready 1"), "{r}");
}

#[test]
fn sys_kube_controllers_memory_per_1000_pods() {
    gingham_testkit::require_tool("kubectl");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cluster::start(dir.path(), READY_WITHIN);
    let before = c.ctl.rss_kib();
    // The last pod's endpoint, as the CNI plugin would have written it: once it carries the
    // pod's labels, the controllers have seen every pod.
    let client = &c.client;
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
    c.kubectl(dir.path(), &["apply", "-f", file.to_str().expect("utf-8")]);
    until(
        "the controllers saw every pod",
        Duration::from_secs(60),
        || {
            matches!(client.get(gingham_model::Kind::WorkloadEndpoint, Some("default"), "node--a-k8s-pod--999-eth0"),
            Ok(gingham_model::Resource::WorkloadEndpoint(w)) if w.metadata.labels.get("idx").map(String::as_str) == Some("n999"))
        },
    );
    let after = c.ctl.rss_kib();
    eprintln!(
        "kube-controllers resident memory: {before} KiB before, {after} KiB with 1,000 pods ({} KiB per 1,000 pods)",
        after.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(before) < 100 * 1024,
        "{before} KiB -> {after} KiB"
    );
}
