//! The route manager and tunnel address allocation on the in-memory datastore with a
//! recording route table: no root, no kernel.

use gingham_health::Report;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_ipam::{AllocationStatus, AssignIpRequest, AssignRequest, Ipam, PoolSpec};
use gingham_model::{Kind, Resource};
use gingham_net::routes::{ClusterRoute, ClusterRoutes, Via};
use gingham_net::vxlan::vtep_mac;
use ipnet::IpNet;

use super::*;
use crate::tunnels::{self, TunnelKind};

const POOL: &str = "10.244.0.0/16";

fn load(text: &str) -> Vec<Resource> {
    gingham_model::load::load_resources("test.yaml", text).expect("valid test input")
}

fn put(store: &dyn Datastore, r: &Resource) {
    store.put(&r.key(), &r.to_stored()).expect("written");
}

fn node(name: &str, address: &str) -> Resource {
    load(&format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}, labels: {{zone: z1}}}}\nspec: {{bgp: {{ipv4Address: {address}}}}}\n"
    ))
    .remove(0)
}

fn pool(name: &str, cidr: &str, spec: &str) -> Resource {
    load(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}{spec}}}\n"
    ))
    .remove(0)
}

/// Everything stored, decoded (what a resync hands the managers).
fn resources(store: &dyn Datastore) -> Vec<Resource> {
    store
        .list(crate::PREFIX)
        .expect("listed")
        .kvs
        .iter()
        .filter_map(|kv| {
            let (kind, _, _) = Kind::parse_key(&kv.key)?;
            Resource::from_stored(kind, &kv.value).ok()
        })
        .collect()
}

