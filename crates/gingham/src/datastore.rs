//! Choosing and opening the datastore from `--datastore`, `GINGHAM_DATASTORE` or Calico's
//! environment (`DATASTORE_TYPE=etcdv3`, `ETCD_ENDPOINTS`, `ETCD_*_FILE`;
//! `DATASTORE_TYPE=kubernetes` with `KUBECONFIG`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use gingham_datastore::Datastore;
use gingham_datastore::atomic::Atomic;
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
use gingham_datastore_kdd::KddStore;
use gingham_datastore_sqlite::SqliteStore;

/// Where the embedded datastore lives unless told otherwise.
pub const DEFAULT_SQLITE_PATH: &str = "/var/lib/gingham/gingham.db";

/// A parsed datastore location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatastoreUrl {
    /// `sqlite:PATH`
    Sqlite(PathBuf),
    /// `etcd` (endpoints from `ETCD_ENDPOINTS`) or `etcd:URL[,URL...]`.
    Etcd(Option<Vec<String>>),
    /// `kubernetes` (the API server from `KUBECONFIG`, `~/.kube/config` or the pod's service
    /// account) or `kubernetes:/path/to/kubeconfig`: the Kubernetes datastore (KDD).
    Kubernetes(Option<PathBuf>),
}

/// What `--datastore` takes, for error messages.
const VALID: &str = "sqlite:/path/to/file.db, etcd, etcd:http://127.0.0.1:2379[,...], kubernetes, kubernetes:/path/to/kubeconfig";

impl DatastoreUrl {
    /// Parses `sqlite:PATH`, `etcd`, `etcdv3`, `etcd:http://host:port[,...]`, `kubernetes` or
    /// `kubernetes:/path/to/kubeconfig`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                bail!("datastore URL {s:?} has no path (valid: {VALID})");
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if s == "etcd" || s == "etcdv3" {
            return Ok(Self::Etcd(None));
        }
        if let Some(eps) = s
            .strip_prefix("etcd:")
            .or_else(|| s.strip_prefix("etcdv3:"))
        {
            let eps: Vec<String> = eps
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            if eps.is_empty() {
                bail!(
                    "datastore URL {s:?} names no etcd endpoint (valid: etcd, etcd:http://127.0.0.1:2379)"
                );
            }
            return Ok(Self::Etcd(Some(eps)));
        }
        if s == "kubernetes" {
            return Ok(Self::Kubernetes(None));
        }
        if let Some(path) = s.strip_prefix("kubernetes:") {
            if path.is_empty() {
                bail!("datastore URL {s:?} names no kubeconfig (valid: {VALID})");
            }
            return Ok(Self::Kubernetes(Some(PathBuf::from(path))));
        }
        bail!("unknown datastore {s:?} (valid: {VALID})")
    }

    /// Resolves the datastore from an explicit flag, then `GINGHAM_DATASTORE` (handled by clap),
    /// then Calico's `DATASTORE_TYPE` (`etcdv3`, or `kubernetes` with `KUBECONFIG`), then the
    /// default SQLite file.
    pub fn resolve(flag: Option<&str>) -> Result<Self> {
        if let Some(f) = flag {
            return Self::parse(f);
        }
        match std::env::var("DATASTORE_TYPE").ok().as_deref() {
            Some("etcdv3") | Some("etcd") => return Ok(Self::Etcd(None)),
            Some("kubernetes") => return Ok(Self::Kubernetes(None)),
            _ => {}
        }
        Ok(Self::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)))
    }

    /// Opens the store. Writes of any size through it are all-or-nothing (etcd's are wrapped
    /// in the write-ahead intent layer, [`gingham_datastore::atomic`]), except on the
    /// Kubernetes datastore: its multi-object writes are conditional with compensation, not
    /// crash-atomic (as Calico's), and it has no place for the intent layer's keys.
    pub fn open(&self) -> Result<Arc<dyn Datastore>> {
        match self {
            Self::Sqlite(path) => {
                let store = SqliteStore::open(path).with_context(|| {
                    format!("cannot open the datastore sqlite:{}", path.display())
                })?;
                Ok(Atomic::wrap(Arc::new(store)))
            }
            Self::Etcd(eps) => {
                let mut cfg = EtcdConfig::from_env();
                if let Some(eps) = eps {
                    cfg.endpoints = eps.clone();
                }
                // The errors name the endpoints and say what went wrong.
                let store = EtcdStore::connect(cfg)?;
                Ok(Atomic::wrap(Arc::new(store)))
            }
            Self::Kubernetes(path) => {
                // The errors name the kubeconfig or the API server and say what went wrong.
                let store = KddStore::connect(path.as_deref().map(Path::new))?;
                Ok(Arc::new(store))
            }
        }
    }
}

impl fmt::Display for DatastoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::Etcd(None) => write!(f, "etcd"),
            Self::Etcd(Some(eps)) => write!(f, "etcd:{}", eps.join(",")),
            Self::Kubernetes(None) => write!(f, "kubernetes"),
            Self::Kubernetes(Some(p)) => write!(f, "kubernetes:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            DatastoreUrl::parse("sqlite:/tmp/x.db").unwrap(),
            DatastoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DatastoreUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatastoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DatastoreUrl::parse("etcd").unwrap(),
            DatastoreUrl::Etcd(None)
        );
        assert_eq!(
            DatastoreUrl::parse("etcd:http://127.0.0.1:2379,http://127.0.0.1:2380").unwrap(),
            DatastoreUrl::Etcd(Some(vec![
                "http://127.0.0.1:2379".into(),
                "http://127.0.0.1:2380".into()
            ]))
        );
        assert_eq!(
            DatastoreUrl::parse("kubernetes").unwrap(),
            DatastoreUrl::Kubernetes(None)
        );
        assert_eq!(
            DatastoreUrl::parse("kubernetes:/etc/kube/config").unwrap(),
            DatastoreUrl::Kubernetes(Some("/etc/kube/config".into()))
        );
        assert_eq!(
            DatastoreUrl::Kubernetes(Some("/k".into())).to_string(),
            "kubernetes:/k"
        );
        for bad in ["", "sqlite:", "mysql://x", "etcd:", "kubernetes:"] {
            let err = DatastoreUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("valid:"), "{bad}: {err}");
        }
    }
}
