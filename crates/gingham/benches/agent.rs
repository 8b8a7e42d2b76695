//! The agent's benchmarks (performance.md B3, B1, B7), each with its baseline measured in the
//! same run, in test-made network namespaces:
//!
//! - **Programming latency** (B3): from an update handed to the agent's calculator to the nft
//!   transaction committed in the kernel (calculate, render, diff, commit), p50/p99 over
//!   `AGENT_BENCH_REPS` (300) updates per operation, with P policies present, their spread
//!   (p90, max, the part before the kernel) and their growth from the smallest P to the
//!   largest in the same run; and cold start (load everything, install the table). Baselines: replacing the whole table (what the agent did before diffs), an
//!   empty nft transaction (the floor of spawning nft), and the Calico-style iptables peer
//!   (`gingham_dataplane::iptables`: felix's chains and ipsets, each update one
//!   `iptables-nft-restore --noflush` of the changed chains plus `ipset restore`, as felix does)
//!   doing the same operations in its own namespace.
//! - **Per-packet cost** (B1): between two pods on one node, and across two nodes (the same
//!   table on both, the nodes joined by a veth): new TCP connections per second (TCP_CRR:
//!   connect, 1-byte request and response, close), one-way UDP (every packet NEW: packets
//!   that reached the server pod per second of the sender's CPU time, the CPU that carries
//!   each packet through the nodes; the server polls and is never woken; see [`udp_rate`]), one TCP
//!   stream's throughput and TCP_RR over one connection (established packets only). Columns,
//!   all measured in every round (paired rounds, the order rotating): no table at all,
//!   conntrack only, our table with P policies, the Calico-style iptables peer with the same
//!   policies; client and server pinned to their own CPU at real-time priority
//!   (`AGENT_BENCH_RT=0`: normal). `AGENT_BENCH_NODES=1,2` (default) chooses the topologies,
//!   `AGENT_BENCH_ROUNDS` (5) the rounds, `AGENT_BENCH_METRICS=crr,udp,stream,rr` the metrics.
//! - **A new flow's path** (`AGENT_BENCH_ONLY=path`, at the first of the scales): variants of
//!   our table (the dispatch maps only, without flow log rules, without counters) against
//!   conntrack only, and each kind of rule repeated 100 times after conntrack, to say what each
//!   lookup costs.
//! - **Agent footprint** (B7): resident memory and idle CPU of `gingham agent` on SQLite.
//!
//! The cluster model: 100 namespaces, 1,000 endpoints on 10 nodes (100 on the measured node, one
//! per namespace), P namespaced policies (each selects one app label in its namespace and allows
//! TCP from a role selector), so about a tenth of the policies select local endpoints.
//!
//! Run (root): `cargo bench -p gingham --bench agent` or `scripts/bench`.
//! `AGENT_BENCH_SCALES=100,1000,10000` (default) chooses P; `AGENT_BENCH_SPLIT=1` prints how
//! each update's time splits into calculation, rendering, and diff plus nft;
//! `AGENT_BENCH_PATHS=nft,nft-text` picks the dataplanes of the latency table (all by default);
//! `AGENT_BENCH_ONLY=footprint` (or `latency`, `packet`) runs one part;
//! `AGENT_BENCH_ONLY=ours` times only our part of each latency operation (calculation,
//! rendering, diff and netlink encoding) without a kernel and without root, for profiling;
//! `AGENT_BENCH_HEAPTRACK=DIR` records the footprint agents' heaps with heaptrack.

#[path = "../../calc/tests/support/bench_model.rs"]
mod bench_model;
#[path = "support/packets.rs"]
mod packets;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench_model::{ENDPOINTS, NAMESPACES, endpoint, model_endpoint, policy};
use gingham_calc::incremental::{Calculator, Update};
use gingham_calc::program::NodeProgram;
use gingham_dataplane::Table;
use gingham_dataplane::iptables::{Flavour, IptBackend, IptProgrammer, Iptables, render_iptables};
use gingham_dataplane::render::CONNTRACK;
use gingham_dataplane::table::Rule;
use gingham_dataplane::{Backend, Dataplane, IptDataplane, Nft, NftDataplane, Settings, render};
use gingham_model::Resource;
use gingham_net::NetnsRef;
use gingham_testkit::netns::{TestNetns, TwoPods as Pods};
use packets::{Killed, median};

const NODE: &str = "node0";

fn load(text: &str) -> Vec<Resource> {
    gingham_model::load_resources("bench.yaml", text).expect("valid generated input")
}

