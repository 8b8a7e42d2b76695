//! `--datastore kubernetes:KUBECONFIG` and `DATASTORE_TYPE=kubernetes` with `KUBECONFIG`: the
//! CLI keeps Calico's resources as Calico's CRDs in the API server (the API double here, with
//! the CRDs of `gingham manifests crds` installed).

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::{KubeApi, ok_in};
use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn cluster(dir: &std::path::Path) -> (KubeApi, Arc<MemStore>) {
    let backing = Arc::new(MemStore::new());
    let api = KubeApi::start(backing.clone() as Arc<dyn Datastore>, dir, "kdd");
    let yaml = ok_in(&["manifests", "crds"], None);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(api.client.clone());
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
        api.rt
            .block_on(crds.create(&Default::default(), &crd))
            .unwrap();
    }
    (api, backing)
}

/// Runs gingham with `env` set and Gingham's datastore variables unset.
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(args)
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("DATASTORE_TYPE")
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const DOCS: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.44.0.0/16, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all}
spec: {selector: all(), types: [Ingress]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: default}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
";

#[test]
fn the_cli_keeps_resources_as_calicos_crds() {
    let dir = tempfile::tempdir().unwrap();
    let (api, backing) = cluster(dir.path());
    let kc = api.kubeconfig.display().to_string();
    let ds = format!("kubernetes:{kc}");
    let out = run(&["apply", "-f", "-", "--datastore", &ds], &[], DOCS);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Calico's environment selects the same store.
    let env = [
        ("DATASTORE_TYPE", "kubernetes"),
        ("KUBECONFIG", kc.as_str()),
    ];
    let out = run(&["get", "networkpolicies", "-A", "-o", "json"], &env, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["metadata"]["name"], "allow-web");
    assert_eq!(items[0]["metadata"]["namespace"], "default");
    let out = run(&["get", "ippools"], &env, "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.44.0.0/16"));
    // The API server holds Calico's CRD objects.
    for key in [
        "crd.projectcalico.org/ippools/p1",
        "crd.projectcalico.org/globalnetworkpolicies/deny-all",
        "crd.projectcalico.org/networkpolicies/default/allow-web",
    ] {
        let kv = backing
            .get(&format!("{}{key}", gingham_kubeapi::REGISTRY_PREFIX))
            .unwrap()
            .unwrap_or_else(|| panic!("{key} stored"));
        let obj: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(obj["apiVersion"], "crd.projectcalico.org/v1");
    }
    // What is not kept yet, and a kubeconfig that is not there, are named.
    let out = run(&["get", "nodes"], &env, "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Kubernetes Nodes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = dir.path().join("missing-kubeconfig");
    let out = run(
        &[
            "get",
            "ippools",
            "--datastore",
            &format!("kubernetes:{}", missing.display()),
        ],
        &[],
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing-kubeconfig"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
