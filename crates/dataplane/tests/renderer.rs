//! Property: the incremental renderer, fed the calculator's changes one update at a time, always
//! holds the table a full render of the current programs gives; the chains and sets it reports
//! as touched cover every difference (a diff of only those equals the full diff); and a
//! programmer syncing only the touched names keeps a record equal to the desired table.
//! Updates: random clusters created in random order, then replacements, deletions, resyncs and
//! settings and IP pool changes (the engine's random-cluster generator), and workloads given an
//! IPv6 address beside their IPv4 one or taken back to IPv4 only (the sets they are in gain
//! their first IPv6 member or lose their last, so rules appear or go in that family).

#[path = "../../calc/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Rng, property_seeds, resolve_step, update_steps};
use gingham_calc::incremental::{Calculator, Change, Update};
use gingham_calc::snapshot::NatPools;
use gingham_dataplane::render::{Interfaces, flow_cause};
use gingham_dataplane::{Programmer, Recording, Renderer, Script, Settings, Table};
use gingham_model::Resource;
use ipnet::{IpNet, Ipv6Net};

fn names<'a>(a: impl Iterator<Item = &'a String>) -> BTreeSet<&'a str> {
    a.map(String::as_str).collect()
}

/// Applies `changes` to `renderer`: the transaction from the table before them to the one
/// after (the touched names only), and the chains it writes (new or changed).
fn apply_and_diff(renderer: &mut Renderer, changes: &[Change]) -> (Table, Script, Vec<String>) {
    let before = renderer.table().clone();
    renderer.apply(changes);
    let touched = renderer.take_touched();
    let script = before
        .diff_only(
            renderer.table(),
            &names(touched.chains.iter()),
            &names(touched.sets.iter()),
        )
        .unwrap();
    let written = written(&before, renderer.table());
    (before, script, written)
}

/// The chains of `after` that are new or differ from `before`'s.
fn written(before: &Table, after: &Table) -> Vec<String> {
    after
        .chains
        .iter()
        .filter(|(n, c)| before.chains.get(*n) != Some(*c))
        .map(|(n, _)| n.clone())
        .collect()
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

/// A workload endpoint made dual-stack (an IPv6 address derived from its IPv4 one beside it), or
/// taken back to IPv4 only; false for any other resource.
fn toggle_ipv6(r: &mut Resource) -> bool {
    let Resource::WorkloadEndpoint(w) = r else {
        return false;
    };
    let nets = &mut w.spec.ip_networks;
    if nets.iter().any(|n| matches!(n, IpNet::V6(_))) {
        nets.retain(|n| matches!(n, IpNet::V4(_)));
        return true;
    }
    let Some(v4) = nets.iter().find_map(|n| match n {
        IpNet::V4(v) => Some(v.addr()),
        IpNet::V6(_) => None,
    }) else {
        return false;
    };
    let v6 = std::net::Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(u32::from(v4)));
    nets.push(IpNet::V6(Ipv6Net::new(v6, 128).unwrap()));
    true
}

/// Rules of the table that match a set's IPv6 family positively.
fn ipv6_set_rules(t: &Table) -> usize {
    t.chains
        .values()
        .flat_map(|c| &c.rules)
        .filter(|r| {
            ["@h6", "@s6", "@n6"]
                .iter()
                .any(|s| r.text.contains(&format!(" {s}")))
        })
        .count()
}

