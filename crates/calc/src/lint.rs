//! `gingham lint`: problems a policy set has before any packet flows, each with a stable code,
//! a severity, the resource, what goes wrong and what to change.
//!
//! Pure: a [`Snapshot`] in, [`Finding`]s out. Every question about what a policy selects, what a
//! rule matches or whether a flow is dropped is answered by the snapshot's own semantics
//! ([`Policy::selects`], [`Chain::admits`], the tiers' default actions) or by the reference
//! evaluator ([`Snapshot::verdict`]), never by a second copy of them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use gingham_model::{Action, Port};
use gingham_selector::Selector;
use ipnet::IpNet;
use serde::Serialize;

use crate::eval::{Flow, PeerSpec, TCP, protocol_name};
use crate::explain::{missing_profile_fix, missing_tier_fix};
use crate::snapshot::{
    Chain, CompiledRule, Direction, Endpoint, EndpointKind, Entity, Policy, PolicyKind, Snapshot,
};

/// How bad a finding is. `error`: traffic is dropped (or the configuration cannot work) now;
/// `warning`: probably not what was meant; `info`: harmless but worth knowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule allows sources by a selector that matches nothing while nodes have no host endpoint
/// covering their addresses (seed 000).
pub const MISSING_HOST_ENDPOINT: &str = "missing-host-endpoint";
/// Endpoints name a profile that does not exist, or a workload has no profile and no policy
/// (seed 004).
pub const MISSING_PROFILE: &str = "missing-profile";
/// A Deny-only policy is the only policy of endpoints, so it drops everything else too
/// (seed 002).
pub const DENY_ONLY_ISOLATES: &str = "deny-only-isolates";
/// A policy's or a rule's selector matches no endpoint and no network set.
pub const SELECTOR_MATCHES_NOTHING: &str = "selector-matches-nothing";
/// A rule that earlier rules always decide before it.
pub const SHADOWED_RULE: &str = "shadowed-rule";
/// A policy in a tier that does not exist.
pub const MISSING_TIER: &str = "missing-tier";
/// Host endpoint policy that drops failsafe traffic (or would, without failsafe ports).
pub const FAILSAFE_LOCKOUT: &str = "failsafe-lockout";
/// Addresses or pod CIDRs outside every IP pool, or overlapping pools (seed 002's canal story).
pub const POOL_MISMATCH: &str = "pool-mismatch";
/// Two endpoints with the same address.
pub const DUPLICATE_ADDRESS: &str = "duplicate-address";

/// Every code, with its severity and what it means (`gingham lint --help` lists them).
pub const CODES: &[(&str, &str, &str)] = &[
    (
        MISSING_HOST_ENDPOINT,
        "error",
        "a GlobalNetworkPolicy rule allows sources by a selector that matches no pod or network set (so it means hosts), and nodes have no host endpoint matching it that lists their addresses, tunnel addresses included: their traffic is dropped",
    ),
    (
        MISSING_PROFILE,
        "error",
        "endpoints name a profile that does not exist (or a pod has no profile and no policy): all their traffic is dropped",
    ),
    (
        DENY_ONLY_ISOLATES,
        "error",
        "a policy with only Deny rules is the only policy of the endpoints it selects: everything it does not deny is dropped too",
    ),
    (
        SELECTOR_MATCHES_NOTHING,
        "warning",
        "a policy's selector or an Allow rule's selector matches no endpoint or network set (info for other rules)",
    ),
    (
        SHADOWED_RULE,
        "warning",
        "a rule can never match: an earlier rule of the policy, or of an earlier policy of the tier selecting the same endpoints, decides everything it matches",
    ),
    (
        MISSING_TIER,
        "error",
        "a policy is in a tier that does not exist: the endpoints it selects are closed",
    ),
    (
        FAILSAFE_LOCKOUT,
        "error",
        "failsafe ports are off and host endpoint policy drops SSH, etcd or the API server to a node (a warning: its policy would drop failsafe traffic, in or out, if failsafe ports were turned off)",
    ),
    (
        POOL_MISMATCH,
        "error",
        "a node's pod CIDR outside every IP pool, or IP pools that overlap (a warning: a workload address outside every pool)",
    ),
    (
        DUPLICATE_ADDRESS,
        "error",
        "two endpoints have the same address",
    ),
];

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// One of [`CODES`].
    pub code: &'static str,
    pub severity: Severity,
    /// The resource to look at, as `Kind name` (`GlobalNetworkPolicy allow-from-nodes`,
    /// `NetworkPolicy ns/name`, `WorkloadEndpoint ns/name`, `Profile kns.ns1`...).
    pub resource: String,
    pub message: String,
    pub fix: String,
}

