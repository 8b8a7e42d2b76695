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
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&checked_in).unwrap();
    let want = gingham_model::crd::kdd_crds();
    assert_eq!(docs.len(), want.len());
    for (doc, c) in docs.iter().zip(&want) {
        assert_eq!(doc["metadata"]["name"], c.crd_name().as_str());
        assert_eq!(doc["spec"]["group"], "crd.projectcalico.org");
        assert_eq!(doc["spec"]["names"]["kind"], c.kind);
        assert_eq!(doc["spec"]["names"]["plural"], c.plural);
        let scope = if c.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(doc["spec"]["scope"], scope, "{}", c.crd_name());
        // A real API server prunes fields a structural schema does not list: spec and status
        // keep them all (Gingham validates the resources itself).
        let props = &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        for part in ["spec", "status"] {
            assert_eq!(
                props[part]["x-kubernetes-preserve-unknown-fields"],
                true,
                "{} {part}",
                c.crd_name()
            );
        }
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
    // Each datastore's manifests on an API of their own (created, not patched over the
    // other's); the double decodes built-in kinds strictly, as kubectl's default asks.
    for files in [
        &["gingham-etcd.yaml"][..],
        &["crds.yaml", "gingham-kdd.yaml"][..],
    ] {
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
        for f in files {
            kubectl(
                &kc,
                &["apply", "-f", &deploy().join(f).display().to_string()],
            );
        }
        check_applied(&kc, dir.path(), files.contains(&"crds.yaml"));
        rt.block_on(server.shutdown());
    }
}

