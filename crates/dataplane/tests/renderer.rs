//! Property: the incremental renderer, fed the calculator's changes one update at a time, always
//! holds the table a full render of the current programs gives; the chains and sets it reports
//! as touched cover every difference (a diff of only those equals the full diff); and a
//! programmer syncing only the touched names keeps a record equal to the desired table.
//! Updates: random clusters created in random order, then replacements, deletions, resyncs and
//! settings and IP pool changes (the engine's random-cluster generator).

#[path = "../../calc/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Rng, property_seeds, resolve_step, update_steps};
use gingham_calc::incremental::Calculator;
use gingham_calc::snapshot::NatPools;
use gingham_dataplane::{Programmer, Recording, Renderer, Settings, Table};
use gingham_model::Resource;
use ipnet::IpNet;

fn names<'a>(a: impl Iterator<Item = &'a String>) -> BTreeSet<&'a str> {
    a.map(String::as_str).collect()
}

/// The names whose entries differ between two maps.
fn differing_in<T: PartialEq>(
    a: &BTreeMap<String, T>,
    b: &BTreeMap<String, T>,
) -> BTreeSet<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The chains and sets that differ between two tables.
fn differing(a: &Table, b: &Table) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        differing_in(&a.chains, &b.chains),
        differing_in(&a.sets, &b.sets),
    )
}

/// Some of a few IPv4 and IPv6 pools, each with natOutgoing or not.
fn random_pools(rng: &mut Rng) -> NatPools {
    const CIDRS: [&str; 4] = [
        "10.244.0.0/16",
        "10.9.0.0/24",
        "fd00:10::/64",
        "fd00:20::/64",
    ];
    let mut pools = NatPools::default();
    for cidr in CIDRS {
        if rng.chance(50) {
            let net: IpNet = cidr.parse().unwrap();
            pools.all.insert(net);
            if rng.chance(50) {
                pools.masq.insert(net);
            }
        }
    }
    pools
}

#[test]
fn incremental_rendering_equals_a_full_render() {
    let seeds = property_seeds(120);
    let node = "node-a";
    let (mut steps_checked, mut partial_syncs) = (0usize, 0usize);
    for seed in 0..seeds {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
        let mut calc = Calculator::new(node);
        let mut settings = Settings::default();
        let mut renderer = Renderer::new(calc.state(), settings.clone());
        let mut programmer = Programmer::new(Recording::default());
        let touched = renderer.take_touched();
        programmer.sync_touched(renderer.table(), &touched).unwrap();
        let mut current: BTreeMap<String, Resource> = BTreeMap::new();
        for (i, step) in update_steps(seed, &mut rng).into_iter().enumerate() {
            let Some(step) = resolve_step(step, &mut current, &mut rng) else {
                continue;
            };
            let what = format!("{step:?}");
            let before = renderer.table().clone();
            let changes = if rng.chance(6) {
                calc.load_all(current.values().cloned().collect())
            } else {
                calc.apply(step)
            };
            renderer.apply(&changes);
            if rng.chance(5) {
                settings.felix.default_endpoint_to_host_action =
                    ["Drop", "Accept", "Return"][rng.below(3)].into();
                renderer.set_settings(settings.clone());
            }
            if rng.chance(10) {
                // IP pools come and go, with natOutgoing on or off (natOutgoing).
                settings.pools = random_pools(&mut rng);
                renderer.set_settings(settings.clone());
            }
            let fresh = Renderer::new(calc.state(), settings.clone());
            let full = fresh.rendered();
            let at = format!("seed {seed}, step {i}: {what}");
            // The hit counters' record of where each rule came from follows the table too.
            assert!(
                renderer.origins() == fresh.origins(),
                "{at}: rule origins differ"
            );
            let (chains, sets) = differing(&full.table, renderer.table());
            assert!(
                chains.is_empty() && sets.is_empty(),
                "{at}\nchains differing: {chains:?}\nsets differing: {sets:?}"
            );
            assert_eq!(
                renderer.counts(),
                (full.chains, full.sets, full.set_members)
            );
            let touched = renderer.take_touched();
            if !touched.all {
                let (chains, sets) = differing(&before, &full.table);
                let missed: Vec<&String> = chains
                    .iter()
                    .filter(|c| !touched.chains.contains(*c))
                    .chain(sets.iter().filter(|s| !touched.sets.contains(*s)))
                    .collect();
                assert!(
                    missed.is_empty(),
                    "{at}\nnot reported as touched: {missed:?}"
                );
                assert_eq!(
                    before.diff_only(
                        &full.table,
                        &names(touched.chains.iter()),
                        &names(touched.sets.iter())
                    ),
                    before.diff(&full.table),
                    "{at}"
                );
                partial_syncs += 1;
            }
            programmer.sync_touched(renderer.table(), &touched).unwrap();
            assert_eq!(programmer.installed(), Some(renderer.table()), "{at}");
            steps_checked += 1;
        }
    }
    assert!(steps_checked > seeds as usize * 20, "{steps_checked}");
    assert!(partial_syncs > steps_checked / 2, "{partial_syncs}");
    eprintln!(
        "{steps_checked} updates ({partial_syncs} partial syncs), always equal to a full render"
    );
}
