//! Strategic merge patch for the built-in kinds: maps merge as in a JSON merge patch, lists with a
//! known merge key (containers by `name`, container ports by `containerPort`, …) merge element by
//! element, `metadata.finalizers` merges as a set, other lists are replaced. The directives
//! `$patch` (replace, delete, merge), `$deleteFromPrimitiveList/<list>`, `$setElementOrder/<list>`
//! and `$retainKeys` are honoured.

use serde_json::{Map, Value};

/// The merge key of the list `field` found at `path` (the map keys from the object's root), if
/// the built-in types declare one (`patchMergeKey`).
fn merge_key(path: &[String], field: &str) -> Option<&'static str> {
    let in_container = path.iter().any(|p| {
        matches!(
            p.as_str(),
            "containers" | "initContainers" | "ephemeralContainers"
        )
    });
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "env" if in_container => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if in_container => "containerPort",
        "ports" if path.len() == 1 && path[0] == "spec" => "port",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" if path.first().map(String::as_str) == Some("status") => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of scalars that merge as sets (`patchStrategy: merge` on a primitive list).
fn primitive_merge(path: &[String], field: &str) -> bool {
    field == "finalizers" && path.len() == 1 && path[0] == "metadata"
}

/// Applies a strategic merge patch to `original`.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, String> {
    merge_map_value(original, patch, &mut Vec::new())
}

