//! Multi-node networking benchmarks (issue 12), each beside a baseline measured in the same run:
//!
//! - **Pod to pod across nodes**: one TCP stream's throughput and new TCP connections per
//!   second (TCP_CRR) from a pod on `node-a` (rack r1) to a pod on `node-c` (rack r2), in a lab
//!   whose nodes route pods with VXLAN (`networking: vxlan`, `vxlanMode: CrossSubnet`, so the
//!   cross-rack path is encapsulated) and with BIRD (`networking: bird`, an unencapsulated pool,
//!   the router peering with every node). Baseline: the same two pod namespaces joined by a plain
//!   routed veth path shaped like the lab's underlay (three routing namespaces standing for
//!   node-a, the router and node-c, and a bridge for each rack: no tunnel, no nftables, static
//!   routes), measured alternately with the lab's path so the machine's drift cancels;
//!   ratio = lab / plain (targets: VXLAN ≥ 0.8, native ≥ 0.95). Beside it, the same plain path
//!   with one conntrack lookup in each node (`ct`): the floor of any stateful netfilter dataplane.
//! - **Pod ADD to first packet from another node**: a pod added on node-a with an address in a
//!   block no node has yet (so the route to it must travel: BIRD's advertisement or the VXLAN
//!   agents' routes), and a prober on node-c's pod that connects every few milliseconds; the time
//!   from the start of the ADD to the first connection, p50/p99 over the rounds (targets: BIRD
//!   p99 ≤ 1 s with its default timers, VXLAN p99 ≤ 100 ms). Baseline: the ADD alone (the
//!   time `lab apply` takes).
//! - **New node to routes everywhere**: in a 10-node VXLAN lab, a new Node resource with its
//!   tunnel address and a block affine to it is written; the time until every node's kernel has
//!   the route to that block. Baseline: the same wait for a change every agent must program
//!   (a GlobalNetworkPolicy), from the agents' programmed revision.
//!
//! Run (root): `scripts/bench net` or `cargo bench -p gingham --bench net`.
//! `NET_BENCH_ONLY=vxlan|bird|nodes` runs one part; `NET_BENCH_ROUNDS` (default 5 for the
//! per-packet rows, 20 for first packets).

#[path = "support/packets.rs"]
mod packets;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gingham_datastore::Datastore;
use ipnet::IpNet;

use gingham_testkit::netns::TestNetns;
use packets::{median, quantile};

const GINGHAM: &str = env!("CARGO_BIN_EXE_gingham");