/// Profiles, endpoints and `p` policies.
fn model(p: usize) -> Vec<Resource> {
    load(&bench_model::model_text(p))
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The agent's path for one update: calculate, render what changed, install the difference.
/// Returns the commands sent, the time spent before the kernel (calculation, rendering), the
/// backend's transaction alone (encoding and the kernel's commit), and whether the
/// transaction went as a netlink batch.
fn program(
    calc: &mut Calculator,
    dp: &mut dyn Dataplane,
    update: Update,
) -> (usize, Duration, Duration, bool) {
    let t = Instant::now();
    let changes = calc.apply(update);
    let t1 = t.elapsed();
    let applied = dp.update(&changes).expect("the kernel accepts the update");
    let spent = dp.last_render();
    let before_kernel = t1 + spent;
    if std::env::var("AGENT_BENCH_SPLIT").is_ok() {
        eprintln!(
            "calculate {:?} render {:?} diff+kernel {:?} ({} commands, {:?})",
            t1,
            spent,
            t.elapsed().saturating_sub(before_kernel),
            applied.commands,
            applied.path
        );
    }
    (
        applied.commands,
        before_kernel,
        applied.kernel,
        applied.path == gingham_dataplane::Path::Netlink,
    )
}

/// The least a rule-adding transaction costs the kernel with `installed` in place (the caller's
/// namespace holds it): a netlink batch adding a new chain with one rule, `rule`, timed 200
/// times, each taken out again untimed; nothing jumps to the new chain. A rule holding an
/// expression the kernel validates (a verdict, a lookup, a mark set: nearly every rule we
/// write) makes it validate every rule reachable from the table's base chains at commit (each
/// chain once per hook, unless it is reached again at a greater depth), so with `accept` this
/// grows with the table whatever the renderer does. With `counter` alone nothing is
/// validated: the part of the floor that is not validation.
fn kernel_floor(installed: &Table, rule: &str) -> Samples {
    let mut plus = installed.clone();
    plus.chains.insert(
        "floor".into(),
        gingham_dataplane::table::Chain::regular(vec![Rule::new(rule, "")]),
    );
    let add = installed
        .diff(&plus)
        .expect("a diff of two tables of one shape");
    let del = plus
        .diff(installed)
        .expect("a diff of two tables of one shape");
    let mut nft = Nft::default();
    let mut s = Samples::default();
    for _ in 0..200 {
        let t = Instant::now();
        let went = nft
            .run_incremental(&add, &plus)
            .expect("the kernel takes the chain");
        s.kernel.push(t.elapsed());
        assert_eq!(
            went.path,
            gingham_dataplane::Path::Netlink,
            "the floor goes by netlink"
        );
        nft.run_incremental(&del, installed)
            .expect("the kernel drops the chain");
    }
    s
}

/// One timed update of an operation, and what puts the model back afterwards (untimed).
struct Step {
    update: Update,
    undo: Option<Update>,
}

/// The times of one operation's updates in one row of the latency table.
#[derive(Clone, Default)]
struct Samples {
    /// The whole update: calculation, rendering, diff and the kernel's commit.
    total: Vec<Duration>,
    /// The part before the kernel: calculation and rendering.
    before_kernel: Vec<Duration>,
    /// The backend's transaction alone: encoding and the kernel's commit.
    kernel: Vec<Duration>,
}

impl Samples {
    fn pair(&mut self) -> String {
        format!(
            "{} / {}",
            ms(percentile(&mut self.total, 0.5)),
            ms(percentile(&mut self.total, 0.99))
        )
    }
}

/// The four operations of the latency table, `reps` updates each.
fn operations(p: usize, reps: usize) -> Vec<(&'static str, Vec<Step>)> {
    let timed = |update| Step { update, undo: None };
    // A remote endpoint (ns50, role r10) changes role: it leaves the set of its namespace's
    // policies' sources, then joins it again.
    let relabels: Vec<Resource> = [11usize, 10]
        .iter()
        .flat_map(|&role| load(&model_endpoint(150, role)))
        .collect();
    let member = (0..reps)
        .map(|i| timed(Update::Upsert(Box::new(relabels[i % 2].clone()))))
        .collect();
    // A new local endpoint (a new pod on the node, app a0, in namespace i % 100: the model
    // puts index k in namespace k % 100 on node (k / 100) % 10), taken out again untimed, so
    // that every addition meets the model's table (not one grown by the earlier additions).
    let add_ep = (0..reps)
        .map(|i| {
            let k = ENDPOINTS * 10 + (i / 100) * 100_000 + (i % 100) * 1001;
            let r = load(&model_endpoint(k, 1)).remove(0);
            let m = r.meta();
            let undo = Update::Delete {
                kind: r.kind(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
            };
            Step {
                update: Update::Upsert(Box::new(r)),
                undo: Some(undo),
            }
        })
        .collect();
    // A policy selecting local endpoints changes its port.
    let changes: Vec<Resource> = [90u16, 80]
        .iter()
        .flat_map(|&port| load(&policy(0, port)))
        .collect();
    let change = (0..reps)
        .map(|i| timed(Update::Upsert(Box::new(changes[i % 2].clone()))))
        .collect();
    // A new policy selecting local endpoints (app a0 in ns0), then its deletion.
    let j = p.max(1) * 10;
    let extra = load(&policy(j, 99));
    let add_del = (0..reps)
        .map(|i| {
            timed(if i % 2 == 0 {
                Update::Upsert(Box::new(extra[0].clone()))
            } else {
                Update::Delete {
                    kind: gingham_model::Kind::NetworkPolicy,
                    namespace: Some(format!("ns{}", j % NAMESPACES)),
                    name: format!("pol{j}"),
                }
            })
        })
        .collect();
    vec![
        ("set member", member),
        ("add endpoint", add_ep),
        ("change policy", change),
        ("add/delete policy", add_del),
    ]
}

/// Updates per operation in the latency table (`AGENT_BENCH_REPS`): enough that p99 is a
/// 99th percentile (the 4th largest of 300), not the largest sample.
fn reps() -> usize {
    std::env::var("AGENT_BENCH_REPS")
        .ok()
        .map(|r| r.parse().expect("AGENT_BENCH_REPS: a number"))
        .unwrap_or(300)
}

/// The dataplanes the latency table compares: ours (nft: incremental changes as nf_tables
/// netlink batches, the rest through in-process libnftables; nft-text: every transaction
/// through libnftables, the baseline of the netlink path) and the
/// Calico-style iptables peer (`ipset restore` and `iptables-nft-restore`, or
/// `iptables-legacy-restore`, spawned per update as felix does), each in the calling thread's
/// namespace.
const PATHS: [&str; 4] = ["nft", "nft-text", "iptables", "legacy"];

fn flavour(path: &str) -> Flavour {
    if path == "legacy" {
        Flavour::Legacy
    } else {
        Flavour::Nft
    }
}

/// The dataplane of `path`; ours keys its workload dispatch maps by the indexes of `links` (as
/// the agent does).
fn dataplane(path: &str, links: &std::collections::BTreeMap<String, u32>) -> Box<dyn Dataplane> {
    // AGENT_BENCH_KEYS=name: dispatch maps keyed by name alone (the interfaces still exist).
    let by_name = std::env::var("AGENT_BENCH_KEYS").is_ok_and(|v| v == "name");
    let links = (!by_name).then(|| links.clone());
    match path {
        "nft" => Box::new(NftDataplane::with_links(Nft::default(), links)),
        "nft-text" => Box::new(NftDataplane::with_links(Nft::default().text_only(), links)),
        _ => Box::new(IptDataplane::new(Iptables::current(flavour(path)))),
    }
}

/// The whole state rewritten at once: nft's table replaced in one transaction; for iptables,
/// felix's resync (read the kernel, restore every chain and set).
fn replace_whole(path: &str, state: &NodeProgram, nft: &mut Nft) -> Duration {
    let t = Instant::now();
    match path {
        "nft" | "nft-text" => {
            let script = render(state, &Settings::default())
                .table
                .replace_script()
                .text;
            nft.run(&script).unwrap();
        }
        _ => {
            let table = render_iptables(state, &Settings::default());
            IptProgrammer::new(Iptables::current(flavour(path)))
                .sync(&table)
                .unwrap();
        }
    }
    t.elapsed()
}

/// What reading the hit counters costs with the table installed in this namespace: the
/// agent's scrape (nft's JSON listing, then every rule's counter mapped back to its policy
/// rule) and the listing alone, p50 of 10 each; and how many policy rules were counted.
fn scrape_cost(calc: &Calculator) -> (Duration, Duration, usize) {
    let renderer = gingham_dataplane::Renderer::new(calc.state(), Settings::default());
    let mut nft = Nft::default();
    let (mut scrape, mut listing) = (Vec::new(), Vec::new());
    let mut rules = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let json = nft.read().unwrap().expect("the table is installed");
        listing.push(t.elapsed());
        let hits = gingham_dataplane::rule_hits(&json, renderer.origins()).unwrap();
        scrape.push(t.elapsed());
        rules = hits.len();
    }
    (
        percentile(&mut scrape, 0.5),
        percentile(&mut listing, 0.5),
        rules,
    )
}

fn latency(scales: &[usize]) {
    println!("\n## Programming latency (B3): update -> rules committed in the kernel, ms");
    // The agent runs in its node's namespace and talks to the kernel in-process (libnftables);
    // this thread enters each test namespace the same way.
    let floor_ns = TestNetns::new("bfl");
    gingham_net::in_netns_same_thread(&NetnsRef::named(floor_ns.name()), || {
        for (what, mut nft) in [
            ("spawning nft", Nft::spawning()),
            ("libnftables, in-process", Nft::default()),
        ] {
            nft.run("add table inet gingham\n").unwrap();
            let mut floors: Vec<Duration> = (0..30)
                .map(|_| {
                    let t = Instant::now();
                    nft.run("add table inet gingham\n").unwrap();
                    t.elapsed()
                })
                .collect();
            println!(
                "floor (an empty nft transaction, {what}): p50 {} p99 {}",
                ms(percentile(&mut floors, 0.5)),
                ms(percentile(&mut floors, 0.99))
            );
        }
        for flavour in [Flavour::Nft, Flavour::Legacy] {
            let mut ipt = Iptables::current(flavour);
            let mut floors: Vec<Duration> = (0..30)
                .map(|_| {
                    let t = Instant::now();
                    ipt.restore("*filter\nCOMMIT\n").unwrap();
                    t.elapsed()
                })
                .collect();
            println!(
                "floor (an empty {} --noflush): p50 {} p99 {}",
                flavour.restore_tool(),
                ms(percentile(&mut floors, 0.5)),
                ms(percentile(&mut floors, 0.99))
            );
        }
    })
    .unwrap();
    println!(
        "{:>7} {:>8} {:>7} {:>7} | {:>22} | {:>22} | {:>22} | {:>22} | {:>10} | {:>14} | {:>8} | {:>8} | {:>9}",
        "P",
        "path",
        "chains",
        "members",
        "set member p50/p99",
        "add endpoint p50/p99",
        "change policy p50/p99",
        "add+del policy p50/p99",
        "cold start",
        "replace p50",
        "ratio",
        "calc p50",
        "netlink"
    );
    let reps = reps();
    // AGENT_BENCH_PATHS=nft,nft-text picks the dataplanes (all by default).
    let paths: Vec<&str> = match std::env::var("AGENT_BENCH_PATHS") {
        Ok(v) => PATHS
            .iter()
            .copied()
            .filter(|p| v.split(',').any(|x| x.trim() == *p))
            .collect(),
        Err(_) => PATHS.to_vec(),
    };
    let mut scrapes = Vec::new();
    // (P, the floor with a verdict (validated), the floor with a counter alone (not validated))
    let mut floors: Vec<(usize, Samples, Samples)> = Vec::new();
    // Every row's samples, for the spread and growth tables: (P, path, per operation the
    // update's whole time and the part before the kernel).
    let mut rows: Vec<(usize, &str, Vec<Samples>)> = Vec::new();
    let names: Vec<&str> = operations(1, 0).iter().map(|(n, _)| *n).collect();
    for &p in scales {
        let resources = model(p);
        // The node's workloads' interfaces (and those of the workloads the operations add),
        // so that the dispatch maps are keyed by index as the agent's are.
        let mut scratch = Calculator::new(NODE);
        scratch.load_all(resources.clone());
        for (_, steps) in operations(p, reps) {
            for step in steps {
                scratch.apply(step.update);
            }
        }
        let interfaces: Vec<String> = scratch
            .state()
            .endpoints
            .values()
            .filter(|e| !e.host)
            .map(|e| e.interface.clone())
            .collect();
        for &path in &paths {
            let ns = TestNetns::new("blat");
            make_interfaces(ns.name(), interfaces.iter().map(String::as_str));
            let links = node_links(&ns);
            gingham_net::in_netns_same_thread(&NetnsRef::named(ns.name()), || {
                // Cold start: everything loaded, the rules installed into an empty kernel.
                let t = Instant::now();
                let mut calc = Calculator::new(NODE);
                calc.load_all(resources.clone());
                let mut dp = dataplane(path, &links);
                dp.install(calc.state(), Settings::default())
                    .expect("the kernel accepts the rules");
                let cold = t.elapsed();
                let (chains, _, members) = dp.counts();
                if let Some(dir) = std::env::var_os("AGENT_BENCH_DUMP") {
                    // For experiments: the latency model's table at this P, as an nft script.
                    let path = std::path::Path::new(&dir).join(format!("b3-table-{p}.nft"));
                    let script = render(&calc.state(), &Settings::default()).script();
                    std::fs::write(path, script).unwrap();
                }

                let mut in_calc = Vec::new();
                let (mut by_netlink, mut sent) = (0, 0);
                let mut samples: Vec<Samples> = operations(p, reps)
                    .into_iter()
                    .map(|(what, steps)| {
                        let mut s = Samples::default();
                        for (i, step) in steps.into_iter().enumerate() {
                            let t = Instant::now();
                            let (commands, calc_time, kernel, netlink) =
                                program(&mut calc, dp.as_mut(), step.update);
                            let took = t.elapsed();
                            by_netlink += usize::from(netlink);
                            sent += 1;
                            in_calc.push(calc_time);
                            s.total.push(took);
                            s.before_kernel.push(calc_time);
                            s.kernel.push(kernel);
                            assert!(commands > 0, "{path}: {what} #{i} changed nothing");
                            if let Some(undo) = step.undo {
                                program(&mut calc, dp.as_mut(), undo);
                            }
                        }
                        s
                    })
                    .collect();
                if path == "nft" {
                    scrapes.push((p, scrape_cost(&calc)));
                    let table = render(&calc.state(), &Settings::default()).table;
                    floors.push((
                        p,
                        kernel_floor(&table, "accept"),
                        kernel_floor(&table, "counter"),
                    ));
                }
                let mut nft = Nft::default();
                let mut replace: Vec<Duration> = (0..5)
                    .map(|_| replace_whole(path, &calc.state(), &mut nft))
                    .collect();
                let replace50 = percentile(&mut replace, 0.5);
                let calc50 = percentile(&mut in_calc, 0.5);
                let inc50 = percentile(&mut samples[2].total, 0.5);
                println!(
                    "{:>7} {:>8} {:>7} {:>7} | {:>22} | {:>22} | {:>22} | {:>22} | {:>10} | {:>14} | {:>7.1}x | {:>8} | {:>9}",
                    p,
                    path,
                    chains,
                    members,
                    samples[0].pair(),
                    samples[1].pair(),
                    samples[2].pair(),
                    samples[3].pair(),
                    ms(cold),
                    ms(replace50),
                    replace50.as_secs_f64() / inc50.as_secs_f64(),
                    ms(calc50),
                    format!("{by_netlink}/{sent}")
                );
                rows.push((p, path, samples));
            })
            .unwrap();
        }
    }
    println!(
        "\nSpread ({reps} updates per operation): p50 / p90 / p99 / max of the whole update, \
         p50 / p99 of the part before the kernel (calculation and rendering), and p50 / p99 \
         of the backend's transaction alone (encoding and the kernel's commit), ms"
    );
    println!(
        "{:>7} {:>8} {:>18} | {:>29} | {:>13} | {:>13}",
        "P", "path", "operation", "p50 / p90 / p99 / max", "ours p50/p99", "kernel p50/p99"
    );
    for (p, path, samples) in &mut rows {
        for (name, s) in names.iter().zip(samples.iter_mut()) {
            let q = |v: &mut Vec<Duration>, x| ms(percentile(v, x));
            println!(
                "{:>7} {:>8} {:>18} | {:>29} | {:>13} | {:>13}",
                p,
                path,
                name,
                format!(
                    "{} / {} / {} / {}",
                    q(&mut s.total, 0.5),
                    q(&mut s.total, 0.9),
                    q(&mut s.total, 0.99),
                    q(&mut s.total, 1.0)
                ),
                format!(
                    "{} / {}",
                    q(&mut s.before_kernel, 0.5),
                    q(&mut s.before_kernel, 0.99)
                ),
                format!("{} / {}", q(&mut s.kernel, 0.5), q(&mut s.kernel, 0.99)),
            );
        }
    }
    // Growth, same run: each path's figure at the largest P over the smallest.
    if let (Some(&lo), Some(&hi)) = (scales.iter().min(), scales.iter().max())
        && lo != hi
    {
        println!(
            "\nGrowth from P={lo} to P={hi} (same run; figure at {hi} / figure at {lo}): \
             p99 (p50) of the whole update; ours: p99 (p50) of the part before the kernel; \
             kernel: p99 (p50) of the backend's transaction alone"
        );
        print!("{:>18}", "operation");
        for path in &paths {
            print!(
                " | {:>17} {:>17} {:>17}",
                format!("{path} p99 (p50)"),
                "ours p99 (p50)",
                "kernel p99 (p50)"
            );
        }
        println!();
        for (o, name) in names.iter().enumerate() {
            print!("{name:>18}");
            for path in &paths {
                let mut at = |p: usize| {
                    rows.iter_mut()
                        .find(|(q, r, _)| *q == p && r == path)
                        .map(|(_, _, s)| s[o].clone())
                };
                let (Some(mut a), Some(mut b)) = (at(lo), at(hi)) else {
                    continue;
                };
                let g = |a: &mut Vec<Duration>, b: &mut Vec<Duration>, x| {
                    percentile(b, x).as_secs_f64() / percentile(a, x).as_secs_f64()
                };
                let mut both = |f: fn(&mut Samples) -> &mut Vec<Duration>| {
                    format!(
                        "{:.2}x ({:.2}x)",
                        g(f(&mut a), f(&mut b), 0.99),
                        g(f(&mut a), f(&mut b), 0.5)
                    )
                };
                print!(
                    " | {:>17} {:>17} {:>17}",
                    both(|s| &mut s.total),
                    both(|s| &mut s.before_kernel),
                    both(|s| &mut s.kernel)
                );
            }
            println!();
        }
    }
    if let [(lo, first, first_bare), .., (hi, last, last_bare)] = floors.as_mut_slice() {
        for (what, a, b) in [
            (
                "one `accept` rule (which makes the kernel validate the whole table)",
                &mut first.kernel,
                &mut last.kernel,
            ),
            (
                "one `counter` rule (nothing to validate)",
                &mut first_bare.kernel,
                &mut last_bare.kernel,
            ),
        ] {
            println!(
                "the kernel's floor: a netlink transaction adding one chain with {what} takes \
                 p50 {} / p99 {} ms at P={lo} and {} / {} ms at P={hi}: {:.2}x ({:.2}x at p50), \
                 before any work of ours",
                ms(percentile(a, 0.5)),
                ms(percentile(a, 0.99)),
                ms(percentile(b, 0.5)),
                ms(percentile(b, 0.99)),
                percentile(b, 0.99).as_secs_f64() / percentile(a, 0.99).as_secs_f64(),
                percentile(b, 0.5).as_secs_f64() / percentile(a, 0.5).as_secs_f64(),
            );
        }
    }
    for (p, (scrape, listing, rules)) in &scrapes {
        println!(
            "hit counters at P={p}: a /metrics scrape reads {rules} rules' counters in {} ms p50, of which {} ms is nft's JSON listing alone ({:.2}x)",
            ms(*scrape),
            ms(*listing),
            scrape.as_secs_f64() / listing.as_secs_f64()
        );
    }
    println!("(path: nft = our table as the agent renders it (dispatch maps keyed by the indexes");
    println!(
        " of an interface made for each of the node's workloads, backed by maps keyed by name),"
    );
    println!(" incremental changes as nf_tables netlink batches;");
    println!(" nft-text = the same with every transaction an nft script through libnftables;");
    println!(" netlink: updates of the row that went as netlink batches;");
    println!(" iptables = the Calico-style peer, felix's chains and ipsets");
    println!(" through iptables-nft-restore --noflush of the changed chains and ipset restore;");
    println!(" legacy = the same through iptables-legacy-restore;");
    println!(" ratio: whole-state rewrite / incremental policy change, p50; calc: the part of");
    println!(" every incremental operation spent before the kernel: calculation and rendering)");
}

const CLIENT_IP: &str = "10.99.0.1";
const SERVER_IP: &str = "10.99.0.2";

/// CPUs the helpers are pinned to (performance.md: client and server on cpu0 and cpu1), so
/// that every run divides the machine the same way.
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";

/// What one per-packet figure measures (each one helper run of [`PACKET_SECS`]).
#[derive(Clone, Copy, PartialEq)]
enum Metric {
    /// New TCP connections per second (every connection's first packet is NEW).
    Crr,
    /// One-way UDP packets through the nodes per second of the sender's CPU (every packet is
    /// NEW: no reply is ever seen).
    Udp,
    /// One TCP stream's throughput (established packets only).
    Stream,
    /// Transactions per second over one TCP connection (established packets only).
    Rr,
}

impl Metric {
    /// The metric's name in `AGENT_BENCH_METRICS`.
    fn key(self) -> &'static str {
        match self {
            Metric::Crr => "crr",
            Metric::Udp => "udp",
            Metric::Stream => "stream",
            Metric::Rr => "rr",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Metric::Crr => "TCP_CRR conn/s",
            Metric::Udp => "UDP pkt/s",
            Metric::Stream => "TCP_STREAM bit/s",
            Metric::Rr => "TCP_RR trans/s",
        }
    }
}

