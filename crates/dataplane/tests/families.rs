//! Rules only for the families their sets have members of, with real packets: in namespaces
//! this test makes, a dual-stack server lets in UDP from the pods its policy's selector picks;
//! while the selected client has only an IPv4 address in its endpoint, the table holds no IPv6
//! rule for the selector and the client's IPv6 datagrams are dropped; when the endpoint gains
//! its IPv6 address (the set's first IPv6 member, an update after the table was programmed),
//! the rule appears and they pass; when it loses it again, they are dropped again. IPv4 passes
//! throughout. System test: root, `ip` and nftables.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use gingham_calc::Snapshot;
use gingham_calc::eval::Flow;
use gingham_calc::incremental::{Calculator, Update};
use gingham_dataplane::{Dataplane, Nft, NftDataplane, Settings, Table};
use gingham_model::Resource;
use gingham_net::netns::{NetnsRef, in_netns};
use gingham_testkit::netns::{TestNetns, TwoPods};

#[path = "common/pods.rs"]
mod pods;

const NODE: &str = "node0";
const CLIENT_IP: &str = "10.97.0.1";
const SERVER_IP: &str = "10.97.0.2";
const CLIENT_IP6: &str = "fd00:97::1";
const SERVER_IP6: &str = "fd00:97::2";
/// The node's address on each pod's veth, the pods' IPv6 gateway.
const GATEWAY6: &str = "fe80::1";
const PORT: u16 = 8081;

fn endpoint(pod: &str, labels: &str, iface: &str, nets: &[&str]) -> Resource {
    let text = pods::workload_yaml(NODE, pod, labels, iface, nets);
    gingham_model::load_resources("endpoint.yaml", &text)
        .expect("valid endpoint")
        .remove(0)
}

fn client(dual_stack: bool) -> Resource {
    let v4 = format!("{CLIENT_IP}/32");
    let v6 = format!("{CLIENT_IP6}/128");
    let nets: Vec<&str> = if dual_stack {
        vec![&v4, &v6]
    } else {
        vec![&v4]
    };
    endpoint("client", "role: client", TwoPods::CLIENT_IF, &nets)
}

/// The server (app web, dual-stack) lets in UDP to [`PORT`] from pods with role client only.
fn cluster() -> Vec<Resource> {
    let mut resources = gingham_model::load_resources(
        "policy.yaml",
        &format!(
            "{profile}apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: web, namespace: ns0}}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: UDP
    source: {{selector: role == 'client'}}
    destination: {{ports: [{PORT}]}}
",
            profile = pods::ALLOW_ALL_PROFILE
        ),
    )
    .expect("valid policy");
    resources.push(client(false));
    resources.push(endpoint(
        "server",
        "app: web",
        TwoPods::SERVER_IF,
        &[&format!("{SERVER_IP}/32"), &format!("{SERVER_IP6}/128")],
    ));
    resources
}

/// IPv6 beside the pods' IPv4 (as Calico plumbs it: the node's link-local gateway on each veth,
/// a /128 route per pod); neighbours are static, so nothing waits for address detection.
fn add_ipv6(pods: &TwoPods) {
    let node = &pods.node;
    node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    for (pod, host_if, addr) in [
        (&pods.client, TwoPods::CLIENT_IF, CLIENT_IP6),
        (&pods.server, TwoPods::SERVER_IF, SERVER_IP6),
    ] {
        let mac = |ns: &TestNetns, dev: &str| {
            ns.exec_ok(&["cat", &format!("/sys/class/net/{dev}/address")])
                .trim()
                .to_owned()
        };
        let pod_if = TwoPods::POD_IF;
        node.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{GATEWAY6}/64"),
            "dev",
            host_if,
            "nodad",
        ]);
        node.exec_ok(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{addr}/128"),
            "dev",
            host_if,
        ]);
        let pod_mac = mac(pod, pod_if);
        node.exec_ok(&[
            "ip",
            "-6",
            "neigh",
            "add",
            addr,
            "lladdr",
            &pod_mac,
            "dev",
            host_if,
            "nud",
            "permanent",
        ]);
        pod.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{addr}/128"),
            "dev",
            pod_if,
            "nodad",
        ]);
        let node_mac = mac(node, host_if);
        pod.exec_ok(&[
            "ip",
            "-6",
            "neigh",
            "add",
            GATEWAY6,
            "lladdr",
            &node_mac,
            "dev",
            pod_if,
            "nud",
            "permanent",
        ]);
        pod.exec_ok(&[
            "ip", "-6", "route", "add", "default", "via", GATEWAY6, "dev", pod_if,
        ]);
    }
}

