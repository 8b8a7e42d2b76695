//! The netlink path ([`gingham_dataplane::nl`]) leaves the kernel exactly as the nft script
//! of the same transaction does: for every policy case, every set filled and every chain
//! written by netlink in one namespace and by `nft` in another lists the same; so do the
//! diffs from each case's table to the next, and random edits. Transactions the encoder
//! cannot express go through nft and still end right. System tests: root and nftables.

mod common;
#[path = "../../calc/tests/common/mod.rs"]
mod random;

use std::collections::BTreeSet;
use std::path::PathBuf;

use gingham_calc::incremental::{Calculator, Update};
use gingham_dataplane::table::{Rule, Table};
use gingham_dataplane::{Backend, Nft, Op, Path, Programmer, Script, canonical, nl, render};
use gingham_dataplane::{Renderer, Settings};
use gingham_model::Resource;
use gingham_testkit::netns::TestNetns;
use random::{Rng, property_seeds, resolve_step, update_steps};

fn case_tables() -> Vec<(PathBuf, Table)> {
    common::case_programs()
        .into_iter()
        .map(|(dir, program, settings)| (dir, render(&program, &settings).table))
        .collect()
}

fn listing(ns: &TestNetns) -> String {
    let json = Nft::in_netns(ns.name())
        .read()
        .unwrap()
        .expect("table installed");
    canonical(&json).expect("listing readable")
}

/// The table's chains and sets, every set empty and every chain without rules.
fn skeleton(t: &Table) -> Table {
    let mut s = t.clone();
    for set in s.sets.values_mut() {
        set.elements.clear();
    }
    for chain in s.chains.values_mut() {
        chain.rules.clear();
    }
    s
}

/// Two namespaces holding the same table: `a` is written by netlink where the ops encode,
/// `b` always by nft scripts.
struct Pair {
    a: TestNetns,
    b: TestNetns,
    nft_a: Nft,
    nft_b: Nft,
    netlink: usize,
    text: usize,
    /// Why transactions went by nft.
    refused: BTreeSet<String>,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let a = TestNetns::new(&format!("{tag}a"));
        let b = TestNetns::new(&format!("{tag}b"));
        let nft_a = Nft::in_netns(a.name());
        let nft_b = Nft::in_netns(b.name()).text_only();
        Pair {
            a,
            b,
            nft_a,
            nft_b,
            netlink: 0,
            text: 0,
            refused: BTreeSet::new(),
        }
    }

    fn replace(&mut self, t: &Table) {
        let s = t.replace_script().text;
        self.nft_a.run(&s).unwrap();
        self.nft_b.run(&s).unwrap();
    }

    fn apply(&mut self, script: &Script, desired: &Table, what: &str) {
        if script.is_empty() {
            return;
        }
        if let Err(e) = nl::encode(&script.ops, desired) {
            self.refused.insert(e.to_string());
        }
        match self.nft_a.run_incremental(script, desired) {
            Ok(ran) if ran.path == Path::Netlink => self.netlink += 1,
            Ok(_) => self.text += 1,
            Err(e) => panic!("{what}: netlink path: {e}\n{}", script.text),
        }
        assert_eq!(
            self.nft_b.run_incremental(script, desired).unwrap().path,
            Path::Text
        );
    }

    fn assert_same(&self, what: &str) {
        let (a, b) = (listing(&self.a), listing(&self.b));
        if a != b {
            let diff: Vec<String> = a
                .lines()
                .zip(b.lines())
                .filter(|(x, y)| x != y)
                .take(6)
                .map(|(x, y)| format!("netlink: {x}\nnft:     {y}"))
                .collect();
            panic!("{what}: the kernels differ:\n{}", diff.join("\n"));
        }
    }
}

/// The case table with the most chains, and a new pair of namespaces holding it.
fn largest_case_in_pair(tag: &str) -> (Table, Pair) {
    let (_, table) = case_tables()
        .into_iter()
        .max_by_key(|(_, t)| t.chains.len())
        .unwrap();
    let mut pair = Pair::new(tag);
    pair.replace(&table);
    (table, pair)
}

