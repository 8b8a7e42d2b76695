//! `gingham node status` against real BIRD: two network namespaces joined by a veth, each with
//! its agent and a `bird` running the configuration `gingham bgp render` wrote for a two-node
//! mesh.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gingham_testkit::netns::TestNetns;

const INPUT: &str = "\
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-a}
spec:
  bgp: {ipv4Address: 10.77.0.1/24}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-b}
spec:
  bgp: {ipv4Address: 10.77.0.2/24}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16}
";

/// One node: its namespace, its files, and its agent and BIRD (killed on drop, before the
/// namespace is deleted).
struct Node {
    dir: PathBuf,
    agent: Option<Child>,
    bird: Option<Child>,
    ns: TestNetns,
}

impl Node {
    fn socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// `gingham node status ARGS` in the node's namespace, with its BIRD sockets.
    fn status(&self, args: &[&str]) -> Output {
        self.status_with_socket(args, &self.socket())
    }

    fn status_with_socket(&self, args: &[&str], sock: &Path) -> Output {
        let sock6 = self.dir.join("bird6.ctl");
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            self.ns.name(),
            env!("CARGO_BIN_EXE_gingham"),
        ])
        .args(["node", "status"])
        .args(args)
        .arg("--bird-socket")
        .arg(sock)
        .env("GINGHAM_BIRD6_SOCKET", &sock6)
        .env_remove("GINGHAM_BIRD_SOCKET");
        c.output().unwrap()
    }

    fn kill_bird(&mut self) {
        if let Some(mut b) = self.bird.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_bird();
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

fn start_node(name: &str, ns: TestNetns, tmp: &Path, input: &Path) -> Node {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let ds = format!("sqlite:{}", dir.join("gingham.db").display());
    let mut node = Node {
        dir: dir.clone(),
        agent: None,
        bird: None,
        ns,
    };
    // The node's datastore holds the resources, its agent watches it.
    common::ok_in(
        &["--datastore", &ds, "apply", "-f", input.to_str().unwrap()],
        None,
    );
    node.agent = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                node.ns.name(),
                env!("CARGO_BIN_EXE_gingham"),
            ])
            .args([
                "--datastore",
                &ds,
                "agent",
                "--node",
                name,
                "--health-port",
                "0",
            ])
            .arg("--run-dir")
            .arg(node.dir.join("run"))
            // The agent must not run a BIRD of its own here: this test runs it.
            .env("CALICO_NETWORKING_BACKEND", "none")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let confd = dir.join("confd");
    let out = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["bgp", "render", "--node", name, "-f"])
        .arg(input)
        .arg("--out")
        .arg(&confd)
        .env_remove("CALICO_ROUTER_ID")
        .env("CALICO_ENDPOINT_STATUS_PATH_PREFIX", dir.join("no-status"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bgp render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.bird = Some(
        Command::new("ip")
            .args(["netns", "exec", node.ns.name(), "bird", "-f", "-c"])
            .arg(confd.join("bird.cfg"))
            .arg("-s")
            .arg(node.socket())
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .current_dir(&confd)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    node
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The table row of the peer `address`, if any.
fn row_of(status: &str, address: &str) -> Option<String> {
    status
        .lines()
        .find(|l| l.starts_with(&format!("| {address} ")))
        .map(str::to_owned)
}

/// Polls `node status` until `done` holds for its output, or fails after `limit`.
fn wait_for(node: &Node, limit: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let o = node.status(&[]);
        let t = text(&o);
        if o.status.success() && done(&t) {
            return t;
        }
        assert!(
            start.elapsed() < limit,
            "{what} not seen within {limit:?}; last status:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn sys_node_status_shows_established_mesh_peers() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("bird");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.yaml");
    std::fs::write(&input, INPUT).unwrap();

    let ns_a = TestNetns::new("bgpa");
    let ns_b = TestNetns::new("bgpb");
    ns_a.exec_ok(&[
        "ip",
        "link",
        "add",
        "va",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "netns",
        ns_b.name(),
    ]);
    ns_a.exec_ok(&["ip", "addr", "add", "10.77.0.1/24", "dev", "va"]);
    ns_a.exec_ok(&["ip", "link", "set", "va", "up"]);
    ns_b.exec_ok(&["ip", "addr", "add", "10.77.0.2/24", "dev", "vb"]);
    ns_b.exec_ok(&["ip", "link", "set", "vb", "up"]);

    let a = start_node("node-a", ns_a, tmp.path(), &input);
    let mut b = start_node("node-b", ns_b, tmp.path(), &input);

    let established = |t: &str| row_of(t, "10.77.0.2").is_some_and(|r| r.contains("| Established"));
    let t = wait_for(
        &a,
        Duration::from_secs(60),
        "node-a's session Established",
        established,
    );
    let row = row_of(&t, "10.77.0.2").unwrap();
    assert!(row.contains("| node-to-node mesh |"), "{t}");
    assert!(row.contains("| up "), "{t}");
    assert!(
        t.starts_with("Calico process is running.\n\nIPv4 BGP status\n"),
        "{t}"
    );
    assert!(
        t.contains("\nINFO: BIRDv6 process: 'bird6' is not running.\n"),
        "{t}"
    );
    // And from the other side.
    wait_for(
        &b,
        Duration::from_secs(30),
        "node-b's session Established",
        |t| row_of(t, "10.77.0.1").is_some_and(|r| r.contains("| Established")),
    );

    // The same in JSON.
    let o = a.status(&["-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["agentRunning"], true, "{j}");
    assert_eq!(j["ipv4"]["running"], true, "{j}");
    assert_eq!(j["ipv6"]["running"], false, "{j}");
    let peers = j["ipv4"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{j}");
    assert_eq!(peers[0]["peerAddress"], "10.77.0.2", "{j}");
    assert_eq!(peers[0]["peerType"], "node-to-node mesh", "{j}");
    assert_eq!(peers[0]["info"], "Established", "{j}");

    // BIRD runs but its socket is elsewhere: calicoctl's message, and no table.
    let wrong = a.dir.join("elsewhere.ctl");
    let o = a.status_with_socket(&[], &wrong);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "Calico process is running.\n\nIPv4 BGP status\nError querying BIRD: unable to connect to BIRDv4 socket: {}: no such file or directory\n\nINFO: BIRDv6 process: 'bird6' is not running.\n\n",
            wrong.display()
        )
    );

    // node-b's BIRD dies: node-a's session leaves Established.
    b.kill_bird();
    let t = wait_for(
        &a,
        Duration::from_secs(30),
        "node-a's session leaving Established",
        |t| row_of(t, "10.77.0.2").is_some_and(|r| !r.contains("| Established")),
    );
    assert!(
        row_of(&t, "10.77.0.2")
            .unwrap()
            .contains("| node-to-node mesh |"),
        "{t}"
    );

    // In node-b's namespace BIRD no longer runs (node-a's, in another namespace, does not count).
    let o = b.status(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Calico process is running.\n\nThe BGP backend process (BIRD) is not running.\n\n"
    );
}

#[test]
fn sys_node_status_without_an_agent_says_so() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    let ns = TestNetns::new("noagent");
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_gingham")])
        .args(["node", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: Calico process is not running.\n"
    );
}
