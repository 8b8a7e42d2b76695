//! Property: feeding resources one update at a time to the incremental calculator, and applying
//! the changes it emits to a copy of the state, always gives the full calculation of the current
//! inputs. Updates: creations in random order, then random replacements (relabelled endpoints,
//! changed policies, profiles, tiers, network sets) and deletions.

mod common;

use std::collections::BTreeMap;

use common::{Rng, property_seeds, resolve_step, update_steps};
use gingham_calc::Snapshot;
use gingham_calc::incremental::{Calculator, Update, apply_changes};
use gingham_calc::program::NodeProgram;
use gingham_model::Resource;

#[test]
fn changes_rebuild_the_full_state() {
    let seeds = property_seeds(150);
    let node = "node-a";
    let mut updates_checked = 0usize;
    let mut changes_seen = 0usize;
    for seed in 0..seeds {
        let mut rng = Rng(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) | 1);
        let mut calc = Calculator::new(node);
        let mut mirror = NodeProgram::default();
        let mut current: BTreeMap<String, Resource> = BTreeMap::new();
        for (i, step) in update_steps(seed, &mut rng).into_iter().enumerate() {
            let Some(step) = resolve_step(step, &mut current, &mut rng) else {
                continue;
            };
            let what = format!("{step:?}");
            // Now and then a resync: every input at once.
            let changes = if rng.chance(8) {
                calc.load_all(current.values().cloned().collect())
            } else {
                calc.apply(step)
            };
            changes_seen += changes.len();
            apply_changes(&mut mirror, &changes);
            let all: Vec<Resource> = current.values().cloned().collect();
            let full = Snapshot::build(&all).node_program(Some(node));
            updates_checked += 1;
            if mirror != full || calc.state() != full {
                let diff_eps: Vec<&String> = full
                    .endpoints
                    .keys()
                    .chain(mirror.endpoints.keys())
                    .filter(|k| full.endpoints.get(*k) != mirror.endpoints.get(*k))
                    .collect();
                let diff_sets: Vec<&String> = full
                    .sets
                    .keys()
                    .chain(mirror.sets.keys())
                    .filter(|k| full.sets.get(*k) != mirror.sets.get(*k))
                    .collect();
                panic!(
                    "seed {seed}, update {i}: {what}\nendpoints differing: {diff_eps:?}\nsets differing: {diff_sets:?}\nchanges: {}",
                    serde_json::to_string(&changes).unwrap()
                );
            }
        }
    }
    assert!(updates_checked > seeds as usize * 20, "{updates_checked}");
    assert!(changes_seen > seeds as usize * 10, "{changes_seen} changes");
    eprintln!(
        "{updates_checked} updates, {changes_seen} changes, state always equal to the full calculation"
    );
}

/// The calculator keeps no copy of an input policy: an update or a delete finds the old version
/// among the compiled ones by the name it is compiled under. Kubernetes policies (stored as
/// `knp.default.*` NetworkPolicies, compiled as another kind), global ones, and a policy whose
/// selector stops parsing (compiled into nothing) must all leave nothing behind.
#[test]
fn updates_and_deletes_find_the_compiled_policy() {
    let node = "node-a";
    let load = |text: &str| gingham_model::load_resources("t.yaml", text).unwrap();
    let endpoint = load(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--a-k8s-web-eth0, namespace: ns1, labels: {app: web, projectcalico.org/namespace: ns1}}
spec: {node: node-a, orchestrator: k8s, pod: web, endpoint: eth0, interfaceName: caliweb, ipNetworks: [10.0.0.1/32]}
",
    );
    let policy = |kind: &str, name: &str, selector: &str, port: u16| {
        let ns = if kind == "NetworkPolicy" {
            ", namespace: ns1"
        } else {
            ""
        };
        load(&format!(
            "apiVersion: projectcalico.org/v3
kind: {kind}
metadata: {{name: {name}{ns}}}
spec:
  selector: \"{selector}\"
  ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [{port}]}}}}]