/// Every finding for the snapshot, errors first, then by code and resource.
pub fn lint(snap: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    let flagged = missing_host_endpoint(snap, &mut out);
    missing_profile(snap, &mut out);
    deny_only_isolates(snap, &mut out);
    pool_mismatch(snap, &mut out);
    selector_matches_nothing(snap, &flagged, &mut out);
    shadowed_rules(snap, &mut out);
    missing_tier(snap, &mut out);
    failsafe_lockout(snap, &mut out);
    duplicate_address(snap, &mut out);
    out.sort_by(|a, b| {
        (a.severity, a.code, &a.resource, &a.message).cmp(&(
            b.severity,
            b.code,
            &b.resource,
            &b.message,
        ))
    });
    out
}

/// An address outside the cluster (TEST-NET-1), the source of failsafe checks.
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// At most five names, then how many more.
fn names<S: AsRef<str>>(list: &[S]) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<&str> = list.iter().take(SHOWN).map(AsRef::as_ref).collect();
    let more = list.len().saturating_sub(SHOWN);
    let extra = format!("and {more} more");
    if more > 0 {
        s.push(&extra);
    }
    s.join(", ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The resource of an endpoint: `WorkloadEndpoint ns/name` or `HostEndpoint name`.
fn endpoint_resource(e: &Endpoint) -> String {
    match (&e.kind, &e.namespace) {
        (EndpointKind::Workload, Some(ns)) => format!("WorkloadEndpoint {ns}/{}", e.resource),
        (EndpointKind::Workload, None) => format!("WorkloadEndpoint {}", e.resource),
        (EndpointKind::Host, _) => format!("HostEndpoint {}", e.resource),
    }
}

/// How a user names an endpoint in words.
fn endpoint_words(e: &Endpoint) -> String {
    match e.kind {
        EndpointKind::Workload => format!("pod {}", e.name),
        EndpointKind::Host => format!("host endpoint {}", e.name),
    }
}

/// Whether a rule's (folded) selector matches some endpoint or network set, by labels (the
/// members felix's IP set for it would have, addresses aside).
fn matches_any(snap: &Snapshot, sel: &Selector) -> bool {
    snap.endpoints
        .iter()
        .any(|e| sel.matches(&e.effective_labels))
        || snap.netsets.iter().any(|n| sel.matches(&n.labels))
}

/// The endpoints a policy applies to in one direction in the normal chain (workload policy, or
/// host endpoint policy for the host's own traffic).
fn selected<'a>(snap: &'a Snapshot, p: &'a Policy, dir: Direction) -> Vec<&'a Endpoint> {
    if !p.has_type(dir) {
        return Vec::new();
    }
    snap.endpoints
        .iter()
        .filter(|e| Chain::Normal.admits(p, e) && p.selects(e))
        .collect()
}

/// Rules flagged by one check, so that another does not say the same again.
type RuleKey = (String, Direction, usize);

fn rule_key(p: &Policy, dir: Direction, index: usize) -> RuleKey {
    (p.id.to_string(), dir, index)
}

/// A node and the addresses of it that no host endpoint matching a rule's selector lists.
struct Uncovered<'a> {
    node: &'a str,
    /// Empty when the input does not give the node's addresses.
    missing: Vec<IpAddr>,
}

/// Nodes some of whose addresses (tunnel addresses included) no host endpoint matching `sel`
/// lists, and nodes with no such host endpoint whose addresses are unknown.
fn uncovered_nodes<'a>(snap: &'a Snapshot, sel: &Selector) -> Vec<Uncovered<'a>> {
    let heps: Vec<&Endpoint> = snap
        .endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::Host && sel.matches(&e.effective_labels))
        .collect();
    snap.nodes
        .values()
        .filter_map(|n| {
            let mut addrs: Vec<IpAddr> = Vec::new();
            for ip in n.ips.iter().chain(&n.tunnel_ips) {
                if !addrs.contains(ip) {
                    addrs.push(*ip);
                }
            }
            let known = !addrs.is_empty();
            let missing: Vec<IpAddr> = addrs
                .into_iter()
                .filter(|ip| !heps.iter().any(|h| h.has_ip(*ip)))
                .collect();
            let has_hep = heps.iter().any(|h| h.node == n.name);
            (!missing.is_empty() || (!known && !has_hep)).then_some(Uncovered {
                node: &n.name,
                missing,
            })
        })
        .collect()
}

