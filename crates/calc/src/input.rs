//! Preparing Kubernetes-style input for offline questions (`reach`, `explain`, `lab`): pods that
//! name no node are placed on one, and the ports pods declare are collected (Calico keeps only
//! named ports on workload endpoints, but a reachability matrix wants every declared port).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::eval::parse_protocol;

/// The node given to pods without `spec.nodeName`.
pub const DEFAULT_NODE: &str = "node-1";

/// Declared container ports per pod (`namespace/pod` → protocol, port).
pub type PodPorts = BTreeMap<String, Vec<(u8, u16)>>;

/// Walks documents (and `kind: List` items): gives unscheduled pods [`DEFAULT_NODE`] and returns
/// every pod's declared ports. Returns the notes to show the user.
pub fn prepare_documents(docs: &mut [Value]) -> (PodPorts, Vec<String>) {
    prepare_documents_with(docs, &mut || DEFAULT_NODE.to_owned())
}

/// [`prepare_documents`] with a scheduler choosing the node of each unscheduled pod (the lab
/// places them round-robin).
pub fn prepare_documents_with(
    docs: &mut [Value],
    schedule: &mut dyn FnMut() -> String,
) -> (PodPorts, Vec<String>) {
    let mut ports = PodPorts::new();
    let mut notes = Vec::new();
    for doc in docs.iter_mut() {
        visit(doc, &mut ports, &mut notes, schedule);
    }
    (ports, notes)
}

fn visit(
    doc: &mut Value,
    ports: &mut PodPorts,
    notes: &mut Vec<String>,
    schedule: &mut dyn FnMut() -> String,
) {
    if doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut)
    {
        for item in items {
            visit(item, ports, notes, schedule);
        }
        return;
    }
    if doc.get("kind").and_then(Value::as_str) != Some("Pod") {
        return;
    }
    let ns = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let key = format!("{ns}/{name}");
    let declared: Vec<(u8, u16)> = doc
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| {
            let port = p.get("containerPort").and_then(Value::as_u64)?;
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            Some((parse_protocol(proto)?, u16::try_from(port).ok()?))
        })
        .collect();
    ports.insert(key.clone(), declared);
    let has_node = doc
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let host_network = doc
        .pointer("/spec/hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !has_node
        && !host_network
        && let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut)
    {
        let node = schedule();
        notes.push(format!("pod {key} names no node; placed on {node}"));
        spec.insert("nodeName".into(), Value::String(node));
    }
}