/// `kubectl get` shows what the manifests make.
fn check_applied(kc: &Path, dir: &Path, with_crds: bool) {
    let mut objects = vec![
        ("daemonset", "gingham-node"),
        ("deployment", "gingham-kube-controllers"),
        ("configmap", "gingham-config"),
        ("serviceaccount", "gingham-node"),
        ("serviceaccount", "gingham-kube-controllers"),
    ];
    if !with_crds {
        objects.push(("secret", "gingham-etcd-secrets"));
    }
    for (what, name) in objects {
        let got = kubectl(kc, &["get", what, name, "-n", "kube-system", "-o", "name"]);
        assert!(got.contains(name), "{what} {name}: {got}");
    }
    for (what, name) in [
        ("clusterrole", "gingham-node"),
        ("clusterrole", "gingham-cni-plugin"),
        ("clusterrole", "gingham-kube-controllers"),
        ("clusterrolebinding", "gingham-node"),
        ("clusterrolebinding", "gingham-cni-plugin"),
        ("clusterrolebinding", "gingham-kube-controllers"),
    ] {
        let got = kubectl(kc, &["get", what, name, "-o", "name"]);
        assert!(got.contains(name), "{what} {name}: {got}");
    }
    if !with_crds {
        return;
    }
    let crds = kubectl(kc, &["get", "crd", "-o", "name"]);
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
    // The CRDs serve their kinds (the double does not prune fields as a real API server does;
    // that spec and status are kept there is checked on the CRDs' schemas above).
    let pool = dir.join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: default-ipv4-ippool}\nspec: {cidr: 10.244.0.0/16, blockSize: 26, vxlanMode: CrossSubnet, natOutgoing: true}\n",
    )
    .unwrap();
    kubectl(kc, &["apply", "-f", &pool.display().to_string()]);
    let got: serde_json::Value = serde_json::from_str(&kubectl(
        kc,
        &[
            "get",
            "ippools.crd.projectcalico.org",
            "default-ipv4-ippool",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(
        got["spec"],
        serde_json::json!({"cidr": "10.244.0.0/16", "blockSize": 26, "vxlanMode": "CrossSubnet", "natOutgoing": true}),
        "{got}"
    );
}

/// The `gingham-config` ConfigMap's data of a manifest.
fn config_map_data(manifest: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(deploy().join(manifest)).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "gingham-config")
        .and_then(|d| d["data"].as_object().cloned())
        .unwrap_or_else(|| panic!("{manifest} has no ConfigMap gingham-config"))
}

#[test]
fn sys_install_cni_installs_the_plugin_and_a_configuration_it_accepts() {
    let sh = gingham_testkit::require_tool("sh");
    gingham_testkit::require_tool("base64");
    gingham_testkit::require_tool("sed");
    for (manifest, datastore) in [
        ("gingham-etcd.yaml", "etcdv3"),
        ("gingham-kdd.yaml", "kubernetes"),
    ] {
        let data = config_map_data(manifest);
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        let sa = dir.path().join("sa");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(
            sa.join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(sa.join("token"), "tok-123").unwrap();
        let out = Command::new(&sh)
            .arg("-c")
            .arg(data["install_cni"].as_str().unwrap())
            .env("HOST_ROOT", &host)
            .env("SA_DIR", &sa)
            .env("GINGHAM_BIN", env!("CARGO_BIN_EXE_gingham"))
            .env(
                "CNI_NETWORK_CONFIG",
                data["cni_network_config"].as_str().unwrap(),
            )
            .env("CNI_MTU", data["veth_mtu"].as_str().unwrap())
            .env("KUBERNETES_NODE_NAME", "node-a")
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env("ETCD_ENDPOINTS", "http://127.0.0.1:2379")
            .env("ETCD_CA_CERT_FILE", "")
            .env("ETCD_CERT_FILE", "")
            .env("ETCD_KEY_FILE", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{manifest}: install-cni: {out:?}");

        // The plugin, under both names, answers a runtime.
        for name in ["gingham", "gingham-ipam"] {
            let bin = host.join("opt/cni/bin").join(name);
            let v = Command::new(&bin)
                .env("CNI_COMMAND", "VERSION")
                .output()
                .unwrap();
            assert!(v.status.success(), "{manifest}: {name} VERSION: {v:?}");
            let doc: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
            assert!(
                doc["supportedVersions"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            );
        }

        // The network configuration is one the plugin accepts, with the Kubernetes path on.
        let netd = host.join("etc/cni/net.d");
        let list: serde_json::Value =
            serde_json::from_slice(&std::fs::read(netd.join("10-gingham.conflist")).unwrap())
                .unwrap_or_else(|e| panic!("{manifest}: the conflist is not JSON: {e}"));
        let mut plugin = list["plugins"][0].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        plugin["name"] = list["name"].clone();
        let conf = gingham_cni::NetConf::from_value(&plugin).unwrap();
        assert_eq!(conf.kind, "gingham");
        assert_eq!(conf.nodename.as_deref(), Some("node-a"));
        assert_eq!(conf.datastore_type.as_deref(), Some(datastore));
        assert!(conf.k8s_policy());
        assert_eq!(conf.kubeconfig(), Some("/etc/cni/net.d/gingham-kubeconfig"));
        assert_eq!(conf.mtu, Some(0));
        if datastore == "etcdv3" {
            assert_eq!(
                conf.etcd_endpoints.as_deref(),
                Some("http://127.0.0.1:2379")
            );
            assert_eq!(conf.etcd_ca_cert_file.as_deref(), Some(""));
        }

        // The kubeconfig reaches the cluster's API with the service account's token.
        let kc = kube::config::Kubeconfig::read_from(netd.join("gingham-kubeconfig"))
            .unwrap_or_else(|e| panic!("{manifest}: the kubeconfig: {e}"));
        assert_eq!(
            kc.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://10.96.0.1:443")
        );
        assert!(kc.auth_infos[0].auth_info.as_ref().unwrap().token.is_some());
        let text = std::fs::read_to_string(netd.join("gingham-kubeconfig")).unwrap();
        assert!(text.contains("    token: tok-123\n"), "{text}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(netd.join("gingham-kubeconfig"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "only root reads the kubeconfig: {mode:o}");
    }
}

/// The objects of a manifest by `kind/name`, with what only etcd needs removed (ETCD_*
/// variables, the etcd-certs volume, the etcd Secret) and what differs by datastore by design
/// (ClusterRoles, the datastore's configuration, the controllers enabled) left out.
fn shared_part(manifest: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(deploy().join(manifest)).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for mut d in docs {
        let key = format!(
            "{}/{}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap()
        );
        match d["kind"].as_str().unwrap() {
            "ClusterRole" | "Secret" => continue,
            "ConfigMap" => {
                let data = d["data"].as_object_mut().unwrap();
                data.retain(|k, _| {
                    !k.starts_with("etcd_")
                        && !matches!(
                            k.as_str(),
                            "datastore_type" | "cni_network_config" | "install_cni"
                        )
                });
            }
            "DaemonSet" | "Deployment" => {
                let spec = &mut d["spec"]["template"]["spec"];
                if let Some(v) = spec
                    .get_mut("volumes")
                    .and_then(serde_json::Value::as_array_mut)
                {
                    v.retain(|v| v["name"] != "etcd-certs");
                    if v.is_empty() {
                        spec.as_object_mut().unwrap().remove("volumes");
                    }
                }
                for list in ["initContainers", "containers"] {
                    let containers = spec.get_mut(list).and_then(serde_json::Value::as_array_mut);
                    for c in containers.into_iter().flatten() {
                        if let Some(env) =
                            c.get_mut("env").and_then(serde_json::Value::as_array_mut)
                        {
                            env.retain(|e| {
                                let n = e["name"].as_str().unwrap();
                                !n.starts_with("ETCD_") && n != "ENABLED_CONTROLLERS"
                            });
                        }
                        if let Some(m) = c
                            .get_mut("volumeMounts")
                            .and_then(serde_json::Value::as_array_mut)
                        {
                            m.retain(|m| m["name"] != "etcd-certs");
                            if m.is_empty() {
                                c.as_object_mut().unwrap().remove("volumeMounts");
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        out.insert(key, d);
    }
    out
}

#[test]
fn the_etcd_and_kdd_manifests_differ_only_where_the_datastore_does() {
    let etcd = shared_part("gingham-etcd.yaml");
    let kdd = shared_part("gingham-kdd.yaml");
    assert_eq!(
        etcd.keys().collect::<Vec<_>>(),
        kdd.keys().collect::<Vec<_>>()
    );
    for (key, e) in &etcd {
        assert!(
            *e == kdd[key],
            "{key} differs between deploy/gingham-etcd.yaml and deploy/gingham-kdd.yaml:\n{e}\n{}",
            kdd[key]
        );
    }
}
