//! Flow logs of dropped traffic: before each drop that policy decides, a rule sends the
//! packet to userspace (NFLOG group [`FLOW_LOG_GROUP`]), rate-limited per rule so that a
//! flood of denied packets costs the reader a few messages per second. The log prefix is a
//! tag naming the chain (and rule index) that dropped; [`flow_cause`] turns it back into the
//! decision with the words `explain` uses (`gingham_calc::explain::step_cause`), from the programs
//! the table was rendered from.
//!
//! With `flowLogsAllowed`, Allow rules of policies and profiles log the new flows they let
//! through in the same way (conntrack lets only a flow's first packet reach them).
//!
//! Tags: `gh <chain> <index>` for a Deny rule of a policy (`p…`) or profile (`r…`), named by
//! its chain's name also where the rule is inlined in a workload's stage chain,
//! `gh <chain> <index> allow` for an Allow rule;
//! `gh <chain>` for the end of a tier (`e…<k>`, `w…<k>`: the tier's chain, or for a tier
//! inlined in a workload's stage chain the stage's name and the tier's index) or of an endpoint chain (`e…` for
//! host endpoints, `w…` for workload stages, shared by workloads alike: a missing profile, or
//! no profile allowed, or a missing tier that closes the endpoint); `gh w` for a workload interface without a program and
//! `gh h` for DefaultEndpointToHostAction Drop.

use gingham_calc::eval::ENDPOINT_TO_HOST_DROP;
use gingham_calc::explain::{NO_PROGRAM as NO_PROGRAM_WORDS, stage_words, step_cause};
use gingham_calc::program::{NodeProgram, ProfileProgram};
use gingham_calc::{StageKind, Step};
use gingham_model::Action;

use super::{Digests, Mode, policy_chain_name, profile_chain_name, stage_chain_name};
use crate::table::Rule;

/// The NFLOG group the flow log rules send to (the agent's reader binds it).
pub const FLOW_LOG_GROUP: u16 = 18247;
/// Per rule: at most this many packets a second go to userspace (after a burst).
const LIMIT: &str = "limit rate 10/second burst 20 packets";
const TAG: &str = "gh";
/// Tags of the drops that no chain of an endpoint names.
pub(super) const NO_PROGRAM: &str = "gh w";
pub(super) const TO_HOST: &str = "gh h";

/// The last word of an Allow rule's tag.
const ALLOWED: &str = "allow";

/// The tag of a chain's drop.
pub(super) fn tag(chain: &str) -> String {
    format!("{TAG} {chain}")
}

/// What a logged rule does to the flows it logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Denied,
    Allowed,
}

/// The tag of a policy or profile rule (its chain and rule index).
pub(super) fn rule_tag(verdict: Verdict, chain: &str, index: usize) -> String {
    match verdict {
        Verdict::Denied => format!("{TAG} {chain} {index}"),
        Verdict::Allowed => format!("{TAG} {chain} {index} {ALLOWED}"),
    }
}

/// The rule that logs what the next rule (`matches` … `drop`) drops. It has no counter: the
/// drop rule's counter counts the packets.
pub(super) fn log_rule(matches: &str, tag: &str) -> Rule {
    Rule::new(
        format!("{matches}{LIMIT} log group {FLOW_LOG_GROUP} prefix \"{tag}\""),
        "flow log",
    )
}

/// What decided a logged flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCause {
    /// An Allow rule let the flow through (logged with `flowLogsAllowed`); otherwise it was
    /// dropped.
    pub allowed: bool,
    /// The cause in `explain`'s words.
    pub cause: String,
    /// Where it was decided, in `explain`'s words, when the chain names an endpoint.
    pub stage: Option<String>,
    /// Whether the dropping rule is an ingress (true) or egress (false) rule, when known.
    pub ingress: Option<bool>,
    pub tier: Option<String>,
    pub policy: Option<String>,
    pub profile: Option<String>,
    pub rule: Option<usize>,
}

fn stage_kind(host: bool, mode: Mode) -> StageKind {
    match (host, mode) {
        (false, Mode::In) => StageKind::WorkloadIngress,
        (false, _) => StageKind::WorkloadEgress,
        (true, Mode::In) => StageKind::HostIngress,
        (true, Mode::Out) => StageKind::HostEgress,
        (true, Mode::ForwardIn) => StageKind::ForwardIngress,
        (true, Mode::ForwardOut) => StageKind::ForwardEgress,
        (true, Mode::PreDnat) => StageKind::PreDnatIngress,
        (true, Mode::UntrackedIn) => StageKind::UntrackedIngress,
        (true, Mode::UntrackedOut) => StageKind::UntrackedEgress,
    }
}

fn with_step(step: Step) -> FlowCause {
    FlowCause {
        cause: step_cause(&step),
        ..FlowCause::default()
    }
}

/// The interfaces a logged packet came in by and was going out by, when NFLOG said.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interfaces<'a> {
    pub input: Option<&'a str>,
    pub output: Option<&'a str>,
}

