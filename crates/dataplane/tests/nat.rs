//! natOutgoing with the real kernel, in namespaces these tests make: the rendered table is
//! accepted by `nft` and read back as installed; and real TCP and UDP connections from a
//! "pod" (an address in a natOutgoing pool) through a "node" (where the table is installed)
//! to an "outside" host arrive from the node's address, while with natOutgoing off, or to a
//! destination inside a pool, they arrive from the pod's address.
//! System tests: root, `ip` and nftables.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use gingham_calc::program::NodeProgram;
use gingham_calc::snapshot::NatPools;
use gingham_dataplane::{Nft, Programmer, Renderer, Settings, render};
use gingham_net::netns::{NetnsRef, in_netns};
use gingham_testkit::netns::{TestNetns, wire_to_underlay};

const POD: &str = "10.244.0.5";
const POD_GATEWAY: &str = "10.244.0.1";
const NODE: &str = "192.168.200.1";
const OUTSIDE: &str = "192.168.200.254";
/// An address of the outside host inside a pool without natOutgoing (disabled, say).
const OUTSIDE_IN_POOL: &str = "10.9.0.1";

fn pools(nat_outgoing: bool) -> NatPools {
    let net = |s: &str| s.parse().unwrap();
    let mut p = NatPools::default();
    p.all.insert(net("10.244.0.0/16"));
    p.all.insert(net("10.9.0.0/24"));
    p.all.insert(net("fd00:10::/64"));
    if nat_outgoing {
        p.masq.insert(net("10.244.0.0/16"));
        p.masq.insert(net("fd00:10::/64"));
    }
    p
}

fn settings(nat_outgoing: bool) -> Settings {
    Settings {
        pools: pools(nat_outgoing),
        ..Settings::default()
    }
}

#[test]
fn sys_nft_accepts_the_nat_outgoing_chain_and_sets() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let ns = TestNetns::new("natnft");
    let table = render(&NodeProgram::default(), &settings(true)).table;
    let mut programmer = Programmer::new(Nft::in_netns(ns.name()));
    programmer
        .sync(table.clone())
        .expect("nft accepts the table");
    let listed = ns.exec_ok(&["nft", "list", "table", "inet", "gingham"]);
    for expected in [
        "type nat hook postrouting priority srcnat; policy accept;",
        "ip saddr @masq-pools4 ip daddr != @all-pools4 counter",
        "masquerade",
        "ip6 saddr @masq-pools6 ip6 daddr != @all-pools6 counter",
        "10.244.0.0/16",
        "fd00:10::/64",
    ] {
        assert!(
            listed.contains(expected),
            "{expected:?} missing in\n{listed}"
        );
    }
    // A fresh programmer reading the kernel finds the table as desired.
    let mut fresh = Programmer::new(Nft::in_netns(ns.name()));
    let applied = fresh.sync(table).unwrap();
    assert!(applied.read_kernel);
    assert_eq!(applied.commands, 0, "{applied:?}");
    // natOutgoing turned off: the chain and sets go, by a diff.
    let off = render(&NodeProgram::default(), &settings(false)).table;
    let applied = fresh.sync(off).unwrap();
    assert!(!applied.replaced, "{applied:?}");
    let listed = ns.exec_ok(&["nft", "list", "table", "inet", "gingham"]);
    assert!(!listed.contains("masquerade"), "{listed}");
}

/// pod —(veth)— node —(veth)— outside; the outside host routes the pool back to the node (as a
/// router that learned pod routes would), so that un-NATed replies come back too.
struct Lab {
    pod: TestNetns,
    node: TestNetns,
    outside: TestNetns,
}