/// Seed 000: a GlobalNetworkPolicy allows sources by a selector that matches no workload
/// endpoint and no network set, so only hosts can have been meant; nodes whose addresses
/// (tunnel addresses included) no host endpoint matching it lists are not matched, and the
/// evaluator confirms their traffic to a pod the policy selects (on another node) is dropped.
fn missing_host_endpoint(snap: &Snapshot, out: &mut Vec<Finding>) -> BTreeSet<RuleKey> {
    let mut flagged = BTreeSet::new();
    for p in &snap.policies {
        // Namespaced policies fold their namespace into rule selectors: they cannot mean hosts.
        if p.id.kind != PolicyKind::GlobalNetworkPolicy {
            continue;
        }
        let pods: Vec<&Endpoint> = selected(snap, p, Direction::Ingress)
            .into_iter()
            .filter(|e| e.kind == EndpointKind::Workload)
            .collect();
        if pods.is_empty() {
            continue;
        }
        for r in p.rules(Direction::Ingress) {
            if r.action != Action::Allow {
                continue;
            }
            let Some(sel) = &r.source.selector else {
                continue;
            };
            let meant_for_pods = snap
                .endpoints
                .iter()
                .any(|e| e.kind == EndpointKind::Workload && sel.matches(&e.effective_labels))
                || snap.netsets.iter().any(|n| sel.matches(&n.labels));
            if meant_for_pods {
                continue;
            }
            let uncovered = uncovered_nodes(snap, sel);
            let dropped: Vec<&Uncovered<'_>> = uncovered
                .iter()
                .filter(|u| node_traffic_dropped(snap, u.node, &pods, r))
                .collect();
            if dropped.is_empty() {
                continue;
            }
            flagged.insert(rule_key(p, Direction::Ingress, r.index));
            let node_names: Vec<&str> = dropped.iter().map(|u| u.node).collect();
            let pod_names: Vec<&str> = pods.iter().map(|e| e.name.as_str()).collect();
            let selector = &r.source.written_selector;
            let known: Vec<String> = dropped
                .iter()
                .filter(|u| !u.missing.is_empty())
                .map(|u| {
                    let ips: Vec<String> = u.missing.iter().map(ToString::to_string).collect();
                    format!("{}: {}", u.node, ips.join(", "))
                })
                .collect();
            let unknown: Vec<&str> = dropped
                .iter()
                .filter(|u| u.missing.is_empty())
                .map(|u| u.node)
                .collect();
            let mut addresses = known;
            if !unknown.is_empty() {
                addresses.push(format!(
                    "{}: addresses not in the input",
                    unknown.join(", ")
                ));
            }
            out.push(Finding {
                code: MISSING_HOST_ENDPOINT,
                severity: Severity::Error,
                resource: p.id.to_string(),
                message: format!(
                    "ingress rule {} allows sources matching `{selector}`, which no workload endpoint or network set matches, so it can only be meant for hosts; {} {} {} no host endpoint matching it that covers {} addresses (tunnel addresses included), so {} traffic to the pods this policy selects ({}) is dropped",
                    r.index,
                    if node_names.len() == 1 {
                        "node"
                    } else {
                        "nodes"
                    },
                    names(&node_names),
                    if node_names.len() == 1 { "has" } else { "have" },
                    if node_names.len() == 1 { "its" } else { "their" },
                    if node_names.len() == 1 { "its" } else { "their" },
                    names(&pod_names),
                ),
                fix: format!(
                    "Create a HostEndpoint for each node whose expectedIPs list the node's addresses, tunnel addresses included ({}), with labels matching `{selector}`; or allow the nodes' addresses with `source.nets`.",
                    addresses.join("; ")
                ),
            });
        }
    }
    flagged
}

/// Whether the evaluator drops traffic from node `node` to some pod of `pods` on another node,
/// on the rule's protocol and first port. Unknown when no such flow can be evaluated (pods
/// without addresses): then the rule's premise (nothing matches) is taken as the answer.
fn node_traffic_dropped(snap: &Snapshot, node: &str, pods: &[&Endpoint], r: &CompiledRule) -> bool {
    let remote: Vec<&&Endpoint> = pods.iter().filter(|e| e.node != node).collect();
    if remote.is_empty() {
        // A host's traffic to its own pods is never policed.
        return false;
    }
    let protocol = r.protocol.unwrap_or(TCP);
    let port = r
        .destination
        .ports
        .iter()
        .find_map(|p| match p {
            Port::Range { min, .. } => Some(*min),
            Port::Named(_) => None,
        })
        .or(Some(80))
        .filter(|_| matches!(protocol, 6 | 17 | 132));
    let mut evaluated = false;
    for pod in remote {
        let Some(ip) = pod.ip(false).or_else(|| pod.ip(true)) else {
            continue;
        };
        let flow = Flow {
            src: PeerSpec::Node(node.to_owned()),
            dst: PeerSpec::Ip(ip),
            protocol,
            port,
            src_port: None,
            icmp: None,
            ipv6: ip.is_ipv6(),
        };
        match snap.verdict(&flow) {
            Ok(v) if !v.allowed => return true,
            Ok(_) => evaluated = true,
            Err(_) => {}
        }
    }
    !evaluated
}

