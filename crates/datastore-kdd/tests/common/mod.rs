//! Shared by the KDD tests: the Kubernetes API double on 127.0.0.1:0 over an in-memory
//! datastore, with Calico's CRDs (`deploy/crds.yaml`) installed through its API.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_datastore_kdd::KddStore;
use gingham_kubeapi::{ApiServer, RunningApiServer};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The CRDs as shipped (the output of `gingham manifests crds`).
pub const CRDS_YAML: &str = include_str!("../../../../deploy/crds.yaml");

/// An API double with Calico's CRDs, and a kubeconfig for it.
pub struct Cluster {
    rt: tokio::runtime::Runtime,
    /// The double's own datastore (what etcd is to kube-apiserver).
    pub backing: Arc<MemStore>,
    server: Option<RunningApiServer>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backing = Arc::new(MemStore::new());
        let server = rt
            .block_on(ApiServer::start(
                backing.clone() as Arc<dyn Datastore>,
                "127.0.0.1:0".parse().unwrap(),
            ))
            .expect("the API double starts");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let addr = server.addr();
        let c = Self {
            rt,
            backing,
            server: Some(server),
            addr,
            dir,
            kubeconfig,
        };
        c.install_crds();
        c
    }

    fn install_crds(&self) {
        let url = self.server.as_ref().unwrap().url();
        self.rt.block_on(async {
            let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
            let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client);
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(CRDS_YAML).unwrap();
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
                api.create(&Default::default(), &crd)
                    .await
                    .expect("CRD created");
            }
        });
    }

    /// A new client of the store.
    pub fn connect(&self) -> KddStore {
        KddStore::connect(Some(&self.kubeconfig)).expect("KddStore connects")
    }

    /// Stops the API server and starts it again on the same address and data.
    pub fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
        let server = self
            .rt
            .block_on(async {
                // The port may take a moment to be free again.
                for _ in 0..50 {
                    match ApiServer::start(self.backing.clone() as Arc<dyn Datastore>, self.addr)
                        .await
                    {
                        Ok(s) => return Ok(s),
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
                ApiServer::start(self.backing.clone() as Arc<dyn Datastore>, self.addr).await
            })
            .expect("the API double restarts");
        self.server = Some(server);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}
