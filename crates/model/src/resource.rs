//! The `Resource` sum type over every kind, with its envelope (`apiVersion`, `kind`), datastore
//! keys and stored (JSON) form.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::bgp::{BgpConfiguration, BgpPeer};
use crate::bgpfilter::{BgpFilter, BlockAffinity};
use crate::config::ClusterInformation;
use crate::endpoint::{HostEndpoint, WorkloadEndpoint};
use crate::error::ValidationError;
use crate::felix::FelixConfiguration;
use crate::kind::{API_VERSION, Kind};
use crate::meta::ObjectMeta;
use crate::netset::{GlobalNetworkSet, NetworkSet};
use crate::node::Node;
use crate::policy::{
    GlobalNetworkPolicy, NetworkPolicy, Profile, StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy, StagedNetworkPolicy, Tier,
};
use crate::pool::{IpPool, IpReservation};

/// Any Calico v3 resource.
///
/// FelixConfiguration (about 4 KiB, its many settings) is boxed: every resource would otherwise
/// be as large, and the agent's calculator keeps every policy (10,000 policies cost 40 MB of it).
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A namespaced policy.
    NetworkPolicy(NetworkPolicy),
    /// A cluster-wide policy.
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    /// A staged namespaced policy.
    StagedNetworkPolicy(StagedNetworkPolicy),
    /// A staged cluster-wide policy.
    StagedGlobalNetworkPolicy(StagedGlobalNetworkPolicy),
    /// A staged Kubernetes NetworkPolicy (namespaced).
    StagedKubernetesNetworkPolicy(StagedKubernetesNetworkPolicy),
    /// A tier.
    Tier(Tier),
    /// A profile.
    Profile(Profile),
    /// A host endpoint.
    HostEndpoint(HostEndpoint),
    /// A workload endpoint.
    WorkloadEndpoint(WorkloadEndpoint),
    /// A namespaced network set.
    NetworkSet(NetworkSet),
    /// A global network set.
    GlobalNetworkSet(GlobalNetworkSet),
    /// An IP pool.
    IpPool(IpPool),
    /// An IP reservation.
    IpReservation(IpReservation),
    /// A node.
    Node(Node),
    /// Felix configuration.
    FelixConfiguration(Box<FelixConfiguration>),
    /// BGP configuration.
    BgpConfiguration(BgpConfiguration),
    /// A BGP peer.
    BgpPeer(BgpPeer),
    /// Cluster information.
    ClusterInformation(ClusterInformation),
    /// BGP import/export filter.
    BgpFilter(BgpFilter),
    /// A node's affinity for an IPAM block (a read-only view of IPAM).
    BlockAffinity(BlockAffinity),
}

macro_rules! each_variant {
    ($self:expr, $r:ident => $body:expr) => {
        match $self {
            Resource::NetworkPolicy($r) => $body,
            Resource::GlobalNetworkPolicy($r) => $body,
            Resource::StagedNetworkPolicy($r) => $body,
            Resource::StagedGlobalNetworkPolicy($r) => $body,
            Resource::StagedKubernetesNetworkPolicy($r) => $body,
            Resource::Tier($r) => $body,
            Resource::Profile($r) => $body,
            Resource::HostEndpoint($r) => $body,
            Resource::WorkloadEndpoint($r) => $body,
            Resource::NetworkSet($r) => $body,
            Resource::GlobalNetworkSet($r) => $body,
            Resource::IpPool($r) => $body,
            Resource::IpReservation($r) => $body,
            Resource::Node($r) => $body,
            Resource::FelixConfiguration($r) => $body,
            Resource::BgpConfiguration($r) => $body,
            Resource::BgpPeer($r) => $body,
            Resource::ClusterInformation($r) => $body,
            Resource::BgpFilter($r) => $body,
            Resource::BlockAffinity($r) => $body,
        }
    };
}

/// An error turning stored bytes back into a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredError {
    /// The bytes are not JSON.
    #[error("stored {kind} is not valid JSON: {message}")]
    Json {
        /// The expected kind.
        kind: Kind,
        /// The parser's message.
        message: String,
    },
    /// The stored object names another kind.
    #[error("stored object is a {found}, expected a {expected}")]
    WrongKind {
        /// The expected kind.
        expected: Kind,
        /// The kind found in the object.
        found: String,
    },
    /// The JSON does not match the schema.
    #[error("stored {kind} does not match the schema: {error}")]
    Schema {
        /// The expected kind.
        kind: Kind,
        /// Where and what.
        error: ValidationError,
    },
}

