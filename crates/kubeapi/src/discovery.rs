//! Discovery (`/version`, `/api`, `/apis`, resource lists), the OpenAPI documents kubectl asks
//! for, and Table output.

use serde_json::{Value, json};

use crate::resources::Resource;
use crate::status::ApiError;

/// The Kubernetes version the double answers as (the API k8s-openapi's `v1_33` describes).
pub const KUBERNETES_MINOR: &str = "33";

/// The media type of `/openapi/v2` (gnostic's protobuf).
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-gingham"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
}

/// Groups in first-seen order, with their versions.
fn groups(all: &[Resource]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in all.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version.clone())
                }
            }
            None => out.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    out
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs[0],
    })
}

pub fn group_list(all: &[Resource]) -> Value {
    let groups: Vec<Value> = groups(all)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(group: &str, all: &[Resource]) -> Result<Value, ApiError> {
    let (g, vs) = groups(all)
        .into_iter()
        .find(|(g, _)| g == group)
        .ok_or_else(ApiError::no_route)?;
    let mut v = group_json(&g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Ok(v)
}

pub fn resource_list(group: &str, version: &str, all: &[Resource]) -> Result<Value, ApiError> {
    let mut resources = Vec::new();
    for r in all
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return Err(ApiError::no_route());
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// `GET /`: the paths served.
pub fn root_paths(all: &[Resource]) -> Value {
    let mut paths = vec![
        "/api".to_owned(),
        "/api/v1".into(),
        "/apis".into(),
        "/healthz".into(),
        "/livez".into(),
        "/openapi/v2".into(),
        "/openapi/v3".into(),
        "/readyz".into(),
        "/version".into(),
    ];
    for (g, vs) in groups(all) {
        paths.push(format!("/apis/{g}"));
        for v in vs {
            paths.push(format!("/apis/{g}/{v}"));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v2`: an empty document in gnostic's protobuf encoding (every field of the message is
/// optional, so zero bytes is a valid empty document). kubectl finds no schema in it for any
/// kind, so its client-side validation has nothing to check; the server validates instead.
pub fn openapi_v2() -> Vec<u8> {
    Vec::new()
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one document per group-version.
pub fn openapi_v3_root(all: &[Resource]) -> Value {
    let mut paths = serde_json::Map::new();
    for r in all {
        let p = gv_path(&r.group, &r.version);
        // The hash changes when the group-version's resources do (CRDs come and go).
        let names: Vec<&str> = all
            .iter()
            .filter(|x| x.group == r.group && x.version == r.version)
            .map(|x| x.plural.as_str())
            .collect();
        let hash = format!("{:016X}", fnv(&names.join(",")));
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// `/openapi/v3/<api/v1 | apis/G/V>`: the operations of each resource with the parameters the
/// double takes, so that kubectl sees that the server validates fields (`fieldValidation`) and
/// leaves validation to it. No schemas.
pub fn openapi_v3_group_version(path: &str, all: &[Resource]) -> Result<Value, ApiError> {
    let mut paths = serde_json::Map::new();
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    for r in all.iter().filter(|r| gv_path(&r.group, &r.version) == path) {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = format!("/{path}");
        let (coll, item) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{base}/{}", r.plural),
                format!("{base}/{}/{{name}}", r.plural),
            )
        };
        let op = |action: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let writes = vec![
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation"),
        ];
        paths.insert(
            coll,
            json!({
                "get": op("list", vec![query("labelSelector"), query("fieldSelector"), query("limit"), query("continue"), query("resourceVersion"), query("watch"), query("allowWatchBookmarks"), query("timeoutSeconds")]),
                "post": op("post", writes.clone()),
                "delete": op("deletecollection", vec![query("labelSelector"), query("fieldSelector"), query("dryRun")]),
            }),
        );
        let mut patch_params = writes.clone();
        patch_params.push(query("force"));
        paths.insert(
            item,
            json!({
                "get": op("get", vec![]),
                "put": op("put", writes.clone()),
                "patch": op("patch", patch_params),
                "delete": op("delete", vec![query("dryRun")]),
            }),
        );
    }
    if paths.is_empty() {
        return Err(ApiError::no_route());
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBERNETES_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A `meta.k8s.io/v1` Table of a list (`kubectl get`'s server-side printing): name and age, and
/// for pods status and node.
pub fn table(res: &Resource, rv: i64, items: &[Value], list_meta: &Value) -> Value {
    let col = |name: &str, format: &str, description: &str| json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0});
    let mut columns = vec![col(
        "Name",
        "name",
        "Name must be unique within a namespace.",
    )];
    let pods = !res.custom && res.group.is_empty() && res.plural == "pods";
    if pods {
        columns.push(col("Status", "", "The phase of the pod."));
        columns.push(col("IP", "", "The pod's IP address."));
        columns.push(col("Node", "", "The node the pod is bound to."));
    }
    columns.push(col(
        "Age",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let m = &o["metadata"];
            let mut cells = vec![m["name"].clone()];
            if pods {
                let s = |v: &Value| json!(v.as_str().unwrap_or("<none>"));
                cells.push(s(&o["status"]["phase"]));
                cells.push(s(&o["status"]["podIP"]));
                cells.push(s(&o["spec"]["nodeName"]));
            }
            cells.push(json!(age(m["creationTimestamp"].as_str().unwrap_or(""))));
            let mut partial = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": m,
            });
            if let Some(meta) = partial["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
            json!({"cells": cells, "object": partial})
        })
        .collect();
    let mut metadata = list_meta.clone();
    metadata["resourceVersion"] = json!(rv.to_string());
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// How a client asked to see objects (its first `Accept` media type with an `as=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Full,
    /// `as=Table;g=meta.k8s.io` (kubectl get).
    Table,
    /// `as=PartialObjectMetadata[List];g=meta.k8s.io` (kube-rs metadata API).
    Metadata,
}

impl View {
    pub fn from_accept(accept: &str) -> Self {
        let first = accept.split(',').next().unwrap_or("");
        let params: Vec<&str> = first.split(';').map(str::trim).collect();
        if !params.contains(&"g=meta.k8s.io") {
            return Self::Full;
        }
        if params.contains(&"as=Table") {
            Self::Table
        } else if params.contains(&"as=PartialObjectMetadata")
            || params.contains(&"as=PartialObjectMetadataList")
        {
            Self::Metadata
        } else {
            Self::Full
        }
    }

    /// One object in this view.
    pub fn object(self, res: &Resource, rv: i64, obj: Value) -> Value {
        match self {
            Self::Full => obj,
            Self::Table => table(res, rv, &[obj], &json!({})),
            Self::Metadata => partial(&obj),
        }
    }
}

/// The PartialObjectMetadata of an object.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    })
}
