//! Kubernetes objects and their conversion to Calico resources, as Calico's Kubernetes
//! integration (kube-controllers in etcd mode, libcalico-go in KDD mode) performs it:
//!
//! - NetworkPolicy (networking.k8s.io/v1 and the old extensions/v1beta1) → NetworkPolicy
//!   `knp.default.<name>` in tier `default`, order 1000;
//! - Namespace → Profile `kns.<namespace>` (allow both ways; `pcns.`-prefixed labels);
//!   a namespace with the old `net.beta.kubernetes.io/network-policy` DefaultDeny annotation gets
//!   an ingress Deny instead, as the pre-1.7 policy controller rendered it;
//! - ServiceAccount → Profile `ksa.<namespace>.<name>` (labels only);
//! - Pod → WorkloadEndpoint (host-network and unscheduled pods have none).
//!
//! Only the fields Calico reads are modelled on Pods and Namespaces; other fields are ignored so
//! that `kubectl get -o yaml` output loads. NetworkPolicy is modelled completely and rejects
//! unknown fields.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gingham_selector::k8s_label_selector;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cidr;
use crate::defaults::{NAMESPACE_LABEL, ORCHESTRATOR_LABEL, SERVICE_ACCOUNT_LABEL};
use crate::endpoint::{IpNat, WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec};
use crate::error::ConvertError;
use crate::meta::{Labels, ObjectMeta};
use crate::names;
use crate::policy::{DEFAULT_TIER, NetworkPolicy, NetworkPolicySpec, Profile, ProfileSpec};
use crate::port::Port;
use crate::protocol::Protocol;
use crate::resource::{Conversion, Resource, from_value_tracked};
use crate::rule::{Action, EntityRule, PolicyType, Rule};

/// Prefix of Calico NetworkPolicies converted from Kubernetes ones.
pub const K8S_POLICY_PREFIX: &str = "knp.default.";
/// Prefix of namespace profiles.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// Prefix of service-account profiles.
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";
/// Prefix of namespace labels inherited through profiles.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// Prefix of service-account labels inherited through profiles.
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// The label carrying the namespace or service-account name.
pub const NAME_LABEL: &str = "projectcalico.org/name";
/// The orchestrator name of Kubernetes (WorkloadEndpoints, Node `orchRefs`).
pub const K8S_ORCHESTRATOR: &str = "k8s";
/// The order of converted Kubernetes policies.
pub const K8S_POLICY_ORDER: f64 = 1000.0;
/// The old (Kubernetes ≤ 1.6) namespace isolation annotation.
pub const ISOLATION_ANNOTATION: &str = "net.beta.kubernetes.io/network-policy";
/// Calico CNI's pod IP annotation.
pub const ANNOTATION_POD_IP: &str = "cni.projectcalico.org/podIP";
/// Calico CNI's pod IPs annotation.
pub const ANNOTATION_POD_IPS: &str = "cni.projectcalico.org/podIPs";
/// Calico IPAM's requested-addresses annotation (a JSON list).
pub const ANNOTATION_IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";
/// Calico CNI's annotation for addresses used without IPAM (a JSON list; needs
/// `feature_control.ip_addrs_no_ipam`).
pub const ANNOTATION_IP_ADDRS_NO_IPAM: &str = "cni.projectcalico.org/ipAddrsNoIpam";
/// Calico CNI's IPv4 pools annotation, on pods or namespaces (a JSON list of names or CIDRs).
pub const ANNOTATION_IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
/// Calico CNI's IPv6 pools annotation, on pods or namespaces.
pub const ANNOTATION_IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
/// Calico CNI's IP families annotation (`["IPv4"]`, `["IPv4", "IPv6"]`...).
pub const ANNOTATION_IP_FAMILIES: &str = "cni.projectcalico.org/ipFamilies";
/// Calico CNI's container id annotation.
pub const ANNOTATION_CONTAINER_ID: &str = "cni.projectcalico.org/containerID";
/// Floating IPs annotation (a JSON list).
pub const ANNOTATION_FLOATING_IPS: &str = "cni.projectcalico.org/floatingIPs";
/// Allowed spoofed source prefixes annotation (a JSON list).
pub const ANNOTATION_ALLOWED_SOURCE_PREFIXES: &str = "cni.projectcalico.org/allowedSourcePrefixes";

