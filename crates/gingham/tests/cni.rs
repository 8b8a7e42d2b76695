//! The CNI plugin driven as a container runtime drives it: the real `gingham` binary run inside a
//! test-made node namespace, with the CNI environment and the network configuration on stdin.
//! System tests: root, iproute2, and etcd for the etcd variant.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use gingham_datastore::Datastore;
use gingham_testkit::netns::TestNetns;

/// The network between the test's nodes: one namespace every node has a veth into.
struct Underlay {
    ns: TestNetns,
}

impl Underlay {
    fn new() -> Underlay {
        Underlay {
            ns: TestNetns::new("cniu"),
        }
    }
}

/// A node: its own namespace with a default route into the underlay (proxy ARP answers only
/// when the host has a route to the gateway address). Node `i` is 192.168.(200+i).1/24 and
/// reaches the underlay at 192.168.(200+i).254.
struct Node {
    name: String,
    ns: TestNetns,
}

impl Node {
    fn new(underlay: &Underlay, name: &str, i: u8) -> Node {
        let ns = TestNetns::new("cnin");
        let net = 200 + u16::from(i);
        gingham_testkit::netns::wire_to_underlay(
            &ns,
            &underlay.ns,
            &format!("dn{i}"),
            &format!("192.168.{net}.1/24"),
            &format!("192.168.{net}.254/24"),
        );
        Node {
            name: name.to_owned(),
            ns,
        }
    }

    /// Runs the `gingham` CLI inside the node (where the datastore is reachable).
    fn cli(&self, args: &[&str]) -> Output {
        let mut full = vec![env!("CARGO_BIN_EXE_gingham")];
        full.extend_from_slice(args);
        self.ns.exec(&full)
    }
}

/// One CNI invocation.
struct Call<'a> {
    command: &'a str,
    container: &'a str,
    netns: PathBuf,
    args: String,
    conf: String,
}

fn plugin(node: &Node, call: &Call<'_>) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        node.ns.name(),
        env!("CARGO_BIN_EXE_gingham"),
    ]);
    run_cni(cmd, call, "/opt/cni/bin")
}

/// Runs a CNI plugin command as a runtime does: the environment, the configuration on stdin.
fn run_cni(cmd: Command, call: &Call<'_>, cni_path: &str) -> Output {
    run_cni_with(cmd, call, cni_path, &[])
}

/// [`run_cni`] with environment variables changed (`None` removes one).
fn run_cni_with(
    cmd: Command,
    call: &Call<'_>,
    cni_path: &str,
    env: &[(&str, Option<&str>)],
) -> Output {
    spawn_cni(cmd, call, cni_path, env)
        .wait_with_output()
        .unwrap()
}

/// Starts a CNI plugin command with the configuration written to its stdin (then closed).
fn spawn_cni(
    mut cmd: Command,
    call: &Call<'_>,
    cni_path: &str,
    env: &[(&str, Option<&str>)],
) -> std::process::Child {
    use std::io::Write;
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .env("CNI_ARGS", &call.args);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the plugin");
    // A plugin killed early may not read its stdin; that is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(call.conf.as_bytes());
    child
}

/// [`plugin`] with environment variables changed.
fn plugin_with(node: &Node, call: &Call<'_>, env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        node.ns.name(),
        env!("CARGO_BIN_EXE_gingham"),
    ]);
    run_cni_with(cmd, call, "/opt/cni/bin", env)
}

fn conf(datastore: &str, node: &str, version: &str) -> String {
    serde_json::json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "gingham",
        "nodename": node,
        "datastore": datastore,
        "mtu": 1400,
        "ipam": {"type": "gingham-ipam"},
    })
    .to_string()
}

fn k8s_args(ns: &str, pod: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=x"
    )
}

fn apply(datastore: &str, yaml: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["apply", "-f", "-", "--datastore", datastore])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pool(datastore: &str, cidr: &str, block: u8) {
    apply(
        datastore,
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool-{}}}\nspec: {{cidr: {cidr}, blockSize: {block}}}\n",
            cidr.replace(['.', '/'], "-")
        ),
    );
}

