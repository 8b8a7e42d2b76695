//! The agent runs BIRD (`--networking bird`), as calico-node's confd and runit do: two node
//! namespaces on one subnet (veths to a bridge in an underlay namespace), each with a real
//! agent on a shared SQLite datastore and a pod plumbed by the real CNI plugin, an
//! unencapsulated pool. The pods reach each other over routes BIRD learned by BGP (the test
//! adds none); a BIRD killed with SIGKILL is restarted by its agent and a TCP connection opened
//! before survives (graceful restart: the peer keeps the routes meanwhile); a configuration
//! BIRD rejects is not loaded and /readiness says why; a deleted Node's routes go.
//! System test: root, iproute2, nftables, BIRD 1.6 (Debian package `bird`), OpenBSD netcat.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gingham_testkit::netns::TestNetns;

const POOL: &str = "10.248.0.0/16";

fn cluster(nodes: &[(&str, &str)]) -> String {
    let mut y = String::new();
    for (name, ip) in nodes {
        y.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec:\n  bgp: {{ipv4Address: {ip}/24}}\n---\n"
        ));
    }
    y.push_str(&format!(
        "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: {POOL}, blockSize: 26, ipipMode: Never, vxlanMode: Never, natOutgoing: false}}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.default}}
spec:
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
"
    ));
    y
}

/// A BGPFilter that passes validation, as Calico's, and that the renderer writes and BIRD
/// refuses: a maximum prefix length shorter than the CIDR's own, so confd's range is `{16,8}`.
/// Used by a global BGPPeer so every node's configuration has it.
const REJECTED: &str = "apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: upside-down}
spec:
  exportV4: [{action: Reject, matchOperator: In, cidr: 10.0.0.0/16, prefixLength: {max: 8}}]
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.77.0.9, asNumber: 64512, filters: [upside-down]}
";

/// One node: its namespace, run directory, agent (killed on drop, which kills its BIRDs) and
/// pod.
struct Node {
    name: String,
    ip: String,
    run_dir: PathBuf,
    log: PathBuf,
    agent: Option<Child>,
    pod_ip: String,
    // Dropped after the agent: the pod, then the node.
    pod: Option<TestNetns>,
    ns: TestNetns,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

impl Node {
    fn exec_ok(&self, cmd: &str) -> String {
        self.ns.exec_ok(&["sh", "-c", cmd])
    }

    /// `gingham ARGS` in the node's namespace, with its run directory in the environment.
    fn gingham(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                env!("CARGO_BIN_EXE_gingham"),
            ])
            .args(args)
            .env("GINGHAM_RUN_DIR", &self.run_dir)
            .env_remove("GINGHAM_BIRD_SOCKET")
            .env_remove("GINGHAM_BIRD6_SOCKET")
            .env_remove("GINGHAM_DATASTORE")
            .output()
            .unwrap()
    }

    fn status(&self) -> String {
        let o = self.gingham(&["node", "status"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn established(&self, peer: &str) -> bool {
        self.status()
            .lines()
            .any(|l| l.starts_with(&format!("| {peer} ")) && l.contains("| Established"))
    }

    /// The agent's /readiness answer (status line and body).
    fn readiness(&self) -> String {
        let script = "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /readiness HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
        String::from_utf8_lossy(&self.ns.exec(&["bash", "-c", script]).stdout).into_owned()
    }

    /// The kernel's routes for `prefix` in the node.
    fn route(&self, prefix: &str) -> String {
        self.exec_ok(&format!("ip -4 route show {prefix}"))
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pid of the node's `bird` (the one on its run directory's socket).
    fn bird_pid(&self) -> Option<u32> {
        let socket = self.run_dir.join("bird.ctl");
        let socket = socket.to_string_lossy();
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
            (is_bird && argv.iter().any(|a| *a == socket)).then_some(pid)
        })
    }
}

/// Polls `done` every 100 ms until it holds; fails with `what` and `context()` after `limit`.
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

