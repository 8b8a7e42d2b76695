//! Hit counters: the renderer records which policy or profile rule (tier, policy, direction,
//! index) every nft rule of the shared chains came from, and the kernel's counters are summed
//! per policy rule through that record.

use std::collections::{BTreeMap, BTreeSet};

use gingham_calc::input::prepare_documents;
use gingham_calc::{Direction, Snapshot};
use gingham_dataplane::{Hits, Owner, Renderer, RuleOrigin, Settings, rule_hits};

const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: default, labels: {app: web}}, spec: {nodeName: n1}, status: {podIP: 10.4.0.10}}
- {apiVersion: v1, kind: Pod, metadata: {name: db, namespace: default, labels: {app: db}}, spec: {nodeName: n1}, status: {podIP: 10.4.0.11}}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.guard}
spec:
  tier: security
  selector: all()
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [23]}
  - action: Pass
  egress:
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: default}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80, 443]}
  - action: Allow
    protocol: UDP
    source: {nets: [10.9.0.0/16]}
  egress:
  - action: Allow
"#;

fn snapshot(text: &str) -> Snapshot {
    let mut docs = gingham_model::load::parse_documents(text).unwrap();
    prepare_documents(&mut docs);
    let json: Vec<String> = docs.iter().map(ToString::to_string).collect();
    let loaded = gingham_model::load("cluster.yaml", &json.join("\n")).unwrap();
    Snapshot::build(
        &loaded
            .into_iter()
            .flat_map(|d| d.resources)
            .collect::<Vec<_>>(),
    )
}

fn renderer() -> Renderer {
    let snap = snapshot(CLUSTER);
    Renderer::new(snap.node_program(Some("n1")), Settings::default())
}

fn origin(owner: &Owner, direction: Direction, rule: usize) -> RuleOrigin {
    RuleOrigin {
        owner: owner.clone(),
        direction,
        rule,
    }
}

/// Whether a rule of the table is a policy or profile rule (or the flow log rule of one):
/// what the record must cover, and nothing else.
fn is_policy_rule(rule: &gingham_dataplane::table::Rule) -> bool {
    if rule.note == "flow log" {
        // Its tag names the chain and the rule index: `gh <chain> <index>[ allow]`.
        let tag = rule
            .text
            .rsplit_once(" prefix \"")
            .map_or("", |(_, t)| t.trim_end_matches('"'));
        return tag
            .split(' ')
            .nth(2)
            .is_some_and(|i| i.parse::<usize>().is_ok());
    }
    rule.note
        .rsplit_once(" rule ")
        .is_some_and(|(_, i)| i.parse::<usize>().is_ok())
}

/// Every policy and profile rule of every chain (stage chains inline them), with the origin the
/// renderer recorded.
fn recorded(r: &Renderer) -> Vec<(String, String, RuleOrigin)> {
    let mut out = Vec::new();
    for (name, chain) in &r.table().chains {
        let o = r.origins().get(name);
        for rule in &chain.rules {
            let found = o.and_then(|o| o.rules.get(rule.id()).map(|x| (o.direction, x)));
            assert_eq!(
                found.is_some(),
                is_policy_rule(rule),
                "{name}: {} ({}) recorded: {found:?}",
                rule.text,
                rule.note
            );
            if let Some((direction, (owner, index))) = found {
                out.push((
                    name.clone(),
                    rule.id().to_owned(),
                    origin(owner, direction, *index),
                ));
            }
        }
    }
    out
}

