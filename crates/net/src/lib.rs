//! Linux network plumbing for Calico-style workloads, over netlink.
//!
//! What it does:
//! - network namespaces: create and delete named ones as `ip netns add/del` does, open them,
//!   and run code inside one, on a dedicated thread or briefly on the calling one ([`netns`]);
//! - a synchronous netlink session bound to one namespace ([`Netlink`]): interfaces, veth pairs
//!   (with the peer created directly in another namespace), bridges, addresses, routes
//!   (blackhole, via a gateway, on-link, by protocol) and neighbour entries;
//! - kernel settings under `/proc/sys` in a chosen namespace ([`sysctl`]);
//! - the plumbing of one workload the way Calico does it, with teardown and a read-back check
//!   that reports what differs ([`workload`]);
//! - host-side interface names computed with Calico's rule ([`host_ifname`]);
//! - the tunnel devices felix makes (`vxlan.calico` with its neighbour and FDB entries per
//!   remote node, `tunl0`) and the routes to other nodes' pods ([`vxlan`], [`routes`]).
//!
//! What it does not do: firewalling (nftables/iptables), IPAM, BGP, or any policy
//! decision. It never touches a namespace it was not given; tests build their own.
//!
//! All calls block. The netlink session drives its socket on a small private current-thread
//! runtime, so it is cheap to start (a CNI plugin starts one per invocation), but it must not be
//! used from inside an async task (use `spawn_blocking`).

pub mod error;
pub mod host;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod routes;
pub mod sysctl;
pub mod types;
pub mod vxlan;
pub mod workload;

pub use error::{NetError, Result};
pub use names::{host_ifname, host_ifname_for_container};
pub use netlink::{Netlink, VethSpec, validate_ifname};
pub use netns::{
    NetnsRef, create_netns, delete_netns, in_netns, in_netns_same_thread, netns_exists,
};
pub use types::{
    Interface, MAIN_TABLE, MacAddr, Neighbour, NeighbourState, ROUTE_PROTOCOL, Route, RouteKind,
    RouteScope,
};
pub use workload::{
    GATEWAY_V4, GATEWAY_V6, Problem, VethPlacement, WorkloadCheck, WorkloadPlumbing,
    WorkloadResult, WorkloadSpec, check_workload, setup_workload, teardown_workload,
};