/// The Kubernetes kinds this crate converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum K8sKind {
    /// networking.k8s.io/v1 or extensions/v1beta1 NetworkPolicy.
    NetworkPolicy,
    /// v1 Namespace.
    Namespace,
    /// v1 Pod.
    Pod,
}

impl K8sKind {
    /// Classifies an apiVersion/kind pair.
    pub fn from_api_kind(api: &str, kind: &str) -> Option<K8sKind> {
        match (api, kind) {
            ("networking.k8s.io/v1" | "extensions/v1beta1", "NetworkPolicy") => {
                Some(K8sKind::NetworkPolicy)
            }
            ("v1", "Namespace") => Some(K8sKind::Namespace),
            ("v1", "Pod") => Some(K8sKind::Pod),
            _ => None,
        }
    }
}

/// The metadata Calico reads from Kubernetes objects (other fields are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sMeta {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Labels,
    /// UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

impl K8sMeta {
    fn namespace_or_default(&self) -> String {
        match self.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns.to_string(),
            _ => "default".to_string(),
        }
    }
}

/// A Kubernetes Namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sNamespace {
    /// Metadata.
    #[serde(default)]
    pub metadata: K8sMeta,
}

/// A Kubernetes ServiceAccount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sServiceAccount {
    /// Metadata.
    #[serde(default)]
    pub metadata: K8sMeta,
}

/// A Kubernetes Pod (the fields Calico reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sPod {
    /// Metadata.
    #[serde(default)]
    pub metadata: K8sMeta,
    /// Spec.
    #[serde(default)]
    pub spec: K8sPodSpec,
    /// Status.
    #[serde(default)]
    pub status: K8sPodStatus,
}

/// Pod spec fields Calico reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sPodSpec {
    /// The node the pod runs on.
    #[serde(default)]
    pub node_name: String,
    /// Host networking.
    #[serde(default)]
    pub host_network: bool,
    /// Service account.
    #[serde(default)]
    pub service_account_name: String,
    /// Deprecated alias of `serviceAccountName`.
    #[serde(default)]
    pub service_account: String,
    /// Containers.
    #[serde(default)]
    pub containers: Vec<K8sContainer>,
}

/// A container (only its ports matter here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sContainer {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<K8sContainerPort>,
}

/// A container port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sContainerPort {
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Container port.
    #[serde(default)]
    pub container_port: u16,
    /// Host port.
    #[serde(default)]
    pub host_port: u16,
    /// Host IP.
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
    /// TCP (default), UDP or SCTP.
    #[serde(default)]
    pub protocol: String,
}

/// Pod status fields Calico reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sPodStatus {
    /// Phase (`Running`, `Succeeded`...).
    #[serde(default)]
    pub phase: String,
    /// Primary IP.
    #[serde(rename = "podIP", default)]
    pub pod_ip: String,
    /// All IPs.
    #[serde(rename = "podIPs", default)]
    pub pod_ips: Vec<K8sPodIp>,
}

/// One pod IP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sPodIp {
    /// The address.
    #[serde(default)]
    pub ip: String,
}

/// A Kubernetes NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sNetworkPolicy {
    /// Metadata.
    #[serde(default)]
    pub metadata: K8sMeta,
    /// Spec.
    #[serde(default)]
    pub spec: K8sNetworkPolicySpec,
    /// Status (ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// NetworkPolicy spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sNetworkPolicySpec {
    /// Pods the policy applies to (in its namespace); empty = all.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Ingress rules; absent or empty with type Ingress = isolate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<K8sIngressRule>>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<K8sEgressRule>>,
    /// `Ingress` and/or `Egress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<String>>,
}

/// A label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Exact label matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    /// Expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether there are no terms (selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// The Calico selector terms (`a == 'b' && has(c)`), `""` when empty.
    pub fn to_calico(&self) -> Result<String, String> {
        let exprs: Vec<(String, String, Vec<String>)> = self
            .match_expressions
            .iter()
            .map(|e| (e.key.clone(), e.operator.clone(), e.values.clone()))
            .collect();
        k8s_label_selector(&self.match_labels, &exprs)
    }
}

