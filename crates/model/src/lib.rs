//! Calico's `projectcalico.org/v3` resource model for Gingham.
//!
//! What this crate does:
//! - types for every supported kind, with serde using Calico's exact field names, unknown fields
//!   rejected and optional fields omitted on output, so resources round-trip;
//! - defaults and validation as Calico applies them ([`apply_defaults`], [`validate`]);
//! - loading of YAML or JSON text (multi-document, `kind: List`, calicoctl 1.x top-level lists)
//!   containing v3 resources, legacy v1 resources (converted as `calicoctl convert` did) or
//!   Kubernetes NetworkPolicy, Namespace and Pod objects (converted as Calico's controllers do)
//!   ([`load`]); every document is validated before anything is returned;
//! - Calico-style output ([`to_yaml`], [`to_json`]), the etcd key layout ([`Resource::key`],
//!   [`Kind::key_prefix`]) and the stored JSON form.
//!
//! What it does not do: any I/O (callers read files and talk to datastores), checks that need
//! other resources (tier existence, pool overlap, profile existence), or selector evaluation
//! (that is `gingham-selector`).

mod macros;

pub mod bgp;
pub mod bgpfilter;
pub mod cidr;
pub mod config;
pub mod crd;
pub mod defaults;
pub mod endpoint;
pub mod error;
pub mod felix;
pub mod fuzzing;
pub mod k8s;
pub mod kind;
pub mod load;
pub mod meta;
pub mod names;
pub mod netset;
pub mod node;
pub mod policy;
pub mod pool;
pub mod port;
pub mod protocol;
pub mod resource;
pub mod rule;
pub mod v1;
pub mod validate;

pub use bgp::{AsNumber, BgpConfiguration, BgpConfigurationSpec, BgpPeer, BgpPeerSpec};
pub use bgpfilter::{
    BgpFilter, BgpFilterAction, BgpFilterMatchOperator, BgpFilterMatchSource, BgpFilterPeerType,
    BgpFilterRule, BgpFilterSpec, BlockAffinity, BlockAffinitySpec,
};
pub use config::{ClusterInformation, ClusterInformationSpec};
pub use defaults::{apply_defaults, apply_defaults_in};
pub use endpoint::{
    EndpointPort, HostEndpoint, HostEndpointSpec, IpNat, WorkloadEndpoint, WorkloadEndpointPort,
    WorkloadEndpointSpec,
};
pub use error::{ConvertError, LoadError, LoadErrors, ValidationError, quote};
pub use felix::{FelixConfiguration, FelixConfigurationSpec, ProtoPort};
pub use kind::{API_VERSION, Kind};
pub use load::{LoadedDocument, Origin, load, load_in_namespace, load_resources, parse_documents};
pub use meta::{Labels, ObjectMeta};
pub use netset::{GlobalNetworkSet, NetworkSet, NetworkSetSpec};
pub use node::{Node, NodeBgpSpec, NodeSpec};
pub use policy::{
    GlobalNetworkPolicy, GlobalNetworkPolicySpec, NetworkPolicy, NetworkPolicySpec, Profile,
    ProfileSpec, StagedAction, StagedGlobalNetworkPolicy, StagedGlobalNetworkPolicySpec,
    StagedKubernetesNetworkPolicy, StagedKubernetesNetworkPolicySpec, StagedNetworkPolicy,
    StagedNetworkPolicySpec, Tier, TierSpec,
};
pub use pool::{
    AllowedUse, IpPool, IpPoolSpec, IpReservation, IpReservationSpec, IpipMode, VxlanMode,
};
pub use port::Port;
pub use protocol::Protocol;
pub use resource::{
    Conversion, Resource, StoredError, list_value, to_json, to_json_list, to_yaml, to_yaml_list,
};
pub use rule::{Action, EntityRule, HttpMatch, IcmpFields, PolicyType, Rule};
pub use v1::{convert_v1_document, convert_v1_value};
pub use validate::validate;
