//! Decoding of the built-in kinds through their typed definitions (k8s-openapi, the Kubernetes
//! version the double answers as), as kube-apiserver decodes a request into its Go types: a value
//! of the wrong type is a 400 naming its field, and with `fieldValidation=Strict` (kubectl's
//! default) so is a field the kind does not have.

use k8s_openapi::api::{apps, coordination, core, discovery, networking, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::Resource;
use crate::status::ApiError;

/// Checks a built-in object against its kind's definition; without `strict`, fields the kind
/// does not have are dropped (as decoding into kube-apiserver's types drops them). Custom
/// resources are pruned and validated against their CRD's schema ([`crate::schema`]).
pub fn check(res: &Resource, obj: &mut Value, strict: bool) -> Result<(), ApiError> {
    if res.custom {
        if let Some(schema) = &res.schema {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
            crate::schema::apply(res, &name, schema, obj, strict)?;
        }
        return Ok(());
    }
    if res.version != "v1" {
        return Ok(());
    }
    let f = match (res.group.as_str(), res.plural.as_str()) {
        ("", "namespaces") => roundtrip::<core::v1::Namespace>,
        ("", "pods") => roundtrip::<core::v1::Pod>,
        ("", "serviceaccounts") => roundtrip::<core::v1::ServiceAccount>,
        ("", "nodes") => roundtrip::<core::v1::Node>,
        ("", "services") => roundtrip::<core::v1::Service>,
        ("", "endpoints") => roundtrip::<core::v1::Endpoints>,
        ("", "secrets") => roundtrip::<core::v1::Secret>,
        ("", "configmaps") => roundtrip::<core::v1::ConfigMap>,
        ("", "events") => roundtrip::<core::v1::Event>,
        ("discovery.k8s.io", "endpointslices") => roundtrip::<discovery::v1::EndpointSlice>,
        ("networking.k8s.io", "networkpolicies") => roundtrip::<networking::v1::NetworkPolicy>,
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            roundtrip::<apiextensions::v1::CustomResourceDefinition>
        }
        ("apps", "daemonsets") => roundtrip::<apps::v1::DaemonSet>,
        ("apps", "deployments") => roundtrip::<apps::v1::Deployment>,
        ("rbac.authorization.k8s.io", "clusterroles") => roundtrip::<rbac::v1::ClusterRole>,
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            roundtrip::<rbac::v1::ClusterRoleBinding>
        }
        ("rbac.authorization.k8s.io", "roles") => roundtrip::<rbac::v1::Role>,
        ("rbac.authorization.k8s.io", "rolebindings") => roundtrip::<rbac::v1::RoleBinding>,
        ("coordination.k8s.io", "leases") => roundtrip::<coordination::v1::Lease>,
        _ => return Ok(()),
    };
    f(res, obj, strict)
}

fn roundtrip<T: DeserializeOwned + Serialize>(
    res: &Resource,
    obj: &mut Value,
    strict: bool,
) -> Result<(), ApiError> {
    let typed: T = serde_path_to_error::deserialize(obj.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {path}: {inner}",
            kind = res.kind,
            v = res.version,
            path = e.path(),
            inner = e.inner()
        ))
    })?;
    let back = serde_json::to_value(&typed).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &back, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    if !strict {
        prune(obj, &back);
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "strict decoding error: {}",
        list.join(", ")
    )))
}

/// The paths of `given` that decoding dropped.
fn unknown_fields(given: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (given, decoded) {
        (Value::Object(g), Value::Object(d)) => {
            for (k, v) in g {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match d.get(k) {
                    None if !v.is_null() => out.push(p),
                    None => {}
                    Some(dv) => unknown_fields(v, dv, &p, out),
                }
            }
        }
        (Value::Array(g), Value::Array(d)) => {
            for (i, (gv, dv)) in g.iter().zip(d).enumerate() {
                unknown_fields(gv, dv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Removes from `given` the fields decoding dropped.
fn prune(given: &mut Value, decoded: &Value) {
    match (given, decoded) {
        (Value::Object(g), Value::Object(d)) => {
            g.retain(|k, v| v.is_null() || d.contains_key(k));
            for (k, v) in g.iter_mut() {
                if let Some(dv) = d.get(k) {
                    prune(v, dv);
                }
            }
        }
        (Value::Array(g), Value::Array(d)) => {
            for (gv, dv) in g.iter_mut().zip(d) {
                prune(gv, dv);
            }
        }
        _ => {}
    }
}