/// One selector expression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In`/`NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// An ingress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sIngressRule {
    /// Allowed sources; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<K8sPeer>,
    /// Allowed destination ports; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<K8sPolicyPort>,
}

/// An egress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sEgressRule {
    /// Allowed destinations; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<K8sPeer>,
    /// Allowed destination ports; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<K8sPolicyPort>,
}

/// A policy peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sPeer {
    /// Pods (in the policy's namespace, or in the selected namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// A CIDR with exceptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// A CIDR with exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    /// The CIDR.
    pub cidr: String,
    /// Excluded CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A port (or port range) of a policy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sPolicyPort {
    /// TCP (default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// A number or a named port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrName>,
    /// End of a numeric range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

/// A port number or name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrName {
    /// Number.
    Int(u16),
    /// Name (or digits as a string).
    Name(String),
}

impl std::fmt::Display for IntOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrName::Int(n) => write!(f, "{n}"),
            IntOrName::Name(s) => f.write_str(s),
        }
    }
}

// ===== Namespace and ServiceAccount =====

/// Whether a namespace carries the old DefaultDeny isolation annotation.
pub fn namespace_default_deny(ns: &K8sNamespace) -> bool {
    ns.metadata
        .annotations
        .get(ISOLATION_ANNOTATION)
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .and_then(|v| {
            v.get("ingress")
                .and_then(|i| i.get("isolation"))
                .and_then(Value::as_str)
                .map(|s| s == "DefaultDeny")
        })
        .unwrap_or(false)
}

