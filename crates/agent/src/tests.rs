//! The agent loop over the in-memory datastore with recording dataplanes: no root, no kernel.

use std::sync::Arc;
use std::time::Duration;

use gingham_dataplane::Recording;
use gingham_datastore::mem::MemStore;
use gingham_datastore::{Datastore, EventKind};
use gingham_health::{Report, StatusCode};
use gingham_model::Resource;
use gingham_net::host::HostWorkload;

use crate::plumbing::RecordingPlumbing;
use crate::routes::RecordingRoutes;
use crate::{Agent, Config, Event, Networking};

const NODE: &str = "node-a";

type TestAgent = Agent<Recording, RecordingPlumbing>;

fn agent() -> TestAgent {
    let config = Config {
        node: NODE.into(),
        refresh_interval: None,
        networking: Networking::None,
        ..Config::new(NODE)
    };
    Agent::new(
        &config,
        Recording::default(),
        RecordingPlumbing::default(),
        Box::new(RecordingRoutes::default()),
    )
}

fn load(text: &str) -> Vec<Resource> {
    gingham_model::load::load_resources("test.yaml", text).expect("valid test input")
}

fn one(text: &str) -> Resource {
    load(text).remove(0)
}

fn felix(yaml_spec: &str) -> Resource {
    one(&format!(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n{yaml_spec}"
    ))
}

fn endpoint(node: &str, iface: &str, ip: &str) -> Resource {
    // Calico's name: dashes in the node's name doubled.
    let escaped = node.replace('-', "--");
    one(&format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {escaped}-cni-{iface}-eth0
  namespace: default
  labels: {{projectcalico.org/namespace: default, app: web}}
spec:
  node: {node}
  orchestrator: cni
  containerID: {iface}
  endpoint: eth0
  interfaceName: {iface}
  mac: \"ee:ee:ee:ee:ee:01\"
  ipNetworks: [{ip}/32]
  profiles: [kns.default]
"
    ))
}

fn profile() -> Resource {
    one("apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: kns.default
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
")
}

fn policy(port: u16) -> Resource {
    one(&format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: web-{port}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [{port}]
"
    ))
}

fn put(store: &dyn Datastore, r: &Resource) -> i64 {
    store.put(&r.key(), &r.to_stored()).expect("written")
}

/// Everything the recording nft backend was sent, in order.
fn scripts(agent: &TestAgent) -> &[String] {
    &agent.policy.programmer().backend().scripts
}

/// Steps until the agent has caught up with the store (each step waits for a batch).
fn catch_up(agent: &mut TestAgent, store: &dyn Datastore) {
    let target = store.revision().expect("revision");
    for _ in 0..50 {
        if agent.revision() >= target {
            return;
        }
        agent
            .step(store, Duration::from_millis(100))
            .expect("steps");
    }
    panic!("agent at revision {}, store at {target}", agent.revision());
}

/// Whether a script installs the rule of `policy(port)`.
fn allows(script: &str, port: u16) -> bool {
    script.lines().any(|l| {
        l.contains(&format!("th dport {{ {port} }}"))
            && l.contains(&format!("GlobalNetworkPolicy web-{port} rule 0"))
    })
}

