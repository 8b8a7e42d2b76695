//! VXLAN by the agent, with real packets: two racks (two subnets) joined by a router that knows
//! only the rack subnets, real `gingham agent --networking vxlan` processes in the node
//! namespaces sharing one SQLite datastore, a `vxlanMode: CrossSubnet` pool, and pods made by
//! the real CNI plugin. Every pod reaches every other; the same-rack route is a plain route via
//! the node and the cross-rack one goes through `vxlan.calico`; a borrowed address is reachable
//! from every node; a route someone removes comes back; a new node's pods become reachable; a
//! deleted node's routes, neighbours and FDB entries go away.
//! System test: root, iproute2 (with `bridge`), nftables.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gingham_testkit::netns::TestNetns;

const POOL: &str = "10.248.0.0/16";

/// Polls `f` until it holds, for at most `secs` seconds; `what` and the last `detail` say
/// what was awaited when it never does.
fn until(secs: u64, what: &str, mut f: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, detail) = f();
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}\n{detail}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The network: a router namespace holding one bridge per rack (with the rack's gateway
/// address), forwarding between them and knowing nothing else.
struct Router {
    ns: TestNetns,
}

impl Router {
    fn new(racks: &[(&str, &str)]) -> Router {
        let ns = TestNetns::new("vxr");
        for (bridge, gateway) in racks {
            ns.exec_ok(&["ip", "link", "add", bridge, "type", "bridge"]);
            ns.exec_ok(&["ip", "addr", "add", gateway, "dev", bridge]);
            ns.exec_ok(&["ip", "link", "set", bridge, "up"]);
        }
        ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Router { ns }
    }
}

/// A node: a namespace with `up0` on its rack's bridge and a default route via the router,
/// and its agent.
struct Node {
    name: String,
    ip: String,
    ns: TestNetns,
    agent: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn new(router: &Router, name: &str, cidr: &str, bridge: &str, gateway: &str) -> Node {
        let ns = TestNetns::new("vxn");
        gingham_testkit::netns::wire_to_bridge(
            &ns,
            &router.ns,
            &format!("p-{name}"),
            cidr,
            bridge,
            gateway,
        );
        Node {
            name: name.to_owned(),
            ip: cidr.split('/').next().unwrap().to_owned(),
            ns,
            agent: None,
            log: PathBuf::new(),
        }
    }

    /// Starts the agent; `health`: the port of its /readiness on the node's loopback (0: off).
    fn start_agent(&mut self, ds: &str, dir: &Path, health: u16) {
        let run = dir.join(&self.name);
        std::fs::create_dir_all(&run).unwrap();
        self.log = dir.join(format!("agent-{}.log", self.name));
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                env!("CARGO_BIN_EXE_gingham"),
            ])
            .args([
                "agent",
                "--networking",
                "vxlan",
                "--node",
                &self.name,
                "--run-dir",
                run.to_str().unwrap(),
                "--health-port",
                &health.to_string(),
                "--datastore",
                ds,
                "--log",
                "info",
            ])
            .env_remove("GINGHAM_DATASTORE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        self.agent = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP GET to the agent's health port on the node's loopback: the whole answer.
    fn http_get(&self, port: u16, path: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let out = self.ns.exec(&["bash", "-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sh(&self, cmd: &str) -> String {
        self.ns.exec_ok(&["sh", "-c", cmd])
    }

    /// `ip route show <dst>` in the node, one line.
    fn route(&self, dst: &str) -> String {
        self.ns
            .exec_ok(&["ip", "route", "show", dst])
            .trim()
            .to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A pod: a namespace plumbed by the CNI plugin run in its node.
struct Pod {
    ns: TestNetns,
    ip: String,
}

fn add_pod(ds: &str, node: &Node, name: &str, ip: Option<&str>) -> Pod {
    let ns = TestNetns::new("vxp");
    let ip = common::cni_add_pod(
        &node.name,
        node.ns.name(),
        &ns.path(),
        ds,
        name,
        ip,
        Some(1400),
    );
    Pod { ns, ip }
}

fn pings(from: &Pod, to: &str) -> bool {
    from.ns
        .exec(&["ping", "-c", "1", "-W", "1", to])
        .status
        .success()
}

/// Every pod reaches every other, polled until it does (routes are programmed as the agents
/// catch up), each pair checked.
fn full_mesh(pods: &[(&str, &Pod)], nodes: &[&Node]) {
    for (a, pa) in pods {
        for (b, pb) in pods {
            if a == b {
                continue;
            }
            until(
                20,
                &format!("{a} ({}) reaches {b} ({})", pa.ip, pb.ip),
                || {
                    let ok = pings(pa, &pb.ip);
                    let detail = nodes
                        .iter()
                        .map(|n| format!("--- {} routes:\n{}", n.name, n.sh("ip route")))
                        .collect::<Vec<_>>()
                        .join("\n");
                    (ok, detail)
                },
            );
        }
    }
}

/// The /26 holding `ip`.
fn block(ip: &str) -> String {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let net = ipnet::Ipv4Net::new(ip, 26).unwrap().trunc();
    net.to_string()
}

fn tunnel_addr(ds: &str, node: &str) -> String {
    let out = common::ok_in(
        &["get", "node", node, "-o", "json", "--datastore", ds],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["spec"]["ipv4VXLANTunnelAddr"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn node_yaml(name: &str, cidr: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: {cidr}}}}}\n---\n"
    )
}

#[test]
fn sys_vxlan_cross_subnet_routes_pods_between_racks() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("bridge");
    gingham_testkit::require_tool("nft");
    gingham_testkit::require_tool("ping");
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let cluster = format!(
        "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: {POOL}, vxlanMode: CrossSubnet}}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {{name: default}}
# The nodes' underlay interface is up0, which felix's default mtuIfacePattern does not match.
spec: {{routeRefreshInterval: 1s, mtuIfacePattern: '^up0$'}}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.default}}
spec: {{ingress: [{{action: Allow}}], egress: [{{action: Allow}}]}}
---
{}{}{}",
        node_yaml("node-a", "192.168.31.1/24"),
        node_yaml("node-b", "192.168.31.2/24"),
        node_yaml("node-c", "192.168.32.1/24"),
    );
    common::ok_in(&["apply", "-f", "-", "--datastore", &ds], Some(&cluster));

    let router = Router::new(&[("r1", "192.168.31.254/24"), ("r2", "192.168.32.254/24")]);
    let mut a = Node::new(&router, "node-a", "192.168.31.1/24", "r1", "192.168.31.254");
    let mut b = Node::new(&router, "node-b", "192.168.31.2/24", "r1", "192.168.31.254");
    let mut c = Node::new(&router, "node-c", "192.168.32.1/24", "r2", "192.168.32.254");
    for n in [&mut a, &mut b, &mut c] {
        n.start_agent(&ds, dir.path(), 0);
    }
    // Each agent gives its node a tunnel address.
    for n in [&a, &b, &c] {
        until(
            20,
            &format!("{} has a VXLAN tunnel address", n.name),
            || (!tunnel_addr(&ds, &n.name).is_empty(), n.log()),
        );
    }
    let tc = tunnel_addr(&ds, "node-c");

    let pa = add_pod(&ds, &a, "pa", None);
    let pb = add_pod(&ds, &b, "pb", None);
    let pc = add_pod(&ds, &c, "pc", None);
    // A borrowed address: from node-a's block, used on node-c.
    let borrowed_ip = {
        let base: std::net::Ipv4Addr = block(&pa.ip).split('/').next().unwrap().parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(base) + 40).to_string()
    };
    let px = add_pod(&ds, &c, "px", Some(&borrowed_ip));
    assert_eq!(px.ip, borrowed_ip);

    full_mesh(
        &[
            ("pa", &pa),
            ("pb", &pb),
            ("pc", &pc),
            ("px (borrowed)", &px),
        ],
        &[&a, &b, &c],
    );

    // Same rack: a plain route via the node. Other rack: through vxlan.calico.
    let same = a.route(&block(&pb.ip));
    assert!(
        same.contains(&format!("via {} dev up0", b.ip)) && !same.contains("vxlan"),
        "{same}"
    );
    let cross = a.route(&block(&pc.ip));
    assert!(
        cross.contains(&format!("via {tc} dev vxlan.calico")) && cross.contains("onlink"),
        "{cross}"
    );
    // The borrowed /32 goes to node-c, from both other nodes.
    for n in [&a, &b] {
        let r = n.route(&format!("{borrowed_ip}/32"));
        assert!(
            r.contains(&format!("via {tc} dev vxlan.calico")),
            "{}: {r}",
            n.name
        );
    }
    // The device as felix makes it.
    let dev = a.ns.exec_ok(&["ip", "-d", "link", "show", "vxlan.calico"]);
    for want in [
        "vxlan id 4096",
        "local 192.168.31.1",
        "dstport 4789",
        "nolearning",
        "mtu 1450",
    ] {
        assert!(dev.contains(want), "{want} in {dev}");
    }
    let neigh =
        a.ns.exec_ok(&["ip", "neigh", "show", "dev", "vxlan.calico"]);
    assert!(
        neigh
            .lines()
            .any(|l| l.starts_with(&format!("{tc} ")) && l.contains("PERMANENT")),
        "{neigh}"
    );
    let fdb =
        a.ns.exec_ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"]);
    assert!(fdb.contains(&format!("dst {}", c.ip)), "{fdb}");

    // Removed by someone: put back on the next refresh.
    a.ns.exec_ok(&["ip", "route", "del", &block(&pc.ip)]);
    until(10, "the removed route is back", || {
        let r = a.route(&block(&pc.ip));
        (r.contains("vxlan.calico"), r)
    });
    until(10, "pa reaches pc again", || {
        (pings(&pa, &pc.ip), String::new())
    });
    // So are node-c's neighbour and FDB entries.
    let mac = a
        .sh("bridge fdb show dev vxlan.calico")
        .lines()
        .find(|l| l.contains(&format!("dst {}", c.ip)))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .expect("node-c's FDB entry");
    a.ns.exec_ok(&["ip", "neigh", "del", &tc, "dev", "vxlan.calico"]);
    a.ns.exec_ok(&[
        "bridge",
        "fdb",
        "del",
        &mac,
        "dev",
        "vxlan.calico",
        "dst",
        &c.ip,
    ]);
    until(10, "node-c's neighbour and FDB entries are back", || {
        let neigh = a.sh("ip neigh show dev vxlan.calico");
        let fdb = a.sh("bridge fdb show dev vxlan.calico");
        let back = neigh.lines().any(|l| {
            l.starts_with(&format!("{tc} ")) && l.contains(&mac) && l.contains("PERMANENT")
        }) && fdb
            .lines()
            .any(|l| l.starts_with(&mac) && l.contains(&format!("dst {}", c.ip)));
        (back, format!("{neigh}\n{fdb}"))
    });
    until(10, "pa reaches pc with them", || {
        (pings(&pa, &pc.ip), String::new())
    });

    // A new node in rack 2: its pods become reachable.
    common::ok_in(
        &["apply", "-f", "-", "--datastore", &ds],
        Some(&node_yaml("node-d", "192.168.32.2/24")),
    );
    let mut d = Node::new(&router, "node-d", "192.168.32.2/24", "r2", "192.168.32.254");
    d.start_agent(&ds, dir.path(), 0);
    let pd = add_pod(&ds, &d, "pd", None);
    full_mesh(&[("pa", &pa), ("pc", &pc), ("pd", &pd)], &[&a, &c, &d]);
    let td = tunnel_addr(&ds, "node-d");
    assert!(
        c.route(&block(&pd.ip))
            .contains(&format!("via {} dev up0", d.ip))
    );
    assert!(
        a.route(&block(&pd.ip))
            .contains(&format!("via {td} dev vxlan.calico"))
    );

    // IPAM agrees: the tunnel addresses are their nodes', the pods' addresses their pods'.
    let check = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["ipam", "check", "--datastore", &ds])
        .env_remove("GINGHAM_DATASTORE")
        .output()
        .unwrap();
    assert!(check.status.success(), "ipam check: {}", text(&check));

    // Node c's Node resource is deleted: its routes, neighbours and FDB entries go away on the
    // others.
    common::ok_in(&["delete", "node", "node-c", "--datastore", &ds], None);
    for n in [&a, &b, &d] {
        until(20, &format!("node-c gone from {}", n.name), || {
            let routes = n.sh("ip route");
            let neigh = n.sh("ip neigh show dev vxlan.calico");
            let fdb = n.sh("bridge fdb show dev vxlan.calico");
            let gone = !routes.contains(&block(&pc.ip))
                && !routes.contains(&borrowed_ip)
                && !neigh.lines().any(|l| l.starts_with(&format!("{tc} ")))
                && !fdb.contains("192.168.32.1");
            (gone, format!("{routes}\n{neigh}\n{fdb}"))
        });
    }
    // The others still reach each other.
    assert!(pings(&pa, &pd.ip));
    assert!(pings(&pb, &pa.ip));
}

