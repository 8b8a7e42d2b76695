//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while plumbing the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The caller passed a value the kernel would reject; the message says what is valid.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of value (for example "interface name").
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it is invalid and what would be valid.
        reason: String,
    },

    /// A network namespace could not be created, opened, entered or deleted.
    #[error("network namespace {path}: {action} failed: {source}")]
    Netns {
        /// The namespace's file.
        path: PathBuf,
        /// What was attempted (for example "open" or "setns").
        action: &'static str,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// A named network namespace already exists.
    #[error(
        "network namespace {0:?} already exists under /run/netns; pick another name or delete it first"
    )]
    NetnsExists(String),

    /// A kernel setting under /proc/sys could not be read or written.
    #[error("sysctl {key}: {action} failed: {source}")]
    Sysctl {
        /// The key, slash-separated (for example `net/ipv4/ip_forward`).
        key: String,
        /// "read" or "write".
        action: &'static str,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// A netlink request failed.
    #[error("netlink: {op}: {source}")]
    Netlink {
        /// The operation in words (for example "add route 10.0.0.0/24").
        op: String,
        /// The error rtnetlink reported.
        #[source]
        source: rtnetlink::Error,
    },

    /// An interface that the operation needs does not exist.
    #[error("interface {name:?} not found in {netns}")]
    NoSuchInterface {
        /// The interface name.
        name: String,
        /// The namespace that was searched, for the message.
        netns: String,
    },

    /// Setting up the internal runtime or a netlink socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

impl NetError {
    /// The errno of a failed netlink request (for example `libc` `EEXIST` = 17), if it has one.
    pub fn netlink_errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { source, .. } => errno_of(source),
            _ => None,
        }
    }
}

/// The positive errno carried by an rtnetlink error, if any.
pub(crate) fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// Builds a [`NetError::Invalid`].
pub(crate) fn invalid(
    what: &'static str,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> NetError {
    NetError::Invalid {
        what,
        value: value.into(),
        reason: reason.into(),
    }
}
