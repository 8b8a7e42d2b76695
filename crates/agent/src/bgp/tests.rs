//! The BGP manager in the agent loop, over the in-memory datastore, with recording dataplanes
//! and a recording supervisor: no root, no BIRD.

use std::time::{Duration, Instant};

use gingham_bgp::status::IpVersion;
use gingham_dataplane::Recording;
use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_health::{Report, StatusCode};
use gingham_model::Resource;

use super::RecordingSupervisor;
use crate::plumbing::RecordingPlumbing;
use crate::{Agent, Config, Event, Manager, Networking};

const NODE: &str = "node-a";

type TestAgent = Agent<Recording, RecordingPlumbing, RecordingSupervisor>;

fn agent(networking: Networking) -> TestAgent {
    let config = Config {
        refresh_interval: None,
        networking,
        ..Config::new(NODE)
    };
    Agent::with_supervisor(
        &config,
        Recording::default(),
        RecordingPlumbing::default(),
        Box::new(crate::routes::RecordingRoutes::default()),
        RecordingSupervisor::default(),
    )
}

fn one(text: &str) -> Resource {
    gingham_model::load::load_resources("test.yaml", text)
        .expect("valid test input")
        .remove(0)
}

fn node(name: &str, ip: &str, labels: &str) -> Resource {
    one(&format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  bgp: {{ipv4Address: {ip}/24}}\n"
    ))
}

fn put(store: &dyn Datastore, r: &Resource) {
    store.put(&r.key(), &r.to_stored()).expect("written");
}

/// A two-node cluster with an unencapsulated pool.
fn cluster() -> MemStore {
    let store = MemStore::new();
    put(&store, &node(NODE, "10.77.0.1", ""));
    put(&store, &node("node-b", "10.77.0.2", ""));
    put(
        &store,
        &one(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.244.0.0/16, ipipMode: Never, vxlanMode: Never}\n",
        ),
    );
    store
}

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

fn sup(agent: &TestAgent) -> &RecordingSupervisor {
    agent.bgp.supervisor()
}

/// The installed bird.cfg.
fn installed_cfg(agent: &TestAgent) -> String {
    agent
        .bgp
        .installed()
        .and_then(|f| f.iter().find(|(n, _)| *n == "bird.cfg"))
        .map(|(_, t)| t.clone())
        .expect("a configuration is installed")
}

fn installed_aggr(agent: &TestAgent) -> String {
    agent
        .bgp
        .installed()
        .and_then(|f| f.iter().find(|(n, _)| *n == "bird_aggr.cfg"))
        .map(|(_, t)| t.clone())
        .expect("a configuration is installed")
}

fn claim(store: &dyn Datastore, node: &str, cidr: &str, handle: &str) {
    gingham_ipam::Ipam::new(store)
        .auto_assign(&gingham_ipam::AssignRequest {
            handle_id: handle.into(),
            node: node.into(),
            num_v4: 1,
            pools_v4: vec![gingham_ipam::PoolSpec::new(
                "pods",
                cidr.parse().expect("cidr"),
            )],
            ..Default::default()
        })
        .expect("assigned");
}

#[test]
fn renders_checks_installs_and_starts_both_birds() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    let s = sup(&agent);
    assert_eq!(s.staged.len(), 1);
    assert_eq!(s.checks, [IpVersion::V4, IpVersion::V6]);
    assert_eq!(s.starts, [IpVersion::V4, IpVersion::V6]);
    assert!(
        s.reloads.is_empty(),
        "started on the new file: nothing to reload"
    );
    assert_eq!(s.installed, s.staged.last().cloned());
    let cfg = installed_cfg(&agent);
    assert!(
        cfg.contains("protocol bgp Mesh_10_77_0_2 from bgp_template"),
        "{cfg}"
    );
    assert!(cfg.contains("router id 10.77.0.1;"), "{cfg}");
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
    // The daemons are looked at on ticks.
    let deadline = agent.deadline().expect("a tick is due");
    assert!(deadline <= Instant::now() + super::CHECK_INTERVAL);
}

