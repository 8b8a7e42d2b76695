//! Shared by the API double's tests: a server on 127.0.0.1:0 and a kube-rs client for it.
#![allow(dead_code)]

use std::sync::Arc;

use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_kubeapi::{ApiServer, RunningApiServer};

pub struct Env {
    pub server: RunningApiServer,
    pub client: kube::Client,
    pub store: Arc<dyn Datastore>,
}

/// A server over `store` and a client of it.
pub async fn start_on(store: Arc<dyn Datastore>) -> Env {
    let server = ApiServer::start(store.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the API double starts");
    let client = client(&server.url());
    Env {
        server,
        client,
        store,
    }
}

/// A server over a fresh in-memory store.
pub async fn start() -> Env {
    start_on(Arc::new(MemStore::new())).await
}

pub fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("a URL"));
    kube::Client::try_from(config).expect("a kube-rs client")
}

/// The Status of a failed call.
pub fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error (Status), got {other:?}"),
    }
}

/// A namespace made through the API.
pub async fn namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&Default::default(), &ns)
        .await
        .expect("namespace created");
}

/// A pod with one container, labels and optionally a node.
pub fn pod(
    name: &str,
    labels: &[(&str, &str)],
    node: Option<&str>,
) -> k8s_openapi::api::core::v1::Pod {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let Some(n) = node {
        spec["nodeName"] = serde_json::json!(n);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .unwrap()
}