/// Whether a rule matches every packet and ends the evaluation (Allow or Deny, no criteria).
fn always_decides(r: &CompiledRule) -> bool {
    let any = |e: &Entity| {
        e.nets.is_empty()
            && e.not_nets.is_empty()
            && e.selector.is_none()
            && e.not_selector.is_none()
            && e.ports.is_empty()
            && e.not_ports.is_empty()
            && !e.services
    };
    matches!(r.action, Action::Allow | Action::Deny)
        && !r.http
        && r.ip_version.is_none()
        && r.protocol.is_none()
        && r.not_protocol.is_none()
        && r.icmp.is_none()
        && r.not_icmp.is_none()
        && any(&r.source)
        && any(&r.destination)
}

/// Seed 004: endpoints naming a profile that does not exist (one finding per profile), and
/// workloads with no profile that no policy selects.
fn missing_profile(snap: &Snapshot, out: &mut Vec<Finding>) {
    let mut missing: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for e in &snap.endpoints {
        // Profiles are consulted in order; one that always decides hides those after it (a
        // pod's kns.<namespace> profile decides before its ksa.<namespace>.<account>).
        let mut open = [true, true];
        for p in &e.profiles {
            match snap.profiles.get(p) {
                None if open.contains(&true) => {
                    missing.entry(p).or_default().push(e);
                    // Felix's stand-in drops everything: nothing after it is consulted.
                    open = [false, false];
                }
                None => {}
                Some(info) => {
                    for (i, dir) in [Direction::Ingress, Direction::Egress]
                        .into_iter()
                        .enumerate()
                    {
                        if info.rules(dir).iter().any(always_decides) {
                            open[i] = false;
                        }
                    }
                }
            }
        }
    }
    for (profile, eps) in missing {
        let list: Vec<String> = eps.iter().map(|e| endpoint_words(e)).collect();
        out.push(Finding {
            code: MISSING_PROFILE,
            severity: Severity::Error,
            resource: format!("Profile {profile}"),
            message: format!(
                "profile {profile} does not exist, and {} name{} it ({}): felix replaces it with a drop-everything profile, so all their traffic that no policy allows is dropped",
                plural(eps.len(), "endpoint", "endpoints"),
                if eps.len() == 1 { "s" } else { "" },
                names(&list)
            ),
            fix: missing_profile_fix(profile),
        });
    }
    for e in &snap.endpoints {
        if e.kind != EndpointKind::Workload || !e.profiles.is_empty() {
            continue;
        }
        let policed = snap.policies.iter().any(|p| {
            (p.has_type(Direction::Ingress) || p.has_type(Direction::Egress))
                && Chain::Normal.admits(p, e)
                && p.selects(e)
        });
        if policed {
            continue;
        }
        out.push(Finding {
            code: MISSING_PROFILE,
            severity: Severity::Error,
            resource: endpoint_resource(e),
            message: format!(
                "{} names no profile and no policy selects it: all its traffic is dropped",
                endpoint_words(e)
            ),
            fix: "Give the endpoint a profile (pods get kns.<namespace> and ksa.<namespace>.<service account>), or a policy that allows its traffic.".into(),
        });
    }
}

/// Seed 002: a policy whose rules in a direction are all Deny (or Log) is the only policy of
/// endpoints in that direction, so the end of its tier drops everything it does not deny.
fn deny_only_isolates(snap: &Snapshot, out: &mut Vec<Finding>) {
    for p in &snap.policies {
        for dir in [Direction::Ingress, Direction::Egress] {
            let rules = p.rules(dir);
            let deny_only = rules.iter().any(|r| r.action == Action::Deny)
                && rules
                    .iter()
                    .all(|r| matches!(r.action, Action::Deny | Action::Log));
            if !deny_only {
                continue;
            }
            let Some(tier) = snap.tiers.iter().find(|t| t.name == p.tier) else {
                continue;
            };
            if !tier.exists || tier.default_action == Action::Pass {
                continue;
            }
            let alone: Vec<&Endpoint> = selected(snap, p, dir)
                .into_iter()
                .filter(|e| {
                    !snap.policies.iter().any(|q| {
                        !std::ptr::eq(p, q)
                            && q.has_type(dir)
                            && Chain::Normal.admits(q, e)
                            && q.selects(e)
                    })
                })
                .collect();
            if alone.is_empty() {
                continue;
            }
            let list: Vec<String> = alone.iter().map(|e| endpoint_words(e)).collect();
            let denied: Vec<String> = rules
                .iter()
                .filter(|r| r.action == Action::Deny)
                .map(describe_rule)
                .collect();
            out.push(Finding {
                code: DENY_ONLY_ISOLATES,
                severity: Severity::Error,
                resource: p.id.to_string(),
                message: format!(
                    "its {dir} rules only deny ({}), and it is the only policy selecting {} for {dir}: everything it does not deny is dropped too, at the end of tier {}",
                    denied.join("; "),
                    names(&list),
                    p.tier
                ),
                fix: format!(
                    "If it was meant to deny only that, end its {dir} rules with `- action: Allow` (or `- action: Pass` to let later tiers and the profiles decide)."
                ),
            });
        }
    }
}