fn str_set(n: &BTreeSet<String>) -> BTreeSet<&str> {
    n.iter().map(String::as_str).collect()
}

fn names(t: &Table) -> (BTreeSet<&str>, BTreeSet<&str>) {
    (
        t.chains.keys().map(String::as_str).collect(),
        t.sets.keys().map(String::as_str).collect(),
    )
}

#[test]
fn sys_netlink_writes_every_case_as_nft_does() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let mut pair = Pair::new("nlc");
    let (mut rules, mut encoded) = (0, 0);
    let mut refused: BTreeSet<String> = BTreeSet::new();
    for (dir, table) in case_tables() {
        let what = dir.display().to_string();
        let empty = skeleton(&table);
        pair.replace(&empty);
        // Each set filled, then each chain written, one transaction each: every op the
        // encoder knows is checked against nft's own encoding of it.
        let none = BTreeSet::new();
        for name in table.sets.keys() {
            let one = BTreeSet::from([name.as_str()]);
            let s = empty.diff_only(&table, &none, &one).unwrap();
            pair.apply(&s, &table, &format!("{what}: set {name}"));
        }
        for (name, chain) in &table.chains {
            for r in &chain.rules {
                rules += 1;
                match nl::rule_encodes(&r.text) {
                    Ok(()) => encoded += 1,
                    Err(e) => {
                        refused.insert(format!("{e}: {}", r.text));
                    }
                }
            }
            let one = BTreeSet::from([name.as_str()]);
            let s = empty.diff_only(&table, &one, &none).unwrap();
            pair.apply(&s, &table, &format!("{what}: chain {name}"));
        }
        pair.assert_same(&what);
        // And back to the skeleton, one transaction.
        let (c, s) = names(&table);
        let back = table.diff_only(&empty, &c, &s).unwrap();
        pair.apply(&back, &empty, &format!("{what}: emptied"));
        pair.assert_same(&format!("{what}: emptied"));
    }
    eprintln!(
        "transactions: {} by netlink, {} by nft; rules encoded: {encoded} of {rules}",
        pair.netlink, pair.text
    );
    for r in &pair.refused {
        eprintln!("  transaction by nft: {r}");
    }
    for r in &refused {
        eprintln!("  by nft: {r}");
    }
    // The encoder covers the policy grammar: most rules and transactions go by netlink.
    assert!(encoded * 10 >= rules * 8, "{encoded} of {rules}");
    assert!(
        pair.netlink > pair.text * 4,
        "{} / {}",
        pair.netlink,
        pair.text
    );
}

#[test]
fn sys_netlink_diffs_between_cases_end_as_nft_diffs_do() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let tables = case_tables();
    let mut pair = Pair::new("nld");
    pair.replace(&tables[0].1);
    let order: Vec<usize> = (1..tables.len()).chain((0..tables.len()).rev()).collect();
    let mut prev = &tables[0].1;
    for i in order {
        let (dir, table) = &tables[i];
        let Some(s) = prev.diff(table) else {
            pair.replace(table);
            prev = table;
            continue;
        };
        pair.apply(&s, table, &dir.display().to_string());
        pair.assert_same(&dir.display().to_string());
        prev = table;
    }
    eprintln!(
        "transactions: {} by netlink, {} by nft: {:?}",
        pair.netlink, pair.text, pair.refused
    );
    assert!(pair.netlink > 0);
}