#[test]
fn incremental_rendering_equals_a_full_render() {
    let seeds = property_seeds(120);
    let node = "node-a";
    let (mut steps_checked, mut partial_syncs, mut edited_sets) = (0usize, 0usize, 0usize);
    // Updates after which the rules matching sets' IPv6 families are more or fewer.
    let mut ipv6_flips = 0usize;
    // Interface index changes (an interface appearing, going, or created again) given to a
    // renderer whose dispatch maps are keyed by index, and switches between names and indexes.
    let (mut link_changes, mut key_switches) = (0usize, 0usize);
    for seed in 0..seeds {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
        let mut calc = Calculator::new(node);
        let mut settings = Settings::default();
        // Odd seeds key the dispatch maps by interface index: the node's interfaces, each
        // with the next index as the kernel gives them.
        let mut links: Option<BTreeMap<String, u32>> = (seed % 2 == 1).then(BTreeMap::new);
        let mut next_index = 100u32;
        let mut renderer = Renderer::with_links(calc.state(), settings.clone(), links.clone());
        let mut programmer = Programmer::new(Recording::default());
        let touched = renderer.take_touched();
        programmer.sync_touched(renderer.table(), &touched).unwrap();
        let mut current: BTreeMap<String, Resource> = BTreeMap::new();
        for (i, step) in update_steps(seed, &mut rng).into_iter().enumerate() {
            // Dual stack: some workloads get an IPv6 address as they are written, and some
            // deletions become a workload going dual-stack or back to IPv4 only (its labels
            // unchanged: only the IPv6 families of its sets flip).
            let step = match step {
                Some(Update::Upsert(mut r)) if rng.chance(40) => {
                    toggle_ipv6(&mut r);
                    Some(Update::Upsert(r))
                }
                None if rng.chance(50) => {
                    let weps: Vec<&Resource> = current
                        .values()
                        .filter(|r| matches!(r, Resource::WorkloadEndpoint(_)))
                        .collect();
                    if weps.is_empty() {
                        None
                    } else {
                        let mut r = weps[rng.below(weps.len())].clone();
                        toggle_ipv6(&mut r);
                        Some(Update::Upsert(Box::new(r)))
                    }
                }
                s => s,
            };
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
            if rng.chance(3) {
                links = match links {
                    Some(_) => None,
                    None => Some(BTreeMap::new()),
                };
                renderer.set_links(links.clone());
                key_switches += 1;
            }
            if let Some(l) = links.as_mut() {
                let ifaces: Vec<&String> = current
                    .values()
                    .filter_map(|r| match r {
                        Resource::WorkloadEndpoint(w) if w.spec.node == node => {
                            Some(&w.spec.interface_name)
                        }
                        _ => None,
                    })
                    .collect();
                for _ in 0..3 {
                    if ifaces.is_empty() || !rng.chance(50) {
                        continue;
                    }
                    let name = ifaces[rng.below(ifaces.len())].clone();
                    match (l.contains_key(&name), rng.below(3)) {
                        (true, 0) => {
                            l.remove(&name);
                        }
                        (true, 1) | (false, _) => {
                            next_index += 1;
                            l.insert(name, next_index);
                        }
                        _ => continue,
                    }
                    link_changes += 1;
                }
                renderer.set_links(Some(l.clone()));
            }
            let fresh = Renderer::with_links(calc.state(), settings.clone(), links.clone());
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
                // The sets' element edits say exactly what changed: the diff that follows
                // them (without comparing those sets whole) is the same.
                assert_eq!(
                    before.diff_edited(
                        &full.table,
                        &names(touched.chains.iter()),
                        &names(touched.sets.iter()),
                        &touched.edits
                    ),
                    before.diff(&full.table),
                    "{at}: edits {:?}",
                    touched.edits
                );
                edited_sets += touched.edits.len();
                partial_syncs += 1;
            }
            programmer.sync_touched(renderer.table(), &touched).unwrap();
            assert_eq!(programmer.installed(), Some(renderer.table()), "{at}");
            if ipv6_set_rules(&before) != ipv6_set_rules(renderer.table()) {
                ipv6_flips += 1;
            }
            steps_checked += 1;
        }
    }
    assert!(steps_checked > seeds as usize * 20, "{steps_checked}");
    assert!(partial_syncs > steps_checked / 2, "{partial_syncs}");
    assert!(edited_sets > partial_syncs / 4, "{edited_sets}");
    assert!(ipv6_flips > seeds as usize, "{ipv6_flips}");
    assert!(link_changes > seeds as usize * 5, "{link_changes}");
    assert!(key_switches > seeds as usize / 4, "{key_switches}");
    eprintln!(
        "{steps_checked} updates ({partial_syncs} partial syncs, {edited_sets} sets followed by their edits, {ipv6_flips} changing the rules of IPv6 set families, {link_changes} interface index changes, {key_switches} switches between name and index keys), always equal to a full render"
    );
}

/// `n` workloads alike (`cali0000`… on node-a, namespace web, app=web), their namespace profile
/// and a policy selecting them all (ingress TCP 443 only).
fn alike_pods(n: usize) -> Vec<Resource> {
    let mut text = String::from(
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.web}\nspec:\n  ingress: [{action: Allow}]\n  egress: [{action: Allow}]\n---\n\
         apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: before, namespace: web}\nspec:\n  selector: app == 'web'\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [443]}}]\n---\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node--a-k8s-pod{i}-eth0, namespace: web, labels: {{app: web, projectcalico.org/namespace: web}}}}\nspec: {{node: node-a, orchestrator: k8s, pod: pod{i}, endpoint: eth0, interfaceName: cali{i:04}, ipNetworks: [10.0.0.{}/32], profiles: [kns.web]}}\n---\n",
            i + 1
        ));
    }
    gingham_model::load_resources("pods.yaml", &text).unwrap()
}