/// A rule's criteria in a few words, for messages.
fn describe_rule(r: &CompiledRule) -> String {
    let mut parts = vec![format!("rule {}", r.index)];
    if let Some(p) = r.protocol {
        parts.push(protocol_name(p));
    }
    let ports: Vec<String> = r
        .destination
        .ports
        .iter()
        .map(|p| match p {
            Port::Range { min, max } if min == max => min.to_string(),
            Port::Range { min, max } => format!("{min}-{max}"),
            Port::Named(n) => n.clone(),
        })
        .collect();
    if !ports.is_empty() {
        parts.push(format!("port {}", ports.join(",")));
    }
    for (side, e) in [("from", &r.source), ("to", &r.destination)] {
        if !e.written_selector.trim().is_empty() {
            parts.push(format!("{side} `{}`", e.written_selector));
        }
        let nets: Vec<String> = e.nets.iter().map(ToString::to_string).collect();
        if !nets.is_empty() {
            parts.push(format!("{side} {}", nets.join(",")));
        }
    }
    parts.join(" ")
}

/// Policy selectors and rule selectors that match nothing (only when the input has workload
/// endpoints: a policy set given alone, or with host endpoints only, is not judged).
fn selector_matches_nothing(snap: &Snapshot, flagged: &BTreeSet<RuleKey>, out: &mut Vec<Finding>) {
    if !snap
        .endpoints
        .iter()
        .any(|e| e.kind == EndpointKind::Workload)
    {
        return;
    }
    for p in &snap.policies {
        if !snap.endpoints.iter().any(|e| p.selects(e)) {
            out.push(Finding {
                code: SELECTOR_MATCHES_NOTHING,
                severity: Severity::Warning,
                resource: p.id.to_string(),
                message: "its selector matches no endpoint: the policy applies to nothing".into(),
                fix: "Check the selector's labels against the endpoints' (`gingham selector match`), or delete the policy.".into(),
            });
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            for r in p.rules(dir) {
                if flagged.contains(&rule_key(p, dir, r.index)) {
                    continue;
                }
                for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
                    let text = &e.written_selector;
                    let Some(sel) = &e.selector else {
                        continue;
                    };
                    if matches_any(snap, sel) {
                        continue;
                    }
                    let (severity, effect) = if r.action == Action::Allow {
                        (Severity::Warning, "the rule allows nothing")
                    } else {
                        (Severity::Info, "the rule never matches")
                    };
                    let shown = if text.trim().is_empty() {
                        sel.canonical()
                    } else {
                        text.to_string()
                    };
                    out.push(Finding {
                        code: SELECTOR_MATCHES_NOTHING,
                        severity,
                        resource: p.id.to_string(),
                        message: format!(
                            "{dir} rule {} ({:?}): {side} selector `{shown}` matches no endpoint or network set: {effect}",
                            r.index, r.action
                        ),
                        fix: "Check the selector's labels (and namespaceSelector) against the endpoints' and network sets' (`gingham selector match`); for nodes, create host endpoints.".into(),
                    });
                }
            }
        }
    }
}

