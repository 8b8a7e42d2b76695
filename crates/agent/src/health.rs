//! The agent's health and metrics: `/liveness`, `/readiness` (503 with the reason) and
//! `/metrics` (OpenMetrics text, through `prometheus-client`), served on the node's loopback by
//! `gingham-health` from a thread of its own, so a slow scrape never delays programming.

use gingham_health::Problems;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Error;

/// Why the node is or is not ready.
#[derive(Default)]
pub struct State {
    /// The first table has been installed.
    pub ready: bool,
    /// What stands in the way, by the manager that found it ("policy", "bgp", "tunnels"…):
    /// one manager's trouble is said without hiding another's, and each clears its own.
    pub problems: Problems,
    /// Stored resources that cannot be read (skipped).
    pub unreadable: Vec<String>,
    /// Missing objects that close local endpoints (fail closed), with what they close.
    pub closed: Vec<String>,
}

impl State {
    /// Says (or, with `None`, clears) what stands in the way for `manager`; logs a new or
    /// changed problem once.
    pub fn set_problem(&mut self, manager: &'static str, problem: Option<String>) {
        self.problems.set(manager, problem);
    }
}

impl gingham_health::Readiness for State {
    fn is_ready(&self) -> bool {
        self.ready
            && self.problems.is_empty()
            && self.unreadable.is_empty()
            && self.closed.is_empty()
    }

    fn why_not(&self) -> String {
        if !self.problems.is_empty() {
            return self.problems.summary();
        }
        if !self.unreadable.is_empty() {
            return format!(
                "stored resources that cannot be read are skipped: {}",
                self.unreadable.join(", ")
            );
        }
        if !self.closed.is_empty() {
            return format!(
                "endpoints closed (all their traffic dropped) for want of: {}",
                self.closed.join("; ")
            );
        }
        "starting".into()
    }
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The agent's metrics. Every handle is shared with the registry: updating it is an atomic
/// store, and a scrape reads them as they are.
#[derive(Default, Clone)]
pub struct Metrics {
    pub ready: Gauge,
    pub endpoints: Gauge,
    pub chains: Gauge,
    pub sets: Gauge,
    pub set_members: Gauge,
    pub last_calculation_seconds: F64Gauge,
    pub last_apply_seconds: F64Gauge,
    pub last_apply_bytes: Gauge,
    pub last_apply_commands: Gauge,
    /// The datastore revision the installed table reflects: every change written at or
    /// before it is programmed (or needed nothing). Tests wait on it instead of sleeping.
    pub datastore_revision: Gauge,
    pub programs: Counter,
    pub errors: Counter,
    pub resyncs: Counter,
    pub kernel_reads: Counter,
    pub kernel_repairs: Counter,
    pub plumbing_repairs: Counter,
    /// Flow log packets dropped because the writer (or the socket) could not keep up.
    pub flow_logs_dropped: Counter,
}

impl gingham_health::Metrics for Metrics {
    const PREFIX: &'static str = "gingham_agent";

    fn ready(&self) -> &Gauge {
        &self.ready
    }

    fn register(&self, registry: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 8] = [
            (
                "ready",
                "1 when the node is programmed and nothing is wrong.",
                &self.ready,
            ),
            (
                "local_endpoints",
                "Local endpoints with a program.",
                &self.endpoints,
            ),
            ("nft_chains", "Chains in the installed table.", &self.chains),
            ("nft_sets", "Sets in the installed table.", &self.sets),
            ("nft_set_members", "Members of all sets.", &self.set_members),
            (
                "last_apply_bytes",
                "Size of the last nft transaction.",
                &self.last_apply_bytes,
            ),
            (
                "last_apply_commands",
                "Commands in the last nft transaction (0: nothing had to change).",
                &self.last_apply_commands,
            ),
            (
                "datastore_revision",
                "Datastore revision the installed table reflects.",
                &self.datastore_revision,
            ),
        ];
        for (name, help, g) in gauges {
            registry.register(name, help, g.clone());
        }
        registry.register(
            "last_calculation_seconds",
            "Time of the last policy calculation.",
            self.last_calculation_seconds.clone(),
        );
        registry.register(
            "last_apply_seconds",
            "Time of the last nft transaction.",
            self.last_apply_seconds.clone(),
        );
        // prometheus-client adds `_total` to counters.
        let counters: [(&str, &str, &Counter); 7] = [
            ("programs", "Tables installed.", &self.programs),
            (
                "errors",
                "Errors (datastore, calculation, nft).",
                &self.errors,
            ),
            ("resyncs", "Full listings of the datastore.", &self.resyncs),
            (
                "kernel_reads",
                "Readings of the installed table (start, errors, consistency checks).",
                &self.kernel_reads,
            ),
            (
                "kernel_repairs",
                "Consistency checks that found the kernel changed behind the agent's back.",
                &self.kernel_repairs,
            ),
            (
                "plumbing_repairs",
                "Routes, neighbours, sysctls and blackholes of local workloads put back.",
                &self.plumbing_repairs,
            ),
            (
                "flow_logs_dropped",
                "Flow log packets dropped because the flow log could not keep up.",
                &self.flow_logs_dropped,
            ),
        ];
        for (name, help, c) in counters {
            registry.register(name, help, c.clone());
        }
    }
}

/// What the agent shares with its health server.
pub type Health = gingham_health::Health<State, Metrics>;

/// Serves the agent's endpoints on `127.0.0.1:port` from a thread of its own.
pub fn serve(health: &Health, port: u16) -> Result<(), Error> {
    gingham_health::serve(([127, 0, 0, 1], port).into(), health.clone())
        .map(|_| ())
        .map_err(|e| Error::Health {
            port,
            what: e.what,
            source: e.source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_health::{Report, StatusCode};

    #[test]
    fn exposition_names_every_metric_with_its_value() {
        let h = Health::default();
        h.metrics.endpoints.set(3);
        h.metrics.programs.inc();
        h.metrics.datastore_revision.set(42);
        h.metrics.last_apply_seconds.set(0.25);
        let text = h.exposition().expect("encodes");
        for line in [
            "gingham_agent_local_endpoints 3",
            "gingham_agent_programs_total 1",
            "gingham_agent_datastore_revision 42",
            "gingham_agent_last_apply_seconds 0.25",
            "gingham_agent_ready 0",
            "# TYPE gingham_agent_programs counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn readiness_says_why_not() {
        let h = Health::default();
        assert_eq!(h.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
        h.state().ready = true;
        assert_eq!(h.readiness(), (StatusCode::OK, "ready\n".to_owned()));
        h.state().unreadable = vec!["/calico/x".into()];
        let (code, body) = h.readiness();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("/calico/x"), "{body}");
    }

    #[test]
    fn served_over_http() {
        let h = Health::default();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        serve(&h, port).expect("serves");
        let get = |path: &str| {
            gingham_health::http_get(([127, 0, 0, 1], port).into(), path).expect("answers")
        };
        assert!(get("/liveness").starts_with("HTTP/1.0 200"), "liveness");
        let r = get("/readiness");
        assert!(r.starts_with("HTTP/1.0 503"), "{r}");
        assert!(r.ends_with("not ready: starting\n"), "{r}");
        let m = get("/metrics");
        assert!(m.contains("\ngingham_agent_programs_total 0\n"), "{m}");
        assert!(get("/nothing").starts_with("HTTP/1.0 404"));
    }
}
