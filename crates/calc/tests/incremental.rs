//! Property: feeding resources one update at a time to the incremental calculator, and applying
//! the changes it emits to a copy of the state, always gives the full calculation of the current
//! inputs. Updates: creations in random order, then random replacements (relabelled endpoints,
//! changed policies, profiles, tiers, network sets) and deletions.

mod common;

use std::collections::BTreeMap;

use common::{Rng, gen_cluster};
use gingham_calc::Snapshot;
use gingham_calc::incremental::{Calculator, Update, apply_changes};
use gingham_calc::program::NodeProgram;
use gingham_model::Resource;

fn resources(seed: u64) -> Vec<Resource> {
    let docs = gen_cluster(seed);
    let text: Vec<String> = docs.iter().map(ToString::to_string).collect();
    gingham_model::load_resources("random.json", &text.join("\n"))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
}

fn key(r: &Resource) -> String {
    r.key()
}

#[test]
fn changes_rebuild_the_full_state() {
    let seeds: u64 = std::env::var("PROPERTY_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let node = "node-a";
    let mut updates_checked = 0usize;
    let mut changes_seen = 0usize;
    for seed in 0..seeds {
        let mut rng = Rng(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) | 1);
        let mut calc = Calculator::new(node);
        let mut mirror = NodeProgram::default();
        let mut current: BTreeMap<String, Resource> = BTreeMap::new();
        let mut pool = resources(seed);
        // Creations in random order.
        let mut steps: Vec<Update> = Vec::new();
        while !pool.is_empty() {
            let r = pool.swap_remove(rng.below(pool.len()));
            steps.push(Update::Upsert(Box::new(r)));
        }
        // Replacements and deletions, drawn from two other clusters with overlapping names.
        let mut others = resources(seed + 10_000);
        others.extend(resources(seed + 20_000));
        for _ in 0..25 {
            if rng.chance(70) && !others.is_empty() {
                let r = others.swap_remove(rng.below(others.len()));
                steps.push(Update::Upsert(Box::new(r)));
            } else {
                steps.push(Update::Delete {
                    kind: gingham_model::Kind::WorkloadEndpoint,
                    namespace: None,
                    name: String::new(),
                });
            }
        }
        for (i, step) in steps.into_iter().enumerate() {
            // A placeholder delete removes a random current input.
            let step = match step {
                Update::Delete { name, .. } if name.is_empty() => {
                    if current.is_empty() {
                        continue;
                    }
                    let keys: Vec<&String> = current.keys().collect();
                    let k = keys[rng.below(keys.len())].clone();
                    let r = &current[&k];
                    Update::Delete {
                        kind: r.kind(),
                        namespace: r.meta().namespace.clone(),
                        name: r.meta().name.clone(),
                    }
                }
                other => other,
            };
            let what = format!("{step:?}");
            match &step {
                Update::Upsert(r) => {
                    current.insert(key(r), (**r).clone());
                }
                Update::Delete {
                    kind,
                    namespace,
                    name,
                } => {
                    current.remove(&kind.key(namespace.as_deref(), name));
                }
            }
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