fn merge_map_value(
    original: &Value,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    if let Some(directive) = p.get("$patch").and_then(Value::as_str) {
        match directive {
            "replace" => {
                let mut m = p.clone();
                m.remove("$patch");
                return Ok(Value::Object(m));
            }
            "delete" => return Ok(Value::Null),
            "merge" => {}
            other => {
                return Err(format!(
                    "unknown $patch directive {other:?} at {} (valid: replace, delete, merge)",
                    display(path)
                ));
            }
        }
    }
    let mut out: Map<String, Value> = match original {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    // $retainKeys: keys not listed are cleared.
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(items)) = out.get_mut(list) {
                items.retain(|i| !remove.contains(&i));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let current = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match v {
            Value::Object(_) => {
                path.push(k.clone());
                let r = merge_map_value(&current, v, path);
                path.pop();
                r?
            }
            Value::Array(items) => {
                let merged = merge_list(&current, items, path, k)?;
                // Element order requested by the client, if any.
                match (p.get(&format!("$setElementOrder/{k}")), merge_key(path, k)) {
                    (Some(Value::Array(order)), Some(mk)) => reorder(merged, order, mk),
                    _ => merged,
                }
            }
            _ => v.clone(),
        };
        if merged.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    Ok(Value::Object(out))
}

fn merge_list(
    current: &Value,
    items: &[Value],
    path: &mut Vec<String>,
    field: &str,
) -> Result<Value, String> {
    // A list whose first element is {"$patch": "replace"} replaces the list.
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    let cur: Vec<Value> = current.as_array().cloned().unwrap_or_default();
    if primitive_merge(path, field) {
        let mut out = cur;
        for i in items {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(key) = merge_key(path, field) else {
        return Ok(Value::Array(items.to_vec()));
    };
    let mut out = cur;
    path.push(field.to_owned());
    for item in items {
        let Some(id) = item.get(key) else {
            path.pop();
            return Err(format!(
                "an element of {} has no merge key {key:?}",
                display(&[path.clone(), vec![field.into()]].concat())
            ));
        };
        let pos = out.iter().position(|e| e.get(key) == Some(id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(pos) = pos {
                out.remove(pos);
            }
            continue;
        }
        match pos {
            Some(pos) => {
                let merged = merge_map_value(&out[pos], item, path)?;
                out[pos] = merged;
            }
            None => {
                let merged = merge_map_value(&Value::Null, item, path)?;
                out.push(merged);
            }
        }
    }
    path.pop();
    Ok(Value::Array(out))
}

fn reorder(list: Value, order: &[Value], key: &str) -> Value {
    let Value::Array(mut items) = list else {
        return list;
    };
    let mut out = Vec::new();
    for o in order {
        if let Some(pos) = items.iter().position(|e| e.get(key) == o.get(key)) {
            out.push(items.remove(pos));
        }
    }
    out.extend(items);
    Value::Array(out)
}

fn display(path: &[String]) -> String {
    if path.is_empty() {
        "the object".into()
    } else {
        path.join(".")
    }
}

/// Server-side apply as far as kubectl and kube-rs need it: the applied configuration is merged
/// into the live object (strategic for built-in kinds, merge patch for custom ones), and the
/// fields this field manager applied last time but no longer does are removed.
pub fn apply(
    live: &Value,
    applied: &Value,
    previous: Option<&Value>,
    strategic: bool,
) -> Result<Value, String> {
    let mut base = live.clone();
    if let Some(prev) = previous {
        remove_dropped(&mut base, prev, applied);
    }
    if strategic {
        strategic_merge(&base, applied)
    } else {
        let mut out = base;
        json_patch::merge(&mut out, applied);
        Ok(out)
    }
}

/// Removes from `live` the map fields present in `prev` but absent from `now`.
fn remove_dropped(live: &mut Value, prev: &Value, now: &Value) {
    let (Value::Object(l), Value::Object(p)) = (live, prev) else {
        return;
    };
    for (k, pv) in p {
        if k.starts_with("k:") {
            continue;
        }
        match now.get(k) {
            None => {
                l.remove(k);
            }
            Some(nv) => match l.get_mut(k) {
                Some(lv @ Value::Object(_)) if pv.is_object() && nv.is_object() => {
                    remove_dropped(lv, pv, nv);
                }
                Some(Value::Array(items)) => remove_dropped_elements(items, pv, nv),
                _ => {}
            },
        }
    }
}

/// In a list merged by key: removes the elements applied before (`k:{…}` in `prev`) and no
/// longer applied, and what was dropped inside the elements still applied.
fn remove_dropped_elements(items: &mut Vec<Value>, prev: &Value, now: &Value) {
    let Value::Object(p) = prev else {
        return;
    };
    let now_items = now.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let matches = |e: &Value, id: &Map<String, Value>| id.iter().all(|(f, v)| e.get(f) == Some(v));
    for (k, element_prev) in p {
        let Some(id) = k
            .strip_prefix("k:")
            .and_then(|j| serde_json::from_str::<Map<String, Value>>(j).ok())
        else {
            continue;
        };
        match now_items.iter().find(|e| matches(e, &id)) {
            None => items.retain(|e| !matches(e, &id)),
            Some(element_now) => {
                for e in items.iter_mut().filter(|e| matches(e, &id)) {
                    remove_dropped(e, element_prev, element_now);
                }
            }
        }
    }
}

/// The `fieldsV1` set of the fields an applied configuration sets (`f:<key>` for map keys,
/// `k:{…}` for elements of lists merged by key), as in `metadata.managedFields`.
pub fn fields_of(applied: &Value) -> Value {
    fields_at(applied, &mut Vec::new())
}

fn fields_at(v: &Value, path: &mut Vec<String>) -> Value {
    let mut out = Map::new();
    if let Value::Object(m) = v {
        for (k, child) in m {
            if k.starts_with('$') {
                continue;
            }
            let sub = match child {
                Value::Object(_) => {
                    path.push(k.clone());
                    let f = fields_at(child, path);
                    path.pop();
                    f
                }
                Value::Array(items) => match merge_key(path, k) {
                    Some(mk) => {
                        let mut elems = Map::new();
                        path.push(k.clone());
                        for i in items {
                            if let Some(id) = i.get(mk) {
                                let key = format!("k:{}", serde_json::json!({ mk: id }));
                                elems.insert(key, fields_at(i, path));
                            }
                        }
                        path.pop();
                        Value::Object(elems)
                    }
                    None => Value::Object(Map::new()),
                },
                _ => Value::Object(Map::new()),
            };
            out.insert(format!("f:{k}"), sub);
        }
    }
    Value::Object(out)
}

/// The map structure a `fieldsV1` set describes (list elements left out), for
/// [`apply`]'s `previous`.
pub fn shape_of_fields(fields: &Value) -> Value {
    let mut out = Map::new();
    if let Value::Object(m) = fields {
        for (k, sub) in m {
            let has_children = sub
                .as_object()
                .is_some_and(|s| s.keys().any(|k| k.starts_with("f:") || k.starts_with("k:")));
            let child = if has_children {
                shape_of_fields(sub)
            } else {
                Value::Bool(true)
            };
            if let Some(name) = k.strip_prefix("f:") {
                out.insert(name.to_owned(), child);
            } else if k.starts_with("k:") {
                // A list element, kept under its key for `remove_dropped_elements`.
                out.insert(k.clone(), child);
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_ports_by_container_port() {
        let orig = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "b", "image": "y"}
        ], "tolerations": [{"key": "k"}]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "ports": [{"containerPort": 443}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "z"}
        ], "tolerations": [{"key": "j"}]}});
        let got = strategic_merge(&orig, &patch).unwrap();
        assert_eq!(
            got,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]},
                {"name": "c", "image": "z"}
            ], "tolerations": [{"key": "j"}]}})
        );
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"]}});
        let got = strategic_merge(&orig, &patch).unwrap();
        assert_eq!(
            got,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": ["x", "y"]}})
        );
    }

    #[test]
    fn replace_directive_replaces_a_map() {
        let orig = json!({"spec": {"selector": {"a": "1"}}});
        let patch = json!({"spec": {"selector": {"$patch": "replace", "b": "2"}}});
        assert_eq!(
            strategic_merge(&orig, &patch).unwrap(),
            json!({"spec": {"selector": {"b": "2"}}})
        );
    }

    #[test]
    fn apply_removes_list_elements_the_manager_no_longer_applies() {
        let first = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "args": ["1"]}, {"name": "b", "image": "y"}]}});
        let live = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "args": ["1"], "tty": true},
            {"name": "b", "image": "y"},
            {"name": "c", "image": "z"}]}});
        let prev = shape_of_fields(&fields_of(&first));
        let now = json!({"spec": {"containers": [{"name": "a", "image": "x2"}]}});
        assert_eq!(
            apply(&live, &now, Some(&prev), true).unwrap(),
            json!({"spec": {"containers": [
                {"name": "a", "image": "x2", "tty": true},
                {"name": "c", "image": "z"}]}}),
            "b (applied before) goes, c (someone else's) stays, a loses args"
        );
    }

    #[test]
    fn apply_removes_what_the_manager_no_longer_applies() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2", "other": "x"}}});
        let prev = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let now = json!({"metadata": {"labels": {"a": "1"}}});
        assert_eq!(
            apply(&live, &now, Some(&prev), true).unwrap(),
            json!({"metadata": {"labels": {"a": "1", "other": "x"}}})
        );
    }
}
