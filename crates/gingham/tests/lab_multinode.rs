//! Issue 12's acceptance in labs with two racks and the agent doing the networking: BIRD
//! (the node-to-node mesh plus a BGP router per rack) and VXLAN (CrossSubnet). Real packets
//! between every pod, the routes each backend programs, BIRD crashing under an established
//! flow (graceful restart), a deleted Node's routes, neighbours and FDB entries going away,
//! borrowed addresses, natOutgoing seen from outside, and seed 000 with the VXLAN tunnel
//! address. System tests: root, iproute2, nftables; BIRD where the fabric is BGP.

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use common::{Fabric, TestLab, lab_exec_ok, pod_address, try_json, wait_until};
use serde_json::Value;

const EXTERNAL: &str = "203.0.113.10";
const POD_POOL: &str = "10.244.0.0/16";
const MASQ_POOL: &str = "10.245.0.0/24";
/// One block: the first pod there makes it its node's, addresses others ask for are borrowed.
const BORROW_POOL: &str = "10.246.0.0/26";
/// The nodes' addresses in [`common::RACKS`].
const NODE_A: &str = "10.91.1.2";
const NODE_B: &str = "10.91.1.3";
const NODE_C: &str = "10.91.2.2";
const ROUTER_R1: &str = "10.91.1.1";
const ROUTER_R2: &str = "10.91.2.1";

/// The pools of [`Fabric`] `f` (`pods`, `masq` with natOutgoing, `borrow` with one /26 block)
/// and the namespace `shop`, and the fabric's own documents.
fn pools(f: Fabric) -> String {
    format!(
        "{}{}{}{}apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n",
        f.pool("pods", POD_POOL, ""),
        f.pool("masq", MASQ_POOL, "natOutgoing: true"),
        f.pool("borrow", BORROW_POOL, "blockSize: 26"),
        f.docs()
    )
}

/// A pod on `node` serving TCP 80 and UDP 53, with Calico's annotation `ann` (`ipv4pools` or
/// `ipAddrs`) set to `[value]`.
fn pod(name: &str, node: &str, ann: &str, value: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, annotations: {{cni.projectcalico.org/{ann}: '[\"{value}\"]'}}}}\nspec: {{nodeName: {node}, containers: [{{name: c, ports: [{{containerPort: 80}}, {{containerPort: 53, protocol: UDP}}]}}]}}\n"
    )
}

/// Every pod of `pods` reaches every other one, on TCP 80 and UDP 53 (every cell).
fn full_mesh(lab: &TestLab, pods: &[&str]) {
    for (proto, port) in [("TCP", 80), ("UDP", 53)] {
        let m = common::probe(&lab.dir, proto, port);
        common::assert_probe(&format!("{proto}/{port}"), &m, pods, &|_, _| "connected");
    }
}

/// The IPv4 routes of a lab namespace to the pools (10.24x), one per line.
fn pod_routes(lab: &TestLab, target: &str) -> Vec<String> {
    lab_exec_ok(&lab.dir, target, &["ip", "-4", "route"])
        .lines()
        .filter(|l| l.starts_with("10.24") || l.starts_with("blackhole 10.24"))
        .map(str::to_owned)
        .collect()
}

/// Whether `cidr` (`A.B.C.D/N`) holds `ip`.
fn holds(cidr: &str, ip: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(net), Ok(len), Ok(ip)) = (
        net.parse::<Ipv4Addr>(),
        len.parse::<u32>(),
        ip.parse::<Ipv4Addr>(),
    ) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

/// The route (a line of `ip -4 route`) of `target` whose destination holds `ip`, with `word`.
fn route_to(lab: &TestLab, target: &str, ip: &str, word: &str) -> Option<String> {
    pod_routes(lab, target)
        .into_iter()
        .find(|r| r.contains(word) && r.split_whitespace().next().is_some_and(|d| holds(d, ip)))
}

