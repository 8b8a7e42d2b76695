//! An update costs what it changes, not the table's size: one member joining and one leaving
//! an IP set, and one workload more on the node, allocate the same in the renderer and the
//! programmer (diff and record) whether the set or the node's dispatch maps hold a thousand
//! elements or a hundred times more. Measured with a counting allocator (this binary's only
//! test, so nothing else allocates meanwhile); before, every touched set was compared and
//! copied whole on each update.
// The counting allocator (calc's `tests/support/counting.rs`) is the only unsafe code: it
// passes every call on to `System`.
#![allow(unsafe_code)]

#[path = "../../calc/tests/support/counting.rs"]
mod counting;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use counting::allocated;
use gingham_calc::incremental::{Calculator, Change, Update};
use gingham_calc::program::{IpSet, NodeProgram};
use gingham_dataplane::{Programmer, Recording, Renderer, Settings};
use ipnet::IpNet;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

const SET: &str = "s:big";

fn host(i: u32) -> IpNet {
    IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
}

fn one_set(n: u32) -> NodeProgram {
    NodeProgram {
        endpoints: BTreeMap::new(),
        sets: BTreeMap::from([(
            SET.to_owned(),
            IpSet {
                nets: (0..n).map(host).collect(),
                ports: BTreeSet::new(),
            },
        )]),
    }
}

/// Updates measured in each case, one after the other: a B-tree allocates a node when it
/// splits one, so a single insertion costs a node or nothing; the sum costs the amortised rate.
const UPDATES: usize = 24;

/// Installs `program`, then applies each batch of changes, one sync each: returns the bytes
/// allocated by the updates (render, diff, record) and the commands each sent.
fn update_bytes(program: NodeProgram, batches: &[Vec<Change>]) -> (usize, BTreeSet<usize>) {
    let mut renderer = Renderer::new(program, Settings::default());
    let mut programmer = Programmer::new(Recording::default());
    let all = renderer.take_touched();
    programmer.sync_touched(renderer.table(), &all).unwrap();
    let mut commands = BTreeSet::new();
    let before = allocated();
    for changes in batches {
        renderer.apply(changes);
        let touched = renderer.take_touched();
        let applied = programmer.sync_touched(renderer.table(), &touched).unwrap();
        commands.insert(applied.commands);
    }
    let bytes = allocated() - before;
    assert_eq!(programmer.installed(), Some(renderer.table()));
    (bytes, commands)
}

fn set_member_bytes(n: u32) -> (usize, BTreeSet<usize>) {
    let batches: Vec<Vec<Change>> = (0..UPDATES as u32)
        .map(|i| {
            vec![Change::SetUpdated {
                id: SET.to_owned(),
                added: IpSet {
                    nets: BTreeSet::from([host(n + i)]),
                    ports: BTreeSet::new(),
                },
                removed: IpSet {
                    nets: BTreeSet::from([host(i * 7)]),
                    ports: BTreeSet::new(),
                },
            }]
        })
        .collect();
    update_bytes(one_set(n), &batches)
}

fn workload(i: usize) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: node--a-k8s-pod{i}-eth0, namespace: web, labels: {{app: web}}}}
spec:
  node: node-a
  orchestrator: k8s
  pod: pod{i}
  endpoint: eth0
  interfaceName: cali{i:011}
  ipNetworks: [10.{}.{}.{}/32]
  profiles: [kns.web]
---
",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
}

/// The node has `n` workloads (their namespace's profile allows everything); more come, one
/// at a time.
fn new_workload_bytes(n: usize) -> (usize, BTreeSet<usize>) {
    let profile = "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.web}\nspec:\n  ingress: [{action: Allow}]\n  egress: [{action: Allow}]\n---\n";
    let text = (0..n).map(workload).fold(profile.to_owned(), |t, w| t + &w);
    let resources = gingham_model::load_resources("flat.yaml", &text).unwrap();
    let mut calc = Calculator::new("node-a");
    calc.load_all(resources);
    let program = calc.state();
    let batches: Vec<Vec<Change>> = (0..UPDATES)
        .map(|i| {
            let new = gingham_model::load_resources("flat.yaml", &workload(n + i)).unwrap();
            calc.apply(Update::Upsert(Box::new(new[0].clone())))
        })
        .collect();
    update_bytes(program, &batches)
}

#[test]
fn an_update_allocates_what_it_changes_whatever_the_tables_size() {
    let (small, commands) = set_member_bytes(1_000);
    let (large, large_commands) = set_member_bytes(100_000);
    eprintln!(
        "{UPDATES} times one member in, one out: {small} bytes beside 1,000 members, {large} beside 100,000"
    );
    // add table, delete element, add element.
    assert_eq!(commands, BTreeSet::from([3]));
    assert_eq!(large_commands, commands);
    assert!(
        large <= small + small / 2,
        "a set member costs {large} bytes in a set of 100,000, {small} in one of 1,000"
    );

    let (small, commands) = new_workload_bytes(200);
    let (large, large_commands) = new_workload_bytes(5_000);
    eprintln!(
        "{UPDATES} workloads more, one at a time: {small} bytes beside 200 workloads, {large} beside 5,000"
    );
    assert_eq!(commands, large_commands);
    assert!(
        large <= small + small / 2,
        "a new workload costs {large} bytes beside 5,000 workloads, {small} beside 200"
    );
}
