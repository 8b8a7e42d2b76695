//! Network sets: labelled lists of CIDRs that rule selectors can match.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr;
use crate::meta::ObjectMeta;

/// A namespaced set of networks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSet {
    /// Metadata (namespaced); the labels are what selectors match.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: NetworkSetSpec,
}

/// A cluster-wide set of networks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalNetworkSet {
    /// Metadata; the labels are what selectors match.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: NetworkSetSpec,
}

/// Specification shared by [`NetworkSet`] and [`GlobalNetworkSet`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSetSpec {
    /// The networks (host bits are masked off by defaulting; a bare IP is a /32 or /128).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "cidr::nets")]
    pub nets: Vec<IpNet>,
}
