//! A test double of the Kubernetes API server, backed by a Gingham datastore as kube-apiserver is
//! by etcd, honest enough that `kubectl` and kube-rs clients work against it unchanged. It is a
//! lab and test tool: plain HTTP on loopback, no authentication.
//!
//! Objects are JSON under [`REGISTRY_PREFIX`]`<group or core>/<plural>/[<namespace>/]<name>`;
//! `metadata.resourceVersion` is the datastore revision of the object's last write, so lists,
//! watches from a resourceVersion and 410 Gone follow the datastore's history and compaction.
//!
//! What it serves (module by module):
//! - `resources`: the built-in kinds (core namespaces, pods, serviceaccounts, nodes, services,
//!   endpoints, secrets, configmaps; endpointslices, networkpolicies, CRDs, daemonsets,
//!   deployments, RBAC, leases) and the kinds of stored CRDs.
//! - `discovery`: `/version`, `/api`, `/apis`, resource lists (legacy discovery, which kubectl
//!   falls back to), `/openapi/v3` (kubectl reads it to learn that the server validates fields,
//!   so plain `kubectl apply` works), an empty `/openapi/v2`, Table and PartialObjectMetadata
//!   views.
//! - `api`: get, list (label and field selectors, limit/continue), create (generateName),
//!   update with resourceVersion preconditions, patch (JSON, merge, strategic, server-side
//!   apply), delete (immediate; a namespace takes its objects, a CRD its resources), status
//!   subresources, `dryRun`.
//! - `typed`: built-in kinds decoded through their k8s-openapi types (wrong types refused,
//!   unknown fields refused with `fieldValidation=Strict` or dropped); `schema`: custom resources
//!   pruned and validated against their CRD's structural schema.
//! - `watch`: ADDED/MODIFIED/DELETED from a datastore watch, BOOKMARKs, initial events,
//!   ERROR 410 Expired when the revision was compacted, selectors, timeoutSeconds.
//!
//! Not done: authentication and authorization, protobuf request bodies (kubectl's typed
//! generators such as `kubectl create namespace` send them; `kubectl apply/create -f` send
//! JSON), graceful deletion and finalizers, field ownership conflicts of server-side apply,
//! defaulting of pod templates, admission webhooks, aggregated discovery.
//!
//! ```no_run
//! # async fn f() -> Result<(), gingham_kubeapi::Error> {
//! let store = std::sync::Arc::new(gingham_datastore::mem::MemStore::new());
//! let server = gingham_kubeapi::ApiServer::start(store, "127.0.0.1:0".parse().unwrap()).await?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! // kubectl --kubeconfig /tmp/kubeconfig get namespaces
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod discovery;
mod patch;
pub mod resources;
mod schema;
mod selector;
mod status;
mod typed;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use gingham_datastore::Datastore;
use tokio::sync::{mpsc, oneshot};

pub use api::{INITIAL_NAMESPACES, LAST_APPLIED, MAX_ANNOTATIONS_SIZE};
pub use resources::{REGISTRY_PREFIX, Resource};
pub use watch::BOOKMARK_INTERVAL;

/// The largest request body accepted, as kube-apiserver's default (`MaxRequestBodyBytes`).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create the initial namespaces in {store}: {message}")]
    Bootstrap { store: String, message: String },
}

/// The API server double.
pub struct ApiServer;

/// A running server; [`RunningApiServer::shutdown`] stops it (dropping it stops it too).
pub struct RunningApiServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopping: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    api: api::Api,
    stopping: Arc<AtomicBool>,
}