fn pools(store: &dyn Datastore) -> Vec<gingham_model::IpPool> {
    resources(store)
        .into_iter()
        .filter_map(|r| match r {
            Resource::IpPool(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn stored_node(store: &dyn Datastore, name: &str) -> gingham_model::Node {
    match resources(store)
        .into_iter()
        .find(|r| r.kind() == Kind::Node && r.name() == name)
    {
        Some(Resource::Node(n)) => n,
        _ => panic!("no Node {name}"),
    }
}

/// A workload address for `node` from the pool (its first one claims a block for the node).
fn workload(store: &dyn Datastore, node: &str, handle: &str) -> IpAddr {
    let req = AssignRequest {
        handle_id: handle.into(),
        attrs: BTreeMap::from([("node".to_owned(), node.to_owned())]),
        node: node.into(),
        num_v4: 1,
        pools_v4: vec![PoolSpec::new("pool", POOL.parse().unwrap())],
        ..Default::default()
    };
    Ipam::new(store).auto_assign(&req).expect("assigned").v4[0].ip
}

fn block_of(store: &dyn Datastore, ip: IpAddr) -> IpNet {
    match Ipam::new(store).get_allocation(ip).expect("read") {
        AllocationStatus::InUse(a) => a.block,
        other => panic!("{ip} not in use: {other:?}"),
    }
}

fn v4(ip: &str) -> Ipv4Addr {
    ip.parse().unwrap()
}

/// Three nodes: a and b on 192.168.1.0/24 (one rack), c on 192.168.2.0/24 (another), each
/// with a tunnel address (as each node's agent would give itself) and a workload.
struct Cluster {
    store: MemStore,
    /// A workload address on each node, by node.
    pods: BTreeMap<&'static str, IpAddr>,
}

const NODES: [(&str, &str); 3] = [
    ("node-a", "192.168.1.1/24"),
    ("node-b", "192.168.1.2/24"),
    ("node-c", "192.168.2.1/24"),
];

fn cluster(pool_spec: &str) -> Cluster {
    let store = MemStore::new();
    put(&store, &pool("pods", POOL, pool_spec));
    for (name, address) in NODES {
        put(&store, &node(name, address));
    }
    for (name, _) in NODES {
        tunnels::reconcile(&store, name, &pools(&store), &[]).expect("tunnel addresses");
    }
    let mut pods = BTreeMap::new();
    for (name, _) in NODES {
        pods.insert(name, workload(&store, name, &format!("pod-{name}")));
    }
    Cluster { store, pods }
}

fn manager(
    node: &str,
    networking: Networking,
    table: RecordingRoutes,
) -> RouteManager<RecordingRoutes> {
    RouteManager::new(node, networking, table, Health::default())
}

/// Resyncs `m` from the store and applies; returns what it asked the route table for.
fn program(m: &mut RouteManager<RecordingRoutes>, store: &dyn Datastore) -> ClusterRoutes {
    m.resync(&resources(store));
    m.apply(store, Instant::now()).expect("applied");
    m.table().last().expect("programmed")
}

fn tunnel(store: &dyn Datastore, name: &str) -> IpAddr {
    ip(&stored_node(store, name).spec.ipv4_vxlan_tunnel_addr)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(dst: IpNet, via: Via) -> ClusterRoute {
    ClusterRoute { dst, via }
}

#[test]
fn cross_subnet_reaches_the_same_rack_plainly_and_the_other_through_vxlan() {
    let c = cluster(", vxlanMode: CrossSubnet");
    let s = &c.store;
    let mut m = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut m, s);
    let dev = want.vxlan.as_ref().expect("a VXLAN device");
    assert_eq!(dev.name, "vxlan.calico");
    assert_eq!((dev.vni, dev.port), (4096, 4789));
    assert_eq!(dev.local, ip("192.168.1.1"));
    assert_eq!(dev.address, tunnel(s, "node-a"));
    assert_eq!(dev.mac, vtep_mac("node-a"));
    assert_eq!(
        dev.mtu,
        Some(1450),
        "the host's MTU (1500, recorded) minus 50"
    );
    let vteps: Vec<_> = want
        .vteps
        .iter()
        .map(|v| (v.tunnel_ip, v.mac, v.host_ip))
        .collect();
    assert_eq!(
        vteps.into_iter().collect::<std::collections::BTreeSet<_>>(),
        [
            (tunnel(s, "node-b"), vtep_mac("node-b"), ip("192.168.1.2")),
            (tunnel(s, "node-c"), vtep_mac("node-c"), ip("192.168.2.1")),
        ]
        .into_iter()
        .collect()
    );
    let b_block = block_of(s, c.pods["node-b"]);
    let c_block = block_of(s, c.pods["node-c"]);
    assert_eq!(
        want.routes.iter().copied().collect::<Vec<_>>(),
        {
            let mut v = vec![
                route(b_block, Via::Underlay("192.168.1.2".parse().unwrap())),
                route(c_block, Via::Vxlan(tunnel(s, "node-c"))),
            ];
            v.sort();
            v
        },
        "no route for the node's own block; b by the underlay, c through VXLAN"
    );
    assert_eq!(
        route(c_block, Via::Vxlan(tunnel(s, "node-c"))).to_string(),
        format!(
            "{c_block} via {} dev vxlan.calico onlink",
            tunnel(s, "node-c")
        )
    );
    assert!(m.health.state().problems.is_empty());
}

#[test]
fn always_encapsulates_even_on_the_same_subnet() {
    let c = cluster(", vxlanMode: Always");
    let s = &c.store;
    let mut m = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut m, s);
    let b_block = block_of(s, c.pods["node-b"]);
    assert!(
        want.routes
            .contains(&route(b_block, Via::Vxlan(tunnel(s, "node-b")))),
        "{:?}",
        want.routes
    );
}

#[test]
fn routes_come_and_go_with_blocks_and_nodes() {
    let store = MemStore::new();
    put(&store, &pool("pods", POOL, ", vxlanMode: Always"));
    for (name, address) in NODES {
        put(&store, &node(name, address));
        tunnels::reconcile(&store, name, &pools(&store), &[]).expect("tunnel address");
    }
    let mut m = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    // The tunnel addresses came from each node's own block: those are routed already.
    let before = program(&mut m, &store);
    let blocks = |want: &ClusterRoutes, node: &str| -> Vec<ClusterRoute> {
        let gw = tunnel(&store, node);
        want.routes
            .iter()
            .filter(|r| r.via == Via::Vxlan(gw))
            .copied()
            .collect()
    };
    assert_eq!(blocks(&before, "node-c").len(), 1, "{:?}", before.routes);

    // A block of c's appears (its first block is full): routed once IPAM says so.
    let c_block = block_of(&store, tunnel(&store, "node-c"));
    let taken: Vec<IpAddr> = (0..64)
        .map(|i| workload(&store, "node-c", &format!("c-{i}")))
        .collect();
    let second = block_of(&store, *taken.last().unwrap());
    assert_ne!(second, c_block, "64 more addresses need a second /26");
    m.on_ipam(&gingham_ipam::stored::block_key(&second));
    m.apply(&store, Instant::now()).unwrap();
    let now = m.table().last().unwrap();
    assert!(
        now.routes
            .contains(&route(second, Via::Vxlan(tunnel(&store, "node-c"))))
    );

    // The addresses go and the block is given up: its route goes.
    for i in 0..64 {
        Ipam::new(&store)
            .release_by_handle(&format!("c-{i}"))
            .unwrap();
    }
    Ipam::new(&store)
        .release_affinity("node-c", &second, true)
        .unwrap();
    m.on_ipam(&gingham_ipam::stored::block_key(&second));
    m.apply(&store, Instant::now()).unwrap();
    let now = m.table().last().unwrap();
    assert!(
        !now.routes.iter().any(|r| r.dst == second),
        "{:?}",
        now.routes
    );
    assert!(now.routes.iter().any(|r| r.dst == c_block));

    // Node c is deleted: its routes and its VTEP go.
    let key = Kind::Node.key(None, "node-c");
    store.delete(&key, None).unwrap();
    m.on_update(&Update {
        key,
        kind: Kind::Node,
        namespace: None,
        name: "node-c".into(),
        resource: None,
    });
    m.apply(&store, Instant::now()).unwrap();
    let now = m.table().last().unwrap();
    assert!(
        !now.routes.iter().any(|r| r.dst == c_block),
        "{:?}",
        now.routes
    );
    assert!(!now.vteps.iter().any(|v| v.host_ip == ip("192.168.2.1")));
    assert_eq!(now.vteps.len(), 1, "node-b's VTEP stays");
}

#[test]
fn a_borrowed_address_gets_a_32_via_the_node_that_uses_it() {
    let c = cluster(", vxlanMode: CrossSubnet");
    let s = &c.store;
    // An address of node-b's block, used by a workload on node-c (CNI `IP=` / ipAddrs).
    let b_block = block_of(s, c.pods["node-b"]);
    let borrowed = b_block.hosts().nth(20).unwrap();
    let req = AssignIpRequest {
        ip: Some(borrowed),
        handle_id: "borrower".into(),
        attrs: BTreeMap::from([("node".to_owned(), "node-c".to_owned())]),
        node: "node-c".into(),
        pools: vec![PoolSpec::new("pool", POOL.parse().unwrap())],
        ..Default::default()
    };
    let got = Ipam::new(s).assign_ip(&req).expect("assigned");
    assert!(got.borrowed);
    let host = IpNet::from(borrowed);
    for (me, via) in [
        ("node-a", Via::Vxlan(tunnel(s, "node-c"))),
        ("node-b", Via::Vxlan(tunnel(s, "node-c"))),
    ] {
        let mut m = manager(me, Networking::Vxlan, RecordingRoutes::default());
        let want = program(&mut m, s);
        assert!(
            want.routes.contains(&route(host, via)),
            "{me}: {:?}",
            want.routes
        );
    }
    // Node c holds it locally: no route to itself.
    let mut m = manager("node-c", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut m, s);
    assert!(
        !want.routes.iter().any(|r| r.dst == host),
        "{:?}",
        want.routes
    );
    // A borrowed address on the same subnet goes by the underlay.
    let req = AssignIpRequest {
        ip: Some(block_of(s, c.pods["node-c"]).hosts().nth(20).unwrap()),
        handle_id: "borrower-2".into(),
        attrs: BTreeMap::from([("node".to_owned(), "node-b".to_owned())]),
        node: "node-b".into(),
        pools: vec![PoolSpec::new("pool", POOL.parse().unwrap())],
        ..Default::default()
    };
    let got = Ipam::new(s).assign_ip(&req).unwrap();
    let mut m = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut m, s);
    assert!(
        want.routes.contains(&route(
            IpNet::from(got.ip),
            Via::Underlay("192.168.1.2".parse().unwrap())
        )),
        "{:?}",
        want.routes
    );
}

#[test]
fn ipip_routes_go_through_tunl0_with_cross_subnet() {
    let c = cluster(", ipipMode: CrossSubnet");
    let s = &c.store;
    let a = stored_node(s, "node-a");
    let ipip = TunnelKind::Ipip.get(&a).to_owned();
    assert!(!ipip.is_empty(), "an IPIP tunnel address is assigned");
    assert!(a.spec.ipv4_vxlan_tunnel_addr.is_empty());
    let mut m = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut m, s);
    assert!(want.vxlan.is_none());
    assert_eq!(want.ipip.as_ref().map(|d| d.address), Some(v4(&ipip)));
    let b_block = block_of(s, c.pods["node-b"]);
    let c_block = block_of(s, c.pods["node-c"]);
    assert!(want.routes.contains(&route(
        b_block,
        Via::Underlay("192.168.1.2".parse().unwrap())
    )));
    let r = route(c_block, Via::Ipip(v4("192.168.2.1")));
    assert!(want.routes.contains(&r), "{:?}", want.routes);
    assert_eq!(
        r.to_string(),
        format!("{c_block} via 192.168.2.1 dev tunl0 onlink")
    );
    assert!(m.health.state().problems.is_empty());
}

#[test]
fn without_the_ipip_module_ipip_is_a_readiness_problem_and_vxlan_still_works() {
    let c = cluster(", vxlanMode: Always");
    let s = &c.store;
    put(s, &pool("tunnelled", "10.250.0.0/16", ", ipipMode: Always"));
    let table = RecordingRoutes {
        ipip: false,
        ..Default::default()
    };
    let mut m = manager("node-a", Networking::Vxlan, table);
    m.health.state().ready = true;
    let want = program(&mut m, s);
    let (code, why) = m.health.readiness();
    assert_eq!(code, gingham_health::StatusCode::SERVICE_UNAVAILABLE);
    assert!(why.contains(NO_IPIP), "{why}");
    assert!(why.contains("tunnelled"), "names the pool: {why}");
    assert!(want.ipip.is_none());
    assert!(!want.routes.iter().any(|r| matches!(r.via, Via::Ipip(_))));
    let c_block = block_of(s, c.pods["node-c"]);
    assert!(
        want.routes
            .contains(&route(c_block, Via::Vxlan(tunnel(s, "node-c"))))
    );
    // The IPIP pool goes: the problem with it.
    let key = Kind::IpPool.key(None, "tunnelled");
    s.delete(&key, None).unwrap();
    m.on_update(&Update {
        key,
        kind: Kind::IpPool,
        namespace: None,
        name: "tunnelled".into(),
        resource: None,
    });
    m.apply(s, Instant::now()).unwrap();
    assert_eq!(m.health.readiness().0, gingham_health::StatusCode::OK);
}

#[test]
fn bird_programs_only_encapsulated_pools_and_none_programs_nothing() {
    let c = cluster(", vxlanMode: CrossSubnet");
    let s = &c.store;
    // A second, unencapsulated pool with a block of node-b's.
    put(s, &pool("plain", "10.245.0.0/16", ""));
    let req = AssignRequest {
        handle_id: "plain-b".into(),
        attrs: BTreeMap::from([("node".to_owned(), "node-b".to_owned())]),
        node: "node-b".into(),
        num_v4: 1,
        pools_v4: vec![PoolSpec::new("plain", "10.245.0.0/16".parse().unwrap())],
        ..Default::default()
    };
    let plain = Ipam::new(s).auto_assign(&req).unwrap().v4[0].block;
    let b_block = block_of(s, c.pods["node-b"]);

    let mut vx = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut vx, s);
    assert!(
        want.routes
            .contains(&route(plain, Via::Underlay("192.168.1.2".parse().unwrap())))
    );

    let mut bird = manager("node-a", Networking::Bird, RecordingRoutes::default());
    let want = program(&mut bird, s);
    assert!(
        !want.routes.iter().any(|r| r.dst == plain),
        "BIRD's: {:?}",
        want.routes
    );
    assert!(want.routes.contains(&route(
        b_block,
        Via::Underlay("192.168.1.2".parse().unwrap())
    )));
    assert!(want.vxlan.is_some());

    // BGPConfiguration programClusterRoutes: Disabled: BIRD's kernel filter rejects the
    // unencapsulated pool ("Cluster routes are handled by Felix"), so the agent routes it
    // within the subnet, as felix's no-encap route manager does.
    let disabled = load("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {programClusterRoutes: Disabled}\n").remove(0);
    put(s, &disabled);
    let want = program(&mut bird, s);
    assert!(
        want.routes
            .contains(&route(plain, Via::Underlay("192.168.1.2".parse().unwrap()))),
        "{:?}",
        want.routes
    );
    s.delete(&disabled.key(), None).expect("deleted");

    let table = RecordingRoutes::default();
    let mut none = manager("node-a", Networking::None, table.clone());
    none.resync(&resources(s));
    none.apply(s, Instant::now()).unwrap();
    assert!(
        table.requests.lock().unwrap().is_empty(),
        "nothing asked of the kernel"
    );
    assert_eq!(none.deadline(), None);
}