const ALL_METRICS: [Metric; 4] = [Metric::Crr, Metric::Udp, Metric::Stream, Metric::Rr];

/// The metrics of the per-packet table: `AGENT_BENCH_METRICS=crr,udp,stream,rr` (all by
/// default).
fn chosen_metrics() -> Vec<Metric> {
    let Ok(v) = std::env::var("AGENT_BENCH_METRICS") else {
        return ALL_METRICS.to_vec();
    };
    let chosen: Vec<Metric> = ALL_METRICS
        .into_iter()
        .filter(|m| v.split(',').any(|x| x.trim() == m.key()))
        .collect();
    assert!(
        !chosen.is_empty(),
        "AGENT_BENCH_METRICS: some of crr, udp, stream, rr, not {v}"
    );
    chosen
}
const NEW_FLOW_METRICS: [Metric; 2] = [Metric::Crr, Metric::Udp];
const PACKET_SECS: &str = "1";

/// The servers the per-packet figures use, running in the server pod.
/// (Held for their lifetime: dropping kills them.)
struct Servers(#[allow(dead_code)] Vec<Killed>);

impl Servers {
    fn start(pods: &Pods) -> Servers {
        let s = ["tcp-server", "stream-server", "rr-server"]
            .iter()
            .map(|m| packets::spawn(pods.server.name(), Some(SERVER_CPU), &[m]))
            .collect();
        Servers(s)
    }
}

/// One figure between the pods.
fn measure(p: &Pods, metric: Metric) -> f64 {
    let client = |args: &[&str]| packets::run(p.client.name(), Some(CLIENT_CPU), args);
    match metric {
        Metric::Crr => client(&["crr", SERVER_IP, PACKET_SECS]),
        Metric::Stream => client(&["stream", SERVER_IP, PACKET_SECS]),
        Metric::Rr => client(&["rr", SERVER_IP, PACKET_SECS]),
        Metric::Udp => udp_rate(p),
    }
}

/// One-way UDP, every packet NEW: packets that reached the server pod per second of the
/// sender's CPU time. A send carries its packet through every node to the server's socket in
/// the sender's own context (veth hands it to the per-CPU backlog, which the send's softirq
/// drains before returning), so the sender's CPU time per packet is the path's cost (plus the
/// send itself, the same in every column), and its CPU time is what it got of the CPU, not
/// the wall clock shared with whatever else runs. The server polls a non-blocking socket on
/// its own CPU and never sleeps: no packet pays for waking it (measured: 18% of the sender's
/// CPU when it sleeps in `recv`, and a share that grows as the path gets slower, since a slow
/// sender finds the server asleep more often). `AGENT_BENCH_UDP=sent`: the earlier figure, for
/// comparison (the sender's count per wall-clock second, the server sleeping in `recv`).
fn udp_rate(p: &Pods) -> f64 {
    let sent_only = std::env::var("AGENT_BENCH_UDP").is_ok_and(|v| v == "sent");
    let mode = if sent_only { "block" } else { "poll" };
    let _server = packets::spawn(p.server.name(), Some(SERVER_CPU), &["udp-server", mode]);
    let arrived = || -> f64 {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", Pods::POD_IF);
        p.server.exec_ok(&["cat", &path]).trim().parse().unwrap()
    };
    let before = arrived();
    let f = packets::run_figures(
        p.client.name(),
        Some(CLIENT_CPU),
        &["udp", SERVER_IP, PACKET_SECS],
    );
    let arrived = arrived() - before;
    let (sent, cpu_secs) = (f[0], f[1] / 1e9);
    let secs: f64 = PACKET_SECS.parse().unwrap();
    if sent_only {
        return sent / secs;
    }
    if arrived < 0.99 * sent {
        eprintln!("udp: {arrived} of {sent} packets reached the server pod");
    }
    if cpu_secs < 0.5 * secs {
        // The sender spins on send(): unless the kernel charges softirq time apart
        // (CONFIG_IRQ_TIME_ACCOUNTING), its thread is on the CPU nearly all the time.
        eprintln!(
            "udp: the sender's CPU time is {cpu_secs:.2} s of {secs} s: is softirq time charged apart?"
        );
    }
    arrived / cpu_secs
}

/// The rules of one column of a per-packet table, installed on every node of the pods before
/// its runs and removed after them.
enum Rules {
    /// No table at all: no netfilter hook, no conntrack.
    Bare,
    /// An nft script, and the one that removes what it made.
    Nft { install: String, remove: String },
    /// An nft script per node (in the order of [`Pods::nodes`]), and the removal.
    NftPerNode {
        install: Vec<String>,
        remove: String,
    },
    /// The Calico-style iptables peer (installed by a fresh programmer, as felix at start;
    /// removed down to nothing: iptables-nft's `ip filter` table deleted, the ipsets destroyed).
    Iptables(gingham_dataplane::iptables::IptTable),
}

/// Conntrack alone (what any stateful firewall pays): one rule accepting established flows.
const CT_ONLY: &str = "table inet ctonly {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  ct state established,related accept\n }\n}\n";

impl Rules {
    fn ct_only() -> Rules {
        Rules::Nft {
            install: CT_ONLY.into(),
            remove: "delete table inet ctonly\n".into(),
        }
    }

    /// Our table with the workload dispatch maps keyed by interface name.
    fn ours(table: &Table) -> Rules {
        Rules::Nft {
            install: table.replace_script().text,
            remove: format!("delete table inet {}\n", gingham_dataplane::TABLE),
        }
    }

    /// Our table as the agent installs it: the workload dispatch maps keyed by each node's
    /// interface indexes (and backed by maps keyed by name).
    fn ours_by_index(state: &NodeProgram, pods: &Pods) -> Rules {
        let install = pods
            .nodes()
            .iter()
            .map(|node| {
                let links = node_links(node);
                let r = gingham_dataplane::Renderer::with_links(
                    state.clone(),
                    Settings::default(),
                    Some(links),
                );
                r.table().replace_script().text
            })
            .collect();
        Rules::NftPerNode {
            install,
            remove: format!("delete table inet {}\n", gingham_dataplane::TABLE),
        }
    }

    fn install(&self, pods: &Pods) {
        for (i, node) in pods.nodes().into_iter().enumerate() {
            match self {
                Rules::Bare => {}
                Rules::Nft { install, .. } => Nft::in_netns(node.name())
                    .run(install)
                    .expect("nft accepts the table"),
                Rules::NftPerNode { install, .. } => Nft::in_netns(node.name())
                    .run(&install[i])
                    .expect("nft accepts the table"),
                Rules::Iptables(table) => {
                    IptProgrammer::new(Iptables::in_netns(node.name(), Flavour::Nft))
                        .sync(table)
                        .expect("iptables accepts the rules");
                }
            }
        }
    }

    fn remove(&self, pods: &Pods) {
        for node in pods.nodes() {
            match self {
                Rules::Bare => {}
                Rules::Nft { remove, .. } | Rules::NftPerNode { remove, .. } => {
                    Nft::in_netns(node.name())
                        .run(remove)
                        .expect("nft removes the table")
                }
                Rules::Iptables(table) => {
                    Nft::in_netns(node.name())
                        .run("delete table ip filter\n")
                        .expect("the iptables-nft table goes");
                    let (_, destroy) = gingham_dataplane::iptables::removal(table);
                    Iptables::in_netns(node.name(), Flavour::Nft)
                        .ipset(&destroy)
                        .expect("the ipsets go");
                }
            }
        }
    }
}

/// A node's interfaces, name to index (what the agent gives the renderer).
fn node_links(node: &TestNetns) -> std::collections::BTreeMap<String, u32> {
    gingham_net::Netlink::open(&NetnsRef::named(node.name()))
        .and_then(|nl| nl.interfaces())
        .expect("the node's interfaces")
        .into_iter()
        .map(|i| (i.name, i.index))
        .collect()
}

/// An interface in every node for each of the model's local workloads other than the pods, so
/// that an index-keyed dispatch map holds as many elements as a name-keyed one.
fn model_interfaces(state: &NodeProgram, pods: &Pods) {
    for node in pods.nodes() {
        let others = state.endpoints.values().filter(|e| {
            !e.host && e.interface != Pods::CLIENT_IF && e.interface != Pods::SERVER_IF
        });
        make_interfaces(node.name(), others.map(|e| e.interface.as_str()));
    }
}

/// An interface named each of `names` in the namespace `netns`: a veth each (this kernel has
/// no dummy interfaces), the peers named `x<n>`.
fn make_interfaces<'a>(netns: &str, names: impl Iterator<Item = &'a str>) {
    use std::io::Write;
    let mut batch = String::new();
    for (n, name) in names.enumerate() {
        batch.push_str(&format!("link add {name} type veth peer name x{n}\n"));
    }
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(batch.as_bytes())
        .expect("ip reads the batch");
    assert!(
        child.wait().expect("ip").success(),
        "the model's interfaces"
    );
}

