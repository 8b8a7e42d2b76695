//! The agent's health and metrics: `/liveness`, `/readiness` (503 with the reason) and
//! `/metrics` (OpenMetrics text, through `prometheus-client`), served on the node's loopback by
//! `gingham-health` from a thread of its own, so a slow scrape never delays programming.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gingham_dataplane::{Hits, Origins, RuleOrigin, TableReader};
use gingham_health::Problems;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
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
    /// The hit counters of every policy and profile rule, read from the kernel at scrape time.
    pub rules: RuleCounters,
    /// Flow log packets dropped because the writer (or the socket) could not keep up.
    pub flow_logs_dropped: Counter,
}

/// The names of the hit counter metrics (one home: the CLI reads them from here).
pub const RULE_PACKETS: &str = "gingham_rule_packets";
pub const RULE_BYTES: &str = "gingham_rule_bytes";
/// 1 when the agent read its rules' counters at this scrape, 0 when it could not (the rule
/// metrics are then absent, not zero).
pub const RULE_COUNTERS_READ: &str = "gingham_rule_counters_read";

/// The hit counters, read from the kernel at each scrape (no cost between scrapes): the
/// policy manager gives the reader and, after each programming, the renderer's record of which
/// rule each nft rule came from.
#[derive(Clone, Default)]
pub struct RuleCounters(Arc<Mutex<RuleSource>>);

#[derive(Default)]
struct RuleSource {
    reader: Option<TableReader>,
    origins: Arc<Origins>,
}

impl std::fmt::Debug for RuleCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuleCounters")
    }
}

impl RuleCounters {
    fn source(&self) -> std::sync::MutexGuard<'_, RuleSource> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the installed table is read from.
    pub fn set_reader(&self, reader: Option<TableReader>) {
        self.source().reader = reader;
    }

    /// The record of the installed table's shared chains.
    pub fn set_origins(&self, origins: Arc<Origins>) {
        self.source().origins = origins;
    }

    /// The record last given to [`RuleCounters::set_origins`].
    pub fn origins(&self) -> Arc<Origins> {
        self.source().origins.clone()
    }

    /// Every policy and profile rule's hits on this node, read now.
    pub fn read(&self) -> Result<BTreeMap<RuleOrigin, Hits>, String> {
        let mut source = self.source();
        let origins = source.origins.clone();
        let reader = source
            .reader
            .as_mut()
            .ok_or("this agent's dataplane has no kernel table to read")?;
        let json = reader().map_err(|e| e.to_string())?;
        match json {
            Some(json) => gingham_dataplane::rule_hits(&json, &origins).map_err(|e| e.to_string()),
            None => Err("the table is not installed".into()),
        }
    }
}

impl Collector for RuleCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hits = self.read();
        if let Err(e) = &hits {
            tracing::warn!(error = %e, "cannot read the rules' hit counters");
        }
        let read = prometheus_client::metrics::gauge::ConstGauge::new(i64::from(hits.is_ok()));
        read.encode(encoder.encode_descriptor(
            RULE_COUNTERS_READ,
            "1 when the rules' hit counters could be read from the kernel at this scrape.",
            None,
            MetricType::Gauge,
        )?)?;
        let Ok(hits) = hits else {
            return Ok(());
        };
        let labels: Vec<[(&str, String); 5]> = hits
            .keys()
            .map(|o| {
                [
                    ("kind", o.owner.kind().to_owned()),
                    ("tier", o.owner.tier().to_owned()),
                    ("policy", o.owner.name()),
                    ("rule", o.rule.to_string()),
                    ("direction", o.direction.to_string()),
                ]
            })
            .collect();
        for (name, help, value) in [
            (
                RULE_PACKETS,
                "Packets that matched a policy or profile rule on this node.",
                (|h: &Hits| h.packets) as fn(&Hits) -> u64,
            ),
            (
                RULE_BYTES,
                "Bytes of the packets that matched a policy or profile rule on this node.",
                |h: &Hits| h.bytes,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (l, h) in labels.iter().zip(hits.values()) {
                ConstCounter::new(value(h)).encode(family.encode_family(l)?)?;
            }
        }
        Ok(())
    }
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

    fn register_unprefixed(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.rules.clone()));
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
    fn rule_counters_are_read_at_scrape_time_and_labelled_by_policy_rule() {
        use gingham_calc::snapshot::PolicyKind;
        use gingham_dataplane::{ChainOrigin, Owner};
        let h = Health::default();
        // No kernel to read: said so, and no rule series (not zeros).
        let text = h.exposition().expect("encodes");
        assert!(
            text.lines().any(|l| l == "gingham_rule_counters_read 0"),
            "{text}"
        );
        assert!(!text.contains("gingham_rule_packets"), "{text}");
        let owner = Owner::Policy {
            tier: "security".into(),
            policy: gingham_calc::PolicyRef {
                kind: PolicyKind::NetworkPolicy,
                namespace: Some("shop".into()),
                name: "security.web".into(),
            },
        };
        let chain = ChainOrigin {
            direction: gingham_calc::Direction::Ingress,
            rules: [
                ("aaa".to_owned(), (owner.clone(), 0)),
                ("bbb".to_owned(), (owner, 1)),
            ]
            .into(),
        };
        h.metrics
            .rules
            .set_origins(Arc::new([("pxi".to_owned(), chain)].into()));
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = reads.clone();
        h.metrics.rules.set_reader(Some(Box::new(move || {
            let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let rule = |id: &str, p: u64| {
                format!(
                    r#"{{"rule": {{"chain": "pxi", "comment": "{id} note", "expr": [{{"counter": {{"packets": {p}, "bytes": {}}}}}, {{"drop": null}}]}}}}"#,
                    p * 60
                )
            };
            Ok(Some(format!(
                r#"{{"nftables": [{}, {}, {}]}}"#,
                rule("aaa", n),
                rule("aaa", 2),
                rule("bbb", 0)
            )))
        })));
        for n in [1, 2] {
            let text = h.exposition().expect("encodes");
            let labels = |rule: u32| {
                format!(
                    "{{kind=\"networkpolicy\",tier=\"security\",policy=\"shop/security.web\",rule=\"{rule}\",direction=\"ingress\"}}"
                )
            };
            for line in [
                "gingham_rule_counters_read 1".to_owned(),
                "# TYPE gingham_rule_packets counter".to_owned(),
                format!("gingham_rule_packets_total{} {}", labels(0), n + 2),
                format!("gingham_rule_bytes_total{} {}", labels(0), (n + 2) * 60),
                format!("gingham_rule_packets_total{} 0", labels(1)),
            ] {
                assert!(
                    text.lines().any(|l| l == line),
                    "{line:?} missing in\n{text}"
                );
            }
            assert!(text.ends_with("# EOF\n"), "{text}");
        }
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
