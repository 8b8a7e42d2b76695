//! Hit counters: the kernel's counter of every policy and profile rule, mapped back to the
//! rule it was rendered from.
//!
//! The renderer records, for each chain holding policy or profile rules (a workload's stage
//! chain, which inlines the rules of its tiers and profiles without a Pass rule; a policy or
//! profile chain, shared by the stages and host endpoints that jump to it), whose rule and
//! which policy rule index each of its nft rules came from ([`ChainOrigin`], by rule id: the
//! hash that starts the rule's comment). A chain is rendered once per node whatever the
//! number of endpoints using it, and a packet meets one stage per direction, so summing the
//! nft rules of one policy rule (families, port alternatives, the stage chains that inline it)
//! gives that rule's count on the node. [`rule_hits`] reads the kernel's listing (`nft -j
//! list table`, [`crate::Backend::read`]) against that record.

use std::collections::{BTreeMap, HashMap};

use gingham_calc::{Direction, PolicyRef};
use serde_json::Value;

/// Whose rules a shared chain holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A policy, in its tier.
    Policy { tier: String, policy: PolicyRef },
    /// A profile (namespace and service account profiles included).
    Profile(String),
}

impl Owner {
    /// The `tier` label: the policy's tier, empty for a profile.
    pub fn tier(&self) -> &str {
        match self {
            Owner::Policy { tier, .. } => tier,
            Owner::Profile(_) => "",
        }
    }

    /// The `kind` label, as `gingham get` names kinds: `networkpolicy`,
    /// `globalnetworkpolicy`, `stagednetworkpolicy`... or `profile`. A Kubernetes
    /// NetworkPolicy is stored as a NetworkPolicy (`knp.default.*`), and so named.
    pub fn kind(&self) -> &'static str {
        use gingham_calc::snapshot::PolicyKind as K;
        match self {
            Owner::Policy { policy, .. } => match policy.kind {
                K::NetworkPolicy | K::KubernetesNetworkPolicy => "networkpolicy",
                K::GlobalNetworkPolicy => "globalnetworkpolicy",
                K::StagedNetworkPolicy => "stagednetworkpolicy",
                K::StagedGlobalNetworkPolicy => "stagedglobalnetworkpolicy",
                K::StagedKubernetesNetworkPolicy => "stagedkubernetesnetworkpolicy",
            },
            Owner::Profile(_) => "profile",
        }
    }

    /// The `policy` label: `namespace/name` for a namespaced policy, the name otherwise.
    pub fn name(&self) -> String {
        match self {
            Owner::Policy { policy, .. } => match &policy.namespace {
                Some(ns) => format!("{ns}/{}", policy.name),
                None => policy.name.clone(),
            },
            Owner::Profile(p) => p.clone(),
        }
    }
}

/// One policy or profile rule on a node: whose, which direction, which index in that
/// direction's rules (as `explain` and the resource count them, from 0).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleOrigin {
    pub owner: Owner,
    pub direction: Direction,
    pub rule: usize,
}

/// What the renderer recorded about one chain holding policy or profile rules: its direction,
/// and the owner and policy rule index of each of its nft rules, by rule id (a stage chain
/// holds the rules of several policies and profiles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainOrigin {
    pub direction: Direction,
    pub rules: HashMap<String, (Owner, usize)>,
}

/// The record of every chain holding policy or profile rules, by chain name.
pub type Origins = BTreeMap<String, ChainOrigin>;

/// Packets and bytes counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    pub packets: u64,
    pub bytes: u64,
}

/// The counters could not be read from the kernel's listing.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the counters in nft's listing: {0}")]
pub struct ListingError(String);

/// Every recorded rule's hits on this node, from the kernel's listing: each policy or profile
/// rule of `origins` appears (0 when no packet hit it), summed over its nft rules. Kernel rules
/// of chains or ids not recorded (other chains, or a table being changed) are left out.
pub fn rule_hits(
    json: &str,
    origins: &Origins,
) -> Result<BTreeMap<RuleOrigin, Hits>, ListingError> {
    let mut out = BTreeMap::new();
    for c in origins.values() {
        for (owner, rule) in c.rules.values() {
            out.entry(RuleOrigin {
                owner: owner.clone(),
                direction: c.direction,
                rule: *rule,
            })
            .or_insert_with(Hits::default);
        }
    }
    let root: Value =
        serde_json::from_str(json).map_err(|e| ListingError(format!("not JSON: {e}")))?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| ListingError("no \"nftables\" array".into()))?;
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let Some(origin) = rule
            .get("chain")
            .and_then(Value::as_str)
            .and_then(|c| origins.get(c))
        else {
            continue;
        };
        let comment = rule.get("comment").and_then(Value::as_str).unwrap_or("");
        let id = comment.split(' ').next().unwrap_or("");
        let Some((owner, index)) = origin.rules.get(id) else {
            continue;
        };
        let Some(hits) = counter(rule.get("expr")) else {
            continue;
        };
        let total = out
            .entry(RuleOrigin {
                owner: owner.clone(),
                direction: origin.direction,
                rule: *index,
            })
            .or_insert_with(Hits::default);
        total.packets += hits.packets;
        total.bytes += hits.bytes;
    }
    Ok(out)
}

/// The anonymous counter among a rule's statements.
fn counter(expr: Option<&Value>) -> Option<Hits> {
    expr?.as_array()?.iter().find_map(|s| {
        let c = s.get("counter")?;
        Some(Hits {
            packets: c.get("packets")?.as_u64()?,
            bytes: c.get("bytes")?.as_u64()?,
        })
    })
}