fn rounds() -> usize {
    std::env::var("AGENT_BENCH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("AGENT_BENCH_ROUNDS: a number"))
        .unwrap_or(5)
}

/// Paired rounds: every round measures every column (in an order that rotates from round to
/// round), so that each column's figures can be divided by the others' of the same round and
/// the machine's drift cancels. `figures[metric][column][round]`.
fn paired_rounds(
    pods: &Pods,
    columns: &[(String, Rules)],
    metrics: &[Metric],
) -> Vec<Vec<Vec<f64>>> {
    let rounds = rounds();
    let mut figures = vec![vec![vec![0.0; rounds]; columns.len()]; metrics.len()];
    for round in 0..rounds {
        for k in 0..columns.len() {
            let c = (k + round) % columns.len();
            let rules = &columns[c].1;
            rules.install(pods);
            for (per_metric, &metric) in figures.iter_mut().zip(metrics) {
                per_metric[c][round] = measure(pods, metric);
            }
            rules.remove(pods);
        }
    }
    figures
}

/// Median of the per-round ratios `a / b`, with their spread (min-max).
fn ratio(a: &[f64], b: &[f64]) -> String {
    let r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.3} [{lo:.2}-{hi:.2}]", median(r))
}

fn figure(v: f64) -> String {
    if v >= 1e8 {
        format!("{:.2}G", v / 1e9)
    } else {
        format!("{v:.0}")
    }
}

