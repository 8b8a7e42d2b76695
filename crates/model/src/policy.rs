//! Policies, tiers and profiles.

use serde::{Deserialize, Serialize};

use crate::error::ConvertError;
use crate::k8s::{
    K8sEgressRule, K8sIngressRule, K8sMeta, K8sNetworkPolicy, K8sNetworkPolicySpec, LabelSelector,
    network_policy_to_calico,
};
use crate::macros::string_enum;
use crate::meta::{ConditionsStatus, Labels, ObjectMeta};
use crate::rule::{Action, PolicyType, Rule};

/// The tier policies go to when they name none.
pub const DEFAULT_TIER: &str = "default";
/// The order of the `default` tier.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
/// The order of the `kube-admin` tier (Kubernetes AdminNetworkPolicy).
pub const KUBE_ADMIN_TIER_ORDER: f64 = 1_000.0;
/// The order of the `kube-baseline` tier (Kubernetes BaselineAdminNetworkPolicy).
pub const KUBE_BASELINE_TIER_ORDER: f64 = 10_000_000.0;
/// The label Calico adds to every policy naming its tier.
pub const TIER_LABEL: &str = "projectcalico.org/tier";

string_enum! {
    /// What a staged policy would do to its enforced counterpart.
    pub enum StagedAction ("staged action") {
        /// Create or replace the enforced policy.
        Set => "Set",
        /// Delete the enforced policy.
        Delete => "Delete",
        /// Learn mode.
        Learn => "Learn",
        /// Ignore.
        Ignore => "Ignore",
    }
}

string_enum! {
    /// Performance hints for policies.
    pub enum PerformanceHint ("performance hint") {
        /// Preload the policy on every node.
        AssumeNeededOnEveryNode => "AssumeNeededOnEveryNode",
    }
}

/// Serialises an `order` without a trailing `.0` when it is integral, as calicoctl prints it.
pub(crate) mod order {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => s.serialize_i64(*f as i64),
            Some(f) => s.serialize_f64(*f),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        if let Some(f) = v
            && !f.is_finite()
        {
            return Err(serde::de::Error::custom(format!(
                "order {f} is not a finite number"
            )));
        }
        Ok(v)
    }
}

/// A namespaced policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Metadata (namespaced).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

/// Specification of a [`NetworkPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Tier name (defaults to `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    /// Order within the tier; `None` sorts last.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "order")]
    pub order: Option<f64>,
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Which endpoints the policy applies to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Directions the policy applies to (inferred from the rules when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    /// Selects pods by service-account labels.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    /// Performance hints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<PerformanceHint>,
}

/// A cluster-wide policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalNetworkPolicy {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: GlobalNetworkPolicySpec,
}

/// Specification of a [`GlobalNetworkPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GlobalNetworkPolicySpec {
    /// Tier name (defaults to `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    /// Order within the tier; `None` sorts last.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "order")]
    pub order: Option<f64>,
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Which endpoints the policy applies to (workload and host endpoints).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Directions the policy applies to (inferred from the rules when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    /// Untracked (raw table) policy for host endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    /// Policy applied before DNAT on host endpoints (ingress only).
    #[serde(
        rename = "preDNAT",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub pre_dnat: bool,
    /// Also apply to traffic forwarded through host endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    /// Selects pods by service-account labels.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    /// Selects pods by namespace labels.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    /// Performance hints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<PerformanceHint>,
}

/// A staged (not enforced) Kubernetes NetworkPolicy: Calico's `StagedKubernetesNetworkPolicy`,
/// a Kubernetes `NetworkPolicySpec` with a `stagedAction`. It is evaluated as the Kubernetes
/// NetworkPolicy of the same name would be (`knp.default.<name>`), in the staged view only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedKubernetesNetworkPolicy {
    /// Metadata (namespaced).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: StagedKubernetesNetworkPolicySpec,
}

