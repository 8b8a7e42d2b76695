//! The agent's benchmarks (performance.md B3, B1, B7), each with its baseline measured in the
//! same run, in test-made network namespaces:
//!
//! - **Programming latency** (B3): from an update handed to the agent's calculator to the nft
//!   transaction committed in the kernel (calculate, render, diff, `nft -f`), p50/p99 over
//!   repeated operations, with P policies present; and cold start (load everything, install
//!   the table). Baselines: replacing the whole table (what the agent did before diffs), an
//!   empty nft transaction (the floor of spawning nft), and the Calico-style iptables peer
//!   (`gingham_dataplane::iptables`: felix's chains and ipsets, each update one
//!   `iptables-nft-restore --noflush` of the changed chains plus `ipset restore`, as felix does)
//!   doing the same operations in its own namespace.
//! - **Per-packet cost** (B1): new TCP connections per second (connect, 1-byte request and
//!   response, close) and UDP packets per second between two pods on one node, through the
//!   node's table with P policies, and through the iptables peer with the same policies, each
//!   against the same pods with no table at all (client and server pinned to their own CPU;
//!   rounds alternate the two so the machine's drift cancels).
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
//! `AGENT_BENCH_HEAPTRACK=DIR` records the footprint agents' heaps with heaptrack.

#[path = "support/packets.rs"]
mod packets;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gingham_calc::incremental::{Calculator, Update};
use gingham_calc::program::NodeProgram;
use gingham_dataplane::iptables::{Flavour, IptBackend, IptProgrammer, Iptables, render_iptables};
use gingham_dataplane::{Backend, Dataplane, IptDataplane, Nft, NftDataplane, Settings, render};
use gingham_model::Resource;
use gingham_net::NetnsRef;
use gingham_testkit::netns::{TestNetns, TwoPods as Pods};
use packets::{Killed, median};

const NAMESPACES: usize = 100;
const ENDPOINTS: usize = 1000;
const NODE: &str = "node0";

fn load(text: &str) -> Vec<Resource> {
    gingham_model::load_resources("bench.yaml", text).expect("valid generated input")
}

fn endpoint(i: usize, labels: &str, iface: &str, ip: &str) -> String {
    let ns = i % NAMESPACES;
    let node = format!("node{}", (i / NAMESPACES) % 10);
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-pod{i}-eth0
  namespace: ns{ns}
  labels: {{{labels}, projectcalico.org/namespace: ns{ns}, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: pod{i}
  endpoint: eth0
  interfaceName: {iface}
  ipNetworks: [{ip}/32]
  profiles: [kns.ns{ns}]
---
"
    )
}

fn model_endpoint(i: usize, role: usize) -> String {
    endpoint(
        i,
        &format!("app: a{}, role: r{role}", (i / NAMESPACES) % 10),
        &format!("cali{i:011}"),
        &format!("10.{}.{}.{}", 100 + (i >> 16), (i >> 8) & 255, i & 255),
    )
}

fn policy(j: usize, port: u16) -> String {
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
    )
}

/// Profiles, endpoints and `p` policies.
fn model(p: usize) -> Vec<Resource> {
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
    text.extend((0..ENDPOINTS).map(|i| model_endpoint(i, i % 20)));
    text.extend((0..p).map(|j| policy(j, 80 + (j % 5) as u16)));
    load(&text)
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
/// Returns the commands sent and the time spent before the kernel (calculation, rendering).
/// Programs one update; returns the commands sent, the time before the kernel, and whether
/// the transaction went as a netlink batch.
fn program(
    calc: &mut Calculator,
    dp: &mut dyn Dataplane,
    update: Update,
) -> (usize, Duration, bool) {
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
        applied.path == gingham_dataplane::Path::Netlink,
    )
}

