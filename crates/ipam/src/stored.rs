//! Calico's stored IPAM objects: their datastore keys and their JSON, field for field as
//! libcalico-go's backend model writes them in etcd mode, so that Calico tools and Gingham can
//! read each other's data.
//!
//! Fields this crate does not know are kept (`extra`) and written back unchanged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::addr::Family;

/// The prefix of every IPAM key.
pub const IPAM_PREFIX: &str = "/calico/ipam/v2/";
/// The key of the global IPAM configuration.
pub const CONFIG_KEY: &str = "/calico/ipam/v2/config";
/// The prefix of every handle key.
pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
/// The prefix of every block affinity key (affinities of type `host`).
pub const HOST_PREFIX: &str = "/calico/ipam/v2/host/";
/// The prefix of every block key.
pub const BLOCK_PREFIX: &str = "/calico/ipam/v2/assignment/";

/// How a CIDR appears in a key: the one `/` becomes `-` (`10.244.0.0-26`, `fd00::-122`).
fn cidr_segment(cidr: &IpNet) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix_len())
}

fn parse_cidr_segment(seg: &str) -> Option<IpNet> {
    let (addr, len) = seg.rsplit_once('-')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    IpNet::new(addr, len).ok().map(|n| n.trunc())
}

/// `/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26`.
pub fn block_key(cidr: &IpNet) -> String {
    format!(
        "{BLOCK_PREFIX}{}/block/{}",
        Family::of_net(cidr).segment(),
        cidr_segment(cidr)
    )
}

/// The prefix under which every block of one family lives.
pub fn block_prefix(family: Family) -> String {
    format!("{BLOCK_PREFIX}{}/block/", family.segment())
}

/// The block CIDR named by a block key, if it is one.
pub fn parse_block_key(key: &str) -> Option<IpNet> {
    let rest = key.strip_prefix(BLOCK_PREFIX)?;
    let (fam, rest) = rest.split_once('/')?;
    let seg = rest.strip_prefix("block/")?;
    let cidr = parse_cidr_segment(seg)?;
    (fam == Family::of_net(&cidr).segment()).then_some(cidr)
}

/// `/calico/ipam/v2/host/<node>/ipv4/block/10.244.0.0-26`.
pub fn affinity_key(node: &str, cidr: &IpNet) -> String {
    format!(
        "{HOST_PREFIX}{node}/{}/block/{}",
        Family::of_net(cidr).segment(),
        cidr_segment(cidr)
    )
}

/// The prefix under which a node's affinities of one family live.
pub fn node_affinity_prefix(node: &str, family: Family) -> String {
    format!("{HOST_PREFIX}{node}/{}/block/", family.segment())
}

/// The node and block CIDR named by an affinity key, if it is one.
pub fn parse_affinity_key(key: &str) -> Option<(String, IpNet)> {
    let rest = key.strip_prefix(HOST_PREFIX)?;
    let (node, rest) = rest.split_once('/')?;
    let (fam, rest) = rest.split_once('/')?;
    let seg = rest.strip_prefix("block/")?;
    let cidr = parse_cidr_segment(seg)?;
    (!node.is_empty() && fam == Family::of_net(&cidr).segment()).then(|| (node.to_owned(), cidr))
}

/// `/calico/ipam/v2/handle/<id>`.
pub fn handle_key(handle_id: &str) -> String {
    format!("{HANDLE_PREFIX}{handle_id}")
}

/// Go writes nil slices and maps as `null`; read those as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One allocation block (`model.AllocationBlock`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationBlock {
    pub cidr: IpNet,
    /// `host:<node>`, `virtual:<name>`, or null.
    #[serde(default)]
    pub affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    /// Per ordinal: the index into `attributes`, or null when free.
    #[serde(default, deserialize_with = "null_as_default")]
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, in the order they are handed out (oldest freed first).
    #[serde(default, deserialize_with = "null_as_default")]
    pub unallocated: Vec<usize>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub attributes: Vec<AllocationAttribute>,
    #[serde(rename = "sequenceNumber", default)]
    pub sequence_number: u64,
    #[serde(
        rename = "sequenceNumberForAllocation",
        default,
        deserialize_with = "null_as_default"
    )]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
    /// Deprecated form of `affinity` (a bare host name); read, never written by us.
    #[serde(
        rename = "hostAffinity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_affinity: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The owner of one or more allocations (`model.AllocationAttribute`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// The active owner's attributes (`namespace`, `pod`, `node`, `timestamp`, `type`, ...).
    #[serde(rename = "secondary", default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "alternateOwnerAttrs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub alternate_owner_attrs: Option<BTreeMap<String, String>>,
    /// Set while a released address cools down (see `ipCooldownSeconds`).
    #[serde(
        rename = "releasedAt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub released_at: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The state of a block affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AffinityState {
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "confirmed")]
    Confirmed,
    #[serde(rename = "pendingDeletion")]
    PendingDeletion,
    /// Very old Calico versions wrote affinities with no state; they count as confirmed.
    #[serde(rename = "")]
    Unset,
}

/// A node's claim on a block (`model.BlockAffinity`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockAffinity {
    #[serde(default = "unset_state")]
    pub state: AffinityState,
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn unset_state() -> AffinityState {
    AffinityState::Unset
}

impl BlockAffinity {
    pub fn new(state: AffinityState) -> Self {
        Self {
            state,
            deleted: false,
            extra: Default::default(),
        }
    }