/// Namespace `N` → Profile `kns.N`: ingress and egress Allow (ingress Deny when the old
/// DefaultDeny annotation is set), labelsToApply `pcns.<key>` for every namespace label plus
/// `pcns.projectcalico.org/name: N`.
pub fn namespace_to_profile(ns: &K8sNamespace) -> Profile {
    let name = &ns.metadata.name;
    let mut labels: Labels = ns
        .metadata
        .labels
        .iter()
        .map(|(k, v)| (format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{NAMESPACE_LABEL_PREFIX}{NAME_LABEL}"),
        name.clone(),
    );
    let ingress_action = if namespace_default_deny(ns) {
        Action::Deny
    } else {
        Action::Allow
    };
    Profile {
        metadata: ObjectMeta {
            name: format!("{NAMESPACE_PROFILE_PREFIX}{name}"),
            uid: ns.metadata.uid.clone(),
            creation_timestamp: ns.metadata.creation_timestamp.clone(),
            ..ObjectMeta::default()
        },
        spec: ProfileSpec {
            ingress: vec![Rule::new(ingress_action)],
            egress: vec![Rule::new(Action::Allow)],
            labels_to_apply: labels,
        },
    }
}

/// The name of a service account's profile: `ksa.<namespace>.<name>`.
pub fn service_account_profile_name(namespace: &str, name: &str) -> String {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{ns}.{name}")
}

/// ServiceAccount → Profile `ksa.<namespace>.<name>`: no rules, labelsToApply `pcsa.<key>` for
/// every label plus `pcsa.projectcalico.org/name: <name>`.
pub fn service_account_to_profile(sa: &K8sServiceAccount) -> Profile {
    let mut labels: Labels = sa
        .metadata
        .labels
        .iter()
        .map(|(k, v)| (format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{NAME_LABEL}"),
        sa.metadata.name.clone(),
    );
    Profile {
        metadata: ObjectMeta::named(service_account_profile_name(
            sa.metadata.namespace.as_deref().unwrap_or(""),
            &sa.metadata.name,
        )),
        spec: ProfileSpec {
            labels_to_apply: labels,
            ..ProfileSpec::default()
        },
    }
}

// ===== Pod =====

/// Why a pod has no workload endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoEndpoint {
    /// The pod uses the host's network namespace.
    HostNetwork,
    /// The pod has no node yet.
    NotScheduled,
}

fn parse_ip_list(raw: &str) -> Vec<String> {
    // `ipAddrs`-style annotations are JSON lists; podIPs is comma separated.
    if raw.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw).unwrap_or_default()
    } else {
        raw.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// The pod's addresses as Calico finds them: `status.podIPs`, `status.podIP`, the
/// `cni.projectcalico.org/podIPs` / `podIP` annotations, then `cni.projectcalico.org/ipAddrs`.
pub fn pod_ips(pod: &K8sPod) -> Result<Vec<IpAddr>, ConvertError> {
    let ann = &pod.metadata.annotations;
    let (path, raw): (&str, Vec<String>) = if !pod.status.pod_ips.is_empty() {
        (
            "status.podIPs",
            pod.status.pod_ips.iter().map(|p| p.ip.clone()).collect(),
        )
    } else if !pod.status.pod_ip.is_empty() {
        ("status.podIP", vec![pod.status.pod_ip.clone()])
    } else if let Some(v) = ann.get(ANNOTATION_POD_IPS).filter(|v| !v.is_empty()) {
        (
            "metadata.annotations.cni.projectcalico.org/podIPs",
            parse_ip_list(v),
        )
    } else if let Some(v) = ann.get(ANNOTATION_POD_IP).filter(|v| !v.is_empty()) {
        (
            "metadata.annotations.cni.projectcalico.org/podIP",
            vec![v.clone()],
        )
    } else if let Some(v) = ann.get(ANNOTATION_IP_ADDRS).filter(|v| !v.is_empty()) {
        (
            "metadata.annotations.cni.projectcalico.org/ipAddrs",
            parse_ip_list(v),
        )
    } else {
        return Ok(Vec::new());
    };
    raw.iter()
        .map(|s| {
            cidr::parse_net(s)
                .map(|n| n.addr())
                .map_err(|e| ConvertError::new(path, e))
        })
        .collect()
}

/// Pod → WorkloadEndpoint, as Calico's pod conversion does. Returns why there is none for
/// host-network and unscheduled pods.
pub fn pod_to_workload_endpoint(
    pod: &K8sPod,
) -> Result<Result<WorkloadEndpoint, NoEndpoint>, ConvertError> {
    if pod.spec.host_network {
        return Ok(Err(NoEndpoint::HostNetwork));
    }
    if pod.spec.node_name.is_empty() {
        return Ok(Err(NoEndpoint::NotScheduled));
    }
    let ns = pod.metadata.namespace_or_default();
    let name = &pod.metadata.name;
    if name.is_empty() {
        return Err(ConvertError::new("metadata.name", "a pod needs a name"));
    }
    let sa = [&pod.spec.service_account_name, &pod.spec.service_account]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| "default".to_string());
    let wep_name = names::workload_endpoint_name(&pod.spec.node_name, "k8s", name, "eth0")
        .map_err(|e| ConvertError::new("spec.nodeName", e))?;
    let finished = matches!(
        pod.status.phase.as_str(),
        "Succeeded" | "Failed" | "Completed"
    );
    let ips = if finished { Vec::new() } else { pod_ips(pod)? };
    let ip_networks: Vec<IpNet> = ips.iter().map(|ip| IpNet::from(*ip)).collect();

    let mut labels = pod.metadata.labels.clone();
    labels.insert(NAMESPACE_LABEL.to_string(), ns.clone());
    labels.insert(ORCHESTRATOR_LABEL.to_string(), "k8s".to_string());
    if sa.len() < 63 {
        labels.insert(SERVICE_ACCOUNT_LABEL.to_string(), sa.clone());
    }

    let ann = &pod.metadata.annotations;
    let mut ip_nats = Vec::new();
    if let Some(raw) = ann.get(ANNOTATION_FLOATING_IPS)
        && !ips.is_empty()
    {
        let floating: Vec<String> = serde_json::from_str(raw).map_err(|e| {
            ConvertError::new(
                "metadata.annotations.cni.projectcalico.org/floatingIPs",
                format!(
                    "{} is not a JSON list of IPs: {e}",
                    crate::error::quote(raw)
                ),
            )
        })?;
        for f in floating {
            let want_v6 = f.contains(':');
            if let Some(internal) = ips.iter().find(|ip| ip.is_ipv6() == want_v6) {
                ip_nats.push(IpNat {
                    internal_ip: internal.to_string(),
                    external_ip: f,
                });
            }
        }
    }
    let mut spoof = Vec::new();
    if let Some(raw) = ann.get(ANNOTATION_ALLOWED_SOURCE_PREFIXES) {
        let list: Vec<String> = serde_json::from_str(raw).map_err(|e| {
            ConvertError::new(
                "metadata.annotations.cni.projectcalico.org/allowedSourcePrefixes",
                format!(
                    "{} is not a JSON list of CIDRs: {e}",
                    crate::error::quote(raw)
                ),
            )
        })?;
        for s in list {
            spoof.push(cidr::parse_net(&s).map(|n| n.trunc()).map_err(|e| {
                ConvertError::new(
                    "metadata.annotations.cni.projectcalico.org/allowedSourcePrefixes",
                    e,
                )
            })?);
        }
    }

    let mut ports = Vec::new();
    for c in &pod.spec.containers {
        for p in &c.ports {
            if p.container_port == 0 || (p.host_port == 0 && p.name.is_empty()) {
                continue;
            }
            let protocol = match p.protocol.as_str() {
                "" | "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                // Calico skips ports with protocols it does not know.
                _ => continue,
            };
            ports.push(WorkloadEndpointPort {
                name: p.name.clone(),
                protocol,
                port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            });
        }
    }

    Ok(Ok(WorkloadEndpoint {
        metadata: ObjectMeta {
            name: wep_name,
            namespace: Some(ns.clone()),
            labels,
            uid: pod.metadata.uid.clone(),
            creation_timestamp: pod.metadata.creation_timestamp.clone(),
            ..ObjectMeta::default()
        },
        spec: WorkloadEndpointSpec {
            orchestrator: "k8s".to_string(),
            node: pod.spec.node_name.clone(),
            pod: name.clone(),
            container_id: ann
                .get(ANNOTATION_CONTAINER_ID)
                .cloned()
                .unwrap_or_default(),
            endpoint: "eth0".to_string(),
            service_account_name: sa.clone(),
            ip_networks,
            ip_nats,
            profiles: vec![
                format!("{NAMESPACE_PROFILE_PREFIX}{ns}"),
                service_account_profile_name(&ns, &sa),
            ],
            interface_name: names::pod_interface_name(&ns, name),
            ports,
            allow_spoofed_source_prefixes: spoof,
            ..WorkloadEndpointSpec::default()
        },
    }))
}

