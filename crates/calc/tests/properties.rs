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
                        // The JSON is the map of names it always was, byte for byte.
                        let map = reach::matrix_as_map(&snap, &endpoints, protocol, port)
                            .expect("the grouped path succeeded");
                        assert_eq!(
                            serde_json::to_string_pretty(&g).unwrap(),
                            serde_json::to_string_pretty(&MatrixJson {
                                port,
                                protocol: &g.protocol,
                                endpoints: &endpoints,
                                allowed: &map,
                            })
                            .unwrap(),
                            "seed {seed}: the matrix's JSON"
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

/// `reach -o json`'s schema as it was written before the compact matrix: a map of names.
#[derive(serde::Serialize)]
struct MatrixJson<'a> {
    port: Option<u16>,
    protocol: &'a str,
    endpoints: &'a [String],
    allowed: &'a std::collections::BTreeMap<String, std::collections::BTreeMap<String, bool>>,
}

/// Property: the [`Evaluator`](gingham_calc::eval::Evaluator) (each endpoint's policy selection
/// worked out once; the trace left out when only the verdict is asked for) gives exactly
/// `Snapshot::verdict`'s verdicts and traces, on random clusters and flows; and between
/// resolved endpoints the same as for the flow naming them.
#[test]
fn evaluator_equals_the_reference_verdict() {
    use gingham_calc::eval::{Evaluator, FlowError};
    let seeds = common::property_seeds(300);
    let (mut flows, mut pairs) = (0usize, 0usize);
    for seed in 0..seeds {
        let docs = gen_cluster(seed);
        let text: Vec<String> = docs.iter().map(ToString::to_string).collect();
        let resources = gingham_model::load_resources("random.json", &text.join("\n"))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let snap = Snapshot::build(&resources);
        let eval = Evaluator::new(&snap);
        let json = |v: Result<gingham_calc::Verdict, FlowError>| {
            v.map(|v| serde_json::to_string(&v).unwrap())
        };
        for flow in gen_flows(seed, &snap) {
            flows += 1;
            let reference = snap.verdict(&flow);
            assert_eq!(
                eval.allowed(&flow),
                reference.as_ref().map(|v| v.allowed).map_err(Clone::clone),
                "seed {seed}: allowed for {flow:?}\ncluster:\n{}",
                text.join("\n")
            );
            assert_eq!(
                json(eval.verdict(&flow)),
                json(reference),
                "seed {seed}: the trace for {flow:?}"
            );
        }
        let names = gingham_calc::reach::matrix_endpoints(&snap);
        let eps = eval.endpoints(&names);
        for (i, from) in names.iter().enumerate() {
            for (j, to) in names.iter().enumerate() {
                for (protocol, port) in [(6, Some(80)), (1, None)] {
                    pairs += 1;
                    let flow = gingham_calc::Flow::between_endpoints(from, to, protocol, port);
                    assert_eq!(
                        eval.allowed_between(&eps, i, j, protocol, port),
                        snap.verdict(&flow).map(|v| v.allowed),
                        "seed {seed}: {from} -> {to} {protocol}/{port:?}"
                    );
                }
            }
        }
    }
    assert!(flows > seeds as usize * 10 && pairs > seeds as usize * 10);
    eprintln!("{flows} flows and {pairs} endpoint pairs agreed");
}