/// Workloads with the same stage share its chain: a policy that selects forty-one workloads
/// alike (which all had another policy before) writes one new stage chain (which inlines both
/// policies and the profile) and moves forty-one dispatch map elements; it does not rewrite a
/// chain per workload. The old stage chain goes with its last user.
#[test]
fn a_policy_selecting_many_alike_workloads_writes_one_stage_chain() {
    const PODS: usize = 41;
    let mut calc = Calculator::new("node-a");
    calc.load_all(alike_pods(PODS));
    let mut renderer = Renderer::new(calc.state(), Settings::default());
    renderer.take_touched();
    let ingress_stages = |t: &Table| {
        t.sets["wl-ingress"]
            .elements
            .iter()
            .filter(|e| e.starts_with("\"cali"))
            .map(|e| e.rsplit(' ').next().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        ingress_stages(renderer.table()).len(),
        1,
        "one shared stage"
    );

    let policy = gingham_model::load_resources(
        "policy.yaml",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: web, namespace: web}\nspec:\n  selector: app == 'web'\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]\n",
    )
    .unwrap();
    let changes = calc.apply(Update::Upsert(Box::new(policy[0].clone())));
    assert_eq!(changes.len(), PODS, "every workload's program changes");
    // Chains the update writes: new or changed ones (the programmer rewrites exactly these).
    let (before, script, written) = apply_and_diff(&mut renderer, &changes);
    // The new stage chain only: its tiers and profile are inlined (no tier or policy chain).
    assert_eq!(written.len(), 1, "chains written: {written:#?}");
    let moved = script
        .text
        .lines()
        .filter(|l| l.contains("wl-ingress"))
        .map(|l| l.matches("\"cali").count())
        .sum::<usize>();
    assert_eq!(
        moved,
        2 * PODS,
        "each element deleted and added once:\n{}",
        script.text
    );
    assert_eq!(
        ingress_stages(renderer.table()).len(),
        1,
        "still one shared stage"
    );
    assert_ne!(ingress_stages(&before), ingress_stages(renderer.table()));
    // The old stage chains are gone, not left behind.
    let stale: Vec<&String> = before
        .chains
        .keys()
        .filter(|c| c.starts_with('w') && !renderer.table().chains.contains_key(*c))
        .collect();
    assert_eq!(stale.len(), 1, "old stage chain removed: {stale:?}");
    assert_eq!(
        renderer.table(),
        Renderer::new(calc.state(), Settings::default()).table()
    );
}

/// A policy whose rules change rewrites the shared stage chains that hold it under their names:
/// the forty-one workloads' dispatch map elements stay, and the one chain written is the stage
/// they already jump to (its tier and profile inlined), now with the new rules.
#[test]
fn a_policy_whose_rules_change_rewrites_its_stage_chain_in_place() {
    const PODS: usize = 41;
    let policy = |port: u16| {
        gingham_model::load_resources(
            "policy.yaml",
            &format!("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: web, namespace: web}}\nspec:\n  selector: app == 'web'\n  ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [{port}]}}}}]\n"),
        )
        .unwrap()
        .remove(0)
    };
    let mut calc = Calculator::new("node-a");
    let mut resources = alike_pods(PODS);
    resources.push(policy(80));
    calc.load_all(resources);
    let mut renderer = Renderer::new(calc.state(), Settings::default());
    renderer.take_touched();
    let changes = calc.apply(Update::Upsert(Box::new(policy(8080))));
    assert_eq!(changes.len(), PODS, "every workload's program changes");
    let (before, script, written) = apply_and_diff(&mut renderer, &changes);
    assert_eq!(written.len(), 1, "chains written: {written:#?}");
    assert!(
        before.chains.contains_key(&written[0]),
        "the stage chain the workloads jump to, rewritten: {written:?}"
    );
    assert_eq!(
        before.sets["wl-ingress"],
        renderer.table().sets["wl-ingress"],
        "no dispatch map element moves"
    );
    assert!(
        !script.text.contains("element") && !script.text.contains("add chain"),
        "{}",
        script.text
    );
    assert!(script.text.contains("dport { 8080 }"), "{}", script.text);
    assert_eq!(
        renderer.table(),
        Renderer::new(calc.state(), Settings::default()).table()
    );
}