/// The node's VXLAN tunnel address (its Node's `spec.ipv4VXLANTunnelAddr`).
fn tunnel_address(lab: &TestLab, node: &str) -> String {
    let n: Value = serde_json::from_str(&common::ok_in(
        &["get", "node", node, "-o", "json", "--datastore", &lab.ds],
        None,
    ))
    .unwrap();
    n["spec"]["ipv4VXLANTunnelAddr"]
        .as_str()
        .unwrap_or_else(|| panic!("{node} has no VXLAN tunnel address: {n}"))
        .to_owned()
}

/// The pid of the BIRD whose control socket is in `node`'s run directory.
fn bird_pid(lab: &TestLab, node: &str) -> Option<u32> {
    let socket = format!("{}/run/{node}/bird.ctl", lab.dir);
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        (args.first()?.ends_with(b"bird") && args.contains(&socket.as_bytes())).then_some(pid)
    })
}

/// Waits until `node`'s BIRD has a session Established with each of `peers`.
fn wait_established(lab: &TestLab, node: &str, peers: &[&str]) {
    wait_until(&format!("{node}'s sessions with {peers:?}"), 60, || {
        let status = common::node_status(&lab.dir, node);
        let empty = Vec::new();
        let got = status["ipv4"]["peers"].as_array().unwrap_or(&empty);
        let up = |ip: &str| {
            got.iter()
                .any(|p| p["peerAddress"] == ip && p["info"] == "Established")
        };
        peers
            .iter()
            .all(|p| up(p))
            .then_some(())
            .ok_or_else(|| status.to_string())
    });
}

