//! `gingham ui`: a web view of the datastore's policy. One page (HTML, script and style built
//! into the binary: it needs no network) shows the reachability matrix, each cell's explanation,
//! the lint findings and the denied flows the agents log, fed by JSON endpoints that answer with
//! the CLI's own code and shapes:
//!
//! - `GET /api/matrix?protocol=TCP&port=80&namespace=NS`: `{"matrices":[…], "namespaces",
//!   "endpoints", "warnings"}`, each matrix what `gingham reach -o json` prints (without a port,
//!   one per port the servers declare; with a namespace, only that namespace's endpoints).
//! - `GET /api/explain?from=A&to=B&protocol=TCP&port=80`: `{"allowed", "cause", "text",
//!   "verdict"}`: `text` is `gingham explain`'s text, `verdict` its `-o json`.
//! - `GET /api/lint`: `gingham lint -o json` on the datastore.
//! - `GET /api/flows`: `gingham flows --denied -o json` of the lab's nodes (or a run directory).
//!
//! Every answer reads the datastore afresh: a datastore that is down is an answer (503 with
//! `{"error": …}`) that the page shows, and the next request tries again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use gingham_calc::input::PodPorts;
use gingham_calc::{Snapshot, explain, lint, reach};
use gingham_model::Kind;
use serde_json::{Value, json};

use crate::Exit;
use crate::datastore::DatastoreUrl;
use crate::{flows_cmd, lint_cmd, reach_cmd};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/ui.js");
const STYLE: &str = include_str!("ui/ui.css");

/// The most endpoints one matrix on the page has (a table of up to this many squared cells);
/// beyond it the page asks for a namespace.
pub const MAX_ENDPOINTS: usize = 300;

/// What the namespace filter calls host endpoints (they have no namespace).
pub const HOSTS: &str = "(host endpoints)";

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Where to serve the page: ADDRESS:PORT (port 0: any free port). The URL is printed.
    /// The page has no login: whoever reaches the address reads the policy, so keep it on
    /// loopback (or behind a proxy that authenticates).
    #[arg(long, default_value = "127.0.0.1:9097")]
    pub listen: SocketAddr,
    /// The lab whose nodes' denied flows to show (`lab up --dir`); if no lab is there, this
    /// node's run directory ($CALICO_RUN_DIR or /var/run/calico), as `gingham flows` reads.
    #[arg(long, default_value = crate::lab::DEFAULT_DIR)]
    pub lab: PathBuf,
    /// A node's run directory (the agent's `--run-dir`) to read flows from instead of a lab's.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
}

/// What every request needs.
struct Ui {
    datastore: DatastoreUrl,
    lab: PathBuf,
    run_dir: Option<PathBuf>,
}

/// An answer other than 200: its status and a message for the page (`{"error": …}`).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// The request asks for something that is not valid.
    fn bad(e: anyhow::Error) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!("{e:#}"),
        }
    }

    /// The datastore could not be opened or read.
    fn datastore(e: anyhow::Error) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("cannot read the datastore: {e:#}"),
        }
    }

    /// The cluster in the datastore gives no answer to this question (e.g. no endpoints).
    fn unanswerable(e: anyhow::Error) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("{e:#}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }))
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

type Params = Query<BTreeMap<String, String>>;

/// Runs `f` (which reads the datastore, synchronously) off the server's threads; a panic in it
/// is a 500, not the end of the server.
async fn blocking(f: impl FnOnce() -> Result<Value, ApiError> + Send + 'static) -> Response {
    let result = tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("internal error: {e}"),
        })
    });
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => {
            tracing::warn!(status = %e.status, "{}", e.message);
            e.into_response()
        }
    }
}

/// The engine's snapshot of the datastore's resources of `kinds`.
fn load(ui: &Ui, kinds: &[Kind]) -> Result<Snapshot, ApiError> {
    let store = ui.datastore.open().map_err(ApiError::datastore)?;
    let client = gingham_api::Client::new(store);
    let resources = reach_cmd::load_datastore_kinds(&client, kinds).map_err(ApiError::datastore)?;
    Ok(Snapshot::build(&resources))
}

/// A parameter's value, `None` when absent or empty.
fn param<'a>(q: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn port_param(q: &BTreeMap<String, String>) -> Result<Option<u16>, ApiError> {
    param(q, "port")
        .map(|p| {
            p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                ApiError::bad(anyhow::anyhow!(
                    "port {} is not a port (valid: 1-65535)",
                    gingham_model::quote(p)
                ))
            })
        })
        .transpose()
}