fn sqlite_store(path: &std::path::Path) -> gingham_datastore_sqlite::SqliteStore {
    gingham_datastore_sqlite::SqliteStore::open(path).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

#[test]
fn sys_add_check_del_plumb_store_and_clean_up() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let ds = format!("sqlite:{}", db.display());
    pool(&ds, "10.88.0.0/24", 26);
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-a", 1);
    let pod = TestNetns::new("cnip");
    let call = |command| Call {
        command,
        container: "c0ffee",
        netns: pod.path(),
        args: k8s_args("shop", "web-0"),
        conf: conf(&ds, &node.name, "1.0.0"),
    };

    let out = plugin(&node, &call("ADD"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let result = json(&out);
    assert_eq!(result["cniVersion"], "1.0.0");
    let ip: IpAddr = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .parse()
        .unwrap();
    assert!(ip.to_string().starts_with("10.88.0."), "{ip}");
    let host_if = result["interfaces"][0]["name"].as_str().unwrap().to_owned();
    // Calico's name: cali + 11 hex of sha1("shop.web-0").
    assert_eq!(host_if, gingham_net::host_ifname("cali", "shop", "web-0"));
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        pod.path().display().to_string()
    );

    // Pod side: the /32, the fictitious gateway, the MTU.
    let addr = pod.exec_ok(&["ip", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{ip}/32")), "{addr}");
    let routes = pod.exec_ok(&["ip", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(routes.contains("169.254.1.1 dev eth0"), "{routes}");
    assert!(
        pod.exec_ok(&["ip", "link", "show", "eth0"])
            .contains("mtu 1400")
    );
    // Host side: no address, proxy ARP, a /32 route and a permanent neighbour entry.
    let link = node.ns.exec_ok(&["ip", "-o", "addr", "show", &host_if]);
    assert!(
        !link.contains("inet "),
        "the host side has no IPv4 address: {link}"
    );
    let proxy = node.ns.exec_ok(&[
        "cat",
        &format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp"),
    ]);
    assert_eq!(proxy.trim(), "1");
    let hroutes = node.ns.exec_ok(&["ip", "route"]);
    assert!(
        hroutes.contains(&format!("{ip} dev {host_if}")),
        "{hroutes}"
    );
    let neigh = node.ns.exec_ok(&["ip", "neigh", "show", "dev", &host_if]);
    assert!(neigh.contains("PERMANENT"), "{neigh}");
    // The pod resolves its gateway through proxy ARP.
    pod.exec(&["ping", "-c", "1", "-W", "1", "169.254.1.1"]);
    let pn = pod.exec_ok(&["ip", "neigh", "show", "169.254.1.1"]);
    assert!(pn.contains("ee:ee:ee:ee:ee:ee"), "proxy ARP answered: {pn}");

    // Stored: the WorkloadEndpoint and the allocation.
    let wep = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["get", "wep", "-n", "shop", "-o", "json", "--datastore", &ds])
        .output()
        .unwrap();
    let wep: serde_json::Value = serde_json::from_slice(&wep.stdout).unwrap();
    let item = &wep["items"][0];
    assert_eq!(item["metadata"]["name"], "node--a-k8s-web--0-eth0");
    assert_eq!(item["spec"]["interfaceName"], host_if.as_str());
    assert_eq!(item["spec"]["ipNetworks"][0], format!("{ip}/32"));
    assert_eq!(
        item["metadata"]["labels"]["projectcalico.org/namespace"],
        "shop"
    );
    let store = sqlite_store(&db);
    let ipam = gingham_ipam::Ipam::new(&store);
    assert_eq!(
        ipam.ips_by_handle("k8s-pod-network.c0ffee").unwrap(),
        vec![ip]
    );

    let out = plugin(&node, &call("CHECK"));
    assert!(
        out.status.success(),
        "CHECK: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // DEL, twice: everything is gone and the second is a no-op.
    for _ in 0..2 {
        let out = plugin(&node, &call("DEL"));
        assert!(
            out.status.success(),
            "DEL: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(
        ipam.ips_by_handle("k8s-pod-network.c0ffee")
            .unwrap()
            .is_empty()
    );
    let links = node.ns.exec_ok(&["ip", "-o", "link"]);
    assert!(!links.contains(&host_if), "{links}");
    let listing = store
        .list("/calico/resources/v3/projectcalico.org/workloadendpoints/")
        .unwrap();
    assert!(listing.kvs.is_empty());
    // CHECK after DEL reports it.
    let out = plugin(&node, &call("CHECK"));
    assert!(!out.status.success());
}

#[test]
fn sys_requested_ip_old_config_versions_and_del_without_netns() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    pool(&ds, "10.89.0.0/24", 26);
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-b", 2);
    let pod = TestNetns::new("cnip");
    let pod_path = pod.path();
    let call = |command, version: &str| Call {
        command,
        container: "beef01",
        netns: pod_path.clone(),
        args: "IgnoreUnknown=1;IP=10.89.0.77".into(),
        conf: conf(&ds, &node.name, version),
    };
    let out = plugin(&node, &call("ADD", "0.3.1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = json(&out);
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0]["address"], "10.89.0.77/32");
    assert_eq!(
        r["ips"][0]["version"], "4",
        "0.3.x results carry the version"
    );
    // The same address again is refused with the IPAM code.
    let other = TestNetns::new("cnip");
    let again = Call {
        container: "beef02",
        netns: other.path(),
        ..call("ADD", "0.4.0")
    };
    let out = plugin(&node, &again);
    assert!(!out.status.success());
    assert_eq!(
        json(&out)["code"],
        100,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The namespace disappears before DEL (the runtime already removed it): DEL still works.
    drop(pod);
    let gone = Call {
        netns: PathBuf::from("/run/netns/does-not-exist"),
        ..call("DEL", "0.4.0")
    };
    let out = plugin(&node, &gone);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // VERSION.
    let out = plugin(&node, &call("VERSION", "1.0.0"));
    let v = json(&out);
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "1.0.0")
    );
}

#[test]
fn sys_pool_exhaustion_is_a_clear_cni_error() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    pool(&ds, "10.90.0.0/30", 30);
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-c", 3);
    let pods: Vec<TestNetns> = (0..5).map(|_| TestNetns::new("cnip")).collect();
    let mut codes = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let c = Call {
            command: "ADD",
            container: &format!("full{i}"),
            netns: pod.path(),
            args: k8s_args("default", &format!("p{i}")),
            conf: conf(&ds, &node.name, "1.0.0"),
        };
        let out = plugin(&node, &c);
        codes.push((out.status.success(), json(&out)));
    }
    assert!(codes[..4].iter().all(|(ok, _)| *ok), "{codes:?}");
    let (ok, err) = &codes[4];
    assert!(!ok);
    assert_eq!(err["code"], 100, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("IPAM"), "{msg}");
}

/// The namespace of the pods [`fifty_at_once`] adds.
const LOAD_NAMESPACE: &str = "load";

/// Pods to be added: (pod name, node name).
type Placed<'a> = [(String, &'a str)];

