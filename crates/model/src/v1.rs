//! Legacy Calico v1 resources (calicoctl 1.x, `apiVersion: v1` with lower-camel kinds) and their
//! conversion to v3, following the rules of `calico-upgrade` / `calicoctl convert`:
//!
//! - `policy` → GlobalNetworkPolicy; name normalised with dots turned into dashes (plus a
//!   `-<sha1 prefix>` suffix when the name changed); types re-cased or inferred; `doNotTrack` and
//!   `preDNAT` force `applyOnForward`;
//! - rules: actions and protocols re-cased, `net`/`notNet` merged into `nets`/`notNets` with host
//!   bits masked, `tag`/`notTag` turned into `X == ''` selectors, `calico/k8s_ns` in selectors
//!   replaced by `projectcalico.org/namespace`;
//! - `profile` → Profile (`k8s_ns.<ns>` → `kns.<ns>`), labels and tags → `labelsToApply`;
//! - `hostEndpoint` → HostEndpoint `<node>.<name>`;
//! - `workloadEndpoint` → WorkloadEndpoint with its name recomputed (k8s workloads `<ns>.<pod>`);
//! - `ipPool` → IPPool named after its CIDR (`10-1-0-0-16`) with the IPIP mode mapped;
//! - `bgpPeer` → BGPPeer `<ip-with-dashes>` or `<node>.<ip-with-dashes>`;
//! - `node` → Node.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::bgp::{AsNumber, BgpPeer, BgpPeerSpec};
use crate::cidr;
use crate::endpoint::{
    EndpointPort, HostEndpoint, HostEndpointSpec, IpNat, WorkloadEndpoint, WorkloadEndpointPort,
    WorkloadEndpointSpec,
};
use crate::error::ConvertError;
use crate::meta::{Labels, ObjectMeta};
use crate::names;
use crate::node::{Node, NodeBgpSpec, NodeSpec, OrchRef};
use crate::policy::{
    GlobalNetworkPolicy, GlobalNetworkPolicySpec, Profile, ProfileSpec, infer_types,
};
use crate::pool::{AllowedUse, IpPool, IpPoolSpec, IpipMode, VxlanMode};
use crate::port::Port;
use crate::protocol::Protocol;
use crate::resource::{Conversion, Resource, from_value_tracked};
use crate::rule::{Action, EntityRule, IcmpFields, PolicyType, Rule};

/// A legacy v1 kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum V1Kind {
    /// `policy`.
    Policy,
    /// `profile`.
    Profile,
    /// `hostEndpoint`.
    HostEndpoint,
    /// `workloadEndpoint`.
    WorkloadEndpoint,
    /// `ipPool`.
    IpPool,
    /// `bgpPeer`.
    BgpPeer,
    /// `node`.
    Node,
}

impl V1Kind {
    const ALL: [(V1Kind, &'static str); 7] = [
        (V1Kind::Policy, "policy"),
        (V1Kind::Profile, "profile"),
        (V1Kind::HostEndpoint, "hostEndpoint"),
        (V1Kind::WorkloadEndpoint, "workloadEndpoint"),
        (V1Kind::IpPool, "ipPool"),
        (V1Kind::BgpPeer, "bgpPeer"),
        (V1Kind::Node, "node"),
    ];

    /// The exact v1 kind name.
    pub fn name(self) -> &'static str {
        V1Kind::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("")
    }

    /// Parses an exact v1 kind name (`hostEndpoint`).
    pub fn from_name(s: &str) -> Option<V1Kind> {
        V1Kind::ALL.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }

    /// The valid names joined for messages.
    pub fn valid_names() -> String {
        V1Kind::ALL
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ===== v1 input types =====

/// A v1 protocol: any-case name or number.
#[derive(Debug, Clone)]
struct V1Protocol(Protocol);

impl<'de> Deserialize<'de> for V1Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Protocol::parse_any_case(&s)
                .map(V1Protocol)
                .map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{n} is not a valid protocol number (valid: 1-255)"
                    ))
                })
                .and_then(|n| Protocol::from_number(n).map_err(serde::de::Error::custom))
                .map(V1Protocol),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a valid protocol (valid: tcp, udp, icmp, icmpv6, sctp, udplite or a number 1-255)"
            ))),
        }
    }
}