fn metric(agent: &TestAgent, name: &str) -> String {
    let text = agent.health.exposition().expect("encodes");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// Regression: a FelixConfiguration unreadable at resync and fixed by a later write left
/// /readiness at 503 until the next resync (the watch decoded it on a path of its own).
#[test]
fn an_unreadable_resource_fixed_by_a_watched_write_is_readable_again() {
    let store = MemStore::new();
    let mut agent = agent();
    agent.health.state().ready = true;
    let good = felix("  routeRefreshInterval: 30s\n");
    let key = good.key();
    let update = |kind, value: &[u8]| Event::Update {
        kind,
        key: key.clone(),
        value: value.to_vec(),
        revision: 0,
    };
    // As the resync reads it.
    assert!(agent.read(&key, b"{not json").is_none());
    assert_eq!(agent.health.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(agent.health.readiness().1.contains(&key));
    // The fix arrives through the watch.
    agent
        .handle(update(EventKind::Put, &good.to_stored()), &store)
        .expect("handled");
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
    assert_eq!(agent.plumbing.route_refresh(), Duration::from_secs(30));
    // Broken again through the watch: reported again, and its settings are gone.
    agent
        .handle(update(EventKind::Put, b"{not json"), &store)
        .expect("handled");
    assert!(agent.health.readiness().1.contains(&key));
    assert_eq!(agent.plumbing.route_refresh(), Duration::from_secs(90));
    // Deleted: nothing left to report.
    agent
        .handle(update(EventKind::Delete, b""), &store)
        .expect("handled");
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
}

#[test]
fn a_policy_write_is_programmed_and_its_revision_reported() {
    let store = MemStore::new();
    put(&store, &profile());
    put(&store, &endpoint(NODE, "cali0000000001", "10.244.0.5"));
    let mut agent = agent();
    let start = agent.start(&store).expect("starts");
    assert_eq!(start, store.revision().expect("revision"));
    assert_eq!(scripts(&agent).len(), 1, "the first table, once");
    assert!(
        scripts(&agent)[0]
            .contains("add element inet gingham wl-ingress { \"cali0000000001\" : accept"),
        "{}",
        scripts(&agent)[0]
    );
    assert!(!allows(&scripts(&agent)[0], 8080));
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
    assert_eq!(
        metric(&agent, "gingham_agent_datastore_revision"),
        start.to_string()
    );

    let written = put(&store, &policy(8080));
    catch_up(&mut agent, &store);
    assert_eq!(scripts(&agent).len(), 2, "one transaction for the write");
    let script = &scripts(&agent)[1];
    assert!(allows(script, 8080), "{script}");
    assert!(
        script.contains("add element inet gingham wl-ingress { \"cali0000000001\" : goto "),
        "{script}"
    );
    assert_eq!(
        metric(&agent, "gingham_agent_datastore_revision"),
        written.to_string()
    );
    // The record of what is installed is what a full calculation renders now.
    let fresh = {
        let mut a = self::agent();
        a.start(&store).expect("starts");
        a.policy.programmer().installed().cloned()
    };
    assert_eq!(agent.policy.programmer().installed().cloned(), fresh);

    // A write that changes nothing of this node's program sends nothing.
    put(&store, &endpoint("node-b", "cali0000000002", "10.244.1.5"));
    catch_up(&mut agent, &store);
    assert_eq!(scripts(&agent).len(), 2, "{:?}", scripts(&agent).last());
}

/// IPAM keys are watched too: a block claimed for this node gets its blackhole route without
/// waiting for an endpoint or the refresh timer; another node's block does not wake the
/// plumbing.
#[test]
fn a_block_claimed_for_the_node_is_blackholed_at_once() {
    let store = MemStore::new();
    let mut agent = agent();
    agent.start(&store).expect("starts");
    let ipam = gingham_ipam::Ipam::new(&store);
    let claim = |node: &str, cidr: &str, handle: &str| {
        let block: ipnet::IpNet = cidr.parse().expect("cidr");
        ipam.auto_assign(&gingham_ipam::AssignRequest {
            handle_id: handle.into(),
            node: node.into(),
            num_v4: 1,
            pools_v4: vec![gingham_ipam::PoolSpec::new("default-ipv4-ippool", block)],
            ..Default::default()
        })
        .expect("assigned");
        block
    };
    claim("node-b", "10.244.0.0/26", "h1");
    catch_up(&mut agent, &store);
    assert_eq!(agent.plumbing.plumbing().requests.len(), 1, "not ours");
    let ours = claim(NODE, "10.244.0.64/26", "h2");
    catch_up(&mut agent, &store);
    let requests = &agent.plumbing.plumbing().requests;
    assert_eq!(requests.len(), 2, "checked when our affinity appeared");
    assert_eq!(
        requests.last().expect("a request").blackholes,
        Some([ours].into_iter().collect())
    );
    assert!(
        agent.health.state().unreadable.is_empty(),
        "IPAM keys are not resources"
    );
}

#[test]
fn a_local_workload_endpoint_is_plumbed_and_a_remote_one_is_not() {
    let store = MemStore::new();
    let mut agent = agent();
    agent.start(&store).expect("starts");
    let first = agent.plumbing.plumbing().requests.clone();
    assert_eq!(first.len(), 1, "checked once at start");
    assert!(first[0].workloads.is_empty());
    assert_eq!(
        first[0].blackholes,
        Some(Default::default()),
        "no blocks yet"
    );

    // The CNI plugin's order: an address from IPAM (claiming a block for the node), then the
    // endpoint.
    let ipam = gingham_ipam::Ipam::new(&store);
    let block: ipnet::IpNet = "10.244.0.0/26".parse().expect("cidr");
    let assigned = ipam
        .auto_assign(&gingham_ipam::AssignRequest {
            handle_id: "k8s-pod-network.c1".into(),
            node: NODE.into(),
            num_v4: 1,
            pools_v4: vec![gingham_ipam::PoolSpec::new("default-ipv4-ippool", block)],
            ..Default::default()
        })
        .expect("assigned");
    let ip = assigned.v4[0].ip.to_string();
    let local = endpoint(NODE, "cali0000000001", &ip);
    put(&store, &local);
    put(&store, &endpoint("node-b", "cali0000000002", "10.244.1.5"));
    catch_up(&mut agent, &store);
    let want = HostWorkload {
        ifname: "cali0000000001".into(),
        addresses: vec![format!("{ip}/32").parse().expect("cidr")],
        mac: "ee:ee:ee:ee:ee:01".parse().ok(),
    };
    let requests = &agent.plumbing.plumbing().requests;
    assert_eq!(requests.last().expect("a request").workloads, vec![want]);
    assert_eq!(
        requests.last().expect("a request").blackholes,
        Some([block].into_iter().collect()),
        "the node's block goes nowhere but to its workloads"
    );
    let seen = requests.len();

    // A remote endpoint's change needs no check.
    put(&store, &endpoint("node-b", "cali0000000002", "10.244.1.6"));
    catch_up(&mut agent, &store);
    assert_eq!(agent.plumbing.plumbing().requests.len(), seen);

    // The local one deleted: checked again, without it.
    store.delete(&local.key(), None).expect("deleted");
    catch_up(&mut agent, &store);
    let requests = &agent.plumbing.plumbing().requests;
    assert_eq!(requests.len(), seen + 1);
    assert!(requests.last().expect("a request").workloads.is_empty());
}

#[test]
fn a_resync_after_a_compaction_reprograms() {
    let store = Arc::new(MemStore::new());
    put(store.as_ref(), &profile());
    put(
        store.as_ref(),
        &endpoint(NODE, "cali0000000001", "10.244.0.5"),
    );
    let mut agent = agent();
    agent.start(store.as_ref()).expect("starts");
    assert_eq!(metric(&agent, "gingham_agent_resyncs_total"), "1");

    // Written and compacted away before the agent watches: its history is gone.
    put(store.as_ref(), &policy(8080));
    put(store.as_ref(), &policy(9090));
    let now = store.revision().expect("revision");
    store.compact(now).expect("compacted");
    catch_up(&mut agent, store.as_ref());

    assert_eq!(metric(&agent, "gingham_agent_resyncs_total"), "2");
    let script = scripts(&agent).last().expect("programmed");
    assert!(allows(script, 8080), "{script}");
    assert!(allows(script, 9090), "{script}");
    assert_eq!(
        metric(&agent, "gingham_agent_datastore_revision"),
        now.to_string()
    );
    // The resync checked the plumbing again too.
    assert_eq!(agent.plumbing.plumbing().requests.len(), 2);
    // And the agent goes on watching from the listing.
    let written = put(store.as_ref(), &policy(7070));
    catch_up(&mut agent, store.as_ref());
    assert!(allows(scripts(&agent).last().expect("programmed"), 7070));
    assert_eq!(agent.revision(), written);
}

/// A kernel that refuses the next `refusals` transactions.
#[derive(Default)]
struct Refusing {
    inner: Recording,
    refusals: usize,
}

impl gingham_dataplane::Backend for Refusing {
    fn run(&mut self, script: &str) -> Result<(), gingham_dataplane::Error> {
        if self.refusals > 0 {
            self.refusals -= 1;
            return Err(gingham_dataplane::Error::Refused("test refusal".into()));
        }
        self.inner.run(script)
    }

    fn read(&mut self) -> Result<Option<String>, gingham_dataplane::Error> {
        self.inner.read()
    }
}

#[test]
fn a_refused_transaction_is_retried_through_a_resync() {
    let store = MemStore::new();
    put(&store, &profile());
    put(&store, &endpoint(NODE, "cali0000000001", "10.244.0.5"));
    let config = Config {
        node: NODE.into(),
        refresh_interval: None,
        networking: Networking::None,
        ..Config::new(NODE)
    };
    let mut agent = Agent::new(
        &config,
        Refusing::default(),
        RecordingPlumbing::default(),
        Box::new(RecordingRoutes::default()),
    );
    agent.start(&store).expect("starts");
    agent.policy.programmer_mut().backend_mut().refusals = 1;
    let written = put(&store, &policy(8080));
    agent
        .step(&store, Duration::from_millis(100))
        .expect("steps");
    let text = agent.health.exposition().expect("encodes");
    for line in [
        "gingham_agent_errors_total 1",
        "gingham_agent_resyncs_total 2",
        &format!("gingham_agent_datastore_revision {written}"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
    let backend = &agent.policy.programmer().backend().inner;
    assert!(allows(backend.scripts.last().expect("programmed"), 8080));
    assert_eq!(
        backend.reads, 2,
        "the record dropped: the kernel read again"
    );
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
}

#[test]
fn ticks_run_the_periodic_checks_when_they_are_due() {
    let store = MemStore::new();
    put(&store, &felix("  routeRefreshInterval: 30s\n"));
    let config = Config {
        node: NODE.into(),
        refresh_interval: Some(Duration::from_secs(60)),
        networking: Networking::None,
        ..Config::new(NODE)
    };
    let mut agent = Agent::new(
        &config,
        Recording::default(),
        RecordingPlumbing::default(),
        Box::new(RecordingRoutes::default()),
    );
    agent.start(&store).expect("starts");
    let start = std::time::Instant::now();
    let counts = |a: &TestAgent| {
        (
            a.policy.programmer().backend().reads,
            a.plumbing.plumbing().requests.len(),
        )
    };
    assert_eq!(counts(&agent), (1, 1));
    let at = |secs| Event::Tick(start + Duration::from_secs(secs));
    agent.handle(at(0), &store).expect("ticks");
    assert_eq!(counts(&agent), (1, 1), "nothing due yet");
    agent.handle(at(31), &store).expect("ticks");
    assert_eq!(counts(&agent), (1, 2), "the route refresh (30 s) is due");
    agent.handle(at(32), &store).expect("ticks");
    assert_eq!(counts(&agent), (1, 2));
    agent.handle(at(60), &store).expect("ticks");
    assert_eq!(
        counts(&agent),
        (2, 2),
        "the consistency check (60 s) reads the kernel"
    );
    assert_eq!(
        agent.deadline(),
        Some(start + Duration::from_secs(61)),
        "next: the route refresh, 30 s after the last"
    );
}

fn pool(name: &str, cidr: &str, extra: &str) -> Resource {
    one(&format!(
        "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: {name}
spec:
  cidr: {cidr}
{extra}"
    ))
}

/// natOutgoing: IPPool writes reach the table as the all-pools and masq-pools sets (disabled
/// pools stay in both), each as one small transaction; the table with no natOutgoing pool has
/// no nat chain.
#[test]
fn ip_pool_writes_program_nat_outgoing() {
    let store = MemStore::new();
    put(
        &store,
        &pool("default", "10.244.0.0/16", "  natOutgoing: true\n"),
    );
    let mut agent = agent();
    agent.start(&store).expect("starts");
    let first = &scripts(&agent)[0];
    assert!(
        first.contains("ip saddr @masq-pools4 ip daddr != @all-pools4 counter masquerade"),
        "{first}"
    );
    assert!(
        first.contains("add element inet gingham masq-pools4 { 10.244.0.0/16 }"),
        "{first}"
    );

    // A disabled pool without natOutgoing joins the all-pools set only.
    put(&store, &pool("old", "10.9.0.0/24", "  disabled: true\n"));
    catch_up(&mut agent, &store);
    assert_eq!(scripts(&agent).len(), 2);
    let script = &scripts(&agent)[1];
    assert!(
        script.contains("all-pools4") && script.contains("10.9.0.0/24"),
        "{script}"
    );
    assert!(!script.contains("masq-pools4"), "{script}");
    assert!(!script.contains("chain"), "only a set changes: {script}");

    // A disabled natOutgoing pool still masquerades (its addresses may be in use).
    put(
        &store,
        &pool(
            "old",
            "10.9.0.0/24",
            "  disabled: true\n  natOutgoing: true\n",
        ),
    );
    catch_up(&mut agent, &store);
    let script = scripts(&agent).last().unwrap();
    assert!(
        script.contains("masq-pools4") && script.contains("10.9.0.0/24"),
        "{script}"
    );

    // natOutgoing off everywhere: the nat chain goes.
    for name in ["default", "old"] {
        store
            .delete(&pool(name, "10.0.0.0/8", "").key(), None)
            .expect("deleted");
    }
    catch_up(&mut agent, &store);
    let table = agent.policy.programmer().installed().unwrap();
    assert!(!table.chains.contains_key("nat-outgoing"), "{table:?}");
    assert!(!table.sets.contains_key("masq-pools4"));
}

/// The hit counters' record of where each rule came from is copied only when chains change:
/// an update that only moves set members (most updates) keeps the copy the counters hold.
/// Before, every programming copied the record of every chain, a cost growing with the table.
#[test]
fn a_set_member_update_keeps_the_counters_record_of_rule_origins() {
    let store = MemStore::new();
    put(&store, &profile());
    put(&store, &endpoint(NODE, "cali0000000001", "10.244.0.5"));
    // Ingress from `app == 'web'`: every web endpoint is a member of the rule's set.
    put(
        &store,
        &one("apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: from-web
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
"),
    );
    let mut agent = agent();
    agent.start(&store).expect("starts");
    let before = agent.health.metrics.rules.origins();
    assert!(!before.is_empty(), "the policy's rules have origins");

    // Another node's web endpoint: one set element more, no chain changes.
    put(&store, &endpoint("node-b", "cali0000000002", "10.244.1.5"));
    catch_up(&mut agent, &store);
    let script = scripts(&agent).last().expect("a transaction");
    assert!(script.contains("10.244.1.5"), "{script}");
    assert!(!script.contains("add rule"), "{script}");
    assert!(
        Arc::ptr_eq(&before, &agent.health.metrics.rules.origins()),
        "the record was copied for a set member"
    );

    // A policy change makes new chains: the counters get their new record.
    put(&store, &policy(8080));
    catch_up(&mut agent, &store);
    let after = agent.health.metrics.rules.origins();
    assert!(!Arc::ptr_eq(&before, &after));
    assert_eq!(*after, *agent.policy.renderer().origins());
}

/// The flow logger's view (every local program, every known address) is made again only when
/// a program or an endpoint changed: a network set's new member changes neither. Before, every
/// programming copied every local program into a new view.
#[test]
fn a_network_set_member_keeps_the_flow_loggers_view() {
    let store = MemStore::new();
    put(&store, &profile());
    put(&store, &endpoint(NODE, "cali0000000001", "10.244.0.5"));
    put(
        &store,
        &one("apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: from-office
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: place == 'office'}
"),
    );
    let netset = |net: &str| {
        one(&format!(
            "apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: office
  labels: {{place: office}}
spec:
  nets: [{net}]
"
        ))
    };
    put(&store, &netset("192.0.2.0/24"));
    let mut agent = agent();
    let view: crate::flows::SharedView = Arc::default();
    agent.policy.set_flow_view(view.clone());
    agent.start(&store).expect("starts");
    let current = || view.lock().expect("not poisoned").clone();
    let before = current();
    assert_eq!(before.programs.endpoints.len(), 1);

    put(&store, &netset("198.51.100.0/24"));
    catch_up(&mut agent, &store);
    let script = scripts(&agent).last().expect("a transaction");
    assert!(script.contains("198.51.100.0/24"), "{script}");
    assert!(Arc::ptr_eq(&before, &current()), "the view was made again");

    // The set's first IPv6 member: the IPv6 rule appears, in a stage chain with a new name,
    // and the view learns the family (else the writer cannot name that chain's drops).
    let v6 = |view: &crate::flows::FlowView| {
        view.programs
            .sets
            .values()
            .any(|s| s.nets.iter().any(|n| n.addr().is_ipv6()))
    };
    assert!(!v6(&current()));
    put(&store, &netset("2001:db8::/64"));
    catch_up(&mut agent, &store);
    let script = scripts(&agent).last().expect("a transaction");
    assert!(script.contains("2001:db8::/64"), "{script}");
    assert!(
        v6(&current()),
        "the view was not made again when a family gained its first member"
    );

    // A new endpoint: the view names it.
    put(&store, &endpoint(NODE, "cali0000000003", "10.244.0.7"));
    catch_up(&mut agent, &store);
    assert_eq!(current().programs.endpoints.len(), 2);
}

/// With the dispatch maps keyed by interface index, a workload's elements are keyed by its
/// interface's index. When the interface is made again under its name (a new index) and the
/// datastore says nothing, the tick after the kernel's report moves the elements to the new
/// index; an interface that goes takes its elements with it; a report that changes no
/// interface programs nothing.
#[test]
fn a_recreated_interface_is_keyed_by_its_new_index_without_a_datastore_change() {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use crate::links::StaticLinks;
    use crate::policy::LINK_POLL;

    let store = MemStore::new();
    put(&store, &profile());
    put(&store, &endpoint(NODE, "cali0000000001", "10.244.0.5"));
    let mut agent = agent();
    let links = StaticLinks::default();
    let with = |index: Option<u32>| -> BTreeMap<String, u32> {
        let mut l = BTreeMap::from([("lo".to_owned(), 1)]);
        if let Some(i) = index {
            l.insert("cali0000000001".into(), i);
        }
        l
    };
    links.set(with(Some(7)));
    agent.policy.set_links(Box::new(links.clone()));
    agent.start(&store).expect("starts");
    let first = scripts(&agent).last().expect("programmed").clone();
    assert!(
        first.contains("add map inet gingham wl-ingress { type iface_index : verdict; }"),
        "{first}"
    );
    assert!(
        first.contains("add element inet gingham wl-ingress { 7 : accept }")
            && first.contains("iifname \"cali*\" jump wl-from")
            && first.contains("add rule inet gingham wl-from iif vmap @wl-egress")
            && first.contains(
                "add element inet gingham wl-ingress-name { \"cali0000000001\" : accept, * : jump wl-to-other }"
            ),
        "{first}"
    );
    let tick = |agent: &mut TestAgent| {
        agent
            .handle(Event::Tick(Instant::now() + LINK_POLL), &store)
            .expect("ticks");
    };
    // Reported, but the same interfaces: nothing to do.
    links.set(with(Some(7)));
    let sent = scripts(&agent).len();
    tick(&mut agent);
    assert_eq!(scripts(&agent).len(), sent);

    links.set(with(Some(9)));
    tick(&mut agent);
    assert_eq!(scripts(&agent).len(), sent + 1);
    let moved = scripts(&agent).last().expect("programmed");
    for want in [
        "delete element inet gingham wl-ingress { 7 : accept }",
        "add element inet gingham wl-ingress { 9 : accept }",
        "delete element inet gingham wl-egress { 7 : return }",
        "add element inet gingham wl-egress { 9 : return }",
    ] {
        assert!(moved.contains(want), "{want}\n{moved}");
    }
    assert!(
        !moved.contains("add chain") && !moved.contains("wl-ingress-name"),
        "the element keyed by name stays: {moved}"
    );

    // A report whose listing fails is listed again at the next tick.
    links.set(with(None));
    links.fail(1);
    tick(&mut agent);
    assert_eq!(
        scripts(&agent).len(),
        sent + 1,
        "nothing listed, nothing sent"
    );
    tick(&mut agent);
    let gone = scripts(&agent).last().expect("programmed");
    assert!(
        gone.contains("delete element inet gingham wl-ingress { 9 : accept }")
            && !gone.contains("add element"),
        "{gone}"
    );
}
