//! A verdict in plain words: what the packet met on its way, what decided, and what to change.

use std::fmt::Write as _;

use gingham_model::Action;

use crate::eval::{Outcome, Stage, StageKind, Step, Verdict, protocol_name};
use crate::snapshot::{DEFAULT_ALLOW_PROFILE, Direction, EndpointKind, Snapshot};

fn stage_title(s: &Stage) -> String {
    match s.kind {
        StageKind::WorkloadEgress => format!("egress policy of pod {}", s.endpoint),
        StageKind::EndpointToHost => format!("pod {} talking to its own host", s.endpoint),
        StageKind::HostEgress => format!("host endpoint {} (traffic leaving the host)", s.endpoint),
        StageKind::ForwardEgress => format!(
            "host endpoint {} (applyOnForward policy, forwarded traffic leaving)",
            s.endpoint
        ),
        StageKind::UntrackedEgress => {
            format!("host endpoint {} (doNotTrack policy, leaving)", s.endpoint)
        }
        StageKind::UntrackedIngress => format!("host endpoint {} (doNotTrack policy)", s.endpoint),
        StageKind::PreDnatIngress => format!("host endpoint {} (preDNAT policy)", s.endpoint),
        StageKind::ForwardIngress => format!(
            "host endpoint {} (applyOnForward policy, forwarded traffic arriving)",
            s.endpoint
        ),
        StageKind::HostIngress => format!("host endpoint {} (traffic to the host)", s.endpoint),
        StageKind::WorkloadIngress => format!("ingress policy of pod {}", s.endpoint),
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Allow => "Allow",
        Action::Deny => "Deny",
        Action::Log => "Log",
        Action::Pass => "Pass",
    }
}

fn step_line(step: &Step) -> String {
    match step {
        Step::Note { text } => text.clone(),
        Step::TierStart { tier, policies } => {
            let names: Vec<String> = policies.iter().map(ToString::to_string).collect();
            format!("tier {tier}: selected by {}", names.join(", "))
        }
        Step::RuleMatched {
            policy,
            rule,
            action,
        } => match action {
            Action::Log => {
                format!("  {policy}: rule {rule} (Log) matched; logged, evaluation goes on")
            }
            Action::Pass => {
                format!("  {policy}: rule {rule} (Pass) matched; the rest of the tier is skipped")
            }
            a => format!("  {policy}: rule {rule} ({}) matched", action_word(*a)),
        },
        Step::PolicyNoMatch { policy } => format!("  {policy}: no rule matched"),
        Step::EndOfTier { tier, action } => match action {
            Action::Pass => {
                format!("  end of tier {tier}: its defaultAction is Pass, on to the next tier")
            }
            _ => format!("  end of tier {tier}: no policy decided, so the packet is dropped"),
        },
        Step::NoProfiles => "no policy decided and the endpoint has no profile: dropped".into(),
        Step::ProfileMissing { profile } => format!(
            "profile {profile} does not exist: felix replaces it with a drop-everything profile"
        ),
        Step::TierMissing { tier, policies } => format!(
            "tier {tier} does not exist, and {} select{} this endpoint: it is closed (everything dropped) until the tier exists",
            policies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if policies.len() == 1 { "s" } else { "" }
        ),
        Step::ProfileRuleMatched {
            profile,
            rule,
            action,
        } => format!(
            "profile {profile}: rule {rule} ({}) matched",
            action_word(*action)
        ),
        Step::ProfileNoMatch { profile } => format!("profile {profile}: no rule matched"),
        Step::ProfilesExhausted => "no profile allowed the packet: dropped".into(),
        Step::DefaultContinue => "no policy of this kind decided: the packet goes on".into(),
        Step::Failsafe { protocol, port } => format!(
            "{}/{port} is a failsafe port: always allowed on host endpoints",
            protocol_name(*protocol)
        ),
    }
}

/// What to do about a profile that endpoints name but that does not exist (seed 004).
pub fn missing_profile_fix(profile: &str) -> String {
    match profile.strip_prefix("kns.") {
        Some(ns) => format!(
            "Create it: in etcd mode the Calico namespace controller writes kns.<namespace> profiles (is calico-kube-controllers running?); or apply a Profile named {profile} with ingress and egress Allow rules, or recreate the namespace {ns}."
        ),
        None => format!("Create profile {profile}, or remove it from the endpoint's profiles."),
    }
}

/// What to do about policies in a tier that does not exist.
pub fn missing_tier_fix(tier: &str) -> String {
    format!(
        "Create the tier (apiVersion: projectcalico.org/v3, kind: Tier, metadata.name: {tier}, spec.order: a number; lower orders are evaluated first), or move the policies to an existing tier (spec.tier)."
    )
}

/// The cause of a decision in `explain`'s words: the line `explain` prints for the step that
/// decided, without its indentation. Flow logs use it for the drops they observe, so a flow
/// record and `explain` name a cause with the same text.
pub fn step_cause(step: &Step) -> String {
    step_line(step).trim().to_owned()
}