/// Whether this kernel can make an IPIP device (asked in a throwaway namespace).
fn kernel_has_ipip() -> bool {
    let ns = TestNetns::new("vxi");
    ns.exec(&["ip", "link", "add", "gh-ipip", "type", "ipip"])
        .status
        .success()
}

#[test]
fn sys_an_ipip_pool_without_the_ipip_module_is_reported_and_vxlan_keeps_working() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("bash");
    gingham_testkit::require_tool("nft");
    gingham_testkit::require_tool("ping");
    let has_ipip = kernel_has_ipip();
    if has_ipip {
        eprintln!(
            "NOTE: this kernel has the ipip module: checking that tunl0 is made instead of the error"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let cluster = format!(
        "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: {POOL}, vxlanMode: Always}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: tunnelled}}
spec: {{cidr: 10.249.0.0/16, ipipMode: Always, allowedUses: [Tunnel]}}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.default}}
spec: {{ingress: [{{action: Allow}}], egress: [{{action: Allow}}]}}
---
{}{}",
        node_yaml("node-a", "192.168.33.1/24"),
        node_yaml("node-c", "192.168.34.1/24"),
    );
    common::ok_in(&["apply", "-f", "-", "--datastore", &ds], Some(&cluster));
    let router = Router::new(&[("r1", "192.168.33.254/24"), ("r2", "192.168.34.254/24")]);
    let mut a = Node::new(&router, "node-a", "192.168.33.1/24", "r1", "192.168.33.254");
    let mut c = Node::new(&router, "node-c", "192.168.34.1/24", "r2", "192.168.34.254");
    a.start_agent(&ds, dir.path(), 9099);
    c.start_agent(&ds, dir.path(), 9099);
    let pa = add_pod(&ds, &a, "pa", None);
    let pc = add_pod(&ds, &c, "pc", None);
    // The VXLAN pool works either way.
    full_mesh(&[("pa", &pa), ("pc", &pc)], &[&a, &c]);
    assert!(a.route(&block(&pc.ip)).contains("dev vxlan.calico"));

    let message = "this kernel cannot create IPIP tunnels (no ipip module); use vxlanMode";
    if has_ipip {
        until(20, "tunl0 carries node-a's IPIP address", || {
            let out = a.sh("ip -o addr show dev tunl0 2>&1 || true");
            (out.contains("10.249."), out)
        });
        until(10, "node-a ready", || {
            let r = a.http_get(9099, "/readiness");
            (r.contains("200 OK"), r)
        });
    } else {
        until(
            20,
            "node-a's readiness names the missing ipip module",
            || {
                let r = a.http_get(9099, "/readiness");
                (
                    r.contains("503") && r.contains(message) && r.contains("tunnelled"),
                    r,
                )
            },
        );
        assert!(
            a.log().contains(message),
            "the agent's log says it: {}",
            a.log()
        );
        assert!(!a.sh("ip link").contains("tunl0"));
    }
    // Still working after the check.
    assert!(pings(&pa, &pc.ip));
    assert!(pings(&pc, &pa.ip));
}