impl Lab {
    fn new() -> Lab {
        gingham_testkit::require_root();
        gingham_testkit::require_tool("ip");
        gingham_testkit::require_tool("nft");
        let lab = Lab {
            pod: TestNetns::new("natpod"),
            node: TestNetns::new("natnode"),
            outside: TestNetns::new("natout"),
        };
        let (pod, node, outside) = (&lab.pod, &lab.node, &lab.outside);
        pod.exec_ok(&[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "pod0",
            "netns",
            node.name(),
        ]);
        pod.exec_ok(&["ip", "addr", "add", &format!("{POD}/24"), "dev", "eth0"]);
        pod.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        pod.exec_ok(&["ip", "route", "add", "default", "via", POD_GATEWAY]);
        node.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{POD_GATEWAY}/24"),
            "dev",
            "pod0",
        ]);
        node.exec_ok(&["ip", "link", "set", "pod0", "up"]);
        node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        wire_to_underlay(
            node,
            outside,
            "out0",
            &format!("{NODE}/24"),
            &format!("{OUTSIDE}/24"),
        );
        outside.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{OUTSIDE_IN_POOL}/32"),
            "dev",
            "lo",
        ]);
        outside.exec_ok(&["ip", "route", "add", "10.244.0.0/16", "via", NODE]);
        lab
    }

    /// The source address the outside host sees for a TCP connection and a UDP datagram from
    /// the pod to `to`.
    fn seen_from_pod(&self, to: &str) -> (IpAddr, IpAddr) {
        let out = NetnsRef::Path(self.outside.path());
        let pod = NetnsRef::Path(self.pod.path());
        let to: IpAddr = to.parse().unwrap();
        let (listener, udp) = in_netns(&out, || {
            (
                TcpListener::bind((to, 0)).unwrap(),
                UdpSocket::bind((to, 0)).unwrap(),
            )
        })
        .unwrap();
        let tcp_to = listener.local_addr().unwrap();
        let udp_to = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let client = std::thread::spawn(move || {
            in_netns(&pod, || {
                let mut s = TcpStream::connect_timeout(&tcp_to, Duration::from_secs(5))
                    .expect("the pod connects to the outside");
                let u = UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), 0)).unwrap();
                u.send_to(b"hello", udp_to).unwrap();
                let mut buf = Vec::new();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = s.read_to_end(&mut buf);
            })
            .unwrap()
        });
        let (conn, tcp_peer): (TcpStream, SocketAddr) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        let (_, udp_peer) = udp.recv_from(&mut buf).expect("the datagram arrives");
        drop(conn);
        client.join().unwrap();
        (tcp_peer.ip(), udp_peer.ip())
    }
}

#[test]
fn sys_nat_outgoing_masquerades_pod_traffic_leaving_every_pool() {
    let lab = Lab::new();
    let node: IpAddr = NODE.parse().unwrap();
    let pod: IpAddr = POD.parse().unwrap();
    // The agent's path: a renderer kept up to date, the difference installed.
    let mut renderer = Renderer::new(NodeProgram::default(), settings(true));
    let mut programmer = Programmer::new(Nft::in_netns(lab.node.name()));
    let touched = renderer.take_touched();
    programmer
        .sync_touched(renderer.table(), &touched)
        .expect("nft accepts the table");
    assert_eq!(lab.seen_from_pod(OUTSIDE), (node, node), "masqueraded");
    let conntrack = lab.node.exec_ok(&["conntrack", "-L"]);
    assert!(
        conntrack.contains(&format!("src={POD}")) && conntrack.contains(&format!("dst={NODE}")),
        "the node's conntrack shows the SNAT:\n{conntrack}"
    );
    // A destination inside a pool (even one without natOutgoing) is not masqueraded.
    assert_eq!(
        lab.seen_from_pod(OUTSIDE_IN_POOL),
        (pod, pod),
        "inside a pool"
    );

    // natOutgoing turned off (an IPPool update): the pod's own address goes out.
    renderer.set_settings(settings(false));
    let touched = renderer.take_touched();
    assert!(!touched.all);
    programmer.sync_touched(renderer.table(), &touched).unwrap();
    assert_eq!(lab.seen_from_pod(OUTSIDE), (pod, pod), "natOutgoing off");
}

#[test]
fn sys_without_nat_outgoing_the_outside_sees_the_pod() {
    let lab = Lab::new();
    let pod: IpAddr = POD.parse().unwrap();
    let table = render(&NodeProgram::default(), &settings(false)).table;
    Programmer::new(Nft::in_netns(lab.node.name()))
        .sync(table)
        .expect("nft accepts the table");
    assert_eq!(lab.seen_from_pod(OUTSIDE), (pod, pod));
}