/// 50 ADDs at once (one node, then two), then 50 DELs at once: distinct addresses, a clean
/// `gingham ipam check`, nothing left behind. The checks run inside a node, like the plugin.
/// `ds` is the CLI's `--datastore`; `net_conf(node)` the network configuration the plugin gets
/// on `node`; `before_adds(pods)` makes what must exist before the ADDs of `pods` (pod name,
/// node name) in [`LOAD_NAMESPACE`].
fn fifty_at_once(
    ds: &str,
    nodes: &[Node; 2],
    net_conf: &(dyn Fn(&str) -> String + Sync),
    before_adds: &dyn Fn(&Placed<'_>),
) {
    // The nodes exist (calico/node or `gingham lab` registers them), so their blocks are not leaks.
    let node_file = tempfile::NamedTempFile::new().unwrap();
    let yaml: String = nodes
        .iter()
        .map(|n| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {}}}\n---\n",
                n.name
            )
        })
        .collect();
    std::fs::write(node_file.path(), yaml).unwrap();
    let out = nodes[0].cli(&[
        "apply",
        "-f",
        node_file.path().to_str().unwrap(),
        "--datastore",
        ds,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for spread in [1usize, 2] {
        let pods: Vec<TestNetns> = (0..50).map(|_| TestNetns::new("cnic")).collect();
        let pod_name = |i: usize| format!("p{spread}-{i}");
        let placed: Vec<(String, &str)> = (0..pods.len())
            .map(|i| (pod_name(i), nodes[i % spread].name.as_str()))
            .collect();
        before_adds(&placed);
        let run_all = |command: &'static str| -> Vec<Output> {
            std::thread::scope(|sc| {
                let handles: Vec<_> = pods
                    .iter()
                    .enumerate()
                    .map(|(i, pod)| {
                        let node = &nodes[i % spread];
                        sc.spawn(move || {
                            let c = Call {
                                command,
                                container: &format!("par{spread}-{i}"),
                                netns: pod.path(),
                                args: k8s_args(LOAD_NAMESPACE, &pod_name(i)),
                                conf: net_conf(&node.name),
                            };
                            plugin(node, &c)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        let added = run_all("ADD");
        let mut ips = BTreeSet::new();
        for out in &added {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            ips.insert(json(out)["ips"][0]["address"].as_str().unwrap().to_owned());
        }
        assert_eq!(ips.len(), 50, "every ADD got its own address");
        let check = nodes[0].cli(&["ipam", "check", "--datastore", ds]);
        let text = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(
            check.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(text.contains(" 50 allocations"), "{text}");
        let weps = nodes[0].cli(&["get", "wep", "-A", "-o", "json", "--datastore", ds]);
        let v: serde_json::Value = serde_json::from_slice(&weps.stdout).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 50);
        for out in run_all("DEL") {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let check = nodes[1].cli(&["ipam", "check", "--datastore", ds]);
        let text = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(check.status.success(), "{text}");
        assert!(text.contains(" 0 allocations"), "{text}");
        let weps = nodes[1].cli(&["get", "wep", "-A", "-o", "json", "--datastore", ds]);
        let v: serde_json::Value = serde_json::from_slice(&weps.stdout).unwrap();
        assert!(v["items"].as_array().unwrap().is_empty());
    }
}

#[test]
fn sys_fifty_parallel_adds_on_sqlite() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    pool(&ds, "10.91.0.0/24", 28);
    let underlay = Underlay::new();
    let nodes = [
        Node::new(&underlay, "node-p", 4),
        Node::new(&underlay, "node-q", 5),
    ];
    fifty_at_once(&ds, &nodes, &|n| conf(&ds, n, "1.0.0"), &|_| {});
}

/// Creates IP pool `p` (`cidr`, /28 blocks) from inside `node`, where the datastore is reachable.
fn apply_pool_from(node: &Node, ds: &str, cidr: &str) {
    let pool_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        pool_file.path(),
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: {cidr}, blockSize: 28}}\n"
        ),
    )
    .unwrap();
    let out = node.cli(&[
        "apply",
        "-f",
        pool_file.path().to_str().unwrap(),
        "--datastore",
        ds,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// etcd runs in the underlay, where the nodes reach it, as a cluster's etcd would.
#[test]
fn sys_fifty_parallel_adds_on_etcd() {
    gingham_testkit::require_root();
    let underlay = Underlay::new();
    let nodes = [
        Node::new(&underlay, "node-p", 6),
        Node::new(&underlay, "node-q", 7),
    ];
    let server = gingham_testkit::etcd::EtcdServer::start_in(underlay.ns.name(), "192.168.206.254");
    let ds = format!("etcd:{}", server.endpoint());
    // Pools are created from inside a node (the only place etcd is reachable from).
    apply_pool_from(&nodes[0], &ds, "10.92.0.0/24");
    fifty_at_once(&ds, &nodes, &|n| conf(&ds, n, "1.0.0"), &|_| {});
}

/// The Kubernetes datastore: the API double serves from the underlay (its listening socket is
/// made there), where both nodes reach it as they would a cluster's API server, over an
/// in-memory store. Calico's CRDs, the Kubernetes Nodes, the namespace and every pod (each
/// bound to the node that ADDs it) are made with kubectl inside a node; the plugin gets
/// Calico's network configuration for KDD (`datastore_type: kubernetes` and
/// `kubernetes.kubeconfig`), and the CLI `--datastore kubernetes:KUBECONFIG`.
#[test]
fn sys_fifty_parallel_adds_on_kubernetes() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("kubectl");
    let underlay = Underlay::new();
    let nodes = [
        Node::new(&underlay, "node-p", 8),
        Node::new(&underlay, "node-q", 9),
    ];
    let api = UnderlayApi::start(&underlay, "192.168.208.254");
    let kc = api.kubeconfig.display().to_string();
    let ds = format!("kubernetes:{kc}");
    let kubectl = |verb: &str, yaml: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        nodes[0].ns.exec_ok(&[
            "kubectl",
            "--kubeconfig",
            &kc,
            verb,
            "-f",
            file.path().to_str().unwrap(),
        ]);
    };
    let crds = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["manifests", "crds"])
        .output()
        .unwrap();
    assert!(crds.status.success());
    kubectl("apply", &String::from_utf8(crds.stdout).unwrap());
    let objects: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name}}))
        .chain([serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": LOAD_NAMESPACE}})])
        .collect();
    kubectl(
        "create",
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string(),
    );
    apply_pool_from(&nodes[0], &ds, "10.93.0.0/24");
    let net_conf = |node: &str| {
        let mut c: serde_json::Value = serde_json::from_str(&conf("", node, "1.0.0")).unwrap();
        let c = c.as_object_mut().unwrap();
        c.remove("datastore");
        c.insert("datastore_type".into(), "kubernetes".into());
        c.insert("kubernetes".into(), serde_json::json!({"kubeconfig": kc}));
        serde_json::Value::Object(c.clone()).to_string()
    };
    // The pods exist, each bound to its node, before their ADDs (a kubelet's order).
    let make_pods = |pods: &Placed<'_>| {
        let items: Vec<serde_json::Value> = pods
            .iter()
            .map(|(pod, node)| {
                serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": LOAD_NAMESPACE},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "none"}]}})
            })
            .collect();
        kubectl(
            "create",
            &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
        );
    };
    fifty_at_once(&ds, &nodes, &net_conf, &make_pods);
}

/// The Kubernetes API double listening on an address of the underlay, over an in-memory
/// store, with a kubeconfig for it.
struct UnderlayApi {
    rt: tokio::runtime::Runtime,
    server: Option<gingham_kubeapi::RunningApiServer>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl UnderlayApi {
    fn start(underlay: &Underlay, address: &str) -> UnderlayApi {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store: std::sync::Arc<dyn Datastore> =
            std::sync::Arc::new(gingham_datastore::mem::MemStore::new());
        let listen = format!("{address}:0").parse().unwrap();
        // `block_on` polls `start` on this thread, so the listening socket is made in the
        // underlay.
        let server = gingham_net::netns::in_netns_same_thread(
            &gingham_net::NetnsRef::Path(underlay.ns.path()),
            || rt.block_on(gingham_kubeapi::ApiServer::start(store, listen)),
        )
        .unwrap()
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        UnderlayApi {
            rt,
            server: Some(server),
            kubeconfig,
            _dir: dir,
        }
    }
}

impl Drop for UnderlayApi {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

/// Dual stack: with an IPv4 and an IPv6 pool a pod gets one address of each family, the IPv6
/// plumbing (/128, default route via the host side's link-local address, host /128 route), and
/// reaches its node over IPv6.
#[test]
fn sys_dual_stack() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    pool(&ds, "10.99.0.0/24", 28);
    apply(
        &ds,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: \"fd00:99::/112\", blockSize: 122}\n",
    );
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-6", 9);
    node.ns
        .exec_ok(&["ip", "addr", "add", "fd00:209::1/64", "dev", "up0", "nodad"]);
    underlay.ns.exec_ok(&[
        "ip",
        "addr",
        "add",
        "fd00:209::254/64",
        "dev",
        "dn9",
        "nodad",
    ]);
    node.ns.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:209::254",
    ]);
    let pod = TestNetns::new("cnip");
    let out = plugin(
        &node,
        &Call {
            command: "ADD",
            container: "dual01",
            netns: pod.path(),
            args: k8s_args("default", "dual"),
            conf: conf(&ds, &node.name, "1.0.0"),
        },
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = json(&out);
    let addrs: Vec<&str> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(
        addrs[0].starts_with("10.99.0.") && addrs[0].ends_with("/32"),
        "{addrs:?}"
    );
    assert!(
        addrs[1].starts_with("fd00:99::") && addrs[1].ends_with("/128"),
        "{addrs:?}"
    );
    let v6 = addrs[1].trim_end_matches("/128");
    let routes = pod.exec_ok(&["ip", "-6", "route"]);
    assert!(
        routes.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{routes}"
    );
    let host = node.ns.exec_ok(&["ip", "-6", "route"]);
    assert!(host.contains(&format!("{v6} dev cali")), "{host}");
    // The pod reaches its node over IPv6 (retry while duplicate address detection settles).
    let reached = (0..20).any(|_| {
        let ok = pod
            .exec(&["ping", "-6", "-c", "1", "-W", "1", "fd00:209::1"])
            .status
            .success();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        ok
    });
    assert!(reached, "no IPv6 path from the pod to its node");
}