#[test]
fn a_relevant_change_renders_and_reloads_an_irrelevant_one_does_not() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    let renders = agent.bgp.renders();

    // Policy is not BIRD's business.
    put(
        &store,
        &one(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {selector: all()}\n",
        ),
    );
    catch_up(&mut agent, &store);
    assert_eq!(agent.bgp.renders(), renders, "a policy does not render");
    // Another node's block affinity neither.
    claim(&store, "node-b", "10.244.1.0/26", "hb");
    catch_up(&mut agent, &store);
    assert_eq!(
        agent.bgp.renders(),
        renders,
        "node-b's affinity does not render"
    );

    // A new node: a new mesh peer, loaded into the running daemons.
    put(&store, &node("node-c", "10.77.0.3", ""));
    catch_up(&mut agent, &store);
    assert_eq!(agent.bgp.renders(), renders + 1);
    assert!(installed_cfg(&agent).contains("protocol bgp Mesh_10_77_0_3 from bgp_template"));
    assert_eq!(sup(&agent).staged.len(), 2);
    // Reloads happen when the daemons are looked at (the next tick).
    agent
        .handle(Event::Tick(Instant::now()), &store)
        .expect("ticks");
    assert_eq!(sup(&agent).reloads, [IpVersion::V4, IpVersion::V6]);

    // A change of a rendered kind that changes no text: rendered, not staged or reloaded.
    put(&store, &node("node-c", "10.77.0.3", "rack: r1"));
    catch_up(&mut agent, &store);
    agent
        .handle(Event::Tick(Instant::now()), &store)
        .expect("ticks");
    assert_eq!(agent.bgp.renders(), renders + 2);
    assert_eq!(sup(&agent).staged.len(), 2);
    assert_eq!(sup(&agent).reloads.len(), 2);

    // This node's block: its blackhole and export in bird_aggr.cfg.
    claim(&store, NODE, "10.244.2.0/26", "ha");
    catch_up(&mut agent, &store);
    assert!(
        installed_aggr(&agent).contains("route 10.244.2.0/26 blackhole;"),
        "{}",
        installed_aggr(&agent)
    );

    // A node deleted: its peer goes.
    store
        .delete(&node("node-b", "10.77.0.2", "").key(), None)
        .expect("deleted");
    catch_up(&mut agent, &store);
    assert!(!installed_cfg(&agent).contains("Mesh_10_77_0_2"));
}

/// Every kind the configuration reads renders it again, and what it changes is loaded.
#[test]
fn each_kind_the_configuration_reads_renders_it_again() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    let steps = [
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 65001}\n",
            "bird.cfg",
            "local as 65001;",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\nspec: {exportV4: [{action: Reject, matchOperator: In, cidr: 10.9.0.0/16}]}\n",
            "",
            "",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.77.0.254, asNumber: 65000, filters: [f]}\n",
            "bird.cfg",
            "protocol bgp Global_10_77_0_254 from bgp_template",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\nspec: {exportV4: [{action: Reject, matchOperator: In, cidr: 10.8.0.0/16}]}\n",
            "bird.cfg",
            "10.8.0.0/16",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: more}\nspec: {cidr: 10.250.0.0/16, ipipMode: Never, vxlanMode: Never}\n",
            "bird_ipam.cfg",
            "10.250.0.0/16",
        ),
    ];
    for (yaml, file, text) in steps {
        let renders = agent.bgp.renders();
        put(&store, &one(yaml));
        catch_up(&mut agent, &store);
        assert_eq!(agent.bgp.renders(), renders + 1, "{yaml}");
        if file.is_empty() {
            continue;
        }
        let installed = agent
            .bgp
            .installed()
            .and_then(|f| f.iter().find(|(n, _)| *n == file))
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        assert!(
            installed.contains(text),
            "{text:?} not in {file}:\n{installed}"
        );
    }
}

#[test]
fn a_rejected_configuration_is_not_loaded_and_said_on_readiness() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    let before = installed_cfg(&agent);
    let message = "bird: /run/calico/bird/candidate/bird.cfg:40:3 syntax error";
    agent.bgp.supervisor_mut().reject = Some(message.into());

    put(&store, &node("node-c", "10.77.0.3", ""));
    catch_up(&mut agent, &store);
    agent
        .handle(Event::Tick(Instant::now()), &store)
        .expect("ticks");
    assert_eq!(sup(&agent).staged.len(), 2, "the candidate was staged");
    assert_eq!(installed_cfg(&agent), before, "the previous one stays");
    assert_eq!(
        sup(&agent).installed.as_ref().map(|f| &f[0].1),
        Some(&before)
    );
    assert!(sup(&agent).reloads.is_empty(), "nothing to reload");
    let (code, body) = agent.health.readiness();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        format!("not ready: BIRD rejected the configuration: {message}\n")
    );
    // The same text is not checked again on every tick.
    let checks = sup(&agent).checks.len();
    agent
        .handle(Event::Tick(Instant::now() + Duration::from_secs(5)), &store)
        .expect("ticks");
    assert_eq!(sup(&agent).checks.len(), checks);

    // A later configuration BIRD accepts: loaded, the problem gone.
    agent.bgp.supervisor_mut().reject = None;
    put(&store, &node("node-d", "10.77.0.4", ""));
    catch_up(&mut agent, &store);
    assert!(installed_cfg(&agent).contains("Mesh_10_77_0_4"));
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
}

