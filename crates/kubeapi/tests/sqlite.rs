//! The API double over the persistent SQLite store: objects, resourceVersions and watches
//! survive a restart of the server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{pod, start_on, status};
use futures::StreamExt;
use gingham_datastore_sqlite::SqliteStore;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn objects_and_revisions_persist_across_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kube.db");
    let (rv, uid) = {
        let env = start_on(Arc::new(SqliteStore::open(&path).unwrap())).await;
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        pods.create(&PostParams::default(), &pod("p", &[("app", "web")], None))
            .await
            .unwrap();
        let p = pods
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})),
            )
            .await
            .unwrap();
        let e = status(
            pods.create(&PostParams::default(), &pod("p", &[], None))
                .await
                .unwrap_err(),
        );
        assert_eq!(e.code, 409);
        env.server.shutdown().await;
        (
            p.metadata.resource_version.unwrap(),
            p.metadata.uid.unwrap(),
        )
    };
    // A new server on the same file: the same object, at the same resourceVersion.
    let env = start_on(Arc::new(SqliteStore::open(&path).unwrap())).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let p = pods.get("p").await.unwrap();
    assert_eq!(p.metadata.resource_version.as_deref(), Some(rv.as_str()));
    assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
    // A watch from that revision sees what follows it.
    let mut w = pods
        .watch(&WatchParams::default().disable_bookmarks().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Deleted(p) => assert_eq!(p.metadata.name.as_deref(), Some("p")),
        other => panic!("expected DELETED p, got {other:?}"),
    }
}
