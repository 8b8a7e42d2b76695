//! The CNI plugin's Kubernetes path (`policy: {type: k8s}`) against the Kubernetes API double:
//! pods made with `kubectl`, the real `gingham` binary run inside a test-made node namespace as
//! a kubelet runs it. The API double listens on the node namespace's loopback (its socket is
//! made there), over an in-memory datastore; the plugin's own datastore is a SQLite file.
//! System tests: root, iproute2, kubectl.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use gingham_datastore::Datastore;
use gingham_kubeapi::{ApiServer, RunningApiServer};
use gingham_net::NetnsRef;
use gingham_testkit::netns::TestNetns;

/// A node namespace with the API double on its loopback, and the plugin's datastore.
struct Cluster {
    node: TestNetns,
    rt: tokio::runtime::Runtime,
    server: Option<RunningApiServer>,
    dir: tempfile::TempDir,
    ds: String,
    /// Fields added to the network configuration (`null` removes one).
    extra: serde_json::Value,
    /// What the API double keeps its objects in.
    backing: Arc<dyn Datastore>,
}

impl Cluster {
    fn new() -> Cluster {
        gingham_testkit::require_root();
        gingham_testkit::require_tool("kubectl");
        let dir = tempfile::tempdir().unwrap();
        let ds = format!("sqlite:{}", dir.path().join("g.db").display());
        common::ok_in(
            &["apply", "-f", "-", "--datastore", &ds],
            Some(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.89.0.0/24, blockSize: 26}\n",
            ),
        );
        let node = TestNetns::new("cnik");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn Datastore> = Arc::new(gingham_datastore::mem::MemStore::new());
        // `block_on` polls `start` on this thread, so the listening socket is made inside the
        // node's namespace, where the plugin runs.
        let backing = store.clone();
        let server = gingham_net::netns::in_netns_same_thread(&NetnsRef::Path(node.path()), || {
            rt.block_on(ApiServer::start(store, "127.0.0.1:0".parse().unwrap()))
        })
        .unwrap()
        .unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Cluster {
            node,
            rt,
            server: Some(server),
            dir,
            ds,
            extra: serde_json::json!({}),
            backing,
        }
    }

    /// Switches the plugin to the Kubernetes datastore, as Calico's KDD network configuration
    /// does (`datastore_type: kubernetes`, the API server from `kubernetes.kubeconfig`), with
    /// Calico's CRDs, the Kubernetes Node `node-a` and the IPPool in the API; returns the CLI's
    /// `--datastore` (usable inside the node).
    fn on_kdd(&mut self) -> String {
        let crds = common::ok_in(&["manifests", "crds"], None);
        let file = self.dir.path().join("crds.yaml");
        std::fs::write(&file, crds).unwrap();
        self.kubectl("apply", &file);
        self.kubectl_create("apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n");
        let ds = format!("kubernetes:{}", self.kubeconfig().display());
        let pool = self.dir.path().join("pool.yaml");
        std::fs::write(
            &pool,
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.89.0.0/24, blockSize: 26}\n",
        )
        .unwrap();
        self.node.exec_ok(&[
            env!("CARGO_BIN_EXE_gingham"),
            "apply",
            "-f",
            &pool.display().to_string(),
            "--datastore",
            &ds,
        ]);
        self.extra = serde_json::json!({"datastore": null, "datastore_type": "kubernetes"});
        ds
    }

    /// `kubectl VERB -f FILE`, inside the node; its output.
    fn kubectl(&self, verb: &str, file: &Path) -> String {
        self.node.exec_ok(&[
            "kubectl",
            "--kubeconfig",
            &self.kubeconfig().display().to_string(),
            verb,
            "-f",
            &file.display().to_string(),
        ])
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// `kubectl create -f` of `yaml`, inside the node.
    fn kubectl_create(&self, yaml: &str) {
        let file = self.dir.path().join("obj.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.kubectl("create", &file);
    }

    fn stop_api(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }

    fn conf(&self) -> String {
        let mut conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "gingham",
            "nodename": "node-a",
            "datastore": self.ds,
            "ipam": {"type": "calico-ipam"},
            "policy": {"type": "k8s"},
            "kubernetes": {"kubeconfig": self.kubeconfig()},
        });
        for (k, v) in self.extra.as_object().unwrap() {
            if v.is_null() {
                conf.as_object_mut().unwrap().remove(k);
            } else {
                conf[k] = v.clone();
            }
        }
        conf.to_string()
    }

    /// Runs the plugin in the node as a kubelet would, for pod `ns/pod` in `netns` (container
    /// `c-<pod>`).
    fn cni(&self, command: &str, ns: &str, pod: &str, netns: &Path) -> Output {
        self.cni_as(command, ns, pod, &format!("c-{pod}"), netns)
    }

    /// [`Cluster::cni`] for the pod's sandbox `container`.
    fn cni_as(&self, command: &str, ns: &str, pod: &str, container: &str, netns: &Path) -> Output {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.node.name(),
                env!("CARGO_BIN_EXE_gingham"),
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(self.conf().as_bytes());
        child.wait_with_output().unwrap()
    }

    fn cni_ok(&self, command: &str, ns: &str, pod: &str, netns: &Path) -> serde_json::Value {
        self.cni_ok_as(command, ns, pod, &format!("c-{pod}"), netns)
    }

    fn cni_ok_as(
        &self,
        command: &str,
        ns: &str,
        pod: &str,
        container: &str,
        netns: &Path,
    ) -> serde_json::Value {
        let out = self.cni_as(command, ns, pod, container, netns);
        assert!(
            out.status.success(),
            "CNI {command} of {ns}/{pod}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn endpoint(&self, ns: &str, pod: &str) -> Option<serde_json::Value> {
        let out = common::ok_in(
            &[
                "get",
                "wep",
                "-n",
                ns,
                "-o",
                "json",
                "--datastore",
                &self.ds,
            ],
            None,
        );
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["spec"]["pod"] == pod)
            .cloned()
    }

    /// Every IPAM key in the plugin's datastore (blocks, handles, affinities).
    fn ipam_keys(&self) -> Vec<String> {
        let path = self.ds.trim_start_matches("sqlite:");
        let store = gingham_datastore_sqlite::SqliteStore::open(Path::new(path)).unwrap();
        store
            .list("/calico/ipam/")
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_api();
    }
}