fn gingham(args: &[&str]) -> String {
    let out = Command::new(GINGHAM)
        .args(args)
        .output()
        .expect("gingham runs");
    assert!(
        out.status.success(),
        "gingham {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running lab, brought down when dropped.
struct Lab {
    dir: PathBuf,
    datastore: String,
    _tmp: tempfile::TempDir,
}

impl Lab {
    fn up(yaml: &str) -> Lab {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().join("lab");
        let file = tmp.path().join("lab.yaml");
        std::fs::write(&file, yaml).expect("written");
        let datastore = format!("sqlite:{}", tmp.path().join("g.db").display());
        let lab = Lab {
            dir,
            datastore,
            _tmp: tmp,
        };
        gingham(&[
            "lab",
            "up",
            "-f",
            file.to_str().expect("utf-8"),
            "--dir",
            lab.dir(),
            "--datastore",
            &lab.datastore,
        ]);
        lab.wait();
        lab
    }

    fn dir(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }

    /// Until every agent has programmed everything written so far.
    fn wait(&self) {
        gingham(&["lab", "wait", "--dir", self.dir()]);
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("state.json")).expect("lab state");
        serde_json::from_str(&text).expect("lab state is JSON")
    }

    /// A pod's namespace and address.
    fn pod(&self, name: &str) -> (String, String) {
        let state = self.state();
        let pod = state["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("pod {name} in the lab"));
        (
            pod["netns"].as_str().expect("netns").to_owned(),
            pod["ip"].as_str().expect("an address").to_owned(),
        )
    }

    /// Every node's namespace.
    fn node_netns(&self) -> Vec<String> {
        self.state()["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["netns"].as_str().expect("netns").to_owned())
            .collect()
    }

    fn apply(&self, yaml: &str) {
        let file = self.dir.with_extension("apply.yaml");
        std::fs::write(&file, yaml).expect("written");
        gingham(&[
            "lab",
            "apply",
            "-f",
            file.to_str().expect("utf-8"),
            "--dir",
            self.dir(),
            "--datastore",
            &self.datastore,
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(GINGHAM)
            .args(["lab", "down", "--dir", self.dir()])
            .status();
    }
}

/// Two racks (node-a, node-b | node-c), a router with AS 64513, pods p1 on node-a and p3 on
/// node-c, the pool's modes as given.
fn two_racks(name: &str, networking: &str, pool_spec: &str, nodes_r2: &[&str]) -> String {
    let mut r2 = vec!["node-c"];
    r2.extend_from_slice(nodes_r2);
    let mut y = format!(
        "apiVersion: gingham.dev/v1
kind: Lab
metadata: {{name: {name}}}
spec:
  networking: {networking}
  racks:
  - {{name: r1, subnet: 10.10.1.0/24, nodes: [node-a, node-b]}}
  - {{name: r2, subnet: 10.10.2.0/24, nodes: [{}]}}
  router: {{asNumber: 64513}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: 10.244.0.0/16, {pool_spec}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
",
        r2.join(", ")
    );
    if networking == "bird" {
        // The fabric: each rack's nodes peer with the router's address in their rack, keeping
        // the original next hop (with the mesh on, next-hop-self would make the router send a
        // block to any node that advertises it).
        for (rack, router) in [("r1", "10.10.1.1"), ("r2", "10.10.2.1")] {
            y.push_str(&format!(
                "---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-{rack}}}
spec: {{peerIP: {router}, asNumber: 64513, nodeSelector: \"rack == '{rack}'\", keepOriginalNextHop: true}}
"
            ));
        }
    }
    // The measured pods declare no ports: the benchmark's own servers listen there.
    for (pod, node) in [("p1", "node-a"), ("p3", "node-c")] {
        y.push_str(&pod_yaml(pod, node, None, false));
    }
    y
}

/// A pod on `node`, at `address` if given (Calico's `ipAddrs` annotation), with the lab's server
/// on TCP 80 if `serve`.
fn pod_yaml(name: &str, node: &str, address: Option<&str>, serve: bool) -> String {
    let ann = address
        .map(|a| format!(", annotations: {{cni.projectcalico.org/ipAddrs: '[\"{a}\"]'}}"))
        .unwrap_or_default();
    let ports = if serve {
        ", ports: [{containerPort: 80}]"
    } else {
        ""
    };
    format!(
        "---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: bench{ann}}}
spec: {{nodeName: {node}, containers: [{{name: c{ports}}}]}}
"
    )
}

/// The same two pod namespaces joined by a plain path shaped like the lab's underlay: pod A —
/// R0 — bridge — R1 — bridge — R2 — pod B, where R0, R1 and R2 stand for node-a, the router and
/// node-c (forwarding, static routes, no tunnel, no BGP) and each bridge stands for a rack's
/// bridge, over veths as in the lab. Built beside the lab's interfaces (the pods' own eth0 and
/// routes are left alone; each plain path has its own addresses), so the ratio is the cost of
/// what Gingham adds, not of the lab's cabling.
///
/// Two variants: [`Variant::Plain`] has no nftables at all (the baseline), and
/// [`Variant::Conntrack`] has, in R0 and R2 (the nodes), nothing but a forward chain with the
/// one conntrack lookup every stateful dataplane starts with (the floor for netfilter: what
/// conntrack alone costs on this machine).
struct PlainPath {
    _namespaces: Vec<TestNetns>,
    b_ip: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Conntrack,
}

impl Variant {
    /// The third octet of the variant's /21 in 192.168.0.0/16, and its interface tag.
    fn base(self) -> (u8, &'static str) {
        match self {
            Variant::Plain => (248, "p"),
            Variant::Conntrack => (240, "c"),
        }
    }
}

/// What the conntrack-only variant's nodes hold: one forward chain, one conntrack lookup.
const CONNTRACK_ONLY: &str = "table inet ctonly {
  chain forward {
    type filter hook forward priority 10; policy accept;
    ct state vmap { established : accept, related : accept, invalid : drop }
  }
}
";

fn sh(netns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("ip netns exec runs");
    assert!(
        out.status.success(),
        "{netns}: {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A veth from `left` (named `l_if`, address `l_addr`) to `right` (`r_if`, `r_addr`); an empty
/// address leaves that end without one.
fn cable(left: &str, l_if: &str, l_addr: &str, right: &str, r_if: &str, r_addr: &str) {
    sh(
        left,
        &[
            "ip", "link", "add", l_if, "type", "veth", "peer", "name", r_if, "netns", right,
        ],
    );
    for (ns, ifname, addr) in [(left, l_if, l_addr), (right, r_if, r_addr)] {
        if !addr.is_empty() {
            sh(ns, &["ip", "addr", "add", addr, "dev", ifname]);
        }
        sh(ns, &["ip", "link", "set", ifname, "up"]);
    }
}

/// `left` and `right` on one subnet through a bridge in `bridge_ns`; `tag` names the ports.
fn bridged(tag: &str, left: &str, l_addr: &str, bridge_ns: &str, right: &str, r_addr: &str) {
    sh(bridge_ns, &["ip", "link", "add", "br0", "type", "bridge"]);
    sh(bridge_ns, &["ip", "link", "set", "br0", "up"]);
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|end| format!("pl{tag}{end}"));
    cable(left, &a, l_addr, bridge_ns, &b, "");
    cable(right, &d, r_addr, bridge_ns, &c, "");
    for port in [&b, &c] {
        sh(bridge_ns, &["ip", "link", "set", port, "master", "br0"]);
    }
}

impl PlainPath {
    fn new(pod_a: &str, pod_b: &str, variant: Variant) -> PlainPath {
        let routers: Vec<TestNetns> = (0..3).map(|_| TestNetns::new("bplain")).collect();
        let bridges: Vec<TestNetns> = (0..2).map(|_| TestNetns::new("bplbr")).collect();
        let [r0, r1, r2] = [routers[0].name(), routers[1].name(), routers[2].name()];
        let (b, t) = variant.base();
        // Four /30s: pod A–R0, R0–R1, R1–R2, R2–pod B.
        let net = |k: u8, host: u8| format!("192.168.{}.{host}", b + 2 + k);
        let cidr = |k: u8, host: u8| format!("{}/30", net(k, host));
        cable(
            pod_a,
            &format!("plain{t}0l"),
            &cidr(0, 2),
            r0,
            &format!("plain{t}0r"),
            &cidr(0, 1),
        );
        bridged(
            &format!("{t}1"),
            r0,
            &cidr(1, 1),
            bridges[0].name(),
            r1,
            &cidr(1, 2),
        );
        bridged(
            &format!("{t}2"),
            r1,
            &cidr(2, 1),
            bridges[1].name(),
            r2,
            &cidr(2, 2),
        );
        cable(
            r2,
            &format!("plain{t}3l"),
            &cidr(3, 1),
            pod_b,
            &format!("plain{t}3r"),
            &cidr(3, 2),
        );
        for r in &routers {
            sh(r.name(), &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        if variant == Variant::Conntrack {
            for node in [r0, r2] {
                let status = Command::new("ip")
                    .args(["netns", "exec", node, "nft", "-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .and_then(|mut child| {
                        use std::io::Write;
                        child
                            .stdin
                            .take()
                            .expect("piped")
                            .write_all(CONNTRACK_ONLY.as_bytes())?;
                        child.wait()
                    })
                    .expect("nft runs");
                assert!(status.success(), "{node}: the conntrack-only table");
            }
        }
        // Everything in the variant's /21 goes along the path.
        let wide = format!("192.168.{b}.0/21");
        let wide = wide.as_str();
        sh(pod_a, &["ip", "route", "add", wide, "via", &net(0, 1)]);
        sh(pod_b, &["ip", "route", "add", wide, "via", &net(3, 1)]);
        sh(r0, &["ip", "route", "add", wide, "via", &net(1, 2)]);
        sh(r1, &["ip", "route", "add", &cidr(0, 0), "via", &net(1, 1)]);
        sh(r1, &["ip", "route", "add", &cidr(3, 0), "via", &net(2, 2)]);
        sh(r2, &["ip", "route", "add", wide, "via", &net(2, 1)]);
        PlainPath {
            _namespaces: routers.into_iter().chain(bridges).collect(),
            b_ip: net(3, 2),
        }
    }
}

fn rounds(default: usize) -> usize {
    std::env::var("NET_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Throughput (bit/s) and CRR (connections/s) from `client` to `server_ip`, one run of each.
fn measure(client: &str, server_ip: &str) -> (f64, f64) {
    let stream = packets::run(client, Some("0"), &["stream", server_ip, "2"]);
    let crr = packets::run(client, Some("0"), &["crr", server_ip, "1"]);
    (stream, crr)
}

/// Rounds alternating the lab's path, the plain path and the conntrack-only path between the
/// same two pods; prints medians and the median of each round's ratios.
fn per_packet(label: &str, lab: &Lab) {
    let (a_ns, _) = lab.pod("p1");
    let (b_ns, b_ip) = lab.pod("p3");
    let plain = PlainPath::new(&a_ns, &b_ns, Variant::Plain);
    let ct = PlainPath::new(&a_ns, &b_ns, Variant::Conntrack);
    // The servers listen on every address of the server pod: one pair serves every path.
    let _tcp = packets::spawn(&b_ns, Some("1"), &["tcp-server"]);
    let _stream = packets::spawn(&b_ns, Some("1"), &["stream-server"]);
    // Per round: (lab, plain, conntrack-only), each (bit/s, CRR/s).
    type Round = [(f64, f64); 3];
    let mut runs: Vec<Round> = Vec::new();
    for _ in 0..rounds(5) {
        runs.push([
            measure(&a_ns, &b_ip),
            measure(&a_ns, &plain.b_ip),
            measure(&a_ns, &ct.b_ip),
        ]);
    }
    let med = |f: &dyn Fn(&Round) -> f64| median(runs.iter().map(f).collect());
    println!(
        "{label:>22} | {:>6.2} {:>6.2} {:>6.2} {:>5.2} {:>5.2} | {:>6.0} {:>6.0} {:>6.0} {:>5.2} {:>5.2}",
        med(&|r| r[0].0 / 1e9),
        med(&|r| r[1].0 / 1e9),
        med(&|r| r[2].0 / 1e9),
        med(&|r| r[0].0 / r[1].0),
        med(&|r| r[0].0 / r[2].0),
        med(&|r| r[0].1),
        med(&|r| r[1].1),
        med(&|r| r[2].1),
        med(&|r| r[0].1 / r[1].1),
        med(&|r| r[0].1 / r[2].1),
    );
}

/// Pods added on node-a in fresh blocks; the time until node-c's pod first connects to each.
fn first_packet(label: &str, lab: &Lab) {
    let (c_ns, _) = lab.pod("p3");
    let (mut first, mut add) = (Vec::new(), Vec::new());
    for i in 0..rounds(20) {
        // 10.244.(100+i).10: a /26 of its own, in no node's block yet.
        let address = format!("10.244.{}.10", 100 + i);
        let mut prober = packets::command(&c_ns, None, &["first-connect", &address, "10"])
            .spawn()
            .expect("the prober starts");
        let t = Instant::now();
        lab.apply(&pod_yaml(
            &format!("new{i}"),
            "node-a",
            Some(&address),
            true,
        ));
        let added = t.elapsed();
        let status = prober.wait().expect("the prober ends");
        let connected = t.elapsed();
        assert!(
            status.success(),
            "{label}: node-c's pod never reached {address} (10 s)"
        );
        first.push(connected.as_secs_f64() * 1e3);
        add.push(added.as_secs_f64() * 1e3);
    }
    println!(
        "{label:>22} | {:>8.0} {:>8.0} | {:>8.0} {:>8.0}",
        quantile(first.clone(), 0.5),
        quantile(first, 0.99),
        quantile(add.clone(), 0.5),
        quantile(add, 0.99),
    );
}

fn pods_across_nodes() {
    let only = std::env::var("NET_BENCH_ONLY").unwrap_or_default();
    let runs: Vec<(&str, &str, &str)> = [
        ("VXLAN (CrossSubnet)", "vxlan", "vxlanMode: CrossSubnet"),
        ("native (BIRD)", "bird", "vxlanMode: Never, ipipMode: Never"),
    ]
    .into_iter()
    .filter(|(_, net, _)| only.is_empty() || only.contains(net))
    .collect();
    if runs.is_empty() {
        return;
    }
    println!("\n## Pod to pod across racks: node-a (r1) → node-c (r2)");
    println!("(client on cpu0, server on cpu1; medians of rounds alternating the lab's path with");
    println!(
        " two paths between the same pods: `plain`, routed with no nftables (the baseline), and"
    );
    println!(
        " `ct`, the same with one conntrack lookup in each node's forward hook (the floor of a"
    );
    println!(" stateful netfilter dataplane); ratios per round: lab / plain, lab / ct)");
    println!(
        "{:>22} | {:>6} {:>6} {:>6} {:>5} {:>5} | {:>6} {:>6} {:>6} {:>5} {:>5}",
        "", "Gbit/s", "plain", "ct", "/pl", "/ct", "CRR/s", "plain", "ct", "/pl", "/ct"
    );
    let mut labs = Vec::new();
    for (label, net, pool) in &runs {
        // Lab names are at most 6 characters (they prefix namespace names).
        let lab = Lab::up(&two_racks(&format!("b{}", &net[..3]), net, pool, &[]));
        // BIRD's sessions take a moment after the agents start: wait for the path.
        let (c_ns, _) = lab.pod("p3");
        let (_, a_ip) = lab.pod("p1");
        let _server = packets::spawn(&lab.pod("p1").0, None, &["tcp-server"]);
        let ok = packets::command(&c_ns, None, &["first-connect", &a_ip, "60"])
            .status()
            .expect("the prober runs");
        assert!(ok.success(), "{label}: p3 never reached p1");
        drop(_server);
        per_packet(label, &lab);
        labs.push((*label, lab));
    }
    println!("\n## Pod ADD on node-a to the first packet from node-c's pod (fresh block each)");
    println!(
        "{:>22} | {:>8} {:>8} | {:>8} {:>8}",
        "", "p50 ms", "p99 ms", "ADD p50", "ADD p99"
    );
    for (label, lab) in &labs {
        first_packet(label, lab);
    }
    println!("(ADD: the baseline, the time `lab apply` takes to add the pod; targets: VXLAN p99");
    println!(" ≤ 100 ms and BIRD p99 ≤ 1 s after the ADD)");
}

/// Whether `netns`'s kernel has a route for `cidr`.
fn has_route(netns: &str, cidr: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", netns, "route", "show", cidr])
        .output()
        .expect("ip runs");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn new_node_routes() {
    let only = std::env::var("NET_BENCH_ONLY").unwrap_or_default();
    if !(only.is_empty() || only.contains("nodes")) {
        return;
    }
    println!("\n## A new node: time until all 10 nodes have the route to its block (VXLAN)");
    let extra: Vec<String> = (1..=7).map(|i| format!("node-r2-{i}")).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let lab = Lab::up(&two_racks("bnodes", "vxlan", "vxlanMode: Always", &extra));
    let nodes = lab.node_netns();
    assert_eq!(nodes.len(), 10, "{nodes:?}");
    let store = datastore(&lab);
    let (mut route_ms, mut policy_ms) = (Vec::new(), Vec::new());
    for i in 0..rounds(5) {
        let name = format!("joiner-{i}");
        let t = Instant::now();
        let block = join_node(&store, &name, &format!("10.10.2.{}", 100 + i)).to_string();
        wait_for(Duration::from_secs(10), || {
            nodes.iter().all(|ns| has_route(ns, &block))
        })
        .unwrap_or_else(|| panic!("the route to {block} did not reach every node"));
        route_ms.push(t.elapsed().as_secs_f64() * 1e3);
        // Baseline: a policy every agent programs, until every agent reports it.
        let t = Instant::now();
        gingham(&[
            "apply",
            "--datastore",
            &lab.datastore,
            "-f",
            write_tmp(
                &lab.dir,
                &format!(
                    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g{i}}}\nspec: {{selector: all(), order: {}, ingress: [{{action: Pass}}]}}\n",
                    1000 + i
                ),
            )
            .to_str()
            .expect("utf-8"),
        ]);
        lab.wait();
        policy_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "routes on all 10 nodes: p50 {:.0} ms, max {:.0} ms | a policy on all 10 agents (baseline): p50 {:.0} ms, max {:.0} ms",
        quantile(route_ms.clone(), 0.5),
        quantile(route_ms, 1.0),
        quantile(policy_ms.clone(), 0.5),
        quantile(policy_ms, 1.0),
    );
}

fn write_tmp(dir: &Path, text: &str) -> PathBuf {
    let path = dir.with_extension("write.yaml");
    std::fs::write(&path, text).expect("written");
    path
}

fn datastore(lab: &Lab) -> Arc<dyn Datastore> {
    let path = lab
        .datastore
        .strip_prefix("sqlite:")
        .expect("the bench's labs are on SQLite");
    Arc::new(gingham_datastore_sqlite::SqliteStore::open(Path::new(path)).expect("opens"))
}

/// What a joining node's calico-node does: writes its Node (its address, in rack r2) and takes
/// its VXLAN tunnel address from a block it claims (`tunnels::reconcile`, calico-node's
/// allocateip). Returns the claimed block.
fn join_node(store: &Arc<dyn Datastore>, name: &str, address: &str) -> IpNet {
    let node = format!(
        "apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {name}, labels: {{rack: r2}}}}
spec:
  bgp: {{ipv4Address: {address}/24}}
"
    );
    let resources = gingham_model::load_resources("joiner.yaml", &node).expect("a valid Node");
    let client = gingham_api::Client::new(store.clone());
    client
        .write_all(&resources, gingham_api::WriteMode::Apply)
        .expect("the Node is written");
    let (pools, _) = client
        .list(gingham_model::Kind::IpPool, None)
        .expect("the pools");
    let pools: Vec<gingham_model::IpPool> = pools
        .into_iter()
        .filter_map(|r| match r {
            gingham_model::Resource::IpPool(p) => Some(p),
            _ => None,
        })
        .collect();
    let node = gingham_agent::tunnels::reconcile(store.as_ref(), name, &pools, &[])
        .expect("a tunnel address")
        .expect("the Node exists");
    let tunnel: std::net::IpAddr = node
        .spec
        .ipv4_vxlan_tunnel_addr
        .parse()
        .expect("a VXLAN tunnel address");
    IpNet::new(tunnel, 26).expect("a /26").trunc()
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if packets::run_if_helper(&args) {
        return;
    }
    gingham_testkit::require_root();
    gingham_testkit::require_tool("taskset");
    gingham_testkit::require_tool("bird");
    pods_across_nodes();
    new_node_routes();
}