#[test]
fn every_policy_and_profile_rule_maps_to_its_tier_policy_direction_and_index() {
    let r = renderer();
    // Every chain holding policy or profile rules (a stage chain inlining them, or a policy
    // `p…` or profile `r…` chain) has a record, and nothing else has.
    let holding: BTreeSet<&String> = r
        .table()
        .chains
        .iter()
        .filter(|(_, c)| c.rules.iter().any(is_policy_rule))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(holding, r.origins().keys().collect::<BTreeSet<_>>());
    let guard = Owner::Policy {
        tier: "security".into(),
        policy: gingham_calc::PolicyRef {
            kind: gingham_calc::snapshot::PolicyKind::GlobalNetworkPolicy,
            namespace: None,
            name: "security.guard".into(),
        },
    };
    let web = Owner::Policy {
        tier: "default".into(),
        policy: gingham_calc::PolicyRef {
            kind: gingham_calc::snapshot::PolicyKind::NetworkPolicy,
            namespace: Some("default".into()),
            name: "web".into(),
        },
    };
    let profile = Owner::Profile("kns.default".into());
    let got: BTreeMap<RuleOrigin, usize> =
        recorded(&r)
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (_, _, o)| {
                *m.entry(o).or_default() += 1;
                m
            });
    // The nft rules of each policy rule: one per family, and per port alternative; a Deny
    // rule's flow-log rule (no counter) before each of its drops. The security tier has a Pass
    // rule: it keeps its policy's chain. The default tier and the profile are inlined in each
    // stage chain that has them: the profile in both workloads' stages (two each way).
    let want = BTreeMap::from([
        (origin(&guard, Direction::Ingress, 0), 4),
        (origin(&guard, Direction::Ingress, 1), 2),
        (origin(&guard, Direction::Egress, 0), 2),
        (origin(&web, Direction::Ingress, 0), 2),
        (origin(&web, Direction::Ingress, 1), 1),
        (origin(&web, Direction::Egress, 0), 2),
        (origin(&profile, Direction::Ingress, 0), 4),
        (origin(&profile, Direction::Egress, 0), 4),
    ]);
    assert_eq!(got, want);
    // The record agrees with the notes people read in the ruleset.
    for (chain, id, o) in recorded(&r) {
        let rule = r.table().chains[&chain]
            .rules
            .iter()
            .find(|x| x.id() == id)
            .unwrap();
        if rule.note == "flow log" {
            // Its log prefix is the chain's tag and the rule's index.
            assert!(
                rule.text.contains(&format!(" {}\"", o.rule)) && !rule.text.contains("counter"),
                "{chain}: {} recorded as {o:?}",
                rule.text
            );
        } else {
            assert!(
                rule.note.ends_with(&format!(" rule {}", o.rule)),
                "{chain}: {} recorded as {o:?}",
                rule.note
            );
        }
    }
    assert_eq!(guard.kind(), "globalnetworkpolicy");
    assert_eq!(
        (web.kind(), web.tier(), web.name().as_str()),
        ("networkpolicy", "default", "default/web")
    );
    assert_eq!(
        (profile.kind(), profile.tier(), profile.name().as_str()),
        ("profile", "", "kns.default")
    );
}

/// A listing as `nft -j list table` prints it, with `counter(chain, i)` on each rule.
fn listing(r: &Renderer, counter: impl Fn(&str, usize) -> (u64, u64)) -> String {
    let mut items = vec![serde_json::json!({"metainfo": {"json_schema_version": 1}})];
    for (name, chain) in &r.table().chains {
        items.push(
            serde_json::json!({"chain": {"family": "inet", "table": "gingham", "name": name}}),
        );
        for (i, rule) in chain.rules.iter().enumerate() {
            let (packets, bytes) = counter(name, i);
            items.push(serde_json::json!({"rule": {
                "family": "inet", "table": "gingham", "chain": name, "handle": i + 4,
                "comment": format!("{} {}", rule.id(), rule.note),
                "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}},
                    {"counter": {"packets": packets, "bytes": bytes}},
                    {"drop": null}
                ]
            }}));
        }
    }
    serde_json::json!({ "nftables": items }).to_string()
}

#[test]
fn kernel_counters_sum_per_policy_rule_and_nothing_else_counts() {
    let r = renderer();
    let rules = recorded(&r);
    // Each nft rule counts a distinct number: its position in the whole list, plus one.
    let position = |chain: &str, i: usize| {
        let id = r.table().chains[chain].rules[i].id();
        rules
            .iter()
            .position(|(c, x, _)| c == chain && x == id)
            .map(|p| p as u64 + 1)
    };
    let json = listing(&r, |chain, i| match position(chain, i) {
        Some(p) => (p, 100 * p),
        // Rules of other chains (dispatch, endpoints) count too, and must not be attributed.
        None => (1_000_000, 1_000_000),
    });
    let hits = rule_hits(&json, r.origins()).unwrap();
    let mut want: BTreeMap<RuleOrigin, Hits> = BTreeMap::new();
    for (p, (_, _, o)) in rules.iter().enumerate() {
        let h = want.entry(o.clone()).or_default();
        h.packets += p as u64 + 1;
        h.bytes += 100 * (p as u64 + 1);
    }
    assert_eq!(hits, want);
    // Rules never hit are listed with zero.
    let zero = rule_hits(&listing(&r, |_, _| (0, 0)), r.origins()).unwrap();
    assert_eq!(zero.len(), want.len());
    assert!(zero.values().all(|h| *h == Hits::default()));
    assert!(rule_hits("not json", r.origins()).is_err());
}
