//! A throwaway network namespace for system tests, deleted when the guard is dropped (also when
//! the test fails and unwinds).
//!
//! Names are `gh-t-<tag>-<pid>-<n>`, unique within the process and across concurrent test
//! processes, so tests can run in parallel. The namespace is made and removed with iproute2's
//! `ip netns add/del`, so this helper does not depend on the crates it helps to test.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace named `gh-t-<tag>-<pid>-<n>` under /run/netns, deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Creates a fresh namespace; panics with the `ip` error if that fails. Its loopback is
    /// brought up, as most tests want.
    pub fn new(tag: &str) -> TestNetns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("gh-t-{tag}-{}-{n}", std::process::id());
        let ip = crate::require_tool("ip");
        let out = Command::new(&ip)
            .args(["netns", "add", &name])
            .output()
            .expect("run `ip netns add`");
        assert!(
            out.status.success(),
            "ip netns add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = TestNetns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `args[0]` with the remaining arguments inside the namespace (`ip netns exec`) and
    /// returns its output, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        assert!(!args.is_empty(), "TestNetns::exec needs a command");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run {args:?} in {}: {e}", self.name))
    }

    /// Like [`TestNetns::exec`], but panics (showing stderr) unless the command succeeds, and
    /// returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in netns {} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: could not run ip netns del {}: {e}", self.name),
        }
    }
}

/// A veth `up0` in `node` with address `node_cidr`, its peer `peer` in `other`; both up.
fn veth_up0(node: &TestNetns, other: &TestNetns, peer: &str, node_cidr: &str) {
    node.exec_ok(&[
        "ip",
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "netns",
        other.name(),
    ]);
    node.exec_ok(&["ip", "addr", "add", node_cidr, "dev", "up0"]);
    node.exec_ok(&["ip", "link", "set", "up0", "up"]);
    other.exec_ok(&["ip", "link", "set", peer, "up"]);
}

/// Wires `node` to `underlay` the way the system tests model a host: a veth `up0` in the node
/// (address `node_cidr`, e.g. `192.168.200.1/24`) whose peer `peer` sits in the underlay with
/// `gateway_cidr` (e.g. `192.168.200.254/24`), and the node's default route through it. A host
/// needs that route for proxy ARP to answer for the pods' gateway.
pub fn wire_to_underlay(
    node: &TestNetns,
    underlay: &TestNetns,
    peer: &str,
    node_cidr: &str,
    gateway_cidr: &str,
) {
    veth_up0(node, underlay, peer, node_cidr);
    underlay.exec_ok(&["ip", "addr", "add", gateway_cidr, "dev", peer]);
    let gateway = gateway_cidr.split('/').next().unwrap_or(gateway_cidr);
    node.exec_ok(&["ip", "route", "add", "default", "via", gateway]);
}

/// Wires `node` onto an existing bridge of `underlay`, as a host on a subnet: a veth `up0` in
/// the node (address `node_cidr`) whose peer `peer` is a port of `bridge`, and the node's
/// default route via `gateway` (an address on that subnet).
pub fn wire_to_bridge(
    node: &TestNetns,
    underlay: &TestNetns,
    peer: &str,
    node_cidr: &str,
    bridge: &str,
    gateway: &str,
) {
    veth_up0(node, underlay, peer, node_cidr);
    underlay.exec_ok(&["ip", "link", "set", peer, "master", bridge]);
    node.exec_ok(&["ip", "route", "add", "default", "via", gateway]);
}

/// A node namespace with two pods plumbed the Calico way (a veth per pod, `cali…` on the node
/// with proxy ARP and a /32 route, the pod's default route via 169.254.1.1), for tests and
/// benchmarks that send real packets from one pod to the other through the node's rules; or,
/// with [`TwoPods::across_nodes`], each pod on its own node, the nodes joined by a veth.
pub struct TwoPods {
    /// The client's node (also the server's, unless `server_node` is set).
    pub node: TestNetns,
    pub client: TestNetns,
    pub server: TestNetns,
    /// The server's node, when the pods are on two nodes.
    pub server_node: Option<TestNetns>,
}