impl ApiServer {
    /// Listens on `listen` (port 0: any free port) and serves the API from `store` on the
    /// caller's tokio runtime. Creates the namespaces every cluster has
    /// ([`INITIAL_NAMESPACES`]) if they are missing.
    pub async fn start(
        store: Arc<dyn Datastore>,
        listen: SocketAddr,
    ) -> Result<RunningApiServer, Error> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            api: api::Api::new(store.clone(), addr.to_string()),
            stopping: stopping.clone(),
        });
        {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || shared.api.bootstrap())
                .await
                .map_err(|e| Error::Bootstrap {
                    store: store.describe(),
                    message: e.to_string(),
                })?
                .map_err(|e| Error::Bootstrap {
                    store: store.describe(),
                    message: e.message,
                })?;
        }
        {
            let (store, generation, stopping) = (
                store.clone(),
                shared.api.crd_generation.clone(),
                stopping.clone(),
            );
            std::thread::Builder::new()
                .name("kubeapi-crds".into())
                .spawn(move || watch_crds(store.as_ref(), &generation, &stopping))
                .map_err(|e| Error::Bootstrap {
                    store: "the CRD watch".into(),
                    message: e.to_string(),
                })?;
        }
        let app = axum::Router::new().fallback(serve).with_state(shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "the API server stopped");
            }
        });
        tracing::info!(%addr, "Kubernetes API double listening");
        Ok(RunningApiServer {
            addr,
            stop: Some(stop),
            stopping,
            task: Some(task),
        })
    }
}

impl RunningApiServer {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig text for this server (cluster, user and context `gingham`, namespace
    /// `default`).
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    /// Writes [`RunningApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| Error::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// Stops accepting requests, ends open watches and waits for the server to stop.
    pub async fn shutdown(mut self) {
        self.signal();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn signal(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for RunningApiServer {
    fn drop(&mut self) {
        self.signal();
    }
}

/// Follows the stored CRDs, so that the resource table is read again when another server on the
/// same datastore changes one (this server's own CRD writes invalidate it at once).
fn watch_crds(store: &dyn Datastore, generation: &AtomicU64, stopping: &AtomicBool) {
    let prefix = resources::crd_resource().prefix();
    let pause = std::time::Duration::from_millis(200);
    while !stopping.load(Ordering::Relaxed) {
        let watch = store.revision().and_then(|rev| store.watch(&prefix, rev));
        generation.fetch_add(1, Ordering::SeqCst);
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the CRDs; trying again");
                std::thread::sleep(pause);
                continue;
            }
        };
        while !stopping.load(Ordering::Relaxed) {
            match watch.next(pause) {
                Ok(Some(_)) => {
                    generation.fetch_add(1, Ordering::SeqCst);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the CRD watch ended; watching again");
                    break;
                }
            }
        }
    }
}

/// A kubeconfig for a server at `url` (no credentials: the double does not authenticate).
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: gingham
  cluster:
    server: {url}
contexts:
- name: gingham
  context:
    cluster: gingham
    user: gingham
    namespace: default
current-context: gingham
users:
- name: gingham
  user: {{}}
"
    )
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn json_response(code: u16, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(code, "application/json", body)
}

fn bytes_response(code: u16, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn serve(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(e) => {
            return json_response(
                413,
                &status::ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("Request entity too large: limit is {MAX_BODY} ({e})"),
                )
                .status(),
            );
        }
    };
    let req = api::Request {
        method: parts.method.as_str().to_owned(),
        path: percent_decode(&parts.uri.path().replace('+', "%2B")),
        query: parse_query(parts.uri.query()),
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT),
        body,
    };
    let method = req.method.clone();
    let uri = parts.uri.to_string();
    let handler = shared.clone();
    let reply = tokio::task::spawn_blocking(move || handler.api.handle(&req)).await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => Err(status::ApiError::internal(format!(
            "the request handler failed: {e}"
        ))),
    };
    match reply {
        Ok(api::Reply::Json(code, v)) => {
            tracing::debug!(%method, %uri, code, "request");
            json_response(code, &v)
        }
        Ok(api::Reply::Bytes(code, ct, b)) => {
            tracing::debug!(%method, %uri, code, "request");
            bytes_response(code, ct, b)
        }
        Ok(api::Reply::Watch(plan)) => {
            tracing::debug!(%method, %uri, "watch");
            let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
            let store = shared.api.store.clone();
            let stopping = shared.stopping.clone();
            tokio::task::spawn_blocking(move || watch::run(store, *plan, tx, stopping));
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            tracing::debug!(%method, %uri, code = e.code, message = %e.message, "request failed");
            json_response(e.code, &e.status())
        }
    }
}
