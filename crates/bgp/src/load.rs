//! Reading renderer input from resource text: Calico v3 resources (through the model's loader,
//! BGPFilters and BlockAffinities included), Kubernetes `v1` Secrets holding BGP passwords, and
//! `v1` Services and `discovery.k8s.io/v1` EndpointSlices for service advertisement.

use std::collections::BTreeMap;

use base64::Engine;
use gingham_model::Resource;
use serde_json::Value;

use crate::Input;

/// Adds the resources this renderer reads to `input`; other kinds are ignored.
pub fn add_resources(input: &mut Input, list: Vec<Resource>) {
    for r in list {
        match r {
            Resource::Node(n) => input.nodes.push(n),
            Resource::BgpConfiguration(c) => input.bgp_configurations.push(c),
            Resource::BgpPeer(p) => input.bgp_peers.push(p),
            Resource::IpPool(p) => input.ip_pools.push(p),
            Resource::BgpFilter(f) => input.bgp_filters.push(f),
            Resource::BlockAffinity(a) => input.affinities.push(a),
            _ => {}
        }
    }
}

/// Adds everything in `text` (YAML or JSON, several documents) to `input`. `source_name`
/// (usually the file name) starts every message. On error nothing is added and every problem
/// is returned, one line each.
pub fn add_text(input: &mut Input, source_name: &str, text: &str) -> Result<(), Vec<String>> {
    let docs =
        gingham_model::parse_documents(text).map_err(|e| vec![format!("{source_name}: {e}")])?;
    let mut errors = Vec::new();
    let mut secrets: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut services = Vec::new();
    let mut slices = Vec::new();
    // Secrets are taken out here; the other documents go to the resource
    // loader in place (an empty list keeps the document numbers of its messages).
    let mut rest = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate() {
        let what = format!("{source_name}: document {}", i + 1);
        let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let taken = match (api, kind) {
            ("v1", "Secret") => secret(&doc, &what).map(|s| secrets.push(s)),
            ("v1", "Service") => crate::services::service(&doc, &what).map(|s| services.push(s)),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                crate::services::endpoint_slice(&doc, &what).map(|s| slices.push(s))
            }
            _ => {
                rest.push(doc);
                continue;
            }
        };
        rest.push(Value::Array(Vec::new()));
        if let Err(e) = taken {
            errors.push(e);
        }
    }
    let stream: String = rest
        .iter()
        .map(|v| format!("---\n{}\n", serde_json::to_string(v).unwrap_or_default()))
        .collect();
    let resources = match gingham_model::load_resources(source_name, &stream) {
        Ok(r) => r,
        Err(e) => {
            errors.extend(e.0.iter().map(ToString::to_string));
            Vec::new()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    add_resources(input, resources);
    for (name, data) in secrets {
        input.secrets.entry(name).or_default().extend(data);
    }
    input.services.extend(services);
    input.endpoint_slices.extend(slices);
    Ok(())
}

/// A workload endpoint status file (JSON) named `name`.
pub fn local_workload(name: &str, text: &str) -> Result<crate::LocalWorkload, String> {
    let mut w: crate::LocalWorkload =
        serde_json::from_str(text).map_err(|e| format!("endpoint status file {name}: {e}"))?;
    w.name = name.to_string();
    Ok(w)
}

/// A Kubernetes Secret's name and decoded data (`data` is base64, `stringData` plain).
fn secret(doc: &Value, what: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(format!("{what} (Secret): metadata.name is required"));
    }
    let what = format!("{what} (Secret {name})");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("kube-system");
    if ns != "kube-system" {
        return Err(format!(
            "{what}: metadata.namespace: {ns:?} is not read (valid: kube-system, where Calico reads BGP passwords)"
        ));
    }
    let mut out = BTreeMap::new();
    if let Some(data) = doc.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v.as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("{what}: data.{k}: not base64 ({e})"))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{what}: data.{k}: not UTF-8 text"))?;
            out.insert(k.clone(), text);
        }
    }
    if let Some(data) = doc.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            let Some(s) = v.as_str() else {
                return Err(format!("{what}: stringData.{k}: must be a string"));
            };
            out.insert(k.clone(), s.to_string());
        }
    }
    Ok((name.to_string(), out))
}
