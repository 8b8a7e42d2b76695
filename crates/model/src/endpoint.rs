//! Host and workload endpoints.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr;
use crate::meta::ObjectMeta;
use crate::protocol::Protocol;

/// A host interface (or `*` for all of them) under policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEndpoint {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: HostEndpointSpec,
}

/// Specification of a [`HostEndpoint`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostEndpointSpec {
    /// The node the interface is on (required).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Interface name, or `*` for every host interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// The interface's IPs: the only addresses rule selectors match for this endpoint.
    #[serde(
        rename = "expectedIPs",
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "cidr::ips"
    )]
    pub expected_ips: Vec<IpAddr>,
    /// Profiles applied after policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Named ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// A named port on a host endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPort {
    /// Port name.
    pub name: String,
    /// Protocol (TCP, UDP or SCTP).
    pub protocol: Protocol,
    /// Port number.
    pub port: u16,
}

/// A workload (pod, container or VM) interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEndpoint {
    /// Metadata (namespaced).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: WorkloadEndpointSpec,
}

/// Specification of a [`WorkloadEndpoint`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    /// Orchestrator: `k8s`, `cni`, `libnetwork`, `openstack`...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    /// Workload id (orchestrators other than k8s and cni).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    /// The node hosting the workload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Container id (cni).
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// Pod name (k8s).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Endpoint (interface) name inside the workload, e.g. `eth0`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// The pod's service account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// The workload's addresses (/32 or /128 each).
    #[serde(
        rename = "ipNetworks",
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "cidr::nets"
    )]
    pub ip_networks: Vec<IpNet>,
    /// 1:1 NAT mappings.
    #[serde(rename = "ipNATs", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    /// IPv4 gateway.
    #[serde(
        rename = "ipv4Gateway",
        default,
        skip_serializing_if = "Option::is_none",
        with = "cidr::ip_opt"
    )]
    pub ipv4_gateway: Option<IpAddr>,
    /// IPv6 gateway.
    #[serde(
        rename = "ipv6Gateway",
        default,
        skip_serializing_if = "Option::is_none",
        with = "cidr::ip_opt"
    )]
    pub ipv6_gateway: Option<IpAddr>,
    /// Profiles applied after policy, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Host-side interface name (e.g. `cali0ef24ba1234`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// Container-side MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Named and host ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<WorkloadEndpointPort>,
    /// Source prefixes the workload may spoof.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "cidr::nets")]
    pub allow_spoofed_source_prefixes: Vec<IpNet>,
    /// Bandwidth/packet-rate controls, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_controls: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A 1:1 NAT of an endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpNat {
    /// The workload's own address.
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
    /// The external address.
    #[serde(rename = "externalIP")]
    pub external_ip: String,
}

/// A workload port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEndpointPort {
    /// Port name (may be empty when a host port is set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Container port.
    pub port: u16,
    /// Host port, 0 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_port: u16,
    /// Host IP for the host port.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}
