//! The Kubernetes-backed conversions against the Kubernetes API double (`gingham-kubeapi`)
//! over an in-memory datastore, with kube-rs: the patches `k8s_backed` makes are accepted by
//! the API (JSON merge patches of the `status` subresource, as Calico's KDD clients write Nodes
//! and Pods), their preconditions hold, and reading the objects back gives the values written.

use std::sync::Arc;

use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_datastore_kdd::k8s_backed::{
    self, K8sBacked, NODE_IPV4_VXLAN_TUNNEL_ADDR, k8s_backed_kind,
};
use gingham_kubeapi::{ApiServer, RunningApiServer};
use gingham_model::{Kind, Node, Resource};
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn api() -> (RunningApiServer, kube::Client) {
    let store: Arc<dyn Datastore> = Arc::new(MemStore::new());
    let server = ApiServer::start(store, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the API double starts");
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().expect("a URL")))
        .expect("a client");
    (server, client)
}

fn node_of(value: &[u8]) -> Node {
    match Resource::from_stored(Kind::Node, value).expect("a stored Node") {
        Resource::Node(n) => n,
        other => panic!("not a Node: {other:?}"),
    }
}

/// The status code of a kube-rs error from the API.
fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn node_write_and_delete_are_annotation_patches_the_api_takes() {
    let (server, client) = api().await;
    let nodes: Api<KubeNode> = Api::all(client);
    let created: KubeNode = serde_json::from_value(json!({
        "metadata": {
            "name": "node-a",
            "labels": {"kubernetes.io/hostname": "node-a"},
            "annotations": {"projectcalico.org/IPv4Address": "10.0.0.1/24",
                            "node.alpha.kubernetes.io/ttl": "0"}
        },
        "spec": {"podCIDRs": ["10.244.0.0/24"]}
    }))
    .expect("node");
    let k8s = nodes
        .create(&PostParams::default(), &created)
        .await
        .expect("created");
    let (key, value) = k8s_backed::calico_node_from_k8s(&k8s).expect("converts");
    assert_eq!(
        k8s_backed_kind(&key),
        Some(K8sBacked::Node {
            name: "node-a".into()
        })
    );

    // The agent records a VXLAN tunnel address and a label of Calico's own.
    let mut n = node_of(&value);
    n.spec.ipv4_vxlan_tunnel_addr = "10.244.0.1".into();
    n.metadata.labels.insert("rr".into(), "true".into());
    let written = Resource::Node(n).to_stored();
    let patch = k8s_backed::with_preconditions(
        k8s_backed::k8s_node_patch_for(&written, &k8s).expect("patch"),
        k8s.metadata.resource_version.as_deref(),
        None,
    );
    let after = nodes
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the API takes the patch");
    assert_eq!(
        after
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NODE_IPV4_VXLAN_TUNNEL_ADDR))
            .map(String::as_str),
        Some("10.244.0.1")
    );
    assert_eq!(
        after.metadata.labels, k8s.metadata.labels,
        "Kubernetes labels untouched"
    );
    // Read back: exactly what was written.
    let (_, reread) = k8s_backed::calico_node_from_k8s(&after).expect("converts");
    assert_eq!(
        String::from_utf8(reread).expect("utf8"),
        String::from_utf8(written.clone()).expect("utf8")
    );

    // The same patch conditional on the old resourceVersion is refused (409).
    let err = nodes
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("stale");
    assert_eq!(code(err), 409);

    // Delete: Calico's annotations go, the Kubernetes Node and its other annotations stay.
    let del = k8s_backed::k8s_node_delete_patch(&after);
    let gone = nodes
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&del))
        .await
        .expect("the API takes the patch");
    let left: Vec<&String> = gone
        .metadata
        .annotations
        .as_ref()
        .map(|a| a.keys().collect())
        .unwrap_or_default();
    assert_eq!(left, ["node.alpha.kubernetes.io/ttl"]);
    let bare = node_of(&k8s_backed::calico_node_from_k8s(&gone).expect("converts").1);
    assert_eq!(bare.spec.bgp, None);
    assert_eq!(bare.spec.ipv4_vxlan_tunnel_addr, "");
    server.shutdown().await;
}

#[tokio::test]
async fn workload_endpoint_exists_between_the_cni_patches() {
    let (server, client) = api().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "serviceAccountName": "default",
                 "containers": [{"name": "web", "image": "nginx",
                                 "ports": [{"name": "http", "containerPort": 80}]}]}
    }))
    .expect("pod");
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("created");
    assert_eq!(
        k8s_backed::workload_endpoints_from_pod(&created).expect("converts"),
        vec![],
        "no endpoint before the CNI plugin's ADD"
    );

    // The CNI plugin's endpoint: what the pod converts to once it has its addresses.
    let key = Kind::WorkloadEndpoint.key(Some("default"), "node--a-k8s-web--1-eth0");
    let mut with_ip = created.clone();
    with_ip.metadata.annotations = Some(
        [
            (
                "cni.projectcalico.org/podIP".to_owned(),
                "10.244.0.5/32".to_owned(),
            ),
            (
                "cni.projectcalico.org/podIPs".to_owned(),
                "10.244.0.5/32".to_owned(),
            ),
            (
                "cni.projectcalico.org/containerID".to_owned(),
                "abc123".to_owned(),
            ),
        ]
        .into(),
    );
    let (wkey, written) = k8s_backed::workload_endpoints_from_pod(&with_ip)
        .expect("converts")
        .remove(0);
    assert_eq!(wkey, key);

    let (object, patch) =
        k8s_backed::pod_patch_for_workload_endpoint(&key, &written).expect("patch");
    assert_eq!(object.name, "web-1");
    let after = pods
        .patch_status("web-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the API takes the patch");
    let read = k8s_backed::workload_endpoints_from_pod(&after).expect("converts");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, key);
    let mut got: Value = serde_json::from_slice(&read[0].1).expect("json");
    let mut want: Value = serde_json::from_slice(&written).expect("json");
    // The pod's uid and creation time are the API's.
    for v in [&mut got, &mut want] {
        let m = v["metadata"].as_object_mut().expect("metadata");
        m.remove("uid");
        m.remove("creationTimestamp");
    }
    assert_eq!(got, want);
    assert_eq!(
        got["spec"]["ports"],
        json!([{"name": "http", "protocol": "TCP", "port": 80}])
    );

    // DEL: the IP annotations emptied; the endpoint is gone, the container ID stays.
    let (_, del) = k8s_backed::pod_patch_for_workload_endpoint_delete(&key).expect("patch");
    let del = k8s_backed::with_preconditions(
        del,
        after.metadata.resource_version.as_deref(),
        after.metadata.uid.as_deref(),
    );
    let deleted = pods
        .patch_status("web-1", &PatchParams::default(), &Patch::Merge(&del))
        .await
        .expect("the API takes the patch");
    assert_eq!(
        k8s_backed::workload_endpoints_from_pod(&deleted).expect("converts"),
        vec![]
    );
    assert_eq!(
        deleted
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("cni.projectcalico.org/containerID"))
            .map(String::as_str),
        Some("abc123")
    );
    server.shutdown().await;
}
