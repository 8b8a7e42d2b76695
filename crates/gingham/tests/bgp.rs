//! `gingham bgp render`: from files and from the datastore, NODENAME and CALICO_ROUTER_ID,
//! and bad input. The expected text is the renderer's table of cases (crates/bgp/tests/data).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bgp/tests/data")
}

/// Runs gingham with a clean BGP environment plus `env`.
fn gingham(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gingham"));
    c.args(args)
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("NODENAME")
        .env_remove("CALICO_ROUTER_ID")
        .env_remove("KUBECONFIG")
        .env_remove("NAMESPACE")
        .env_remove("CALICO_K8S_NODE_REF")
        // Not this machine's endpoint status files.
        .env(
            "CALICO_ENDPOINT_STATUS_PATH_PREFIX",
            "/nonexistent/gingham-test",
        );
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `gingham bgp render [--node NODE] FROM... --out OUT`, where FROM is `-f FILE`s or
/// `--datastore DS`.
fn render(node: Option<&str>, from: &[&str], out: &Path, env: &[(&str, &str)]) -> Output {
    let mut args = vec!["bgp", "render"];
    if let Some(n) = node {
        args.extend(["--node", n]);
    }
    args.extend_from_slice(from);
    args.extend(["--out", out.to_str().unwrap()]);
    gingham(&args, env)
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_same_files(out_dir: &Path, expected_dir: &Path) {
    for name in gingham_bgp::FILE_NAMES {
        let got = std::fs::read_to_string(out_dir.join(name)).unwrap();
        let want = std::fs::read_to_string(expected_dir.join(name)).unwrap();
        if let Some(d) = gingham_bgp::diff_ignoring_blank_lines(&got, &want) {
            panic!("{name}: {d}");
        }
    }
}

#[test]
fn bgp_render_from_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("confd");
    let input = cases().join("mesh-3-nodes/input.yaml");
    let o = render(Some("node-b"), &["-f", input.to_str().unwrap()], &out, &[]);
    ok(&o);
    assert_same_files(&out, &cases().join("mesh-3-nodes/node-b"));
}

#[test]
fn bgp_render_reads_nodename_and_router_id_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let input = cases().join("mesh-options/input.yaml");
    let o = render(
        None,
        &["-f", input.to_str().unwrap()],
        tmp.path(),
        &[("NODENAME", "node-a"), ("CALICO_ROUTER_ID", "hash")],
    );
    ok(&o);
    assert_same_files(tmp.path(), &cases().join("mesh-options/node-a"));
}

#[test]
fn bgp_render_reads_endpoint_status_files() {
    let tmp = tempfile::tempdir().unwrap();
    let case = cases().join("local-workloads");
    let input = case.join("input.yaml");
    let o = render(
        Some("node-a"),
        &["-f", input.to_str().unwrap()],
        tmp.path(),
        &[("CALICO_ENDPOINT_STATUS_PATH_PREFIX", case.to_str().unwrap())],
    );
    ok(&o);
    assert_same_files(tmp.path(), &case.join("node-a"));
}

