//! The real `kubectl` against the API double: apply (client-side, with its last-applied
//! annotation, and server-side), get, label, annotate and delete of Namespaces, NetworkPolicies,
//! Pods, a CRD and its custom resources. Plain `kubectl apply -f` validates: the double serves
//! the OpenAPI v3 documents kubectl reads to learn that the server validates fields.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_kubeapi::ApiServer;
use serde_json::Value;

struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(bin: PathBuf, kubeconfig: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        Self { bin, dir }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        assert!(!err.contains("--validate=false"), "kubectl {args:?}: {err}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

const FIRST: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: a}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: shop
  labels: {app: web, stage: one}
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - ports:
    - {port: 80, protocol: TCP}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  containers:
  - name: web
    image: nginx
    ports:
    - {containerPort: 80, name: http}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
";

const WIDGET: &str = "\
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: shop
spec:
  size: 3
";

fn labels(v: &Value) -> Vec<String> {
    let mut l: Vec<String> = v["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    l.sort();
    l
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v["metadata"]["annotations"][key].as_str()
}

#[test]
fn sys_kubectl_applies_gets_labels_annotates_and_deletes() {
    let bin = gingham_testkit::require_tool("kubectl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Arc::new(MemStore::new());
    let server = rt
        .block_on(ApiServer::start(
            store.clone(),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let k = Kubectl::new(bin, &server.kubeconfig());
    let first = k.file("first.yaml", FIRST);

    // Plain apply (validation on, client-side apply).
    let out = k.ok(&["apply", "-f", &first]);
    for made in [
        "namespace/shop created",
        "networkpolicy.networking.k8s.io/allow-web created",
        "pod/web created",
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created",
    ] {
        assert!(out.contains(made), "{out}");
    }
    let np = k.json(&["get", "networkpolicy", "allow-web", "-n", "shop"]);
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 80);
    assert!(annotation(&np, gingham_kubeapi::LAST_APPLIED).is_some());
    assert_eq!(labels(&np), ["app=web", "stage=one"]);
    let kv = store
        .get("/registry/networking.k8s.io/networkpolicies/shop/allow-web")
        .unwrap()
        .expect("stored under the registry prefix");
    assert_eq!(
        np["metadata"]["resourceVersion"],
        kv.mod_revision.to_string()
    );

    // Re-apply unchanged: nothing changes. Then a changed file: the port, a label gone.
    let out = k.ok(&["apply", "-f", &first]);
    assert!(
        out.contains("networkpolicy.networking.k8s.io/allow-web unchanged"),
        "{out}"
    );
    let second = k.file(
        "second.yaml",
        &FIRST
            .replace("{port: 80, protocol: TCP}", "{port: 8080, protocol: TCP}")
            .replace("labels: {app: web, stage: one}", "labels: {app: web}")
            .replace("image: nginx", "image: nginx:1.27"),
    );
    let out = k.ok(&["apply", "-f", &second]);
    assert!(
        out.contains("networkpolicy.networking.k8s.io/allow-web configured"),
        "{out}"
    );
    let np2 = k.json(&["get", "netpol", "allow-web", "-n", "shop"]);
    assert_eq!(np2["spec"]["ingress"][0]["ports"][0]["port"], 8080);
    assert_eq!(
        labels(&np2),
        ["app=web"],
        "a label dropped from the file is removed"
    );
    assert_eq!(np2["metadata"]["generation"], 2);
    let pod = k.json(&["get", "pod", "web", "-n", "shop"]);
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.27");
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["name"], "http");

    // get: the default table, YAML, and listing across namespaces.
    let table = k.ok(&["get", "pods", "-n", "shop"]);
    assert!(table.lines().next().unwrap().contains("NAME"), "{table}");
    assert!(table.contains("web"), "{table}");
    let yaml = k.ok(&["get", "ns", "shop", "-o", "yaml"]);
    assert!(yaml.contains("kubernetes.io/metadata.name: shop"), "{yaml}");
    let all = k.json(&["get", "networkpolicies", "-A"]);
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    // label and annotate, adding and removing.
    k.ok(&["label", "pod", "web", "-n", "shop", "tier=front"]);
    k.ok(&["label", "namespace", "shop", "team=b", "--overwrite"]);
    k.ok(&["annotate", "netpol", "allow-web", "-n", "shop", "owner=ops"]);
    let pod = k.json(&["get", "pod", "web", "-n", "shop"]);
    assert_eq!(labels(&pod), ["app=web", "tier=front"]);
    let ns = k.json(&["get", "namespace", "shop"]);
    assert_eq!(labels(&ns), ["kubernetes.io/metadata.name=shop", "team=b"]);
    assert_eq!(
        annotation(
            &k.json(&["get", "netpol", "allow-web", "-n", "shop"]),
            "owner"
        ),
        Some("ops")
    );
    k.ok(&["label", "pod", "web", "-n", "shop", "tier-"]);
    assert_eq!(
        labels(&k.json(&["get", "pod", "web", "-n", "shop"])),
        ["app=web"]
    );
    let selected = k.json(&["get", "pods", "-A", "-l", "app=web"]);
    assert_eq!(selected["items"].as_array().unwrap().len(), 1);
    let none = k.json(&["get", "pods", "-A", "-l", "app!=web"]);
    assert!(none["items"].as_array().unwrap().is_empty());

    // get --watch: the table's rows as the pod changes (the server sends Table rows).
    let mut watcher = Command::new(&k.bin)
        .env("KUBECONFIG", k.dir.path().join("kubeconfig"))
        .env("HOME", k.dir.path())
        .arg("--cache-dir")
        .arg(k.dir.path().join("cache"))
        .args([
            "get",
            "pods",
            "-n",
            "shop",
            "--watch",
            "--output-watch-events",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Lines arrive through a channel, so that a silent kubectl fails the test instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("kubectl get --watch prints a line within 10 s")
    };
    let mut lines = vec![next(), next()];
    k.ok(&["annotate", "pod", "web", "-n", "shop", "watched=yes"]);
    lines.push(next());
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(lines[0].starts_with("EVENT"), "{lines:?}");
    assert!(
        lines[1].starts_with("ADDED") && lines[1].contains("web"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("MODIFIED") && lines[2].contains("web"),
        "{lines:?}"
    );

    // A label kubectl refuses to send is caught by kubectl; one the server refuses is named.
    let (ok, _, err) = k.run(&["label", "pod", "web", "-n", "shop", "bad=-x-"]);
    assert!(!ok && err.contains("bad"), "{err}");

    // The CRD serves widgets: apply, get by plural and short name, label, server-side apply.
    let widget = k.file("widget.yaml", WIDGET);
    let out = k.ok(&["apply", "-f", &widget]);
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
    let w = k.json(&["get", "widgets", "w1", "-n", "shop"]);
    assert_eq!(w["spec"]["size"], 3);
    assert!(k.ok(&["get", "wd", "-n", "shop"]).contains("w1"));
    k.ok(&["label", "widget", "w1", "-n", "shop", "color=red"]);
    let changed = k.file("widget2.yaml", &WIDGET.replace("size: 3", "size: 4"));
    let out = k.ok(&["apply", "-f", &changed]);
    assert!(out.contains("widget.example.com/w1 configured"), "{out}");
    let w = k.json(&["get", "widget", "w1", "-n", "shop"]);
    assert_eq!(w["spec"]["size"], 4);
    assert_eq!(labels(&w), ["color=red"]);
    let ssa = k.file("widget3.yaml", &WIDGET.replace("size: 3", "size: 5"));
    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &ssa]);
    assert_eq!(
        k.json(&["get", "widget", "w1", "-n", "shop"])["spec"]["size"],
        5
    );

    // delete: the widget, then the CRD takes the resource away.
    k.ok(&["delete", "widget", "w1", "-n", "shop"]);
    let (ok, _, err) = k.run(&["get", "widget", "w1", "-n", "shop"]);
    assert!(!ok && err.contains("not found"), "{err}");
    k.ok(&["apply", "-f", &widget]);
    k.ok(&["delete", "crd", "widgets.example.com"]);
    let (ok, _, err) = k.run(&["get", "widgets", "-n", "shop"]);
    assert!(!ok, "widgets are gone with their CRD: {err}");
    assert!(
        store
            .list("/registry/example.com/widgets/")
            .unwrap()
            .kvs
            .is_empty()
    );

    // delete -f, then the namespace's objects are gone.
    k.ok(&["delete", "-f", &second, "--ignore-not-found"]);
    let (ok, _, err) = k.run(&["get", "namespace", "shop"]);
    assert!(
        !ok && err.contains("namespaces \"shop\" not found"),
        "{err}"
    );
    assert!(
        store
            .list("/registry/core/pods/shop/")
            .unwrap()
            .kvs
            .is_empty()
    );
    rt.block_on(server.shutdown());
}

#[test]
fn sys_kubectl_reports_what_the_server_refuses() {
    let bin = gingham_testkit::require_tool("kubectl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(ApiServer::start(
            Arc::new(MemStore::new()),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let k = Kubectl::new(bin, &server.kubeconfig());
    let bad = k.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n  namespace: default\ndata: {a: b}\n",
    );
    let (ok, _, err) = k.run(&["apply", "-f", &bad]);
    assert!(!ok, "an invalid name is refused");
    assert!(
        err.contains("ConfigMap \"Not_Valid\" is invalid: metadata.name"),
        "{err}"
    );
    let missing = k.file(
        "missing.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: nowhere\n",
    );
    let (ok, _, err) = k.run(&["apply", "-f", &missing]);
    assert!(
        !ok && err.contains("namespaces \"nowhere\" not found"),
        "{err}"
    );
    // Fields are validated as kube-apiserver does with kubectl's fieldValidation=Strict: an
    // unknown field and a value of the wrong type are refused, naming the field.
    let typo = k.file(
        "typo.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: default\nspec:\n  podSelectr: {}\n",
    );
    let (ok, _, err) = k.run(&["apply", "-f", &typo]);
    assert!(!ok, "an unknown field is refused");
    assert!(err.contains("unknown field \"spec.podSelectr\""), "{err}");
    let wrong = k.file(
        "wrong.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: x\n    ports:\n    - containerPort: eighty\n",
    );
    let (ok, _, err) = k.run(&["apply", "-f", &wrong]);
    assert!(!ok, "a value of the wrong type is refused");
    assert!(
        err.contains("spec.containers[0].ports[0].containerPort"),
        "{err}"
    );
    // Without strict validation the unknown field is dropped, as kube-apiserver does.
    k.ok(&["apply", "--validate=false", "-f", &typo]);
    let np = k.json(&["get", "netpol", "np"]);
    assert!(np["spec"].get("podSelectr").is_none(), "{np}");
    rt.block_on(server.shutdown());
}