/// The /26 block holding `ip`.
fn block_of(ip: &str) -> String {
    let a: std::net::Ipv4Addr = ip.parse().unwrap();
    let n = u32::from(a) & !63;
    format!("{}/26", std::net::Ipv4Addr::from(n))
}

fn start_node(tmp: &Path, ds: &str, underlay: &TestNetns, name: &str, i: u8) -> Node {
    let ns = TestNetns::new("bgpn");
    let ip = format!("10.77.0.{i}");
    // A default route (proxy ARP for the pods' gateway needs one), toward the bridge.
    gingham_testkit::netns::wire_to_bridge(
        &ns,
        underlay,
        &format!("br-{name}"),
        &format!("{ip}/24"),
        "br0",
        "10.77.0.254",
    );
    let run_dir = tmp.join(name);
    std::fs::create_dir_all(&run_dir).unwrap();
    let log = tmp.join(format!("agent-{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let agent = Command::new("ip")
        .args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_gingham")])
        .args(["--datastore", ds, "--log", "info", "agent", "--node", name])
        .args(["--networking", "bird", "--run-dir"])
        .arg(&run_dir)
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("CALICO_NETWORKING_BACKEND")
        .env_remove("CALICO_ROUTER_ID")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut node = Node {
        name: name.to_owned(),
        ip,
        run_dir,
        log,
        agent: Some(agent),
        pod_ip: String::new(),
        pod: None,
        ns,
    };
    add_pod(&mut node, ds);
    node
}

/// The node's pod, plumbed by the real CNI plugin (its address from the node's block).
fn add_pod(node: &mut Node, ds: &str) {
    let (pod, ip) = cni_add(node, ds, &format!("pod-{}", node.name), None);
    node.pod_ip = ip;
    node.pod = Some(pod);
}

/// CNI ADD of pod `name` on `node` (with `IP=` when an address is asked for); returns the
/// pod's namespace and address.
fn cni_add(node: &Node, ds: &str, name: &str, ip: Option<&str>) -> (TestNetns, String) {
    let pod = TestNetns::new("bgpp");
    let ip = common::cni_add_pod(&node.name, node.ns.name(), &pod.path(), ds, name, ip, None);
    (pod, ip)
}

fn pod(node: &Node) -> &TestNetns {
    node.pod.as_ref().unwrap()
}

fn pings(from: &Node, to: &Node) -> bool {
    pod(from)
        .exec(&["ping", "-c", "1", "-W", "1", &to.pod_ip])
        .status
        .success()
}

/// A TCP connection from one pod to the other (OpenBSD netcat at both ends): lines written to
/// the client come out of the server.
struct Flow {
    server: Child,
    client: Child,
    to_client: ChildStdin,
    /// The server's lines, read by a thread of their own (so a stuck connection times out).
    from_server: mpsc::Receiver<String>,
}

impl Flow {
    fn open(from: &Node, to: &Node, port: u16) -> Flow {
        let mut server = Command::new("ip")
            .args([
                "netns",
                "exec",
                pod(to).name(),
                "nc",
                "-l",
                &port.to_string(),
            ])
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
        // The server listens once its socket exists in the pod.
        wait_until(
            Duration::from_secs(10),
            "the server listening",
            String::new,
            || {
                pod(to)
                    .exec_ok(&["ss", "-Htln"])
                    .contains(&format!(":{port}"))
            },
        );
        let mut client = Command::new("ip")
            .args([
                "netns",
                "exec",
                pod(from).name(),
                "nc",
                &to.pod_ip,
                &port.to_string(),
            ])
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

    /// Sends a line and returns what the server received within 10 s (a broken connection:
    /// `None`).
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
fn sys_agents_run_bird_route_pods_restart_it_and_refuse_bad_configs() {
    gingham_testkit::require_root();
    for tool in ["ip", "nft", "bird", "bird6", "nc", "ss", "bash"] {
        gingham_testkit::require_tool(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    common::ok_in(
        &["apply", "-f", "-", "--datastore", &ds],
        Some(&cluster(&[
            ("node-a", "10.77.0.1"),
            ("node-b", "10.77.0.2"),
        ])),
    );
    let underlay = TestNetns::new("bgpu");
    underlay.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    underlay.exec_ok(&["ip", "addr", "add", "10.77.0.254/24", "dev", "br0"]);
    underlay.exec_ok(&["ip", "link", "set", "br0", "up"]);
    let a = start_node(tmp.path(), &ds, &underlay, "node-a", 1);
    let b = start_node(tmp.path(), &ds, &underlay, "node-b", 2);
    let logs = || format!("node-a:\n{}\nnode-b:\n{}", a.agent_log(), b.agent_log());

    // The mesh comes up: each agent's BIRD peers with the other.
    wait_until(
        Duration::from_secs(60),
        "node-a's mesh peer Established",
        || format!("{}\n{}", a.status(), logs()),
        || a.established(&b.ip),
    );
    wait_until(
        Duration::from_secs(30),
        "node-b's mesh peer Established",
        || b.status(),
        || b.established(&a.ip),
    );
    let status = a.status();
    assert!(
        status.starts_with("Calico process is running.\n\nIPv4 BGP status\n"),
        "{status}"
    );
    assert!(status.contains("| node-to-node mesh |"), "{status}");
    assert!(
        status.contains("\nIPv6 BGP status\nNo IPv6 peers found.\n"),
        "bird6 runs too: {status}"
    );

    // Routes learned by BGP, programmed by BIRD: each node's block via the other node.
    let (block_a, block_b) = (block_of(&a.pod_ip), block_of(&b.pod_ip));
    wait_until(
        Duration::from_secs(30),
        "node-a's route to node-b's block",
        || a.exec_ok("ip route"),
        || {
            a.route(&block_b)
                .contains(&format!("via {} dev up0 proto bird", b.ip))
        },
    );
    wait_until(
        Duration::from_secs(30),
        "node-b's route to node-a's block",
        || b.exec_ok("ip route"),
        || {
            b.route(&block_a)
                .contains(&format!("via {} dev up0 proto bird", a.ip))
        },
    );
    // Each node's own block has one blackhole, BIRD's (bird_aggr.cfg's static route, which
    // its kernel filter exports for an unencapsulated pool), and no copy of the agent's.
    for (n, own) in [(&a, &block_a), (&b, &block_b)] {
        let blackholes = || n.exec_ok(&format!("ip -4 route show type blackhole {own}"));
        wait_until(
            Duration::from_secs(15),
            &format!("{}'s blackhole for {own} from BIRD", n.name),
            blackholes,
            || blackholes().trim() == format!("blackhole {own} proto bird"),
        );
    }
    wait_until(
        Duration::from_secs(10),
        "pod-a reaching pod-b",
        logs,
        || pings(&a, &b),
    );
    assert!(pings(&b, &a), "pod-b reaches pod-a");

    // A borrowed address: a pod on node-a with an address of node-b's block. node-a's BIRD
    // exports its /32 (learned from the kernel), node-b routes it to node-a past its own
    // block's blackhole, and both pods reach it.
    let borrowed_ip = {
        let base: std::net::Ipv4Addr = block_b.trim_end_matches("/26").parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(base) + 50).to_string()
    };
    let (borrowed, got) = cni_add(&a, &ds, "borrowed", Some(&borrowed_ip));
    assert_eq!(got, borrowed_ip);
    wait_until(
        Duration::from_secs(30),
        "node-b's /32 route to the borrowed address",
        || b.exec_ok("ip route"),
        || {
            b.route(&format!("{borrowed_ip}/32"))
                .contains(&format!("via {} dev up0 proto bird", a.ip))
        },
    );
    for from in [&b, &a] {
        wait_until(
            Duration::from_secs(10),
            &format!(
                "{}'s pod reaching the borrowed address {borrowed_ip}",
                from.name
            ),
            || {
                format!(
                    "node-a:\n{}\nnode-b:\n{}\nnft a:\n{}",
                    a.exec_ok("ip route; ip neigh"),
                    b.exec_ok("ip route; ip neigh"),
                    a.exec_ok("nft list ruleset")
                )
            },
            || {
                pod(from)
                    .exec(&["ping", "-c", "1", "-W", "1", &borrowed_ip])
                    .status
                    .success()
            },
        );
    }
    drop(borrowed);

    // BIRD crashes on node-b (SIGKILL). A connection opened before goes on; node-a keeps the
    // routes it learned from node-b while node-b's BIRD is away (graceful restart), node-b
    // keeps the routes its BIRD programmed (persist), and the agent starts BIRD again.
    let mut flow = Flow::open(&a, &b, 7000);
    assert_eq!(flow.carries("before").as_deref(), Some("before"));
    let old = b.bird_pid().expect("node-b's bird runs");
    let killed = Command::new("kill")
        .args(["-9", &old.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut checks = 0;
    wait_until(
        Duration::from_secs(60),
        "node-b's BIRD restarted and Established again",
        || format!("{}\n{}", a.status(), logs()),
        || {
            checks += 1;
            assert!(
                a.route(&block_b).contains(&format!("via {}", b.ip)),
                "node-a lost its route to node-b's block while node-b's BIRD was down:\n{}",
                a.status()
            );
            assert!(
                b.route(&block_a).contains(&format!("via {}", a.ip)),
                "node-b lost its route to node-a's block when its BIRD died"
            );
            b.bird_pid().is_some_and(|p| p != old) && a.established(&b.ip) && b.established(&a.ip)
        },
    );
    assert!(checks > 1, "the routes were looked at while BIRD was down");
    assert!(
        b.agent_log().contains("BIRD exited; restarting"),
        "{}",
        b.agent_log()
    );
    assert_eq!(
        flow.carries("after").as_deref(),
        Some("after"),
        "the connection opened before the crash still works"
    );
    drop(flow);
    assert!(pings(&a, &b));

    // A configuration BIRD rejects: never loaded (node-a's BIRD keeps the mesh and has no
    // session to the new peer), /readiness says why; removing it makes the node ready again.
    wait_until(
        Duration::from_secs(10),
        "node-a ready",
        || a.readiness(),
        || a.readiness().contains("200 OK"),
    );
    common::ok_in(&["apply", "-f", "-", "--datastore", &ds], Some(REJECTED));
    wait_until(
        Duration::from_secs(15),
        "node-a's readiness naming BIRD's refusal",
        || a.readiness(),
        || {
            let r = a.readiness();
            r.contains("503")
                && r.contains("not ready: BIRD rejected the configuration: bird: ")
                && r.contains("Invalid prefix pattern range: {16, 8}")
        },
    );
    let status = a.status();
    assert!(
        !status.contains("10.77.0.9"),
        "the rejected configuration was loaded:\n{status}"
    );
    assert!(a.established(&b.ip), "{status}");
    let installed = std::fs::read_to_string(a.run_dir.join("bird/bird.cfg")).unwrap();
    assert!(
        !installed.contains("upside-down"),
        "the rejected file was put in place"
    );
    assert!(
        a.agent_log()
            .contains("configuration not loaded; the previous one stays"),
        "{}",
        a.agent_log()
    );
    assert!(pings(&a, &b));
    common::ok_in(&["delete", "-f", "-", "--datastore", &ds], Some(REJECTED));
    wait_until(
        Duration::from_secs(15),
        "node-a ready again",
        || a.readiness(),
        || a.readiness().contains("200 OK"),
    );

    // node-b's Node deleted: node-a's BIRD drops the peering and with it node-b's routes;
    // node-b's agent stops its BIRD (no peer keeps routes from a node that left) and says so.
    let node_b = common::ok_in(
        &["get", "node", "node-b", "-o", "yaml", "--datastore", &ds],
        None,
    );
    common::ok_in(&["delete", "node", "node-b", "--datastore", &ds], None);
    wait_until(
        Duration::from_secs(30),
        "node-b's block route gone from node-a",
        || a.exec_ok("ip route"),
        || a.route(&block_b).is_empty(),
    );
    let status = a.status();
    assert!(!status.contains(&format!("| {} ", b.ip)), "{status}");
    assert!(!pings(&a, &b));
    wait_until(
        Duration::from_secs(15),
        "node-b's BIRD stopped",
        || format!("{}\n{}", b.readiness(), b.agent_log()),
        || b.bird_pid().is_none(),
    );
    let r = b.readiness();
    assert!(
        r.contains("BIRD stopped: node \"node-b\" not found among the Node resources"),
        "{r}"
    );

    // node-b back: its BIRD runs again, the mesh and the routes return.
    let node_b: String = node_b
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("resourceVersion")
                && !l.trim_start().starts_with("uid:")
                && !l.trim_start().starts_with("creationTimestamp")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    common::ok_in(&["apply", "-f", "-", "--datastore", &ds], Some(&node_b));
    wait_until(
        Duration::from_secs(60),
        "node-b's peering and route back on node-a",
        || format!("{}\n{}", a.status(), logs()),
        || a.established(&b.ip) && a.route(&block_b).contains(&format!("via {}", b.ip)),
    );
    wait_until(
        Duration::from_secs(10),
        "pod-a reaching pod-b again",
        logs,
        || pings(&a, &b),
    );

    // The agent dies as a crash would: its BIRD goes with it (no orphan holds the socket and
    // the BGP port from the next agent).
    let mut a = a;
    let bird = a.bird_pid().expect("node-a's bird runs");
    let mut agent = a.agent.take().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    wait_until(
        Duration::from_secs(10),
        "node-a's bird gone with its agent",
        || format!("bird pid {bird} still there"),
        || !Path::new(&format!("/proc/{bird}")).exists() || a.bird_pid().is_none(),
    );
}

/// Without BIRD on PATH the agent keeps running (policy and plumbing work) and /readiness names
/// the Debian package.
#[test]
fn sys_without_bird_on_path_the_agent_says_which_package() {
    gingham_testkit::require_root();
    let ip = gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("bash");
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    common::ok_in(
        &["apply", "-f", "-", "--datastore", &ds],
        Some(&cluster(&[("node-a", "10.77.0.1")])),
    );
    let ns = TestNetns::new("bgpnobird");
    // A PATH with what the agent needs but BIRD: nft.
    let empty = tmp.path().join("path-without-bird");
    std::fs::create_dir_all(&empty).unwrap();
    std::os::unix::fs::symlink(gingham_testkit::require_tool("nft"), empty.join("nft")).unwrap();
    let log = tmp.path().join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    // (`ip` by its full path: the child's PATH has no `ip`.)
    let mut agent = Command::new(ip)
        .args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_gingham")])
        .args(["--datastore", &ds, "agent", "--node", "node-a", "--run-dir"])
        .arg(tmp.path().join("run"))
        .env("PATH", &empty)
        .env("CALICO_NETWORKING_BACKEND", "bird")
        .env_remove("GINGHAM_DATASTORE")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let readiness = || {
        let script = "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /readiness HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
        String::from_utf8_lossy(&ns.exec(&["bash", "-c", script]).stdout).into_owned()
    };
    let want = "not ready: bird is not installed: no bird on PATH (install the Debian package bird, which has bird and bird6)";
    wait_until(
        Duration::from_secs(10),
        "readiness naming the package",
        || {
            format!(
                "{}\n{}",
                readiness(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        },
        || readiness().contains(want),
    );
    assert!(readiness().contains("503"));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