#[test]
fn bgp_render_from_the_datastore() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let input = cases().join("global-peer/input.yaml");
    ok(&gingham(
        &["apply", "--datastore", &ds, "-f", input.to_str().unwrap()],
        &[],
    ));
    let out = tmp.path().join("confd");
    let o = render(Some("node-c"), &["--datastore", &ds], &out, &[]);
    ok(&o);
    assert_same_files(&out, &cases().join("global-peer/node-c"));

    // Block affinities as IPAM stores them: confirmed and pending blocks of node-c, and one of
    // node-a. Only node-c's confirmed block is blackholed and aggregated.
    {
        use gingham_datastore::Datastore;
        let store = gingham_datastore_sqlite::SqliteStore::open(tmp.path().join("g.db")).unwrap();
        for (node, cidr, state) in [
            ("node-c", "10.244.5.0/26", "confirmed"),
            ("node-c", "10.244.6.0/26", "pending"),
            ("node-a", "10.244.7.0/26", "confirmed"),
        ] {
            let key = gingham_ipam::stored::affinity_key(node, &cidr.parse().unwrap());
            store
                .create(&key, format!("{{\"state\":\"{state}\"}}").as_bytes())
                .unwrap();
        }
    }
    ok(&render(Some("node-c"), &["--datastore", &ds], &out, &[]));
    let aggr = std::fs::read_to_string(out.join("bird_aggr.cfg")).unwrap();
    assert!(aggr.contains("   route 10.244.5.0/26 blackhole;"), "{aggr}");
    assert!(
        aggr.contains("      # Block 10.244.5.0/26 is confirmed"),
        "{aggr}"
    );
    assert!(!aggr.contains("10.244.6.0"), "{aggr}");
    assert!(!aggr.contains("10.244.7.0"), "{aggr}");
    // The missing password secret of BGPPeer tor is reported, as confd logs it.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("BGPPeer tor: the password secret is missing"),
        "{err}"
    );
}

#[test]
fn bgp_render_bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("confd");
    let input = cases().join("mesh-3-nodes/input.yaml");
    // An unknown node.
    let o = render(Some("node-x"), &["-f", input.to_str().unwrap()], &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("node \"node-x\" not found"), "{err}");
    assert!(!out.exists());
    // A BGPPeer whose peerIP is not an address: the file is named, nothing is written.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.300, asNumber: 65000}\n",
    )
    .unwrap();
    let o = render(
        Some("node-b"),
        &["-f", input.to_str().unwrap(), "-f", bad.to_str().unwrap()],
        &out,
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml: document 1 (BGPPeer p): spec.peerIP"),
        "{err}"
    );
    assert!(err.contains("nothing was rendered"), "{err}");
    assert!(!out.exists());
}

/// BGPFilters stored in the datastore (applied like any resource) are rendered as from files:
/// the `filters` case, applied then rendered without -f, gives the same six files.
#[test]
fn bgp_render_reads_bgp_filters_from_the_datastore() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let case = cases().join("filters");
    let input = case.join("input.yaml");
    ok(&gingham(
        &["apply", "--datastore", &ds, "-f", input.to_str().unwrap()],
        &[],
    ));
    let out = tmp.path().join("confd");
    ok(&render(Some("node-a"), &["--datastore", &ds], &out, &[]));
    assert_same_files(&out, &case.join("node-a"));
    let bird = std::fs::read_to_string(out.join("bird.cfg")).unwrap();
    assert!(bird.contains("# v4 BGPFilter "), "{bird}");
}