#[test]
fn the_agent_assigns_records_keeps_and_releases_its_tunnel_address() {
    let store = MemStore::new();
    put(&store, &pool("pods", POOL, ", vxlanMode: Always"));
    put(&store, &node("node-a", "192.168.1.1/24"));
    let mut m = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut m, &store);
    let a = stored_node(&store, "node-a");
    let ip: IpAddr = a
        .spec
        .ipv4_vxlan_tunnel_addr
        .parse()
        .expect("recorded on the Node");
    assert_eq!(want.vxlan.as_ref().map(|d| d.address), Some(ip));
    let AllocationStatus::InUse(info) = Ipam::new(&store).get_allocation(ip).unwrap() else {
        panic!("allocated");
    };
    assert_eq!(info.handle_id.as_deref(), Some("vxlan-tunnel-addr-node-a"));
    assert_eq!(
        info.attrs.get("type").map(String::as_str),
        Some("vxlanTunnelAddress")
    );
    assert_eq!(info.attrs.get("node").map(String::as_str), Some("node-a"));

    // A restart (resync) keeps it, and writes nothing.
    let rev = store.revision().unwrap();
    let mut again = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    program(&mut again, &store);
    assert_eq!(store.revision().unwrap(), rev, "nothing written");
    assert_eq!(
        stored_node(&store, "node-a").spec.ipv4_vxlan_tunnel_addr,
        ip.to_string()
    );

    // Someone clears the field: the same handle gets an address again.
    let mut cleared = stored_node(&store, "node-a");
    cleared.spec.ipv4_vxlan_tunnel_addr.clear();
    put(&store, &Resource::Node(cleared));
    program(&mut again, &store);
    let now = stored_node(&store, "node-a").spec.ipv4_vxlan_tunnel_addr;
    assert!(!now.is_empty());
    assert_eq!(
        Ipam::new(&store)
            .ips_by_handle("vxlan-tunnel-addr-node-a")
            .unwrap()
            .len(),
        1,
        "one address per node"
    );

    // The pool stops encapsulating: released and cleared.
    put(&store, &pool("pods", POOL, ", vxlanMode: Never"));
    let want = program(&mut again, &store);
    assert!(
        stored_node(&store, "node-a")
            .spec
            .ipv4_vxlan_tunnel_addr
            .is_empty()
    );
    assert!(
        Ipam::new(&store)
            .ips_by_handle("vxlan-tunnel-addr-node-a")
            .unwrap()
            .is_empty()
    );
    assert!(want.vxlan.is_none(), "no VXLAN pool: no device");
}

