//! Choosing and opening the datastore from `--datastore`, `GINGHAM_DATASTORE` or Calico's
//! environment (`DATASTORE_TYPE=etcdv3`, `ETCD_ENDPOINTS`, `ETCD_*_FILE`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use gingham_datastore::Datastore;
use gingham_datastore::atomic::Atomic;
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
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
}

impl DatastoreUrl {
    /// Parses `sqlite:PATH`, `etcd`, `etcdv3` or `etcd:http://host:port[,...]`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                bail!(
                    "datastore URL {s:?} has no path (valid: sqlite:/path/to/file.db, etcd, etcd:http://127.0.0.1:2379)"
                );
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
        bail!(
            "unknown datastore {s:?} (valid: sqlite:/path/to/file.db, etcd, etcd:http://127.0.0.1:2379[,...])"
        )
    }

    /// Resolves the datastore from an explicit flag, then `GINGHAM_DATASTORE` (handled by clap),
    /// then Calico's `DATASTORE_TYPE=etcdv3`, then the default SQLite file.
    pub fn resolve(flag: Option<&str>) -> Result<Self> {
        if let Some(f) = flag {
            return Self::parse(f);
        }
        match std::env::var("DATASTORE_TYPE").ok().as_deref() {
            Some("etcdv3") | Some("etcd") => return Ok(Self::Etcd(None)),
            Some("kubernetes") => bail!(
                "DATASTORE_TYPE=kubernetes is not supported yet (valid: etcdv3, or unset for the embedded SQLite store)"
            ),
            _ => {}
        }
        Ok(Self::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)))
    }

    /// Opens the store. Writes of any size through it are all-or-nothing (etcd's are wrapped
    /// in the write-ahead intent layer, [`gingham_datastore::atomic`]).
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
        }
    }
}

impl fmt::Display for DatastoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::Etcd(None) => write!(f, "etcd"),
            Self::Etcd(Some(eps)) => write!(f, "etcd:{}", eps.join(",")),
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
        for bad in ["", "sqlite:", "mysql://x", "etcd:"] {
            let err = DatastoreUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("valid:"), "{bad}: {err}");
        }
    }
}
