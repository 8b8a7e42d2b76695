//! BGPFilter (import and export rules of BGP sessions) and BlockAffinity (a node's claim on an
//! IPAM block, as `projectcalico.org/v3` shows it).

use serde::{Deserialize, Serialize};

use crate::bgp::AsNumber;
use crate::macros::string_enum;
use crate::meta::ObjectMeta;

/// A BGPFilter: ordered rules per direction and address family, named by BGPPeers
/// (`spec.filters`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilter {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: BgpFilterSpec,
}

/// The rules of a [`BgpFilter`], per direction and family.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterSpec {
    /// Rules for IPv4 routes sent to peers.
    #[serde(rename = "exportV4", default, skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BgpFilterRule>,
    /// Rules for IPv4 routes received from peers.
    #[serde(rename = "importV4", default, skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BgpFilterRule>,
    /// Rules for IPv6 routes sent to peers.
    #[serde(rename = "exportV6", default, skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BgpFilterRule>,
    /// Rules for IPv6 routes received from peers.
    #[serde(rename = "importV6", default, skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BgpFilterRule>,
}

impl BgpFilterSpec {
    /// The rules for one direction (`import` or export) and family (`v6` or IPv4).
    pub fn rules(&self, import: bool, v6: bool) -> &[BgpFilterRule] {
        match (import, v6) {
            (true, false) => &self.import_v4,
            (false, false) => &self.export_v4,
            (true, true) => &self.import_v6,
            (false, true) => &self.export_v6,
        }
    }
}

string_enum! {
    /// What a matching rule does with the route.
    pub enum BgpFilterAction ("BGPFilter action") {
        /// Accept the route.
        Accept => "Accept",
        /// Reject the route.
        Reject => "Reject",
    }
}

string_enum! {
    /// How a route's prefix is compared with a rule's `cidr`.
    pub enum BgpFilterMatchOperator ("BGPFilter matchOperator") {
        /// The same prefix.
        Equal => "Equal",
        /// Not the same prefix.
        NotEqual => "NotEqual",
        /// Inside the CIDR.
        In => "In",
        /// Not inside the CIDR.
        NotIn => "NotIn",
    }
}

string_enum! {
    /// Where the routes a rule matches come from.
    pub enum BgpFilterMatchSource ("BGPFilter source") {
        /// Routes learned from BGP peers.
        RemotePeers => "RemotePeers",
    }
}

string_enum! {
    /// The kind of session a rule applies to.
    pub enum BgpFilterPeerType ("BGPFilter peerType") {
        /// Sessions with another AS.
        Ebgp => "eBGP",
        /// Sessions within the AS.
        Ibgp => "iBGP",
    }
}

/// One rule: match conditions, operations and an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BgpFilterRule {
    /// The network routes are compared with (with `matchOperator`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr: String,
    /// Prefix lengths accepted inside `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<BgpFilterPrefixLength>,
    /// `RemotePeers`: only routes learned from BGP peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BgpFilterMatchSource>,
    /// Only routes out of interfaces matching this pattern (`*` is a wildcard).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// How the route's prefix is compared with `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<BgpFilterMatchOperator>,
    /// Only on sessions of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<BgpFilterPeerType>,
    /// Only routes carrying this community.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<BgpFilterCommunityMatch>,
    /// Only routes whose AS path starts with these AS numbers.
    #[serde(
        rename = "asPathPrefix",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub as_path_prefix: Vec<AsNumber>,
    /// Only routes with this priority (kernel metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// `Accept` or `Reject`.
    pub action: BgpFilterAction,
    /// Changes made to matching routes before they are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<BgpFilterOperation>,
}

impl BgpFilterRule {
    /// A rule with only an action.
    pub fn new(action: BgpFilterAction) -> Self {
        BgpFilterRule {
            cidr: String::new(),
            prefix_length: None,
            source: None,
            interface: String::new(),
            match_operator: None,
            peer_type: None,
            communities: None,
            as_path_prefix: Vec::new(),
            priority: None,
            action,
            operations: Vec::new(),
        }
    }
}

/// `prefixLength` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterPrefixLength {
    /// Shortest prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// Longest prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// `communities` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterCommunityMatch {
    /// The community (`aa:nn` or `aa:nn:mm`); exactly one.
    #[serde(default)]
    pub values: Vec<String>,
}