/// Specification of a [`StagedKubernetesNetworkPolicy`]: Kubernetes' `NetworkPolicySpec`
/// fields and `stagedAction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StagedKubernetesNetworkPolicySpec {
    /// What to do to the enforced Kubernetes NetworkPolicy (defaults to `Set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    /// Pods the policy applies to (in its namespace); empty = all.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub pod_selector: LabelSelector,
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<K8sIngressRule>>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<K8sEgressRule>>,
    /// `Ingress` and/or `Egress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<String>>,
}

impl StagedKubernetesNetworkPolicy {
    /// The Kubernetes NetworkPolicy this one stages.
    pub fn to_k8s(&self) -> K8sNetworkPolicy {
        let m = &self.metadata;
        K8sNetworkPolicy {
            metadata: K8sMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                labels: m.labels.clone(),
                annotations: m.annotations.clone(),
                uid: m.uid.clone(),
                creation_timestamp: m.creation_timestamp.clone(),
            },
            spec: K8sNetworkPolicySpec {
                pod_selector: self.spec.pod_selector.clone(),
                ingress: self.spec.ingress.clone(),
                egress: self.spec.egress.clone(),
                policy_types: self.spec.policy_types.clone(),
            },
            status: None,
        }
    }

    /// The Calico policy it stages: what Calico enforces for the Kubernetes NetworkPolicy of
    /// the same name and spec.
    pub fn to_calico(&self) -> Result<NetworkPolicy, ConvertError> {
        network_policy_to_calico(&self.to_k8s())
    }
}

/// A staged (not enforced) namespaced policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedNetworkPolicy {
    /// Metadata (namespaced).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: StagedNetworkPolicySpec,
}

/// Specification of a [`StagedNetworkPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StagedNetworkPolicySpec {
    /// What to do to the enforced policy (defaults to `Set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    /// Tier name (defaults to `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    /// Order within the tier.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "order")]
    pub order: Option<f64>,
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Which endpoints the policy applies to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Directions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    /// Selects pods by service-account labels.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    /// Performance hints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<PerformanceHint>,
}

/// A staged (not enforced) cluster-wide policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedGlobalNetworkPolicy {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: StagedGlobalNetworkPolicySpec,
}

/// Specification of a [`StagedGlobalNetworkPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StagedGlobalNetworkPolicySpec {
    /// What to do to the enforced policy (defaults to `Set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    /// Tier name (defaults to `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    /// Order within the tier.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "order")]
    pub order: Option<f64>,
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Which endpoints the policy applies to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Directions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    /// Untracked policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    /// Pre-DNAT policy.
    #[serde(
        rename = "preDNAT",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub pre_dnat: bool,
    /// Apply to forwarded traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    /// Selects pods by service-account labels.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    /// Selects pods by namespace labels.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    /// Performance hints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<PerformanceHint>,
}

/// A tier: an ordered group of policies with a default action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: TierSpec,
    /// Status written by the tier controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ConditionsStatus>,
}

/// Specification of a [`Tier`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TierSpec {
    /// Order among tiers; `None` sorts last.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "order")]
    pub order: Option<f64>,
    /// What happens when no policy in the tier decided: `Deny` (default) or `Pass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

/// A profile: rules and labels applied to the endpoints that reference it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: ProfileSpec,
}

/// Specification of a [`Profile`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileSpec {
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Labels every member endpoint inherits.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels_to_apply: Labels,
}

/// Calico's defaulting of policy `types`: egress rules only → `[Egress]`, both → both,
/// otherwise (including no rules at all) → `[Ingress]`.
pub fn infer_types(ingress: &[Rule], egress: &[Rule]) -> Vec<PolicyType> {
    if egress.is_empty() {
        vec![PolicyType::Ingress]
    } else if ingress.is_empty() {
        vec![PolicyType::Egress]
    } else {
        vec![PolicyType::Ingress, PolicyType::Egress]
    }
}