#[test]
fn sys_a_transaction_with_an_unencodable_rule_goes_through_nft_and_ends_right() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let (table, mut pair) = largest_case_in_pair("nlf");
    let mut next = table.clone();
    // A rule the encoder does not know, and one it does, in the same transaction.
    let (name, _) = next
        .chains
        .iter()
        .find(|(n, c)| n.starts_with('p') && c.base.is_none())
        .expect("a policy chain");
    let name = name.clone();
    // Touching elements: nft merges them into one range, the encoder does not.
    let odd = "meta nfproto ipv4 meta l4proto 6 th dport { 81, 82-90 } counter drop";
    assert!(nl::rule_encodes(odd).is_err());
    let chain = next.chains.get_mut(&name).unwrap();
    chain.rules.insert(0, Rule::new(odd, "unencodable"));
    chain.rules.push(Rule::new("counter drop", "encodable"));
    let (c, s) = names(&next);
    let script = table.diff_only(&next, &c, &s).unwrap();
    assert!(nl::encode(&script.ops, &next).is_err());
    let mut programmer = Programmer::new(Nft::in_netns(pair.a.name()));
    programmer.sync(table.clone()).unwrap();
    let touched = gingham_dataplane::Touched {
        chains: BTreeSet::from([name.clone()]),
        ..Default::default()
    };
    let applied = programmer.sync_touched(&next, &touched).unwrap();
    assert_eq!(applied.path, Path::Text);
    pair.nft_b.run(&script.text).unwrap();
    pair.assert_same("an unencodable rule");
    assert!(listing(&pair.a).contains("unencodable"));
    // Without the odd rule the same change goes by netlink.
    let mut plain = next.clone();
    plain.chains.get_mut(&name).unwrap().rules.remove(0);
    let applied = programmer.sync_touched(&plain, &touched).unwrap();
    assert_eq!(applied.path, Path::Netlink);
    let script = next.diff_only(&plain, &c, &s).unwrap();
    pair.nft_b.run(&script.text).unwrap();
    pair.assert_same("the odd rule removed by netlink");
}

#[test]
fn sys_a_refused_netlink_transaction_is_a_typed_error_and_changes_nothing() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let (_, table) = case_tables().into_iter().next().unwrap();
    let ns = TestNetns::new("nlerr");
    let mut nft = Nft::in_netns(ns.name());
    nft.run(&table.replace_script().text).unwrap();
    let before = listing(&ns);
    let mut wrong = table.clone();
    let (name, _) = wrong.chains.iter().find(|(_, c)| c.base.is_none()).unwrap();
    let name = name.clone();
    // A rule jumping to a chain that does not exist: the kernel refuses the batch.
    wrong
        .chains
        .get_mut(&name)
        .unwrap()
        .rules
        .push(Rule::new("jump no-such-chain", ""));
    let script = Script {
        ops: vec![
            Op::AddChain {
                name: "fresh".into(),
                base: None,
            },
            Op::AddRule {
                chain: name.clone(),
                rule: Rule::new("jump no-such-chain", ""),
                index: 0,
                position: None,
            },
        ],
        text: String::new(),
        commands: 2,
        ..Script::default()
    };
    let err = nft.run_incremental(&script, &wrong).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            gingham_dataplane::Error::Netlink(nl::NlError::Refused { .. })
        ),
        "{text}"
    );
    assert!(text.contains("no-such-chain"), "{text}");
    // Atomic: the chain of the same batch was not added either.
    assert_eq!(listing(&ns), before);
}