/// Removes `null` members from every object, recursively: as in Calico's Go decoding, an
/// explicit `null` means "not set" (`spec:` with nothing after it is an empty spec).
pub(crate) fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            for v in m.values_mut() {
                strip_nulls(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Deserialises `value` into `T`, naming the failing field path on error. `null` members are
/// treated as absent.
pub(crate) fn from_value_tracked<T: DeserializeOwned>(
    mut value: Value,
) -> Result<T, ValidationError> {
    strip_nulls(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ValidationError::new(path, e.into_inner().to_string())
    })
}

impl Resource {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::NetworkPolicy(_) => Kind::NetworkPolicy,
            Resource::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
            Resource::StagedNetworkPolicy(_) => Kind::StagedNetworkPolicy,
            Resource::StagedGlobalNetworkPolicy(_) => Kind::StagedGlobalNetworkPolicy,
            Resource::StagedKubernetesNetworkPolicy(_) => Kind::StagedKubernetesNetworkPolicy,
            Resource::Tier(_) => Kind::Tier,
            Resource::Profile(_) => Kind::Profile,
            Resource::HostEndpoint(_) => Kind::HostEndpoint,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
            Resource::NetworkSet(_) => Kind::NetworkSet,
            Resource::GlobalNetworkSet(_) => Kind::GlobalNetworkSet,
            Resource::IpPool(_) => Kind::IpPool,
            Resource::IpReservation(_) => Kind::IpReservation,
            Resource::Node(_) => Kind::Node,
            Resource::FelixConfiguration(_) => Kind::FelixConfiguration,
            Resource::BgpConfiguration(_) => Kind::BgpConfiguration,
            Resource::BgpPeer(_) => Kind::BgpPeer,
            Resource::ClusterInformation(_) => Kind::ClusterInformation,
            Resource::BgpFilter(_) => Kind::BgpFilter,
            Resource::BlockAffinity(_) => Kind::BlockAffinity,
        }
    }

    /// The metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        each_variant!(self, r => &r.metadata)
    }

    /// The metadata, mutably.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_variant!(self, r => &mut r.metadata)
    }

    /// Short alias of [`Resource::metadata`].
    pub fn meta(&self) -> &ObjectMeta {
        self.metadata()
    }

    /// Short alias of [`Resource::metadata_mut`].
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.metadata_mut()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The namespace, for namespaced kinds.
    pub fn namespace(&self) -> Option<&str> {
        if self.kind().is_namespaced() {
            self.metadata().namespace.as_deref()
        } else {
            None
        }
    }

    /// `Kind name` or `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// The etcd key: `/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`.
    pub fn key(&self) -> String {
        self.kind().key(self.namespace(), self.name())
    }

    /// The full object as JSON: `apiVersion`, `kind`, `metadata`, `spec` (and `status`).
    pub fn to_value(&self) -> Value {
        let inner = each_variant!(self, r => serde_json::to_value(r));
        let mut out = Map::new();
        out.insert("apiVersion".into(), Value::String(API_VERSION.into()));
        out.insert("kind".into(), Value::String(self.kind().name().into()));
        if let Ok(Value::Object(m)) = inner {
            out.extend(m);
        }
        Value::Object(out)
    }

    /// Builds a resource of `kind` from its JSON object (with or without `apiVersion`/`kind`).
    /// Unknown fields and wrong types are reported with their path.
    pub fn from_value(kind: Kind, value: Value) -> Result<Resource, ValidationError> {
        let mut value = value;
        if let Value::Object(m) = &mut value {
            m.shift_remove("apiVersion");
            m.shift_remove("kind");
        }
        fn de<T: DeserializeOwned>(
            v: Value,
            f: fn(T) -> Resource,
        ) -> Result<Resource, ValidationError> {
            from_value_tracked::<T>(v).map(f)
        }
        match kind {
            Kind::NetworkPolicy => de(value, Resource::NetworkPolicy),
            Kind::GlobalNetworkPolicy => de(value, Resource::GlobalNetworkPolicy),
            Kind::StagedNetworkPolicy => de(value, Resource::StagedNetworkPolicy),
            Kind::StagedGlobalNetworkPolicy => de(value, Resource::StagedGlobalNetworkPolicy),
            Kind::StagedKubernetesNetworkPolicy => {
                de(value, Resource::StagedKubernetesNetworkPolicy)
            }
            Kind::Tier => de(value, Resource::Tier),
            Kind::Profile => de(value, Resource::Profile),
            Kind::HostEndpoint => de(value, Resource::HostEndpoint),
            Kind::WorkloadEndpoint => de(value, Resource::WorkloadEndpoint),
            Kind::NetworkSet => de(value, Resource::NetworkSet),
            Kind::GlobalNetworkSet => de(value, Resource::GlobalNetworkSet),
            Kind::IpPool => de(value, Resource::IpPool),
            Kind::IpReservation => de(value, Resource::IpReservation),
            Kind::Node => de(value, Resource::Node),
            Kind::FelixConfiguration => de(value, |f| Resource::FelixConfiguration(Box::new(f))),
            Kind::BgpConfiguration => de(value, Resource::BgpConfiguration),
            Kind::BgpPeer => de(value, Resource::BgpPeer),
            Kind::ClusterInformation => de(value, Resource::ClusterInformation),
            Kind::BgpFilter => de(value, Resource::BgpFilter),
            Kind::BlockAffinity => de(value, Resource::BlockAffinity),
        }
    }

    /// The stored form: compact JSON of [`Resource::to_value`].
    pub fn to_stored(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }

    /// Reads the stored form back. The object's `kind`, if present, must match `kind`.
    pub fn from_stored(kind: Kind, bytes: &[u8]) -> Result<Resource, StoredError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| StoredError::Json {
            kind,
            message: e.to_string(),
        })?;
        if let Some(found) = value.get("kind").and_then(Value::as_str)
            && found != kind.name()
        {
            return Err(StoredError::WrongKind {
                expected: kind,
                found: found.to_string(),
            });
        }
        Resource::from_value(kind, value).map_err(|error| StoredError::Schema { kind, error })
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let kind_name = value
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| serde::de::Error::custom("missing field `kind`"))?;
        let kind = Kind::from_name(kind_name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown kind {kind_name:?} (valid: {})",
                Kind::valid_names()
            ))
        })?;
        Resource::from_value(kind, value).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