/// A flow log tag of a shared stage chain names the stage of the workload the packet was
/// going to (its way out is the workload's interface), not the first workload sharing it.
#[test]
fn a_shared_stage_drop_names_the_workload_by_the_packets_interface() {
    let mut calc = Calculator::new("node-a");
    calc.load_all(alike_pods(3));
    let program = calc.state();
    let table = Renderer::new(program.clone(), Settings::default())
        .table()
        .clone();
    let tags: Vec<String> = table
        .chains
        .iter()
        .filter(|(n, _)| n.starts_with('w') && n.ends_with('i'))
        .flat_map(|(_, c)| c.rules.iter())
        .filter_map(|r| {
            r.text
                .split_once(" prefix \"")
                .map(|(_, t)| t.trim_end_matches('"').to_owned())
        })
        // The end of the first tier (inlined in the stage chain: its tag names tier 0).
        .filter(|t| t.ends_with("i0"))
        .collect();
    assert_eq!(
        tags.len(),
        1,
        "one end-of-tier log rule for the shared ingress stage: {tags:?}"
    );
    for (iface, pod) in [
        ("cali0000", "pod0"),
        ("cali0002", "pod2"),
        ("cali0001", "pod1"),
    ] {
        let via = Interfaces {
            input: Some("eth0"),
            output: Some(iface),
        };
        let cause = flow_cause(&program, &tags[0], via).expect("the tag names a cause");
        let stage = cause.stage.unwrap_or_default();
        assert!(stage.contains(&format!("web/{pod}")), "{iface}: {stage}");
        assert_eq!(cause.tier.as_deref(), Some("default"));
    }
    // Without interfaces, the cause is still known (any of the workloads alike).
    let cause = flow_cause(&program, &tags[0], Interfaces::default()).unwrap();
    assert_eq!(cause.tier.as_deref(), Some("default"));
}

/// Two endpoints given one interface with different programs: the dispatch maps hold one
/// element for it, `drop` (which endpoint the interface is cannot be known), never two with
/// one key (nft would refuse every transaction); when one goes, the other's verdict is the
/// element. Incremental rendering equals a full one throughout.
#[test]
fn two_endpoints_on_one_interface_close_it_until_one_goes() {
    let mut resources = alike_pods(2);
    // pod1 moves to another namespace, keeping pod0's interface, with a profile that does not
    // exist there (another program).
    let other = gingham_model::load_resources(
        "other.yaml",
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--a-k8s-pod9-eth0, namespace: shop, labels: {app: shop, projectcalico.org/namespace: shop}}\nspec: {node: node-a, orchestrator: k8s, pod: pod9, endpoint: eth0, interfaceName: cali0000, ipNetworks: [10.0.0.9/32], profiles: [kns.shop]}\n",
    )
    .unwrap();
    resources.extend(other.clone());
    let mut calc = Calculator::new("node-a");
    calc.load_all(resources);
    let mut renderer = Renderer::new(calc.state(), Settings::default());
    let of = |t: &Table, map: &str| -> Vec<String> {
        t.sets[map]
            .elements
            .iter()
            .filter(|e| e.starts_with("\"cali0000\""))
            .cloned()
            .collect()
    };
    for map in ["wl-ingress", "wl-egress"] {
        assert_eq!(of(renderer.table(), map), ["\"cali0000\" : drop"], "{map}");
    }
    // The one in shop goes: pod0's own verdicts are back.
    let changes = calc.apply(Update::Delete {
        kind: other[0].kind(),
        namespace: Some("shop".into()),
        name: other[0].meta().name.clone(),
    });
    renderer.apply(&changes);
    let full = Renderer::new(calc.state(), Settings::default());
    assert_eq!(renderer.table(), full.table());
    for map in ["wl-ingress", "wl-egress"] {
        let now = of(renderer.table(), map);
        assert_eq!(now.len(), 1, "{map}: {now:?}");
        assert!(!now[0].ends_with(": drop"), "{map}: {now:?}");
    }
    // And it comes back: closed again, as a full render has it.
    renderer.apply(&calc.apply(Update::Upsert(Box::new(other[0].clone()))));
    assert_eq!(
        renderer.table(),
        Renderer::new(calc.state(), Settings::default()).table()
    );
    assert_eq!(of(renderer.table(), "wl-ingress"), ["\"cali0000\" : drop"]);
}