/// Property: random clusters built, changed and torn down update by update (the engine's
/// random-cluster generator), each update synced by a programmer on the netlink path in one
/// namespace and by one on the nft text path in another: the kernels always list the same.
/// The netlink programmer learns its rules' handles from the kernel's echoes, so a chain
/// that keeps some of its rules is edited in place (rules deleted by handle, others inserted
/// next to kept ones); the text one rewrites chains, so both ways of changing a chain meet.
#[test]
fn sys_random_updates_by_netlink_end_as_by_nft() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let seeds = property_seeds(3);
    let (mut steps, mut by_netlink) = (0usize, 0usize);
    // Incremental syncs that sent something.
    let mut partial_syncs = 0usize;
    // Incremental syncs that edited a chain in place.
    let mut edits = 0usize;
    let mut why = BTreeSet::new();
    for seed in 0..seeds {
        let a = TestNetns::new("nlpa");
        let b = TestNetns::new("nlpb");
        let mut pa = Programmer::new(Nft::in_netns(a.name()));
        let mut pb = Programmer::new(Nft::in_netns(b.name()).text_only());
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut calc = Calculator::new("node-a");
        let mut renderer = Renderer::new(calc.state(), Settings::default());
        let all = renderer.take_touched();
        pa.sync_touched(renderer.table(), &all).unwrap();
        pb.sync_touched(renderer.table(), &all).unwrap();
        let mut current: std::collections::BTreeMap<String, Resource> = Default::default();
        for (i, step) in update_steps(seed, &mut rng).into_iter().enumerate() {
            let Some(step) = resolve_step(step, &mut current, &mut rng) else {
                continue;
            };
            let at = format!("seed {seed}, step {i}: {step:?}");
            let changes = calc.apply(step);
            renderer.apply(&changes);
            let touched = renderer.take_touched();
            // The generator can give one interface to two endpoints (a pod re-created in
            // another namespace while the old one lives): the renderer closes the interface
            // (one `drop` element), and both paths take it.
            let partial = pa.installed().is_some() && !touched.all;
            if let Some(rec) = pa.installed().filter(|_| !touched.all) {
                let script = rec.diff_only(
                    renderer.table(),
                    &str_set(&touched.chains),
                    &str_set(&touched.sets),
                );
                if let Some(s) = &script
                    && s.ops.iter().any(|op| {
                        matches!(
                            op,
                            Op::DeleteRule { .. }
                                | Op::AddRule {
                                    position: Some(_),
                                    ..
                                }
                        )
                    })
                {
                    edits += 1;
                }
                if let Some(Err(e)) = script.map(|s| nl::encode(&s.ops, renderer.table())) {
                    why.insert(e.to_string());
                }
            } else {
                why.insert("whole-table sync".into());
            }
            let text = pb.sync_touched(renderer.table(), &touched);
            let netlink = pa.sync_touched(renderer.table(), &touched);
            let applied = match (text, netlink) {
                (Ok(_), Ok(applied)) => applied,
                (t, n) => panic!("{at}: text path {t:?}, netlink path {n:?}"),
            };
            partial_syncs += usize::from(partial && applied.commands > 0);
            if applied.path == Path::Netlink {
                by_netlink += 1;
            }
            steps += 1;
            let (la, lb) = (listing(&a), listing(&b));
            assert!(la == lb, "{at}: the kernels differ");
            // And both hold the desired table: read back, nothing is left to do.
            assert_eq!(
                drift(&a, renderer.table()).as_deref(),
                Some(""),
                "{at}: the kernel is not the desired table"
            );
        }
    }
    eprintln!(
        "{steps} updates ({partial_syncs} partial, {edits} editing a chain in place), \
         {by_netlink} by netlink, the kernels always equal; by nft: {why:?}"
    );
    assert!(edits > 0, "no chain was edited in place");
    // Whole-table syncs (a fresh programmer, the record dropped after an error, settings
    // changed) take the text path; the incremental ones take netlink.
    assert!(
        by_netlink * 10 >= partial_syncs * 9,
        "{by_netlink} of {partial_syncs} partial syncs"
    );
}