/// Regression: a running BIRD that refused `configure` (the file passed `bird -p`) was
/// reported for one tick only: the next look at the running daemon cleared the problem.
#[test]
fn a_configuration_refused_on_reload_stays_on_readiness() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    agent.bgp.supervisor_mut().reject_reload = Some("bird.cfg:3:1 syntax error".into());
    put(&store, &node("node-c", "10.77.0.3", ""));
    catch_up(&mut agent, &store);
    let t0 = Instant::now();
    for secs in [1, 2, 3] {
        agent
            .handle(Event::Tick(t0 + Duration::from_secs(secs)), &store)
            .expect("ticks");
        let (code, body) = agent.health.readiness();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "after {secs} s");
        assert!(
            body.contains(
                "reloading bird: BIRD rejected the configuration: bird.cfg:3:1 syntax error"
            ),
            "{body}"
        );
    }
    // A later configuration loaded: ready.
    agent.bgp.supervisor_mut().reject_reload = None;
    put(&store, &node("node-d", "10.77.0.4", ""));
    catch_up(&mut agent, &store);
    agent
        .handle(Event::Tick(t0 + Duration::from_secs(4)), &store)
        .expect("ticks");
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
}

#[test]
fn a_dead_daemon_is_restarted_with_a_growing_backoff() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    let t0 = Instant::now();
    let tick = |agent: &mut TestAgent, ms: u64| {
        agent
            .handle(Event::Tick(t0 + Duration::from_millis(ms)), &store)
            .expect("ticks")
    };
    let starts = |agent: &TestAgent| sup(agent).starts.len();
    assert_eq!(starts(&agent), 2);

    agent.bgp.supervisor_mut().crash(IpVersion::V4);
    tick(&mut agent, 100);
    assert_eq!(starts(&agent), 2, "not at once: after the back-off");
    let (code, body) = agent.health.readiness();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("bird exited (signal: 9 (SIGKILL)); restarting it"),
        "{body}"
    );
    tick(&mut agent, 1200);
    assert_eq!(sup(&agent).starts[2], IpVersion::V4, "restarted after 1 s");
    assert_eq!(agent.health.readiness().0, StatusCode::OK);

    // Dying again soon: the wait doubles.
    agent.bgp.supervisor_mut().crash(IpVersion::V4);
    tick(&mut agent, 1300);
    tick(&mut agent, 2500);
    assert_eq!(starts(&agent), 3, "2 s have not passed");
    tick(&mut agent, 3400);
    assert_eq!(starts(&agent), 4);
    // bird6 was left alone.
    assert_eq!(
        sup(&agent)
            .starts
            .iter()
            .filter(|v| **v == IpVersion::V6)
            .count(),
        1
    );
}

#[test]
fn bird_missing_is_a_readiness_problem_not_a_crash() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.bgp.supervisor_mut().missing = true;
    agent.start(&store).expect("starts");
    let (code, body) = agent.health.readiness();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("bird is not installed: no bird on PATH (install the Debian package bird"),
        "{body}"
    );
    assert!(agent.bgp.installed().is_none());
    // Installed later: found on a retry.
    agent.bgp.supervisor_mut().missing = false;
    agent
        .handle(
            Event::Tick(Instant::now() + super::MAX_BACKOFF + Duration::from_secs(1)),
            &store,
        )
        .expect("ticks");
    assert!(agent.bgp.installed().is_some());
    assert_eq!(sup(&agent).starts, [IpVersion::V4, IpVersion::V6]);
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
}

#[test]
fn a_missing_node_is_said_and_nothing_runs() {
    let store = MemStore::new();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    let body = agent.health.readiness().1;
    assert!(
        body.contains("cannot render the BIRD configuration: node \"node-a\" not found"),
        "{body}"
    );
    assert!(sup(&agent).starts.is_empty());
    put(&store, &node(NODE, "10.77.0.1", ""));
    catch_up(&mut agent, &store);
    assert_eq!(sup(&agent).starts.len(), 2);
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
}

#[test]
fn other_backends_run_no_bird() {
    for networking in [Networking::Vxlan, Networking::None] {
        let store = cluster();
        let mut agent = agent(networking);
        agent.start(&store).expect("starts");
        assert!(sup(&agent).staged.is_empty());
        assert!(sup(&agent).starts.is_empty());
        assert!(agent.bgp.deadline().is_none());
    }
}

