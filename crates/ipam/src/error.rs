//! The errors of IPAM operations.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::addr::Family;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every usable pool is full (or borrowing is forbidden).
    #[error("no free {family} address in pools {pools} for node {node}: {reason}")]
    Exhausted {
        family: Family,
        node: String,
        /// The pools tried, e.g. `default-ipv4-ippool (10.244.0.0/16)`.
        pools: String,
        reason: String,
    },

    /// No pool can serve the request at all.
    #[error("no usable {family} IP pool for node {node}: {reason}")]
    NoPool {
        family: Family,
        node: String,
        reason: String,
    },

    /// The node owns as many blocks as it may, all full.
    #[error(
        "node {node} needs a new {family} IPAM block but already owns {owned} and the limit is {max} (maxBlocksPerHost); free addresses or raise the limit with `gingham ipam configure --max-blocks-per-host`"
    )]
    BlockLimit {
        family: Family,
        node: String,
        owned: usize,
        max: usize,
    },

    /// A specific address is already allocated.
    #[error("{ip} is already in use{}", match .handle { Some(h) => format!(" by handle {h}"), None => " (no handle)".to_owned() })]
    InUse { ip: IpAddr, handle: Option<String> },

    /// A specific address was released recently and is cooling down (`ipCooldownSeconds`).
    #[error("{ip} was released recently and is cooling down (ipCooldownSeconds); try again later")]
    CoolingDown { ip: IpAddr },

    /// A specific address lies in no enabled pool.
    #[error("{ip} is not in any enabled IP pool (enabled pools: {pools})")]
    NotInPool { ip: IpAddr, pools: String },

    /// A specific address lies in a pool that does not allow the requested use.
    #[error("{ip} is in IP pool {pool}, whose allowedUses ({allowed}) do not include {wanted}")]
    UseNotAllowed {
        ip: IpAddr,
        pool: String,
        allowed: String,
        wanted: String,
    },

    /// A specific address is covered by an IPReservation.
    #[error("{ip} is reserved by an IPReservation ({cidr}) and cannot be assigned")]
    Reserved { ip: IpAddr, cidr: IpNet },

    /// Strict affinity forbids assigning an address from a block affine to another node.
    #[error(
        "{ip} is in block {block}, which {owner}; strict affinity forbids assigning it to node {node}"
    )]
    AffinityMismatch {
        ip: IpAddr,
        block: IpNet,
        owner: String,
        node: String,
    },

    /// A pool given by the caller is malformed.
    #[error("IP pool {name}: {reason}")]
    InvalidPool { name: String, reason: String },

    /// A malformed request (empty handle, wrong family, ...).
    #[error("invalid IPAM request: {0}")]
    Invalid(String),

    /// A configuration change that Calico would refuse.
    #[error("invalid IPAM configuration: {0}")]
    Config(String),

    /// Stored IPAM data that cannot be read.
    #[error("corrupt IPAM data at {key}: {reason}")]
    Corrupt { key: String, reason: String },

    /// Too many compare-and-swap conflicts in a row.
    #[error(
        "gave up after {attempts} conflicting updates while {what}: too many concurrent IPAM writers; retry"
    )]
    Contention { what: String, attempts: usize },

    /// An operation went round its loop as often as it may without finishing: the stored data
    /// is not what the loop expects. Nothing more is written.
    #[error(
        "gave up after {rounds} rounds without progress while {what}: the stored IPAM data is inconsistent; run `gingham ipam check`"
    )]
    NoProgress { what: String, rounds: usize },

    #[error(transparent)]
    Datastore(#[from] gingham_datastore::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