/// `gingham ipam`: usage per pool and block, a leak found (the endpoint is gone but the address
/// is still allocated: a workload removed without CNI DEL), released by hand.
#[test]
fn sys_ipam_show_check_release() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    pool(&ds, "10.100.0.0/24", 28);
    apply(
        &ds,
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-l}\n",
    );
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-l", 10);
    let pod = TestNetns::new("cnip");
    let out = plugin(
        &node,
        &Call {
            command: "ADD",
            container: "leak01",
            netns: pod.path(),
            args: k8s_args("shop", "leaky"),
            conf: conf(&ds, &node.name, "1.0.0"),
        },
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ip = json(&out)["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_owned();
    let cli = |args: &[&str]| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--datastore", &ds]);
        Command::new(env!("CARGO_BIN_EXE_gingham"))
            .args(&full)
            .output()
            .unwrap()
    };
    let show = cli(&["ipam", "show", "--show-blocks"]);
    let text = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(text.contains("10.100.0.0/24"), "{text}");
    assert!(text.contains("block (host:node-l)"), "{text}");
    // The workload disappears without a CNI DEL.
    let del = cli(&[
        "delete",
        "workloadendpoint",
        "node--l-k8s-leaky-eth0",
        "-n",
        "shop",
    ]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    let check = cli(&["ipam", "check"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("leaked: {ip}")), "{text}");
    let rel = cli(&["ipam", "release", "--ip", &ip]);
    assert!(String::from_utf8_lossy(&rel.stdout).contains(&format!("released {ip}")));
    let check = cli(&["ipam", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Releasing it again says so.
    let rel = cli(&["ipam", "release", "--ip", &ip]);
    assert_eq!(rel.status.code(), Some(1));
}

/// `ipam: {type: host-local}` is delegated to the host-local plugin found in CNI_PATH, as
/// Calico's plugin does; and the binary called `gingham-ipam` is an IPAM plugin itself.
#[test]
fn sys_delegated_host_local_and_gingham_ipam() {
    gingham_testkit::require_root();
    assert!(
        std::path::Path::new("/usr/lib/cni/host-local").exists(),
        "needs /usr/lib/cni/host-local: apt-get install containernetworking-plugins"
    );
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-h", 11);
    let pod = TestNetns::new("cnip");
    let hl_dir = dir.path().join("host-local");
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "hl-net", "type": "gingham", "nodename": "node-h",
        "datastore": ds,
        "ipam": {"type": "host-local", "subnet": "10.101.0.0/24", "dataDir": hl_dir},
    })
    .to_string();
    let run = |command| {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            node.ns.name(),
            env!("CARGO_BIN_EXE_gingham"),
        ]);
        let call = Call {
            command,
            container: "hl01",
            netns: pod.path(),
            args: k8s_args("default", "hl"),
            conf: conf.clone(),
        };
        run_cni(cmd, &call, "/usr/lib/cni")
    };
    let out = run("ADD");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let addr = json(&out)["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(addr.starts_with("10.101.0."), "{addr}");
    let ip = addr.trim_end_matches("/32");
    assert!(
        hl_dir.join("hl-net").join(ip).exists(),
        "host-local recorded it"
    );
    let out = run("DEL");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !hl_dir.join("hl-net").join(ip).exists(),
        "host-local released it"
    );

    // gingham-ipam: the same binary under the IPAM plugin's name.
    pool(&ds, "10.102.0.0/24", 28);
    let link = dir.path().join("gingham-ipam");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gingham"), &link).unwrap();
    let ipam_conf = conf_for_ipam(&ds);
    let call_ipam = |command| {
        let call = Call {
            command,
            container: "ipam01",
            netns: PathBuf::from("/run/netns/unused"),
            args: String::new(),
            conf: ipam_conf.clone(),
        };
        run_cni(Command::new(&link), &call, dir.path().to_str().unwrap())
    };
    let out = call_ipam("ADD");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let addr = json(&out)["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(addr.starts_with("10.102.0."), "{addr}");
    let store = sqlite_store(&dir.path().join("g.db"));
    let ipam = gingham_ipam::Ipam::new(&store);
    assert_eq!(ipam.ips_by_handle("ipam-net.ipam01").unwrap().len(), 1);
    // ADD again: the same address, not a second one.
    let out = call_ipam("ADD");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["ips"][0]["address"], addr.as_str());
    assert_eq!(ipam.ips_by_handle("ipam-net.ipam01").unwrap().len(), 1);
    let out = call_ipam("DEL");
    assert!(out.status.success());
    assert!(ipam.ips_by_handle("ipam-net.ipam01").unwrap().is_empty());
}

fn conf_for_ipam(ds: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "ipam-net", "type": "ptp", "nodename": "node-i",
        "datastore": ds, "ipam": {"type": "gingham-ipam"},
    })
    .to_string()
}

/// The first address of an ADD result.
fn first_ip(out: &Output) -> IpAddr {
    json(out)["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn cli_on(ds: &str, args: &[&str]) -> Output {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--datastore", ds]);
    Command::new(env!("CARGO_BIN_EXE_gingham"))
        .env_remove("GINGHAM_DATASTORE")
        .args(&full)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Issue 11, item 1: a repeated ADD for a live container neither gets a second address nor,