"
        ))
        .remove(0)
    };
    // The loader refuses bad selectors; a stored one can still be bad (written by an older
    // version, say), and the calculator compiles it into nothing.
    let unparsable = |mut r: Resource| {
        if let Resource::NetworkPolicy(p) = &mut r {
            p.spec.selector = "app == (".into();
        }
        r
    };
    let versions = [
        policy("NetworkPolicy", "knp.default.web", "app == 'web'", 80),
        policy("NetworkPolicy", "knp.default.web", "app == 'web'", 81),
        policy("NetworkPolicy", "plain", "app == 'web'", 82),
        unparsable(policy("NetworkPolicy", "plain", "app == 'web'", 83)),
        policy("GlobalNetworkPolicy", "global", "app == 'web'", 84),
        policy("GlobalNetworkPolicy", "global", "app == 'web'", 85),
    ];
    let mut calc = Calculator::new(node);
    let mut mirror = NodeProgram::default();
    apply_changes(&mut mirror, &calc.load_all(endpoint.clone()));
    let mut current: BTreeMap<String, Resource> = BTreeMap::new();
    let check = |calc: &Calculator, mirror: &NodeProgram, current: &BTreeMap<String, Resource>| {
        let mut all = endpoint.clone();
        all.extend(current.values().cloned());
        let full = Snapshot::build(&all).node_program(Some(node));
        assert_eq!(mirror, &full);
        assert_eq!(calc.state(), full);
    };
    for r in versions {
        let m = r.meta();
        current.insert(format!("{:?}/{}", r.kind(), m.name), r.clone());
        apply_changes(&mut mirror, &calc.apply(Update::Upsert(Box::new(r))));
        check(&calc, &mirror, &current);
    }
    let names: Vec<String> = current.keys().cloned().collect();
    for name in names {
        let r = current.remove(&name).unwrap();
        let m = r.meta();
        let delete = Update::Delete {
            kind: r.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
        };
        apply_changes(&mut mirror, &calc.apply(delete));
        check(&calc, &mirror, &current);
    }
}

/// Namespace `ns0` with `p` policies, policy `j` selecting app `a{j}` and allowing TCP from
/// role `r{j}`, and `p` local workloads, workload `j` with app `a{j}` and role `r{j}`: every
/// policy selects one workload and every workload's program uses one set.
fn one_of_each(p: usize) -> String {
    let mut text = String::from(
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.ns0}\nspec:\n  ingress: [{action: Allow}]\n  egress: [{action: Allow}]\n---\n",
    );
    for j in 0..p {
        text += &allow_tcp(&format!("pol{j}"), j, j);
        text += &workload(j, "nodea", j, j);
    }
    text
}

/// NetworkPolicy `name` in ns0: workloads with app `a{app}` allow TCP from role `r{role}`.
fn allow_tcp(name: &str, app: usize, role: usize) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: {name}, namespace: ns0}}
spec:
  selector: app == 'a{app}'
  ingress: [{{action: Allow, protocol: TCP, source: {{selector: role == 'r{role}'}}}}]
---
"
    )
}

fn workload(i: usize, node: &str, app: usize, role: usize) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-pod{i}-eth0
  namespace: ns0
  labels: {{app: a{app}, role: r{role}, projectcalico.org/namespace: ns0}}
spec:
  node: {node}
  orchestrator: k8s
  pod: pod{i}
  endpoint: eth0
  interfaceName: cali{i:011}
  ipNetworks: [10.1.{}.{}/32]
  profiles: [kns.ns0]
---
",
        (i >> 8) & 255,
        i & 255
    )
}

/// The selector matches one update tries with `p` policies and sets beside it: a new local
/// workload (app a1, role r3) and a remote one changing role (r3 to r4).
fn tests_per_update(p: usize) -> (usize, usize) {
    let mut calc = Calculator::new("nodea");
    calc.load_all(gingham_model::load_resources("one.yaml", &one_of_each(p)).unwrap());
    let tests = |calc: &mut Calculator, text: String| {
        let r = gingham_model::load_resources("one.yaml", &text)
            .unwrap()
            .remove(0);
        let before = calc.selector_tests();
        let changes = calc.apply(Update::Upsert(Box::new(r)));
        assert!(!changes.is_empty());
        calc.selector_tests() - before
    };
    let added = tests(&mut calc, workload(p + 1, "nodea", 1, 3));
    tests(&mut calc, workload(p + 2, "nodeb", 0, 3));
    let relabelled = tests(&mut calc, workload(p + 2, "nodeb", 0, 4));
    (added, relabelled)
}

