//! Labs with a real underlay: racks (a subnet and a bridge each) joined by a router namespace,
//! an external host beyond the router, the lab's own pod routes with `networking: none`
//! (borrowed addresses included), natOutgoing seen from outside, `lab exec` with the node's
//! environment, the router's BIRD. System tests (root, iproute2; BIRD where named).

mod common;

use std::path::Path;

use common::{TestLab, ok_in};
use serde_json::Value;

/// Two racks: r1 (node-a, node-b) and r2 (node-c).
const RACKS: &str = "racks: [{name: r1, subnet: 10.91.1.0/24, nodes: [node-a, node-b]}, {name: r2, subnet: 10.91.2.0/24, nodes: [node-c]}]";
const EXTERNAL: &str = "203.0.113.10";

/// Three pools: `pods` (no NAT), `masq` (natOutgoing) and `borrow` (one block: the first pod
/// there makes it its node's, the addresses others ask for in it are borrowed).
const POOLS: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.244.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: masq}\nspec: {cidr: 10.245.0.0/24, natOutgoing: true}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: borrow}\nspec: {cidr: 10.246.0.0/26, blockSize: 26}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

/// A pod on `node` serving TCP 80 and UDP 53, with Calico's annotation `ann` (`ipv4pools` or
/// `ipAddrs`) set to `[value]`.
fn pod(name: &str, node: &str, ann: &str, value: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, annotations: {{cni.projectcalico.org/{ann}: '[\"{value}\"]'}}}}\nspec: {{nodeName: {node}, containers: [{{name: c, ports: [{{containerPort: 80}}, {{containerPort: 53, protocol: UDP}}]}}]}}\n"
    )
}

/// The address `lab up` printed for a pod.
fn address(lab: &TestLab, pod: &str) -> String {
    lab.up
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pod))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("{pod} not in {}", lab.up))
        .to_owned()
}

fn exec(lab: &TestLab, target: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["lab", "exec", "--dir", &lab.dir, target, "--"];
    args.extend_from_slice(cmd);
    common::gingham_in(&args, None)
}