// ===== NetworkPolicy =====

const ORCHESTRATOR_TERM: &str = "projectcalico.org/orchestrator == 'k8s'";

fn pod_selector_to_calico(path: &str, s: Option<&LabelSelector>) -> Result<String, ConvertError> {
    let terms = match s {
        None => String::new(),
        Some(s) => s.to_calico().map_err(|e| ConvertError::new(path, e))?,
    };
    Ok(if terms.is_empty() {
        ORCHESTRATOR_TERM.to_string()
    } else {
        format!("{ORCHESTRATOR_TERM} && {terms}")
    })
}

fn namespace_selector_to_calico(
    path: &str,
    s: Option<&LabelSelector>,
) -> Result<String, ConvertError> {
    match s {
        None => Ok(String::new()),
        Some(s) if s.is_empty() => Ok("all()".to_string()),
        Some(s) => s.to_calico().map_err(|e| ConvertError::new(path, e)),
    }
}

/// Merges ports into the fewest ranges: named ports first (in order), then sorted numeric ranges.
pub fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    if ports.len() <= 1 {
        return ports;
    }
    let mut out = Vec::new();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for p in &ports {
        match p {
            Port::Named(_) => out.push(p.clone()),
            Port::Range { min, max } => ranges.push((u32::from(*min), u32::from(*max))),
        }
    }
    let numeric_count: u32 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    if numeric_count <= 1 {
        return ports;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some((_, end)) if a <= *end + 1 => *end = (*end).max(b),
            _ => merged.push((a, b)),
        }
    }
    for (a, b) in merged {
        out.push(Port::Range {
            min: a as u16,
            max: b as u16,
        });
    }
    out
}

