//! The controllers' health and metrics, served by `gingham-health` as the agent's are:
//! `/readiness` is 503 until every watched kind has been listed and reconciled once, and while
//! the API server or the datastore cannot be reached (saying which and why).

use gingham_health::Problems;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;

/// Why the controllers are or are not ready.
#[derive(Default)]
pub struct State {
    /// What stands in the way: by watched kind ("pods"…) for the API server, "datastore".
    pub problems: Problems,
    /// Kinds listed and reconciled at least once.
    pub synced: BTreeSet<&'static str>,
    /// Kinds that must be synced before the controllers are ready.
    pub expected: BTreeSet<&'static str>,
}

impl gingham_health::Readiness for State {
    fn is_ready(&self) -> bool {
        self.problems.is_empty() && self.expected.is_subset(&self.synced)
    }

    fn why_not(&self) -> String {
        if !self.problems.is_empty() {
            return self.problems.summary();
        }
        let waiting: Vec<&str> = self.expected.difference(&self.synced).copied().collect();
        format!("waiting for the first sync of {}", waiting.join(", "))
    }
}

/// The controllers' metrics (prefix `gingham_kube_controllers_`).
#[derive(Default, Clone)]
pub struct Metrics {
    pub ready: Gauge,
    /// Full passes of a controller (start, changes, periodic resync).
    pub syncs: Counter,
    /// Calico resources created or replaced.
    pub writes: Counter,
    /// Orphaned Calico resources removed.
    pub deletes: Counter,
    /// Endpoints relabelled after their pods.
    pub endpoint_updates: Counter,
    /// Calico Nodes removed after their Kubernetes Node.
    pub nodes_deleted: Counter,
    /// Leaked addresses released.
    pub addresses_released: Counter,
    /// Allocations waiting out the leak grace period.
    pub leak_candidates: Gauge,
    /// Failed passes (API server or datastore).
    pub errors: Counter,
    /// Relists of a watched kind (start, and after a watch ended, e.g. 410 Gone).
    pub relists: Counter,
}

impl gingham_health::Metrics for Metrics {
    const PREFIX: &'static str = "gingham_kube_controllers";

    fn ready(&self) -> &Gauge {
        &self.ready
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "ready",
            "1 when every kind is synced and nothing is wrong.",
            self.ready.clone(),
        );
        registry.register(
            "leak_candidates",
            "IPAM allocations waiting out the leak grace period.",
            self.leak_candidates.clone(),
        );
        let counters: [(&str, &str, &Counter); 8] = [
            ("syncs", "Full controller passes.", &self.syncs),
            (
                "writes",
                "Calico resources created or replaced.",
                &self.writes,
            ),
            (
                "deletes",
                "Orphaned Calico resources removed.",
                &self.deletes,
            ),
            (
                "endpoint_updates",
                "Workload endpoints relabelled after their pods.",
                &self.endpoint_updates,
            ),
            (
                "nodes_deleted",
                "Calico Nodes removed after their Kubernetes Node.",
                &self.nodes_deleted,
            ),
            (
                "addresses_released",
                "Leaked IPAM addresses released.",
                &self.addresses_released,
            ),
            ("errors", "Failed passes.", &self.errors),
            (
                "relists",
                "Full listings of a watched kind (start, lost or expired watch).",
                &self.relists,
            ),
        ];
        for (name, help, c) in counters {
            registry.register(name, help, c.clone());
        }
    }
}

/// What the controllers share with their health server.
pub type Health = gingham_health::Health<State, Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_health::{Report, StatusCode};

    #[test]
    fn readiness_waits_for_every_kind_and_names_problems() {
        let h = Health::default();
        h.state().expected = ["pods", "nodes"].into_iter().collect();
        let (code, body) = h.readiness();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("pods") && body.contains("nodes"), "{body}");
        h.state().synced = ["pods", "nodes"].into_iter().collect();
        assert_eq!(h.readiness().0, StatusCode::OK);
        h.state().problems.set(
            "pods",
            Some("cannot reach the Kubernetes API server".into()),
        );
        let (code, body) = h.readiness();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("cannot reach"), "{body}");
        let text = h.exposition().expect("encodes");
        assert!(
            text.lines()
                .any(|l| l == "gingham_kube_controllers_ready 0"),
            "{text}"
        );
        assert!(
            text.contains("gingham_kube_controllers_writes_total 0"),
            "{text}"
        );
    }
}