/// Property: `diff` is exactly what two `reach` runs disagree on, pair by pair, each lost pair
/// with `explain`'s cause in the after state, when the after state drops some of the before
/// state's documents (policies, profiles, endpoints: some pairs exist on one side only) and
/// adds another cluster's policies; and it equals the traced path it replaced.
#[test]
fn diff_equals_two_reach_runs() {
    use gingham_calc::{diff, explain, reach};
    use std::collections::BTreeSet;
    let seeds = common::property_seeds(300);
    let (mut gained, mut lost, mut pairs) = (0usize, 0usize, 0usize);
    for seed in 0..seeds {
        let before_docs = gen_cluster(seed);
        let mut rng = common::Rng(seed ^ 0xd1ff);
        let mut after_docs: Vec<serde_json::Value> = before_docs
            .iter()
            .filter(|_| !rng.chance(25))
            .cloned()
            .collect();
        // Another seed's policies too: new rules, new selectors.
        after_docs.extend(
            gen_cluster(seed + 1_000_000)
                .into_iter()
                .filter(|d| d["kind"].as_str().is_some_and(|k| k.contains("Policy"))),
        );
        let build = |docs: &[serde_json::Value]| {
            let text: Vec<String> = docs.iter().map(ToString::to_string).collect();
            let resources = gingham_model::load_resources("random.json", &text.join("\n"))
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            (Snapshot::build(&resources), text.join("\n"))
        };
        let (before, before_text) = build(&before_docs);
        let (after, after_text) = build(&after_docs);
        let probes = [(6, Some(80)), (17, Some(53)), (1, None)];
        let got = match diff::diff(&before, &after, &probes) {
            Ok(d) => d,
            Err(e) => {
                // Then one of the reach runs fails too, with the same error.
                let failed = probes.iter().find_map(|&(pr, port)| {
                    reach::matrix_each(&before, &reach::matrix_endpoints(&before), pr, port)
                        .err()
                        .or_else(|| {
                            reach::matrix_each(&after, &reach::matrix_endpoints(&after), pr, port)
                                .err()
                        })
                });
                assert_eq!(failed, Some(e), "seed {seed}");
                continue;
            }
        };
        assert_eq!(
            got,
            diff::diff_traced(&before, &after, &probes).unwrap(),
            "seed {seed}: diff and its traced path"
        );
        let eps_before = reach::matrix_endpoints(&before);
        let eps_after = reach::matrix_endpoints(&after);
        let all: BTreeSet<&String> = eps_before.iter().chain(&eps_after).collect();
        let (mut want_gained, mut want_lost) = (Vec::new(), Vec::new());
        for (protocol, port) in probes {
            let mb = reach::matrix_each(&before, &eps_before, protocol, port).unwrap();
            let ma = reach::matrix_each(&after, &eps_after, protocol, port).unwrap();
            for from in &all {
                for to in &all {
                    pairs += 1;
                    let was = mb.get(from, to).unwrap_or(false);
                    let is = ma.get(from, to).unwrap_or(false);
                    let cell = ((*from).clone(), (*to).clone(), port, protocol);
                    if !was && is {
                        want_gained.push(cell);
                    } else if was && !is {
                        let flow = gingham_calc::Flow::between_endpoints(from, to, protocol, port);
                        let cause = match after.verdict(&flow) {
                            Ok(v) => explain::cause(&after, &v),
                            Err(e) => e.to_string(),
                        };
                        want_lost.push((cell, cause));
                    }
                }
            }
        }
        let name = gingham_calc::eval::protocol_name;
        let got_gained: Vec<_> = got
            .gained
            .iter()
            .map(|g| (g.from.clone(), g.to.clone(), g.port, g.protocol.clone()))
            .collect();
        let want_gained: Vec<_> = want_gained
            .into_iter()
            .map(|(f, t, port, pr)| (f, t, port, name(pr)))
            .collect();
        assert_eq!(
            got_gained, want_gained,
            "seed {seed}: gained\nbefore:\n{before_text}\nafter:\n{after_text}"
        );
        let got_lost: Vec<_> = got
            .lost
            .iter()
            .map(|l| {
                (
                    (l.from.clone(), l.to.clone(), l.port, l.protocol.clone()),
                    l.cause.clone(),
                )
            })
            .collect();
        let want_lost: Vec<_> = want_lost
            .into_iter()
            .map(|((f, t, port, pr), c)| ((f, t, port, name(pr)), c))
            .collect();
        assert_eq!(got_lost, want_lost, "seed {seed}: lost");
        gained += got.gained.len();
        lost += got.lost.len();
    }
    // Not vacuous: pairs gained and lost access.
    assert!(
        gained > seeds as usize / 2 && lost > seeds as usize,
        "only {gained} gained and {lost} lost"
    );
    eprintln!("{pairs} pairs agreed: {gained} gained, {lost} lost");
}