/// A v1 network: IP or CIDR, host bits masked off (as the v1 backend stored it).
#[derive(Debug, Clone, Copy)]
struct V1Net(IpNet);

impl<'de> Deserialize<'de> for V1Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        cidr::parse_net(&s)
            .map(V1Net)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1Icmp {
    #[serde(rename = "type", default)]
    type_: Option<i64>,
    #[serde(default)]
    code: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1Entity {
    #[serde(default)]
    tag: String,
    #[serde(default)]
    net: Option<V1Net>,
    #[serde(default)]
    nets: Vec<V1Net>,
    #[serde(default)]
    selector: String,
    #[serde(default)]
    ports: Vec<Port>,
    #[serde(default)]
    not_tag: String,
    #[serde(default)]
    not_net: Option<V1Net>,
    #[serde(default)]
    not_nets: Vec<V1Net>,
    #[serde(default)]
    not_selector: String,
    #[serde(default)]
    not_ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1Rule {
    #[serde(default)]
    action: String,
    #[serde(default)]
    ip_version: Option<u8>,
    #[serde(default)]
    protocol: Option<V1Protocol>,
    #[serde(default)]
    icmp: Option<V1Icmp>,
    #[serde(default)]
    not_protocol: Option<V1Protocol>,
    #[serde(rename = "notICMP", default)]
    not_icmp: Option<V1Icmp>,
    #[serde(default)]
    source: V1Entity,
    #[serde(default)]
    destination: V1Entity,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1PolicyMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    annotations: Labels,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1PolicySpec {
    #[serde(default)]
    order: Option<f64>,
    #[serde(default)]
    ingress: Vec<V1Rule>,
    #[serde(default)]
    egress: Vec<V1Rule>,
    #[serde(default)]
    selector: String,
    #[serde(default)]
    do_not_track: bool,
    #[serde(rename = "preDNAT", default)]
    pre_dnat: bool,
    #[serde(default)]
    apply_on_forward: bool,
    #[serde(default)]
    types: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1Policy {
    #[serde(default)]
    metadata: V1PolicyMeta,
    #[serde(default)]
    spec: V1PolicySpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1ProfileMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1ProfileSpec {
    #[serde(default)]
    ingress: Vec<V1Rule>,
    #[serde(default)]
    egress: Vec<V1Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1Profile {
    #[serde(default)]
    metadata: V1ProfileMeta,
    #[serde(default)]
    spec: V1ProfileSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1EndpointPort {
    name: String,
    protocol: V1Protocol,
    port: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1HostEndpointMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1HostEndpointSpec {
    #[serde(default)]
    interface_name: String,
    #[serde(rename = "expectedIPs", default, with = "cidr::ips")]
    expected_ips: Vec<IpAddr>,
    #[serde(default)]
    profiles: Vec<String>,
    #[serde(default)]
    ports: Vec<V1EndpointPort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1HostEndpoint {
    #[serde(default)]
    metadata: V1HostEndpointMeta,
    #[serde(default)]
    spec: V1HostEndpointSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1WorkloadEndpointMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    workload: String,
    #[serde(default)]
    orchestrator: String,
    #[serde(default)]
    node: String,
    #[serde(rename = "activeInstanceID", default)]
    active_instance_id: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1IpNat {
    #[serde(rename = "internalIP")]
    internal_ip: String,
    #[serde(rename = "externalIP")]
    external_ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1WorkloadEndpointSpec {
    #[serde(rename = "ipNetworks", default, with = "cidr::nets")]
    ip_networks: Vec<IpNet>,
    #[serde(rename = "ipNATs", default)]
    ip_nats: Vec<V1IpNat>,
    #[serde(rename = "ipv4Gateway", default, with = "cidr::ip_opt")]
    ipv4_gateway: Option<IpAddr>,
    #[serde(rename = "ipv6Gateway", default, with = "cidr::ip_opt")]
    ipv6_gateway: Option<IpAddr>,
    #[serde(default)]
    profiles: Vec<String>,
    #[serde(default)]
    interface_name: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    ports: Vec<V1EndpointPort>,
    #[serde(rename = "allow_spoofed_source_prefixes", default, with = "cidr::nets")]
    allow_spoofed_source_prefixes: Vec<IpNet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1WorkloadEndpoint {
    #[serde(default)]
    metadata: V1WorkloadEndpointMeta,
    #[serde(default)]
    spec: V1WorkloadEndpointSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1IpPoolMeta {
    cidr: V1Net,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1Ipip {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    mode: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1IpPoolSpec {
    #[serde(default)]
    ipip: Option<V1Ipip>,
    #[serde(rename = "nat-outgoing", default)]
    nat_outgoing: bool,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1IpPool {
    metadata: V1IpPoolMeta,
    #[serde(default)]
    spec: V1IpPoolSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1BgpPeerMeta {
    #[serde(default)]
    scope: String,
    #[serde(default)]
    node: String,
    #[serde(rename = "peerIP", with = "ip_required")]
    peer_ip: IpAddr,
}

mod ip_required {
    use super::*;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
        let s = String::deserialize(d)?;
        cidr::parse_ip(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1BgpPeerSpec {
    #[serde(default)]
    as_number: Option<AsNumber>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1BgpPeer {
    metadata: V1BgpPeerMeta,
    #[serde(default)]
    spec: V1BgpPeerSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1NodeMeta {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1NodeBgp {
    #[serde(default)]
    as_number: Option<AsNumber>,
    #[serde(default, with = "cidr::net_opt")]
    ipv4_address: Option<IpNet>,
    #[serde(default, with = "cidr::net_opt")]
    ipv6_address: Option<IpNet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1OrchRef {
    #[serde(default)]
    node_name: String,
    #[serde(default)]
    orchestrator: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct V1NodeSpec {
    #[serde(default)]
    bgp: Option<V1NodeBgp>,
    #[serde(default)]
    orch_refs: Vec<V1OrchRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V1Node {
    #[serde(default)]
    metadata: V1NodeMeta,
    #[serde(default)]
    spec: V1NodeSpec,
}

// ===== conversion =====

fn tracked<T: serde::de::DeserializeOwned>(mut value: Value) -> Result<T, ConvertError> {
    if let Value::Object(m) = &mut value {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    from_value_tracked(value).map_err(|e| ConvertError::new(e.path, e.message))
}

/// `calico/k8s_ns` → `projectcalico.org/namespace` in selector text.
pub fn convert_v1_selector(sel: &str) -> String {
    sel.replace("calico/k8s_ns", "projectcalico.org/namespace")
}

/// `k8s_ns.<ns>` → `kns.<ns>`, then the usual v1 name conversion.
pub fn convert_v1_profile_name(name: &str) -> String {
    match name.strip_prefix("k8s_ns.") {
        Some(ns) => names::convert_v1_name(&format!("kns.{ns}")),
        None => names::convert_v1_name(name),
    }
}

fn merge_tag(sel: String, tag: &str) -> String {
    if tag.is_empty() {
        sel
    } else if sel.is_empty() {
        format!("{tag} == ''")
    } else {
        format!("({sel}) && {tag} == ''")
    }
}

fn convert_action(path: &str, a: &str) -> Result<Action, ConvertError> {
    match a.to_ascii_lowercase().as_str() {
        "" | "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        "log" => Ok(Action::Log),
        "pass" | "next-tier" => Ok(Action::Pass),
        _ => Err(ConvertError::new(
            format!("{path}.action"),
            format!("{a:?} is not a valid v1 action (valid: allow, deny, log, pass, next-tier)"),
        )),
    }
}

fn convert_icmp(path: &str, i: Option<V1Icmp>) -> Result<Option<IcmpFields>, ConvertError> {
    let Some(i) = i else { return Ok(None) };
    let conv = |v: Option<i64>, max: i64, what: &str| -> Result<Option<u8>, ConvertError> {
        match v {
            None => Ok(None),
            Some(n) if (0..=max).contains(&n) => Ok(Some(n as u8)),
            Some(n) => Err(ConvertError::new(
                format!("{path}.{what}"),
                format!("ICMP {what} {n} is out of range (valid: 0-{max})"),
            )),
        }
    };
    let f = IcmpFields {
        type_: conv(i.type_, 254, "type")?,
        code: conv(i.code, 255, "code")?,
    };
    Ok((f.type_.is_some() || f.code.is_some()).then_some(f))
}

fn convert_entity(e: V1Entity) -> EntityRule {
    let masked = |n: V1Net| n.0.trunc();
    let mut nets: Vec<IpNet> = e.net.into_iter().map(masked).collect();
    nets.extend(e.nets.into_iter().map(masked));
    let mut not_nets: Vec<IpNet> = e.not_net.into_iter().map(masked).collect();
    not_nets.extend(e.not_nets.into_iter().map(masked));
    EntityRule {
        nets,
        selector: merge_tag(convert_v1_selector(&e.selector), &e.tag),
        ports: e.ports,
        not_nets,
        not_selector: merge_tag(convert_v1_selector(&e.not_selector), &e.not_tag),
        not_ports: e.not_ports,
        ..EntityRule::default()
    }
}

fn convert_rules(path: &str, rules: Vec<V1Rule>) -> Result<Vec<Rule>, ConvertError> {
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let p = format!("{path}[{i}]");
            Ok(Rule {
                action: convert_action(&p, &r.action)?,
                ip_version: r.ip_version,
                protocol: r.protocol.map(|p| p.0),
                icmp: convert_icmp(&format!("{p}.icmp"), r.icmp)?,
                not_protocol: r.not_protocol.map(|p| p.0),
                not_icmp: convert_icmp(&format!("{p}.notICMP"), r.not_icmp)?,
                source: convert_entity(r.source),
                destination: convert_entity(r.destination),
                http: None,
                metadata: None,
            })
        })
        .collect()
}

fn notice(kind: V1Kind, from: &str, to: &Resource) -> String {
    format!(
        "converted legacy v1 {} '{from}' to {} '{}'",
        kind.name(),
        to.kind(),
        match to.namespace() {
            Some(ns) => format!("{ns}/{}", to.name()),
            None => to.name().to_string(),
        }
    )
}

fn convert_policy(p: V1Policy) -> Result<Conversion, ConvertError> {
    let v1_name = p.metadata.name;
    let ingress = convert_rules("spec.ingress", p.spec.ingress)?;
    let egress = convert_rules("spec.egress", p.spec.egress)?;
    let types = if p.spec.types.is_empty() {
        infer_types(&ingress, &egress)
    } else {
        p.spec
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.to_ascii_lowercase().as_str() {
                "ingress" => Ok(PolicyType::Ingress),
                "egress" => Ok(PolicyType::Egress),
                _ => Err(ConvertError::new(
                    format!("spec.types[{i}]"),
                    format!("{t:?} is not a valid policy type (valid: ingress, egress)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let gnp = GlobalNetworkPolicy {
        metadata: ObjectMeta {
            name: names::convert_v1_name_no_dots(&v1_name),
            annotations: p.metadata.annotations,
            ..ObjectMeta::default()
        },
        spec: GlobalNetworkPolicySpec {
            order: p.spec.order,
            ingress,
            egress,
            selector: convert_v1_selector(&p.spec.selector),
            types,
            do_not_track: p.spec.do_not_track,
            pre_dnat: p.spec.pre_dnat,
            apply_on_forward: p.spec.apply_on_forward || p.spec.do_not_track || p.spec.pre_dnat,
            ..GlobalNetworkPolicySpec::default()
        },
    };
    let r = Resource::GlobalNetworkPolicy(gnp);
    Ok(Conversion {
        notices: vec![notice(V1Kind::Policy, &v1_name, &r)],
        resources: vec![r],
    })
}

fn convert_profile(p: V1Profile) -> Result<Conversion, ConvertError> {
    let v1_name = p.metadata.name;
    let mut labels_to_apply = p.metadata.labels;
    for (i, t) in p.metadata.tags.iter().enumerate() {
        if let Some(v) = labels_to_apply.get(t) {
            return Err(ConvertError::new(
                format!("metadata.tags[{i}]"),
                format!(
                    "tag {t:?} and label '{t} == {v}' have the same key; change the label key before converting"
                ),
            ));
        }
        labels_to_apply.insert(t.clone(), String::new());
    }
    let profile = Profile {
        metadata: ObjectMeta::named(convert_v1_profile_name(&v1_name)),
        spec: ProfileSpec {
            ingress: convert_rules("spec.ingress", p.spec.ingress)?,
            egress: convert_rules("spec.egress", p.spec.egress)?,
            labels_to_apply,
        },
    };
    let r = Resource::Profile(profile);
    Ok(Conversion {
        notices: vec![notice(V1Kind::Profile, &v1_name, &r)],
        resources: vec![r],
    })
}

fn convert_ports(ports: Vec<V1EndpointPort>) -> Vec<EndpointPort> {
    ports
        .into_iter()
        .map(|p| EndpointPort {
            name: p.name,
            protocol: p.protocol.0,
            port: p.port,
        })
        .collect()
}

/// IPv4 entries first, then IPv6 (the v1 backend kept them in separate lists).
fn v4_first<T: Clone>(items: &[T], is_v4: impl Fn(&T) -> bool) -> Vec<T> {
    let mut out: Vec<T> = items.iter().filter(|x| is_v4(x)).cloned().collect();
    out.extend(items.iter().filter(|x| !is_v4(x)).cloned());
    out
}

fn convert_host_endpoint(h: V1HostEndpoint) -> Result<Conversion, ConvertError> {
    if h.metadata.node.is_empty() {
        return Err(ConvertError::new(
            "metadata.node",
            "a v1 hostEndpoint needs metadata.node",
        ));
    }
    if h.metadata.name.is_empty() {
        return Err(ConvertError::new(
            "metadata.name",
            "a v1 hostEndpoint needs metadata.name",
        ));
    }
    let node = names::normalize_v1_name(&h.metadata.node);
    let hep = HostEndpoint {
        metadata: ObjectMeta {
            name: names::convert_v1_name(&format!("{node}.{}", h.metadata.name)),
            labels: h.metadata.labels,
            ..ObjectMeta::default()
        },
        spec: HostEndpointSpec {
            node,
            interface_name: h.spec.interface_name,
            expected_ips: v4_first(&h.spec.expected_ips, IpAddr::is_ipv4),
            profiles: h
                .spec
                .profiles
                .iter()
                .map(|p| convert_v1_profile_name(p))
                .collect(),
            ports: convert_ports(h.spec.ports),
        },
    };
    let r = Resource::HostEndpoint(hep);
    let from = format!("{}/{}", h.metadata.node, h.metadata.name);
    Ok(Conversion {
        notices: vec![notice(V1Kind::HostEndpoint, &from, &r)],
        resources: vec![r],
    })
}

fn convert_workload_endpoint(w: V1WorkloadEndpoint) -> Result<Conversion, ConvertError> {
    let m = w.metadata;
    let mut labels: Labels = m.labels.clone();
    if let Some(ns) = labels.remove("calico/k8s_ns") {
        labels.insert("projectcalico.org/namespace".to_string(), ns);
    }
    let mut namespace = "default".to_string();
    let mut spec = WorkloadEndpointSpec::default();
    match m.orchestrator.as_str() {
        "k8s" => {
            let Some((ns, pod)) = m.workload.split_once('.') else {
                return Err(ConvertError::new(
                    "metadata.workload",
                    format!(
                        "malformed k8s workload ID {:?}: workload was not added through the Calico CNI plugin and cannot be converted (valid: <namespace>.<pod>)",
                        m.workload
                    ),
                ));
            };
            namespace = ns.to_string();
            spec.pod = pod.to_string();
            spec.container_id = m.active_instance_id.clone();
        }
        "cni" => spec.container_id = m.workload.clone(),
        "libnetwork" => spec.workload = "libnetwork".to_string(),
        _ => spec.workload = names::convert_v1_name(&m.workload),
    }
    spec.orchestrator = names::convert_v1_name(&m.orchestrator);
    spec.node = names::normalize_v1_name(&m.node);
    spec.endpoint = names::convert_v1_name(&m.name);
    spec.ip_networks = v4_first(&w.spec.ip_networks, |n| matches!(n, IpNet::V4(_)));
    spec.ip_nats = w
        .spec
        .ip_nats
        .into_iter()
        .map(|n| IpNat {
            internal_ip: n.internal_ip,
            external_ip: n.external_ip,
        })
        .collect();
    spec.ipv4_gateway = w.spec.ipv4_gateway;
    spec.ipv6_gateway = w.spec.ipv6_gateway;
    spec.profiles = w
        .spec
        .profiles
        .iter()
        .map(|p| convert_v1_profile_name(p))
        .collect();
    spec.interface_name = w.spec.interface_name;
    spec.mac = w.spec.mac;
    spec.ports = w
        .spec
        .ports
        .into_iter()
        .map(|p| WorkloadEndpointPort {
            name: p.name,
            protocol: p.protocol.0,
            port: p.port,
            host_port: 0,
            host_ip: String::new(),
        })
        .collect();
    spec.allow_spoofed_source_prefixes = w.spec.allow_spoofed_source_prefixes;
    let id = match spec.orchestrator.as_str() {
        "k8s" => spec.pod.clone(),
        "cni" => spec.container_id.clone(),
        _ => spec.workload.clone(),
    };
    let name = names::workload_endpoint_name(&spec.node, &spec.orchestrator, &id, &spec.endpoint)
        .map_err(|e| ConvertError::new("metadata", e))?;
    let wep = WorkloadEndpoint {
        metadata: ObjectMeta {
            name,
            namespace: Some(namespace),
            labels,
            ..ObjectMeta::default()
        },
        spec,
    };
    let r = Resource::WorkloadEndpoint(wep);
    let from = format!("{}/{}/{}/{}", m.node, m.orchestrator, m.workload, m.name);
    Ok(Conversion {
        notices: vec![notice(V1Kind::WorkloadEndpoint, &from, &r)],
        resources: vec![r],
    })
}

fn convert_ip_pool(p: V1IpPool) -> Result<Conversion, ConvertError> {
    let cidr = p.metadata.cidr.0.trunc();
    let ipip_mode = match &p.spec.ipip {
        None => IpipMode::Never,
        Some(i) => {
            let mode = i.mode.to_ascii_lowercase();
            if !matches!(mode.as_str(), "" | "always" | "cross-subnet") {
                return Err(ConvertError::new(
                    "spec.ipip.mode",
                    format!(
                        "{:?} is not a valid v1 IPIP mode (valid: always, cross-subnet)",
                        i.mode
                    ),
                ));
            }
            if !i.enabled {
                IpipMode::Never
            } else if mode == "cross-subnet" {
                IpipMode::CrossSubnet
            } else {
                IpipMode::Always
            }
        }
    };
    let pool = IpPool {
        metadata: ObjectMeta::named(names::cidr_to_name(&cidr)),
        spec: IpPoolSpec {
            cidr: Some(cidr),
            vxlan_mode: Some(VxlanMode::Never),
            ipip_mode: Some(ipip_mode),
            nat_outgoing: p.spec.nat_outgoing,
            disabled: p.spec.disabled,
            block_size: Some(if matches!(cidr, IpNet::V4(_)) {
                26
            } else {
                122
            }),
            node_selector: "all()".to_string(),
            allowed_uses: vec![AllowedUse::Workload, AllowedUse::Tunnel],
            ..IpPoolSpec::default()
        },
        status: None,
    };
    let r = Resource::IpPool(pool);
    Ok(Conversion {
        notices: vec![notice(V1Kind::IpPool, &p.metadata.cidr.0.to_string(), &r)],
        resources: vec![r],
    })
}

fn convert_bgp_peer(p: V1BgpPeer) -> Result<Conversion, ConvertError> {
    let ip = p.metadata.peer_ip;
    let (name, node) = match p.metadata.scope.as_str() {
        "global" | "" if p.metadata.node.is_empty() => (names::ip_to_name(&ip), String::new()),
        "node" | "" => {
            if p.metadata.node.is_empty() {
                return Err(ConvertError::new(
                    "metadata.node",
                    "a node-scoped bgpPeer needs metadata.node",
                ));
            }
            let n = names::normalize_v1_name(&p.metadata.node);
            (format!("{n}.{}", names::ip_to_name(&ip)), n)
        }
        "global" => {
            return Err(ConvertError::new(
                "metadata.node",
                "a global bgpPeer must not name a node (valid: scope node with a node, or scope global without)",
            ));
        }
        other => {
            return Err(ConvertError::new(
                "metadata.scope",
                format!("{other:?} is not a valid scope (valid: global, node)"),
            ));
        }
    };
    let peer = BgpPeer {
        metadata: ObjectMeta::named(name),
        spec: BgpPeerSpec {
            node,
            peer_ip: ip.to_string(),
            as_number: p.spec.as_number,
            ..BgpPeerSpec::default()
        },
    };
    let r = Resource::BgpPeer(peer);
    Ok(Conversion {
        notices: vec![notice(V1Kind::BgpPeer, &ip.to_string(), &r)],
        resources: vec![r],
    })
}

fn convert_node(n: V1Node) -> Result<Conversion, ConvertError> {
    let bgp = n.spec.bgp.and_then(|b| {
        (b.ipv4_address.is_some() || b.ipv6_address.is_some()).then(|| NodeBgpSpec {
            as_number: b.as_number,
            ipv4_address: b.ipv4_address,
            ipv6_address: b.ipv6_address,
            ..NodeBgpSpec::default()
        })
    });
    let node = Node {
        metadata: ObjectMeta::named(names::normalize_v1_name(&n.metadata.name)),
        spec: NodeSpec {
            bgp,
            orch_refs: n
                .spec
                .orch_refs
                .into_iter()
                .map(|o| OrchRef {
                    node_name: o.node_name,
                    orchestrator: o.orchestrator,
                })
                .collect(),
            ..NodeSpec::default()
        },
        status: None,
    };
    let r = Resource::Node(node);
    Ok(Conversion {
        notices: vec![notice(V1Kind::Node, &n.metadata.name, &r)],
        resources: vec![r],
    })
}

/// Converts one v1 object of the given kind (the JSON value of the whole object).
pub fn convert_v1_value(kind: V1Kind, value: Value) -> Result<Conversion, ConvertError> {
    match kind {
        V1Kind::Policy => convert_policy(tracked(value)?),
        V1Kind::Profile => convert_profile(tracked(value)?),
        V1Kind::HostEndpoint => convert_host_endpoint(tracked(value)?),
        V1Kind::WorkloadEndpoint => convert_workload_endpoint(tracked(value)?),
        V1Kind::IpPool => convert_ip_pool(tracked(value)?),
        V1Kind::BgpPeer => convert_bgp_peer(tracked(value)?),
        V1Kind::Node => convert_node(tracked(value)?),
    }
}

/// Converts one parsed v1 document: a single object, a `kind: List` / `<kind>List` object, or a
/// top-level sequence of objects (calicoctl 1.x output). Errors name the item and field.
pub fn convert_v1_document(doc: Value) -> Result<Conversion, ConvertError> {
    let items: Vec<Value> = match doc {
        Value::Array(items) => items,
        Value::Object(mut m)
            if m.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && m.contains_key("items") =>
        {
            match m.remove("items") {
                Some(Value::Array(items)) => items,
                _ => return Err(ConvertError::new("items", "items must be a list")),
            }
        }
        other => vec![other],
    };
    let mut out = Conversion::default();
    let many = items.len() > 1;
    for (i, item) in items.into_iter().enumerate() {
        let prefix = if many {
            format!("items[{i}]")
        } else {
            String::new()
        };
        let at = |p: &str| {
            if prefix.is_empty() {
                p.to_string()
            } else if p.is_empty() {
                prefix.clone()
            } else {
                format!("{prefix}.{p}")
            }
        };
        let api = item.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind_name = item.get("kind").and_then(Value::as_str).unwrap_or("");
        if api != "v1" {
            return Err(ConvertError::new(
                at("apiVersion"),
                format!("{api:?} is not a legacy v1 object (valid: apiVersion v1)"),
            ));
        }
        let Some(kind) = V1Kind::from_name(kind_name) else {
            return Err(ConvertError::new(
                at("kind"),
                format!(
                    "unknown v1 kind {kind_name:?} (valid: {})",
                    V1Kind::valid_names()
                ),
            ));
        };
        let c =
            convert_v1_value(kind, item).map_err(|e| ConvertError::new(at(&e.path), e.message))?;
        out.resources.extend(c.resources);
        out.notices.extend(c.notices);
    }
    Ok(out)
}