#[test]
fn tunnel_addresses_follow_pool_selectors_uses_and_state() {
    let store = MemStore::new();
    put(&store, &node("node-a", "192.168.1.1/24"));
    for (spec, wanted) in [
        (", vxlanMode: Always, nodeSelector: zone == 'z1'", true),
        (", vxlanMode: Always, nodeSelector: zone == 'z2'", false),
        (", vxlanMode: Always, disabled: true", false),
        (", vxlanMode: Always, allowedUses: [Workload]", false),
        (", ipipMode: Always", false),
    ] {
        put(&store, &pool("pods", POOL, spec));
        let n = tunnels::reconcile(&store, "node-a", &pools(&store), &[])
            .unwrap()
            .unwrap();
        assert_eq!(!n.spec.ipv4_vxlan_tunnel_addr.is_empty(), wanted, "{spec}");
    }
    // The IPIP address is the other field, under bgp.
    let n = stored_node(&store, "node-a");
    assert!(!TunnelKind::Ipip.get(&n).is_empty());
    put(&store, &pool("pods", POOL, ""));
    let n = tunnels::reconcile(&store, "node-a", &pools(&store), &[])
        .unwrap()
        .unwrap();
    assert!(TunnelKind::Ipip.get(&n).is_empty());
    assert_eq!(
        n.spec
            .bgp
            .as_ref()
            .and_then(|b| b.ipv4_address)
            .map(|a| a.to_string())
            .as_deref(),
        Some("192.168.1.1/24")
    );
    // No Node: nothing to record the address on, nothing taken.
    assert!(
        tunnels::reconcile(&store, "node-x", &pools(&store), &[])
            .unwrap()
            .is_none()
    );
}