/// The four operations of the latency table, `reps` updates each.
fn operations(p: usize, reps: usize) -> Vec<(&'static str, Vec<Update>)> {
    // A remote endpoint (ns50, role r10) changes role: it leaves the set of its namespace's
    // policies' sources, then joins it again.
    let relabels: Vec<Resource> = [11usize, 10]
        .iter()
        .flat_map(|&role| load(&model_endpoint(150, role)))
        .collect();
    let member = (0..reps)
        .map(|i| Update::Upsert(Box::new(relabels[i % 2].clone())))
        .collect();
    // A new local endpoint (a new pod on the node, app a0, in namespace i: the model puts
    // index k in namespace k % 100 on node (k / 100) % 10).
    let add_ep = (0..reps)
        .flat_map(|i| load(&model_endpoint(ENDPOINTS * 10 + i * 1001, 1)))
        .map(|r| Update::Upsert(Box::new(r)))
        .collect();
    // A policy selecting local endpoints changes its port.
    let changes: Vec<Resource> = [90u16, 80]
        .iter()
        .flat_map(|&port| load(&policy(0, port)))
        .collect();
    let change = (0..reps)
        .map(|i| Update::Upsert(Box::new(changes[i % 2].clone())))
        .collect();
    // A new policy selecting local endpoints (app a0 in ns0), then its deletion.
    let j = p.max(1) * 10;
    let extra = load(&policy(j, 99));
    let add_del = (0..reps)
        .map(|i| {
            if i % 2 == 0 {
                Update::Upsert(Box::new(extra[0].clone()))
            } else {
                Update::Delete {
                    kind: gingham_model::Kind::NetworkPolicy,
                    namespace: Some(format!("ns{}", j % NAMESPACES)),
                    name: format!("pol{j}"),
                }
            }
        })
        .collect();
    vec![
        ("set member", member),
        ("add endpoint", add_ep),
        ("change policy", change),
        ("add/delete policy", add_del),
    ]
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

fn dataplane(path: &str) -> Box<dyn Dataplane> {
    match path {
        "nft" => Box::new(NftDataplane::new(Nft::default())),
        "nft-text" => Box::new(NftDataplane::new(Nft::default().text_only())),
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
    let reps = 40;
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
    for &p in scales {
        let resources = model(p);
        for &path in &paths {
            let ns = TestNetns::new("blat");
            gingham_net::in_netns_same_thread(&NetnsRef::named(ns.name()), || {
                // Cold start: everything loaded, the rules installed into an empty kernel.
                let t = Instant::now();
                let mut calc = Calculator::new(NODE);
                calc.load_all(resources.clone());
                let mut dp = dataplane(path);
                dp.install(calc.state(), Settings::default())
                    .expect("the kernel accepts the rules");
                let cold = t.elapsed();
                let (chains, _, members) = dp.counts();

                let mut in_calc = Vec::new();
                let (mut by_netlink, mut sent) = (0, 0);
                let mut timings: Vec<Vec<Duration>> = operations(p, reps)
                    .into_iter()
                    .map(|(what, updates)| {
                        updates
                            .into_iter()
                            .enumerate()
                            .map(|(i, u)| {
                                let t = Instant::now();
                                let (commands, calc_time, netlink) =
                                    program(&mut calc, dp.as_mut(), u);
                                by_netlink += usize::from(netlink);
                                sent += 1;
                                let took = t.elapsed();
                                in_calc.push(calc_time);
                                assert!(commands > 0, "{path}: {what} #{i} changed nothing");
                                took
                            })
                            .collect()
                    })
                    .collect();
                if path == "nft" {
                    scrapes.push((p, scrape_cost(&calc)));
                }
                let mut nft = Nft::default();
                let mut replace: Vec<Duration> = (0..5)
                    .map(|_| replace_whole(path, &calc.state(), &mut nft))
                    .collect();
                let pair = |v: &mut Vec<Duration>| {
                    format!("{} / {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)))
                };
                let replace50 = percentile(&mut replace, 0.5);
                let calc50 = percentile(&mut in_calc, 0.5);
                let inc50 = percentile(&mut timings[2], 0.5);
                println!(
                    "{:>7} {:>8} {:>7} {:>7} | {:>22} | {:>22} | {:>22} | {:>22} | {:>10} | {:>14} | {:>7.1}x | {:>8} | {:>9}",
                    p,
                    path,
                    chains,
                    members,
                    pair(&mut timings[0]),
                    pair(&mut timings[1]),
                    pair(&mut timings[2]),
                    pair(&mut timings[3]),
                    ms(cold),
                    ms(replace50),
                    replace50.as_secs_f64() / inc50.as_secs_f64(),
                    ms(calc50),
                    format!("{by_netlink}/{sent}")
                );
            })
            .unwrap();
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
    println!("(path: nft = our table, incremental changes as nf_tables netlink batches;");
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

fn spawn_helper(ns: &TestNetns, cpu: &str, args: &[&str]) -> Killed {
    packets::spawn(ns.name(), Some(cpu), args)
}

fn run_helper(ns: &TestNetns, cpu: &str, args: &[&str]) -> f64 {
    packets::run(ns.name(), Some(cpu), args)
}

/// Connections per second and UDP packets per second (received), one run of each.
fn measure(p: &Pods) -> (f64, f64) {
    let secs = 1.0;
    let secs_arg = secs.to_string();
    let crr = run_helper(&p.client, CLIENT_CPU, &["crr", SERVER_IP, &secs_arg]);
    let mut server = spawn_helper(&p.server, SERVER_CPU, &["udp-server"]);
    run_helper(&p.client, CLIENT_CPU, &["udp", SERVER_IP, &secs_arg]);
    let mut out = String::new();
    server
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = server.0.wait();
    (crr, out.trim().parse::<f64>().unwrap() / secs)
}

/// Rounds of one row: the rules installed, measured, removed, the bare pods measured; the
/// ratio of each round's adjacent runs cancels the machine's drift. Prints medians.
fn paired_row(pods: &Pods, label: &str, install: &mut dyn FnMut(), remove: &mut dyn FnMut()) {
    const ROUNDS: usize = 5;
    let (mut ours, mut bare, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        install();
        let a = measure(pods);
        remove();
        let b = measure(pods);
        ratios.push((a.0 / b.0, a.1 / b.1));
        ours.push(a);
        bare.push(b);
    }
    println!(
        "{label:>32} | {:>9.0} {:>9.0} {:>6.2} | {:>9.0} {:>9.0} {:>6.2}",
        median(ours.iter().map(|m| m.0).collect()),
        median(bare.iter().map(|m| m.0).collect()),
        median(ratios.iter().map(|r| r.0).collect()),
        median(ours.iter().map(|m| m.1).collect()),
        median(bare.iter().map(|m| m.1).collect()),
        median(ratios.iter().map(|r| r.1).collect()),
    );
}

/// A row whose rules are one nft script, removed by another.
fn nft_row(pods: &Pods, label: &str, install: &str, remove: &str) {
    let mut nft = Nft::in_netns(pods.node.name());
    let mut nft2 = Nft::in_netns(pods.node.name());
    paired_row(
        pods,
        label,
        &mut || nft.run(install).expect("nft accepts the table"),
        &mut || nft2.run(remove).expect("nft removes the table"),
    );
}

/// A row through the Calico-style iptables rendering: installed by a fresh programmer (read,
/// then restore everything, as felix at start), removed down to no table at all (iptables-nft's
/// `ip filter` table deleted, the ipsets destroyed).
fn iptables_row(pods: &Pods, label: &str, state: &NodeProgram) {
    let table = render_iptables(state, &Settings::default());
    let node = pods.node.name();
    let mut nft = Nft::in_netns(node);
    paired_row(
        pods,
        label,
        &mut || {
            IptProgrammer::new(Iptables::in_netns(node, Flavour::Nft))
                .sync(&table)
                .expect("iptables accepts the rules");
        },
        &mut || {
            nft.run("delete table ip filter\n")
                .expect("the iptables-nft table goes");
            let (_, destroy) = gingham_dataplane::iptables::removal(&table);
            Iptables::in_netns(node, Flavour::Nft)
                .ipset(&destroy)
                .expect("the ipsets go");
        },
    );
}

fn per_packet(scales: &[usize]) {
    gingham_testkit::require_tool("taskset");
    println!("\n## Per-packet cost (B1): two pods on one node, through the node's table");
    println!(
        "(client pinned to cpu{CLIENT_CPU}, server to cpu{SERVER_CPU}; medians of 5 rounds, each the table's run"
    );
    println!(" next to a run with no table at all; ratio: the rules / no table, per round; the");
    println!(" iptables rows: the same policies through the Calico-style iptables-nft peer)");
    let pods = Pods::new("b", CLIENT_IP, SERVER_IP);
    let _server = spawn_helper(&pods.server, SERVER_CPU, &["tcp-server"]);
    println!(
        "{:>32} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6}",
        "", "CRR/s", "no table", "ratio", "UDP pkt/s", "no table", "ratio"
    );
    let pods_yaml = |p: usize| {
        // The two pods, local, in ns0: the server has app a0 (selected by the model's policies
        // for that app in ns0), and one more policy, ordered last, lets the client in.
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
    };
    // Conntrack alone (any stateful firewall pays it): one rule accepting established flows.
    nft_row(
        &pods,
        "conntrack only",
        "table inet ctonly {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  ct state established,related accept\n }\n}\n",
        "delete table inet ctonly\n",
    );
    for &p in [0].iter().chain(scales) {
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
        let rendered = render(&state, &Settings::default());
        if let Some(dir) = std::env::var_os("AGENT_BENCH_DUMP") {
            // For experiments: the table of each row, as an nft script.
            let path = std::path::Path::new(&dir).join(format!("b1-table-{p}.nft"));
            std::fs::write(path, rendered.script()).unwrap();
        }
        nft_row(
            &pods,
            &format!("P={p} ({} chains, {selecting} sel.)", rendered.chains),
            &rendered.script(),
            "delete table inet gingham\n",
        );
        let rules = render_iptables(&state, &Settings::default()).rule_count();
        iptables_row(&pods, &format!("P={p} iptables ({rules} rules)"), &state);
    }
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if packets::run_if_helper(&args) {
        return;
    }
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let scales: Vec<usize> = std::env::var("AGENT_BENCH_SCALES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("AGENT_BENCH_SCALES: numbers"))
        .collect();
    let only = std::env::var("AGENT_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only.contains("latency") {
        latency(&scales);
    }
    if only.is_empty() || only.contains("packet") {
        per_packet(&scales);
    }
    if only.is_empty() || only.contains("footprint") {
        footprint(&scales);
    }
}