/// The rules a new forwarded packet from interface `iif` to `oif` can meet in the table, at
/// most: the `forward` hook's rules in order; an interface name test evaluated; a dispatch
/// map's element for the interface (or its catch-all) followed; a rule's verdict taken when
/// nothing else conditions it; other conditions assumed to let the packet go on (a jump
/// taken, an accept, drop or return not): an upper bound, exact on the dispatch path.
fn rules_on_new_flow_path(t: &Table, iif: &str, oif: &str) -> usize {
    new_flow_path(t, iif, oif).0
}

/// The rules a new forwarded packet can meet (as [`rules_on_new_flow_path`]), and the chains
/// it enters, in order.
fn new_flow_path(t: &Table, iif: &str, oif: &str) -> (usize, Vec<String>) {
    /// What a rule does with the packet: nothing (next rule), or a verdict.
    fn verdict(t: &Table, text: &str, iif: &str, oif: &str) -> Option<String> {
        let mut rest = text;
        let mut known = true;
        // Conditions on the interfaces, as many as the rule starts with.
        while let Some((key, ifname)) = [("iifname ", iif), ("oifname ", oif)]
            .into_iter()
            .find(|(key, _)| rest.starts_with(key))
        {
            if let Some(cond) = rest.strip_prefix(key) {
                if let Some(map) = cond.strip_prefix("vmap @") {
                    return Some(element(t, map, ifname));
                }
                let (neg, cond) = match cond.strip_prefix("!= ") {
                    Some(c) => (true, c),
                    None => (false, cond),
                };
                let cond = cond.strip_prefix('"').expect("a quoted name");
                let (pattern, after) = cond.split_once("\" ").expect("a rule after the name");
                let matches = match pattern.strip_suffix('*') {
                    Some(prefix) => ifname.starts_with(prefix),
                    None => ifname == pattern,
                };
                if matches == neg {
                    return None;
                }
                rest = after;
            }
        }
        let rest = rest.strip_prefix("counter ").unwrap_or(rest);
        let words: Vec<&str> = rest.split(' ').collect();
        if let Some(w) = words.windows(2).find(|w| matches!(w[0], "jump" | "goto")) {
            return Some(format!("{} {}", w[0], w[1]));
        }
        let last = *words.last().unwrap();
        if words.len() > 1 {
            known = false;
        }
        (known && matches!(last, "accept" | "drop" | "return")).then(|| last.to_owned())
    }
    fn element(t: &Table, map: &str, ifname: &str) -> String {
        let set = &t.sets[map];
        let find = |key: &str| {
            set.elements
                .iter()
                .find_map(|e| e.strip_prefix(&format!("{key} : ")).map(str::to_owned))
        };
        find(&format!("\"{ifname}\""))
            .or_else(|| find("*"))
            .unwrap_or_else(|| "continue".into())
    }
    /// Rules met in `chain`, and whether the walk ended there (a verdict other than return).
    fn walk(
        t: &Table,
        chain: &str,
        iif: &str,
        oif: &str,
        depth: usize,
        entered: &mut Vec<String>,
    ) -> (usize, bool) {
        assert!(depth < 16, "jumps too deep at {chain}");
        entered.push(chain.to_owned());
        let mut met = 0;
        for r in &t.chains[chain].rules {
            met += 1;
            let Some(v) = verdict(t, &r.text, iif, oif) else {
                continue;
            };
            match v.split_once(' ') {
                Some(("jump", c)) => {
                    let (n, ended) = walk(t, c, iif, oif, depth + 1, entered);
                    met += n;
                    if ended {
                        return (met, true);
                    }
                }
                Some(("goto", c)) => {
                    let (n, ended) = walk(t, c, iif, oif, depth + 1, entered);
                    return (met + n, ended);
                }
                _ => match v.as_str() {
                    "return" => return (met, false),
                    "accept" | "drop" => return (met, true),
                    _ => {}
                },
            }
        }
        (met, false)
    }
    let mut entered = Vec::new();
    let (met, _) = walk(t, "forward", iif, oif, 0, &mut entered);
    (met, entered)
}

