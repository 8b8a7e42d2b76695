//! The lab as a small Kubernetes (`spec.kubernetes: true`), driven by `kubectl`: NetworkPolicies,
//! pod and namespace labels, namespace deletion and the v1beta1 DefaultDeny annotation reach
//! the datastore through `gingham kube-controllers`, and real packets follow; pods made and
//! deleted with `kubectl` get (and lose) a namespace, an address and their status through the
//! lab's kubelet. System tests: root, iproute2, nftables, kubectl.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    TestLab, down_leaves_nothing, kubectl, lab_state, lab_up, ok_in, try_outcome, wait_until,
};

const SPEC: &str = "{nodes: [node-a, node-b], kubernetes: true}";

/// Two namespaces: `shop` with a web pod and a client, `other` with an intruder (labelled as a
/// client too) and an api pod.
const DOCS: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
- {apiVersion: v1, kind: Namespace, metadata: {name: other}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: shop, labels: {app: web}}
  spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: shop, labels: {role: client}}
  spec: {containers: [{name: c, image: busybox}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: intruder, namespace: other, labels: {role: client}}
  spec: {containers: [{name: i, image: busybox}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: api, namespace: other, labels: {app: api}}
  spec: {containers: [{name: a, image: nginx, ports: [{containerPort: 80}]}]}
";

/// Only clients of its own namespace may reach the web pod.
const POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: 80}]
";

fn require() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("kubectl");
}

fn up(prefix: &str) -> (TestLab, String) {
    let lab = lab_up(prefix, SPEC, DOCS);
    let kubeconfig = ok_in(&["lab", "kubeconfig", "--dir", &lab.dir], None)
        .trim()
        .to_owned();
    assert!(
        Path::new(&kubeconfig).exists(),
        "lab kubeconfig printed {kubeconfig}"
    );
    (lab, kubeconfig)
}

