//! The policy engine, pure: a snapshot of resources in, verdicts and explanations out.
//!
//! - [`snapshot`]: resources compiled into matchable form (selectors folded as felix folds them).
//! - [`eval`]: the reference evaluator, `Snapshot::verdict(flow)` with a trace.
//! - [`explain`]: the trace in plain words.
//! - [`reach`]: the reachability matrix between endpoints.
//! - [`lint`]: problems of a policy set (codes, severities, fixes), found with the same semantics.
//! - [`diff`]: the pairs two policy sets disagree on, with the cause of each loss.
//!
//! No I/O: callers load resources (files or a datastore) and print results.

pub mod diff;
pub mod eval;
pub mod explain;
pub mod incremental;
mod index;
pub mod input;
pub mod lint;
pub mod program;
pub mod reach;
pub mod snapshot;

pub use eval::{Flow, FlowError, Outcome, PeerSpec, Stage, StageKind, Step, Verdict};
pub use snapshot::{Direction, Endpoint, EndpointKind, PolicyRef, Snapshot, Warning};
