//! The agent keys the workload dispatch maps by interface index and watches the node's
//! interfaces (`gingham_agent::links`): a pod whose interface is made again under its name (a
//! new sandbox; the WorkloadEndpoint unchanged) is looked up by name until the agent's next
//! tick, which keys it by its new index. System test: root, nftables, real veths and packets in namespaces of its own; the
//! agent runs in this process, in the node's namespace.

#[path = "../../dataplane/tests/common/pods.rs"]
mod pods;

use std::net::{SocketAddr, UdpSocket};
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

const NODE: &str = "node0";
const CLIENT_IP: &str = "10.97.0.1";
const SERVER_IP: &str = "10.97.0.2";
const PORT: u16 = 9300;

/// Namespace ns0's allow-all profile and the two pods' endpoints.
fn cluster() -> String {
    let mut text = String::from(pods::ALLOW_ALL_PROFILE);
    for (pod, iface, ip) in [
        ("client", TwoPods::CLIENT_IF, CLIENT_IP),
        ("server", TwoPods::SERVER_IF, SERVER_IP),
    ] {
        text.push_str(&pods::workload_yaml(
            NODE,
            pod,
            "app: x",
            iface,
            &[&format!("{ip}/32")],
        ));
    }
    text
}

/// Whether a datagram carrying `tag` from the client pod reaches the server's socket.
fn passes(two: &TwoPods, server: &UdpSocket, tag: u32) -> bool {
    let to = SocketAddr::new(SERVER_IP.parse().unwrap(), PORT);
    pods::udp_passes(&two.client, server, to, tag)
}

#[test]
fn sys_a_pod_whose_interface_is_made_again_is_keyed_by_its_new_index() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    gingham_testkit::require_tool("ip");
    let pods = TwoPods::new("alk", CLIENT_IP, SERVER_IP);
    let server = in_netns(&NetnsRef::path(pods.server.path()), || {
        UdpSocket::bind(("0.0.0.0", PORT)).unwrap()
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
    // agent hears of it, the server's packets miss the index map and are looked up by name
    // behind its catch-all: they meet the server's own verdict (here the profile's).
    pods.recreate_server_interface(SERVER_IP);
    assert!(!map().contains("\"calibserver\""), "{}", map());
    assert!(
        passes(&pods, &server, 2),
        "not keyed by index: looked up by name"
    );
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