    /// Parses a stored affinity; an empty value (written by old Calico versions) is `{}`.
    pub fn from_bytes(value: &[u8]) -> serde_json::Result<Self> {
        if value.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"{}");
        }
        serde_json::from_slice(value)
    }

    /// Confirmed, or unset (older data).
    pub fn is_confirmed(&self) -> bool {
        matches!(self.state, AffinityState::Confirmed | AffinityState::Unset)
    }
}

/// The blocks a handle has addresses in (`model.IPAMHandle`): block CIDR → count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamHandle {
    #[serde(default, deserialize_with = "null_as_default")]
    pub block: BTreeMap<String, i64>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The global IPAM configuration as stored (`model.IPAMConfig`). Every field is omitted when
/// zero, exactly as Go's `omitempty` does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredConfig {
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_affinity: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_allocate_blocks: bool,
    #[serde(rename = "maxBlocksPerHost", default, skip_serializing_if = "is_zero")]
    pub max_blocks_per_host: i64,
    #[serde(rename = "ipCooldownSeconds", default, skip_serializing_if = "is_zero")]
    pub ip_cooldown_seconds: i64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Encodes a stored object. Serializing these types cannot fail.
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("IPAM objects always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keys_match_calico() {
        let cases = [
            (
                block_key(&net("10.244.0.0/26")),
                "/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26",
            ),
            (
                block_key(&net("fd00:10:244::/122")),
                "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::-122",
            ),
            (
                affinity_key("node-1", &net("10.244.0.64/26")),
                "/calico/ipam/v2/host/node-1/ipv4/block/10.244.0.64-26",
            ),
            (
                affinity_key("n1", &net("fd00::40/122")),
                "/calico/ipam/v2/host/n1/ipv6/block/fd00::40-122",
            ),
            (
                handle_key("k8s-pod-network.abc"),
                "/calico/ipam/v2/handle/k8s-pod-network.abc",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert_eq!(
            parse_block_key("/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::-122"),
            Some(net("fd00:10:244::/122"))
        );
        assert_eq!(
            parse_affinity_key("/calico/ipam/v2/host/node-1/ipv4/block/10.244.0.64-26"),
            Some(("node-1".to_owned(), net("10.244.0.64/26")))
        );
        for bad in [
            "/calico/ipam/v2/assignment/ipv6/block/10.0.0.0-26",
            "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0",
            "/calico/ipam/v2/host//ipv4/block/10.0.0.0-26",
        ] {
            assert_eq!(parse_block_key(bad), None, "{bad}");
            assert_eq!(parse_affinity_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn block_json_reads_calico_output() {
        // A block as Calico writes it (nil attributes as null, omitted optional fields).
        let text = r#"{"cidr":"10.244.0.0/30","affinity":"host:n1","allocations":[0,null,null,null],
            "unallocated":[1,2,3],"attributes":[{"handle_id":"k8s-pod-network.x","secondary":
            {"namespace":"default","node":"n1","pod":"p","timestamp":"2024-01-01 00:00:00 +0000 UTC"}}],
            "sequenceNumber":1700000000000000000,"sequenceNumberForAllocation":{"0":1700000000000000000},
            "deleted":false,"futureField":7}"#;
        let b: AllocationBlock = serde_json::from_str(text).unwrap();
        assert_eq!(b.cidr, net("10.244.0.0/30"));
        assert_eq!(b.allocations, vec![Some(0), None, None, None]);
        assert_eq!(
            b.attributes[0].handle_id.as_deref(),
            Some("k8s-pod-network.x")
        );
        assert_eq!(b.extra["futureField"], 7);
        let back = String::from_utf8(to_json(&b)).unwrap();
        assert!(back.starts_with(
            r#"{"cidr":"10.244.0.0/30","affinity":"host:n1","allocations":[0,null,null,null],"unallocated":[1,2,3],"attributes":[{"handle_id":"k8s-pod-network.x","secondary":{"namespace""#
        ), "{back}");
        assert!(
            back.ends_with(r#""deleted":false,"futureField":7}"#),
            "{back}"
        );

        let nulls = r#"{"cidr":"10.0.0.0/31","affinity":null,"allocations":[null,null],"unallocated":[0,1],"attributes":null,"sequenceNumber":0,"sequenceNumberForAllocation":null,"deleted":false}"#;
        let b: AllocationBlock = serde_json::from_str(nulls).unwrap();
        assert!(b.attributes.is_empty() && b.affinity.is_none());
    }

    #[test]
    fn small_objects_json() {
        let a = BlockAffinity::new(AffinityState::PendingDeletion);
        assert_eq!(
            String::from_utf8(to_json(&a)).unwrap(),
            r#"{"state":"pendingDeletion","deleted":false}"#
        );
        assert!(BlockAffinity::from_bytes(b"").unwrap().is_confirmed());
        let mut h = IpamHandle::default();
        h.block.insert("10.244.0.0/26".into(), 2);
        assert_eq!(
            String::from_utf8(to_json(&h)).unwrap(),
            r#"{"block":{"10.244.0.0/26":2},"deleted":false}"#
        );
        let c = StoredConfig {
            strict_affinity: true,
            auto_allocate_blocks: true,
            max_blocks_per_host: 4,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(to_json(&c)).unwrap(),
            r#"{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":4}"#
        );
    }
}