#[test]
fn routes_are_checked_again_every_route_refresh_interval() {
    let c = cluster(", vxlanMode: Always");
    let s = &c.store;
    put(
        s,
        &load("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {routeRefreshInterval: 2s}\n").remove(0),
    );
    let table = RecordingRoutes::default();
    let mut m = manager("node-a", Networking::Vxlan, table.clone());
    let start = Instant::now();
    m.resync(&resources(s));
    m.apply(s, start).unwrap();
    let count = || table.requests.lock().unwrap().len();
    assert_eq!(count(), 1);
    // Nothing changed and the interval has not passed: nothing asked.
    m.apply(s, start + std::time::Duration::from_secs(1))
        .unwrap();
    assert_eq!(count(), 1);
    assert_eq!(
        m.deadline(),
        Some(start + std::time::Duration::from_secs(2))
    );
    // It has: the same state is asked for again (whatever was removed comes back).
    m.apply(s, start + std::time::Duration::from_secs(2))
        .unwrap();
    assert_eq!(count(), 2);
    let r = table.requests.lock().unwrap();
    assert_eq!(r[0], r[1]);
}

#[test]
fn ipv6_vxlan_has_its_own_device_entries_and_routes() {
    let store = MemStore::new();
    put(&store, &pool("pods", POOL, ", vxlanMode: CrossSubnet"));
    put(
        &store,
        &pool("pods6", "fd00:10::/48", ", vxlanMode: CrossSubnet"),
    );
    let nodes = [
        ("node-a", "192.168.1.1/24", "fd00:1::1/64"),
        ("node-b", "192.168.1.2/24", "fd00:1::2/64"),
        ("node-c", "192.168.2.1/24", "fd00:2::1/64"),
    ];
    for (name, v4net, v6net) in nodes {
        put(
            &store,
            &load(&format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: {v4net}, ipv6Address: {v6net}}}}}\n"
            ))
            .remove(0),
        );
        tunnels::reconcile(&store, name, &pools(&store), &[]).expect("tunnel addresses");
    }
    let v6_tunnel = |name: &str| ip(&stored_node(&store, name).spec.ipv6_vxlan_tunnel_addr);
    let a6 = v6_tunnel("node-a");
    assert!(a6.is_ipv6());
    let AllocationStatus::InUse(info) = Ipam::new(&store).get_allocation(a6).unwrap() else {
        panic!("allocated");
    };
    assert_eq!(
        info.handle_id.as_deref(),
        Some("vxlan-v6-tunnel-addr-node-a")
    );
    assert_eq!(
        info.attrs.get("type").map(String::as_str),
        Some("vxlanV6TunnelAddress")
    );
    // Each node's IPv6 block (its tunnel address's).
    let block6 = |name: &str| block_of(&store, v6_tunnel(name));
    let mut m = manager("node-a", Networking::Vxlan, RecordingRoutes::default());
    let want = program(&mut m, &store);
    let dev = want.vxlan_v6.as_ref().expect("an IPv6 VXLAN device");
    assert_eq!(dev.name, "vxlan-v6.calico");
    assert_eq!(dev.local, ip("fd00:1::1"));
    assert_eq!(dev.address, a6);
    assert_eq!(dev.mac, gingham_net::vxlan::vtep_mac_v6("node-a"));
    assert_eq!(dev.overhead(), 70);
    assert!(want.vxlan.is_some(), "and the IPv4 one");
    assert_eq!(want.local_v6, Some(ip("fd00:1::1")));
    assert!(want.vteps.iter().any(|v| v.tunnel_ip == v6_tunnel("node-c")
        && v.host_ip == ip("fd00:2::1")
        && v.mac == gingham_net::vxlan::vtep_mac_v6("node-c")));
    assert!(
        want.routes
            .contains(&route(block6("node-b"), Via::Underlay(ip("fd00:1::2"))))
    );
    let cross = route(block6("node-c"), Via::Vxlan(v6_tunnel("node-c")));
    assert!(want.routes.contains(&cross), "{:?}", want.routes);
    assert!(cross.to_string().contains("dev vxlan-v6.calico onlink"));
    // The IPv6 pool goes: its device and address go, the IPv4 ones stay.
    let key = Kind::IpPool.key(None, "pods6");
    store.delete(&key, None).unwrap();
    let want = program(&mut m, &store);
    assert!(want.vxlan_v6.is_none());
    assert!(want.vxlan.is_some());
    assert!(
        stored_node(&store, "node-a")
            .spec
            .ipv6_vxlan_tunnel_addr
            .is_empty()
    );
}

