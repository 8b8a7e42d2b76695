//! Cluster information (the datastore's identity record).

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

/// Cluster-wide information, normally the single object `default`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInformation {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: ClusterInformationSpec,
}

/// Specification of [`ClusterInformation`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterInformationSpec {
    /// Unique cluster id.
    #[serde(
        rename = "clusterGUID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_guid: String,
    /// Cluster type, e.g. `k8s,bgp`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_type: String,
    /// Version that last wrote the datastore.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub calico_version: String,
    /// Whether the datastore is ready for use (false pauses the agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    /// Product variant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}
