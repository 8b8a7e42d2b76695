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
