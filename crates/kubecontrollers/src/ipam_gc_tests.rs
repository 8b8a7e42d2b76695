use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_ipam::{AssignRequest, Ipam, PoolSpec};
use gingham_model::Node;
use gingham_model::k8s::{K8sPod, K8sPodIp};
use gingham_model::node::OrchRef;

use super::*;

const GRACE: Duration = Duration::from_secs(60);

struct World {
    store: Arc<dyn Datastore>,
    cluster: Cluster,
}

impl World {
    fn new() -> Self {
        let mut w = World {
            store: Arc::new(MemStore::new()),
            cluster: Cluster::default(),
        };
        for n in ["node-a", "node-b"] {
            w.add_node(n);
        }
        w
    }

    fn add_node(&mut self, name: &str) {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.spec.orch_refs.push(OrchRef {
            node_name: name.into(),
            orchestrator: "k8s".into(),
        });
        self.cluster.calico_nodes.insert(name.into(), n);
        self.cluster.k8s_nodes.insert(name.into());
    }

    fn ipam(&self) -> Ipam<'_> {
        Ipam::new(self.store.as_ref())
    }

    /// The CNI plugin's ADD: an address for `pod` on `node`, and (with `running`) the pod
    /// reporting it.
    fn add_pod(&mut self, node: &str, pod: &str, running: bool) -> IpAddr {
        self.assign(
            node,
            &format!("k8s-pod-network.{pod}"),
            &[("namespace", "shop"), ("pod", pod), ("node", node)],
        );
        let ip = *self
            .ipam()
            .ips_by_handle(&format!("k8s-pod-network.{pod}"))
            .expect("reads")
            .first()
            .expect("assigned");
        if running {
            let mut p = K8sPod::default();
            p.metadata.name = pod.into();
            p.metadata.namespace = Some("shop".into());
            p.spec.node_name = node.into();
            p.status.pod_ip = ip.to_string();
            p.status.pod_ips = vec![K8sPodIp { ip: ip.to_string() }];
            p.status.phase = "Running".into();
            self.cluster.pods.insert(("shop".into(), pod.into()), p);
        }
        ip
    }

    fn assign(&mut self, node: &str, handle: &str, attrs: &[(&str, &str)]) {
        let req = AssignRequest {
            handle_id: handle.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect::<BTreeMap<_, _>>(),
            node: node.into(),
            num_v4: 1,
            pools_v4: vec![PoolSpec::new(
                "pool",
                "10.244.0.0/16".parse().expect("cidr"),
            )],
            ..AssignRequest::default()
        };
        self.ipam().auto_assign(&req).expect("assigns");
        self.cluster.affinity_nodes.insert(node.into());
    }

    fn allocations(&self) -> Vec<Allocation> {
        self.ipam()
            .allocations()
            .expect("reads")
            .into_iter()
            .map(Allocation::from_info)
            .collect()
    }

    fn pass(&self, gc: &mut Gc, now: Instant) -> (GcPlan, Released) {
        let plan = gc.plan(now, &self.allocations(), &self.cluster);
        let released = release(&self.ipam(), gc, &plan, &mut |_| true).expect("releases");
        (plan, released)
    }
}

#[test]
fn a_leak_on_a_live_node_is_released_only_after_the_grace_period() {
    let mut w = World::new();
    let kept = w.add_pod("node-a", "web", true);
    let leaked = w.add_pod("node-a", "gone", false);
    let mut gc = Gc::new(GRACE);
    let t0 = Instant::now();
    let (plan, released) = w.pass(&mut gc, t0);
    assert_eq!(plan.candidates, 1);
    assert!(released.addresses.is_empty());
    let (plan, _) = w.pass(&mut gc, t0 + GRACE / 2);
    assert_eq!((plan.candidates, plan.confirmed.len()), (1, 0));
    let (plan, released) = w.pass(&mut gc, t0 + GRACE);
    assert_eq!(plan.confirmed.len(), 1);
    assert_eq!(plan.confirmed[0].recheck_on.as_deref(), Some("node-a"));
    assert_eq!(released.addresses, [leaked]);
    let left: Vec<IpAddr> = w.allocations().iter().map(|a| a.ip).collect();
    assert_eq!(left, [kept]);
    // The live node keeps its block.
    assert_eq!(w.ipam().blocks_for_node("node-a").expect("reads").len(), 1);
}

#[test]
fn the_second_look_keeps_an_address_whose_pod_came_back() {
    let mut w = World::new();
    let ip = w.add_pod("node-a", "web", false);
    let mut gc = Gc::new(Duration::ZERO);
    let plan = gc.plan(Instant::now(), &w.allocations(), &w.cluster);
    assert_eq!(plan.confirmed.len(), 1);
    let released = release(&w.ipam(), &mut gc, &plan, &mut |_| false).expect("releases");
    assert!(released.addresses.is_empty());
    assert_eq!(w.allocations()[0].ip, ip);
}