/// `gingham lab traffic` from a pod: one TCP connection held for `seconds`, a byte echoed
/// through it every 20 ms; its JSON report when it ends.
fn held_connection(lab: &TestLab, from: &str, to_ip: &str, seconds: u32) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["lab", "exec", "--dir", &lab.dir, from, "--"])
        .arg(env!("CARGO_BIN_EXE_gingham"))
        .args(["lab", "traffic", to_ip, "--port", "80", "--seconds"])
        .arg(seconds.to_string())
        .env_remove("GINGHAM_DATASTORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// BGP lab: two racks, `networking: bird`, an unencapsulated pool, the router peering with
/// each rack. Every pod reaches every pod; node-a's `node status` shows the mesh and the
/// router Established; the router's kernel has the blocks from BGP; BIRD killed on node-c is
/// restarted by the agent and a TCP flow through node-c never notices (graceful restart);
/// node-c's Node deleted, its routes leave the other nodes and the router.
#[test]
fn sys_bgp_lab_connects_racks_and_survives_bird_crash() {
    let f = Fabric::Bird;
    f.require();
    gingham_testkit::require_tool("ss");
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p2", "node-b", "ipv4pools", "pods"),
        pod("p3", "node-c", "ipv4pools", "pods"),
    ]
    .concat();
    let lab = common::lab_up("m", &f.spec(""), &format!("{}{pods}", pools(f)));
    let d = lab.dir.as_str();
    assert!(
        lab.up
            .contains("3 nodes in 2 racks, 3 pods, networking bird"),
        "{}",
        lab.up
    );
    f.wait_converged(d);

    // node-a's sessions: node-b and node-c (the mesh) and its rack's router.
    let status = common::node_status(d, "node-a");
    let peers = status["ipv4"]["peers"].as_array().unwrap();
    let mut got: Vec<(String, String)> = peers
        .iter()
        .map(|p| {
            (
                p["peerAddress"].as_str().unwrap().to_owned(),
                p["info"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let want = [ROUTER_R1, NODE_B, NODE_C].map(|ip| (ip.to_owned(), "Established".to_owned()));
    assert_eq!(got, want, "{status}");
    for p in peers {
        let kind = p["peerType"].as_str().unwrap();
        if p["peerAddress"] == ROUTER_R1 {
            assert_ne!(kind, "node-to-node mesh", "{p}");
        } else {
            assert_eq!(kind, "node-to-node mesh", "{p}");
        }
    }

    let all = ["shop/p1", "shop/p2", "shop/p3"];
    full_mesh(&lab, &all);

    // The router's kernel: every node's block, learned by BGP, via that node.
    let p3 = pod_address(&lab, "shop/p3");
    for (p, node) in [
        ("shop/p1", NODE_A),
        ("shop/p2", NODE_B),
        ("shop/p3", NODE_C),
    ] {
        let ip = pod_address(&lab, p);
        let r = route_to(&lab, "router", &ip, "proto bird")
            .unwrap_or_else(|| panic!("{ip}: {:?}", pod_routes(&lab, "router")));
        assert!(r.contains(&format!("via {node} ")), "{r}");
    }
    let c_block = route_to(&lab, "router", &p3, "proto bird")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    // BIRD on node-c crashes under an established flow from node-a's pod to node-c's.
    let before = bird_pid(&lab, "node-c").expect("node-c's BIRD");
    let flow = held_connection(&lab, "shop/p1", &p3, 15);
    let p1_ns = common::lab_state(d)["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p1")
        .and_then(|p| p["netns"].as_str())
        .unwrap()
        .to_owned();
    wait_until("the flow p1 -> p3 established", 10, || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &p1_ns,
                "ss",
                "-Htn",
                "state",
                "established",
            ])
            .arg(format!("dst {p3}:80"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.trim().is_empty()).then_some(()).ok_or(text)
    });
    let kill = Command::new("kill")
        .args(["-9", &before.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Until node-c's BIRD is back with its sessions, the router keeps node-c's block (graceful
    // restart: stale, not withdrawn): watched every 10 ms straight in the router's namespace.
    let router_ns = common::lab_state(d)["router"]["netns"]
        .as_str()
        .unwrap()
        .to_owned();
    let router_has_c = || {
        let out = Command::new("ip")
            .args(["-n", &router_ns, "-4", "route", "show", "exact", &c_block])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("via {NODE_C} "))
    };
    let after = wait_until("node-c's BIRD restarted by its agent", 30, || {
        for _ in 0..20 {
            assert!(
                router_has_c(),
                "the router lost node-c's block while node-c's BIRD was down"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        bird_pid(&lab, "node-c")
            .filter(|p| *p != before)
            .ok_or_else(|| "no new BIRD".to_owned())
    });
    assert_ne!(after, before);
    wait_until("node-c's sessions Established again", 60, || {
        for _ in 0..20 {
            assert!(
                router_has_c(),
                "the router lost node-c's block while node-c's BIRD was restarting"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let status = common::node_status(d, "node-c");
        let peers = status["ipv4"]["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = |ip: &str| {
            peers
                .iter()
                .any(|p| p["peerAddress"] == ip && p["info"] == "Established")
        };
        [ROUTER_R2, NODE_A, NODE_B]
            .iter()
            .all(|ip| up(ip))
            .then_some(())
            .ok_or(status.to_string())
    });
    wait_established(&lab, "node-a", &[NODE_C]);
    // The flow was opened before the crash and is still running after the restart.
    let mut flow = flow;
    assert!(
        flow.try_wait().unwrap().is_none(),
        "the held connection ended before BIRD was back"
    );
    let out = flow.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 0, "the flow broke: {report}");
    assert!(report["ok"].as_u64().unwrap() > 100, "{report}");
    let log = std::fs::read_to_string(format!("{d}/agent-node-c.log")).unwrap();
    assert!(log.contains("restarting"), "{log}");
    // And new connections still work everywhere.
    f.wait_converged(d);
    full_mesh(&lab, &all);

    // node-c's Node deleted: its block leaves the other nodes' and the router's kernels (the
    // mesh sessions to node-c go; node-c's agent stops its BIRD, so the router's session drops
    // too).
    assert_eq!(
        common::try_outcome(d, "shop/p1", "shop/p3", "TCP", 80),
        "connected"
    );
    common::ok_in(&["delete", "node", "node-c", "--datastore", &lab.ds], None);
    wait_until(
        "node-c's block gone from node-a, node-b and the router",
        60,
        || {
            let left: Vec<String> = ["node-a", "node-b", "router"]
                .iter()
                .flat_map(|t| {
                    pod_routes(&lab, t)
                        .into_iter()
                        .filter(|r| r.starts_with(&format!("{c_block} ")) || r.contains(NODE_C))
                        .map(move |r| format!("{t}: {r}"))
                })
                .collect();
            left.is_empty().then_some(()).ok_or(format!("{left:?}"))
        },
    );
    let status = common::node_status(d, "node-a");
    let peers = status["ipv4"]["peers"].as_array().unwrap();
    assert!(
        !peers.iter().any(|p| p["peerAddress"] == NODE_C),
        "{status}"
    );
    // node-a and node-b still reach each other.
    assert_eq!(
        common::try_outcome(d, "shop/p1", "shop/p2", "TCP", 80),
        "connected"
    );
    common::down_leaves_nothing(&lab);
}

/// VXLAN lab: the same racks, `networking: vxlan`, `vxlanMode: CrossSubnet`. Every pod reaches
/// every pod; within a rack a plain route via the node, across racks through `vxlan.calico`
/// via the other node's tunnel address; the first pod on a node that had none becomes
/// reachable; node-c's Node deleted, its routes, neighbour and FDB entries leave the others.
#[test]
fn sys_vxlan_lab_routes_within_and_across_racks() {
    let f = Fabric::Vxlan;
    f.require();
    gingham_testkit::require_tool("bridge");
    // node-b starts without pods.
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p3", "node-c", "ipv4pools", "pods"),
    ]
    .concat();
    let lab = common::lab_up("v", &f.spec(""), &format!("{}{pods}", pools(f)));
    let d = lab.dir.as_str();
    f.wait_converged(d);
    full_mesh(&lab, &["shop/p1", "shop/p3"]);

    // The first pod on node-b: reachable from every pod and node.
    let added = pod("p2", "node-b", "ipv4pools", "pods");
    let file = std::path::Path::new(d).parent().unwrap().join("p2.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n{added}"),
    )
    .unwrap();
    common::ok_in(
        &["lab", "apply", "--dir", d, "-f", file.to_str().unwrap()],
        None,
    );
    f.wait_converged(d);
    let all = ["shop/p1", "shop/p2", "shop/p3"];
    full_mesh(&lab, &all);
    let state = common::lab_state(d);
    let p2 = state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p2")
        .and_then(|p| p["ip"].as_str())
        .unwrap()
        .to_owned();
    for node in ["node-a", "node-b", "node-c"] {
        assert_eq!(
            common::try_outcome(d, node, "shop/p2", "TCP", 80),
            "connected",
            "{node}"
        );
    }

    // node-a's routes: node-b's block via node-b on eth0; node-c's through the tunnel.
    let tc = tunnel_address(&lab, "node-c");
    let p3 = pod_address(&lab, "shop/p3");
    let same = route_to(&lab, "node-a", &p2, "via").expect("a route to node-b's block");
    assert!(
        same.contains(&format!("via {NODE_B} dev eth0")) && !same.contains("vxlan.calico"),
        "{same}"
    );
    let cross = route_to(&lab, "node-a", &p3, "via").expect("a route to node-c's block");
    assert!(
        cross.contains(&format!("via {tc} dev vxlan.calico")) && cross.contains("onlink"),
        "{cross}"
    );
    let c_block = cross.split_whitespace().next().unwrap().to_owned();
    // The tunnel's neighbour and FDB entries for node-c: its VTEP's MAC at node-c's address.
    let neigh = lab_exec_ok(
        d,
        "node-a",
        &["ip", "-4", "neigh", "show", "dev", "vxlan.calico"],
    );
    let mac = neigh
        .lines()
        .find(|l| l.starts_with(&format!("{tc} ")))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "lladdr").nth(1))
        .unwrap_or_else(|| panic!("no neighbour {tc}: {neigh}"))
        .to_owned();
    let fdb = |node: &str| lab_exec_ok(d, node, &["bridge", "fdb", "show", "dev", "vxlan.calico"]);
    let a_fdb = fdb("node-a");
    assert!(
        a_fdb
            .lines()
            .any(|l| l.starts_with(&mac) && l.contains(&format!("dst {NODE_C} "))),
        "{a_fdb}"
    );

    // node-c's Node deleted: its block's route, neighbour and FDB entry leave node-a and node-b.
    common::ok_in(&["delete", "node", "node-c", "--datastore", &lab.ds], None);
    for node in ["node-a", "node-b"] {
        wait_until(
            &format!("node-c's tunnel state gone from {node}"),
            30,
            || {
                let mut left: Vec<String> = pod_routes(&lab, node)
                    .into_iter()
                    .filter(|r| r.starts_with(&format!("{c_block} ")) || r.contains(&tc))
                    .collect();
                let neigh = lab_exec_ok(
                    d,
                    node,
                    &["ip", "-4", "neigh", "show", "dev", "vxlan.calico"],
                );
                left.extend(
                    neigh
                        .lines()
                        .filter(|l| l.starts_with(&format!("{tc} ")))
                        .map(str::to_owned),
                );
                left.extend(
                    fdb(node)
                        .lines()
                        .filter(|l| l.starts_with(&mac) || l.contains(&format!("dst {NODE_C} ")))
                        .map(str::to_owned),
                );
                left.is_empty().then_some(()).ok_or(format!("{left:?}"))
            },
        );
    }
    // What stays works.
    full_mesh_pair(&lab, "shop/p1", "shop/p2");
    common::down_leaves_nothing(&lab);
}

/// The MTU of interface `ifname` in a lab namespace (`ip -o link show`).
fn link_mtu(dir: &str, target: &str, ifname: &str) -> u32 {
    let out = lab_exec_ok(dir, target, &["ip", "-o", "link", "show", "dev", ifname]);
    out.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mtu in {out}"))
}

/// Pod MTU in a VXLAN lab: each agent writes felix's pod MTU (the node's `eth0`, 1500, minus
/// VXLAN's 50) to the MTU file in its run directory, the CNI plugin gives it to both ends of
/// the pod's veth when the network configuration sets no `mtu`, and full-size packets cross
/// `vxlan.calico`: a ping of the pod MTU with DF set, and a 4 MB TCP transfer that never needs
/// path MTU discovery (no PMTU exception cached in the sending pod).
#[test]
fn sys_vxlan_lab_pods_get_the_tunnel_mtu() {
    let f = Fabric::Vxlan;
    f.require();
    gingham_testkit::require_tool("nc");
    gingham_testkit::require_tool("ping");
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p3", "node-c", "ipv4pools", "pods"),
    ]
    .concat();
    let lab = common::lab_up("u", &f.spec(""), &format!("{}{pods}", pools(f)));
    let d = lab.dir.as_str();
    f.wait_converged(d);
    let tunnel = link_mtu(d, "node-a", "vxlan.calico");
    assert_eq!(tunnel, link_mtu(d, "node-a", "eth0") - 50, "vxlan.calico");
    for node in ["node-a", "node-b", "node-c"] {
        let file = std::path::Path::new(d).join("run").join(node).join("mtu");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap_or_default(),
            tunnel.to_string(),
            "{}",
            file.display()
        );
    }
    assert_eq!(link_mtu(d, "shop/p1", "eth0"), tunnel, "p1's eth0");
    assert_eq!(link_mtu(d, "shop/p3", "eth0"), tunnel, "p3's eth0");
    let host_side = lab_exec_ok(d, "node-a", &["ip", "-o", "link", "show", "type", "veth"]);
    let cali: Vec<&str> = host_side.lines().filter(|l| l.contains(": cali")).collect();
    assert!(
        !cali.is_empty() && cali.iter().all(|l| l.contains(&format!(" mtu {tunnel} "))),
        "{host_side}"
    );

    let p3 = pod_address(&lab, "shop/p3");
    // The route crosses the tunnel (node-c is in the other rack).
    let route = lab_exec_ok(d, "node-a", &["ip", "-4", "route", "get", &p3]);
    assert!(route.contains("dev vxlan.calico"), "{route}");
    // A packet of the pod's MTU, DF set, gets through whole.
    let size = (tunnel - 28).to_string();
    lab_exec_ok(
        d,
        "shop/p1",
        &["ping", "-c", "2", "-W", "2", "-M", "do", "-s", &size, &p3],
    );
    // A full-size TCP transfer: 4 MB from p1 to p3.
    let receiver = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["lab", "exec", "--dir", d, "shop/p3", "--"])
        .args(["sh", "-c", "timeout 30 nc -l 9000 | wc -c"])
        .env_remove("GINGHAM_DATASTORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("p1 sending 4 MB to p3", 20, || {
        let out = common::lab_exec(
            d,
            "shop/p1",
            &[
                "sh",
                "-c",
                &format!("head -c 4000000 /dev/zero | nc -N -w 10 {p3} 9000"),
            ],
        );
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    let got = receiver.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "4000000",
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let cached = lab_exec_ok(d, "shop/p1", &["ip", "-4", "route", "get", &p3]);
    assert!(
        !cached.contains(" mtu "),
        "p1 had to learn a smaller path MTU to {p3}: {cached}"
    );
    common::down_leaves_nothing(&lab);
}

/// One TCP connection each way between two pods.
fn full_mesh_pair(lab: &TestLab, a: &str, b: &str) {
    for (from, to) in [(a, b), (b, a)] {
        assert_eq!(
            common::try_outcome(&lab.dir, from, to, "TCP", 80),
            "connected",
            "{from} -> {to}"
        );
    }
}

/// Borrowed addresses (pods whose `ipAddrs` fall in another node's block) in a rack lab with
/// the agent routing: every pod and every node reaches them, within a rack and across.
fn borrowed_addresses(f: Fabric, prefix: &str) {
    f.require();
    let pods = [
        // node-a claims the borrow pool's only block; b2 (other rack) and b3 (same rack)
        // borrow from it.
        pod("b1", "node-a", "ipv4pools", "borrow"),
        pod("b2", "node-c", "ipAddrs", "10.246.0.40"),
        pod("b3", "node-b", "ipAddrs", "10.246.0.41"),
        pod("p3", "node-c", "ipv4pools", "pods"),
    ]
    .concat();
    let lab = common::lab_up(prefix, &f.spec(""), &format!("{}{pods}", pools(f)));
    let d = lab.dir.as_str();
    assert_eq!(pod_address(&lab, "shop/b2"), "10.246.0.40");
    assert_eq!(pod_address(&lab, "shop/b3"), "10.246.0.41");
    assert!(pod_address(&lab, "shop/b1").starts_with("10.246.0."));
    f.wait_converged(d);
    full_mesh(&lab, &["shop/b1", "shop/b2", "shop/b3", "shop/p3"]);
    for node in ["node-a", "node-b", "node-c"] {
        for to in ["shop/b1", "shop/b2", "shop/b3"] {
            assert_eq!(
                common::try_outcome(d, node, to, "TCP", 80),
                "connected",
                "{node} -> {to}"
            );
        }
    }
    common::down_leaves_nothing(&lab);
}

#[test]
fn sys_borrowed_addresses_in_a_bird_lab() {
    borrowed_addresses(Fabric::Bird, "b");
}

#[test]
fn sys_borrowed_addresses_in_a_vxlan_lab() {
    borrowed_addresses(Fabric::Vxlan, "w");
}

/// natOutgoing with BGP: the router learned the pods' routes, so a pod of a pool without
/// natOutgoing reaches the external host with its own address; with natOutgoing, with its
/// node's. From both racks, on TCP and UDP.
#[test]
fn sys_nat_outgoing_with_bgp() {
    let f = Fabric::Bird;
    f.require();
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p3", "node-c", "ipv4pools", "pods"),
        pod("m1", "node-a", "ipv4pools", "masq"),
        pod("m3", "node-c", "ipv4pools", "masq"),
    ]
    .concat();
    let lab = common::lab_up(
        "n",
        &f.spec(&format!("external: {{address: {EXTERNAL}}}")),
        &format!("{}{pods}", pools(f)),
    );
    let d = lab.dir.as_str();
    f.wait_converged(d);
    // The router knows the pods only from BGP.
    let router = pod_routes(&lab, "router");
    assert!(
        !router.is_empty() && router.iter().all(|r| r.contains("proto bird")),
        "{router:?}"
    );
    for (from, node_ip) in [
        ("shop/p1", None),
        ("shop/p3", None),
        ("shop/m1", Some(NODE_A)),
        ("shop/m3", Some(NODE_C)),
    ] {
        let own = pod_address(&lab, from);
        for (proto, port) in [("TCP", 80), ("UDP", 53)] {
            let v = try_json(d, from, "external", proto, port);
            assert_eq!(v["outcome"], "connected", "{from} {proto}: {v}");
            assert_eq!(v["peer"], node_ip.unwrap_or(&own), "{from} {proto}: {v}");
        }
    }
    common::down_leaves_nothing(&lab);
}