/// An interface index verdict map with a declared size (for 32-bit keys the kernel's fast
/// fixed-size hash: a cheaper lookup than a map keyed by name) and the rules looking packets'
/// interfaces up in it go by netlink as nft writes them; the consistency check reads the map
/// back as installed (its size, and keys of interfaces that do not exist, as numbers), and a
/// map whose size differs is replaced.
#[test]
fn sys_a_sized_interface_index_map_goes_by_netlink_as_nft_writes_it() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    use gingham_dataplane::table::{IFACE_INDEX, Set, SetKind};
    let (table, mut pair) = largest_case_in_pair("nli");
    let target = table
        .chains
        .iter()
        .find(|(_, c)| c.base.is_none())
        .map(|(n, _)| n.clone())
        .expect("a regular chain");
    let mut next = table.clone();
    let elements = [
        "70001 : accept".to_owned(),
        format!("70002 : jump {target}"),
        "* : continue".to_owned(),
    ];
    next.sets.insert(
        "ix".into(),
        Set::new(
            IFACE_INDEX,
            SetKind::Verdict,
            elements.into_iter().collect(),
        )
        .with_size(1024),
    );
    let rules = [
        r#"iifname "cali*" iif vmap @ix"#,
        r#"oifname "cali*" oif vmap @ix"#,
    ];
    for text in rules {
        assert!(nl::rule_encodes(text).is_ok(), "{text}");
    }
    // Looked up from a chain of its own (nothing jumps to it; the kernel still checks it).
    next.chains.insert(
        "ixuse".into(),
        gingham_dataplane::table::Chain::regular(
            rules.iter().map(|t| Rule::new(*t, "lookup")).collect(),
        ),
    );
    let (c, s) = names(&next);
    let script = table.diff_only(&next, &c, &s).unwrap();
    assert!(
        script
            .text
            .contains("type iface_index : verdict; size 1024;"),
        "{}",
        script.text
    );
    nl::encode(&script.ops, &next).expect("the map and its rules encode");
    pair.apply(&script, &next, "a sized interface index map");
    assert_eq!((pair.netlink, pair.text), (1, 0));
    pair.assert_same("a sized interface index map");
    assert!(
        listing(&pair.a).contains("set ix iface_index Verdict size 1024\n"),
        "{}",
        listing(&pair.a)
    );

    // Read back: nothing to repair; with another size, the table is replaced.
    let mut programmer = Programmer::new(Nft::in_netns(pair.a.name()));
    let applied = programmer.check(next.clone()).unwrap();
    assert_eq!((applied.commands, applied.replaced), (0, false));
    let mut resized = next.clone();
    resized.sets.get_mut("ix").unwrap().size = Some(2048);
    let applied = programmer.check(resized).unwrap();
    assert!(applied.replaced, "{applied:?}");
}

/// Three workloads alike on node-a (namespace web), their namespace profile, and `n` policies
/// selecting them, policy `i` allowing TCP port `ports(i)` in.
fn pods_with_policies(n: usize, ports: impl Fn(usize) -> u16) -> Vec<Resource> {
    let mut text = String::from(
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.web}\nspec:\n  ingress: [{action: Allow}]\n  egress: [{action: Allow}]\n---\n",
    );
    for i in 0..3 {
        text.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node--a-k8s-pod{i}-eth0, namespace: web, labels: {{app: web, projectcalico.org/namespace: web}}}}\nspec: {{node: node-a, orchestrator: k8s, pod: pod{i}, endpoint: eth0, interfaceName: cali{i:04}, ipNetworks: [10.0.0.{}/32], profiles: [kns.web]}}\n---\n",
            i + 1
        ));
    }
    for i in 0..n {
        text.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p{i:03}, namespace: web}}\nspec:\n  order: {i}\n  selector: app == 'web'\n  ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [{}]}}}}]\n---\n",
            ports(i)
        ));
    }
    gingham_model::load_resources("pods.yaml", &text).unwrap()
}

/// Policy `p001` of [`pods_with_policies`] (of `n`) now allows `port`: the calculator's and
/// renderer's update, the transaction the programmer's record diffs into, and its sync.
fn change_port(
    calc: &mut Calculator,
    renderer: &mut Renderer,
    programmer: &mut Programmer<Nft>,
    n: usize,
    port: u16,
) -> (Script, gingham_dataplane::Applied) {
    let policy = pods_with_policies(n, |i| if i == 1 { port } else { 1000 + i as u16 })
        .into_iter()
        .find(|r| r.meta().name == "p001")
        .unwrap();
    renderer.apply(&calc.apply(Update::Upsert(Box::new(policy))));
    let touched = renderer.take_touched();
    let script = programmer
        .installed()
        .unwrap()
        .diff_only(
            renderer.table(),
            &str_set(&touched.chains),
            &str_set(&touched.sets),
        )
        .unwrap();
    let applied = programmer.sync_touched(renderer.table(), &touched).unwrap();
    (script, applied)
}

/// What would still have to change for the kernel in `ns` to hold `desired` ("" when it does).
fn drift(ns: &TestNetns, desired: &Table) -> Option<String> {
    let json = Nft::in_netns(ns.name()).read().unwrap().unwrap();
    Table::from_kernel(&json, desired)
        .and_then(|t| t.diff(desired))
        .map(|s| s.text)
}