/// when it fails, releases the address the container uses; the next container gets its own.
/// `ipam check` sees an endpoint whose address IPAM holds for someone else, and two endpoints
/// with one address; `ipam release` of an address in use needs --force.
#[test]
fn sys_repeated_add_keeps_the_live_address_and_check_sees_duplicates() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let ds = format!("sqlite:{}", db.display());
    pool(&ds, "10.103.0.0/24", 28);
    apply(
        &ds,
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-r}\n",
    );
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-r", 12);
    let p2 = TestNetns::new("cnip");
    let p3 = TestNetns::new("cnip");
    let call = |command, container, netns: PathBuf, pod: &str| Call {
        command,
        container,
        netns,
        args: k8s_args("shop", pod),
        conf: conf(&ds, &node.name, "1.0.0"),
    };
    let store = sqlite_store(&db);
    let ipam = gingham_ipam::Ipam::new(&store);
    let handle = "k8s-pod-network.c2";

    let out = plugin(&node, &call("ADD", "c2", p2.path(), "two"));
    assert!(out.status.success(), "{}", text(&out));
    let ip2 = first_ip(&out);
    let host_if = json(&out)["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();

    // ADD again, same container and interface: the same result, no second address.
    let out = plugin(&node, &call("ADD", "c2", p2.path(), "two"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        first_ip(&out),
        ip2,
        "a repeated ADD returns the existing address"
    );
    assert_eq!(ipam.ips_by_handle(handle).unwrap(), vec![ip2]);

    // Half the plumbing undone (as an ADD killed while plumbing leaves it): a repeated ADD
    // sets it up again with the same address (as Calico's plugin does), and it works.
    node.ns.exec_ok(&["ip", "link", "set", &host_if, "down"]);
    p2.exec_ok(&["ip", "addr", "flush", "dev", "eth0"]);
    let out = plugin(&node, &call("ADD", "c2", p2.path(), "two"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(first_ip(&out), ip2, "a repair keeps the address");
    assert_eq!(ipam.ips_by_handle(handle).unwrap(), vec![ip2]);
    let out = plugin(&node, &call("CHECK", "c2", p2.path(), "two"));
    assert!(out.status.success(), "plumbing repaired: {}", text(&out));
    let addr = p2.exec_ok(&["ip", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{ip2}/32")), "{addr}");

    // ADD again with a namespace that does not exist: CNI error 3, nothing released.
    let out = plugin(
        &node,
        &call(
            "ADD",
            "c2",
            PathBuf::from("/run/netns/does-not-exist"),
            "two",
        ),
    );
    assert!(!out.status.success());
    assert_eq!(json(&out)["code"], 3, "{}", text(&out));
    assert_eq!(ipam.ips_by_handle(handle).unwrap(), vec![ip2]);

    // A second interface whose plumbing fails (the "namespace" is a plain file): its failure
    // path releases only the address it allocated, not c2's.
    let not_a_netns = dir.path().join("not-a-netns");
    std::fs::write(&not_a_netns, "").unwrap();
    let out = plugin_with(
        &node,
        &call("ADD", "c2", not_a_netns.clone(), "two"),
        &[("CNI_IFNAME", Some("eth1"))],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(ipam.ips_by_handle(handle).unwrap(), vec![ip2]);

    // Another container gets another address; c2's host route still leads to c2.
    let out = plugin(&node, &call("ADD", "c3", p3.path(), "three"));
    assert!(out.status.success(), "{}", text(&out));
    let ip3 = first_ip(&out);
    assert_ne!(ip3, ip2, "the next container must not get c2's address");
    let routes = node.ns.exec_ok(&["ip", "route"]);
    assert!(routes.contains(&format!("{ip2} dev {host_if}")), "{routes}");
    let addr = p2.exec_ok(&["ip", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{ip2}/32")), "{addr}");
    let check = cli_on(&ds, &["ipam", "check"]);
    assert!(check.status.success(), "{}", text(&check));

    // The interfaces disappear (an interrupted DEL): ADD sets them up again, same address.
    node.ns.exec_ok(&["ip", "link", "del", &host_if]);
    let out = plugin(&node, &call("ADD", "c2", p2.path(), "two"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(first_ip(&out), ip2);
    assert_eq!(ipam.ips_by_handle(handle).unwrap(), vec![ip2]);
    let routes = node.ns.exec_ok(&["ip", "route"]);
    assert!(routes.contains(&format!("{ip2} dev {host_if}")), "{routes}");
    let out = plugin(&node, &call("CHECK", "c2", p2.path(), "two"));
    assert!(out.status.success(), "{}", text(&out));

    // `ipam release` of an address in use warns and needs --force.
    let rel = cli_on(&ds, &["ipam", "release", "--ip", &ip3.to_string()]);
    assert_eq!(rel.status.code(), Some(1), "{}", text(&rel));
    assert!(
        text(&rel).contains("in use by workload endpoint shop/node--r-k8s-three-eth0"),
        "{}",
        text(&rel)
    );
    assert!(text(&rel).contains("--force"), "{}", text(&rel));
    assert_eq!(ipam.ips_by_handle("k8s-pod-network.c3").unwrap(), vec![ip3]);

    // Constructed inconsistencies: an endpoint listing c3's address for another container,
    // then c2's address released by force while c2's endpoint still lists it.
    apply(
        &ds,
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node--r-k8s-four-eth0, namespace: shop}}\nspec: {{node: node-r, orchestrator: k8s, pod: four, endpoint: eth0, containerID: c4, interfaceName: cali4, ipNetworks: [\"{ip3}/32\"]}}\n"
        ),
    );
    let rel = cli_on(
        &ds,
        &["ipam", "release", "--ip", &ip2.to_string(), "--force"],
    );
    assert!(rel.status.success(), "{}", text(&rel));
    assert!(text(&rel).contains("warning"), "{}", text(&rel));
    let check = cli_on(&ds, &["ipam", "check"]);
    let report = text(&check);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "workload endpoint shop/node--r-k8s-four-eth0 lists {ip3}, but IPAM holds it for handle k8s-pod-network.c3"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "{ip3} is listed by 2 workload endpoints: shop/node--r-k8s-four-eth0, shop/node--r-k8s-three-eth0"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "workload endpoint shop/node--r-k8s-two-eth0 lists {ip2}, but IPAM has it free"
        )),
        "{report}"
    );
}

/// ADDs of one container started at once (a runtime retrying a call that still runs) end
/// with one address, one endpoint and a clean `ipam check`; so do DELs started at once.
#[test]
fn sys_concurrent_calls_for_one_container() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let ds = format!("sqlite:{}", db.display());
    pool(&ds, "10.105.0.0/24", 28);
    apply(
        &ds,
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-k}\n",
    );
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-k", 14);
    let pod = TestNetns::new("cnip");
    let call = |command| Call {
        command,
        container: "same01",
        netns: pod.path(),
        args: k8s_args("shop", "same"),
        conf: conf(&ds, &node.name, "1.0.0"),
    };
    let store = sqlite_store(&db);
    let ipam = gingham_ipam::Ipam::new(&store);
    for round in 0..3 {
        let outs: Vec<Output> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..6)
                .map(|_| sc.spawn(|| plugin(&node, &call("ADD"))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let held = ipam.ips_by_handle("k8s-pod-network.same01").unwrap();
        assert_eq!(held.len(), 1, "round {round}: {held:?}");
        for out in &outs {
            assert!(out.status.success(), "round {round}: {}", text(out));
            assert_eq!(first_ip(out), held[0], "round {round}");
        }
        let check = cli_on(&ds, &["ipam", "check"]);
        assert!(check.status.success(), "round {round}: {}", text(&check));
        let out = plugin(&node, &call("CHECK"));
        assert!(out.status.success(), "round {round}: {}", text(&out));
        let outs: Vec<Output> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..6)
                .map(|_| sc.spawn(|| plugin(&node, &call("DEL"))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for out in &outs {
            assert!(out.status.success(), "round {round}: {}", text(out));
        }
        let check = cli_on(&ds, &["ipam", "check"]);
        assert!(check.status.success(), "round {round}: {}", text(&check));
        assert!(text(&check).contains(" 0 allocations"), "{}", text(&check));
    }
}

/// Issue 11, item 2: names that cannot be used are refused before the datastore is touched
/// (a node name with `/` made ADD write without end); container IDs the CNI spec allows work
/// end to end, under a valid WorkloadEndpoint name.
#[test]
fn sys_names_checked_before_the_datastore_and_spec_container_ids_work() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let ds = format!("sqlite:{}", db.display());
    pool(&ds, "10.104.0.0/24", 28);
    apply(
        &ds,
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-n}\n",
    );
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-n", 13);
    let pod = TestNetns::new("cnip");
    let revision = || sqlite_store(&db).revision().unwrap();
    let before = revision();

    // (node name, container ID, interface, expected code)
    let bad: &[(&str, &str, &str, u32)] = &[
        ("a/b", "c1", "eth0", 7),
        ("Node-N", "c1", "eth0", 7),
        ("node_n", "c1", "eth0", 7),
        ("node-n", "-c1", "eth0", 4),
        ("node-n", "c/1", "eth0", 4),
        ("node-n", "c1", "Eth0", 4),
        ("node-n", "c1", "e/0", 4),
    ];
    for (nodename, container, ifname, code) in bad {
        let c = Call {
            command: "ADD",
            container,
            netns: pod.path(),
            args: String::new(),
            conf: conf(&ds, nodename, "1.0.0"),
        };
        let started = std::time::Instant::now();
        // Killed after 15 s: before the fix, `a/b` wrote without end.
        let mut cmd = Command::new("timeout");
        cmd.args([
            "-s",
            "KILL",
            "15",
            "ip",
            "netns",
            "exec",
            node.ns.name(),
            env!("CARGO_BIN_EXE_gingham"),
        ]);
        let out = run_cni_with(cmd, &c, "/opt/cni/bin", &[("CNI_IFNAME", Some(ifname))]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{nodename}: took {:?}",
            started.elapsed()
        );
        assert!(!out.status.success());
        assert_eq!(
            json(&out)["code"],
            *code,
            "{nodename} {container} {ifname}: {}",
            text(&out)
        );
        assert_eq!(
            revision(),
            before,
            "{nodename} {container} {ifname}: nothing written"
        );
    }
    // No CNI_IFNAME at all: the spec requires it.
    let c = Call {
        command: "ADD",
        container: "c1",
        netns: pod.path(),
        args: String::new(),
        conf: conf(&ds, "node-n", "1.0.0"),
    };
    let out = plugin_with(&node, &c, &[("CNI_IFNAME", None)]);
    assert_eq!(json(&out)["code"], 4, "{}", text(&out));
    assert!(json(&out)["msg"].as_str().unwrap().contains("CNI_IFNAME"));
    assert_eq!(revision(), before);

    // Spec-valid container IDs that a Calico name cannot hold as they are.
    let pods: Vec<TestNetns> = (0..3).map(|_| TestNetns::new("cnip")).collect();
    let ids = ["ctrA", "ctr_x", "ctr.y"];
    let mut ips = BTreeSet::new();
    for (id, pod) in ids.iter().zip(&pods) {
        let c = Call {
            command: "ADD",
            container: id,
            netns: pod.path(),
            args: String::new(),
            conf: conf(&ds, "node-n", "1.0.0"),
        };
        let out = plugin(&node, &c);
        assert!(out.status.success(), "{id}: {}", text(&out));
        ips.insert(first_ip(&out));
        let out = plugin(
            &node,
            &Call {
                command: "CHECK",
                ..c
            },
        );
        assert!(out.status.success(), "CHECK {id}: {}", text(&out));
    }
    assert_eq!(ips.len(), 3);
    let weps = cli_on(&ds, &["get", "wep", "-n", "default", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&weps.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{v}");
    let mut recorded = BTreeSet::new();
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("node--n-cni-"), "{name}");
        assert_eq!(name, name.to_lowercase(), "a valid resource name: {name}");
        recorded.insert(
            item["metadata"]["annotations"]["cni.projectcalico.org/containerID"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(recorded, ids.iter().map(|s| s.to_string()).collect());
    let check = cli_on(&ds, &["ipam", "check"]);
    assert!(check.status.success(), "{}", text(&check));
    for (id, pod) in ids.iter().zip(&pods) {
        let c = Call {
            command: "DEL",
            container: id,
            netns: pod.path(),
            args: String::new(),
            conf: conf(&ds, "node-n", "1.0.0"),
        };
        let out = plugin(&node, &c);
        assert!(out.status.success(), "DEL {id}: {}", text(&out));
    }
    let check = cli_on(&ds, &["ipam", "check"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains(" 0 allocations"), "{}", text(&check));
}

// ===== Reliability: random ADD/DEL with faults, on SQLite and on etcd =====

/// A small deterministic random generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed: `GINGHAM_TEST_SEED` if set, else a fixed one; printed either way.
fn reliability_seed(default: u64) -> u64 {
    let seed = std::env::var("GINGHAM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("reliability seed = {seed} (replay with GINGHAM_TEST_SEED={seed})");
    seed
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// CNI_NETNS names a namespace that does not exist.
    MissingNetns,
    /// The plugin is killed with SIGKILL this many milliseconds after it starts.
    Kill(u64),
    /// The datastore fails during the call: SQLite read-only for the call, or etcd stopped
    /// this many milliseconds after the plugin starts (and started again afterwards).
    Datastore(u64),
}

#[derive(Clone, Copy, Debug)]
struct Step {
    container: usize,
    add: bool,
    fault: Fault,
}

/// What the test knows about a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Gone,
    Live(IpAddr),
    /// After a failed or interrupted call: anything but a state that breaks the invariants.
    Unknown,
}

enum Backend {
    Sqlite,
    Etcd(Box<std::sync::Mutex<gingham_testkit::etcd::EtcdServer>>),
}

const NODES: usize = 3;
const WORKERS_PER_NODE: usize = 2;
const CONTAINERS_PER_WORKER: usize = 4;
const OPERATIONS: usize = 200;

/// Waits for a plugin run, failing the test if it hangs.
fn finish(mut child: std::process::Child, what: &str) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: the plugin still runs after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Freezes (`STOP`) or thaws (`CONT`) the test's etcd: the only process in the underlay
/// namespace, which the test started.
fn signal_etcd(underlay: &TestNetns, signal: &str) {
    let pids = Command::new("ip")
        .args(["netns", "pids", underlay.name()])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    assert!(!pids.trim().is_empty(), "no etcd in the underlay");
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), pid])
            .status();
    }
}

fn node_plugin_cmd(node: &Node) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        node.ns.name(),
        env!("CARGO_BIN_EXE_gingham"),
    ]);
    cmd
}

/// The plugin unable to write any regular file (file size limit 0, SIGXFSZ ignored so a write
/// fails with EFBIG instead of killing it): it opens and reads the SQLite datastore, and its
/// first write fails in the middle of the call.
fn no_write_plugin_cmd(node: &Node) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 0 && exec ip netns exec \"$1\" \"$2\"")
        .arg("sh")
        .arg(node.ns.name())
        .arg(env!("CARGO_BIN_EXE_gingham"));
    cmd
}