/// A route table that refuses, as a kernel might (an interface gone mid-change).
struct Failing(bool);

impl RouteTable for Failing {
    fn ipip_support(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn sync(&mut self, _: &ClusterRoutes) -> Result<Vec<String>, gingham_net::NetError> {
        if self.0 {
            Err(gingham_net::NetError::NoSuchInterface {
                name: "vxlan.calico".into(),
                netns: "the test".into(),
            })
        } else {
            Ok(Vec::new())
        }
    }
    fn host_mtu(&mut self, _: &regex::Regex) -> Result<Option<u32>, gingham_net::NetError> {
        Ok(Some(1500))
    }
}

#[test]
fn a_route_table_that_fails_makes_the_node_unready_until_it_works() {
    let c = cluster(", vxlanMode: Always");
    let s = &c.store;
    let mut m = RouteManager::new(
        "node-a",
        Networking::Vxlan,
        Failing(true),
        Health::default(),
    );
    m.health.state().ready = true;
    m.resync(&resources(s));
    m.apply(s, Instant::now()).unwrap();
    let (code, why) = m.health.readiness();
    assert_eq!(code, gingham_health::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        why.contains("programming the routes to other nodes failed"),
        "{why}"
    );
    assert!(m.due, "tried again on the next pass");
    m.table.0 = false;
    m.apply(s, Instant::now()).unwrap();
    assert_eq!(m.health.readiness().0, gingham_health::StatusCode::OK);
}

/// Felix's pod MTU in the MTU file: the smallest enabled tunnel's (the host's MTU minus the
/// overhead, or FelixConfiguration's), the host's with no tunnel, felix's 1460 when no
/// interface matches; rewritten as pools come and go, in every networking mode, and the
/// VXLAN device gets the same MTU.
#[test]
fn the_pod_mtu_file_follows_pools_and_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::mtu::file_in(dir.path());
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    let c = cluster(", vxlanMode: Always");
    let s = &c.store;
    let table = RecordingRoutes {
        host_mtu: Some(9000),
        ..RecordingRoutes::default()
    };
    let mut m = manager("node-a", Networking::Vxlan, table);
    m.set_mtu_file(file.clone());
    let want = program(&mut m, s);
    assert_eq!(read(), "8950");
    assert_eq!(want.vxlan.as_ref().and_then(|d| d.mtu), Some(8950));