fn exec_ok(lab: &TestLab, target: &str, cmd: &[&str]) -> String {
    let out = exec(lab, target, cmd);
    assert!(
        out.status.success(),
        "lab exec {target} {cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPv4 routes of a lab namespace to the pools (10.244-10.246), one per line.
fn pod_routes(lab: &TestLab, target: &str) -> Vec<String> {
    exec_ok(lab, target, &["ip", "-4", "route"])
        .lines()
        .filter(|l| l.starts_with("10.24") || l.starts_with("blackhole 10.24"))
        .map(str::to_owned)
        .collect()
}

/// Takes the lab down and checks that nothing of it is left.
fn down_leaves_nothing(lab: &TestLab) {
    ok_in(&["lab", "down", "--dir", &lab.dir], None);
    assert_eq!(
        common::leftovers(&lab.name, Path::new(&lab.dir)),
        Vec::<String>::new()
    );
}

/// Two racks with `networking: none`: the lab routes pods itself (the router with static
/// routes): every pod reaches every pod, borrowed addresses too; the outside sees pods'
/// addresses, or the node's with natOutgoing; `lab exec` gives the node's environment.
#[test]
fn sys_racks_with_lab_routes() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p2", "node-b", "ipv4pools", "pods"),
        pod("p3", "node-c", "ipv4pools", "pods"),
        // node-a claims the borrow pool's only block; b2 (other rack) and b3 (same rack)
        // borrow addresses from it.
        pod("b1", "node-a", "ipv4pools", "borrow"),
        pod("b2", "node-c", "ipAddrs", "10.246.0.40"),
        pod("b3", "node-b", "ipAddrs", "10.246.0.41"),
        pod("m1", "node-a", "ipv4pools", "masq"),
        pod("m3", "node-c", "ipv4pools", "masq"),
    ]
    .concat();
    let lab = common::lab_up(
        "k",
        &format!("{{networking: none, external: {{address: {EXTERNAL}}}, {RACKS}}}"),
        &format!("{POOLS}{pods}"),
    );
    let d = lab.dir.as_str();
    assert!(
        lab.up
            .contains("3 nodes in 2 racks, 8 pods, networking none"),
        "{}",
        lab.up
    );
    assert!(address(&lab, "shop/b1").starts_with("10.246.0."));
    assert_eq!(address(&lab, "shop/b2"), "10.246.0.40");
    assert_eq!(address(&lab, "shop/b3"), "10.246.0.41");

    // Nodes carry their rack and their address with the rack's prefix.
    let nodes: Value = serde_json::from_str(&ok_in(
        &["get", "nodes", "-o", "json", "--datastore", &lab.ds],
        None,
    ))
    .unwrap();
    let got: Vec<(String, String, String)> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_owned(),
                n["metadata"]["labels"]["rack"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
                n["spec"]["bgp"]["ipv4Address"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
            )
        })
        .collect();
    let want = [
        ("node-a", "r1", "10.91.1.2/24"),
        ("node-b", "r1", "10.91.1.3/24"),
        ("node-c", "r2", "10.91.2.2/24"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(got, want);

    // Every agent runs with the lab's backend, named explicitly, and its own run directory.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(d).join("state.json")).unwrap())
            .unwrap();
    for n in state["nodes"].as_array().unwrap() {
        let pid = n["agent_pid"].as_u64().unwrap();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .replace('\0', " ");
        let run = format!("--run-dir {d}/run/{}", n["name"].as_str().unwrap());
        assert!(
            cmdline.contains("--networking none") && cmdline.contains(&run),
            "{cmdline}"
        );
    }

    // Every pod reaches every pod, across the router and to borrowed addresses.
    common::wait_programmed(d);
    let all = [
        "shop/b1", "shop/b2", "shop/b3", "shop/m1", "shop/m3", "shop/p1", "shop/p2", "shop/p3",
    ];
    for (proto, port) in [("TCP", 80), ("UDP", 53)] {
        let m = common::probe(d, proto, port);
        common::assert_probe(&format!("{proto}/{port}"), &m, &all, &|_, _| "connected");
    }

    // The routes: a node routes its rack's blocks via their node, sends the other rack's to
    // its gateway (the default route), and a borrowed address via the node that holds it (or
    // the gateway); the router holds only the lab's static pod routes.
    let a = pod_routes(&lab, "node-a");
    assert!(
        a.iter()
            .any(|r| r.starts_with("10.246.0.41 via 10.91.1.3 ") && r.contains("proto static")),
        "{a:?}"
    );
    assert!(
        a.iter()
            .any(|r| r.starts_with("10.246.0.40 via 10.91.1.1 ") && r.contains("proto static")),
        "{a:?}"
    );
    let c = pod_routes(&lab, "node-c");
    assert!(
        c.iter()
            .any(|r| r.starts_with("10.246.0.41 via 10.91.2.1 ")),
        "{c:?}"
    );
    assert!(
        !c.iter().any(|r| r.contains("via 10.91.1.")),
        "node-c cannot reach rack r1 directly: {c:?}"
    );
    let router = pod_routes(&lab, "router");
    assert!(
        router.iter().all(|r| r.contains("proto static")),
        "{router:?}"
    );
    for want in [
        "10.246.0.40 via 10.91.2.2 ",
        "10.246.0.41 via 10.91.1.3 ",
        "10.246.0.0/26 via 10.91.1.2 ",
    ] {
        assert!(
            router.iter().any(|r| r.starts_with(want)),
            "{want}: {router:?}"
        );
    }
    let links = exec_ok(&lab, "router", &["ip", "-4", "route"]);
    assert!(
        links.contains("10.91.1.0/24 dev r0") && links.contains("10.91.2.0/24 dev r1"),
        "{links}"
    );
    assert!(!links.contains("default"), "{links}");

    // The outside: a pod's own address without natOutgoing (the router knows the way back),
    // its node's with it; from the other rack too; on TCP and UDP.
    for (from, node_ip) in [
        ("shop/p1", None),
        ("shop/p3", None),
        ("shop/b2", None),
        ("shop/m1", Some("10.91.1.2")),
        ("shop/m3", Some("10.91.2.2")),
    ] {
        let own = address(&lab, from);
        for (proto, port) in [("TCP", 80), ("UDP", 53)] {
            let v = common::try_json(d, from, "external", proto, port);
            assert_eq!(v["outcome"], "connected", "{v}");
            assert_eq!(v["address"], EXTERNAL, "{v}");
            assert_eq!(v["peer"], node_ip.unwrap_or(&own), "{from} {proto}: {v}");
        }
    }
    // natOutgoing leaves traffic to pods alone (their pools are in all-pools), across the
    // router and to a borrowed address too.
    for to in ["shop/p3", "shop/b2", "shop/p2"] {
        let v = common::try_json(d, "shop/m1", to, "TCP", 80);
        assert_eq!(v["peer"], address(&lab, "shop/m1"), "{v}");
    }
    // The external host answers on any port it is asked for, and reaches the pods.
    let v = common::try_json(d, "shop/p2", "external", "TCP", 8443);
    assert_eq!(v["outcome"], "connected", "{v}");
    let v = common::try_json(d, "external", "shop/p3", "TCP", 80);
    assert_eq!(v["peer"], EXTERNAL, "{v}");
    // Nodes and the router are places to try from as well.
    let v = common::try_json(d, "node-c", "external", "TCP", 80);
    assert_eq!(v["peer"], "10.91.2.2", "{v}");
    let v = common::try_json(d, "router", "shop/p1", "TCP", 80);
    assert_eq!(v["outcome"], "connected", "{v}");
    // The router itself: reached (its address in the pod's rack), nothing listens.
    for (from, gateway) in [("shop/p1", "10.91.1.1"), ("shop/p3", "10.91.2.1")] {
        let v = common::try_json(d, from, "router", "TCP", 80);
        assert_eq!(
            (v["outcome"].as_str(), v["address"].as_str()),
            (Some("refused"), Some(gateway)),
            "{v}"
        );
    }
    let out = common::gingham_in(
        &[
            "lab", "try", "--dir", d, "shop/p1", "nowhere", "--port", "80",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "\"nowhere\" is not a pod (with an address), a node, the router or the external host"
        ) && err.contains("node-c, router, external"),
        "{err}"
    );

    // `lab exec` on a node: the node's datastore, run directory and BIRD sockets; the
    // command's exit code.
    let gingham = env!("CARGO_BIN_EXE_gingham");
    let names = exec_ok(&lab, "node-a", &[gingham, "get", "nodes", "-o", "name"]);
    for n in ["node-a", "node-b", "node-c"] {
        assert!(names.contains(n), "{names}");
    }
    let env = exec_ok(
        &lab,
        "node-b",
        &[
            "sh",
            "-c",
            "echo $GINGHAM_RUN_DIR $GINGHAM_BIRD_SOCKET $GINGHAM_BIRD6_SOCKET",
        ],
    );
    assert_eq!(
        env.trim(),
        format!("{d}/run/node-b {d}/run/node-b/bird.ctl {d}/run/node-b/bird6.ctl")
    );
    let status = exec_ok(&lab, "node-a", &[gingham, "node", "status", "-o", "json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["agentRunning"], true, "{status}");
    assert_eq!(
        exec(&lab, "node-c", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(
        exec(
            &lab,
            "external",
            &["ip", "-4", "-o", "addr", "show", "eth0"]
        )
        .status
        .code(),
        Some(0)
    );

    // A borrowed address's routes go with its pod.
    ok_in(&["lab", "delete", "--dir", d, "shop/b2"], None);
    let router = pod_routes(&lab, "router");
    assert!(
        !router.iter().any(|r| r.starts_with("10.246.0.40 ")),
        "{router:?}"
    );
    assert!(
        !pod_routes(&lab, "node-a")
            .iter()
            .any(|r| r.starts_with("10.246.0.40 ")),
        "node-a"
    );

    down_leaves_nothing(&lab);
}

/// A router that does not know the pods (`staticPodRoutes: false`, as a BGP router nobody
/// peers with): a pod without natOutgoing gets no answer from outside (the reply has no way
/// back); with natOutgoing the reply comes to its node, and the server saw the node's address.
/// Pods of one rack still reach each other; the router has no pod route at all.
#[test]
fn sys_router_without_pod_routes() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p2", "node-b", "ipv4pools", "pods"),
        pod("m1", "node-a", "ipv4pools", "masq"),
    ]
    .concat();
    let lab = common::lab_up(
        "s",
        &format!(
            "{{networking: none, router: {{staticPodRoutes: false}}, external: {{address: {EXTERNAL}}}, {RACKS}}}"
        ),
        &format!("{POOLS}{pods}"),
    );
    let d = lab.dir.as_str();
    common::wait_programmed(d);
    assert_eq!(pod_routes(&lab, "router"), Vec::<String>::new());
    let v = common::try_json(d, "shop/p1", "external", "TCP", 80);
    assert_eq!(v["outcome"], "no-answer", "{v}");
    let v = common::try_json(d, "shop/p1", "external", "UDP", 53);
    assert_eq!(v["outcome"], "no-answer", "{v}");
    let v = common::try_json(d, "shop/m1", "external", "TCP", 80);
    assert_eq!(
        (v["outcome"].as_str(), v["peer"].as_str()),
        (Some("connected"), Some("10.91.1.2")),
        "{v}"
    );
    let m = common::probe(d, "TCP", 80);
    common::assert_probe(
        "one rack",
        &m,
        &["shop/m1", "shop/p1", "shop/p2"],
        &|_, _| "connected",
    );
    down_leaves_nothing(&lab);
}

/// `spec.router.asNumber`: the router runs BIRD with a configuration BIRD accepts and a BGP
/// session per node of every rack; `lab exec router` hands `birdc` its socket.
#[test]
fn sys_router_runs_bird_with_a_session_per_node() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("bird");
    gingham_testkit::require_tool("birdc");
    let lab = common::lab_up(
        "b",
        &format!("{{networking: none, router: {{asNumber: 65001}}, {RACKS}}}"),
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 64600}\n",
    );
    let conf = Path::new(&lab.dir).join("router/bird.conf");
    let check = std::process::Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("local 10.91.2.1 as 65001;") && text.contains("neighbor 10.91.2.2 as 64600;"),
        "{text}"
    );
    let protocols = exec_ok(
        &lab,
        "router",
        &[
            "sh",
            "-c",
            "birdc -s \"$GINGHAM_BIRD_SOCKET\" show protocols",
        ],
    );
    for node in ["node_node_a", "node_node_b", "node_node_c"] {
        assert!(
            protocols
                .lines()
                .any(|l| l.starts_with(node) && l.contains(" BGP ")),
            "{node}: {protocols}"
        );
    }
    down_leaves_nothing(&lab);
}

/// A flat lab with `networking: none` routes a borrowed address (a pod whose address is in a
/// block affine to another node) with a /32 via its node: every pod reaches it.
#[test]
fn sys_flat_lab_routes_borrowed_addresses() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    let pods = [
        pod("b1", "node-1", "ipv4pools", "borrow"),
        pod("b2", "node-2", "ipAddrs", "10.246.0.9"),
        pod("p2", "node-2", "ipv4pools", "pods"),
    ]
    .concat();
    let lab = common::lab_up("w", "{nodes: [node-1, node-2]}", &format!("{POOLS}{pods}"));
    let d = lab.dir.as_str();
    common::wait_programmed(d);
    let m = common::probe(d, "TCP", 80);
    common::assert_probe(
        "borrowed",
        &m,
        &["shop/b1", "shop/b2", "shop/p2"],
        &|_, _| "connected",
    );
    let routes = pod_routes(&lab, "node-1");
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("10.246.0.9 via 172.31.0.2 ")),
        "{routes:?}"
    );
    down_leaves_nothing(&lab);
}
