//! The calculator's heap per policy: a policy is kept once, compiled (no copy of the input
//! resource, no copy of each original rule), and equal selectors are shared. Measured with a
//! counting allocator (this test binary's only test, so nothing else allocates meanwhile) on
//! the agent bench's cluster shape: 100 namespaces, 1,000 endpoints on 10 nodes, namespaced
//! policies that each select an app label and allow TCP from a role.
// The counting allocator (`support/counting.rs`) is the only unsafe code: it passes every
// call on to `System`.
#![allow(unsafe_code)]

#[path = "support/bench_model.rs"]
mod bench_model;
#[path = "support/counting.rs"]
mod counting;

use bench_model::{model_text, policies};
use counting::live;
use gingham_calc::incremental::{Calculator, Update};
use gingham_model::Resource;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// What the calculator may hold per policy (compiled policy, its share of local programs and
/// indexes): about 1.1 KB. Keeping the input resource and a copy of every rule cost about
/// 4.1 KB; a selector tree per policy instead of shared ones, about 1.4 KB.
const BUDGET: usize = 1280;

fn load(text: &str) -> Vec<Resource> {
    gingham_model::load_resources("memory.yaml", text).expect("valid generated input")
}

#[test]
fn the_calculator_holds_each_policy_once() {
    const P: usize = 2000;
    let base_input = model_text(0);

    // A cold start with no policies, then with P: the difference is what P policies cost.
    let mut calc = Calculator::new("node0");
    let before = live();
    drop(calc.load_all(load(&base_input)));
    let without = live() - before;
    drop(calc);
    let mut calc = Calculator::new("node0");
    let before = live();
    drop(calc.load_all(load(&(base_input.clone() + &policies(0..P)))));
    let with = live() - before;
    let per_policy = (with - without) / P;

    // P more, one update each (the watch's path).
    let before = live();
    let added = load(&policies(P..2 * P));
    for r in added {
        drop(calc.apply(Update::Upsert(Box::new(r))));
    }
    let per_update = (live() - before) / P;
    eprintln!(
        "bytes per policy: {per_policy} (cold start), {per_update} (one update each); budget {BUDGET}"
    );
    assert!(
        per_policy <= BUDGET,
        "cold start: {per_policy} bytes per policy"
    );
    assert!(
        per_update <= BUDGET,
        "updates: {per_update} bytes per policy"
    );
}