/// Without -f, `bgp render --kubeconfig` reads what confd reads from the Kubernetes API
/// whatever the datastore: the Services and EndpointSlices of per-Service routes (confd's own
/// mesh/static-routes test, its expected files) and the Secrets of BGP passwords (kube-system).
#[test]
fn bgp_render_reads_services_and_secrets_from_the_kubernetes_api() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let case = cases().join("static-routes");
    let docs =
        gingham_model::parse_documents(&std::fs::read_to_string(case.join("input.yaml")).unwrap())
            .unwrap();
    let (calico, k8s): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| d["apiVersion"] == "projectcalico.org/v3");
    // Calico resources in the datastore (block affinities as IPAM stores them), Kubernetes
    // objects in the API server.
    let mut stored = String::new();
    let mut affinities = Vec::new();
    for d in &calico {
        if d["kind"] == "BlockAffinity" {
            let state = d["spec"]["state"].as_str().unwrap_or("").to_string();
            affinities.push((d["spec"]["cidr"].as_str().unwrap().to_string(), state));
        } else {
            stored.push_str(&format!("---\n{d}\n"));
        }
    }
    let calico_file = tmp.path().join("calico.yaml");
    std::fs::write(&calico_file, stored).unwrap();
    ok(&gingham(
        &[
            "apply",
            "--datastore",
            &ds,
            "-f",
            calico_file.to_str().unwrap(),
        ],
        &[],
    ));
    {
        use gingham_datastore::Datastore;
        let store = gingham_datastore_sqlite::SqliteStore::open(tmp.path().join("g.db")).unwrap();
        for (cidr, state) in affinities {
            let key = gingham_ipam::stored::affinity_key("kube-master", &cidr.parse().unwrap());
            store
                .create(&key, format!("{{\"state\":\"{state}\"}}").as_bytes())
                .unwrap();
        }
    }
    let kube = common::KubeApi::start(
        std::sync::Arc::new(gingham_datastore::mem::MemStore::new()),
        tmp.path(),
        "api",
    );
    for d in &k8s {
        kube.apply(d);
    }
    let kc = kube.kubeconfig.to_str().unwrap().to_string();
    let out = tmp.path().join("confd");
    let with_api = ["--datastore", ds.as_str(), "--kubeconfig", kc.as_str()];
    ok(&render(Some("kube-master"), &with_api, &out, &[]));
    assert_same_files(&out, &case.join("kube-master"));

    // The endpoint moves to kube-node-1: kube-master no longer advertises service-1.
    let mut moved = k8s
        .iter()
        .find(|d| d["metadata"]["name"] == "service-1-def")
        .unwrap()
        .clone();
    moved["endpoints"][0]["nodeName"] = "kube-node-1".into();
    kube.apply(&moved);
    ok(&render(Some("kube-master"), &with_api, &out, &[]));
    let aggr = std::fs::read_to_string(out.join("bird_aggr.cfg")).unwrap();
    assert!(!aggr.contains("10.101.0.101/32"), "{aggr}");
    assert!(aggr.contains("route 10.101.0.0/16 blackhole;"), "{aggr}");

    // A peer whose password is in a Secret of kube-system.
    let peer = tmp.path().join("peer.yaml");
    std::fs::write(
        &peer,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n\
         spec: {peerIP: 10.192.0.100, asNumber: 64513, password: {secretKeyRef: {name: bgp-passwords, key: tor}}}\n",
    )
    .unwrap();
    ok(&gingham(
        &["apply", "--datastore", &ds, "-f", peer.to_str().unwrap()],
        &[],
    ));
    let pw_line = "  password \"s3cr3t\";";
    // No Secret yet: no password line, and a warning.
    let o = render(Some("kube-master"), &with_api, &out, &[]);
    ok(&o);
    let bird = std::fs::read_to_string(out.join("bird.cfg")).unwrap();
    assert!(bird.contains("protocol bgp Global_10_192_0_100"), "{bird}");
    assert!(!bird.contains("password"), "{bird}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("BGPPeer tor: the password secret is missing"),
        "{err}"
    );
    kube.apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bgp-passwords", "namespace": "kube-system"},
        "data": {"tor": "czNjcjN0"},
    }));
    ok(&render(Some("kube-master"), &with_api, &out, &[]));
    let bird = std::fs::read_to_string(out.join("bird.cfg")).unwrap();
    assert!(bird.contains(pw_line), "{bird}");
    // Another namespace's Secret of that name is not read; NAMESPACE names Calico's.
    ok(&render(
        Some("kube-master"),
        &with_api,
        &out,
        &[("NAMESPACE", "calico-system")],
    ));
    let bird = std::fs::read_to_string(out.join("bird.cfg")).unwrap();
    assert!(!bird.contains("password"), "{bird}");
    // Without a kubeconfig: no Kubernetes objects, as before.
    ok(&render(
        Some("kube-master"),
        &["--datastore", &ds],
        &out,
        &[],
    ));
    let bird = std::fs::read_to_string(out.join("bird.cfg")).unwrap();
    assert!(!bird.contains("password"), "{bird}");
    let aggr6 = std::fs::read_to_string(out.join("bird6_aggr.cfg")).unwrap();
    assert!(aggr6.contains("route fd00:96::/112 blackhole;"), "{aggr6}");
    assert!(!aggr6.contains("fd00:96::28"), "{aggr6}");
}