/// Prints a table of paired rounds: each column's median figure, then the listed ratios.
fn print_rounds(
    columns: &[(String, Rules)],
    metrics: &[Metric],
    figures: &[Vec<Vec<f64>>],
    ratios: &[(usize, usize)],
) {
    let mut head = format!("{:>17} |", "");
    for (label, _) in columns {
        head.push_str(&format!(" {label:>10}"));
    }
    head.push_str(" |");
    for (a, b) in ratios {
        head.push_str(&format!(
            " {:>22}",
            format!("{}/{}", columns[*a].0, columns[*b].0)
        ));
    }
    println!("{head}");
    for (m, metric) in metrics.iter().enumerate() {
        let mut line = format!("{:>17} |", metric.name());
        for per_column in &figures[m] {
            line.push_str(&format!(" {:>10}", figure(median(per_column.clone()))));
        }
        line.push_str(" |");
        for (a, b) in ratios {
            line.push_str(&format!(" {:>22}", ratio(&figures[m][*a], &figures[m][*b])));
        }
        println!("{line}");
    }
}

/// The two pods (local to the node, in ns0: the server has app a0, selected by the model's
/// policies for that app in ns0) and one more policy, ordered last, that lets the client in.
fn pods_yaml(p: usize) -> Vec<Resource> {
    let mut text = endpoint(
        ENDPOINTS * 20,
        "app: a0, role: client",
        Pods::CLIENT_IF,
        CLIENT_IP,
    );
    text.push_str(&endpoint(
        ENDPOINTS * 21,
        "app: a0",
        Pods::SERVER_IF,
        SERVER_IP,
    ));
    text.push_str(&format!(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: allow-client, namespace: ns0}}
spec:
  order: {}
  selector: app == 'a0'
  ingress:
  - action: Allow
    source: {{selector: role == 'client'}}
---
",
        p + 1
    ));
    load(&text)
}