impl TwoPods {
    /// The node's interface towards the client and the server pod.
    pub const CLIENT_IF: &'static str = "calibclient";
    pub const SERVER_IF: &'static str = "calibserver";
    /// The pods' own interface (the other end of their veth).
    pub const POD_IF: &'static str = "eth0";
    /// The nodes' addresses on the veth between them (two-node pods).
    pub const NODE_LINK: [&'static str; 2] = ["192.168.78.1", "192.168.78.2"];

    /// Plumbs the pods with the given addresses (IPv4) into namespaces named after `tag`.
    pub fn new(tag: &str, client_ip: &str, server_ip: &str) -> TwoPods {
        let node = TestNetns::new(&format!("{tag}n"));
        let client = TestNetns::new(&format!("{tag}c"));
        let server = TestNetns::new(&format!("{tag}s"));
        node_setup(&node, "192.168.77.1");
        plumb_pod(&node, &client, Self::CLIENT_IF, client_ip);
        plumb_pod(&node, &server, Self::SERVER_IF, server_ip);
        TwoPods {
            node,
            client,
            server,
            server_node: None,
        }
    }

    /// The client on one node and the server on another: the nodes are joined by a veth
    /// (`up0` on each, [`TwoPods::NODE_LINK`]) and route each other's pod over it.
    pub fn across_nodes(tag: &str, client_ip: &str, server_ip: &str) -> TwoPods {
        let node = TestNetns::new(&format!("{tag}n"));
        let node2 = TestNetns::new(&format!("{tag}m"));
        let client = TestNetns::new(&format!("{tag}c"));
        let server = TestNetns::new(&format!("{tag}s"));
        let [a, b] = Self::NODE_LINK;
        node_setup(&node, a);
        node_setup(&node2, b);
        veth_up0(&node, &node2, "up0", &format!("{a}/24"));
        node2.exec_ok(&["ip", "addr", "add", &format!("{b}/24"), "dev", "up0"]);
        for (n, other, pod_ip) in [(&node, b, server_ip), (&node2, a, client_ip)] {
            n.exec_ok(&["ip", "route", "add", &format!("{pod_ip}/32"), "via", other]);
        }
        plumb_pod(&node, &client, Self::CLIENT_IF, client_ip);
        plumb_pod(&node2, &server, Self::SERVER_IF, server_ip);
        TwoPods {
            node,
            client,
            server,
            server_node: Some(node2),
        }
    }

    /// Deletes the server's veth and plumbs it again with the same names and `server_ip` (a
    /// pod's sandbox created again): the node's `calibserver` gets a new interface index.
    pub fn recreate_server_interface(&self, server_ip: &str) {
        let node = self.server_node.as_ref().unwrap_or(&self.node);
        node.exec_ok(&["ip", "link", "del", Self::SERVER_IF]);
        plumb_pod(node, &self.server, Self::SERVER_IF, server_ip);
    }

    /// The nodes: the client's, then the server's if it has its own.
    pub fn nodes(&self) -> Vec<&TestNetns> {
        std::iter::once(&self.node)
            .chain(self.server_node.as_ref())
            .collect()
    }
}

/// A node forwards, and has an address of its own (`addr` on lo: ARP towards the pods needs a
/// source).
fn node_setup(node: &TestNetns, addr: &str) {
    node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.exec_ok(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
}

/// A pod plumbed the Calico way into `node`: a veth (`host_if` on the node with proxy ARP and
/// a /32 route, `eth0` in the pod with `addr`), the pod's default route via 169.254.1.1.
fn plumb_pod(node: &TestNetns, pod: &TestNetns, host_if: &str, addr: &str) {
    node.exec_ok(&[
        "ip",
        "link",
        "add",
        host_if,
        "type",
        "veth",
        "peer",
        "name",
        TwoPods::POD_IF,
        "netns",
        pod.name(),
    ]);
    node.exec_ok(&["ip", "link", "set", host_if, "up"]);
    node.exec_ok(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{host_if}.proxy_arp=1"),
    ]);
    node.exec_ok(&["ip", "route", "add", &format!("{addr}/32"), "dev", host_if]);
    pod.exec_ok(&["ip", "link", "set", TwoPods::POD_IF, "up"]);
    pod.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{addr}/32"),
        "dev",
        TwoPods::POD_IF,
    ]);
    pod.exec_ok(&[
        "ip",
        "route",
        "add",
        "169.254.1.1",
        "dev",
        TwoPods::POD_IF,
        "scope",
        "link",
    ]);
    let mac = node.exec_ok(&["cat", &format!("/sys/class/net/{host_if}/address")]);
    pod.exec_ok(&[
        "ip",
        "neigh",
        "add",
        "169.254.1.1",
        "lladdr",
        mac.trim(),
        "dev",
        TwoPods::POD_IF,
        "nud",
        "permanent",
    ]);
    pod.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        TwoPods::POD_IF,
    ]);
}
