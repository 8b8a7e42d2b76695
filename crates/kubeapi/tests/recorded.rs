//! Honesty: the double answers the requests of recorded sessions with a real kube-apiserver 1.33
//! (k8s-openapi's test replays `test-replays/v1-33/custom_resource_definition-test.json` and
//! `patch-deployment.json`) with the same status codes and the same shape: which keys a response
//! has, the kind of list and Status, what a DELETE returns, the defaults a CRD gets. Values the
//! server makes up (uids, resourceVersions, times) are compared by kind only. Not compared, and
//! not done by the double: `managedFields` entries for non-apply writes, the defaults of pod
//! templates (`terminationMessagePath`, `imagePullPolicy`, …), and CRD schema validation.

mod common;

use axum::http::{Method, Request};
use serde_json::{Value, json};

/// `"*"` in the expectation matches any value; objects must have exactly the expected keys;
/// arrays are compared element by element.
fn matches(got: &Value, want: &Value, path: &str, problems: &mut Vec<String>) {
    match (got, want) {
        (_, Value::String(s)) if s == "*" => {}
        (Value::Object(g), Value::Object(w)) => {
            let mut gk: Vec<&String> = g.keys().collect();
            let mut wk: Vec<&String> = w.keys().collect();
            gk.sort();
            wk.sort();
            if gk != wk {
                problems.push(format!("{path}: keys {gk:?}, real server's {wk:?}"));
            }
            for (k, wv) in w {
                if let Some(gv) = g.get(k) {
                    matches(gv, wv, &format!("{path}.{k}"), problems);
                }
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            if g.len() != w.len() {
                problems.push(format!(
                    "{path}: {} elements, real server's {}",
                    g.len(),
                    w.len()
                ));
            }
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                matches(gv, wv, &format!("{path}[{i}]"), problems);
            }
        }
        (g, w) if g == w => {}
        (g, w) => problems.push(format!("{path}: {g}, real server's {w}")),
    }
}

struct Session {
    client: kube::Client,
    problems: Vec<String>,
}