/// The node's programs with `p` policies and the two pods; how many policies select the server.
fn pods_state(p: usize) -> (NodeProgram, usize) {
    let mut resources = model(p);
    resources.extend(pods_yaml(p));
    let mut calc = Calculator::new(NODE);
    calc.load_all(resources);
    let state = calc.state();
    let selecting = state
        .endpoints
        .values()
        .find(|e| e.interface == Pods::SERVER_IF)
        .map(|e| {
            e.ingress
                .tiers
                .iter()
                .map(|t| t.policies.len())
                .sum::<usize>()
        })
        .unwrap_or(0);
    (state, selecting)
}

/// The per-packet helpers run at real-time priority unless `AGENT_BENCH_RT=0`: the builds
/// and services sharing the machine then disturb the figures less.
fn realtime() {
    let off = std::env::var("AGENT_BENCH_RT").is_ok_and(|v| v == "0");
    packets::set_realtime(if off { None } else { Some(10) });
}

fn per_packet(scales: &[usize]) {
    gingham_testkit::require_tool("taskset");
    gingham_testkit::require_tool("chrt");
    realtime();
    println!("\n## Per-packet cost (B1): two pods, through the nodes' tables");
    println!(
        "(client pinned to cpu{CLIENT_CPU}, server to cpu{SERVER_CPU}; {} paired rounds: every round measures every",
        rounds()
    );
    println!(
        " column; figures: medians; ratios: median of the per-round ratios [min-max]. Columns:"
    );
    println!(
        " none = no table at all; ct = conntrack only (one rule accepting established flows);"
    );
    println!(
        " ours = the node's table as the agent renders it: dispatch maps keyed by each node's"
    );
    println!(" interface indexes, backed by maps keyed by name (an interface for each of the");
    println!(" model's local workloads); ipt = the Calico-style iptables-nft peer, same policies;");
    println!(" by-name = ours with the dispatch maps keyed by interface name alone.");
    println!(
        " Two nodes: the same programs on both, joined by a veth; CRR and UDP cross both tables."
    );
    println!(
        " UDP: packets that reached the server pod per second of the sender's CPU, which carries"
    );
    println!(" each packet through the nodes; the server polls, so no packet pays for waking it.)");
    let metrics = chosen_metrics();
    let topologies = std::env::var("AGENT_BENCH_NODES").unwrap_or_else(|_| "1,2".into());
    for nodes in topologies.split(',') {
        let pods = match nodes.trim() {
            "1" => Pods::new("b", CLIENT_IP, SERVER_IP),
            "2" => Pods::across_nodes("b2", CLIENT_IP, SERVER_IP),
            other => panic!("AGENT_BENCH_NODES: 1 or 2, not {other}"),
        };
        let _servers = Servers::start(&pods);
        model_interfaces(&pods_state(0).0, &pods);
        for &p in [0].iter().chain(scales) {
            let (state, selecting) = pods_state(p);
            let rendered = render(&state, &Settings::default());
            if let Some(dir) = std::env::var_os("AGENT_BENCH_DUMP") {
                // For experiments: the table of each row, as an nft script.
                let path = std::path::Path::new(&dir).join(format!("b1-table-{p}.nft"));
                std::fs::write(path, rendered.script()).unwrap();
            }
            let ipt = render_iptables(&state, &Settings::default());
            println!(
                "\n{nodes} node(s), P={p}: ours {} chains, iptables {} rules; policies selecting the server: {selecting}",
                rendered.chains,
                ipt.rule_count()
            );
            let columns = vec![
                ("none".to_owned(), Rules::Bare),
                ("ct".to_owned(), Rules::ct_only()),
                ("ours".to_owned(), Rules::ours_by_index(&state, &pods)),
                ("ipt".to_owned(), Rules::Iptables(ipt)),
                ("by-name".to_owned(), Rules::ours(&rendered.table)),
            ];
            let figures = paired_rounds(&pods, &columns, &metrics);
            print_rounds(
                &columns,
                &metrics,
                &figures,
                &[(2, 1), (2, 3), (2, 4), (1, 0), (2, 0), (3, 0)],
            );
        }
    }
}

/// Our table with every rule's text passed through `f` (rules it maps to `None` left out).
fn edit_rules(table: &Table, f: impl Fn(&str) -> Option<String>) -> Table {
    let mut out = table.clone();
    for chain in out.chains.values_mut() {
        chain.rules = chain
            .rules
            .iter()
            .filter_map(|r| f(&r.text).map(|t| Rule::new(t, r.note.clone())))
            .collect();
    }
    out
}

/// Our table with the pods' dispatch map elements made verdicts (egress `continue`, ingress
/// `accept`): what the new flow pays when no policy selects the pods and their profiles allow
/// everything (the dispatch maps, nothing else).
fn dispatch_only(table: &Table) -> Table {
    let mut out = table.clone();
    for set in out.sets.values_mut() {
        set.elements = std::mem::take(&mut set.elements)
            .into_iter()
            .map(|e| {
                if e.contains(": jump w") {
                    format!("{}: continue", e.split(": ").next().unwrap())
                } else if e.contains(": goto w") {
                    format!("{}: accept", e.split(": ").next().unwrap())
                } else {
                    e
                }
            })
            .collect();
    }
    out
}

