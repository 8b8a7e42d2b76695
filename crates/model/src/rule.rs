//! Policy rules: the match criteria and action shared by policies and profiles.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::cidr;
use crate::macros::string_enum;
use crate::meta::Labels;
use crate::port::Port;
use crate::protocol::Protocol;

string_enum! {
    /// What a matching rule does.
    pub enum Action ("action") {
        /// Accept the packet (ends policy processing for this direction).
        Allow => "Allow",
        /// Drop the packet.
        Deny => "Deny",
        /// Log the packet and continue with the next rule.
        Log => "Log",
        /// Skip the rest of this tier.
        Pass => "Pass",
    }
}

string_enum! {
    /// A direction a policy applies to.
    pub enum PolicyType ("policy type") {
        /// Traffic to the selected endpoints.
        Ingress => "Ingress",
        /// Traffic from the selected endpoints.
        Egress => "Egress",
    }
}

/// One rule: all present criteria must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// What to do when the rule matches.
    pub action: Action,
    /// 4 or 6: restrict the rule to one IP family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    /// Protocol match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// ICMP type/code match (protocol ICMP or ICMPv6 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    /// Negative protocol match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    /// Negative ICMP match.
    #[serde(rename = "notICMP", default, skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    /// Source match.
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    /// Destination match.
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    /// HTTP match (application layer policy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    /// Rule annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

impl Rule {
    /// A rule with only an action (matches everything).
    pub fn new(action: Action) -> Rule {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            icmp: None,
            not_protocol: None,
            not_icmp: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
            http: None,
            metadata: None,
        }
    }
}

/// ICMP type and code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpFields {
    /// ICMP type, 0-254.
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_icmp_type"
    )]
    pub type_: Option<u8>,
    /// ICMP code, 0-255 (requires a type).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_icmp_code"
    )]
    pub code: Option<u8>,
}

fn de_ranged<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    max: i64,
) -> Result<Option<u8>, D::Error> {
    let v = Option::<i64>::deserialize(d)?;
    match v {
        None => Ok(None),
        Some(n) if (0..=max).contains(&n) => Ok(Some(n as u8)),
        Some(n) => Err(serde::de::Error::custom(format!(
            "{what} {n} is out of range (valid: 0-{max})"
        ))),
    }
}

fn de_icmp_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    de_ranged(d, "ICMP type", 254)
}

fn de_icmp_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    de_ranged(d, "ICMP code", 255)
}

/// The source or destination half of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntityRule {
    /// Match any of these networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "cidr::nets")]
    pub nets: Vec<IpNet>,
    /// Label selector over Calico endpoints and network sets.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Restricts `selector` to endpoints in namespaces matching this (namespace labels).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    /// Kubernetes service match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
    /// Match any of these ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Match none of these networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "cidr::nets")]
    pub not_nets: Vec<IpNet>,
    /// Negative selector.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_selector: String,
    /// Match none of these ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    /// Service-account match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
}

impl EntityRule {
    /// Whether no criterion is set.
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

/// A Kubernetes service reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMatch {
    /// Service name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Service namespace (required in global policies).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A service-account match: names and/or a selector over service-account labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountMatch {
    /// Service account names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Selector over service-account labels.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

/// An HTTP match (enforced only by an application-layer proxy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// HTTP methods, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPath>,
}

/// One HTTP path match: exactly one of `exact` or `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPath {
    /// Exact path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exact: String,
    /// Path prefix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// Rule metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMetadata {
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
}