/// Whether a datagram from the client to the server's `to` address arrives.
fn udp_passes(pods: &TwoPods, server: &UdpSocket, to: &str, tag: u32) -> bool {
    let to = SocketAddr::new(to.parse::<IpAddr>().unwrap(), PORT);
    pods::udp_passes(&pods.client, server, to, tag)
}

/// The rules matching the client selector's IPv6 set.
fn ipv6_selector_rules(t: &Table) -> usize {
    t.chains
        .values()
        .flat_map(|c| &c.rules)
        .filter(|r| r.note.ends_with("ns0/web rule 0") && r.text.contains("ip6 saddr @"))
        .count()
}

/// The reference evaluator's verdict for the client's datagram to the server, by family.
fn reference(resources: &[Resource]) -> (bool, bool) {
    let snapshot = Snapshot::build(resources);
    let verdict = |from: &str, to: &str, ipv6: bool| {
        let flow = Flow {
            ipv6,
            ..Flow::new(from, to, 17, Some(PORT))
        };
        snapshot.verdict(&flow).unwrap().allowed
    };
    (
        verdict(CLIENT_IP, SERVER_IP, false),
        verdict(CLIENT_IP6, SERVER_IP6, true),
    )
}

#[test]
fn sys_an_ipv6_rule_appears_when_its_set_gets_its_first_ipv6_member() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    let pods = TwoPods::new("fam", CLIENT_IP, SERVER_IP);
    add_ipv6(&pods);
    let server = in_netns(&NetnsRef::path(pods.server.path()), || {
        let s = UdpSocket::bind(("::", PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s
    })
    .unwrap();
    let both = |pods: &TwoPods, round: u32| {
        (
            udp_passes(pods, &server, SERVER_IP, round * 10),
            udp_passes(pods, &server, SERVER_IP6, round * 10 + 1),
        )
    };
    // Without rules both families pass (the plumbing works).
    assert_eq!(both(&pods, 1), (true, true), "plumbing");

    let mut resources = cluster();
    let mut calc = Calculator::new(NODE);
    calc.load_all(resources.clone());
    let mut dp = NftDataplane::new(Nft::in_netns(pods.node.name()));
    dp.install(calc.state(), Settings::default()).unwrap();
    let table = |dp: &NftDataplane<Nft>| dp.renderer().unwrap().table().clone();
    assert_eq!(
        ipv6_selector_rules(&table(&dp)),
        0,
        "no IPv6 rule for a set without IPv6 members"
    );
    assert_eq!(reference(&resources), (true, false));
    assert_eq!(both(&pods, 2), (true, false), "IPv4 client only");

    // The client's endpoint gains its IPv6 address: an update (through the programmer's
    // incremental path, returning once the kernel committed it).
    for (round, dual_stack, expected_rules) in [(3, true, 1), (4, false, 0), (5, true, 1)] {
        let changes = calc.apply(Update::Upsert(Box::new(client(dual_stack))));
        let applied = dp.update(&changes).unwrap();
        assert!(!applied.replaced, "{applied:?}");
        resources.retain(|r| r.meta().name != format!("{NODE}-k8s-client-eth0"));
        resources.push(client(dual_stack));
        assert_eq!(
            ipv6_selector_rules(&table(&dp)),
            expected_rules,
            "dual stack {dual_stack}"
        );
        let expected = reference(&resources);
        assert_eq!(expected, (true, dual_stack));
        assert_eq!(both(&pods, round), expected, "dual stack {dual_stack}");
    }
}