const SHOP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

#[test]
fn sys_k8s_pod_labels_service_account_and_named_ports_reach_the_endpoint() {
    let mut c = Cluster::new();
    c.kubectl_create(SHOP);
    c.kubectl_create(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web, tier: front}
spec:
  nodeName: node-a
  serviceAccountName: frontend
  containers:
  - name: web
    image: busybox
    ports:
    - {name: http, containerPort: 8080}
    - {name: metrics, containerPort: 9090, protocol: TCP}
    - {containerPort: 7000}
---
apiVersion: v1
kind: Pod
metadata:
  name: fixed
  namespace: shop
  annotations:
    cni.projectcalico.org/ipAddrs: '["10.89.0.77"]'
spec:
  nodeName: node-a
  containers: [{name: c, image: busybox}]
"#,
    );
    let web = TestNetns::new("cnikp");
    let result = c.cni_ok("ADD", "shop", "web-0", &web.path());
    assert!(
        result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.89.0."),
        "{result}"
    );
    let wep = c.endpoint("shop", "web-0").expect("web-0's endpoint");
    let labels = &wep["metadata"]["labels"];
    assert_eq!(labels["app"], "web", "{wep}");
    assert_eq!(labels["tier"], "front");
    assert_eq!(labels["projectcalico.org/namespace"], "shop");
    assert_eq!(labels["projectcalico.org/orchestrator"], "k8s");
    assert_eq!(labels["projectcalico.org/serviceaccount"], "frontend");
    assert_eq!(
        wep["spec"]["profiles"],
        serde_json::json!(["kns.shop", "ksa.shop.frontend"])
    );
    assert_eq!(wep["spec"]["serviceAccountName"], "frontend");
    let ports: Vec<(String, u64)> = wep["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![("http".to_owned(), 8080), ("metrics".to_owned(), 9090)],
        "{wep}"
    );

    // The ipAddrs annotation: that address, from IPAM.
    let fixed = TestNetns::new("cnikp");
    let result = c.cni_ok("ADD", "shop", "fixed", &fixed.path());
    assert_eq!(result["ips"][0]["address"], "10.89.0.77/32", "{result}");
    let wep = c.endpoint("shop", "fixed").unwrap();
    assert_eq!(
        wep["spec"]["ipNetworks"],
        serde_json::json!(["10.89.0.77/32"])
    );
    assert_eq!(
        wep["spec"]["profiles"],
        serde_json::json!(["kns.shop", "ksa.shop.default"])
    );

    // DEL never needs the API server.
    c.stop_api();
    c.cni_ok("DEL", "shop", "web-0", &web.path());
    c.cni_ok("DEL", "shop", "fixed", &fixed.path());
    assert!(c.endpoint("shop", "web-0").is_none());
    assert!(c.endpoint("shop", "fixed").is_none());
    let handles: Vec<String> = c
        .ipam_keys()
        .into_iter()
        .filter(|k| k.contains("/handle/"))
        .collect();
    assert!(handles.is_empty(), "{handles:?}");
}

