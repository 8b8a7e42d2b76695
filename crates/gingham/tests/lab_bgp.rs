//! The BGP lab of issue 12's acceptance: two racks (two nodes and one node) with
//! `networking: bird`, an unencapsulated pool, and a router with a BGP peering per rack (the
//! user's BGPPeer resources, `nodeSelector: rack == '...'`). Every pod reaches every pod over
//! routes BIRD learned; `lab exec node-a -- gingham node status` shows the mesh peers and the
//! router Established; BIRD killed on a node (as a crash) is restarted by the agent and a flow
//! through that node goes on (graceful restart); deleting a Node resource removes its routes
//! everywhere, the router's included. System test: root, iproute2, nftables, BIRD, netcat.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestLab, ok_in};
use serde_json::Value;

const RACKS: &str = "racks: [{name: r1, subnet: 10.92.1.0/24, nodes: [node-a, node-b]}, {name: r2, subnet: 10.92.2.0/24, nodes: [node-c]}]";

/// The nodes' AS, the router's peerings (one BGPPeer per rack), an unencapsulated pool and a
/// pod per node serving TCP 80. The peerings keep the original next hop: a node passes on the
/// blocks it learned from its mesh peers with those peers as next hop, so the router sends
/// pod traffic to the node that holds the pod (not to a node that would send it back).
const DOCS: &str = "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64600}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack-r1}
spec: {nodeSelector: \"rack == 'r1'\", peerIP: 10.92.1.1, asNumber: 65001, keepOriginalNextHop: true}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack-r2}
spec: {nodeSelector: \"rack == 'r2'\", peerIP: 10.92.2.1, asNumber: 65001, keepOriginalNextHop: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.247.0.0/16, ipipMode: Never, vxlanMode: Never}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: shop}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: shop}
spec: {nodeName: node-b, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p3, namespace: shop}
spec: {nodeName: node-c, containers: [{name: c, ports: [{containerPort: 80}]}]}
";

fn exec(lab: &TestLab, target: &str, cmd: &[&str]) -> String {
    let mut args = vec!["lab", "exec", "--dir", &lab.dir, target, "--"];
    args.extend_from_slice(cmd);
    let out = common::gingham_in(&args, None);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn state(lab: &TestLab) -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(&lab.dir).join("state.json")).unwrap())
        .unwrap()
}

/// A pod's address and network namespace, from the lab's state.
fn pod(lab: &TestLab, name: &str) -> (String, String) {
    let s = state(lab);
    let p = s["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("pod {name} not in {s}"));
    (
        p["ip"].as_str().unwrap().to_owned(),
        p["netns"].as_str().unwrap().to_owned(),
    )
}

/// The /26 block holding `ip`.
fn block_of(ip: &str) -> String {
    let a: std::net::Ipv4Addr = ip.parse().unwrap();
    format!("{}/26", std::net::Ipv4Addr::from(u32::from(a) & !63))
}

/// The routes of a lab namespace for `prefix`.
fn route(lab: &TestLab, target: &str, prefix: &str) -> String {
    exec(lab, target, &["ip", "-4", "route", "show", prefix])
}

/// Whether `node status` on `node` shows `peer` Established with `kind`.
fn established(status: &str, peer: &str, kind: &str) -> bool {
    status.lines().any(|l| {
        l.starts_with(&format!("| {peer} "))
            && l.contains(&format!("| {kind} "))
            && l.contains("| Established")
    })
}

fn wait_until(
    limit: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of the `bird` on a node's run directory.
fn bird_pid(lab: &TestLab, node: &str) -> Option<u32> {
    let socket = format!("{}/run/{node}/bird.ctl", lab.dir);
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let raw = std::fs::read(e.path().join("cmdline")).ok()?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_bird = argv
            .first()
            .is_some_and(|a| a.rsplit('/').next() == Some("bird"));
        (is_bird && argv.contains(&socket)).then_some(pid)
    })
}

/// A TCP connection between two pods (OpenBSD netcat at both ends).
struct Flow {
    server: Child,
    client: Child,
    to_client: ChildStdin,
    from_server: mpsc::Receiver<String>,
}