/// Whether every port `b` matches, `a` matches too.
fn ports_cover(a: &[Port], b: &[Port]) -> bool {
    if a.is_empty() {
        return true;
    }
    !b.is_empty()
        && b.iter().all(|bp| {
            a.iter().any(|ap| match (ap, bp) {
                (
                    Port::Range { min, max },
                    Port::Range {
                        min: bmin,
                        max: bmax,
                    },
                ) => min <= bmin && bmax <= max,
                (Port::Named(x), Port::Named(y)) => x == y,
                _ => false,
            })
        })
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether every packet side `b` matches, `a` matches too (sufficient, not necessary: `false`
/// when unsure).
fn entity_covers(a: &Entity, b: &Entity) -> bool {
    if a.services {
        return false;
    }
    if !a.nets.is_empty()
        && (b.nets.is_empty()
            || !b
                .nets
                .iter()
                .all(|bn| a.nets.iter().any(|an| an.contains(bn))))
    {
        return false;
    }
    let excluded = |an: &IpNet| {
        b.not_nets.iter().any(|bn| bn.contains(an))
            || (!b.nets.is_empty() && b.nets.iter().all(|x| !overlaps(x, an)))
    };
    if !a.not_nets.iter().all(excluded) {
        return false;
    }
    let same = |x: &Option<Selector>, y: &Option<Selector>| match (x, y) {
        (None, _) => true,
        (Some(x), Some(y)) => x.canonical() == y.canonical(),
        (Some(_), None) => false,
    };
    if !same(&a.selector, &b.selector) || !same(&a.not_selector, &b.not_selector) {
        return false;
    }
    // Named ports are resolved against the selected endpoints: only the same selector's.
    ports_cover(&a.ports, &b.ports) && a.not_ports.iter().all(|p| b.not_ports.contains(p))
}

/// Whether rule `a`, met first, decides every packet rule `b` matches.
fn rule_covers(a: &CompiledRule, b: &CompiledRule) -> bool {
    matches!(a.action, Action::Allow | Action::Deny | Action::Pass)
        && !a.http
        && (a.ip_version.is_none() || a.ip_version == b.ip_version)
        && (a.protocol.is_none() || a.protocol == b.protocol)
        && (a.not_protocol.is_none()
            || a.not_protocol == b.not_protocol
            || (b.protocol.is_some() && b.protocol != a.not_protocol))
        && (a.icmp.is_none() || a.icmp == b.icmp)
        && (a.not_icmp.is_none() || a.not_icmp == b.not_icmp)
        && entity_covers(&a.source, &b.source)
        && entity_covers(&a.destination, &b.destination)
}

/// A rule that can never match, and what decides first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadowed {
    pub policy: crate::snapshot::PolicyRef,
    pub direction: Direction,
    pub rule: usize,
    /// The rule that decides first, in words.
    pub by: String,
}

/// Rules that can never match: an earlier rule of the same policy, or of an earlier policy of
/// the same tier that selects (at least) every endpoint this one selects, decides every packet
/// they match first. Sufficient, not necessary: a rule covered only by several rules together
/// is not found. (A property test holds that the evaluator never matches a rule found here.)
pub fn shadowed(snap: &Snapshot) -> Vec<Shadowed> {
    let mut out = Vec::new();
    for tier in &snap.tiers {
        for dir in [Direction::Ingress, Direction::Egress] {
            let mut in_tier: Vec<&Policy> = snap
                .policies
                .iter()
                .filter(|p| p.tier == tier.name && p.has_type(dir))
                .collect();
            in_tier.sort_by_key(|p| p.sort_key());
            for (j, q) in in_tier.iter().enumerate() {
                let q_eps: Vec<&Endpoint> =
                    snap.endpoints.iter().filter(|e| q.selects(e)).collect();
                // Earlier policies that run wherever q runs.
                let earlier: Vec<&Policy> = in_tier[..j]
                    .iter()
                    .copied()
                    .filter(|p| {
                        (p.apply_on_forward, p.pre_dnat, p.do_not_track)
                            == (q.apply_on_forward, q.pre_dnat, q.do_not_track)
                            && (p.selector.canonical() == q.selector.canonical()
                                || (!q_eps.is_empty() && q_eps.iter().all(|e| p.selects(e))))
                    })
                    .collect();
                let rules = q.rules(dir);
                for (k, b) in rules.iter().enumerate() {
                    if b.source.services || b.destination.services {
                        continue;
                    }
                    let mine = rules[..k].iter().find(|a| rule_covers(a, b)).map(|a| {
                        format!("{dir} rule {} ({:?}) of the same policy", a.index, a.action)
                    });
                    let theirs = || {
                        earlier.iter().find_map(|p| {
                            p.rules(dir).iter().find(|a| rule_covers(a, b)).map(|a| {
                                format!(
                                    "{dir} rule {} ({:?}) of {}, which comes earlier in tier {} and selects every endpoint this policy selects,",
                                    a.index, a.action, p.id, tier.name
                                )
                            })
                        })
                    };
                    if let Some(by) = mine.or_else(theirs) {
                        out.push(Shadowed {
                            policy: q.id.clone(),
                            direction: dir,
                            rule: b.index,
                            by,
                        });
                    }
                }
            }
        }
    }
    out
}

fn shadowed_rules(snap: &Snapshot, out: &mut Vec<Finding>) {
    for s in shadowed(snap) {
        let action = snap
            .policies
            .iter()
            .find(|p| p.id == s.policy)
            .and_then(|p| p.rules(s.direction).get(s.rule))
            .map(|r| r.action);
        out.push(Finding {
            code: SHADOWED_RULE,
            severity: Severity::Warning,
            resource: s.policy.to_string(),
            message: format!(
                "{} rule {} ({}) can never match: {} matches everything it matches and decides first",
                s.direction,
                s.rule,
                action.map(|a| format!("{a:?}")).unwrap_or_default(),
                s.by
            ),
            fix: "Delete the rule, or move it before the rule that shadows it (or narrow that rule) if it is meant to take effect.".into(),
        });
    }
}

/// Policies in a tier that does not exist: the endpoints they select are closed.
fn missing_tier(snap: &Snapshot, out: &mut Vec<Finding>) {
    for t in snap.tiers.iter().filter(|t| !t.exists) {
        for p in snap.policies.iter().filter(|p| p.tier == t.name) {
            let eps: Vec<String> = snap
                .endpoints
                .iter()
                .filter(|e| p.selects(e))
                .map(endpoint_words)
                .collect();
            let effect = if eps.is_empty() {
                "it selects no endpoint now, but any it selects will be closed".to_owned()
            } else {
                format!(
                    "the {} it selects ({}) are closed (all their traffic in its direction dropped) until the tier exists",
                    plural(eps.len(), "endpoint", "endpoints"),
                    names(&eps)
                )
            };
            out.push(Finding {
                code: MISSING_TIER,
                severity: Severity::Error,
                resource: p.id.to_string(),
                message: format!(
                    "it is in tier {}, which does not exist, so its place among the tiers is unknown: {effect}",
                    t.name
                ),
                fix: missing_tier_fix(&t.name),
            });
        }
    }
}

/// The ports a person needs to reach a node when everything else fails: SSH, etcd, the
/// Kubernetes API server.
const LIFELINES: &[(u8, u16, &str)] = &[
    (TCP, 22, "SSH"),
    (TCP, 2379, "etcd"),
    (TCP, 6443, "the Kubernetes API server"),
];

/// Host endpoint policy against failsafe ports: with failsafe ports on, which of them its
/// policy would drop if they were turned off (warning); with some off, whether SSH, etcd or the
/// API server to the node is dropped now (error). Each answer is the evaluator's, for a
/// connection from outside the cluster to the node.
fn failsafe_lockout(snap: &Snapshot, out: &mut Vec<Finding>) {
    let nodes: Vec<&str> = snap
        .nodes
        .keys()
        .map(String::as_str)
        .filter(|n| snap.host_endpoint_of(n).is_some())
        .collect();
    if nodes.is_empty() {
        return;
    }
    // Inbound: from outside to the node; outbound: from the node to outside.
    let dropped = |s: &Snapshot, node: &str, inbound: bool, protocol: u8, port: u16| {
        let (outside, host) = (PeerSpec::Ip(OUTSIDE), PeerSpec::Node(node.to_owned()));
        let (src, dst) = if inbound {
            (outside, host)
        } else {
            (host, outside)
        };
        let flow = Flow {
            src,
            dst,
            protocol,
            port: Some(port),
            src_port: None,
            icmp: None,
            ipv6: false,
        };
        s.verdict(&flow).is_ok_and(|v| !v.allowed)
    };
    let mut without = snap.clone();
    without.felix.failsafe_inbound.clear();
    without.felix.failsafe_outbound.clear();
    let ports = |list: &[crate::snapshot::Failsafe]| -> BTreeSet<(u8, u16)> {
        list.iter().map(|f| (f.protocol, f.port)).collect()
    };
    let failsafe = ports(&snap.felix.failsafe_inbound);
    let failsafe_out = ports(&snap.felix.failsafe_outbound);
    for node in nodes {
        let Some(hep) = snap.host_endpoint_of(node) else {
            continue;
        };
        let name = |proto: u8, port: u16| format!("{}/{port}", protocol_name(proto));
        let mut would: Vec<String> = failsafe
            .iter()
            .filter(|(proto, port)| dropped(&without, node, true, *proto, *port))
            .map(|(proto, port)| format!("{} in", name(*proto, *port)))
            .collect();
        would.extend(
            failsafe_out
                .iter()
                .filter(|(proto, port)| dropped(&without, node, false, *proto, *port))
                .map(|(proto, port)| format!("{} out", name(*proto, *port))),
        );
        if !would.is_empty() {
            out.push(Finding {
                code: FAILSAFE_LOCKOUT,
                severity: Severity::Warning,
                resource: endpoint_resource(hep),
                message: format!(
                    "its policy would drop failsafe traffic of node {node} with the world outside the cluster ({}) if failsafe ports were turned off: only the failsafe ports keep the node reachable",
                    would.join(", ")
                ),
                fix: "Before turning failsafe ports off (FelixConfiguration failsafeInboundHostPorts, failsafeOutboundHostPorts), allow this traffic of the host endpoint in a policy (e.g. SSH from your admin network, BGP and etcd from the nodes).".into(),
            });
        }
        let locked: Vec<String> = LIFELINES
            .iter()
            .filter(|(proto, port, _)| {
                !failsafe.contains(&(*proto, *port)) && dropped(snap, node, true, *proto, *port)
            })
            .map(|(proto, port, what)| format!("{what} ({}/{port})", protocol_name(*proto)))
            .collect();
        if !locked.is_empty() {
            out.push(Finding {
                code: FAILSAFE_LOCKOUT,
                severity: Severity::Error,
                resource: endpoint_resource(hep),
                message: format!(
                    "failsafe ports do not include {}, and its policy drops them: node {node} cannot be reached that way from outside the cluster",
                    locked.join(", ")
                ),
                fix: "Allow these ports to the host endpoint in a policy, or put them back in FelixConfiguration failsafeInboundHostPorts.".into(),
            });
        }
    }
}

/// Seed 002 (canal): addresses and pod CIDRs outside every pool, and overlapping pools. Only
/// when the input has pools.
fn pool_mismatch(snap: &Snapshot, out: &mut Vec<Finding>) {
    if snap.pools.is_empty() {
        return;
    }
    let cidrs: Vec<String> = snap.pools.iter().map(|p| p.cidr.to_string()).collect();
    let pools = names(&cidrs);
    let in_pool = |net: &IpNet| {
        snap.pools
            .iter()
            .any(|p| p.cidr.prefix_len() <= net.prefix_len() && p.cidr.contains(&net.network()))
    };
    for (i, a) in snap.pools.iter().enumerate() {
        for b in &snap.pools[i + 1..] {
            if overlaps(&a.cidr, &b.cidr) {
                out.push(Finding {
                    code: POOL_MISMATCH,
                    severity: Severity::Error,
                    resource: format!("IPPool {}", a.name),
                    message: format!(
                        "its CIDR {} overlaps IPPool {} ({}): an address in both has two sets of settings (encapsulation, natOutgoing), and Calico refuses such pools",
                        a.cidr, b.name, b.cidr
                    ),
                    fix: format!("Delete or shrink IPPool {} or IPPool {} so they do not overlap.", a.name, b.name),
                });
            }
        }
    }
    for n in snap.nodes.values() {
        let outside: Vec<String> = n
            .pod_cidrs
            .iter()
            .filter(|c| !in_pool(c))
            .map(ToString::to_string)
            .collect();
        if outside.is_empty() {
            continue;
        }
        out.push(Finding {
            code: POOL_MISMATCH,
            severity: Severity::Error,
            resource: format!("Node {}", n.name),
            message: format!(
                "its pod CIDR {} lies outside every IP pool ({pools}): pods there get addresses the pools, the routes and the natOutgoing rules do not know (as when canal's flannel subnet and the CNI configuration disagree)",
                outside.join(", ")
            ),
            fix: "Make the node's pod CIDR (its IPAM subnet, e.g. flannel's subnet.env and the CNI configuration) agree with the IP pools, or add a pool covering it.".into(),
        });
    }
    for e in snap
        .endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::Workload)
    {
        let outside: Vec<String> = e
            .ips
            .iter()
            .filter(|ip| !in_pool(ip))
            .map(|ip| ip.addr().to_string())
            .collect();
        if outside.is_empty() {
            continue;
        }
        out.push(Finding {
            code: POOL_MISMATCH,
            severity: Severity::Warning,
            resource: endpoint_resource(e),
            message: format!(
                "{} has {} outside every IP pool ({pools}): felix treats it as outside the cluster, so natOutgoing masquerades traffic to it and routes between nodes do not cover it",
                endpoint_words(e),
                outside.join(", ")
            ),
            fix: "Give the pod an address from a pool (check the node's IPAM subnet and the CNI configuration), or add a pool covering it.".into(),
        });
    }
}

