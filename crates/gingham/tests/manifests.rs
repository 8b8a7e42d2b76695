//! The manifests in `deploy/`: the CRDs are what `gingham manifests crds` generates from the
//! model's kind table, every manifest passes `kubernetes-validate --strict` (offline schemas),
//! `kubectl apply` puts them into the Kubernetes API double and `kubectl get` shows them, and
//! the install-cni script of the node DaemonSet installs a plugin and a network configuration
//! the plugin accepts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use gingham_datastore::Datastore;

/// The Kubernetes version the manifests are checked against (k8s-openapi's `v1_33`).
const KUBERNETES_VERSION: &str = "1.33.0";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    all.sort();
    assert!(all.len() >= 3, "{all:?}");
    all
}

#[test]
fn the_checked_in_crds_are_the_generated_ones() {
    let generated = common::ok_in(&["manifests", "crds"], None);
    let checked_in = std::fs::read_to_string(deploy().join("crds.yaml")).unwrap();
    assert!(
        generated == checked_in,
        "deploy/crds.yaml differs from `gingham manifests crds`; run `gingham manifests crds > deploy/crds.yaml`"
    );
    for c in gingham_model::crd::kdd_crds() {
        assert!(
            checked_in.contains(&format!("  name: {}\n", c.crd_name())),
            "{}",
            c.crd_name()
        );
    }
}

#[test]
fn sys_manifests_pass_kubernetes_validate_strict() {
    let tool = gingham_testkit::require_tool("kubernetes-validate");
    for m in manifests() {
        let out = Command::new(&tool)
            .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
            .arg(&m)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate --strict {}: {}{}",
            m.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sys_strict_validation_catches_a_misspelt_field() {
    // The check above means something: the same tool refuses a manifest with a field no
    // schema has.
    let tool = gingham_testkit::require_tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(deploy().join("gingham-kdd.yaml"))
        .unwrap()
        .replacen("hostNetwork: true", "hostNetwrok: true", 1);
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(&tool)
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hostNetwrok")
            || String::from_utf8_lossy(&out.stderr).contains("hostNetwrok"),
        "{out:?}"
    );
}

/// `kubectl` against a kubeconfig, failing the test unless it succeeds.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(gingham_testkit::require_tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sys_kubectl_applies_the_manifests_to_the_api_double() {
    gingham_testkit::require_tool("kubectl");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Datastore> = Arc::new(gingham_datastore::mem::MemStore::new());
    let server = rt
        .block_on(gingham_kubeapi::ApiServer::start(
            store,
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    for m in manifests() {
        kubectl(&kc, &["apply", "-f", &m.display().to_string()]);
    }
    let crds = kubectl(&kc, &["get", "crd", "-o", "name"]);
    for c in gingham_model::crd::kdd_crds() {
        assert!(
            crds.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{}",
                c.crd_name()
            )),
            "{} in {crds}",
            c.crd_name()
        );
    }
    for (what, name) in [
        ("daemonset", "gingham-node"),
        ("deployment", "gingham-kube-controllers"),
        ("configmap", "gingham-config"),
        ("serviceaccount", "gingham-node"),
        ("serviceaccount", "gingham-kube-controllers"),
        ("secret", "gingham-etcd-secrets"),
    ] {
        let got = kubectl(&kc, &["get", what, name, "-n", "kube-system", "-o", "name"]);
        assert!(got.contains(name), "{what} {name}: {got}");
    }
    for (what, name) in [
        ("clusterrole", "gingham-node"),
        ("clusterrole", "gingham-cni-plugin"),
        ("clusterrole", "gingham-kube-controllers"),
        ("clusterrolebinding", "gingham-cni-plugin"),
    ] {
        let got = kubectl(&kc, &["get", what, name, "-o", "name"]);
        assert!(got.contains(name), "{what} {name}: {got}");
    }
    rt.block_on(server.shutdown());
}
