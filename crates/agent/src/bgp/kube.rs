//! What confd reads from the Kubernetes API whatever the datastore: the Secrets holding BGP
//! passwords (`confd/pkg/backends/calico/secret_watcher.go`: namespace `NAMESPACE`, default
//! `kube-system`) and the Services and EndpointSlices of every namespace that per-Service
//! routes are made from (`routes.go`, the route generator).
//!
//! [`KubeObjects::list`] reads them once (`gingham bgp render`); [`KubeWatch`] keeps them up
//! to date with watches on a runtime of its own (the agent's BGP manager), counting changes
//! so the manager renders again when one arrives.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use gingham_bgp::Input;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// The variable naming the namespace of BGP password Secrets (confd's).
pub const NAMESPACE_ENV: &str = "NAMESPACE";
/// Where Calico reads BGP password Secrets by default.
pub const DEFAULT_NAMESPACE: &str = "kube-system";

/// Why the Kubernetes API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Config { path: String, message: String },
    /// A request failed.
    #[error("Kubernetes API: listing {what}: {message}")]
    Request { what: &'static str, message: String },
    /// The runtime for the watches could not be made.
    #[error("cannot start the Kubernetes watches: {0}")]
    Runtime(String),
}

/// A client for the cluster the kubeconfig at `path` names (its current context).
pub async fn client(path: &Path) -> Result<Client, KubeError> {
    let err = |e: &dyn std::fmt::Display| KubeError::Config {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(&e))?;
    Client::try_from(cfg).map_err(|e| err(&e))
}

/// The namespace of BGP password Secrets: `NAMESPACE`, else `kube-system`.
pub fn secrets_namespace() -> String {
    std::env::var(NAMESPACE_ENV)
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// Secrets, Services and EndpointSlices as the API server holds them.
#[derive(Debug, Clone, Default)]
pub struct KubeObjects {
    pub secrets: Vec<Arc<Secret>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
}

impl KubeObjects {
    /// Lists them once.
    pub async fn list(client: &Client, namespace: &str) -> Result<Self, KubeError> {
        let lp = Default::default();
        let req = |what| {
            move |e: kube::Error| KubeError::Request {
                what,
                message: e.to_string(),
            }
        };
        let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
            .list(&lp)
            .await
            .map_err(req("secrets"))?;
        let services = Api::<Service>::all(client.clone())
            .list(&lp)
            .await
            .map_err(req("services"))?;
        let slices = Api::<EndpointSlice>::all(client.clone())
            .list(&lp)
            .await
            .map_err(req("endpointslices"))?;
        Ok(KubeObjects {
            secrets: secrets.items.into_iter().map(Arc::new).collect(),
            services: services.items.into_iter().map(Arc::new).collect(),
            endpoint_slices: slices.items.into_iter().map(Arc::new).collect(),
        })
    }

    /// Adds them to the renderer's input; returns warnings for objects the renderer cannot
    /// read (skipped).
    pub fn add_to(&self, input: &mut Input) -> Vec<String> {
        let mut warnings = Vec::new();
        for s in &self.secrets {
            let name = s.metadata.name.clone().unwrap_or_default();
            let entry = input.secrets.entry(name.clone()).or_default();
            // stringData is write-only: the API server folds it into data.
            for (k, v) in s.data.iter().flatten() {
                match String::from_utf8(v.0.clone()) {
                    Ok(text) => {
                        entry.insert(k.clone(), text);
                    }
                    Err(_) => warnings.push(format!(
                        "Secret {name}: data.{k} is not UTF-8 text; not used as a password"
                    )),
                }
            }
        }
        let what = "Kubernetes API";
        for s in &self.services {
            match serde_json::to_value(s.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|v| gingham_bgp::services::service(&v, what))
            {
                Ok(s) => input.services.push(s),
                Err(e) => warnings.push(format!("{e}; skipped")),
            }
        }
        for s in &self.endpoint_slices {
            match serde_json::to_value(s.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|v| gingham_bgp::services::endpoint_slice(&v, what))
            {
                Ok(s) => input.endpoint_slices.push(s),
                // FQDN slices and others the route generator never matches are skipped.
                Err(e) => warnings.push(format!("{e}; skipped")),
            }
        }
        warnings
    }
}

/// Secrets, Services and EndpointSlices kept up to date by watches.
pub struct KubeWatch {
    secrets: Store<Secret>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    changes: Arc<AtomicU64>,
    synced: [Arc<AtomicBool>; 3],
    // Dropped last: ends the watches.
    _runtime: tokio::runtime::Runtime,
}

impl KubeWatch {
    /// Starts watching, with the kubeconfig at `kubeconfig`, the Secrets of `namespace` and
    /// the Services and EndpointSlices of every namespace.
    pub fn start(kubeconfig: &Path, namespace: &str) -> Result<Self, KubeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-watch")
            .enable_all()
            .build()
            .map_err(|e| KubeError::Runtime(e.to_string()))?;
        let client = runtime.block_on(client(kubeconfig))?;
        let changes = Arc::new(AtomicU64::new(0));
        let synced = [(); 3].map(|()| Arc::new(AtomicBool::new(false)));
        let secrets = watch(
            &runtime,
            Api::<Secret>::namespaced(client.clone(), namespace),
            &changes,
            &synced[0],
        );
        let services = watch(
            &runtime,
            Api::<Service>::all(client.clone()),
            &changes,
            &synced[1],
        );
        let endpoint_slices = watch(
            &runtime,
            Api::<EndpointSlice>::all(client),
            &changes,
            &synced[2],
        );
        Ok(KubeWatch {
            secrets,
            services,
            endpoint_slices,
            changes,
            synced,
            _runtime: runtime,
        })
    }
}

/// What the BGP manager reads besides the datastore (the Kubernetes API's objects).
pub trait SideInputs: Send {
    /// Grows with every change seen.
    fn generation(&self) -> u64;
    /// Every kind has been listed once.
    fn synced(&self) -> bool;
    /// Adds the current objects to the input; returns warnings.
    fn add_to(&self, input: &mut Input) -> Vec<String>;
}

impl SideInputs for KubeWatch {
    fn generation(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    fn synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::SeqCst))
    }

    fn add_to(&self, input: &mut Input) -> Vec<String> {
        KubeObjects {
            secrets: self.secrets.state(),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
        }
        .add_to(input)
    }
}

fn watch<K>(
    runtime: &tokio::runtime::Runtime,
    api: Api<K>,
    changes: &Arc<AtomicU64>,
    synced: &Arc<AtomicBool>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changes = changes.clone();
    let synced = synced.clone();
    let kind = K::kind(&());
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    runtime.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    synced.store(true, Ordering::SeqCst);
                    changes.fetch_add(1, Ordering::SeqCst);
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    changes.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => tracing::warn!(kind = %kind, error = %e, "watching the Kubernetes API"),
            }
        }
    });
    reader
}