/// Seed 000 with VXLAN: node-a sends to a pod across racks from its tunnel address, so a
/// policy that lets in only host endpoints' addresses drops it until node-a's HostEndpoint
/// also expects the tunnel address; `gingham explain` says so.
#[test]
fn sys_seed_000_with_the_vxlan_tunnel_address() {
    let f = Fabric::Vxlan;
    f.require();
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p2", "node-b", "ipv4pools", "pods"),
        pod("p3", "node-c", "ipv4pools", "pods"),
    ]
    .concat();
    let lab = common::lab_up("t", &f.spec(""), &format!("{}{pods}", pools(f)));
    let d = lab.dir.as_str();
    f.wait_converged(d);
    let ta = tunnel_address(&lab, "node-a");
    let p3 = pod_address(&lab, "shop/p3");
    let get = lab_exec_ok(d, "node-a", &["ip", "-4", "route", "get", &p3]);
    assert!(get.contains(&format!("src {ta} ")), "{get}");
    let v = try_json(d, "node-a", "shop/p3", "TCP", 80);
    assert_eq!(
        (v["outcome"].as_str(), v["peer"].as_str()),
        (Some("connected"), Some(ta.as_str())),
        "{v}"
    );

    let apply =
        |yaml: &str| common::ok_in(&["apply", "-f", "-", "--datastore", &lab.ds], Some(yaml));
    // Only nodes may reach shop's pods; node-a's HostEndpoint expects its eth0 address.
    apply(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: allow-from-nodes}\nspec:\n  selector: projectcalico.org/namespace == 'shop'\n  ingress: [{action: Allow, source: {selector: role == 'node'}}]\n",
    );
    let hep = |ips: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: node-a-eth0, labels: {{role: node}}}}\nspec: {{node: node-a, interfaceName: eth0, expectedIPs: [{ips}], profiles: [projectcalico-default-allow]}}\n"
        )
    };
    apply(&hep(NODE_A));
    common::wait_programmed(d);
    assert_eq!(
        common::try_outcome(d, "node-a", "shop/p3", "TCP", 80),
        "no-answer"
    );
    // Within the rack (CrossSubnet: no tunnel) node-a sends from its own address: allowed.
    let v = try_json(d, "node-a", "shop/p2", "TCP", 80);
    assert_eq!(
        (v["outcome"].as_str(), v["peer"].as_str()),
        (Some("connected"), Some(NODE_A)),
        "{v}"
    );
    let why = common::explain(&lab.ds, "node-a", "shop/p2", 80);
    assert!(why.contains("ALLOWED") && !why.contains(&ta), "{why}");
    let why = common::explain(&lab.ds, "node-a", "shop/p3", 80);
    assert!(
        why.contains("DENIED")
            && why.contains(&format!("from its tunnel address {ta}"))
            && why.contains(&format!("The source address {ta} is node node-a's"))
            && why.contains("expectedIPs"),
        "{why}"
    );
    // The fix: the tunnel address among the HostEndpoint's expectedIPs.
    apply(&hep(&format!("{NODE_A}, {ta}")));
    common::wait_programmed(d);
    let v = try_json(d, "node-a", "shop/p3", "TCP", 80);
    assert_eq!(
        (v["outcome"].as_str(), v["peer"].as_str()),
        (Some("connected"), Some(ta.as_str())),
        "{v}"
    );
    assert!(common::explain(&lab.ds, "node-a", "shop/p3", 80).contains("ALLOWED"));
    // Pods are still shut out.
    assert_eq!(
        common::try_outcome(d, "shop/p1", "shop/p3", "TCP", 80),
        "no-answer"
    );
    common::down_leaves_nothing(&lab);
}