fn warnings(snap: &Snapshot) -> Vec<String> {
    snap.warnings.iter().map(|w| w.0.clone()).collect()
}

fn matrix(ui: &Ui, q: &BTreeMap<String, String>) -> Result<Value, ApiError> {
    let protocol = param(q, "protocol").unwrap_or("TCP");
    let proto = reach_cmd::protocol(protocol).map_err(ApiError::bad)?;
    let port = port_param(q)?;
    reach_cmd::check_port(proto, protocol, port).map_err(ApiError::bad)?;
    let snap = load(ui, reach_cmd::POLICY_KINDS)?;
    let all = reach::matrix_endpoints(&snap);
    let namespace_of: BTreeMap<&str, &str> = snap
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.namespace.as_deref().unwrap_or(HOSTS)))
        .collect();
    let ns = |name: &String| namespace_of.get(name.as_str()).copied().unwrap_or(HOSTS);
    let namespaces: BTreeSet<&str> = all.iter().map(ns).collect();
    let endpoints: Vec<String> = match param(q, "namespace") {
        Some(want) => all.iter().filter(|e| ns(e) == want).cloned().collect(),
        None => all.clone(),
    };
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(ApiError::unanswerable(anyhow::anyhow!(
            "{} endpoints: the page shows at most {MAX_ENDPOINTS} in one matrix; choose a namespace (or use gingham reach)",
            endpoints.len()
        )));
    }
    let matrices = reach_cmd::matrices(&snap, &PodPorts::new(), &endpoints, proto, port)
        .map_err(ApiError::unanswerable)?;
    Ok(json!({
        "matrices": matrices,
        "namespaces": namespaces,
        "endpoints": all.len(),
        "warnings": warnings(&snap),
    }))
}

fn explain(ui: &Ui, q: &BTreeMap<String, String>) -> Result<Value, ApiError> {
    let peer = |name: &str| {
        param(q, name).ok_or_else(|| {
            ApiError::bad(anyhow::anyhow!(
                "{name} is missing: a pod (namespace/pod), host endpoint, node or IP address"
            ))
        })
    };
    let (from, to) = (peer("from")?, peer("to")?);
    let protocol = param(q, "protocol").unwrap_or("TCP");
    let flow =
        reach_cmd::explain_flow(from, to, protocol, port_param(q)?).map_err(ApiError::bad)?;
    let snap = load(ui, reach_cmd::POLICY_KINDS)?;
    let verdict = snap
        .verdict(&flow)
        .map_err(|e| ApiError::bad(anyhow::Error::new(e)))?;
    Ok(json!({
        "allowed": verdict.allowed,
        "cause": explain::cause(&snap, &verdict),
        "text": explain::render(&snap, &verdict),
        "verdict": verdict,
    }))
}

fn lint(ui: &Ui) -> Result<Value, ApiError> {
    let snap = load(ui, &lint_cmd::kinds())?;
    let findings = lint::lint(&snap);
    serde_json::to_value(lint_cmd::Report {
        findings: &findings,
    })
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })
}

fn flows(ui: &Ui) -> Result<Value, ApiError> {
    let args = flows_cmd::FlowsArgs {
        node: None,
        denied: true,
        follow: false,
        since: None,
        output: flows_cmd::FlowsFormat::Json,
        run_dir: ui.run_dir.clone(),
        dir: ui.lab.clone(),
    };
    flows_cmd::json_document(&args).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot read the flow logs: {e:#}"),
    })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/ui.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/api/matrix",
            get(|State(ui): State<Arc<Ui>>, Query(q): Params| async move {
                blocking(move || matrix(&ui, &q)).await
            }),
        )
        .route(
            "/api/explain",
            get(|State(ui): State<Arc<Ui>>, Query(q): Params| async move {
                blocking(move || explain(&ui, &q)).await
            }),
        )
        .route(
            "/api/lint",
            get(|State(ui): State<Arc<Ui>>| async move { blocking(move || lint(&ui)).await }),
        )
        .route(
            "/api/flows",
            get(|State(ui): State<Arc<Ui>>| async move { blocking(move || flows(&ui)).await }),
        )
        .with_state(ui)
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

pub fn run(args: &UiArgs, datastore: Option<&str>) -> Result<Exit> {
    let ui = Arc::new(Ui {
        datastore: DatastoreUrl::resolve(datastore)?,
        lab: args.lab.clone(),
        run_dir: args.run_dir.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the web server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("serving the web view on http://{addr}/");
        axum::serve(listener, router(ui))
            .with_graceful_shutdown(stop_signal())
            .await
            .context("the web server failed")
    })?;
    Ok(Exit::Ok)
}
