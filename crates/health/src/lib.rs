//! Health and metrics endpoints shared by Gingham's long-running processes (the node agent,
//! kube-controllers): `/liveness`, `/readiness` (503 with the reason) and `/metrics`
//! (OpenMetrics text), served by `axum` from a thread of its own, so a slow scrape never delays
//! the process's work. What "ready" means and which metrics exist is the process's own
//! ([`Report`]); [`Problems`] keeps the reasons, one per part that found one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
pub use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What a process tells its health server.
pub trait Report: Clone + Send + Sync + 'static {
    /// `/readiness`: the status and its body.
    fn readiness(&self) -> (StatusCode, String);
    /// `/metrics` in the OpenMetrics text format.
    fn exposition(&self) -> Result<String, std::fmt::Error>;
}

/// What stands in the way of readiness, by the part that found it ("policy", "bgp",
/// "kubernetes"…): one part's trouble is said without hiding another's, and each clears its own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(BTreeMap<&'static str, String>);

impl Problems {
    /// Says (or, with `None`, clears) what stands in the way for `part`; logs a new or changed
    /// problem once.
    pub fn set(&mut self, part: &'static str, problem: Option<String>) {
        match problem {
            Some(p) => {
                if self.0.get(part) != Some(&p) {
                    tracing::error!(part, problem = %p, "not ready");
                    self.0.insert(part, p);
                }
            }
            None => {
                if self.0.remove(part).is_some() {
                    tracing::info!(part, "problem cleared");
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problem `part` reported, if any.
    pub fn get(&self, part: &str) -> Option<&str> {
        self.0.get(part).map(String::as_str)
    }

    /// Every problem, joined with "; " in the parts' order.
    pub fn summary(&self) -> String {
        self.0.values().cloned().collect::<Vec<_>>().join("; ")
    }
}

/// Why a process is or is not ready (its own state, kept behind [`Health`]'s lock).
pub trait Readiness: Default + Send + 'static {
    fn is_ready(&self) -> bool;
    /// The reason given on `/readiness` when not ready.
    fn why_not(&self) -> String;
}

/// A process's metrics: handles shared with the registry, so updating one is an atomic
/// operation and a scrape reads them without a lock.
pub trait Metrics: Default + Clone + Send + Sync + 'static {
    /// The prefix of every metric's name (`gingham_agent`).
    const PREFIX: &'static str;
    /// Registers every handle.
    fn register(&self, registry: &mut Registry);
    /// Registers the metrics whose names do not start with [`Metrics::PREFIX`] (names shared
    /// with other exporters, such as `gingham_rule_packets_total`). None by default.
    fn register_unprefixed(&self, _registry: &mut Registry) {}
    /// The gauge that says 1 when the process is ready, set at each scrape.
    fn ready(&self) -> &Gauge;
}

/// What a process shares with its health server: its readiness state and its metrics.
pub struct Health<S, M> {
    state: Arc<Mutex<S>>,
    pub metrics: M,
    registry: Arc<Registry>,
    unprefixed: Arc<Registry>,
}

impl<S, M: Clone> Clone for Health<S, M> {
    fn clone(&self) -> Self {
        Health {
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            unprefixed: self.unprefixed.clone(),
        }
    }
}

impl<S: Readiness, M: Metrics> Default for Health<S, M> {
    fn default() -> Self {
        let metrics = M::default();
        let mut registry = Registry::with_prefix(M::PREFIX);
        metrics.register(&mut registry);
        let mut unprefixed = Registry::default();
        metrics.register_unprefixed(&mut unprefixed);
        Health {
            state: Arc::default(),
            metrics,
            registry: Arc::new(registry),
            unprefixed: Arc::new(unprefixed),
        }
    }
}

impl<S, M> Health<S, M> {
    /// The readiness state (a poisoned lock is taken over: the state stays readable).
    pub fn state(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: Readiness, M: Metrics> Report for Health<S, M> {
    fn readiness(&self) -> (StatusCode, String) {
        let s = self.state();
        if s.is_ready() {
            (StatusCode::OK, "ready\n".into())
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", s.why_not()),
            )
        }
    }

    fn exposition(&self) -> Result<String, std::fmt::Error> {
        let ready = self.state().is_ready();
        self.metrics.ready().set(i64::from(ready));
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &self.unprefixed)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The health server could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve health on {addr} ({what}): {source}")]
pub struct ServeError {
    pub addr: SocketAddr,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Serves `/liveness`, `/readiness` and `/metrics` of `report` on `addr` from a thread of its
/// own; returns the address listened on (the port chosen when `addr` has port 0).
pub fn serve<R: Report>(addr: SocketAddr, report: R) -> Result<SocketAddr, ServeError> {
    let err = |what: &'static str| move |source| ServeError { addr, what, source };
    let listener = std::net::TcpListener::bind(addr).map_err(err("cannot listen"))?;
    let bound = listener
        .local_addr()
        .map_err(err("cannot read the listening address"))?;
    listener
        .set_nonblocking(true)
        .map_err(err("cannot set up the listener"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(err("cannot start the runtime"))?;
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "health server cannot listen");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, router(report)).await {
                    tracing::error!(error = %e, "health server stopped");
                }
            })
        })
        .map_err(err("cannot start the thread"))?;
    Ok(bound)
}

fn router<R: Report>(report: R) -> Router {
    let (r, m) = (report.clone(), report);
    Router::new()
        .route("/liveness", get(|| async { "ok\n" }))
        .route("/readiness", get(move || async move { r.readiness() }))
        .route(
            "/metrics",
            get(move || async move {
                match m.exposition() {
                    Ok(body) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "try /liveness, /readiness or /metrics\n",
            )
        })
}

/// A plain HTTP/1.0 GET of `path` on `addr` (for tests and `lab` checks): the whole answer,
/// status line included. Retries the connection for up to a second while the server starts.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut last = None;
    for _ in 0..50 {
        match std::net::TcpStream::connect(addr) {
            Ok(mut s) => {
                write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                return Ok(out);
            }
            Err(e) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no attempt made")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Fixed;
    impl Report for Fixed {
        fn readiness(&self) -> (StatusCode, String) {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: testing\n".into(),
            )
        }
        fn exposition(&self) -> Result<String, std::fmt::Error> {
            Ok("x 1\n# EOF\n".into())
        }
    }

    #[test]
    fn served_over_http() {
        let addr = serve("127.0.0.1:0".parse().expect("addr"), Fixed).expect("serves");
        assert_ne!(addr.port(), 0);
        let get = |p: &str| http_get(addr, p).expect("answers");
        assert!(get("/liveness").starts_with("HTTP/1.0 200"), "liveness");
        let r = get("/readiness");
        assert!(r.starts_with("HTTP/1.0 503"), "{r}");
        assert!(r.ends_with("not ready: testing\n"), "{r}");
        assert!(get("/metrics").ends_with("x 1\n# EOF\n"));
        assert!(get("/nothing").starts_with("HTTP/1.0 404"));
    }

    #[test]
    fn problems_are_kept_per_part() {
        let mut p = Problems::default();
        p.set("b", Some("two".into()));
        p.set("a", Some("one".into()));
        assert_eq!(p.summary(), "one; two");
        p.set("a", None);
        assert_eq!(p.summary(), "two");
        assert_eq!(p.get("b"), Some("two"));
        p.set("b", None);
        assert!(p.is_empty());
    }
}