/// The packets counted by the rule of `node`'s `input` chain whose comment has `note`.
fn input_counter(lab: &TestLab, node: &str, note: &str) -> u64 {
    let chain = lab_exec_ok(
        &lab.dir,
        node,
        &["nft", "list", "chain", "inet", "gingham", "input"],
    );
    let line = chain
        .lines()
        .find(|l| l.contains(note))
        .unwrap_or_else(|| panic!("no rule {note:?} in {node}'s input chain:\n{chain}"));
    line.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

/// The tunnels between nodes, as felix filters them: VXLAN between nodes passes host endpoint
/// policy that allows nothing but SSH (felix's "Allow VXLAN packets from/to allowed hosts"), a
/// VXLAN packet from anything that is not a node is dropped (the router's, counted by the
/// rule), and the outer packets between nodes leave no conntrack entries behind (each
/// connection inside the tunnel has its own outer source port: tracked, they would cost two
/// entries per connection on each node).
#[test]
fn sys_vxlan_between_nodes_passes_host_endpoints_untracked_and_only_from_nodes() {
    let f = Fabric::Vxlan;
    f.require();
    gingham_testkit::require_tool("conntrack");
    let pods = [
        pod("p1", "node-a", "ipv4pools", "pods"),
        pod("p3", "node-c", "ipv4pools", "pods"),
    ]
    .concat();
    let lab = common::lab_up("h", &f.spec(""), &format!("{}{pods}", pools(f)));
    let d = lab.dir.as_str();
    f.wait_converged(d);
    // Host endpoints on both nodes' eth0 whose policy allows SSH only, both ways.
    let mut hosts = String::new();
    for (node, ip) in [("node-a", NODE_A), ("node-c", NODE_C)] {
        hosts.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: {node}-eth0, labels: {{hep: 'yes'}}}}\nspec: {{node: {node}, interfaceName: eth0, expectedIPs: [{ip}]}}\n---\n"
        ));
    }
    hosts.push_str("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: hosts-ssh-only}\nspec: {selector: \"hep == 'yes'\", types: [Ingress, Egress], ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}], egress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}\n");
    let file = std::path::Path::new(d).parent().unwrap().join("hosts.yaml");
    std::fs::write(&file, hosts).unwrap();
    common::ok_in(
        &["lab", "apply", "--dir", d, "-f", file.to_str().unwrap()],
        None,
    );
    common::wait_programmed(d);
    for (from, to) in [("shop/p1", "shop/p3"), ("shop/p3", "shop/p1")] {
        for _ in 0..3 {
            assert_eq!(
                common::try_outcome(d, from, to, "TCP", 80),
                "connected",
                "{from} → {to} through the tunnel, past the host endpoints"
            );
        }
    }
    for node in ["node-a", "node-c"] {
        let out = lab_exec_ok(
            d,
            node,
            &["conntrack", "-L", "-p", "udp", "--dport", "4789"],
        );
        assert!(
            out.trim().is_empty(),
            "{node} tracks outer VXLAN packets:\n{out}"
        );
    }
    // A VXLAN packet from the router (not a node) to node-c: dropped, and counted as such.
    let before = input_counter(&lab, "node-c", "VXLAN from elsewhere");
    lab_exec_ok(
        d,
        "router",
        &[
            "bash",
            "-c",
            &format!("echo not-a-vtep > /dev/udp/{NODE_C}/4789"),
        ],
    );
    wait_until("the router's VXLAN packet counted as dropped", 10, || {
        let now = input_counter(&lab, "node-c", "VXLAN from elsewhere");
        (now == before + 1)
            .then_some(())
            .ok_or(format!("{before} → {now}"))
    });
    common::down_leaves_nothing(&lab);
}