impl Flow {
    fn open(from_netns: &str, to_netns: &str, to_ip: &str, port: u16) -> Flow {
        let mut server = Command::new("ip")
            .args(["netns", "exec", to_netns, "nc", "-l", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(server.stdout.take().unwrap());
        let (tx, from_server) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        wait_until(
            Duration::from_secs(10),
            "the server listening",
            String::new,
            || {
                let o = Command::new("ip")
                    .args(["netns", "exec", to_netns, "ss", "-Htln"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&o.stdout).contains(&format!(":{port}"))
            },
        );
        let mut client = Command::new("ip")
            .args(["netns", "exec", from_netns, "nc", to_ip, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let to_client = client.stdin.take().unwrap();
        Flow {
            server,
            client,
            to_client,
            from_server,
        }
    }

    fn carries(&mut self, line: &str) -> Option<String> {
        writeln!(self.to_client, "{line}").ok()?;
        self.to_client.flush().ok()?;
        self.from_server.recv_timeout(Duration::from_secs(10)).ok()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.client.kill();
        let _ = self.client.wait();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn sys_bgp_lab_two_racks_with_a_router() {
    gingham_testkit::require_root();
    for tool in ["ip", "nft", "bird", "bird6", "nc", "ss"] {
        gingham_testkit::require_tool(tool);
    }
    let lab = common::lab_up(
        "g",
        &format!("{{networking: bird, router: {{asNumber: 65001}}, {RACKS}}}"),
        DOCS,
    );
    let d = lab.dir.as_str();
    assert!(lab.up.contains("networking bird"), "{}", lab.up);
    let logs = || {
        ["node-a", "node-b", "node-c"]
            .map(|n| {
                format!(
                    "{n}:\n{}",
                    std::fs::read_to_string(format!("{d}/agent-{n}.log")).unwrap_or_default()
                )
            })
            .join("\n")
    };

    // node-a: its mesh peers (one in its rack, one across the router) and its rack's router.
    let status = || {
        exec(
            &lab,
            "node-a",
            &[env!("CARGO_BIN_EXE_gingham"), "node", "status"],
        )
    };
    wait_until(
        Duration::from_secs(60),
        "node-a's peers Established",
        || format!("{}\n{}", status(), logs()),
        || {
            let s = status();
            established(&s, "10.92.1.3", "node-to-node mesh")
                && established(&s, "10.92.2.2", "node-to-node mesh")
                && established(&s, "10.92.1.1", "node specific")
        },
    );

    // Every pod reaches every pod, over the routes BIRD learned.
    let (p1, p1_ns) = pod(&lab, "p1");
    let (p3, p3_ns) = pod(&lab, "p3");
    let block3 = block_of(&p3);
    wait_until(
        Duration::from_secs(60),
        "p1 reaching p3 across the router",
        || format!("{}\n{}", route(&lab, "router", &block3), logs()),
        || common::try_outcome(d, "shop/p1", "shop/p3", "TCP", 80) == "connected",
    );
    common::wait_programmed(d);
    let m = common::probe(d, "TCP", 80);
    common::assert_probe(
        "bgp lab",
        &m,
        &["shop/p1", "shop/p2", "shop/p3"],
        &|_, _| "connected",
    );
    assert!(
        route(&lab, "router", &block3).contains("via 10.92.2.2"),
        "the router learned node-c's block by BGP"
    );

    // node-c's BIRD crashes: the agent starts it again; a connection through node-c goes on,
    // and neither node-a nor the router forgets node-c's block meanwhile.
    let mut flow = Flow::open(&p1_ns, &p3_ns, &p3, 7000);
    assert_eq!(
        flow.carries("before").as_deref(),
        Some("before"),
        "{p1} → {p3}"
    );
    let old = bird_pid(&lab, "node-c").expect("node-c's bird runs");
    assert!(
        Command::new("kill")
            .args(["-9", &old.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_until(
        Duration::from_secs(60),
        "node-c's BIRD restarted and Established again",
        || format!("{}\n{}", status(), logs()),
        || {
            for target in ["node-a", "router"] {
                assert!(
                    !route(&lab, target, &block3).is_empty(),
                    "{target} lost node-c's block while node-c's BIRD was down"
                );
            }
            bird_pid(&lab, "node-c").is_some_and(|p| p != old)
                && established(&status(), "10.92.2.2", "node-to-node mesh")
        },
    );
    assert_eq!(
        flow.carries("after").as_deref(),
        Some("after"),
        "the flow through node-c goes on"
    );
    drop(flow);

    // node-c's Node deleted: its routes go everywhere (mesh peers and the router).
    ok_in(&["delete", "node", "node-c", "--datastore", &lab.ds], None);
    wait_until(
        Duration::from_secs(60),
        "node-c's block gone from node-a, node-b and the router",
        || {
            ["node-a", "node-b", "router"]
                .map(|t| format!("{t}: {}", route(&lab, t, &block3)))
                .join("\n")
        },
        || {
            ["node-a", "node-b", "router"]
                .iter()
                .all(|t| route(&lab, t, &block3).is_empty())
        },
    );
}