/// A table `name` with conntrack first (`ct`), then `n` copies of `rule` in the forward hook
/// (after `defs`: sets and chains the rule names).
fn ct_plus(name: &str, ct: &str, defs: &str, rule: &str, n: usize) -> Rules {
    let extra: String = (0..n).map(|_| format!("  {rule}\n")).collect();
    Rules::Nft {
        install: format!(
            "table inet {name} {{\n{defs} chain forward {{\n  type filter hook forward priority 0; policy accept;\n  {ct}\n{extra} }}\n}}\n"
        ),
        remove: format!("delete table inet {name}\n"),
    }
}

const CT_RULE: &str = "ct state established,related accept";

/// One kind of rule a new flow may meet, repeated [`AMPLIFY`] times after conntrack so that
/// its own cost stands out of the noise: (label, definitions, rule). None of them matches or
/// ends the walk.
const AMPLIFIED: [(&str, &str, &str); 13] = [
    ("ct rule", "", CT_RULE),
    ("ct invalid", "", "ct state invalid drop"),
    (
        "ct vmap",
        "",
        "ct state vmap { established : accept, related : accept, invalid : drop }",
    ),
    (
        "ifname vmap",
        " map m { type ifname : verdict; elements = { \"calibclient\" : continue, \"calibserver\" : continue, * : continue }; }\n",
        "iifname vmap @m",
    ),
    (
        "ifindex vmap",
        " map m { type iface_index : verdict; elements = { \"calibclient\" : continue, \"calibserver\" : continue }; }\n",
        "meta iif vmap @m",
    ),
    (
        "ifname vmap sized",
        " map m { type ifname : verdict; size 4096; elements = { \"calibclient\" : continue, \"calibserver\" : continue, * : continue }; }\n",
        "iifname vmap @m",
    ),
    (
        "ifindex vmap sized",
        " map m { type iface_index : verdict; size 4096; elements = { \"calibclient\" : continue, \"calibserver\" : continue }; }\n",
        "meta iif vmap @m",
    ),
    ("ifname ==", "", "iifname \"calixxx\" drop"),
    ("mark test", "", "meta mark & 0x00010000 != 0 drop"),
    ("counter", "", "counter"),
    ("mark set", "", "meta mark set meta mark & 0xfffcffff"),
    ("jump+return", " chain e {\n }\n", "jump e"),
    (
        "addr set",
        " set s { type ipv4_addr; elements = { 10.1.1.1, 10.1.1.2, 10.1.1.3 }; }\n",
        "ip saddr @s drop",
    ),
];
const AMPLIFY: usize = 100;

/// What each lookup on a new flow's path costs: variants of the table at P policies (one node),
/// measured in paired rounds against no table and conntrack only. The time a new packet
/// spends beyond conntrack only is `1/rate - 1/rate(ct)` (the sending CPU carries the
/// packet through the node in softirq), in ns per packet (UDP) or per connection (CRR).
fn path_costs(scales: &[usize]) {
    gingham_testkit::require_tool("taskset");
    gingham_testkit::require_tool("chrt");
    realtime();
    let p = scales.first().copied().unwrap_or(100);
    let (state, selecting) = pods_state(p);
    let table = render(&state, &Settings::default()).table;
    println!(
        "\n## A new flow's path, lookup by lookup (one node, P={p}, {selecting} policies select the server)"
    );
    let no_logs = |t: &str| (!t.contains(" log group ")).then(|| t.to_owned());
    let no_counters = |t: &str| Some(t.replace("counter ", ""));
    let columns = vec![
        ("none".to_owned(), Rules::Bare),
        ("ct".to_owned(), Rules::ct_only()),
        (
            "ct-ours".to_owned(),
            ct_plus("ctv", CONNTRACK[0], "", CONNTRACK[1], 1),
        ),
        ("dispatch".to_owned(), Rules::ours(&dispatch_only(&table))),
        (
            "-log-cnt".to_owned(),
            Rules::ours(&edit_rules(&edit_rules(&table, no_logs), no_counters)),
        ),
        (
            "-cnt".to_owned(),
            Rules::ours(&edit_rules(&table, no_counters)),
        ),
        ("ours".to_owned(), Rules::ours(&table)),
    ];
    println!("(columns: none; ct = conntrack only; ct-ours = our table's conntrack rules alone;");
    println!(" dispatch = our table, the pods'");
    println!(
        " dispatch elements verdicts (no policy selects them); -log-cnt = our table without flow"
    );
    println!(" log rules and counters; -cnt = without counters; ours = the table as rendered)");
    let pods = Pods::new("bp", CLIENT_IP, SERVER_IP);
    let _servers = Servers::start(&pods);
    let figures = paired_rounds(&pods, &columns, &NEW_FLOW_METRICS);
    let vs: Vec<(usize, usize)> = (2..columns.len()).map(|c| (c, 1)).collect();
    print_rounds(&columns, &NEW_FLOW_METRICS, &figures, &vs);
    for (m, metric) in NEW_FLOW_METRICS.iter().enumerate() {
        let ct = median(figures[m][1].clone());
        let mut line = format!(
            "{:>17} |",
            format!("{} ns", metric.name().split(' ').next().unwrap())
        );
        for per_column in &figures[m] {
            let v = median(per_column.clone());
            line.push_str(&format!(" {:>10.0}", 1e9 / v - 1e9 / ct));
        }
        println!("{line}");
    }
    println!("(ns rows: time per packet or connection beyond conntrack only, from the medians)");

    println!(
        "\n## One rule of each kind, on a new flow's path ({AMPLIFY} copies after conntrack only; UDP)"
    );
    let mut columns = vec![("ct".to_owned(), Rules::ct_only())];
    for (k, (label, defs, rule)) in AMPLIFIED.iter().enumerate() {
        columns.push((
            label.to_string(),
            ct_plus(&format!("amp{k}"), CT_RULE, defs, rule, AMPLIFY),
        ));
    }
    let figures = paired_rounds(&pods, &columns, &[Metric::Udp]);
    let ct = median(figures[0][0].clone());
    for (c, (label, _)) in columns.iter().enumerate().skip(1) {
        let v = median(figures[0][c].clone());
        println!(
            "{label:>12}: {:>8.0} pkt/s, {:>5.1} ns per rule",
            v,
            (1e9 / v - 1e9 / ct) / AMPLIFY as f64
        );
    }
    println!("(ns per rule: (1/rate - 1/rate(ct)) / {AMPLIFY}, from the medians; the first rule a");
    println!(
        " new packet meets after conntrack costs more than these (see the dispatch column above))"
    );
}