/// Endpoints sharing an address (host endpoints of one node may list the same one).
fn duplicate_address(snap: &Snapshot, out: &mut Vec<Finding>) {
    let mut by_ip: BTreeMap<IpAddr, Vec<&Endpoint>> = BTreeMap::new();
    for e in &snap.endpoints {
        for net in e
            .ips
            .iter()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
        {
            let list = by_ip.entry(net.addr()).or_default();
            if !list.iter().any(|x| std::ptr::eq(*x, e)) {
                list.push(e);
            }
        }
    }
    for (ip, eps) in by_ip {
        if eps.len() < 2 {
            continue;
        }
        let one_node_hosts = eps.iter().all(|e| e.kind == EndpointKind::Host)
            && eps.iter().all(|e| e.node == eps[0].node);
        if one_node_hosts {
            continue;
        }
        let others: Vec<String> = eps[1..].iter().map(|e| endpoint_words(e)).collect();
        out.push(Finding {
            code: DUPLICATE_ADDRESS,
            severity: Severity::Error,
            resource: endpoint_resource(eps[0]),
            message: format!(
                "{} has address {ip}, and so {} {}: packets to it reach only one of them, and policy cannot tell them apart",
                endpoint_words(eps[0]),
                if others.len() == 1 { "does" } else { "do" },
                names(&others)
            ),
            fix: "Give each endpoint its own address and delete stale endpoints (`gingham ipam check` lists addresses held twice).".into(),
        });
    }
}