#[test]
fn sys_k8s_add_with_the_api_server_down_allocates_and_writes_nothing() {
    let mut c = Cluster::new();
    c.kubectl_create(SHOP);
    c.kubectl_create(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop}\nspec: {nodeName: node-a, containers: [{name: c, image: busybox}]}\n",
    );
    c.stop_api();
    let pod = TestNetns::new("cnikp");
    let out = c.cni("ADD", "shop", "web-1", &pod.path());
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 103, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("cannot read namespace shop from the Kubernetes API server")
            && msg.contains("nothing was allocated"),
        "{msg}"
    );
    assert_eq!(c.ipam_keys(), Vec::<String>::new(), "nothing allocated");
    assert!(c.endpoint("shop", "web-1").is_none(), "no endpoint written");
    let links = c.node.exec_ok(&["ip", "-o", "link"]);
    assert!(!links.contains("cali"), "no veth: {links}");
    // DEL works without it.
    c.cni_ok("DEL", "shop", "web-1", &pod.path());
}

#[test]
fn sys_k8s_a_pod_the_api_does_not_know_fails_add_before_allocating() {
    let c = Cluster::new();
    let pod = TestNetns::new("cnikp");
    let out = c.cni("ADD", "default", "ghost", &pod.path());
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 103, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("pod default/ghost is not in the Kubernetes API"),
        "{err}"
    );
    assert_eq!(c.ipam_keys(), Vec::<String>::new());
}