/// An update is matched only against the policies and sets its labels can match (the index
/// files each selector under a label it requires), not against every policy of the namespace
/// and every set: its cost does not grow with the cluster's policies.
#[test]
fn an_update_tries_only_the_selectors_its_labels_can_match() {
    let small = tests_per_update(20);
    let large = tests_per_update(1000);
    eprintln!(
        "selector matches per update (new local workload, remote relabel): {small:?} beside 20 policies, {large:?} beside 1,000"
    );
    assert_eq!(small, large);
    // The new workload: its policy (a1) and the set of its role (r3); the relabel: the sets
    // of its old and new role.
    assert!(small.0 <= 4 && small.1 <= 4, "{small:?}");
}

/// The endpoints an endpoint update looks at, with `remote` endpoints on other nodes: a new
/// local workload, a remote one changing role, and the new one deleted.
fn endpoints_visited_per_update(remote: usize) -> Vec<usize> {
    let mut text = one_of_each(10);
    for i in 0..remote {
        text += &workload(100 + i, "nodeb", i % 10, i % 10);
    }
    let mut calc = Calculator::new("nodea");
    calc.load_all(gingham_model::load_resources("one.yaml", &text).unwrap());
    let mut visits = |update: Update| {
        let before = calc.endpoints_visited();
        assert!(!calc.apply(update).is_empty());
        calc.endpoints_visited() - before
    };
    let upsert = |text: String| {
        let r = gingham_model::load_resources("one.yaml", &text)
            .unwrap()
            .remove(0);
        Update::Upsert(Box::new(r))
    };
    vec![
        visits(upsert(workload(10, "nodea", 1, 3))),
        visits(upsert(workload(100, "nodeb", 0, 4))),
        visits(Update::Delete {
            kind: gingham_model::Kind::WorkloadEndpoint,
            namespace: Some("ns0".into()),
            name: "nodea-k8s-pod10-eth0".into(),
        }),
    ]
}

/// An endpoint update finds its endpoint by key (an index), not by scanning every endpoint
/// of the cluster: what it looks at does not grow with the endpoints elsewhere.
#[test]
fn an_endpoint_update_looks_up_its_endpoint_without_scanning_the_cluster() {
    let small = endpoints_visited_per_update(10);
    let large = endpoints_visited_per_update(1000);
    eprintln!("endpoints looked at per update: {small:?} beside 10 remote, {large:?} beside 1,000");
    assert_eq!(small, large);
}

/// A new local workload selected by `k` policies (and one set of its role): the selector
/// matches its update tries.
fn tests_for_a_workload_selected_by(k: usize) -> usize {
    let mut text = one_of_each(1);
    for j in 0..k {
        text += &allow_tcp(&format!("many{j}"), 7, 3);
    }
    let mut calc = Calculator::new("nodea");
    calc.load_all(gingham_model::load_resources("one.yaml", &text).unwrap());
    let r = gingham_model::load_resources("one.yaml", &workload(50, "nodea", 7, 3))
        .unwrap()
        .remove(0);
    let before = calc.selector_tests();
    assert!(!calc.apply(Update::Upsert(Box::new(r))).is_empty());
    calc.selector_tests() - before
}

/// The policies found to select an endpoint are matched once: building its program takes them
/// as they are, not matching each again (per direction) on the way.
#[test]
fn a_program_is_built_without_matching_its_policies_again() {
    for k in [1, 10, 40] {
        let tests = tests_for_a_workload_selected_by(k);
        eprintln!("selector matches for a workload selected by {k} policies: {tests}");
        // Its k policies once, and the role's set (nothing else is active with its labels).
        assert!(tests <= k + 2, "{k} policies: {tests} matches");
    }
}
