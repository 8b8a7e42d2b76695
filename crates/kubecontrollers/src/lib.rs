//! calico-kube-controllers for Gingham (etcd mode): Kubernetes objects, watched through
//! `kube` (kube-rs), kept as Calico resources in the datastore.
//!
//! - NetworkPolicy → NetworkPolicy `knp.default.<name>`; Namespace → Profile `kns.<ns>`;
//!   ServiceAccount → Profile `ksa.<ns>.<sa>` (the conversions of `gingham_model::k8s`);
//!   created, replaced and deleted as the Kubernetes objects change, orphans (a resource with
//!   the controller's prefix whose object is gone) removed;
//! - Pod → the labels, service account and profiles of the WorkloadEndpoint the CNI plugin
//!   created (never creates or deletes endpoints);
//! - Node → a Calico Node whose Kubernetes Node (its `k8s` orchRef) is gone is deleted, and
//!   IPAM garbage collection releases its addresses and block affinities, and leaked addresses
//!   of pods that are gone (after a grace period and a second look), as Calico does.
//!
//! Every pass is level-based (`reconcile`, `ipam_gc`: pure, tested on the in-memory
//! datastore): the Kubernetes caches against the datastore, after each (re)list, on changes
//! and periodically, so a restart with changes made while down converges. `run` is the kube-rs
//! plumbing; writes go through `gingham_api::Client` (validated, all-or-nothing).

pub mod health;
pub mod ipam_gc;
pub mod reconcile;
pub mod run;

use std::path::Path;
use std::time::Duration;

pub use health::Health;
pub use run::run;

/// Errors of the controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(#[from] gingham_api::ApiError),
    #[error("IPAM: {0}")]
    Ipam(#[from] gingham_ipam::Error),
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("cannot start the reconciler thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How the controllers run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The period of the full resync of every controller (Calico's `reconcilerPeriod`, 5 min).
    pub resync: Duration,
    /// How long an allocation of a missing pod on a live node waits before release (Calico's
    /// `leakGracePeriod`, 15 min).
    pub leak_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            resync: Duration::from_secs(300),
            leak_grace: ipam_gc::DEFAULT_LEAK_GRACE,
        }
    }
}

impl Config {
    /// How often IPAM is scanned: half the grace period (as Calico), at least every 100 ms and
    /// at most every resync period.
    pub fn gc_interval(&self) -> Duration {
        (self.leak_grace / 2).clamp(
            Duration::from_millis(100),
            self.resync.max(Duration::from_millis(100)),
        )
    }
}

/// A `kube` client from a kubeconfig file (its current context).
pub async fn kube_client(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let err = |message: String| Error::Kubeconfig {
        path: kubeconfig.display().to_string(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}
