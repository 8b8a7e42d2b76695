//! Property: on random clusters and random flows, the per-endpoint programs (selectors resolved
//! into IP sets, as the dataplane enforces them) decide every policy stage exactly as the
//! reference evaluator does. Deterministic seeds; a failure prints the seed and the cluster.
//! `PROPERTY_SEEDS=N` runs more clusters.

use gingham_calc::Snapshot;
use gingham_calc::program::check_stages;

mod common;

use common::{gen_cluster, gen_flows};

#[test]
fn programs_agree_with_the_reference_evaluator() {
    let seeds: u64 = std::env::var("PROPERTY_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut stages = 0usize;
    let mut decided = [0usize; 2];
    for seed in 0..seeds {
        let docs = gen_cluster(seed);
        let text: Vec<String> = docs.iter().map(ToString::to_string).collect();
        let resources = match gingham_model::load_resources("random.json", &text.join("\n")) {
            Ok(r) => r,
            Err(e) => panic!("seed {seed}: the generator made an invalid cluster: {e}"),
        };
        let snap = Snapshot::build(&resources);
        let program = snap.node_program(None);
        for flow in gen_flows(seed, &snap) {
            let v = match snap.verdict(&flow) {
                Ok(v) => v,
                Err(_) => continue, // a peer without an address of the family
            };
            decided[usize::from(v.allowed)] += 1;
            for check in check_stages(&program, &v) {
                stages += 1;
                assert_eq!(
                    check.reference,
                    check.program,
                    "seed {seed}: {:?} stage of {} for {:?} -> {:?} {}/{:?}\ncluster:\n{}\ntrace: {}",
                    check.kind,
                    check.endpoint,
                    flow.src,
                    flow.dst,
                    flow.protocol,
                    flow.port,
                    text.join("\n"),
                    serde_json::to_string_pretty(&v).unwrap()
                );
            }
        }
    }
    // The generator must exercise both outcomes and many stages, or the property is vacuous.
    assert!(stages > seeds as usize * 10, "only {stages} stages checked");
    assert!(
        decided[0] > 100 && decided[1] > 100,
        "verdicts: {decided:?}"
    );
    eprintln!(
        "{stages} stages agreed; {} denied, {} allowed flows",
        decided[0], decided[1]
    );
}

/// Property: a rule `lint` reports as shadowed is never the rule the reference evaluator
/// matches, for any flow of a random cluster. The generator must make some shadowed rules.
#[test]
fn shadowed_rules_never_match() {
    use gingham_calc::eval::{StageKind, Step};
    use gingham_calc::snapshot::Direction;
    let seeds = common::property_seeds(300);
    let (mut shadowed, mut flows) = (0usize, 0usize);
    for seed in 0..seeds {
        let docs = gen_cluster(seed);
        let text: Vec<String> = docs.iter().map(ToString::to_string).collect();
        let resources = gingham_model::load_resources("random.json", &text.join("\n"))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let snap = Snapshot::build(&resources);
        let found = gingham_calc::lint::shadowed(&snap);
        if found.is_empty() {
            continue;
        }
        shadowed += found.len();
        for flow in gen_flows(seed, &snap) {
            let Ok(v) = snap.verdict(&flow) else {
                continue;
            };
            flows += 1;
            for stage in &v.stages {
                let dir = match stage.kind {
                    StageKind::WorkloadEgress
                    | StageKind::HostEgress
                    | StageKind::ForwardEgress
                    | StageKind::UntrackedEgress => Direction::Egress,
                    StageKind::EndpointToHost => continue,
                    _ => Direction::Ingress,
                };
                for step in &stage.steps {
                    if let Step::RuleMatched { policy, rule, .. } = step {
                        let hit = found
                            .iter()
                            .find(|s| &s.policy == policy && s.rule == *rule && s.direction == dir);
                        assert!(
                            hit.is_none(),
                            "seed {seed}: {policy} {dir} rule {rule} is reported shadowed ({:?}) but matched {:?} -> {:?} {}/{:?}\ncluster:\n{}",
                            hit,
                            flow.src,
                            flow.dst,
                            flow.protocol,
                            flow.port,
                            text.join("\n")
                        );
                    }
                }
            }
        }
    }
    assert!(
        shadowed > 20 && flows > 1000,
        "vacuous: {shadowed} shadowed rules, {flows} flows in clusters with some"
    );
    eprintln!("{shadowed} shadowed rules never matched in {flows} flows");
}

/// Property: `reach`'s matrix, which decides one flow per pair of endpoint classes (endpoints
/// policy cannot tell apart), equals the matrix with every cell decided by the evaluator, on
/// random clusters and on the same clusters with a copy of every workload (same node, labels,
/// profiles and ports; another address, which `nets` rules may or may not tell apart).
#[test]
fn grouped_reach_equals_every_cell_evaluated() {
    use gingham_calc::reach;
    let seeds = common::property_seeds(300);
    let (mut merged, mut cells) = (0usize, 0usize);
    for seed in 0..seeds {
        let mut docs = gen_cluster(seed);
        let copies: Vec<serde_json::Value> = docs
            .iter()
            .filter(|d| d["kind"] == "WorkloadEndpoint")
            .enumerate()
            .map(|(i, d)| {
                let mut c = d.clone();
                let node = c["spec"]["node"].as_str().unwrap().to_owned();
                let pod = format!("{}c", c["spec"]["pod"].as_str().unwrap());
                c["metadata"]["name"] =
                    format!("{}-k8s-{pod}-eth0", node.replace('-', "--")).into();
                c["spec"]["pod"] = pod.into();
                c["spec"]["interfaceName"] = format!("calc{i:011}").into();
                // Half the copies stay in their original's /24, half move to the other one.
                c["spec"]["ipNetworks"] =
                    serde_json::json!([format!("10.0.{}.{}/32", (i / 2) % 2, 100 + i)]);
                c
            })
            .collect();
        for with_copies in [false, true] {
            if with_copies {
                docs.extend(copies.iter().cloned());
            }
            let text: Vec<String> = docs.iter().map(ToString::to_string).collect();
            let resources = gingham_model::load_resources("random.json", &text.join("\n"))
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let snap = Snapshot::build(&resources);
            let endpoints = reach::matrix_endpoints(&snap);
            let classes = reach::classes(&snap, &endpoints);
            merged += endpoints.len()
                - classes
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
            for (protocol, port) in [(6, Some(80)), (6, Some(8080)), (17, Some(53)), (1, None)] {
                let grouped = reach::matrix(&snap, &endpoints, protocol, port);
                let each = reach::matrix_each(&snap, &endpoints, protocol, port);
                match (grouped, each) {
                    (Ok(g), Ok(e)) => {
                        cells += endpoints.len() * endpoints.len();
                        assert_eq!(
                            g,
                            e,
                            "seed {seed} (copies: {with_copies}), {protocol}/{port:?}: classes {classes:?}\ncluster:\n{}",
                            text.join("\n")
                        );
                    }
                    (g, e) => assert_eq!(
                        g.err(),
                        e.err(),
                        "seed {seed}: one path failed, the other did not"
                    ),
                }
            }
        }
    }
    // Not vacuous: many endpoints shared a class, and many cells were compared.
    assert!(
        merged > seeds as usize,
        "only {merged} endpoints shared a class"
    );
    assert!(cells > seeds as usize * 100, "only {cells} cells compared");
    eprintln!("{cells} cells agreed; {merged} endpoints shared a class with another");
}
