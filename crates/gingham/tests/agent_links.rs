//! The agent keys the workload dispatch maps by interface index and watches the node's
//! interfaces (`gingham_agent::links`): a pod whose interface is made again under its name (a
//! new sandbox; the WorkloadEndpoint unchanged) is keyed by its new index at the agent's next
//! tick. System test: root, nftables, real veths and packets in namespaces of its own; the
//! agent runs in this process, in the node's namespace.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use gingham_agent::links::NetlinkLinks;
use gingham_agent::plumbing::RecordingPlumbing;
use gingham_agent::routes::RecordingRoutes;
use gingham_agent::{Agent, Config, Event, Networking};
use gingham_dataplane::Nft;
use gingham_datastore::Datastore as _;
use gingham_datastore::mem::MemStore;
use gingham_net::netns::{NetnsRef, in_netns, in_netns_same_thread};
use gingham_testkit::netns::TwoPods;

const NODE: &str = "node-a";
const CLIENT_IP: &str = "10.97.0.1";
const SERVER_IP: &str = "10.97.0.2";

fn cluster() -> String {
    let mut text = String::from(
        "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.ns0}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
",
    );
    for (pod, iface, ip) in [
        ("client", TwoPods::CLIENT_IF, CLIENT_IP),
        ("server", TwoPods::SERVER_IF, SERVER_IP),
    ] {
        text.push_str(&format!(
            "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--a-k8s-{pod}-eth0
  namespace: ns0
  labels: {{projectcalico.org/namespace: ns0, projectcalico.org/orchestrator: k8s}}
spec: {{orchestrator: k8s, node: {NODE}, pod: {pod}, endpoint: eth0, interfaceName: {iface}, ipNetworks: ['{ip}/32'], profiles: [kns.ns0]}}
---
"
        ));
    }
    text
}

/// Whether a datagram carrying `tag` from the client pod reaches the server's socket.
fn passes(pods: &TwoPods, server: &UdpSocket, tag: u32) -> bool {
    let payload = tag.to_be_bytes();
    in_netns(&NetnsRef::path(pods.client.path()), || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(&payload, (SERVER_IP, 9300)).unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 16];
    loop {
        match server.recv(&mut buf) {
            Ok(4) if buf[..4] == payload => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

#[test]
fn sys_a_pod_whose_interface_is_made_again_is_keyed_by_its_new_index() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    gingham_testkit::require_tool("ip");
    let pods = TwoPods::new("alk", CLIENT_IP, SERVER_IP);
    let server = in_netns(&NetnsRef::path(pods.server.path()), || {
        UdpSocket::bind("0.0.0.0:9300").unwrap()
    })
    .unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let store = MemStore::new();
    for r in gingham_model::load_resources("links.yaml", &cluster()).unwrap() {
        store.put(&r.key(), &r.to_stored()).unwrap();
    }
    let config = Config {
        node: NODE.into(),
        refresh_interval: None,
        networking: Networking::None,
        ..Config::new(NODE)
    };
    let node = NetnsRef::named(pods.node.name());
    let mut agent = in_netns_same_thread(&node, || {
        let mut agent = Agent::new(
            &config,
            Nft::default(),
            RecordingPlumbing::default(),
            Box::new(RecordingRoutes::default()),
        );
        agent
            .policy
            .set_links(Box::new(NetlinkLinks::open().expect("link reports")));
        agent.start(&store).expect("the agent starts");
        agent
    })
    .unwrap();
    let map = || {
        pods.node
            .exec_ok(&["nft", "list", "map", "inet", "gingham", "wl-ingress"])
    };
    let listed = map();
    assert!(listed.contains("type iface_index : verdict"), "{listed}");
    assert!(listed.contains("\"calibserver\" : accept"), "{listed}");
    assert!(passes(&pods, &server, 1), "the profile allows everything");

    // A new sandbox: the server's interface made again, the datastore unchanged. Until the
    // agent hears of it, the server's packets meet the catch-all (a stale index: closed).
    pods.recreate_server_interface(SERVER_IP);
    assert!(!map().contains("\"calibserver\""), "{}", map());
    assert!(!passes(&pods, &server, 2), "a stale index drops");
    // The kernel's reports are queued on the agent's socket: its next tick keys it again.
    in_netns_same_thread(&node, || {
        agent
            .handle(Event::Tick(Instant::now()), &store)
            .expect("the tick programs")
    })
    .unwrap();
    assert!(map().contains("\"calibserver\" : accept"), "{}", map());
    assert!(passes(&pods, &server, 3), "keyed by the new index");
}
