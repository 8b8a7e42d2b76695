//! Helpers shared by the CLI and lab tests.
#![allow(dead_code)]

pub mod policy_sets;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the `gingham` binary (not reading GINGHAM_DATASTORE from the test's environment).
pub fn gingham_in(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(args)
        .env_remove("GINGHAM_DATASTORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// CNI ADD, as a kubelet on node `node` (whose network namespace is `node_netns`) would call
/// the plugin: pod `name` in namespace `default`, in the network namespace at `pod_netns`, on
/// datastore `ds`, with `IP=` when an address is asked for and the network configuration's
/// `mtu` if given. Fails the test unless it succeeds; returns the pod's IPv4 address.
pub fn cni_add_pod(
    node: &str,
    node_netns: &str,
    pod_netns: &Path,
    ds: &str,
    name: &str,
    ip: Option<&str>,
    mtu: Option<u32>,
) -> String {
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "gingham",
        "nodename": node,
        "datastore": ds,
        "ipam": {"type": "gingham-ipam"},
    });
    if let Some(mtu) = mtu {
        conf["mtu"] = mtu.into();
    }
    let mut args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=x"
    );
    if let Some(ip) = ip {
        args.push_str(&format!(";IP={ip}"));
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_netns, env!("CARGO_BIN_EXE_gingham")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", format!("c-{name}"))
        .env("CNI_NETNS", pod_netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(conf.to_string().as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "CNI ADD of {name} on {node}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// Like [`gingham_in`], but fails the test (showing both streams) unless it succeeds.
pub fn ok_in(args: &[&str], stdin: Option<&str>) -> String {
    let out = gingham_in(args, stdin);
    assert!(
        out.status.success(),
        "gingham {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `gingham lab down` when dropped, so a failing test leaves nothing behind either.
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        if Path::new(&self.0).join("state.json").exists() {
            let _ = gingham_in(&["lab", "down", "--dir", &self.0], None);
        }
    }
}

/// A lab made by `gingham lab up` on SQLite in a temporary directory; `lab down` when dropped.
pub struct TestLab {
    /// The lab's name (`metadata.name`: its namespaces are `gl-NAME-...`).
    pub name: String,
    /// The lab's state directory.
    pub dir: String,
    /// Its datastore URL.
    pub ds: String,
    /// What `lab up` printed (the pods and their addresses).
    pub up: String,
    // Dropped in this order: the lab, then its directory.
    _down: Down,
    _tmp: tempfile::TempDir,
}

/// Brings a lab up: a Lab document named `prefix` + this process's id, with `spec` (flow YAML,
/// e.g. `{nodes: [node-a, node-b]}`), followed by `docs`.
pub fn lab_up(prefix: &str, spec: &str, docs: &str) -> TestLab {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("{prefix}{}", std::process::id() % 100_000);
    let dir = tmp.path().join("lab").display().to_string();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let file = tmp.path().join("cluster.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n{docs}"),
    )
    .unwrap();
    let up = ok_in(
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
    TestLab {
        name,
        _down: Down(dir.clone()),
        dir,
        ds,
        up,
        _tmp: tmp,
    }
}

/// A lab on one flat subnet (`spec`, e.g. `{nodes: [node-a, node-b]}`) whose pods take their
/// addresses from the pool `pods` (10.244.0.0/16), with `docs` after the pool.
pub fn flat_lab(prefix: &str, spec: &str, docs: &str) -> TestLab {
    lab_up(
        prefix,
        spec,
        &format!("{}{docs}", Fabric::Flat.pool("pods", "10.244.0.0/16", "")),
    )
}

/// `gingham explain` for one TCP flow on a datastore: the verdict and why.
pub fn explain(ds: &str, from: &str, to: &str, port: u16) -> String {
    ok_in(
        &[
            "explain",
            "--datastore",
            ds,
            "--from",
            from,
            "--to",
            to,
            "--port",
            &port.to_string(),
        ],
        None,
    )
}

/// Waits until every agent of the lab in `dir` has programmed everything written to the
/// datastore so far (`gingham lab wait`: their `gingham_agent_datastore_revision` metric has
/// reached the write). Call it after a write and before asserting what packets do, once.
pub fn wait_programmed(dir: &str) {
    ok_in(&["lab", "wait", "--dir", dir], None);
}

/// What one connection with real packets does (`gingham lab try -o json`): `connected`,
/// `refused` or `no-answer`. Checks that the exit code goes with the outcome.
pub fn try_outcome(dir: &str, from: &str, to: &str, proto: &str, port: u16) -> String {
    try_json(dir, from, to, proto, port)["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `gingham lab try -o json` for one connection: `{from, to, address, port, protocol, outcome,
/// peer}`. Checks that the exit code goes with the outcome.
pub fn try_json(dir: &str, from: &str, to: &str, proto: &str, port: u16) -> serde_json::Value {
    try_json_within(dir, from, to, proto, port, 500)
}

/// [`try_json`] with `timeout_ms` to answer.
pub fn try_json_within(
    dir: &str,
    from: &str,
    to: &str,
    proto: &str,
    port: u16,
    timeout_ms: u64,
) -> serde_json::Value {
    let out = gingham_in(
        &[
            "lab",
            "try",
            "--dir",
            dir,
            from,
            to,
            "--protocol",
            proto,
            "--port",
            &port.to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
            "-o",
            "json",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "lab try {from} {to} {proto}/{port}: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let code = match v["outcome"].as_str().unwrap_or_default() {
        "connected" => 0,
        "refused" => 3,
        "no-answer" => 4,
        other => panic!("lab try {from} {to} {proto}/{port}: outcome {other:?}: {v}"),
    };
    assert_eq!(out.status.code(), Some(code), "exit code of {v}");
    v
}

/// Asserts that a `lab probe -o json` matrix has exactly `endpoints`, and on every cell the
/// outcome `expected(from, to)` and `allowed` true for connected and refused.
pub fn assert_probe(
    what: &str,
    m: &serde_json::Value,
    endpoints: &[&str],
    expected: &dyn Fn(&str, &str) -> &'static str,
) {
    let mut m = m.clone();
    second_look(&mut m, expected);
    let m = &m;
    let mut outcomes = serde_json::Map::new();
    let mut allowed = serde_json::Map::new();
    for from in endpoints {
        let mut o = serde_json::Map::new();
        let mut a = serde_json::Map::new();
        for to in endpoints {
            let e = expected(from, to);
            o.insert((*to).to_owned(), e.into());
            a.insert((*to).to_owned(), (e != "no-answer").into());
        }
        outcomes.insert((*from).to_owned(), o.into());
        allowed.insert((*from).to_owned(), a.into());
    }
    assert_eq!(m["endpoints"], serde_json::json!(endpoints), "{what}: {m}");
    assert_eq!(
        m["outcomes"],
        serde_json::Value::Object(outcomes),
        "{what}: outcomes"
    );
    assert_eq!(
        m["allowed"],
        serde_json::Value::Object(allowed),
        "{what}: allowed"
    );
}

/// `gingham lab probe -o json` for one protocol and port.
pub fn probe(dir: &str, proto: &str, port: u16) -> serde_json::Value {
    let json = ok_in(
        &[
            "lab",
            "probe",
            "--dir",
            dir,
            "--protocol",
            proto,
            "--port",
            &port.to_string(),
            "--timeout-ms",
            "500",
            "-o",
            "json",
        ],
        None,
    );
    let mut m: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Where it came from, for `assert_probe`'s second look at a cell that did not answer.
    m["lab_dir"] = dir.into();
    m
}

/// A cell of a `probe` matrix that got no answer where an answer was expected gets a second,
/// patient look (`lab try` with 3 s to answer): on a loaded 2-core machine a connection can
/// take longer than the probe's 500 ms. A cell expected to get no answer is never retried, and a
/// policy drop stays a drop however long one waits, so the check can still fail.
fn second_look(m: &mut serde_json::Value, expected: &dyn Fn(&str, &str) -> &'static str) {
    let Some(dir) = m["lab_dir"].as_str().map(str::to_owned) else {
        return;
    };
    let proto = m["protocol"].as_str().unwrap_or("TCP").to_owned();
    let port = u16::try_from(m["port"].as_u64().unwrap_or(0)).unwrap_or(0);
    let cells: Vec<(String, String)> = m["outcomes"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(from, row)| {
            row.as_object()
                .into_iter()
                .flatten()
                .filter(|(to, got)| *got == "no-answer" && expected(from, to) != "no-answer")
                .map(|(to, _)| (from.clone(), to.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (from, to) in cells {
        let v = try_json_within(&dir, &from, &to, &proto, port, 3000);
        if let Some(outcome) = v["outcome"].as_str().filter(|o| *o != "no-answer") {
            eprintln!(
                "{from} -> {to} {proto}/{port}: no answer in 500 ms, {outcome} on a second look"
            );
            m["outcomes"][&from][&to] = outcome.into();
            m["allowed"][&from][&to] = true.into();
        }
    }
}

/// Namespaces, processes and files that belong to lab `name` in `dir`: empty once it is down.
/// Processes: the pods' and nodes' servers (named after the lab), anything whose command
/// line names the directory the lab's directory is in (agents with their run directories, the
/// router's BIRD, the lab's Kubernetes) or one of the lab's namespaces (the proxies into the
/// nodes).
pub fn leftovers(name: &str, dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        if line.starts_with(&format!("gl-{name}-")) {
            found.push(format!("netns {line}"));
        }
    }
    let parent = dir.parent().unwrap().display().to_string();
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    for line in String::from_utf8_lossy(&ps.stdout).lines() {
        if line.contains(&format!("lab serve --name {name}/"))
            || line.contains(&parent)
            || line.contains(&format!("--netns gl-{name}-"))
        {
            found.push(format!("process {line}"));
        }
    }
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    found
}

/// Two racks joined by the lab's router: r1 (node-a, node-b) and r2 (node-c).
pub const RACKS: &str = "racks: [{name: r1, subnet: 10.91.1.0/24, nodes: [node-a, node-b]}, {name: r2, subnet: 10.91.2.0/24, nodes: [node-c]}]";

/// The AS number of the rack router in [`Fabric::Bird`] labs (the nodes keep Calico's default).
pub const ROUTER_AS: u32 = 64513;

/// How pods of different nodes reach each other in a lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fabric {
    /// One subnet (node-a, node-b), `networking: none`: the lab routes pods itself.
    Flat,
    /// [`RACKS`], `networking: vxlan`, pools with `vxlanMode: CrossSubnet`.
    Vxlan,
    /// [`RACKS`], `networking: bird`, unencapsulated pools, the router a BGP peer of each rack
    /// (node-to-node mesh on).
    Bird,
}

impl Fabric {
    /// The node that is on another node than node-a: node-b in a flat lab, node-c (the other
    /// rack) in a rack lab.
    pub fn far_node(self) -> &'static str {
        match self {
            Fabric::Flat => "node-b",
            Fabric::Vxlan | Fabric::Bird => "node-c",
        }
    }

    /// Fails the test unless the tools this fabric needs are here.
    pub fn require(self) {
        gingham_testkit::require_root();
        gingham_testkit::require_tool("ip");
        gingham_testkit::require_tool("nft");
        if self == Fabric::Bird {
            gingham_testkit::require_tool("bird");
        }
    }

    /// The Lab's `spec` (flow YAML) with `extra` fields (e.g. `external: {address: A}`).
    pub fn spec(self, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        match self {
            Fabric::Flat => format!("{{nodes: [node-a, node-b]{extra}}}"),
            Fabric::Vxlan => format!("{{networking: vxlan, {RACKS}{extra}}}"),
            Fabric::Bird => {
                format!("{{networking: bird, router: {{asNumber: {ROUTER_AS}}}, {RACKS}{extra}}}")
            }
        }
    }

    /// An IPPool document: `name`, `cidr`, and `more` spec fields (e.g. `natOutgoing: true`);
    /// with VXLAN, `vxlanMode: CrossSubnet`.
    pub fn pool(self, name: &str, cidr: &str, more: &str) -> String {
        let mut fields = vec![format!("cidr: {cidr}")];
        if self == Fabric::Vxlan {
            fields.push("vxlanMode: CrossSubnet".to_owned());
        }
        if !more.is_empty() {
            fields.push(more.to_owned());
        }
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{{}}}\n---\n",
            fields.join(", ")
        )
    }

    /// What else the fabric needs in the datastore: with BIRD, a BGPPeer per rack towards the
    /// router's address in it. `keepOriginalNextHop`: with the mesh on, every node re-advertises
    /// the blocks it learned from the mesh with itself as next hop, and the router may then send
    /// a block's traffic to a node that sends it back to the router: a loop.
    pub fn docs(self) -> String {
        if self != Fabric::Bird {
            return String::new();
        }
        [("r1", "10.91.1.1"), ("r2", "10.91.2.1")]
            .iter()
            .map(|(rack, ip)| {
                format!(
                    "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor-{rack}}}\nspec: {{peerIP: {ip}, asNumber: {ROUTER_AS}, nodeSelector: \"rack == '{rack}'\", keepOriginalNextHop: true}}\n---\n"
                )
            })
            .collect()
    }

    /// Waits (bounded) until the fabric carries every pod of the lab in `dir`: the agents have
    /// programmed every write; with BIRD, every node's sessions (the other nodes and its rack's
    /// router) are Established and the router's kernel routes every pod's address to its node.
    pub fn wait_converged(self, dir: &str) {
        wait_programmed(dir);
        if self != Fabric::Bird {
            return;
        }
        let state = lab_state(dir);
        let nodes = state["nodes"].as_array().unwrap();
        for n in nodes {
            let name = n["name"].as_str().unwrap();
            wait_until(&format!("{name}'s BGP sessions Established"), 60, || {
                let status = node_status(dir, name);
                let peers = status["ipv4"]["peers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                // The other nodes (the mesh) and the router of its rack.
                let want = nodes.len() - 1 + 1;
                (peers.len() == want && peers.iter().all(|p| p["info"] == "Established"))
                    .then_some(())
                    .ok_or_else(|| status.to_string())
            });
        }
        for p in state["pods"].as_array().unwrap() {
            let Some(ip) = p["ip"].as_str() else { continue };
            let node = nodes.iter().find(|n| n["name"] == p["node"]).unwrap();
            let via = format!("via {} ", node["ip"].as_str().unwrap());
            wait_until(&format!("the router's route to {ip}"), 60, || {
                let out = lab_exec(dir, "router", &["ip", "-4", "route", "get", ip]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.contains(&via).then_some(()).ok_or(text)
            });
        }
    }
}

/// The lab's `state.json`.
pub fn lab_state(dir: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(dir).join("state.json")).unwrap())
        .unwrap()
}

/// Calls `check` every 200 ms until it returns Ok, failing the test with `what` and the last
/// error after `seconds`.
pub fn wait_until<T>(what: &str, seconds: u64, mut check: impl FnMut() -> Result<T, String>) -> T {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() >= end => {
                panic!("{what}: not after {seconds} s: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// `gingham lab exec --dir DIR TARGET -- CMD...`.
pub fn lab_exec(dir: &str, target: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["lab", "exec", "--dir", dir, target, "--"];
    args.extend_from_slice(cmd);
    gingham_in(&args, None)
}

/// Like [`lab_exec`], failing the test unless the command succeeds; its standard output.
pub fn lab_exec_ok(dir: &str, target: &str, cmd: &[&str]) -> String {
    let out = lab_exec(dir, target, cmd);
    assert!(
        out.status.success(),
        "lab exec {target} {cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gingham node status -o json` run on a node of the lab in `dir`.
pub fn node_status(dir: &str, node: &str) -> serde_json::Value {
    let text = lab_exec_ok(dir, node, &["gingham", "node", "status", "-o", "json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("node status on {node}: {e}: {text}"))
}

/// The address `lab up` printed for a pod (`ns/name`).
pub fn pod_address(lab: &TestLab, pod: &str) -> String {
    lab.up
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pod))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("{pod} not in {}", lab.up))
        .to_owned()
}

/// Takes the lab down and checks that nothing of it is left.
pub fn down_leaves_nothing(lab: &TestLab) {
    ok_in(&["lab", "down", "--dir", &lab.dir], None);
    assert_eq!(
        leftovers(&lab.name, Path::new(&lab.dir)),
        Vec::<String>::new()
    );
}

/// The Kubernetes API double (gingham-kubeapi) on 127.0.0.1 over `store`, on a runtime of its
/// own, with a kubeconfig for it and a kube-rs client.
pub struct KubeApi {
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    pub kubeconfig: std::path::PathBuf,
    _server: gingham_kubeapi::RunningApiServer,
}

impl KubeApi {
    /// Serves `store`; the kubeconfig is written in `dir` as `<name>.kubeconfig`.
    pub fn start(
        store: std::sync::Arc<dyn gingham_datastore::Datastore>,
        dir: &Path,
        name: &str,
    ) -> KubeApi {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(gingham_kubeapi::ApiServer::start(
                store,
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        server.write_kubeconfig(&kubeconfig).unwrap();
        let client = rt
            .block_on(gingham_agent::bgp::kube::client(&kubeconfig))
            .unwrap();
        KubeApi {
            rt,
            client,
            kubeconfig,
            _server: server,
        }
    }

    /// Creates or replaces a Kubernetes object given as JSON (server-side apply); the
    /// resource's plural is its kind's, lower case, with an `s`.
    pub fn apply(&self, doc: &serde_json::Value) {
        use kube::api::{Api, DynamicObject, Patch, PatchParams};
        use kube::discovery::ApiResource;
        let api_version = doc["apiVersion"].as_str().unwrap().to_string();
        let kind = doc["kind"].as_str().unwrap().to_string();
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.clone(),
            kind: kind.clone(),
            plural: format!("{}s", kind.to_lowercase()),
        };
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None if kind == "Namespace" => Api::all_with(self.client.clone(), &ar),
            None => Api::namespaced_with(self.client.clone(), "default", &ar),
        };
        self.rt
            .block_on(api.patch(
                &name,
                &PatchParams::apply("gingham-test").force(),
                &Patch::Apply(doc),
            ))
            .unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
    }
}

/// Runs kubectl against the lab's API, failing the test unless it succeeds; its output.
pub fn kubectl(kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cause `gingham explain`'s text gives for a flow: the last step of the stage that
/// decided (the line before its advice), without its indentation.
pub fn explain_cause(text: &str) -> String {
    text.lines()
        .take_while(|l| !l.starts_with("  =>") && !l.starts_with("  staged"))
        .last()
        .map(|l| l.trim().to_owned())
        .unwrap_or_default()
}

/// `gingham flows -o json` for the lab in `dir` (`--denied` with `denied`): the records.
pub fn flows(dir: &str, denied: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["flows", "--dir", dir, "-o", "json", "--since", "1h"];
    if denied {
        args.push("--denied");
    }
    let v: serde_json::Value = serde_json::from_str(&ok_in(&args, None)).unwrap();
    v["flows"].as_array().cloned().unwrap_or_default()
}

/// Whether a flow record is of a TCP flow from `from` (a pod, or a node by its name) to `to`
/// on `port`, logged at or after `since`.
pub fn flow_is(
    r: &serde_json::Value,
    from: &str,
    to: &str,
    port: u16,
    since: jiff::Timestamp,
) -> bool {
    let src = r["src"].as_str().unwrap_or_default();
    let time: Option<jiff::Timestamp> = r["time"].as_str().and_then(|t| t.parse().ok());
    (src == from || src == format!("node {from}"))
        && r["dst"] == to
        && r["port"] == port
        && r["protocol"] == "TCP"
        && time.is_some_and(|t| t >= since)
}

/// Tries one TCP connection that policy must drop and returns the denied flow record that
/// `gingham flows --denied` shows for it within 1 s of the try.
pub fn try_denied_and_flow(dir: &str, from: &str, to: &str, port: u16) -> serde_json::Value {
    let since = jiff::Timestamp::now();
    assert_eq!(
        try_outcome(dir, from, to, "TCP", port),
        "no-answer",
        "{from} -> {to}:{port}"
    );
    let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let all = flows(dir, true);
        if let Some(r) = all.iter().find(|r| flow_is(r, from, to, port, since)) {
            return r.clone();
        }
        assert!(
            std::time::Instant::now() < end,
            "no denied flow {from} -> {to}:{port} in `gingham flows --denied` 1 s after the try: {all:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