#[test]
fn sys_k8s_a_new_sandbox_keeps_its_ip_addrs_and_the_old_sandboxs_del_leaves_it_alone() {
    let c = Cluster::new();
    c.kubectl_create(SHOP);
    c.kubectl_create(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: fixed
  namespace: shop
  annotations:
    cni.projectcalico.org/ipAddrs: '["10.89.0.77"]'
spec:
  nodeName: node-a
  containers: [{name: c, image: busybox}]
"#,
    );
    let first = TestNetns::new("cnikp");
    let r = c.cni_ok_as("ADD", "shop", "fixed", "sandbox-1", &first.path());
    assert_eq!(r["ips"][0]["address"], "10.89.0.77/32", "{r}");
    // The pod's sandbox is made again (the kubelet's DEL of the first comes later): the new
    // one gets the address the annotation asks for.
    let second = TestNetns::new("cnikp");
    let r = c.cni_ok_as("ADD", "shop", "fixed", "sandbox-2", &second.path());
    assert_eq!(r["ips"][0]["address"], "10.89.0.77/32", "{r}");
    let host_if = r["interfaces"][0]["name"].as_str().unwrap().to_owned();
    // The first sandbox's DEL: the running sandbox keeps its endpoint, veth and address.
    c.cni_ok_as("DEL", "shop", "fixed", "sandbox-1", &first.path());
    let wep = c
        .endpoint("shop", "fixed")
        .expect("the running sandbox's endpoint");
    assert_eq!(wep["spec"]["containerID"], "sandbox-2", "{wep}");
    let links = c.node.exec_ok(&["ip", "-o", "link"]);
    assert!(links.contains(&host_if), "{host_if} stays: {links}");
    let path = c.ds.trim_start_matches("sqlite:");
    let store = gingham_datastore_sqlite::SqliteStore::open(Path::new(path)).unwrap();
    let ipam = gingham_ipam::Ipam::new(&store);
    assert_eq!(
        ipam.ips_by_handle("k8s-pod-network.sandbox-2").unwrap(),
        vec!["10.89.0.77".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(
        ipam.ips_by_handle("k8s-pod-network.sandbox-1")
            .unwrap()
            .is_empty()
    );
    c.cni_ok_as("DEL", "shop", "fixed", "sandbox-2", &second.path());
    assert!(c.endpoint("shop", "fixed").is_none());
}

#[test]
fn sys_k8s_pool_floating_and_no_ipam_annotations_as_calico() {
    let mut c = Cluster::new();
    c.extra =
        serde_json::json!({"feature_control": {"ip_addrs_no_ipam": true, "floating_ips": true}});
    common::ok_in(
        &["apply", "-f", "-", "--datastore", &c.ds],
        Some(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: blue}\nspec: {cidr: 10.90.0.0/24, blockSize: 26}\n",
        ),
    );
    c.kubectl_create(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: blue
  annotations: {cni.projectcalico.org/ipv4pools: '["blue"]'}
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: blue
  annotations: {cni.projectcalico.org/floatingIPs: '["172.16.0.9"]'}
spec: {nodeName: node-a, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: given
  namespace: blue
  annotations: {cni.projectcalico.org/ipAddrsNoIpam: '["10.123.0.5"]'}
spec: {nodeName: node-a, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: two
  namespace: blue
  annotations: {cni.projectcalico.org/ipAddrs: '["10.90.0.5", "10.90.0.6"]'}
spec: {nodeName: node-a, containers: [{name: c, image: busybox}]}
"#,
    );
    // The namespace's pool, and the floating IP NATed to the pod's address.
    let a = TestNetns::new("cnikp");
    let r = c.cni_ok("ADD", "blue", "a", &a.path());
    let ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_owned();
    assert!(ip.starts_with("10.90.0."), "the namespace's pool: {r}");
    let wep = c.endpoint("blue", "a").unwrap();
    assert_eq!(
        wep["spec"]["ipNATs"],
        serde_json::json!([{"internalIP": ip, "externalIP": "172.16.0.9"}]),
        "{wep}"
    );
    // ipAddrsNoIpam: the address as given, IPAM untouched; ADD again returns it.
    let given = TestNetns::new("cnikp");
    let before = c.ipam_keys();
    for _ in 0..2 {
        let r = c.cni_ok("ADD", "blue", "given", &given.path());
        assert_eq!(r["ips"][0]["address"], "10.123.0.5/32", "{r}");
    }
    assert_eq!(c.ipam_keys(), before, "IPAM untouched");
    // Two IPv4 addresses in ipAddrs: Calico's refusal, before anything is allocated.
    let two = TestNetns::new("cnikp");
    let out = c.cni("ADD", "blue", "two", &two.path());
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("cannot have more than one IPv4 address for \"cni.projectcalico.org/ipAddrs\" annotation"),
        "{err}"
    );
    assert_eq!(c.ipam_keys(), before, "nothing allocated");
    assert!(c.endpoint("blue", "two").is_none());
    for (pod, ns) in [("a", &a), ("given", &given)] {
        c.cni_ok("DEL", "blue", pod, &ns.path());
    }
    // Without the features enabled, the annotations are refused as Calico refuses them.
    c.extra = serde_json::json!({});
    let out = c.cni("ADD", "blue", "given", &given.path());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("requested feature is not enabled: ip_addrs_no_ipam"),
        "{err}"
    );
}

/// The Kubernetes datastore (Calico's `datastore_type: kubernetes`): ADD allocates from IPAM's
/// CRDs and writes the endpoint as Calico's plugin does, into the pod's annotations (`podIP`,
/// `podIPs`, `containerID`), where `gingham get wep` finds it with the pod's labels; DEL
/// empties the address annotations and releases the handle; with the API server down, ADD
/// fails naming it, and nothing is plumbed.
#[test]
fn sys_kdd_add_writes_the_pods_annotations_del_clears_them_and_api_down_fails_add() {
    let mut c = Cluster::new();
    let ds = c.on_kdd();
    c.kubectl_create(SHOP);
    c.kubectl_create(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\nspec: {nodeName: node-a, containers: [{name: c, image: busybox}]}\n",
    );
    let web = TestNetns::new("cnikp");
    let result = c.cni_ok("ADD", "shop", "web-0", &web.path());
    let address = result["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("10.89.0."), "{result}");
    let pod = |name: &str| -> serde_json::Value {
        let out = c.node.exec_ok(&[
            "kubectl",
            "--kubeconfig",
            &c.kubeconfig().display().to_string(),
            "get",
            "pod",
            "-n",
            "shop",
            name,
            "-o",
            "json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let annotations = pod("web-0")["metadata"]["annotations"].clone();
    assert_eq!(annotations["cni.projectcalico.org/podIP"], address.as_str());
    assert_eq!(
        annotations["cni.projectcalico.org/podIPs"],
        address.as_str()
    );
    assert_eq!(annotations["cni.projectcalico.org/containerID"], "c-web-0");
    let cli = |args: &[&str]| -> String {
        let mut full = vec![env!("CARGO_BIN_EXE_gingham")];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--datastore", &ds]);
        c.node.exec_ok(&full)
    };
    let weps: serde_json::Value =
        serde_json::from_str(&cli(&["get", "wep", "-n", "shop", "-o", "json"])).unwrap();
    let items = weps["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{weps}");
    assert_eq!(items[0]["metadata"]["name"], "node--a-k8s-web--0-eth0");
    assert_eq!(items[0]["metadata"]["labels"]["app"], "web");
    assert_eq!(items[0]["spec"]["ipNetworks"], serde_json::json!([address]));
    let check = cli(&["ipam", "check"]);
    assert!(check.contains(" 1 allocations"), "{check}");
    // The IPAM objects are Calico's CRDs in the API.
    let crd_keys = |plural: &str| -> Vec<String> {
        c.backing
            .list(&format!(
                "{}crd.projectcalico.org/{plural}/",
                gingham_kubeapi::REGISTRY_PREFIX
            ))
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    };
    assert_eq!(crd_keys("ipamhandles").len(), 1);
    assert_eq!(crd_keys("ipamblocks").len(), 1);

    c.cni_ok("DEL", "shop", "web-0", &web.path());
    let annotations = pod("web-0")["metadata"]["annotations"].clone();
    assert_eq!(annotations["cni.projectcalico.org/podIP"], "");
    assert_eq!(annotations["cni.projectcalico.org/podIPs"], "");
    let weps: serde_json::Value =
        serde_json::from_str(&cli(&["get", "wep", "-A", "-o", "json"])).unwrap();
    assert_eq!(weps["items"], serde_json::json!([]), "{weps}");
    assert_eq!(crd_keys("ipamhandles"), Vec::<String>::new());
    let check = cli(&["ipam", "check"]);
    assert!(check.contains(" 0 allocations"), "{check}");
    // A repeated DEL is fine.
    c.cni_ok("DEL", "shop", "web-0", &web.path());

    c.kubectl_create(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop}\nspec: {nodeName: node-a, containers: [{name: c, image: busybox}]}\n",
    );
    c.stop_api();
    let before = c.backing.list("/").unwrap().kvs;
    let late = TestNetns::new("cnikp");
    let out = c.cni("ADD", "shop", "web-1", &late.path());
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("cannot reach the Kubernetes API server")
            && msg.contains("nothing was allocated"),
        "{msg}"
    );
    assert_eq!(c.backing.list("/").unwrap().kvs, before, "nothing written");
    let links = c.node.exec_ok(&["ip", "-o", "link"]);
    assert!(!links.contains("cali"), "no veth: {links}");
}

/// The agent's `gingham_agent_datastore_revision` (the revision its dataplane reflects), read
/// from its /metrics on `port` inside `node`.
fn agent_revision(node: &TestNetns, port: u16) -> Option<i64> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // A socket keeps the namespace it was made in.
    let mut stream = gingham_net::netns::in_netns_same_thread(&NetnsRef::Path(node.path()), || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1))
    })
    .ok()?
    .ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("gingham_agent_datastore_revision "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// The agent on the Kubernetes datastore (`--datastore kubernetes:KUBECONFIG`, no controllers,
/// as Calico in KDD mode): a Kubernetes NetworkPolicy made with kubectl is programmed (its
/// `knp.default.` policy gets a chain in the node's table) once the agent's revision reaches the
/// policy's resourceVersion, and deleting it removes the chain.
#[test]
fn sys_kdd_agent_programs_a_kubernetes_network_policy() {
    gingham_testkit::require_tool("nft");
    let mut c = Cluster::new();
    let ds = c.on_kdd();
    c.kubectl_create(SHOP);
    c.kubectl_create(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\nspec: {nodeName: node-a, containers: [{name: c, image: busybox}]}\n",
    );
    let web = TestNetns::new("cnikp");
    c.cni_ok("ADD", "shop", "web-0", &web.path());
    let port = 19_099;
    let run_dir = c.dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut agent = Command::new("ip")
        .args([
            "netns",
            "exec",
            c.node.name(),
            env!("CARGO_BIN_EXE_gingham"),
        ])
        .args([
            "agent",
            "--node",
            "node-a",
            "--networking",
            "none",
            "--refresh-interval",
            "0",
        ])
        .args([
            "--health-port",
            &port.to_string(),
            "--datastore",
            &ds,
            "--run-dir",
        ])
        .arg(&run_dir)
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let agent = Kill(&mut agent);
    let kubectl = |args: &[&str]| {
        let kc = c.kubeconfig().display().to_string();
        let mut full = vec!["kubectl", "--kubeconfig", kc.as_str()];
        full.extend_from_slice(args);
        c.node.exec_ok(&full)
    };
    let wait_revision = |rv: i64| {
        common::wait_until("the agent's revision", 20, || {
            match agent_revision(&c.node, port) {
                Some(r) if r >= rv => Ok(()),
                other => Err(format!("at {other:?}, waiting for {rv}")),
            }
        })
    };
    // The policy's rules, wherever the renderer puts them (inlined in the pod's stage chain, or
    // in a policy chain): each rule's comment names the policy and the rule.
    let policy_rules = || -> usize {
        c.node
            .exec_ok(&["nft", "list", "table", "inet", "gingham"])
            .lines()
            .filter(|l| l.contains("shop/knp.default.web-in rule "))
            .count()
    };
    // Programmed what there is: the pod, allowed by its namespace's profile, no policy rule.
    let now: i64 = kubectl(&[
        "get",
        "pod",
        "-n",
        "shop",
        "web-0",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])
    .trim()
    .parse()
    .unwrap();
    wait_revision(now);
    assert_eq!(policy_rules(), 0);
    let file = c.dir.path().join("np.yaml");
    // From the web pods themselves: a selector that selects a pod (a rule whose selector
    // selects nothing can never match and is not rendered at all).
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-in, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n",
    )
    .unwrap();
    c.kubectl("create", &file);
    let rv: i64 = kubectl(&[
        "get",
        "networkpolicy",
        "-n",
        "shop",
        "web-in",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])
    .trim()
    .parse()
    .unwrap();
    wait_revision(rv);
    assert!(policy_rules() > 0, "the policy is programmed");
    kubectl(&["delete", "networkpolicy", "-n", "shop", "web-in"]);
    let after = c.backing.revision().unwrap();
    wait_revision(after);
    assert_eq!(policy_rules(), 0, "the policy's rules are gone");
    drop(agent);
}
