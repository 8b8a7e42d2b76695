//! Property: feeding resources one update at a time to the incremental calculator, and applying
//! the changes it emits to a copy of the state, always gives the full calculation of the current
//! inputs. Updates: creations in random order, then random replacements (relabelled endpoints,
//! changed policies, profiles, tiers, network sets) and deletions.

mod common;

use std::collections::BTreeMap;

use common::{Rng, property_seeds, resolve_step, update_steps};
use gingham_calc::Snapshot;
use gingham_calc::incremental::{Calculator, apply_changes};
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
