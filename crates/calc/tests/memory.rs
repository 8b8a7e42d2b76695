//! The calculator's heap per policy: a policy is kept once, compiled (no copy of the input
//! resource, no copy of each original rule), and equal selectors are shared. Measured with a
//! counting allocator (this test binary's only test, so nothing else allocates meanwhile) on
//! the agent bench's cluster shape: 100 namespaces, 1,000 endpoints on 10 nodes, namespaced
//! policies that each select an app label and allow TCP from a role.
// The counting allocator is the only unsafe code: it passes every call on to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gingham_calc::incremental::{Calculator, Update};
use gingham_model::Resource;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NAMESPACES: usize = 100;
const ENDPOINTS: usize = 1000;
/// What the calculator may hold per policy (compiled policy, its share of local programs and
/// indexes): about 1.1 KB. Keeping the input resource and a copy of every rule cost about
/// 4.1 KB; a selector tree per policy instead of shared ones, about 1.4 KB.
const BUDGET: usize = 1280;

fn profiles_and_endpoints() -> String {
    let mut text: String = (0..NAMESPACES)
        .map(|n| {
            format!(
                "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.ns{n}}}
spec:
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
---
"
            )
        })
        .collect();
    for i in 0..ENDPOINTS {
        let ns = i % NAMESPACES;
        let node = (i / NAMESPACES) % 10;
        text.push_str(&format!(
            "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node{node}-k8s-pod{i}-eth0
  namespace: ns{ns}
  labels: {{app: a{app}, role: r{role}, projectcalico.org/namespace: ns{ns}, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: node{node}
  pod: pod{i}
  endpoint: eth0
  interfaceName: cali{i:011}
  ipNetworks: [10.{a}.{b}.{c}/32]
  profiles: [kns.ns{ns}]
---
",
            app = (i / NAMESPACES) % 10,
            role = i % 20,
            a = 100 + (i >> 16),
            b = (i >> 8) & 255,
            c = i & 255,
        ));
    }
    text
}

fn policies(range: std::ops::Range<usize>) -> String {
    range
        .map(|j| {
            format!(
                "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: pol{j}, namespace: ns{ns}}}
spec:
  order: {j}
  selector: app == 'a{app}'
  ingress:
  - action: Allow
    protocol: TCP
    source: {{selector: role == 'r{role}'}}
    destination: {{ports: [{port}]}}
---
",
                ns = j % NAMESPACES,
                app = (j / NAMESPACES) % 10,
                role = j % 20,
                port = 80 + j % 5,
            )
        })
        .collect()
}

fn load(text: &str) -> Vec<Resource> {
    gingham_model::load_resources("memory.yaml", text).expect("valid generated input")
}

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn the_calculator_holds_each_policy_once() {
    const P: usize = 2000;
    let base_input = profiles_and_endpoints();

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