/// 200 ADD/DEL operations with random repeats over 3 nodes with 2 concurrent workers each,
/// with faults injected (missing netns, datastore failing mid-call, plugin killed). After it:
/// no address is held by two containers, every live container's address is its own (its
/// endpoint, its handle, its host route and its interface), and after DEL of everything
/// `ipam check` is clean with nothing allocated.
fn reliability(backend: Backend, underlay: &Underlay, nodes: &[Node], ds: &str, seed: u64) {
    let started = std::time::Instant::now();
    let yaml: String = nodes
        .iter()
        .map(|n| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {}}}\n---\n",
                n.name
            )
        })
        .chain(std::iter::once(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: rel}\nspec: {cidr: 10.110.0.0/24, blockSize: 28}\n"
                .to_owned(),
        ))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let out = nodes[0].cli(&[
        "apply",
        "-f",
        file.path().to_str().unwrap(),
        "--datastore",
        ds,
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let workers = NODES * WORKERS_PER_NODE;
    let count = workers * CONTAINERS_PER_WORKER;
    let pods: Vec<TestNetns> = (0..count).map(|_| TestNetns::new("cnir")).collect();
    // Container c belongs to worker c / CONTAINERS_PER_WORKER, on node worker / 2.
    let node_of = |c: usize| &nodes[c / CONTAINERS_PER_WORKER / WORKERS_PER_NODE];
    let id_of = |c: usize| format!("rel{c}");
    let pod_of = |c: usize| format!("pod-{c}");
    let call_of = |c: usize, command: &'static str, netns: PathBuf| {
        (
            id_of(c),
            k8s_args("rel", &pod_of(c)),
            conf(ds, &node_of(c).name, "1.0.0"),
            command,
            netns,
        )
    };

    let mut rng = Rng(seed | 1);
    let mut plans: Vec<Vec<Step>> = vec![Vec::new(); workers];
    for i in 0..OPERATIONS {
        let w = i % workers;
        let container =
            w * CONTAINERS_PER_WORKER + rng.below(CONTAINERS_PER_WORKER as u64) as usize;
        let add = rng.below(100) < 60;
        let fault = match rng.below(100) {
            0..10 => Fault::MissingNetns,
            10..25 => Fault::Kill(rng.below(120)),
            25..31 => Fault::Datastore(rng.below(60)),
            _ => Fault::None,
        };
        plans[w].push(Step {
            container,
            add,
            fault,
        });
    }
    let known = std::sync::Mutex::new(vec![Known::Gone; count]);
    // Stopping etcd would fail the other workers' calls too; a call that stops it runs alone
    // (the others wait), so every fault touches only its own call.
    let gate = std::sync::RwLock::new(());
    // (fault kind, succeeded) -> count, and one message per failing kind, for the log.
    let outcomes: std::sync::Mutex<std::collections::BTreeMap<(String, bool), (usize, String)>> =
        Default::default();

    std::thread::scope(|sc| {
        for plan in &plans {
            let (known, pods, backend, outcomes, gate) =
                (&known, &pods, &backend, &outcomes, &gate);
            let underlay = &underlay.ns;
            sc.spawn(move || {
                for step in plan {
                    let c = step.container;
                    let node = node_of(c);
                    let command = if step.add { "ADD" } else { "DEL" };
                    let netns = match step.fault {
                        Fault::MissingNetns => PathBuf::from("/run/netns/gingham-test-gone"),
                        _ => pods[c].path(),
                    };
                    let (id, args, conf, command, netns) = call_of(c, command, netns);
                    let call = Call {
                        command,
                        container: &id,
                        netns,
                        args,
                        conf,
                    };
                    let before = known.lock().unwrap()[c];
                    if !step.add {
                        // While a DEL runs its address may be handed out again.
                        known.lock().unwrap()[c] = Known::Unknown;
                    }
                    let what = format!("{command} {id} ({:?})", step.fault);
                    let alone = matches!(
                        (step.fault, backend),
                        (Fault::Datastore(_), Backend::Etcd(_))
                    );
                    let (_shared, _alone) = if alone {
                        (None, Some(gate.write().unwrap()))
                    } else {
                        (Some(gate.read().unwrap()), None)
                    };
                    let out = match (step.fault, backend) {
                        (Fault::Kill(ms), _) => {
                            let mut child =
                                spawn_cni(node_plugin_cmd(node), &call, "/opt/cni/bin", &[]);
                            std::thread::sleep(std::time::Duration::from_millis(ms));
                            let _ = child.kill();
                            finish(child, &what)
                        }
                        (Fault::Datastore(_), Backend::Sqlite) => finish(
                            spawn_cni(no_write_plugin_cmd(node), &call, "/opt/cni/bin", &[]),
                            &what,
                        ),
                        // etcd stopped (odd delays) or frozen (even delays) mid-call.
                        (Fault::Datastore(ms), Backend::Etcd(server)) if ms % 2 == 1 => {
                            let mut server = server.lock().unwrap();
                            let child =
                                spawn_cni(node_plugin_cmd(node), &call, "/opt/cni/bin", &[]);
                            std::thread::sleep(std::time::Duration::from_millis(ms));
                            server.stop();
                            let out = finish(child, &what);
                            server.restart();
                            out
                        }
                        (Fault::Datastore(ms), Backend::Etcd(_)) => {
                            let child =
                                spawn_cni(node_plugin_cmd(node), &call, "/opt/cni/bin", &[]);
                            std::thread::sleep(std::time::Duration::from_millis(ms));
                            signal_etcd(underlay, "STOP");
                            let out = finish(child, &what);
                            signal_etcd(underlay, "CONT");
                            out
                        }
                        _ => finish(
                            spawn_cni(node_plugin_cmd(node), &call, "/opt/cni/bin", &[]),
                            &what,
                        ),
                    };
                    let ok = out.status.success();
                    {
                        let kind = format!("{command} {:?}", step.fault)
                            .split('(')
                            .next()
                            .unwrap()
                            .to_owned();
                        let mut o = outcomes.lock().unwrap();
                        let e = o.entry((kind, ok)).or_default();
                        e.0 += 1;
                        if !ok && e.1.is_empty() {
                            e.1 = String::from_utf8_lossy(&out.stdout)
                                .chars()
                                .take(300)
                                .collect();
                        }
                    }
                    let mut k = known.lock().unwrap();
                    k[c] = match (step.add, ok, before) {
                        (true, true, _) => {
                            let ip = first_ip(&out);
                            if let Known::Live(was) = before {
                                assert_eq!(
                                    ip, was,
                                    "{what}: a repeated ADD must return the same address"
                                );
                            }
                            for (other, state) in k.iter().enumerate() {
                                assert!(
                                    other == c || *state != Known::Live(ip),
                                    "{what}: got {ip}, which live container rel{other} holds"
                                );
                            }
                            Known::Live(ip)
                        }
                        // A failed ADD never takes a live container's address away.
                        (true, false, Known::Live(ip)) => Known::Live(ip),
                        (true, false, _) => Known::Unknown,
                        (false, true, _) => Known::Gone,
                        (false, false, _) => Known::Unknown,
                    };
                    // A fault touches only its own call: a clean call succeeds, whatever an
                    // earlier interrupted call left behind.
                    if matches!(step.fault, Fault::None) && !ok {
                        panic!("{what}: failed without a fault: {}", text(&out));
                    }
                }
            });
        }
    });
    let known = known.into_inner().unwrap();
    for ((kind, ok), (n, msg)) in outcomes.into_inner().unwrap() {
        eprintln!(
            "  {kind:<22} {:<9} {n:>3} {msg}",
            if ok { "succeeded" } else { "failed" }
        );
    }
    eprintln!(
        "after {OPERATIONS} operations ({:?}): {} live, {} unknown, {} gone",
        started.elapsed(),
        known.iter().filter(|k| matches!(k, Known::Live(_))).count(),
        known.iter().filter(|k| **k == Known::Unknown).count(),
        known.iter().filter(|k| **k == Known::Gone).count()
    );

    // Every live container's address is its own: its endpoint lists it, IPAM holds it for its
    // handle (ipam check compares them), its host route and its interface have it.
    let weps = nodes[0].cli(&["get", "wep", "-n", "rel", "-o", "json", "--datastore", ds]);
    assert!(weps.status.success(), "{}", text(&weps));
    let v: serde_json::Value = serde_json::from_slice(&weps.stdout).unwrap();
    let mut listed: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut holders: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for item in v["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap().to_owned();
        let nets: Vec<String> = item["spec"]["ipNetworks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        for n in &nets {
            holders.entry(n.clone()).or_default().push(name.clone());
        }
        listed.insert(name, nets);
    }
    for (net, names) in &holders {
        assert_eq!(names.len(), 1, "{net} is listed by {names:?}");
    }
    for (c, k) in known.iter().enumerate() {
        let Known::Live(ip) = k else { continue };
        let node = node_of(c);
        let wep = format!(
            "{}-k8s-{}-eth0",
            node.name.replace('-', "--"),
            pod_of(c).replace('-', "--")
        );
        assert_eq!(
            listed.get(&wep),
            Some(&vec![format!("{ip}/32")]),
            "rel{c}: its endpoint {wep}"
        );
        let host_if = gingham_net::host_ifname("cali", "rel", &pod_of(c));
        let routes = node.ns.exec_ok(&["ip", "route"]);
        assert!(
            routes.contains(&format!("{ip} dev {host_if}")),
            "rel{c}: host route to {ip} via {host_if}:\n{routes}"
        );
        let addr = pods[c].exec_ok(&["ip", "-o", "addr", "show", "eth0"]);
        assert!(addr.contains(&format!("{ip}/32")), "rel{c}: {addr}");
    }
    let check = nodes[0].cli(&["ipam", "check", "--datastore", ds]);
    let report = text(&check);
    assert!(
        !report
            .lines()
            .any(|l| l.starts_with("workload endpoint ") || l.contains(" is listed by ")),
        "endpoints and IPAM disagree:\n{report}"
    );
    for k in &known {
        if let Known::Live(ip) = k {
            assert!(
                !report.contains(&format!("leaked: {ip} ")),
                "a live address reported leaked:\n{report}"
            );
        }
    }

    // DEL of everything (a runtime retries a DEL that failed), then nothing is left.
    for (c, pod) in pods.iter().enumerate() {
        let (id, args, conf, command, netns) = call_of(c, "DEL", pod.path());
        let call = Call {
            command,
            container: &id,
            netns,
            args,
            conf,
        };
        let out = finish(
            spawn_cni(node_plugin_cmd(node_of(c)), &call, "/opt/cni/bin", &[]),
            "final DEL",
        );
        assert!(out.status.success(), "DEL {id}: {}", text(&out));
    }
    let check = nodes[0].cli(&["ipam", "check", "--datastore", ds]);
    let report = text(&check);
    assert!(
        check.status.success(),
        "ipam check after DEL of everything:\n{report}"
    );
    assert!(report.contains(" 0 allocations"), "{report}");
    let weps = nodes[0].cli(&["get", "wep", "-A", "-o", "json", "--datastore", ds]);
    let v: serde_json::Value = serde_json::from_slice(&weps.stdout).unwrap();
    assert!(v["items"].as_array().unwrap().is_empty(), "{v}");
    for node in nodes {
        let links = node.ns.exec_ok(&["ip", "-o", "link"]);
        assert!(!links.contains("cali"), "{}: {links}", node.name);
    }
    eprintln!("reliability run took {:?}", started.elapsed());
}