/// The cause of a verdict: the last step of the stage that decided (see [`step_cause`]).
pub fn verdict_cause(v: &Verdict) -> Option<String> {
    v.deciding_stage()
        .and_then(|s| s.steps.last())
        .map(step_cause)
}

/// The place a flow was decided, in `explain`'s words (`ingress policy of pod ns/a`).
pub fn stage_words(kind: StageKind, endpoint: &str) -> String {
    stage_title(&Stage {
        kind,
        endpoint: endpoint.to_owned(),
        endpoint_key: String::new(),
        steps: Vec::new(),
        outcome: Outcome::Continue,
    })
}

/// A drop `explain` never reports, because the policy alone cannot cause it: a workload
/// interface the agent has not programmed yet is closed.
pub const NO_PROGRAM: &str =
    "the workload's interface has no program yet: it is closed until the agent programs it";

/// What to change, from the step that decided.
fn advice(snap: &Snapshot, v: &Verdict, stage: &Stage) -> Vec<String> {
    let mut out = Vec::new();
    let Some(last) = stage.steps.last() else {
        return out;
    };
    let what = match v.port {
        Some(p) => format!("{}/{p}", protocol_name(v.protocol)),
        None => protocol_name(v.protocol),
    };
    match (last, v.allowed) {
        (Step::RuleMatched { policy, rule, action }, true) => out.push(format!(
            "Allowed by rule {rule} ({}) of {policy}.",
            action_word(*action)
        )),
        (Step::RuleMatched { policy, rule, .. }, false) => out.push(format!(
            "Denied by rule {rule} of {policy}. To allow this flow, narrow that rule or put an Allow rule before it (in a policy with a lower order, or an earlier tier)."
        )),
        (Step::EndOfTier { tier, .. }, _) => {
            let policies = stage
                .steps
                .iter()
                .rev()
                .find_map(|s| match s {
                    Step::TierStart { tier: t, policies } if t == tier => Some(policies.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let names: Vec<String> = policies.iter().map(ToString::to_string).collect();
            let egress = matches!(
                stage.kind,
                StageKind::WorkloadEgress | StageKind::HostEgress | StageKind::ForwardEgress
            );
            let one = names.len() == 1;
            out.push(format!(
                "{} {} {} for {}, so everything {} is dropped at the end of tier {tier}; no rule allows {what} from {}.",
                names.join(", "),
                if one { "selects" } else { "select" },
                stage.endpoint,
                if egress { "egress" } else { "ingress" },
                if one { "it does not allow" } else { "they do not allow" },
                v.src_ip.map(|i| i.to_string()).unwrap_or_default(),
            ));
            // Only worth saying when a rule looks for its peer by selector.
            let dir = if egress { Direction::Egress } else { Direction::Ingress };
            let selector_rules = snap.policies.iter().filter(|p| policies.contains(&p.id)).any(|p| {
                p.rules(dir).iter().any(|r| {
                    let peer = if egress { &r.destination } else { &r.source };
                    r.action == Action::Allow && peer.selector.is_some()
                })
            });
            if !egress
                && selector_rules
                && let Some(src_ip) = v.src_ip
                && snap.endpoint_with_ip(src_ip).is_none()
                && snap.netsets.iter().all(|n| !n.nets.iter().any(|net| net.contains(&src_ip)))
            {
                let node = snap
                    .nodes
                    .values()
                    .find(|n| n.ips.contains(&src_ip) || n.tunnel_ips.contains(&src_ip));
                match node {
                    Some(n) => out.push(format!(
                        "The source address {src_ip} is node {}'s, and no endpoint has it, so no selector in a source rule can match it. Create a HostEndpoint for node {} whose expectedIPs include {src_ip} (and the node's other addresses, tunnel addresses too), with labels the policy allows; or allow its addresses with `nets`.",
                        n.name, n.name
                    )),
                    None => out.push(format!(
                        "The source address {src_ip} belongs to no endpoint or network set, so only `nets` rules can match it."
                    )),
                }
            }
            out.push(format!(
                "To allow it: add an Allow rule for {what} to one of these policies; or end a Deny-only policy with `- action: Pass` (or `Allow`) if it was meant to deny only some traffic."
            ));
        }
        (Step::ProfileMissing { profile }, _) => {
            out.push(format!(
                "Endpoint {} uses profile {profile}, which does not exist, so felix drops all its traffic that no policy allows.",
                stage.endpoint
            ));
            out.push(missing_profile_fix(profile));
        }
        (Step::TierMissing { tier, policies }, _) => {
            let names: Vec<String> = policies.iter().map(ToString::to_string).collect();
            out.push(format!(
                "{} {} in tier {tier}, which does not exist, so its place among the tiers is unknown; Gingham fails closed and drops all traffic of endpoint {} in this direction rather than guess.",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" },
                stage.endpoint
            ));
            out.push(missing_tier_fix(tier));
        }
        (Step::NoProfiles, _) => {
            let is_host = snap
                .endpoint_by_name(&stage.endpoint)
                .is_some_and(|e| e.kind == EndpointKind::Host);
            if is_host {
                out.push(format!(
                    "Host endpoint {} has no policy that decides and no profile, so everything but failsafe ports is dropped. Add a GlobalNetworkPolicy selecting it, or give it the profile {DEFAULT_ALLOW_PROFILE}.",
                    stage.endpoint
                ));
            } else {
                out.push(format!(
                    "Endpoint {} has no profile and no policy allowed the flow. Add a policy that allows it, or a profile.",
                    stage.endpoint
                ));
            }
        }
        (Step::ProfilesExhausted, _) => out.push(format!(
            "No policy decided, and none of the profiles of {} allows {what}.",
            stage.endpoint
        )),
        (Step::ProfileRuleMatched { profile, rule, action }, allowed) => {
            out.push(format!(
                "No policy selects {} for this direction, so its profile decided: rule {rule} ({}) of profile {profile}.",
                stage.endpoint,
                action_word(*action)
            ));
            if !allowed && profile.starts_with("kns.") {
                out.push(
                    "This namespace profile denies ingress: the namespace carries the old DefaultDeny isolation annotation. Allow the flow with a NetworkPolicy.".into(),
                );
            }
        }
        (Step::Note { .. }, false) if stage.kind == StageKind::EndpointToHost => out.push(
            "Set FelixConfiguration defaultEndpointToHostAction to Accept (or Return, to let host endpoint policy decide).".into(),
        ),
        (Step::Failsafe { .. }, _) => out.push(
            "Failsafe ports cannot be denied by policy; change FailsafeInboundHostPorts / FailsafeOutboundHostPorts in the FelixConfiguration if you really mean to.".into(),
        ),
        _ => {}
    }
    out
}

/// The stage that decided: the last one that did not let the packet go on.
fn deciding_stage(v: &Verdict) -> Option<&Stage> {
    v.stages
        .iter()
        .rev()
        .find(|s| s.outcome != Outcome::Continue)
}

/// The `=>` lines of [`render`]: what decided and what to change.
fn conclusion(snap: &Snapshot, v: &Verdict) -> Vec<String> {
    match deciding_stage(v) {
        Some(stage) => advice(snap, v, stage),
        None if v.allowed => vec!["Nothing on the path polices this flow.".into()],
        None => Vec::new(),
    }
}

/// The verdict's cause in one line, in [`render`]'s words: its first `=>` line, or, when the
/// deciding step has no advice, the deciding stage and step as the trace names them.
/// `gingham diff` gives it for each pair that loses access.
pub fn cause(snap: &Snapshot, v: &Verdict) -> String {
    if let Some(first) = conclusion(snap, v).into_iter().next() {
        return first;
    }
    match deciding_stage(v) {
        Some(stage) => match stage.steps.last() {
            Some(step) => format!("{}: {}", stage_title(stage), step_line(step).trim()),
            None => format!("{}: {}", stage_title(stage), stage.outcome),
        },
        None if v.allowed => "ALLOWED".into(),
        None => "DENIED".into(),
    }
}

/// The verdict and its trace as text.
pub fn render(snap: &Snapshot, v: &Verdict) -> String {
    let mut out = String::new();
    let what = match v.port {
        Some(p) => format!("{}/{p}", protocol_name(v.protocol)),
        None => protocol_name(v.protocol),
    };
    let _ = writeln!(
        out,
        "{} from {} ({}) to {} ({}): {}",
        what,
        v.src,
        v.src_ip.map(|i| i.to_string()).unwrap_or_default(),
        v.dst,
        v.dst_ip.map(|i| i.to_string()).unwrap_or_default(),
        if v.allowed { "ALLOWED" } else { "DENIED" }
    );
    for n in &v.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    // Stages where no policy of their kind exists are left out of the text (not of the JSON).
    let shown = v
        .stages
        .iter()
        .filter(|s| !(s.outcome == Outcome::Continue && s.steps == [Step::DefaultContinue]));
    for (i, s) in shown.enumerate() {
        let _ = writeln!(out, "  {}. {}: {}", i + 1, stage_title(s), s.outcome);
        if s.steps.is_empty() {
            let _ = writeln!(out, "       no policy applies");
        }
        for step in &s.steps {
            let _ = writeln!(out, "       {}", step_line(step));
        }
    }
    for line in conclusion(snap, v) {
        let _ = writeln!(out, "  => {line}");
    }
    if let Some(staged) = v.staged_allowed
        && staged != v.allowed
    {
        let _ = writeln!(
            out,
            "  staged: with the staged policies enforced, this flow would be {}",
            if staged { "allowed" } else { "denied" }
        );
    }
    out
}