struct PeerFields {
    selector: String,
    namespace_selector: String,
    nets: Vec<IpNet>,
    not_nets: Vec<IpNet>,
}

fn peer_fields(path: &str, peer: Option<&K8sPeer>) -> Result<PeerFields, ConvertError> {
    let mut f = PeerFields {
        selector: String::new(),
        namespace_selector: String::new(),
        nets: Vec::new(),
        not_nets: Vec::new(),
    };
    let Some(peer) = peer else { return Ok(f) };
    if let Some(b) = &peer.ip_block {
        let net = cidr::parse_net(&b.cidr)
            .map_err(|e| ConvertError::new(format!("{path}.ipBlock.cidr"), e))?;
        f.nets.push(net.trunc());
        for (i, e) in b.except.iter().enumerate() {
            let n = cidr::parse_net(e)
                .map_err(|m| ConvertError::new(format!("{path}.ipBlock.except[{i}]"), m))?;
            // As Kubernetes validates it: each exception a strict subset of the block.
            if !(net.trunc().contains(&n.trunc().network()) && n.prefix_len() > net.prefix_len()) {
                return Err(ConvertError::new(
                    format!("{path}.ipBlock.except[{i}]"),
                    format!(
                        "{} must be a strict subset of cidr {} (a smaller network inside it)",
                        crate::error::quote(e),
                        crate::error::quote(&b.cidr)
                    ),
                ));
            }
            f.not_nets.push(n.trunc());
        }
        return Ok(f);
    }
    f.selector =
        pod_selector_to_calico(&format!("{path}.podSelector"), peer.pod_selector.as_ref())?;
    f.namespace_selector = namespace_selector_to_calico(
        &format!("{path}.namespaceSelector"),
        peer.namespace_selector.as_ref(),
    )?;
    Ok(f)
}

fn k8s_port(path: &str, p: &K8sPolicyPort) -> Result<(Protocol, Option<Port>), ConvertError> {
    let proto = match p.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        Some(other) => {
            return Err(ConvertError::new(
                format!("{path}.protocol"),
                format!(
                    "{} is not a valid protocol (valid: TCP, UDP, SCTP)",
                    crate::error::quote(other)
                ),
            ));
        }
    };
    let port = match &p.port {
        None => None,
        Some(port) => {
            let text = match p.end_port {
                Some(end) => format!("{port}:{end}"),
                None => port.to_string(),
            };
            Some(Port::parse(&text).map_err(|e| ConvertError::new(format!("{path}.port"), e))?)
        }
    };
    Ok((proto, port))
}