/// The node's own Node deleted: BIRD stops (so that no peer, a top-of-rack router included,
/// keeps routes from a node that left); the Node back: BIRD runs again.
#[test]
fn the_own_node_deleted_stops_bird_until_it_is_back() {
    let store = cluster();
    let mut agent = agent(Networking::Bird);
    agent.start(&store).expect("starts");
    let me = node(NODE, "10.77.0.1", "");
    store.delete(&me.key(), None).expect("deleted");
    catch_up(&mut agent, &store);
    assert_eq!(sup(&agent).stops, [IpVersion::V4, IpVersion::V6]);
    assert!(agent.bgp.installed().is_none());
    let (code, body) = agent.health.readiness();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("BIRD stopped: node \"node-a\" not found among the Node resources"),
        "{body}"
    );
    // Not started again on ticks while the node is gone.
    agent
        .handle(Event::Tick(Instant::now() + Duration::from_secs(5)), &store)
        .expect("ticks");
    assert_eq!(sup(&agent).starts.len(), 2);

    put(&store, &me);
    catch_up(&mut agent, &store);
    assert_eq!(
        sup(&agent).starts,
        [IpVersion::V4, IpVersion::V6, IpVersion::V4, IpVersion::V6]
    );
    assert_eq!(agent.health.readiness().0, StatusCode::OK);
}

/// A pod's workload endpoint on `node` (Kubernetes names), labels `app: APP`.
fn pod_endpoint(node: &str, pod: &str, app: &str, iface: &str, ip: &str) -> Resource {
    // Calico's name: dashes in each part doubled.
    let (node_part, pod_part) = (node.replace('-', "--"), pod.replace('-', "--"));
    one(&format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node_part}-k8s-{pod_part}-eth0
  namespace: default
  labels: {{projectcalico.org/namespace: default, app: {app}}}
spec:
  node: {node}
  orchestrator: k8s
  pod: {pod}
  endpoint: eth0
  interfaceName: {iface}
  mac: \"ee:ee:ee:ee:ee:05\"
  ipNetworks: [{ip}/32]
  profiles: [kns.default]
"
    ))
}

/// Felix's endpoint status files, written by the agent: one per local workload endpoint,
/// named and written as felix does, the selected one naming its BGPPeer; the BGP manager reads
/// them and peers with the workload (`Local_Workload_…`); a workload that goes takes its file
/// and its session with it.
#[test]
fn local_workload_peers_come_from_the_endpoint_status_files_the_agent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = cluster();
    put(
        &store,
        &one(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: pod-routers}\nspec: {localWorkloadSelector: \"app == 'router'\", asNumber: 65100, localASNumber: 65101}\n",
        ),
    );
    let router = pod_endpoint(NODE, "router-1", "router", "cali1234567890a", "10.244.0.5");
    put(&store, &router);
    put(
        &store,
        &pod_endpoint(NODE, "web-1", "web", "cali1234567890b", "10.244.0.6"),
    );
    put(
        &store,
        &pod_endpoint(
            "node-b",
            "router-2",
            "router",
            "cali1234567890c",
            "10.244.1.5",
        ),
    );
    let mut agent = agent(Networking::Bird);
    agent.set_endpoint_status_prefix(dir.path().to_path_buf());
    agent.start(&store).expect("starts");
    let status = dir.path().join("endpoint-status");
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&status)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        files(),
        ["k8s default%2Frouter-1 eth0", "k8s default%2Fweb-1 eth0"],
        "local endpoints only, named as felix names them"
    );
    assert_eq!(
        std::fs::read_to_string(status.join("k8s default%2Frouter-1 eth0")).unwrap(),
        r#"{"ifaceName":"cali1234567890a","mac":"ee:ee:ee:ee:ee:05","ipv4Nets":["10.244.0.5/32"],"bgpPeerName":"pod-routers"}"#
    );
    assert_eq!(
        std::fs::read_to_string(status.join("k8s default%2Fweb-1 eth0")).unwrap(),
        r#"{"ifaceName":"cali1234567890b","mac":"ee:ee:ee:ee:ee:05","ipv4Nets":["10.244.0.6/32"]}"#
    );
    let cfg = installed_cfg(&agent);
    assert!(
        cfg.contains("protocol bgp Local_Workload_10_244_0_5 from bgp_template"),
        "{cfg}"
    );
    assert!(
        !cfg.contains("10_244_0_6") && !cfg.contains("10_244_1_5"),
        "{cfg}"
    );

    store.delete(&router.key(), None).expect("deleted");
    catch_up(&mut agent, &store);
    assert_eq!(files(), ["k8s default%2Fweb-1 eth0"]);
    assert!(
        !installed_cfg(&agent).contains("Local_Workload"),
        "the session went with the workload"
    );
}