/// One operation of a rule; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BgpFilterOperation {
    /// Add a community.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_community: Option<BgpFilterAddCommunity>,
    /// Prepend AS numbers to the path.
    #[serde(
        rename = "prependASPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prepend_as_path: Option<BgpFilterPrependAsPath>,
    /// Set the priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_priority: Option<BgpFilterSetPriority>,
}

/// `addCommunity: {value}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterAddCommunity {
    /// `aa:nn` or `aa:nn:mm`.
    pub value: String,
}

/// `prependASPath: {prefix}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterPrependAsPath {
    /// AS numbers, first first.
    pub prefix: Vec<AsNumber>,
}

/// `setPriority: {value}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterSetPriority {
    /// The priority (1-2147483646).
    pub value: i64,
}

/// The highest priority a rule matches or sets (Calico's limit).
pub const MAX_BGP_FILTER_PRIORITY: i64 = 2_147_483_646;

/// A node's claim on an IPAM block. Gingham computes these from IPAM's keys
/// (`/calico/ipam/v2/host/<node>/ipv<N>/block/<cidr>`), as libcalico-go's clientv3 does on
/// etcd: they are read, never written, through the resource API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockAffinity {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: BlockAffinitySpec,
}

/// Specification of a [`BlockAffinity`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockAffinitySpec {
    /// `confirmed`, `pending`, `pendingDeletion`, or empty for data written before states
    /// existed (then it counts as confirmed).
    #[serde(default)]
    pub state: String,
    /// The node the block is affine to.
    #[serde(default)]
    pub node: String,
    /// The block.
    #[serde(default)]
    pub cidr: String,
    /// Being removed: treat the block as if it were not there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// The valid values of [`BlockAffinitySpec::state`].
pub const BLOCK_AFFINITY_STATES: [&str; 4] = ["confirmed", "pending", "pendingDeletion", ""];

impl BlockAffinity {
    /// The affinity of `node` for `cidr`, named as Calico names it.
    pub fn new(node: &str, cidr: &ipnet::IpNet, state: &str, deleted: bool) -> Self {
        BlockAffinity {
            metadata: ObjectMeta {
                name: Self::name_for(node, cidr),
                ..Default::default()
            },
            spec: BlockAffinitySpec {
                state: state.to_string(),
                node: node.to_string(),
                cidr: cidr.to_string(),
                deleted,
            },
        }
    }

    /// Calico's name of the affinity of `node` for `cidr`: `<node>-<cidr>` with `.`, `:` and
    /// `/` replaced by `-` (`node-1-10-244-0-0-26`). A name of 253 characters or more keeps
    /// the start of the node name and ends with the first 10 hex digits of the SHA-256 of
    /// `<node>+<cidr name>` and `c`.
    pub fn name_for(node: &str, cidr: &ipnet::IpNet) -> String {
        use sha2::{Digest, Sha256};
        let cidr_name = cidr.to_string().replace(['.', ':', '/'], "-");
        let name = format!("{node}-{cidr_name}");
        if name.len() < 253 {
            return name;
        }
        let mut keep = 252usize
            .saturating_sub(cidr_name.len() + 13)
            .min(node.len());
        while !node.is_char_boundary(keep) {
            keep -= 1;
        }
        let hash = Sha256::digest(format!("{node}+{cidr_name}").as_bytes());
        format!(
            "{}-{cidr_name}-{}c",
            &node[..keep],
            &hex::encode(hash)[..10]
        )
    }

    /// Whether the block counts as the node's (confirmed, or from before states existed) and
    /// is not being deleted.
    pub fn is_confirmed(&self) -> bool {
        !self.spec.deleted && matches!(self.spec.state.as_str(), "confirmed" | "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_names_as_calico() {
        let n: ipnet::IpNet = "10.244.0.64/26".parse().unwrap();
        assert_eq!(
            BlockAffinity::name_for("node-1", &n),
            "node-1-10-244-0-64-26"
        );
        let n6: ipnet::IpNet = "fd00:10:244::/122".parse().unwrap();
        assert_eq!(BlockAffinity::name_for("n", &n6), "n-fd00-10-244---122");
        let long = "a".repeat(250);
        let name = BlockAffinity::name_for(&long, &n);
        assert!(name.len() < 253, "{}", name.len());
        assert!(
            name.ends_with('c') && name.contains("-10-244-0-64-26-"),
            "{name}"
        );
    }
}