/// A new flow between a workload and another node (or the outside) meets no map lookup and no
/// chain on the other side: the interface name test before each map lets it go on (issue 15:
/// the lookup that missed and the catch-all chain cost about 70 ns per node, which the two-node
/// UDP figures showed). A workload interface without a program still meets the catch-all.
#[test]
fn a_new_flow_to_or_from_another_node_meets_no_catch_all_chain() {
    let mut r = alike_pods(2);
    r.retain(|r| !matches!(r, Resource::NetworkPolicy(_)));
    let mut calc = Calculator::new("node-a");
    calc.load_all(r);
    let t = gingham_dataplane::render(&calc.state(), &Settings::default()).table;
    // Conntrack (two rules), the egress map, the ingress rule's name test: no mark clearing
    // after them (a stage leaves no bit of ours behind:
    // `iptables::sys_our_mark_bits_never_leave_the_table`).
    assert_eq!(rules_on_new_flow_path(&t, "cali0000", "eth0"), 4);
    // Conntrack, the egress rule's name test, the ingress map (its element accepts).
    assert_eq!(rules_on_new_flow_path(&t, "eth0", "cali0001"), 4);
    // A workload interface without a program: the catch-all's flow log rule and drop.
    assert_eq!(rules_on_new_flow_path(&t, "cali9999", "eth0"), 5);
}

