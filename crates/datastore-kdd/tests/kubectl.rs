//! The real `kubectl` against the API double shows what the Kubernetes datastore wrote as the
//! object Calico would have, and what kubectl writes reads back as the Calico resource.

mod common;

use std::process::Command;

use common::Cluster;
use gingham_datastore::Datastore;
use gingham_datastore_kdd::crd::METADATA_ANNOTATION;
use gingham_model::kind::KEY_ROOT;
use serde_json::{Value, json};

fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let bin = gingham_testkit::require_tool("kubectl");
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn sys_kubectl_sees_the_ippool_calico_would_have() {
    gingham_testkit::require_tool("kubectl");
    let cluster = Cluster::start();
    let s = cluster.connect();
    let key = format!("{KEY_ROOT}/ippools/pool-a");
    let value = json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "pool-a", "labels": {"zone": "a"}},
        "spec": {"cidr": "10.5.0.0/16", "blockSize": 26, "ipipMode": "Never",
            "vxlanMode": "Always", "natOutgoing": true, "nodeSelector": "all()"}});
    let rev = s
        .create(&key, &serde_json::to_vec(&value).unwrap())
        .unwrap();

    let yaml = kubectl(
        &cluster,
        &["get", "ippools.crd.projectcalico.org", "-o", "yaml"],
        None,
    );
    let list: Value = serde_saphyr::from_str(&yaml).unwrap();
    let items = list["items"].as_array().expect("a list");
    assert_eq!(items.len(), 1, "{yaml}");
    let obj = &items[0];
    assert_eq!(obj["apiVersion"], "crd.projectcalico.org/v1", "{yaml}");
    assert_eq!(obj["kind"], "IPPool");
    assert_eq!(obj["metadata"]["name"], "pool-a");
    assert_eq!(obj["metadata"]["resourceVersion"], rev.to_string());
    assert_eq!(obj["spec"], value["spec"], "{yaml}");
    // Calico keeps the v3 metadata in its annotation; the labels are not the CRD's own.
    let inner: Value = serde_json::from_str(
        obj["metadata"]["annotations"][METADATA_ANNOTATION]
            .as_str()
            .expect("the metadata annotation"),
    )
    .unwrap();
    assert_eq!(inner, json!({"labels": {"zone": "a"}}));
    assert!(obj["metadata"]["labels"].is_null(), "{yaml}");

    // A pool written with kubectl, as Calico's manifests do, reads as the v3 resource.
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: pool-b\n\
             spec:\n  cidr: 10.6.0.0/16\n  blockSize: 26\n  natOutgoing: true\n",
        ),
    );
    let kv = s
        .get(&format!("{KEY_ROOT}/ippools/pool-b"))
        .unwrap()
        .expect("the pool kubectl applied");
    let v: Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(v["apiVersion"], "projectcalico.org/v3");
    assert_eq!(v["metadata"]["name"], "pool-b");
    assert_eq!(
        v["spec"],
        json!({"cidr": "10.6.0.0/16", "blockSize": 26, "natOutgoing": true})
    );
    let names: Vec<String> = s
        .list(&format!("{KEY_ROOT}/ippools/"))
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        names,
        [
            format!("{KEY_ROOT}/ippools/pool-a"),
            format!("{KEY_ROOT}/ippools/pool-b")
        ]
    );
}