/// A stored Calico resource as JSON (`gingham get KIND [-n NS] NAME -o json`), or why not.
fn get(
    lab: &TestLab,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<serde_json::Value, String> {
    let mut args = vec!["get", kind, name, "-o", "json", "--datastore", &lab.ds];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let out = common::gingham_in(&args, None);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// The labels of pod `ns/name`'s WorkloadEndpoint.
fn endpoint_labels(lab: &TestLab, ns: &str, pod: &str) -> serde_json::Value {
    let out = ok_in(
        &["get", "wep", "-n", ns, "-o", "json", "--datastore", &lab.ds],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = v["items"].as_array().cloned().unwrap_or_else(|| vec![v]);
    items
        .into_iter()
        .find(|w| w["spec"]["pod"] == pod)
        .map(|w| w["metadata"]["labels"].clone())
        .unwrap_or_else(|| panic!("no endpoint of {ns}/{pod} in {out}"))
}

/// Waits until the agents have programmed everything written so far, then tries one TCP
/// connection with real packets.
fn outcome(lab: &TestLab, from: &str, to: &str, port: u16) -> String {
    common::wait_programmed(&lab.dir);
    try_outcome(&lab.dir, from, to, "TCP", port)
}

#[test]
fn sys_kubectl_network_policy_and_pod_labels_are_enforced() {
    require();
    let (lab, kc) = up("k");
    // Every pod Running with the address the lab gave it.
    let pods: serde_json::Value =
        serde_json::from_str(&kubectl(&kc, &["get", "pods", "-A", "-o", "json"], None)).unwrap();
    let state = lab_state(&lab.dir);
    for p in pods["items"].as_array().unwrap() {
        let key = format!(
            "{}/{}",
            p["metadata"]["namespace"].as_str().unwrap(),
            p["metadata"]["name"].as_str().unwrap()
        );
        let ip = state["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                format!(
                    "{}/{}",
                    s["namespace"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                ) == key
            })
            .map(|s| s["ip"].clone())
            .unwrap_or_else(|| panic!("the lab does not run {key}"));
        assert_eq!(p["status"]["phase"], "Running", "{key}: {p}");
        assert_eq!(p["status"]["podIP"], ip, "{key}");
        assert_eq!(p["status"]["podIPs"][0]["ip"], ip, "{key}");
    }
    assert_eq!(pods["items"].as_array().unwrap().len(), 4);

    assert_eq!(outcome(&lab, "shop/client", "shop/web", 80), "connected");
    assert_eq!(outcome(&lab, "other/intruder", "shop/web", 80), "connected");

    kubectl(&kc, &["apply", "-f", "-"], Some(POLICY));
    let applied = Instant::now();
    loop {
        if get(
            &lab,
            "networkpolicy",
            Some("shop"),
            "knp.default.web-from-clients",
        )
        .is_ok()
        {
            break;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(1),
            "knp.default.web-from-clients not in the datastore 1 s after kubectl apply"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(outcome(&lab, "shop/client", "shop/web", 80), "connected");
    assert_eq!(outcome(&lab, "other/intruder", "shop/web", 80), "no-answer");

    // The client loses its label: the endpoint follows, and so do the packets.
    kubectl(
        &kc,
        &["label", "pod", "-n", "shop", "client", "role-"],
        None,
    );
    wait_until("the client's endpoint loses role", 5, || {
        let l = endpoint_labels(&lab, "shop", "client");
        if l.get("role").is_none() {
            Ok(())
        } else {
            Err(l.to_string())
        }
    });
    assert_eq!(outcome(&lab, "shop/client", "shop/web", 80), "no-answer");
    kubectl(
        &kc,
        &["label", "pod", "-n", "shop", "client", "role=client"],
        None,
    );
    wait_until("the client's endpoint gets role=client", 5, || {
        let l = endpoint_labels(&lab, "shop", "client");
        if l["role"] == "client" {
            Ok(())
        } else {
            Err(l.to_string())
        }
    });
    assert_eq!(outcome(&lab, "shop/client", "shop/web", 80), "connected");

    // The policy deleted: its Calico policy goes, the intruder gets through again.
    kubectl(
        &kc,
        &["delete", "networkpolicy", "-n", "shop", "web-from-clients"],
        None,
    );
    wait_until("knp.default.web-from-clients removed", 5, || {
        match get(
            &lab,
            "networkpolicy",
            Some("shop"),
            "knp.default.web-from-clients",
        ) {
            Ok(p) => Err(p.to_string()),
            Err(_) => Ok(()),
        }
    });
    assert_eq!(outcome(&lab, "other/intruder", "shop/web", 80), "connected");
    down_leaves_nothing(&lab);
}

#[test]
fn sys_kubectl_namespaces_are_profiles() {
    require();
    let (lab, kc) = up("n");
    // Labels of the namespace: the profile's labels to apply.
    kubectl(&kc, &["label", "namespace", "shop", "team=blue"], None);
    wait_until("kns.shop gets pcns.team", 5, || {
        let p = get(&lab, "profile", None, "kns.shop")?;
        let l = &p["spec"]["labelsToApply"];
        if l["pcns.team"] == "blue" {
            Ok(())
        } else {
            Err(l.to_string())
        }
    });

    // The v1beta1 DefaultDeny annotation isolates the namespace's pods.
    assert_eq!(outcome(&lab, "shop/client", "other/api", 80), "connected");
    kubectl(
        &kc,
        &[
            "annotate",
            "namespace",
            "other",
            r#"net.beta.kubernetes.io/network-policy={"ingress":{"isolation":"DefaultDeny"}}"#,
        ],
        None,
    );
    wait_until("kns.other denies ingress", 5, || {
        let p = get(&lab, "profile", None, "kns.other")?;
        let ingress = &p["spec"]["ingress"];
        if ingress.to_string().contains("Deny") {
            Ok(())
        } else {
            Err(p.to_string())
        }
    });
    assert_eq!(outcome(&lab, "shop/client", "other/api", 80), "no-answer");
    // Its pods may still go out.
    assert_eq!(outcome(&lab, "other/intruder", "shop/web", 80), "connected");

    // The namespace deleted: its profile goes, and its pods with their network namespaces.
    let netns_of = |key: &str| -> String {
        let s = lab_state(&lab.dir);
        s["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                format!(
                    "{}/{}",
                    p["namespace"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                ) == key
            })
            .map(|p| p["netns"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{key} not in the lab"))
    };
    let gone = [netns_of("other/api"), netns_of("other/intruder")];
    kubectl(&kc, &["delete", "namespace", "other"], None);
    wait_until("kns.other removed", 5, || {
        match get(&lab, "profile", None, "kns.other") {
            Ok(p) => Err(p.to_string()),
            Err(_) => Ok(()),
        }
    });
    wait_until("the pods of other stopped", 10, || {
        let left: Vec<&String> = gone
            .iter()
            .filter(|n| Path::new("/run/netns").join(n).exists())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    assert!(
        !lab_state(&lab.dir)["pods"]
            .to_string()
            .contains("\"other\""),
        "the lab still lists pods of other"
    );
    down_leaves_nothing(&lab);
}

#[test]
fn sys_kubectl_pods_run_and_stop() {
    require();
    let (lab, kc) = up("p");
    // The API answers in the nodes' namespaces too, on the same address: kubectl on a node.
    let on_node = common::lab_exec_ok(
        &lab.dir,
        "node-b",
        &["kubectl", "get", "pods", "-n", "shop", "-o", "name"],
    );
    assert_eq!(on_node.lines().count(), 2, "{on_node}");
    kubectl(
        &kc,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: shop, labels: {app: late}}\n\
             spec: {nodeName: node-b, containers: [{name: l, image: nginx, ports: [{name: http, containerPort: 8080}]}]}\n",
        ),
    );
    let ip = wait_until("shop/late Running", 20, || {
        let p: serde_json::Value = serde_json::from_str(&kubectl(
            &kc,
            &["get", "pod", "-n", "shop", "late", "-o", "json"],
            None,
        ))
        .unwrap();
        match (&p["status"]["phase"], &p["status"]["podIP"]) {
            (phase, serde_json::Value::String(ip)) if phase == "Running" => Ok(ip.clone()),
            _ => Err(p["status"].to_string()),
        }
    });
    let state = lab_state(&lab.dir);
    let late = state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "late")
        .cloned()
        .expect("the lab runs shop/late");
    assert_eq!(late["ip"], ip.as_str());
    assert_eq!(late["node"], "node-b");
    assert_eq!(outcome(&lab, "shop/client", "shop/late", 8080), "connected");
    // The endpoint the CNI plugin wrote has the pod's labels and named ports from the API
    // (the controllers keep labels, only the plugin's Kubernetes path writes ports).
    assert_eq!(endpoint_labels(&lab, "shop", "late")["app"], "late");
    let weps: serde_json::Value = serde_json::from_str(&ok_in(
        &[
            "get",
            "wep",
            "-n",
            "shop",
            "-o",
            "json",
            "--datastore",
            &lab.ds,
        ],
        None,
    ))
    .unwrap();
    let wep = weps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["spec"]["pod"] == "late")
        .cloned()
        .unwrap();
    assert_eq!(
        wep["spec"]["ports"],
        serde_json::json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        "{wep}"
    );

    kubectl(&kc, &["delete", "pod", "-n", "shop", "late"], None);
    let netns = late["netns"].as_str().unwrap().to_owned();
    wait_until("shop/late's namespace removed", 10, || {
        if Path::new("/run/netns").join(&netns).exists() {
            Err(netns.clone())
        } else {
            Ok(())
        }
    });
    wait_until("shop/late's endpoint removed", 5, || {
        let out = ok_in(
            &[
                "get",
                "wep",
                "-n",
                "shop",
                "-o",
                "json",
                "--datastore",
                &lab.ds,
            ],
            None,
        );
        if out.contains("\"late\"") {
            Err(out)
        } else {
            Ok(())
        }
    });

    // `lab apply` and `lab delete` go through the API too: kubectl sees what they do.
    let file = Path::new(&lab.dir).parent().unwrap().join("more.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: shop, labels: {app: extra}}\n\
         spec: {containers: [{name: e, ports: [{containerPort: 80}]}]}\n",
    )
    .unwrap();
    ok_in(
        &[
            "lab",
            "apply",
            "--dir",
            &lab.dir,
            "-f",
            file.to_str().unwrap(),
        ],
        None,
    );
    let extra: serde_json::Value = serde_json::from_str(&kubectl(
        &kc,
        &["get", "pod", "-n", "shop", "extra", "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(extra["status"]["phase"], "Running", "{extra}");
    assert_eq!(outcome(&lab, "shop/client", "shop/extra", 80), "connected");
    ok_in(&["lab", "delete", "--dir", &lab.dir, "shop/extra"], None);
    assert!(
        !kubectl(&kc, &["get", "pods", "-n", "shop", "-o", "name"], None).contains("extra"),
        "lab delete left the pod in the API"
    );
    assert!(
        !lab_state(&lab.dir)["pods"]
            .to_string()
            .contains("\"extra\"")
    );
    down_leaves_nothing(&lab);

    // Its pods left the API with it: a new lab on the same datastore runs none of them.
    let again = Path::new(&lab.dir).parent().unwrap().join("again");
    let file = again.with_extension("yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: {}}}\nspec: {SPEC}\n",
            lab.name
        ),
    )
    .unwrap();
    let again = again.display().to_string();
    let _down = common::Down(again.clone());
    ok_in(
        &[
            "lab",
            "up",
            "-f",
            file.to_str().unwrap(),
            "--dir",
            &again,
            "--datastore",
            &lab.ds,
        ],
        None,
    );
    let kc = ok_in(&["lab", "kubeconfig", "--dir", &again], None)
        .trim()
        .to_owned();
    assert_eq!(
        kubectl(&kc, &["get", "pods", "-A", "-o", "name"], None).trim(),
        ""
    );
    assert_eq!(lab_state(&again)["pods"], serde_json::json!([]));
    ok_in(&["lab", "down", "--dir", &again], None);
}

/// `lab up` of `extra` after the usual documents in a Kubernetes lab: it fails; stderr.
fn failed_up(name: &str, tmp: &Path, extra: &str) -> String {
    let dir = tmp.join("lab");
    let file = tmp.join("lab.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: {name}}}\nspec: {SPEC}\n---\n{DOCS}---\n{extra}"
        ),
    )
    .unwrap();
    let _down = common::Down(dir.display().to_string());
    let out = common::gingham_in(
        &[
            "lab",
            "up",
            "-f",
            file.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
            "--datastore",
            &format!("sqlite:{}", tmp.join("g.db").display()),
        ],
        None,
    );
    assert!(!out.status.success());
    assert_eq!(common::leftovers(name, &dir), Vec::<String>::new());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pod bound to a node the lab does not have is refused before anything is made.
#[test]
fn sys_kubernetes_lab_refuses_a_pod_on_no_node() {
    require();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("r{}", std::process::id() % 100_000);
    let stderr = failed_up(
        &name,
        tmp.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lost, namespace: shop}\nspec: {nodeName: node-z}\n",
    );
    assert!(
        stderr.contains(
            "pod shop/lost: spec.nodeName \"node-z\" is not a node of the lab (valid: node-a, node-b)"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cleaning up"),
        "something was made: {stderr}"
    );
}

/// The API refuses a pod after the lab's Kubernetes started: everything goes, its processes
/// and files too.
#[test]
fn sys_kubernetes_lab_up_that_fails_cleans_up() {
    require();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("f{}", std::process::id() % 100_000);
    let stderr = failed_up(
        &name,
        tmp.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: odd, namespace: shop}\n\
         spec: {containers: [{name: c, image: i, ports: [{containerPort: eighty}]}]}\n",
    );
    assert!(stderr.contains("cleaning up"), "{stderr}");
    assert!(
        stderr.contains("pod shop/odd") || stderr.contains("Pod odd"),
        "{stderr}"
    );
}

/// On etcd: the API double and the controllers on the host's etcd, the nodes' plugin and
/// agents through the lab's proxy; kubectl's policy is enforced all the same.
#[test]
fn sys_kubernetes_lab_on_etcd() {
    require();
    let server = gingham_testkit::etcd::EtcdServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("e{}", std::process::id() % 100_000);
    let dir = tmp.path().join("lab").display().to_string();
    let file = tmp.path().join("lab.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: {name}}}\nspec: {SPEC}\n---\n{DOCS}"),
    )
    .unwrap();
    let _down = common::Down(dir.clone());
    let ds = format!("etcd:{}", server.endpoint());
    ok_in(
        &[
            "lab",
            "up",
            "-f",
            file.to_str().unwrap(),
            "--dir",
            &dir,
            "--datastore",
            &ds,
        ],
        None,
    );
    let kc = ok_in(&["lab", "kubeconfig", "--dir", &dir], None)
        .trim()
        .to_owned();
    let wait_try = |from: &str, to: &str| {
        common::wait_programmed(&dir);
        try_outcome(&dir, from, to, "TCP", 80)
    };
    assert_eq!(wait_try("other/intruder", "shop/web"), "connected");
    kubectl(&kc, &["apply", "-f", "-"], Some(POLICY));
    wait_until("knp.default.web-from-clients in etcd", 5, || {
        let out = common::gingham_in(
            &[
                "get",
                "networkpolicy",
                "-n",
                "shop",
                "knp.default.web-from-clients",
                "--datastore",
                &ds,
            ],
            None,
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    assert_eq!(wait_try("other/intruder", "shop/web"), "no-answer");
    assert_eq!(wait_try("shop/client", "shop/web"), "connected");
    ok_in(&["lab", "down", "--dir", &dir], None);
    assert_eq!(
        common::leftovers(&name, Path::new(&dir)),
        Vec::<String>::new()
    );
}

/// The example lab plays seed 001 through kubectl as its comment (and the README) tells it:
/// the DefaultDeny annotation isolates the namespace, access-nginx lets `access: "true"` in.
#[test]
fn sys_the_kubernetes_example_plays_seed_001() {
    require();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join("examples/lab/kubernetes.yaml")).unwrap();
    let docs = example
        .split_once("\n---\n")
        .map(|(_, rest)| rest)
        .expect("the Lab document first");
    let lab = lab_up("s", "{nodes: [node-a, node-b], kubernetes: true}", docs);
    let kc = ok_in(&["lab", "kubeconfig", "--dir", &lab.dir], None)
        .trim()
        .to_owned();
    assert_eq!(
        outcome(&lab, "test/no-access", "test/nginx", 80),
        "connected"
    );
    kubectl(
        &kc,
        &[
            "annotate",
            "namespace",
            "test",
            r#"net.beta.kubernetes.io/network-policy={"ingress":{"isolation":"DefaultDeny"}}"#,
        ],
        None,
    );
    wait_until("kns.test denies ingress", 5, || {
        let p = get(&lab, "profile", None, "kns.test")?;
        if p["spec"]["ingress"].to_string().contains("Deny") {
            Ok(())
        } else {
            Err(p.to_string())
        }
    });
    assert_eq!(outcome(&lab, "test/access", "test/nginx", 80), "no-answer");
    let policy = root.join("examples/lab/kubernetes-access-nginx.yaml");
    kubectl(&kc, &["apply", "-f", policy.to_str().unwrap()], None);
    wait_until("knp.default.access-nginx written", 5, || {
        get(
            &lab,
            "networkpolicy",
            Some("test"),
            "knp.default.access-nginx",
        )
    });
    assert_eq!(outcome(&lab, "test/access", "test/nginx", 80), "connected");
    assert_eq!(
        outcome(&lab, "test/no-access", "test/nginx", 80),
        "no-answer"
    );
    down_leaves_nothing(&lab);
}