/// The chain validations the kernel (6.18) does at a commit that adds a rule or a jump, and the
/// (hook, chain) pairs they cover: from each base chain, its rules in order, a verdict map's
/// elements before its catch-all; a chain reached again from the same hook is skipped when it
/// was validated there at the same depth or a greater one (`nft_chain_vstate_valid`).
fn kernel_validations(t: &Table) -> (usize, usize) {
    use std::collections::HashMap;
    /// The chains a rule can jump or go to, in the order the kernel walks them.
    fn targets(t: &Table, text: &str) -> Vec<String> {
        let words: Vec<&str> = text.split(' ').collect();
        let mut out = Vec::new();
        for w in words.windows(2) {
            match (w[0], w[1].strip_prefix('@')) {
                ("jump" | "goto", _) => out.push(w[1].to_owned()),
                ("vmap", Some(map)) => {
                    let (catch_all, keyed): (Vec<&String>, Vec<&String>) = t.sets[map]
                        .elements
                        .iter()
                        .partition(|e| e.starts_with("* : "));
                    for e in keyed.into_iter().chain(catch_all) {
                        let verdict = e.rsplit(" : ").next().unwrap();
                        if let Some((_, chain)) = verdict
                            .split_once(' ')
                            .filter(|(v, _)| matches!(*v, "jump" | "goto"))
                        {
                            out.push(chain.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
    fn validate(
        t: &Table,
        hook: &str,
        chain: &str,
        level: usize,
        depths: &mut HashMap<(String, String), usize>,
        count: &mut usize,
    ) {
        let key = (hook.to_owned(), chain.to_owned());
        if level > 0 && depths.get(&key).is_some_and(|d| *d >= level) {
            return;
        }
        *count += 1;
        for rule in &t.chains[chain].rules {
            for next in targets(t, &rule.text) {
                validate(t, hook, &next, level + 1, depths, count);
            }
        }
        let depth = depths.entry(key).or_insert(level);
        *depth = (*depth).max(level);
    }
    let (mut depths, mut count) = (HashMap::new(), 0);
    for (name, chain) in &t.chains {
        if let Some(base) = &chain.base {
            validate(t, &base.hook, name, 0, &mut depths, &mut count);
        }
    }
    (count, depths.len())
}

/// With the dispatch maps keyed by interface index (as the agent has them), the kernel
/// validates each stage chain once per hook, as with maps keyed by name: the index map and the
/// name map behind it reach the stages at one depth. With the name map behind a catch-all
/// chain one level deeper, every stage was validated twice at each commit that adds a rule or
/// a jump (the floor of `scripts/bench agent`: +0.05 ms at 100 policies, +0.11 ms at 10,000).
#[test]
fn keyed_by_index_the_kernel_validates_each_stage_once_per_hook() {
    const PODS: usize = 6;
    let mut resources = alike_pods(PODS);
    // Egress stages too: a policy selecting the pods' egress.
    resources.extend(
        gingham_model::load_resources(
            "egress.yaml",
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: out, namespace: web}\nspec:\n  selector: app == 'web'\n  egress: [{action: Allow, protocol: UDP, destination: {ports: [53]}}]\n",
        )
        .unwrap(),
    );
    let mut calc = Calculator::new("node-a");
    calc.load_all(resources);
    let links: BTreeMap<String, u32> = (0..PODS)
        .map(|i| (format!("cali{i:04}"), 10 + i as u32))
        .collect();
    let by_index = Renderer::with_links(calc.state(), Settings::default(), Some(links)).rendered();
    let by_name = gingham_dataplane::render(&calc.state(), &Settings::default());
    for (what, t) in [("by index", &by_index.table), ("by name", &by_name.table)] {
        let stages = t
            .chains
            .keys()
            .filter(|n| n.starts_with('w') && !n.starts_with("wl-"));
        assert!(
            stages.count() >= 2,
            "{what}: an ingress and an egress stage"
        );
        let (validations, chains) = kernel_validations(t);
        assert_eq!(
            validations, chains,
            "{what}: a chain validated twice from one hook"
        );
    }
}

/// A new flow between two workloads that no policy selects, whose namespace profile allows
/// everything (Kubernetes' default), meets four rules: conntrack (established or related,
/// then invalid), the egress dispatch map, the ingress dispatch map; no chain, no rule of ours
/// beyond them. A selected workload's path
/// is bounded too: its stage chain, one tier chain, the policy's and the profile's chains.
#[test]
fn a_new_flow_between_unselected_workloads_meets_only_the_dispatch_maps() {
    let pods = |policy: bool| {
        let mut r = alike_pods(2);
        if !policy {
            r.retain(|r| !matches!(r, Resource::NetworkPolicy(_)));
        }
        r
    };
    let mut calc = Calculator::new("node-a");
    calc.load_all(pods(false));
    let t = gingham_dataplane::render(&calc.state(), &Settings::default()).table;
    assert_eq!(rules_on_new_flow_path(&t, "cali0000", "cali0001"), 4);

    let mut calc = Calculator::new("node-a");
    calc.load_all(pods(true));
    let t = gingham_dataplane::render(&calc.state(), &Settings::default()).table;
    let selected = rules_on_new_flow_path(&t, "cali0000", "cali0001");
    assert!(selected <= 20, "{selected} rules to a selected workload");
}

/// A workload selected by several policies (no Pass rule among them): its ingress stage chain
/// holds their rules itself, so a new flow to it meets conntrack, the two dispatch maps and the
/// rules of its stage chain, and nothing else: no jump to a tier or policy chain, no mark bit
/// set or tested, no policy chain in the table at all. An Allow accepts at once.
#[test]
fn a_new_flow_to_a_workload_selected_by_several_policies_meets_only_its_stage_chain() {
    const POLICIES: usize = 6;
    let mut resources = alike_pods(2);
    let mut text = String::new();
    for i in 0..POLICIES {
        text.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: more{i}, namespace: web}}\nspec:\n  selector: app == 'web'\n  ingress: [{{action: Deny, protocol: UDP, destination: {{ports: [{}]}}}}, {{action: Log, protocol: TCP}}, {{action: Allow, protocol: TCP, destination: {{ports: [{}]}}}}]\n---\n",
            5000 + i,
            8000 + i
        ));
    }
    resources.extend(gingham_model::load_resources("more.yaml", &text).unwrap());
    let mut calc = Calculator::new("node-a");
    calc.load_all(resources);
    let t = gingham_dataplane::render(&calc.state(), &Settings::default()).table;
    let (met, entered) = new_flow_path(&t, "cali0000", "cali0001");
    // The egress stage is the map's verdict (no policy selects egress); the ingress stage is
    // one chain.
    assert_eq!(entered.len(), 2, "chains entered: {entered:?}");
    let stage = &t.chains[&entered[1]];
    assert!(entered[1].starts_with('w'), "{entered:?}");
    for r in &stage.rules {
        assert!(
            !r.text.contains("jump ") && !r.text.contains("goto ") && !r.text.contains("meta mark"),
            "{}: {}",
            entered[1],
            r.text
        );
    }
    // Every policy's rules are there, in order (each per family), Allow accepting at once.
    let policy_rules: Vec<&str> = stage
        .rules
        .iter()
        .filter(|r| r.note.contains(" rule "))
        .map(|r| r.note.as_str())
        .collect();
    assert_eq!(
        policy_rules.len(),
        2 * (3 * POLICIES + 1) + 2,
        "{policy_rules:#?}"
    );
    assert!(
        stage
            .rules
            .iter()
            .filter(|r| r.note.contains("web/more") && r.note.ends_with(" rule 2"))
            .all(|r| r.text.ends_with("counter accept"))
    );
    // conntrack (two rules) and the two maps, then the stage's rules up to its end-of-tier drop.
    let to_end = stage
        .rules
        .iter()
        .position(|r| r.text == "counter drop")
        .expect("an end-of-tier drop");
    assert_eq!(met, 4 + to_end + 1);
    let policy_chains: Vec<&String> = t
        .chains
        .keys()
        .filter(|n| n.starts_with('p') || n.starts_with('r'))
        .collect();
    assert!(policy_chains.is_empty(), "{policy_chains:?}");
}

/// A rule is not rendered for a family in which its selector's set has no member: with IPv4
/// clients only, the stage holds the rule for IPv4 and none for IPv6. When a client gets an
/// IPv6 address (the set's first IPv6 member), the IPv6 rule appears in a new stage chain;
/// another IPv4 client only adds an element; when the IPv6 address goes, so does the rule. The
/// incremental table equals a full render throughout.
#[test]
fn a_rule_is_rendered_only_for_the_families_its_set_has_members_of() {
    let mut resources = alike_pods(2);
    let client = |i: usize, v6: bool| {
        let nets = if v6 {
            format!("[10.0.1.{i}/32, 'fd00::1:{i}/128']")
        } else {
            format!("[10.0.1.{i}/32]")
        };
        gingham_model::load_resources(
            "client.yaml",
            &format!("apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node--b-k8s-client{i}-eth0, namespace: web, labels: {{app: client, projectcalico.org/namespace: web}}}}\nspec: {{node: node-b, orchestrator: k8s, pod: client{i}, endpoint: eth0, interfaceName: cali{i:011}, ipNetworks: {nets}, profiles: [kns.web]}}\n"),
        )
        .unwrap()
        .remove(0)
    };
    resources.extend(
        gingham_model::load_resources(
            "policy.yaml",
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: clients, namespace: web}\nspec:\n  selector: app == 'web'\n  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'client'}}]\n",
        )
        .unwrap(),
    );
    resources.push(client(1, false));
    let mut calc = Calculator::new("node-a");
    calc.load_all(resources);
    let mut renderer = Renderer::new(calc.state(), Settings::default());
    renderer.take_touched();
    // The policy's rule, by family, in the tables' chains.
    let rule_families = |t: &Table| -> (usize, usize) {
        let of = |family: &str| {
            t.chains
                .values()
                .flat_map(|c| &c.rules)
                .filter(|r| r.note.ends_with("web/clients rule 0") && r.text.contains(family))
                .count()
        };
        (of("meta nfproto ipv4"), of("meta nfproto ipv6"))
    };
    assert_eq!(rule_families(renderer.table()), (1, 0), "IPv4 clients only");
    let mut step = |renderer: &mut Renderer, update: Update| {
        let before = renderer.table().clone();
        let changes = calc.apply(update);
        renderer.apply(&changes);
        let touched = renderer.take_touched();
        assert_eq!(
            renderer.table(),
            Renderer::new(calc.state(), Settings::default()).table(),
            "incremental equals full"
        );
        let written = written(&before, renderer.table());
        (rule_families(renderer.table()), written, touched)
    };
    // The first IPv6 member: the rule appears for IPv6, in a new stage chain.
    let (families, written, _) = step(&mut renderer, Update::Upsert(Box::new(client(1, true))));
    assert_eq!(families, (1, 1), "the IPv6 rule appears");
    assert_eq!(written.len(), 1, "one new stage chain: {written:?}");
    // Another IPv4 client: elements only, no chain.
    let (families, written, touched) =
        step(&mut renderer, Update::Upsert(Box::new(client(2, false))));
    assert_eq!(families, (1, 1));
    assert!(
        written.is_empty() && touched.chains.is_empty(),
        "{touched:?}"
    );
    assert!(!touched.edits.is_empty(), "{touched:?}");
    // The last IPv6 member leaves: the IPv6 rule goes.
    let (families, written, _) = step(&mut renderer, Update::Upsert(Box::new(client(1, false))));
    assert_eq!(families, (1, 0), "the IPv6 rule goes");
    assert_eq!(written.len(), 1, "the stage chain before: {written:?}");
    // The flow logger names the stage chains' drops from the endpoints' programs and which
    // families of their sets are empty (what the agent hands it), not from every member.
    let view = gingham_calc::program::NodeProgram {
        endpoints: renderer.program().endpoints.clone(),
        sets: renderer.set_families(),
    };
    let tags: Vec<String> = renderer
        .table()
        .chains
        .iter()
        .filter(|(n, _)| n.starts_with('w'))
        .flat_map(|(_, c)| c.rules.iter())
        .filter_map(|r| {
            r.text
                .split_once(" prefix \"")
                .map(|(_, t)| t.trim_end_matches('"').to_owned())
        })
        .collect();
    assert!(!tags.is_empty());
    for tag in &tags {
        assert!(
            flow_cause(&view, tag, Interfaces::default()).is_some(),
            "{tag} names no cause"
        );
    }
}