    put(
        s,
        &pool("pods", POOL, ", vxlanMode: Never, ipipMode: Always"),
    );
    program(&mut m, s);
    assert_eq!(read(), "8980", "IPIP's overhead is 20");

    put(
        s,
        &pool("pods", POOL, ", vxlanMode: Never, ipipMode: Never"),
    );
    program(&mut m, s);
    assert_eq!(read(), "9000", "no tunnel: the host's MTU");

    put(
        s,
        &load("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {vxlanEnabled: true, vxlanMTU: 1300}\n").remove(0),
    );
    program(&mut m, s);
    assert_eq!(
        read(),
        "1300",
        "FelixConfiguration's vxlanEnabled and vxlanMTU"
    );

    // Without BGP or tunnels to program (networking none) the file is still written; with no
    // interface matching mtuIfacePattern, felix assumes 1460.
    let none = tempfile::tempdir().unwrap();
    let none_file = crate::mtu::file_in(none.path());
    let table = RecordingRoutes {
        host_mtu: None,
        ..RecordingRoutes::default()
    };
    let mut m = manager("node-a", Networking::None, table);
    m.set_mtu_file(none_file.clone());
    put(s, &pool("pods", POOL, ", vxlanMode: Always"));
    m.resync(&resources(s));
    m.apply(s, Instant::now()).expect("applied");
    assert_eq!(std::fs::read_to_string(&none_file).unwrap(), "1300");
    s.delete(&load("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {}\n").remove(0).key(), None).unwrap();
    m.resync(&resources(s));
    m.apply(s, Instant::now()).expect("applied");
    assert_eq!(std::fs::read_to_string(&none_file).unwrap(), "1410");
}