fn k8s_rules(
    path: &str,
    peers: &[K8sPeer],
    ports: &[K8sPolicyPort],
    ingress: bool,
) -> Result<Vec<Rule>, ConvertError> {
    // Group ports by protocol; `None` means "any port" for that protocol.
    let mut by_proto: BTreeMap<String, (Protocol, Option<Vec<Port>>)> = BTreeMap::new();
    for (i, p) in ports.iter().enumerate() {
        let (proto, port) = k8s_port(&format!("{path}.ports[{i}]"), p)?;
        let entry = by_proto
            .entry(proto.to_string())
            .or_insert_with(|| (proto, Some(Vec::new())));
        match port {
            None => entry.1 = None,
            Some(port) => {
                if let Some(list) = &mut entry.1 {
                    list.push(port);
                }
            }
        }
    }
    let groups: Vec<(Option<Protocol>, Vec<Port>)> = if by_proto.is_empty() {
        vec![(None, Vec::new())]
    } else {
        by_proto
            .into_values()
            .map(|(proto, ports)| (Some(proto), simplify_ports(ports.unwrap_or_default())))
            .collect()
    };
    let peer_list: Vec<Option<&K8sPeer>> = if peers.is_empty() {
        vec![None]
    } else {
        peers.iter().map(Some).collect()
    };
    let peer_key = if ingress { "from" } else { "to" };
    let mut rules = Vec::new();
    for (proto, ports) in &groups {
        for (i, peer) in peer_list.iter().enumerate() {
            let f = peer_fields(&format!("{path}.{peer_key}[{i}]"), *peer)?;
            let peer_entity = EntityRule {
                selector: f.selector,
                namespace_selector: f.namespace_selector,
                nets: f.nets,
                not_nets: f.not_nets,
                ..EntityRule::default()
            };
            let mut rule = Rule::new(Action::Allow);
            rule.protocol = *proto;
            if ingress {
                rule.source = peer_entity;
                rule.destination.ports = ports.clone();
            } else {
                rule.destination = peer_entity;
                rule.destination.ports = ports.clone();
            }
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// Kubernetes NetworkPolicy → Calico NetworkPolicy `knp.default.<name>` (tier `default`,
/// order 1000, selector `projectcalico.org/orchestrator == 'k8s'` plus the podSelector terms,
/// one Allow rule per peer and protocol).
///
/// `policyTypes` absent means Ingress, plus Egress when egress rules are present (as the
/// Kubernetes API defaults it).
pub fn network_policy_to_calico(np: &K8sNetworkPolicy) -> Result<NetworkPolicy, ConvertError> {
    let name = &np.metadata.name;
    if name.is_empty() {
        return Err(ConvertError::new(
            "metadata.name",
            "a NetworkPolicy needs a name",
        ));
    }
    let spec = &np.spec;
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        ingress.extend(k8s_rules(
            &format!("spec.ingress[{i}]"),
            &r.from,
            &r.ports,
            true,
        )?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        egress.extend(k8s_rules(
            &format!("spec.egress[{i}]"),
            &r.to,
            &r.ports,
            false,
        )?);
    }
    let types = match &spec.policy_types {
        Some(list) if !list.is_empty() => {
            let mut want_in = false;
            let mut want_out = false;
            for (i, t) in list.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => want_in = true,
                    "Egress" => want_out = true,
                    other => {
                        return Err(ConvertError::new(
                            format!("spec.policyTypes[{i}]"),
                            format!(
                                "{} is not a valid policy type (valid: Ingress, Egress)",
                                crate::error::quote(other)
                            ),
                        ));
                    }
                }
            }
            let mut t = Vec::new();
            if want_in {
                t.push(PolicyType::Ingress);
            }
            if want_out {
                t.push(PolicyType::Egress);
            }
            t
        }
        _ => {
            let mut t = vec![PolicyType::Ingress];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push(PolicyType::Egress);
            }
            t
        }
    };
    Ok(NetworkPolicy {
        metadata: ObjectMeta {
            name: format!("{K8S_POLICY_PREFIX}{name}"),
            namespace: Some(np.metadata.namespace_or_default()),
            uid: np.metadata.uid.clone(),
            creation_timestamp: np.metadata.creation_timestamp.clone(),
            ..ObjectMeta::default()
        },
        spec: NetworkPolicySpec {
            tier: DEFAULT_TIER.to_string(),
            order: Some(K8S_POLICY_ORDER),
            selector: pod_selector_to_calico("spec.podSelector", Some(&spec.pod_selector))?,
            ingress,
            egress,
            types,
            ..NetworkPolicySpec::default()
        },
    })
}