fn footprint(scales: &[usize]) {
    println!("\n## Agent footprint (B7): `gingham agent` on SQLite, after programming");
    println!(
        "{:>7} | {:>10} | {:>16} | {:>12} | {:>18}",
        "P", "RSS MiB", "KiB per policy", "ready in ms", "idle CPU % (5 s)"
    );
    let mut base_kib = None;
    let ticks: f64 = String::from_utf8_lossy(
        &Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap_or(100.0);
    for &p in [0].iter().chain(scales) {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("g.db");
        let store = gingham_datastore_sqlite::SqliteStore::open(&db).unwrap();
        let client = gingham_api::Client::new(std::sync::Arc::new(store));
        client
            .write_all(&model(p), gingham_api::WriteMode::Apply)
            .unwrap();
        drop(client);
        let ns = TestNetns::new("bagt");
        let t = Instant::now();
        let mut agent = Command::new("ip");
        agent.args(["netns", "exec", ns.name()]);
        // With AGENT_BENCH_HEAPTRACK=DIR, heaptrack (Debian's package) records the agent's
        // heap into DIR/heaptrack.P.raw; the agent is killed (-9) at the end, so what heaptrack
        // lists as leaked is the live heap after programming (read it with
        // `/usr/lib/heaptrack/libexec/heaptrack_interpret < RAW | gzip > X.gz` and
        // `heaptrack_print -f X.gz`). The RSS figures then include heaptrack's own.
        if let Some(dir) = std::env::var_os("AGENT_BENCH_HEAPTRACK") {
            const PRELOAD: &str = "/usr/lib/heaptrack/libheaptrack_preload.so";
            assert!(
                std::path::Path::new(PRELOAD).exists(),
                "AGENT_BENCH_HEAPTRACK: {PRELOAD} is missing (install the Debian package heaptrack)"
            );
            let raw = std::path::Path::new(&dir).join(format!("heaptrack.{p}.raw"));
            agent.args(["env", &format!("LD_PRELOAD={PRELOAD}")]);
            agent.arg(format!("DUMP_HEAPTRACK_OUTPUT={}", raw.display()));
        }
        let mut agent = agent
            .arg(env!("CARGO_BIN_EXE_gingham"))
            .args(["agent", "--node", NODE, "--health-port", "0", "--datastore"])
            .arg(format!("sqlite:{}", db.display()))
            .args(["--log", "warn", "--run-dir"])
            .arg(tmp.path().join("run"))
            .env_remove("GINGHAM_DATASTORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 1];
        let mut line = Vec::new();
        let out = agent.stdout.as_mut().unwrap();
        while out.read_exact(&mut buf).is_ok() && buf[0] != b'\n' {
            line.push(buf[0]);
        }
        let ready = t.elapsed();
        assert!(String::from_utf8_lossy(&line).contains("programmed"));
        let pid = agent.id();
        let cpu = || -> f64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let after = stat.rsplit(')').next().unwrap();
            let f: Vec<&str> = after.split_whitespace().collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks
        };
        std::thread::sleep(Duration::from_millis(500));
        let c0 = cpu();
        std::thread::sleep(Duration::from_secs(5));
        let idle = (cpu() - c0) / 5.0 * 100.0;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        let _ = agent.kill();
        let _ = agent.wait();
        // Beyond the agent with endpoints only (P=0, the first row), per policy.
        let per_policy = match base_kib {
            None => {
                base_kib = Some(rss_kib);
                "-".to_owned()
            }
            Some(base) => format!("{:.1}", (rss_kib - base) / p as f64),
        };
        println!(
            "{:>7} | {:>10.1} | {:>16} | {:>12.0} | {:>18.2}",
            p,
            rss_kib / 1024.0,
            per_policy,
            ready.as_secs_f64() * 1e3,
            idle
        );
    }
    println!("({ENDPOINTS} endpoints in every row; P=0 is the agent with endpoints only)");
}

/// A backend that encodes each incremental transaction as the netlink batch the kernel would
/// get, and drops it: the dataplane's own work (diff, encoding) without the kernel's.
/// Encodes each incremental transaction as a netlink batch and gives the rules it adds
/// handles, as the kernel's echo would (so that changes of some rules edit chains in place).
#[derive(Default)]
struct EncodeOnly {
    handles: u64,
}

impl Backend for EncodeOnly {
    fn run(&mut self, _script: &str) -> Result<(), gingham_dataplane::Error> {
        Ok(())
    }

    fn run_incremental(
        &mut self,
        script: &gingham_dataplane::Script,
        desired: &Table,
    ) -> Result<gingham_dataplane::Ran, gingham_dataplane::Error> {
        let batch = gingham_dataplane::nl::encode(&script.ops, desired)
            .expect("the bench's updates encode as netlink batches");
        std::hint::black_box(batch.bytes());
        let added = script
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op, gingham_dataplane::Op::AddRule { .. }))
            .map(|(i, _)| {
                self.handles += 1;
                (i, self.handles)
            })
            .collect();
        Ok(gingham_dataplane::Ran {
            path: gingham_dataplane::Path::Netlink,
            added,
        })
    }

    fn read(&mut self) -> Result<Option<String>, gingham_dataplane::Error> {
        Ok(None)
    }
}

/// Our own part of each update, without a kernel (`AGENT_BENCH_ONLY=ours`, no root needed):
/// calculation, rendering, and the diff with its netlink encoding, p50/p99 per operation at
/// each P and their growth from the first P to the last. For profiling (`perf record`).
fn ours_only(scales: &[usize]) {
    println!("\n## Our part of an update (no kernel): calc + render + diff/encode, ms");
    println!(
        "{:>7} {:>18} | {:>14} | {:>14} | {:>14} | {:>14}",
        "P", "operation", "calc p50/p99", "render p50/p99", "diff p50/p99", "all p50/p99"
    );
    let reps = reps();
    let mut growth: Vec<(usize, Vec<Duration>)> = Vec::new();
    for &p in scales {
        let mut calc = Calculator::new(NODE);
        calc.load_all(model(p));
        let mut dp = NftDataplane::new(EncodeOnly::default());
        dp.install(calc.state(), Settings::default()).unwrap();
        let mut p99s = Vec::new();
        for (what, steps) in operations(p, reps) {
            let (mut c, mut r, mut d, mut all) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for step in steps {
                let t = Instant::now();
                let changes = calc.apply(step.update);
                let t1 = t.elapsed();
                dp.update(&changes).unwrap();
                let whole = t.elapsed();
                c.push(t1);
                r.push(dp.last_render());
                d.push(whole.saturating_sub(t1 + dp.last_render()));
                all.push(whole);
                if let Some(undo) = step.undo {
                    let changes = calc.apply(undo);
                    dp.update(&changes).unwrap();
                }
            }
            let pair = |v: &mut Vec<Duration>| {
                format!("{} / {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)))
            };
            println!(
                "{:>7} {:>18} | {:>14} | {:>14} | {:>14} | {:>14}",
                p,
                what,
                pair(&mut c),
                pair(&mut r),
                pair(&mut d),
                pair(&mut all)
            );
            p99s.push(percentile(&mut all, 0.99));
        }
        growth.push((p, p99s));
    }
    if let (Some((p0, first)), Some((p1, last))) = (growth.first(), growth.last()) {
        let names: Vec<&str> = operations(1, 0).iter().map(|(n, _)| *n).collect();
        for (i, name) in names.iter().enumerate() {
            println!(
                "growth of p99 {p0} -> {p1}, {name}: {:.2}x",
                last[i].as_secs_f64() / first[i].as_secs_f64()
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if packets::run_if_helper(&args) {
        return;
    }
    let scales: Vec<usize> = std::env::var("AGENT_BENCH_SCALES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("AGENT_BENCH_SCALES: numbers"))
        .collect();
    let only = std::env::var("AGENT_BENCH_ONLY").unwrap_or_default();
    if only == "ours" {
        ours_only(&scales);
        return;
    }
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    if only.is_empty() || only.contains("latency") {
        latency(&scales);
    }
    if only.is_empty() || only.contains("packet") {
        per_packet(&scales);
    }
    if only.contains("path") {
        path_costs(&scales);
    }
    if only.is_empty() || only.contains("footprint") {
        footprint(&scales);
    }
}