/// A policy whose rules change edits the shared stage chain that inlines it in place, by
/// netlink: its old rules deleted by handle, its new ones inserted next to the rules kept
/// (handles the kernel echoed when it added them). The transaction is as large with 40
/// policies in the stage as with 4, so its cost follows the change, not the stage; the kernel
/// then holds the desired table rule for rule, in order.
#[test]
fn sys_a_policy_change_edits_its_rules_in_the_stage_chain_in_place() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let mut sent = Vec::new();
    for n in [4usize, 40] {
        let ns = TestNetns::new("nled");
        let mut programmer = Programmer::new(Nft::in_netns(ns.name()));
        let mut calc = Calculator::new("node-a");
        calc.load_all(pods_with_policies(n, |i| 1000 + i as u16));
        let mut renderer = Renderer::new(calc.state(), Settings::default());
        let all = renderer.take_touched();
        programmer.sync_touched(renderer.table(), &all).unwrap();
        // Policy 1 (not the first, not the last of the stage) changes its port, three times.
        let mut per_change = Vec::new();
        for (k, port) in [2001u16, 2002, 2003].into_iter().enumerate() {
            let (script, applied) = change_port(&mut calc, &mut renderer, &mut programmer, n, port);
            assert_eq!(applied.path, Path::Netlink, "{n} policies, change {k}");
            let deleted = script
                .ops
                .iter()
                .filter(|op| matches!(op, Op::DeleteRule { .. }))
                .count();
            let placed = script
                .ops
                .iter()
                .filter(|op| {
                    matches!(
                        op,
                        Op::AddRule {
                            position: Some(_),
                            ..
                        }
                    )
                })
                .count();
            per_change.push((deleted, placed, applied.commands));
            assert_eq!(
                drift(&ns, renderer.table()).as_deref(),
                Some(""),
                "{n} policies, change {k}"
            );
        }
        // The first change after the full load rewrites the stage (the load echoes no
        // handles); the next ones edit it.
        assert_eq!(per_change[0].0, 0, "{n} policies: {per_change:?}");
        assert!(per_change[0].2 > n, "{n} policies: {per_change:?}");
        assert!(
            per_change[1].0 > 0 && per_change[1].0 == per_change[1].1,
            "{n} policies: {per_change:?}"
        );
        assert_eq!(per_change[1], per_change[2], "{n} policies");
        sent.push(per_change[2]);
    }
    assert_eq!(sent[0], sent[1], "as large with 40 policies as with 4");
}

/// The same edit in place goes as an nft script when the transaction does not go by netlink:
/// with the handles read from the kernel (the consistency check), the policy's rules are
/// deleted by handle and inserted with `insert rule … position`, and the kernel holds the
/// desired table rule for rule.
#[test]
fn sys_a_chain_is_edited_in_place_by_an_nft_script_with_handles_read_from_the_kernel() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let ns = TestNetns::new("nlet");
    let mut programmer = Programmer::new(Nft::in_netns(ns.name()).text_only());
    let mut calc = Calculator::new("node-a");
    calc.load_all(pods_with_policies(4, |i| 1000 + i as u16));
    let mut renderer = Renderer::new(calc.state(), Settings::default());
    let all = renderer.take_touched();
    programmer.sync_touched(renderer.table(), &all).unwrap();
    // The check reads the kernel: the record learns every rule's handle.
    let checked = programmer.check(renderer.table().clone()).unwrap();
    assert_eq!(checked.commands, 0, "{checked:?}");
    let (script, applied) = change_port(&mut calc, &mut renderer, &mut programmer, 4, 3001);
    assert!(
        script.text.contains("delete rule inet gingham ")
            && script.text.contains("insert rule inet gingham ")
            && !script.text.contains("flush chain"),
        "{}",
        script.text
    );
    assert_eq!(applied.path, Path::Text);
    assert_eq!(drift(&ns, renderer.table()).as_deref(), Some(""));
}