/// The decision behind a flow log prefix, from the programs the table was rendered from;
/// `None` for a prefix that is not ours or names a chain the programs no longer have.
/// Workloads with the same stage share its chain: the packet's interfaces say whose stage it
/// was (a workload's ingress is the packet's way out, its egress the way in).
pub fn flow_cause(program: &NodeProgram, prefix: &str, via: Interfaces) -> Option<FlowCause> {
    let prefix = prefix.trim_end();
    if prefix == NO_PROGRAM {
        return Some(FlowCause {
            cause: NO_PROGRAM_WORDS.into(),
            ..FlowCause::default()
        });
    }
    if prefix == TO_HOST {
        return Some(FlowCause {
            cause: step_cause(&Step::Note {
                text: ENDPOINT_TO_HOST_DROP.into(),
            }),
            ingress: Some(false),
            ..FlowCause::default()
        });
    }
    let rest = prefix.strip_prefix(TAG)?.trim_start();
    let mut words = rest.split(' ');
    let chain = words.next()?;
    let index: Option<usize> = match words.next() {
        Some(i) => Some(i.parse().ok()?),
        None => None,
    };
    let allowed = match words.next() {
        Some(ALLOWED) => true,
        Some(_) => return None,
        None => false,
    };
    if words.next().is_some() {
        return None;
    }
    let action = if allowed { Action::Allow } else { Action::Deny };
    let mut first = None;
    let mut digests = Digests::default();
    for (key, ep) in &program.endpoints {
        for (mode, prog) in Mode::of(ep) {
            let dir = mode.dir();
            let ingress = Some(dir == "i");
            if let Some(index) = index {
                for p in prog
                    .tiers
                    .iter()
                    .flat_map(|t| t.policies.iter().map(move |p| (t, p)))
                {
                    let (tier, p) = p;
                    if policy_chain_name(&p.policy, dir) == chain {
                        return Some(FlowCause {
                            allowed,
                            tier: Some(tier.tier.clone()),
                            policy: Some(p.policy.to_string()),
                            rule: Some(index),
                            ingress,
                            ..with_step(Step::RuleMatched {
                                policy: p.policy.clone(),
                                rule: index,
                                action,
                            })
                        });
                    }
                }
                for p in &prog.profiles {
                    if let ProfileProgram::Rules { profile, .. } = p
                        && profile_chain_name(profile, dir) == chain
                    {
                        return Some(FlowCause {
                            allowed,
                            profile: Some(profile.clone()),
                            rule: Some(index),
                            ingress,
                            ..with_step(Step::ProfileRuleMatched {
                                profile: profile.clone(),
                                rule: index,
                                action,
                            })
                        });
                    }
                }
                continue;
            }
            let (name, _) = stage_chain_name(
                key,
                ep,
                mode,
                prog,
                &program.sets,
                &mut digests,
                &mut Vec::new(),
            );
            let Some(tail) = chain.strip_prefix(&name) else {
                continue;
            };
            let packet_interface = if dir == "i" { via.output } else { via.input };
            let this_one = ep.host || packet_interface == Some(ep.interface.as_str());
            if !this_one && first.is_some() {
                continue;
            }
            let stage = Some(stage_words(stage_kind(ep.host, mode), &ep.endpoint));
            if tail.is_empty()
                && let Some(tier) = &prog.missing_tier
            {
                // The chain holds only the drop.
                let cause = FlowCause {
                    stage,
                    ingress,
                    tier: Some(tier.clone()),
                    ..with_step(Step::TierMissing {
                        tier: tier.clone(),
                        policies: prog.missing_tier_policies.clone(),
                    })
                };
                if this_one {
                    return Some(cause);
                }
                first = Some(cause);
                continue;
            }
            if tail.is_empty() {
                let missing = prog.profiles.iter().find_map(|p| match p {
                    ProfileProgram::Missing { profile } => Some(profile.clone()),
                    ProfileProgram::Rules { .. } => None,
                });
                let step = match &missing {
                    Some(profile) => Step::ProfileMissing {
                        profile: profile.clone(),
                    },
                    None if prog.profiles.is_empty() => Step::NoProfiles,
                    None => Step::ProfilesExhausted,
                };
                let cause = FlowCause {
                    stage,
                    ingress,
                    profile: missing,
                    ..with_step(step)
                };
                if this_one {
                    return Some(cause);
                }
                first = Some(cause);
                continue;
            }
            if let Ok(k) = tail.parse::<usize>()
                && let Some(tier) = prog.tiers.get(k)
            {
                let cause = FlowCause {
                    stage,
                    ingress,
                    tier: Some(tier.tier.clone()),
                    ..with_step(Step::EndOfTier {
                        tier: tier.tier.clone(),
                        action: tier.default_action,
                    })
                };
                if this_one {
                    return Some(cause);
                }
                first = Some(cause);
            }
        }
    }
    // No endpoint with the chain has the packet's interface (NFLOG did not say, or the
    // endpoint moved): the cause is the same for every endpoint sharing it.
    first
}