fn lenient<T: serde::de::DeserializeOwned>(mut value: Value) -> Result<T, ConvertError> {
    if let Value::Object(m) = &mut value {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    from_value_tracked(value).map_err(|e| ConvertError::new(e.path, e.message))
}

/// Converts one Kubernetes object of the given kind (the JSON value of the whole object).
pub fn convert_k8s_value(kind: K8sKind, value: Value) -> Result<Conversion, ConvertError> {
    let mut out = Conversion::default();
    match kind {
        K8sKind::NetworkPolicy => {
            let np: K8sNetworkPolicy = lenient(value)?;
            let p = network_policy_to_calico(&np)?;
            out.notices.push(format!(
                "converted Kubernetes NetworkPolicy '{}/{}' to NetworkPolicy '{}'",
                p.metadata.namespace_or_empty(),
                np.metadata.name,
                p.metadata.name
            ));
            out.resources.push(Resource::NetworkPolicy(p));
        }
        K8sKind::Namespace => {
            let ns: K8sNamespace = lenient(value)?;
            if ns.metadata.name.is_empty() {
                return Err(ConvertError::new(
                    "metadata.name",
                    "a Namespace needs a name",
                ));
            }
            let p = namespace_to_profile(&ns);
            let mut note = format!(
                "converted Kubernetes Namespace '{}' to Profile '{}'",
                ns.metadata.name, p.metadata.name
            );
            if namespace_default_deny(&ns) {
                note.push_str(" (DefaultDeny isolation annotation: ingress Deny)");
            }
            out.notices.push(note);
            out.resources.push(Resource::Profile(p));
        }
        K8sKind::Pod => {
            let pod: K8sPod = lenient(value)?;
            let id = format!(
                "{}/{}",
                pod.metadata.namespace_or_default(),
                pod.metadata.name
            );
            match pod_to_workload_endpoint(&pod)? {
                Ok(w) => {
                    out.notices.push(format!(
                        "converted Kubernetes Pod '{id}' to WorkloadEndpoint '{}'",
                        w.metadata.name
                    ));
                    out.resources.push(Resource::WorkloadEndpoint(w));
                }
                Err(NoEndpoint::HostNetwork) => out
                    .notices
                    .push(format!("Kubernetes Pod '{id}' uses the host network: no WorkloadEndpoint")),
                Err(NoEndpoint::NotScheduled) => out.notices.push(format!(
                    "Kubernetes Pod '{id}' has no spec.nodeName (not scheduled): no WorkloadEndpoint"
                )),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplify_ports_table() {
        let p = |s: &str| Port::parse(s).expect("port");
        let cases: &[(&[&str], &[&str])] = &[
            (&["80"], &["80"]),
            (
                &["80", "81", "82", "9090", "foo"],
                &["foo", "80:82", "9090"],
            ),
            (&["5433", "5432", "5432"], &["5432:5433"]),
            (&["100:200", "150:300", "301"], &["100:301"]),
            (&["http"], &["http"]),
        ];
        for (input, want) in cases {
            let got: Vec<String> = simplify_ports(input.iter().map(|s| p(s)).collect())
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, *want, "{input:?}");
        }
    }

    #[test]
    fn default_deny_annotation() {
        let mut ns = K8sNamespace::default();
        ns.metadata.name = "test".into();
        assert!(!namespace_default_deny(&ns));
        ns.metadata.annotations.insert(
            ISOLATION_ANNOTATION.into(),
            r#"{"ingress": {"isolation": "DefaultDeny"}}"#.into(),
        );
        assert!(namespace_default_deny(&ns));
        let p = namespace_to_profile(&ns);
        assert_eq!(p.spec.ingress[0].action, Action::Deny);
        assert_eq!(p.spec.egress[0].action, Action::Allow);
    }

    #[test]
    fn service_account_profile() {
        let mut sa = K8sServiceAccount::default();
        sa.metadata.name = "web".into();
        sa.metadata.namespace = Some("shop".into());
        sa.metadata.labels.insert("team".into(), "a".into());
        let p = service_account_to_profile(&sa);
        assert_eq!(p.metadata.name, "ksa.shop.web");
        assert_eq!(
            p.spec.labels_to_apply.get("pcsa.team").map(String::as_str),
            Some("a")
        );
        assert_eq!(
            p.spec
                .labels_to_apply
                .get("pcsa.projectcalico.org/name")
                .map(String::as_str),
            Some("web")
        );
        assert!(p.spec.ingress.is_empty() && p.spec.egress.is_empty());
    }

    #[test]
    fn pod_ip_sources() {
        let mut pod = K8sPod::default();
        pod.metadata
            .annotations
            .insert(ANNOTATION_POD_IPS.into(), "10.0.0.1/32,fd00::1/128".into());
        let ips = pod_ips(&pod).expect("ips");
        assert_eq!(ips.len(), 2);
        pod.status.pod_ip = "10.9.9.9".into();
        assert_eq!(
            pod_ips(&pod).expect("ips"),
            vec!["10.9.9.9".parse::<IpAddr>().unwrap()]
        );
        pod.status.pod_ip = "bogus".into();
        assert!(pod_ips(&pod).is_err());
    }
}
