//! IP pools and IP reservations.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr;
use crate::macros::string_enum;
use crate::meta::{ConditionsStatus, ObjectMeta};

string_enum! {
    /// IP-in-IP encapsulation mode of a pool.
    pub enum IpipMode ("ipipMode") {
        /// No encapsulation.
        Never => "Never",
        /// Always encapsulate traffic to other nodes.
        Always => "Always",
        /// Encapsulate only across subnet boundaries.
        CrossSubnet => "CrossSubnet",
    }
}

string_enum! {
    /// VXLAN encapsulation mode of a pool.
    pub enum VxlanMode ("vxlanMode") {
        /// No encapsulation.
        Never => "Never",
        /// Always encapsulate traffic to other nodes.
        Always => "Always",
        /// Encapsulate only across subnet boundaries.
        CrossSubnet => "CrossSubnet",
    }
}

string_enum! {
    /// What addresses from a pool may be used for.
    pub enum AllowedUse ("allowed use") {
        /// Workload (pod) addresses.
        Workload => "Workload",
        /// Tunnel device addresses.
        Tunnel => "Tunnel",
        /// LoadBalancer service addresses.
        LoadBalancer => "LoadBalancer",
    }
}

string_enum! {
    /// Whether IPAM may pick from a pool automatically.
    pub enum AssignmentMode ("assignment mode") {
        /// Used for automatic assignment.
        Automatic => "Automatic",
        /// Only used when requested explicitly.
        Manual => "Manual",
    }
}

impl IpipMode {
    /// Whether encapsulation is on.
    pub fn enabled(self) -> bool {
        self != IpipMode::Never
    }
}

impl VxlanMode {
    /// Whether encapsulation is on.
    pub fn enabled(self) -> bool {
        self != VxlanMode::Never
    }
}

/// A range of addresses Calico IPAM allocates from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPool {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: IpPoolSpec,
    /// Status written by the IPAM controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ConditionsStatus>,
}

/// Specification of an [`IpPool`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// The pool's network (required, strictly masked).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "cidr::net_opt"
    )]
    pub cidr: Option<IpNet>,
    /// VXLAN mode (defaults to `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<VxlanMode>,
    /// IP-in-IP mode (defaults to `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<IpipMode>,
    /// Masquerade traffic leaving the pool.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    /// No new allocations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Do not export the pool's routes over BGP.
    #[serde(
        rename = "disableBGPExport",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    /// Prefix length of the per-node blocks (defaults to 26 / 122).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// Nodes that may allocate from the pool (defaults to `all()`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    /// Namespaces that may allocate from the pool.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    /// Allowed uses (defaults to `[Workload, Tunnel]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    /// Assignment mode (defaults to `Automatic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

impl IpPoolSpec {
    /// The IP-in-IP mode with its default applied.
    pub fn ipip(&self) -> IpipMode {
        self.ipip_mode.unwrap_or(IpipMode::Never)
    }

    /// The VXLAN mode with its default applied.
    pub fn vxlan(&self) -> VxlanMode {
        self.vxlan_mode.unwrap_or(VxlanMode::Never)
    }
}

/// Addresses IPAM must not hand out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpReservation {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: IpReservationSpec,
}

/// Specification of an [`IpReservation`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpReservationSpec {
    /// Reserved networks (host bits masked off by defaulting).
    #[serde(
        rename = "reservedCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "cidr::nets"
    )]
    pub reserved_cidrs: Vec<IpNet>,
}