fn reliability_nodes(underlay: &Underlay, first: u8) -> Vec<Node> {
    (0..NODES as u8)
        .map(|i| Node::new(underlay, &format!("rel-{i}"), first + i))
        .collect()
}

#[test]
fn sys_reliability_random_add_del_with_faults_on_sqlite() {
    gingham_testkit::require_root();
    let seed = reliability_seed(11);
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let underlay = Underlay::new();
    let nodes = reliability_nodes(&underlay, 20);
    reliability(Backend::Sqlite, &underlay, &nodes, &ds, seed);
}

#[test]
fn sys_reliability_random_add_del_with_faults_on_etcd() {
    gingham_testkit::require_root();
    let seed = reliability_seed(12);
    let underlay = Underlay::new();
    let nodes = reliability_nodes(&underlay, 24);
    let server = gingham_testkit::etcd::EtcdServer::start_in(underlay.ns.name(), "192.168.224.254");
    let ds = format!("etcd:{}", server.endpoint());
    reliability(
        Backend::Etcd(Box::new(std::sync::Mutex::new(server))),
        &underlay,
        &nodes,
        &ds,
        seed,
    );
}

/// The pod MTU from the node agent's MTU file (Calico's `/var/lib/calico/mtu`; ours in the run
/// directory, `GINGHAM_RUN_DIR`): used when the network configuration sets no `mtu` (or 0,
/// Calico's `__CNI_MTU__` left unset), ignored when it sets one; a file that holds no MTU, or
/// a missing file with `require_mtu_file: true`, fails the ADD with an error naming it.
#[test]
fn sys_the_mtu_file_gives_the_pod_mtu_when_the_configuration_has_none() {
    gingham_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    pool(&ds, "10.91.0.0/24", 26);
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let mtu_file = run.join("mtu");
    let underlay = Underlay::new();
    let node = Node::new(&underlay, "node-m", 5);
    let run_dir = run.to_str().unwrap();
    let add = |i: usize, pod: &TestNetns, conf: serde_json::Value| {
        let c = Call {
            command: "ADD",
            container: &format!("mtu{i}"),
            netns: pod.path(),
            args: k8s_args("default", &format!("m{i}")),
            conf: conf.to_string(),
        };
        plugin_with(&node, &c, &[("GINGHAM_RUN_DIR", Some(run_dir))])
    };
    let base = |mtu: Option<u32>| {
        let mut v: serde_json::Value =
            serde_json::from_str(&conf(&ds, &node.name, "1.0.0")).unwrap();
        match mtu {
            Some(m) => v["mtu"] = m.into(),
            None => {
                v.as_object_mut().unwrap().remove("mtu");
            }
        }
        v
    };
    let link_mtu = |pod: &TestNetns| {
        let out = String::from_utf8_lossy(&pod.exec(&["ip", "-o", "link", "show", "eth0"]).stdout)
            .into_owned();
        assert!(out.contains(" mtu "), "{out}");
        out
    };
    let pods: Vec<TestNetns> = (0..5).map(|_| TestNetns::new("cnim")).collect();

    std::fs::write(&mtu_file, "1410").unwrap();
    let out = add(0, &pods[0], base(None));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        link_mtu(&pods[0]).contains(" mtu 1410 "),
        "no mtu: the file's"
    );
    let out = add(1, &pods[1], base(Some(0)));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        link_mtu(&pods[1]).contains(" mtu 1410 "),
        "mtu 0: the file's"
    );
    let out = add(2, &pods[2], base(Some(1400)));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        link_mtu(&pods[2]).contains(" mtu 1400 "),
        "the configuration's wins"
    );

    std::fs::write(&mtu_file, "jumbo\n").unwrap();
    let out = add(3, &pods[3], base(None));
    assert!(!out.status.success());
    let err = json(&out);
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&mtu_file.display().to_string()) && msg.contains("not an MTU"),
        "{err}"
    );

    std::fs::remove_file(&mtu_file).unwrap();
    let mut required = base(None);
    required["require_mtu_file"] = true.into();
    let out = add(4, &pods[4], required);
    assert!(!out.status.success());
    let err = json(&out);
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("require_mtu_file is true"),
        "{err}"
    );
    // Without the requirement a missing file is the kernel's default.
    let out = add(4, &pods[4], base(None));
    assert!(out.status.success(), "{}", text(&out));
    assert!(link_mtu(&pods[4]).contains(" mtu 1500 "));
    // The failed ADDs kept no address: every allocation has its endpoint.
    let shown = node.cli(&["ipam", "check", "--datastore", &ds]);
    assert!(shown.status.success(), "{}", text(&shown));
}