macro_rules! from_impls {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(
            impl From<$ty> for Resource {
                fn from(r: $ty) -> Resource {
                    Resource::$variant(r.into())
                }
            }
        )*
    };
}

from_impls!(
    NetworkPolicy(NetworkPolicy),
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    StagedNetworkPolicy(StagedNetworkPolicy),
    StagedGlobalNetworkPolicy(StagedGlobalNetworkPolicy),
    StagedKubernetesNetworkPolicy(StagedKubernetesNetworkPolicy),
    Tier(Tier),
    Profile(Profile),
    HostEndpoint(HostEndpoint),
    WorkloadEndpoint(WorkloadEndpoint),
    NetworkSet(NetworkSet),
    GlobalNetworkSet(GlobalNetworkSet),
    IpPool(IpPool),
    IpReservation(IpReservation),
    Node(Node),
    FelixConfiguration(FelixConfiguration),
    BgpConfiguration(BgpConfiguration),
    BgpPeer(BgpPeer),
    ClusterInformation(ClusterInformation),
    BgpFilter(BgpFilter),
    BlockAffinity(BlockAffinity),
);

/// The JSON value written for several resources: calicoctl's `kind: List` wrapper.
pub fn list_value(resources: &[Resource]) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String("v1".into()));
    out.insert("kind".into(), Value::String("List".into()));
    out.insert(
        "items".into(),
        Value::Array(resources.iter().map(Resource::to_value).collect()),
    );
    Value::Object(out)
}

fn output_value(resources: &[Resource]) -> Value {
    match resources {
        [one] => one.to_value(),
        many => list_value(many),
    }
}

fn yaml_of(value: &Value) -> String {
    // Plain or quoted scalars only: folded block scalars would split long selectors over lines.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(value, options).unwrap_or_default()
}

/// Calico-style YAML: one resource as itself, several (or none) as a `kind: List`.
/// Ends with a newline.
pub fn to_yaml(resources: &[Resource]) -> String {
    yaml_of(&output_value(resources))
}

/// Calico-style YAML, always as a `kind: List` (even for one resource).
pub fn to_yaml_list(resources: &[Resource]) -> String {
    yaml_of(&list_value(resources))
}

/// Calico-style indented JSON: one resource as itself, several (or none) as a `kind: List`.
/// No trailing newline.
pub fn to_json(resources: &[Resource]) -> String {
    serde_json::to_string_pretty(&output_value(resources)).unwrap_or_default()
}

/// Calico-style indented JSON, always as a `kind: List`. No trailing newline.
pub fn to_json_list(resources: &[Resource]) -> String {
    serde_json::to_string_pretty(&list_value(resources)).unwrap_or_default()
}

/// The result of converting a legacy v1 or Kubernetes object: Calico v3 resources (not yet
/// defaulted or validated) and notes about what was done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    /// The converted resources.
    pub resources: Vec<Resource>,
    /// One-line notes, e.g. "converted legacy v1 policy 'a.b' to GlobalNetworkPolicy 'a-b-1234abcd'".
    pub notices: Vec<String>,
}

#[cfg(test)]
mod size {
    /// Every resource is as large as the largest kind, and the agent's calculator keeps each
    /// policy: a large kind is boxed (FelixConfiguration alone is about 4 KiB).
    #[test]
    fn a_resource_stays_small() {
        let size = std::mem::size_of::<super::Resource>();
        assert!(size <= 1024, "Resource is {size} bytes: box the large kind");
    }
}
