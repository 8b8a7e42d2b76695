//! Calico's block IPAM over the datastore contract.
//!
//! Pools are cut into blocks (default /26 and /122). A node claims blocks (a block *affinity*)
//! and hands out their addresses; when its blocks are full it claims another, and when no block
//! is left it borrows single addresses from other nodes' blocks unless strict affinity forbids
//! it. Every address belongs to a *handle* (for pods `k8s-pod-network.<containerID>`), which is
//! what the CNI plugin releases on DEL.
//!
//! The stored data is exactly Calico's etcd layout and JSON (see [`stored`]): blocks under
//! `/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26`, affinities under
//! `/calico/ipam/v2/host/<node>/ipv4/block/10.244.0.0-26`, handles under
//! `/calico/ipam/v2/handle/<id>`, configuration at `/calico/ipam/v2/config`.
//!
//! The invariant above all: no address is ever handed out twice, whatever the number of
//! concurrent callers (threads or processes) and whatever the backend. Every read-modify-write
//! is a compare-and-swap transaction retried on conflict, and an assignment writes the block and
//! its handle in one transaction.
//!
//! This crate does not read IPPool or IPReservation resources, evaluate selectors, or know about
//! pods: the caller passes [`PoolSpec`]s (with the node selector already evaluated) and
//! reservation CIDRs, and says which owners are alive when checking for leaks. It does not
//! program routes either; [`Ipam::blocks_for_node`] tells the agent which blackhole routes to
//! install.

mod addr;
mod assign;
mod block;
mod error;
mod ipam;
mod names;
mod pool;
mod release;
mod report;
mod routes;
pub mod stored;
mod time;

pub use addr::Family;
pub use assign::{AssignIpRequest, AssignRequest, AssignResult, Assigned};
pub use block::{WINDOWS_RESERVED_HANDLE, sanitize_handle};
pub use error::{Error, Result};
pub use ipam::{
    Clock, DEFAULT_MAX_BLOCKS_PER_HOST, DEFAULT_MAX_CONFLICTS, EMPTY_BLOCK_MIN_RECLAIM_AGE, Ipam,
    IpamConfig,
};
pub use names::{check_handle, check_node};
pub use pool::{PoolSpec, Use};
pub use release::ReleaseOutcome;
pub use report::{
    AffinityProblem, AllocationInfo, AllocationStatus, BlockUsage, CheckReport, EndpointClaim,
    EndpointMismatch, HandleMismatch, LeakedAllocation, NodeGone, PoolUsage, SharedAddress, Usage,
    handle_is_for_container,
};
pub use routes::{
    ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TYPE, BlockRoutes, TUNNEL_TYPES, TYPE_IPIP_TUNNEL,
    TYPE_VXLAN_TUNNEL, TYPE_VXLAN_V6_TUNNEL,
};