impl Session {
    /// Sends a request; compares the status code and body with the recorded ones. Returns the
    /// body (the raw text for watches).
    async fn exchange(
        &mut self,
        method: Method,
        url: &str,
        content_type: &str,
        body: Option<Value>,
        code: u16,
        want: &Value,
    ) -> Value {
        let mut req = Request::builder().method(method.clone()).uri(url);
        if body.is_some() {
            req = req.header("content-type", content_type);
        }
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let resp = self
            .client
            .send(req.body(kube::client::Body::from(bytes)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().collect_bytes().await.unwrap().to_vec();
        let text = String::from_utf8(text).unwrap();
        let what = format!("{method} {url}");
        if status != code {
            self.problems.push(format!(
                "{what}: status {status}, real server's {code}: {text}"
            ));
        }
        let got: Value = if url.contains("watch=true") {
            Value::Array(
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
            )
        } else {
            serde_json::from_str(&text).unwrap()
        };
        matches(&got, want, &what, &mut self.problems);
        got
    }
}

fn meta(name: &str, namespace: Option<&str>, generation: Option<i64>) -> Value {
    let mut m = json!({"name": name, "uid": "*", "resourceVersion": "*", "creationTimestamp": "*", "managedFields": "*"});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if let Some(g) = generation {
        m["generation"] = json!(g);
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn crd_session_answers_as_kube_apiserver_1_33() {
    let env = common::start().await;
    let mut s = Session {
        client: env.client.clone(),
        problems: Vec::new(),
    };
    let group = "recorded.example.com";
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
        "required": ["prop1", "prop2", "prop4"], "properties": {"prop1": {"type": "string"}, "prop2": {"type": "array", "items": {"type": "boolean"}},
        "prop4": {"x-kubernetes-int-or-string": true}}}}}});
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("foobars.{group}")},
        "spec": {"group": group, "names": {"kind": "FooBar", "plural": "foobars", "shortNames": ["fb"], "singular": "foobar"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "schema": schema, "served": true, "storage": true, "subresources": {"status": {}}}]}});
    // Created: listKind and the None conversion defaulted, storedVersions set.
    let mut want_spec = crd["spec"].clone();
    want_spec["names"]["listKind"] = json!("FooBarList");
    want_spec["conversion"] = json!({"strategy": "None"});
    let want_crd = json!({"kind": "CustomResourceDefinition", "apiVersion": "apiextensions.k8s.io/v1",
        "metadata": meta(&format!("foobars.{group}"), None, Some(1)),
        "spec": want_spec,
        "status": {"conditions": "*", "acceptedNames": "*", "storedVersions": ["v1"]}});
    let mut want_crd_created = want_crd.clone();
    // This double writes no managedFields for plain creates (the real server records an Update).
    want_crd_created["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    s.exchange(
        Method::POST,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        Some(crd),
        201,
        &want_crd_created,
    )
    .await;

    let base = format!("/apis/{group}/v1/namespaces/default/foobars");
    let cr = |name: &str, spec: Value| json!({"apiVersion": format!("{group}/v1"), "kind": "FooBar", "metadata": {"name": name}, "spec": spec});
    let spec1 = json!({"prop1": "value1", "prop2": [true, false, true], "prop4": 6});
    let spec2 = json!({"prop1": "value1", "prop2": [true], "prop4": "value4"});
    let want_cr = |name: &str, spec: &Value| {
        let mut m = meta(name, Some("default"), Some(1));
        m.as_object_mut().unwrap().remove("managedFields");
        json!({"apiVersion": format!("{group}/v1"), "kind": "FooBar", "metadata": m, "spec": spec})
    };
    let fb1 = s
        .exchange(
            Method::POST,
            &base,
            "application/json",
            Some(cr("fb1", spec1.clone())),
            201,
            &want_cr("fb1", &spec1),
        )
        .await;
    s.exchange(
        Method::POST,
        &base,
        "application/json",
        Some(cr("fb2", spec2.clone())),
        201,
        &want_cr("fb2", &spec2),
    )
    .await;
    // The list: custom resources keep their kind and apiVersion in items.
    let want_list = json!({"apiVersion": format!("{group}/v1"), "kind": "FooBarList",
        "metadata": {"resourceVersion": "*"},
        "items": [want_cr("fb1", &spec1), want_cr("fb2", &spec2)]});
    s.exchange(Method::GET, &base, "", None, 200, &want_list)
        .await;
    s.exchange(
        Method::GET,
        &format!("{base}/fb1"),
        "",
        None,
        200,
        &want_cr("fb1", &spec1),
    )
    .await;
    // A watch from the start: ADDED events with whole objects (timeoutSeconds ends it).
    let want_watch = json!([
        {"type": "ADDED", "object": want_cr("fb1", &spec1)},
        {"type": "ADDED", "object": want_cr("fb2", &spec2)},
    ]);
    s.exchange(
        Method::GET,
        &format!("{base}?&watch=true&timeoutSeconds=1"),
        "",
        None,
        200,
        &want_watch,
    )
    .await;
    // The schema is enforced: a required field missing, a value of the wrong type.
    let invalid = |field: &str, reason: &str, message: &str| {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("FooBar.{group} \"fb3\" is invalid: {field}: {message}"),
            "reason": "Invalid",
            "details": {"name": "fb3", "group": group, "kind": "FooBar",
                "causes": [{"reason": reason, "message": message, "field": field}]},
            "code": 422})
    };
    s.exchange(
        Method::POST,
        &base,
        "application/json",
        Some(cr("fb3", json!({"prop1": "value1", "prop4": "value4"}))),
        422,
        &invalid("spec.prop2", "FieldValueRequired", "Required value"),
    )
    .await;
    s.exchange(
        Method::POST,
        &base,
        "application/json",
        Some(cr(
            "fb3",
            json!({"prop1": "value1", "prop2": true, "prop4": "value4"}),
        )),
        422,
        &invalid(
            "spec.prop2",
            "FieldValueTypeInvalid",
            "Invalid value: \"boolean\": spec.prop2 in body must be of type array: \"boolean\"",
        ),
    )
    .await;
    s.exchange(Method::POST, &base, "application/json",
        Some(cr("fb3", json!({"prop1": "value1", "prop2": [true], "prop4": true}))), 422,
        &invalid("spec.prop4", "FieldValueTypeInvalid", "Invalid value: \"boolean\": spec.prop4 in body must be of type integer,string: \"boolean\"")).await;
    // DELETE of a custom resource: a Success Status naming it.
    let want_deleted = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": "fb1", "group": group, "kind": "foobars", "uid": fb1["metadata"]["uid"]}});
    s.exchange(
        Method::DELETE,
        &format!("{base}/fb1"),
        "",
        None,
        200,
        &want_deleted,
    )
    .await;
    // NotFound afterwards, as a Failure Status.
    let want_missing = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("foobars.{group} \"fb1\" not found"), "reason": "NotFound",
        "details": {"name": "fb1", "group": group, "kind": "foobars"}, "code": 404});
    s.exchange(
        Method::GET,
        &format!("{base}/fb1"),
        "",
        None,
        404,
        &want_missing,
    )
    .await;
    // DELETE of the CRD answers with the CRD.
    let mut want_crd_deleted = want_crd_created.clone();
    want_crd_deleted["metadata"] = json!("*");
    s.exchange(
        Method::DELETE,
        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/foobars.{group}"),
        "",
        None,
        200,
        &want_crd_deleted,
    )
    .await;
    assert!(
        s.problems.is_empty(),
        "differences from kube-apiserver:\n{}",
        s.problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_patch_session_answers_as_kube_apiserver_1_33() {
    let env = common::start().await;
    let mut s = Session {
        client: env.client.clone(),
        problems: Vec::new(),
    };
    let name = "patched";
    let labels = json!({"recorded-key": "recorded-value"});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"image": "alpine:3.6", "name": name}]}}}});
    let want = |generation: i64, image: &str| {
        let mut m = meta(name, Some("default"), Some(generation));
        m.as_object_mut().unwrap().remove("managedFields");
        json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": m,
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": image}]}}},
            "status": {}})
    };
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let url = format!("{base}/{name}");
    let made = s
        .exchange(
            Method::POST,
            base,
            "application/json",
            Some(deployment),
            201,
            &want(1, "alpine:3.6"),
        )
        .await;
    // JSON patch (test, then replace), merge patch, strategic merge patch: each bumps the
    // generation.
    let json_patch = json!([
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "alpine:3.6"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "alpine:3.7"}]);
    s.exchange(
        Method::PATCH,
        &url,
        "application/json-patch+json",
        Some(json_patch),
        200,
        &want(2, "alpine:3.7"),
    )
    .await;
    let merge = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"image": image, "name": name}]}}}})
    };
    s.exchange(
        Method::PATCH,
        &url,
        "application/merge-patch+json",
        Some(merge("alpine:3.8")),
        200,
        &want(3, "alpine:3.8"),
    )
    .await;
    s.exchange(
        Method::PATCH,
        &url,
        "application/strategic-merge-patch+json",
        Some(merge("alpine:3.9")),
        200,
        &want(4, "alpine:3.9"),
    )
    .await;
    let want_deleted = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": "apps", "kind": "deployments", "uid": made["metadata"]["uid"]}});
    s.exchange(Method::DELETE, &url, "", None, 200, &want_deleted)
        .await;
    // deletecollection answers with the list of what it deleted; built-in list items carry no
    // kind or apiVersion.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "alpine"}]}});
    s.exchange(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        "application/json",
        Some(pod),
        201,
        &json!("*"),
    )
    .await;
    let mut item_meta = meta("p", Some("default"), Some(1));
    item_meta.as_object_mut().unwrap().remove("managedFields");
    item_meta["labels"] = labels.clone();
    let want_list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "*"},
        "items": [{"metadata": item_meta, "spec": "*", "status": "*"}]});
    s.exchange(
        Method::DELETE,
        "/api/v1/namespaces/default/pods?&labelSelector=recorded-key%3Drecorded-value",
        "",
        None,
        200,
        &want_list,
    )
    .await;
    assert!(
        s.problems.is_empty(),
        "differences from kube-apiserver:\n{}",
        s.problems.join("\n")
    );
}
