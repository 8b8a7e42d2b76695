//! kube-rs clients against the API double over the in-memory datastore: CRUD, conflicts,
//! selectors, paging, watches, 410 and a watcher relisting, CRDs, namespace cascade.

mod common;

use std::time::Duration;

use common::{namespace, pod, start, status};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn create_get_replace_patch_delete_with_conflicts() {
    let env = start().await;
    namespace(&env.client, "shop").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");

    let created = pods
        .create(&PostParams::default(), &pod("web", &[("app", "web")], None))
        .await
        .unwrap();
    let rv1: i64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some("shop"));
    // The datastore revision is the resourceVersion.
    let kv = env
        .store
        .get("/registry/core/pods/shop/web")
        .unwrap()
        .expect("stored under /registry/core/pods/<ns>/<name>");
    assert_eq!(kv.mod_revision, rv1);

    // AlreadyExists, named.
    let e = status(
        pods.create(&PostParams::default(), &pod("web", &[], None))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert!(e.message.contains("pods \"web\" already exists"), "{e:?}");

    // A replace from the current version works; the same replace again is stale.
    let mut changed = created.clone();
    changed
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "front".into());
    let replaced = pods
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(replaced.metadata.generation, Some(1), "labels are not spec");
    let e = status(
        pods.replace("web", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("the object has been modified"), "{e:?}");

    // Merge patch, strategic merge patch (containers merge by name), JSON patch.
    let p = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": null, "color": "blue"}}})),
        )
        .await
        .unwrap();
    let labels = p.metadata.labels.unwrap();
    assert_eq!(labels.get("color").map(String::as_str), Some("blue"));
    assert!(!labels.contains_key("app"));
    let p = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}),
            ),
        )
        .await
        .unwrap();
    let names: Vec<String> = p
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["c", "sidecar"]);
    assert_eq!(
        p.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );
    let p = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:2"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        p.spec.unwrap().containers[0].image.as_deref(),
        Some("busybox:2")
    );

    // A JSON patch whose test fails is refused and changes nothing.
    let before = pods.get("web").await.unwrap();
    let e = status(
        pods.patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/labels/color", "value": "red"},
                    {"op": "replace", "path": "/metadata/labels/color", "value": "green"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    assert_eq!(pods.get("web").await.unwrap(), before);

    // Delete, then NotFound naming the pod.
    let deleted = pods.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left());
    let e = status(pods.get("web").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert!(e.message.contains("pods \"web\" not found"), "{e:?}");
    assert!(
        env.store
            .get("/registry/core/pods/shop/web")
            .unwrap()
            .is_none()
    );

    // generateName.
    let mut g = pod("", &[], None);
    g.metadata.name = None;
    g.metadata.generate_name = Some("job-".into());
    let made = pods.create(&PostParams::default(), &g).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");

    // A namespace that does not exist.
    let nowhere: Api<Pod> = Api::namespaced(env.client.clone(), "nowhere");
    let e = status(
        nowhere
            .create(&PostParams::default(), &pod("x", &[], None))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    assert!(
        e.message.contains("namespaces \"nowhere\" not found"),
        "{e:?}"
    );

    // Invalid names are 422, naming the field.
    let e = status(
        pods.create(&PostParams::default(), &pod("Bad_Name", &[], None))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("metadata.name"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_creates_merges_and_drops_what_is_no_longer_applied() {
    let env = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let pp = PatchParams::apply("gingham-test").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"a": "1", "b": "2"}},
        "data": {"x": "1", "y": "2"}});
    let cm = cms.patch("cfg", &pp, &Patch::Apply(&first)).await.unwrap();
    assert_eq!(cm.data.as_ref().unwrap().len(), 2);
    assert_eq!(
        cm.metadata.managed_fields.as_ref().unwrap()[0]
            .manager
            .as_deref(),
        Some("gingham-test")
    );
    // Someone else adds a label with a merge patch; it survives our next apply.
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"other": "x"}}})),
    )
    .await
    .unwrap();
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"a": "1"}},
        "data": {"x": "10"}});
    let cm = cms.patch("cfg", &pp, &Patch::Apply(&second)).await.unwrap();
    let cm_rv = cm.metadata.resource_version.clone();
    let labels = cm.metadata.labels.unwrap();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"));
    assert!(
        !labels.contains_key("b"),
        "b was applied before and no longer is"
    );
    assert_eq!(labels.get("other").map(String::as_str), Some("x"));
    let data = cm.data.unwrap();
    assert_eq!(data.get("x").map(String::as_str), Some("10"));
    assert!(!data.contains_key("y"));
    // The same apply again, a second later (managedFields times have seconds), changes
    // nothing: same resourceVersion, no event.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = cms.patch("cfg", &pp, &Patch::Apply(&second)).await.unwrap();
    assert_eq!(
        again.metadata.resource_version, cm_rv,
        "a no-op apply writes nothing"
    );
    // Apply without a field manager is refused.
    let e = status(
        cms.patch("cfg", &PatchParams::default(), &Patch::Apply(&second))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400, "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_paging_and_all_namespaces() {
    let env = start().await;
    namespace(&env.client, "a").await;
    namespace(&env.client, "b").await;
    let in_a: Api<Pod> = Api::namespaced(env.client.clone(), "a");
    let in_b: Api<Pod> = Api::namespaced(env.client.clone(), "b");
    let pp = PostParams::default();
    for i in 0..5 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        let node = if i < 3 { "node-1" } else { "node-2" };
        in_a.create(
            &pp,
            &pod(
                &format!("a{i}"),
                &[("app", "web"), ("tier", tier)],
                Some(node),
            ),
        )
        .await
        .unwrap();
    }
    in_b.create(&pp, &pod("b0", &[("app", "db")], Some("node-1")))
        .await
        .unwrap();
    in_b.create(&pp, &pod("b1", &[], None)).await.unwrap();

    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let all: Api<Pod> = Api::all(env.client.clone());
    let cases: &[(&str, &str, &[&str])] = &[
        ("", "", &["a0", "a1", "a2", "a3", "a4", "b0", "b1"]),
        ("app=web", "", &["a0", "a1", "a2", "a3", "a4"]),
        ("app!=web", "", &["b0", "b1"]),
        ("tier in (back)", "", &["a1", "a3"]),
        ("app notin (web)", "", &["b0", "b1"]),
        ("app", "", &["a0", "a1", "a2", "a3", "a4", "b0"]),
        ("!app", "", &["b1"]),
        ("app=web,tier=front", "spec.nodeName=node-1", &["a0", "a2"]),
        ("", "spec.nodeName=node-1", &["a0", "a1", "a2", "b0"]),
        ("", "spec.nodeName!=node-1", &["a3", "a4", "b1"]),
        ("", "metadata.name=b1", &["b1"]),
        ("", "metadata.namespace=b", &["b0", "b1"]),
    ];
    for (labels, fields, want) in cases {
        let lp = ListParams::default().labels(labels).fields(fields);
        assert_eq!(
            names(all.list(&lp).await.unwrap()),
            *want,
            "labels {labels:?} fields {fields:?}"
        );
    }
    assert_eq!(
        names(in_b.list(&ListParams::default()).await.unwrap()),
        ["b0", "b1"]
    );

    // An unknown field or a bad selector is a 400 naming it.
    let e = status(
        all.list(&ListParams::default().fields("spec.color=red"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(e.message.contains("spec.color"), "{e:?}");
    let e = status(
        all.list(&ListParams::default().labels("app in web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400, "{e:?}");

    // Paging: 3 + 3 + 1, no repeats, one resourceVersion.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut rvs = Vec::new();
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = all.list(&lp).await.unwrap();
        pages += 1;
        rvs.push(page.metadata.resource_version.clone());
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        let n = page.items.len();
        seen.extend(names(page));
        if token.is_none() {
            assert_eq!(n, 1);
            break;
        }
        assert_eq!(n, 3);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["a0", "a1", "a2", "a3", "a4", "b0", "b1"]);
    assert!(rvs.windows(2).all(|w| w[0] == w[1]), "{rvs:?}");
    let e = status(
        all.list(&ListParams::default().continue_token("garbage"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
}

/// Reads the watcher's events until `want`, returning those seen before it.
async fn expect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let d = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} within 15 s; saw {seen:?}"))
            .expect("the watcher runs");
        if d == want {
            return seen;
        }
        seen.push(d);
    }
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Pod>>> + Unpin),
) -> WatchEvent<Pod> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch goes on")
        .expect("a watch event")
}

fn describe(e: &WatchEvent<Pod>) -> String {
    match e {
        WatchEvent::Added(p) => format!("ADDED {}", p.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_from_a_revision_with_selectors_and_bookmarks() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pp = PostParams::default();
    let a = pods
        .create(&pp, &pod("a", &[("app", "web")], None))
        .await
        .unwrap();
    let from = a.metadata.resource_version.clone().unwrap();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("b", &[("app", "db")], None))
        .await
        .unwrap();
    pods.delete("a", &DeleteParams::default()).await.unwrap();

    // Everything after `from`, in order.
    let mut w = pods
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(30),
            &from,
        )
        .await
        .unwrap()
        .boxed();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(describe(&next_event(&mut w).await));
    }
    assert_eq!(got, ["MODIFIED a", "ADDED b", "DELETED a"]);

    // With a label selector: an object that stops matching is DELETED for this watcher,
    // one that starts matching is ADDED.
    let now = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = pods
        .watch(
            &WatchParams::default()
                .labels("app=db")
                .timeout(30)
                .disable_bookmarks(),
            &now,
        )
        .await
        .unwrap()
        .boxed();
    pods.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("c", &[("app", "web")], None))
        .await
        .unwrap();
    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    assert_eq!(describe(&next_event(&mut w).await), "DELETED b");
    assert_eq!(describe(&next_event(&mut w).await), "ADDED c");

    // resourceVersion "0": the current objects as ADDED first.
    let mut w = pods
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    let mut initial = vec![
        describe(&next_event(&mut w).await),
        describe(&next_event(&mut w).await),
    ];
    initial.sort();
    assert_eq!(initial, ["ADDED b", "ADDED c"]);
    // Bookmarks come while nothing happens, carrying a resourceVersion.
    match next_event(&mut w).await {
        WatchEvent::Bookmark(b) => assert!(!b.metadata.resource_version.is_empty()),
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }

    // timeoutSeconds ends the watch.
    let mut w = pods
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &now)
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = w.next().await {
            e.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the watch ended after its timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_revision_is_gone_and_a_watcher_relists() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let pp = PostParams::default();
    let first = pods.create(&pp, &pod("before", &[], None)).await.unwrap();
    let old = first.metadata.resource_version.unwrap();

    // The kube-rs watcher: list, then watch from the list (bookmarks on, 1 s watches).
    let stream = watcher(pods.clone(), watcher::Config::default().timeout(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut s = stream.boxed();
        while let Some(ev) = s.next().await {
            let d = match ev {
                Ok(watcher::Event::Init) => "Init".to_owned(),
                Ok(watcher::Event::InitApply(p)) => {
                    format!("InitApply {}", p.metadata.name.unwrap())
                }
                Ok(watcher::Event::InitDone) => "InitDone".into(),
                Ok(watcher::Event::Apply(p)) => format!("Apply {}", p.metadata.name.unwrap()),
                Ok(watcher::Event::Delete(p)) => format!("Delete {}", p.metadata.name.unwrap()),
                Err(watcher::Error::WatchError(s)) => format!("WatchError {}", s.code),
                Err(e) => format!("Error {e}"),
            };
            if tx.send(d).is_err() {
                break;
            }
        }
    });
    expect(&mut rx, "InitApply before").await;
    expect(&mut rx, "InitDone").await;

    // Other writes move the store on; compaction forgets the history the pods watch started at.
    for i in 0..5 {
        cms.create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": format!("cm{i}")}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let rev = env.store.revision().unwrap();
    env.store.compact(rev).unwrap();

    // A raw watch from the old revision: an ERROR event with a 410 Expired Status.
    let mut w = pods
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut w).await {
        WatchEvent::Error(s) => {
            assert_eq!(s.code, 410, "{s:?}");
            assert_eq!(s.reason, "Expired");
            assert!(s.message.contains("too old resource version"), "{s:?}");
        }
        other => panic!("expected a 410 error event, got {}", describe(&other)),
    }

    // The watcher's next watch (its watches last 1 s, and its bookmarks carry the last
    // revision of a pod) gets 410 and it lists again, then follows changes again.
    let seen = expect(&mut rx, "Init").await;
    assert!(
        seen.iter().any(|s| s == "WatchError 410"),
        "the relist follows a 410: {seen:?}"
    );
    let relist = expect(&mut rx, "InitDone").await;
    assert_eq!(relist, ["InitApply before"]);
    pods.create(&pp, &pod("after", &[], None)).await.unwrap();
    let seen = expect(&mut rx, "Apply after").await;
    assert!(seen.iter().all(|s| !s.starts_with("Error")), "{seen:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_resource_definitions_serve_their_resources_until_deleted() {
    let env = start().await;
    namespace(&env.client, "shop").await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.client.clone());
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]
        }
    }))
    .unwrap();
    let made = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conds = made.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "shop", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "labels": {"size": "big"}},
        "spec": {"anything": ["goes", 1, {"x": true}]},
        "status": {"dropped": "on create"}
    }))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"anything": ["goes", 1, {"x": true}]})
    );
    assert!(
        created.data.get("status").is_none(),
        "status is a subresource: dropped on create"
    );
    let st = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"], json!({"ready": true}));
    // Strategic merge patch is refused for custom resources, as kube-apiserver does.
    let e = status(
        widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 415, "{e:?}");
    assert_eq!(
        widgets
            .list(&ListParams::default().labels("size=big"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // A replace of a custom resource must name the version it replaces.
    let mut current = widgets.get("w1").await.unwrap();
    current.metadata.resource_version = None;
    let e = status(
        widgets
            .replace("w1", &PostParams::default(), &current)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    assert!(e.message.contains("metadata.resourceVersion"), "{e:?}");

    // Discovery lists it.
    let discovery = kube::Discovery::new(env.client.clone())
        .run()
        .await
        .unwrap();
    let found = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .any(|(r, _)| r.plural == "widgets" && r.group == "example.com");
    assert!(found, "discovery lists widgets");

    // Deleting the CRD takes its resources and objects with it.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let e = status(widgets.get("w1").await.unwrap_err());
    assert_eq!(e.code, 404);
    assert!(
        env.store
            .list("/registry/example.com/widgets/")
            .unwrap()
            .kvs
            .is_empty()
    );
    let discovery = kube::Discovery::new(env.client.clone())
        .run()
        .await
        .unwrap();
    assert!(!discovery.has_group("example.com"));
    // A new CRD of the same name starts empty.
    crds.create(&PostParams::default(), &crd).await.unwrap();
    assert!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_namespace_deletes_what_is_in_it() {
    let env = start().await;
    namespace(&env.client, "gone").await;
    namespace(&env.client, "kept").await;
    let pp = PostParams::default();
    for ns in ["gone", "kept"] {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
        pods.create(&pp, &pod("p", &[], None)).await.unwrap();
        let nps: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), ns);
        nps.create(
            &pp,
            &serde_json::from_value(
                json!({"metadata": {"name": "np"}, "spec": {"podSelector": {}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    }
    // Every namespace has its default service account.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(env.client.clone(), "gone");
    sas.get("default").await.unwrap();

    let nss: Api<Namespace> = Api::all(env.client.clone());
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    assert!(
        env.store
            .list("/registry/core/pods/gone/")
            .unwrap()
            .kvs
            .is_empty()
    );
    assert!(
        env.store
            .list("/registry/networking.k8s.io/networkpolicies/gone/")
            .unwrap()
            .kvs
            .is_empty()
    );
    assert!(
        env.store
            .list("/registry/core/serviceaccounts/gone/")
            .unwrap()
            .kvs
            .is_empty()
    );
    let all_pods: Api<Pod> = Api::all(env.client.clone());
    let left: Vec<String> = all_pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.unwrap(),
                p.metadata.name.unwrap()
            )
        })
        .collect();
    assert_eq!(left, ["kept/p"]);
    assert_eq!(status(nss.get("gone").await.unwrap_err()).code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_a_subresource() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let made = pods
        .create(&PostParams::default(), &pod("p", &[], Some("node-1")))
        .await
        .unwrap();
    assert_eq!(
        made.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    let st = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.0.0.5"}, "spec": {"nodeName": "node-2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().pod_ip.as_deref(),
        Some("10.0.0.5")
    );
    assert_eq!(
        st.spec.unwrap().node_name.as_deref(),
        Some("node-1"),
        "a status write leaves the spec alone"
    );
    // A write of the main resource keeps the status.
    let mut p = pods.get("p").await.unwrap();
    p.status = None;
    p.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let after = pods.replace("p", &PostParams::default(), &p).await.unwrap();
    assert_eq!(after.status.unwrap().pod_ip.as_deref(), Some("10.0.0.5"));
    let listed = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
}

/// Creates one object of a built-in kind through kube-rs's typed API and reads it back, listed
/// and by name.
async fn roundtrip<K>(client: &kube::Client, namespaced: bool, body: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let _ = namespaced;
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    let obj: K = serde_json::from_value(body).unwrap();
    let name = obj.meta().name.clone().unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())));
    api.get(&name).await.unwrap();
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

async fn roundtrip_cluster<K>(client: &kube::Client, body: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let obj: K = serde_json::from_value(body).unwrap();
    let name = obj.meta().name.clone().unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())));
    api.get(&name).await.unwrap();
    assert!(
        !api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_built_in_kind_round_trips_through_typed_clients() {
    use k8s_openapi::api::{apps, coordination, core::v1 as core, discovery, rbac};
    let env = start().await;
    let c = &env.client;
    let m = |name: &str| json!({"name": name});
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let selector = json!({"matchLabels": {"app": "x"}});
    roundtrip::<apps::v1::DaemonSet>(
        c,
        true,
        json!({"metadata": m("ds"), "spec": {"selector": selector, "template": template}}),
    )
    .await;
    roundtrip::<apps::v1::Deployment>(
        c,
        true,
        json!({"metadata": m("dep"), "spec": {"selector": selector, "template": template}}),
    )
    .await;
    roundtrip::<core::Service>(
        c,
        true,
        json!({"metadata": m("svc"), "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    roundtrip::<core::Endpoints>(
        c,
        true,
        json!({"metadata": m("svc"), "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}),
    )
    .await;
    roundtrip::<discovery::v1::EndpointSlice>(c, true, json!({"metadata": m("svc-1"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]})).await;
    roundtrip::<core::Secret>(c, true, json!({"metadata": m("s"), "data": {"k": "dg=="}})).await;
    roundtrip::<core::ConfigMap>(c, true, json!({"metadata": m("cm"), "data": {"k": "v"}})).await;
    roundtrip::<rbac::v1::Role>(c, true, json!({"metadata": m("r"), "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})).await;
    roundtrip::<rbac::v1::RoleBinding>(c, true, json!({"metadata": m("rb"), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]})).await;
    roundtrip::<core::Event>(
        c,
        true,
        json!({"metadata": m("e"), "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Scheduled"}),
    )
    .await;
    roundtrip::<coordination::v1::Lease>(
        c,
        true,
        json!({"metadata": m("l"), "spec": {"holderIdentity": "me"}}),
    )
    .await;
    roundtrip_cluster::<core::Node>(c, json!({"metadata": m("node-1"), "status": {"addresses": [{"type": "InternalIP", "address": "172.31.0.2"}]}})).await;
    roundtrip_cluster::<rbac::v1::ClusterRole>(c, json!({"metadata": m("cr"), "rules": []})).await;
    roundtrip_cluster::<rbac::v1::ClusterRoleBinding>(c, json!({"metadata": m("crb"), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"}})).await;
    // A node registers with its status (kubelet does).
    let nodes: Api<core::Node> = Api::all(c.clone());
    let n = nodes.get("node-1").await.unwrap();
    assert_eq!(
        n.status.unwrap().addresses.unwrap()[0].address,
        "172.31.0.2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn annotations_are_limited_to_256_kib_in_total() {
    let env = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let big = "x".repeat(gingham_kubeapi::MAX_ANNOTATIONS_SIZE);
    let cm =
        serde_json::from_value(json!({"metadata": {"name": "big", "annotations": {"a": big}}}))
            .unwrap();
    let e = status(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(e.code, 422, "{e:?}");
    assert!(
        e.message.contains("metadata.annotations: Too long"),
        "{e:?}"
    );
    let fits = "x".repeat(gingham_kubeapi::MAX_ANNOTATIONS_SIZE - 1);
    let cm =
        serde_json::from_value(json!({"metadata": {"name": "big", "annotations": {"a": fits}}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_list_watcher_gets_its_initial_events_and_shutdown_ends_open_watches() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("one", &[], None))
        .await
        .unwrap();
    // sendInitialEvents: the objects, then a bookmark that ends the initial events.
    let mut s = watcher(pods.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("an event within 10 s")
            .expect("the watcher runs")
            .expect("no error");
        match ev {
            watcher::Event::Init => seen.push("Init".to_owned()),
            watcher::Event::InitApply(p) => {
                seen.push(format!("InitApply {}", p.metadata.name.unwrap()))
            }
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["Init", "InitApply one"]);
    // A raw watch stays open; shutdown ends it and returns.
    let mut w = pods
        .watch(&WatchParams::default().timeout(290), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next_event(&mut w).await), "ADDED one");
    tokio::time::timeout(Duration::from_secs(10), env.server.shutdown())
        .await
        .expect("shutdown returns with a watch open");
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = w.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the watch ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crd_made_through_another_server_on_the_same_datastore_is_served() {
    let a = start().await;
    let b = common::start_on(a.store.clone()).await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Gadget"),
        "gadgets",
    );
    let on_b: Api<DynamicObject> = Api::namespaced_with(b.client.clone(), "default", &ar);
    // B has read its resource table: no gadgets.
    assert_eq!(
        status(on_b.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(a.client.clone());
    crds.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })).unwrap())
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match on_b.list(&ListParams::default()).await {
            Ok(l) => {
                assert!(l.items.is_empty());
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("server B never served the CRD made through A: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_3_mib_is_refused_as_kube_apiserver_does() {
    let env = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let data = "x".repeat(gingham_kubeapi::MAX_BODY);
    let cm =
        serde_json::from_value(json!({"metadata": {"name": "huge"}, "data": {"d": data}})).unwrap();
    let e = status(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(e.code, 413, "{e:?}");
    assert!(e.message.contains("Request entity too large"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_answer_without_writing() {
    let env = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let before = env.store.revision().unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let cm =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    let answered = cms.create(&dry, &cm).await.unwrap();
    assert_eq!(answered.data.unwrap()["a"], "1");
    assert_eq!(
        env.store.revision().unwrap(),
        before,
        "a dry-run create writes nothing"
    );
    assert_eq!(status(cms.get("c").await.unwrap_err()).code, 404);
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let at = env.store.revision().unwrap();
    let patched = cms
        .patch(
            "c",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["a"], "2");
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    cms.delete("c", &dp).await.unwrap();
    assert_eq!(
        env.store.revision().unwrap(),
        at,
        "dry-run patch and delete write nothing"
    );
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["a"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metadata_api_lists_and_watches_partial_objects() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("m1", &[("app", "web")], None))
        .await
        .unwrap();
    let listed = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("m1"));
    let got = pods.get_metadata("m1").await.unwrap();
    assert_eq!(got.metadata.labels.unwrap()["app"], "web");
    // The server answered with PartialObjectMetadata, not the whole pod.
    assert_eq!(got.types.unwrap().kind, "PartialObjectMetadata");
    // A metadata watcher (what controllers use to keep little in memory).
    let meta: Api<kube::core::PartialObjectMeta<Pod>> =
        Api::namespaced(env.client.clone(), "default");
    let mut s = watcher(meta, watcher::Config::default()).boxed();
    let mut names = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("an event within 10 s")
            .expect("the watcher runs")
            .expect("no error");
        match ev {
            watcher::Event::InitApply(p) => names.push(p.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, ["m1"]);
    pods.create(&PostParams::default(), &pod("m2", &[], None))
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("an event within 10 s")
            .expect("the watcher runs")
            .expect("no error");
        if let watcher::Event::Apply(p) = ev {
            assert_eq!(p.metadata.name.as_deref(), Some("m2"));
            break;
        }
    }
}