#[test]
fn a_pod_that_moved_to_another_node_leaks_its_old_address() {
    let mut w = World::new();
    w.add_pod("node-a", "web", true);
    let p = w
        .cluster
        .pods
        .get_mut(&("shop".into(), "web".into()))
        .expect("pod");
    p.spec.node_name = "node-b".into();
    let mut gc = Gc::new(Duration::ZERO);
    let (plan, released) = w.pass(&mut gc, Instant::now());
    assert_eq!(plan.confirmed.len(), 1);
    assert_eq!(released.addresses.len(), 1);
}

#[test]
fn a_pod_without_reported_addresses_keeps_its_allocation() {
    let mut w = World::new();
    w.add_pod("node-a", "web", true);
    let p = w
        .cluster
        .pods
        .get_mut(&("shop".into(), "web".into()))
        .expect("pod");
    p.status.pod_ip.clear();
    p.status.pod_ips.clear();
    let mut gc = Gc::new(Duration::ZERO);
    let (plan, _) = w.pass(&mut gc, Instant::now());
    assert!(
        plan.confirmed.is_empty() && plan.candidates == 0,
        "{plan:?}"
    );
}

#[test]
fn a_deleted_node_loses_its_addresses_and_blocks_at_once() {
    let mut w = World::new();
    w.add_pod("node-b", "gone", false);
    w.assign(
        "node-b",
        "vxlan-tunnel-addr-node-b",
        &[
            ("node", "node-b"),
            ("type", gingham_ipam::TYPE_VXLAN_TUNNEL),
        ],
    );
    w.add_pod("node-a", "web", true);
    // The Kubernetes Node goes, and the Calico Node with it.
    w.cluster.k8s_nodes.remove("node-b");
    w.cluster.calico_nodes.remove("node-b");
    let mut gc = Gc::new(GRACE);
    let (plan, released) = w.pass(&mut gc, Instant::now());
    assert_eq!(plan.release_nodes, ["node-b"]);
    assert_eq!(released.addresses.len(), 2, "{plan:?}");
    assert!(plan.confirmed.iter().all(|c| c.recheck_on.is_none()));
    assert!(
        w.ipam()
            .blocks_for_node("node-b")
            .expect("reads")
            .is_empty()
    );
    assert_eq!(w.ipam().blocks_for_node("node-a").expect("reads").len(), 1);
    assert_eq!(w.allocations().len(), 1);
}

#[test]
fn a_deleted_node_with_a_running_pod_or_an_unknown_owner_keeps_its_blocks() {
    let mut w = World::new();
    w.add_pod("node-b", "web", true);
    w.cluster.k8s_nodes.remove("node-b");
    let mut gc = Gc::new(GRACE);
    let (plan, released) = w.pass(&mut gc, Instant::now());
    assert!(
        plan.release_nodes.is_empty() && released.addresses.is_empty(),
        "{plan:?}"
    );

    let mut w = World::new();
    w.assign("node-b", "someone-else", &[("node", "node-b")]);
    w.cluster.k8s_nodes.remove("node-b");
    w.cluster.calico_nodes.remove("node-b");
    let (plan, released) = w.pass(&mut gc, Instant::now());
    assert!(
        plan.release_nodes.is_empty() && released.addresses.is_empty(),
        "{plan:?}"
    );
    assert_eq!(w.ipam().blocks_for_node("node-b").expect("reads").len(), 1);
}

#[test]
fn a_node_that_is_not_a_kubernetes_node_is_left_alone() {
    let mut w = World::new();
    w.add_pod("node-a", "gone", false);
    w.cluster
        .calico_nodes
        .get_mut("node-a")
        .expect("node")
        .spec
        .orch_refs
        .clear();
    w.cluster.k8s_nodes.clear();
    let mut gc = Gc::new(Duration::ZERO);
    let (plan, released) = w.pass(&mut gc, Instant::now());
    assert_eq!(plan, GcPlan::default());
    assert!(released.addresses.is_empty());
}

#[test]
fn a_handle_is_released_whole_or_not_at_all() {
    let mut w = World::new();
    // One handle, two addresses: one the pod reports, one it does not.
    let ip = w.add_pod("node-a", "web", true);
    w.assign(
        "node-a",
        "k8s-pod-network.web",
        &[("namespace", "shop"), ("pod", "web"), ("node", "node-a")],
    );
    assert_eq!(w.allocations().len(), 2);
    let mut gc = Gc::new(Duration::ZERO);
    let (plan, released) = w.pass(&mut gc, Instant::now());
    assert!(plan.confirmed.is_empty(), "{plan:?}");
    assert!(released.addresses.is_empty());
    assert!(w.allocations().iter().any(|a| a.ip == ip));
}
