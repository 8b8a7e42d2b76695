//! Custom resources against their CRD's structural schema, as kube-apiserver treats them: fields
//! the schema does not declare are pruned (unless `x-kubernetes-preserve-unknown-fields`), then
//! types, `required` and `enum` are checked; a violation is a 422 naming the field.

use serde_json::{Map, Value};

use crate::resources::Resource;
use crate::status::ApiError;

/// Prunes and validates `obj` (a custom resource) against `schema` (the version's
/// `openAPIV3Schema`). With `strict` (`fieldValidation=Strict`), a field that would be pruned is
/// a 400 instead.
pub fn apply(
    res: &Resource,
    name: &str,
    schema: &Value,
    obj: &mut Value,
    strict: bool,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut pruned = Vec::new();
    if let Value::Object(o) = obj {
        // apiVersion, kind and metadata belong to every object whatever the schema says.
        let mut rest: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut rest_value = Value::Object(std::mem::take(&mut rest));
        walk(schema, &mut rest_value, "", &mut errors, &mut pruned);
        o.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
        if let Value::Object(r) = rest_value {
            o.extend(r);
        }
    }
    if strict && !pruned.is_empty() {
        let list: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    if errors.is_empty() {
        return Ok(());
    }
    let (field, why) = errors[0].clone();
    let mut e = ApiError::invalid(res, name, &field, &why);
    if errors.len() > 1 {
        let all: Vec<String> = errors.iter().map(|(f, w)| format!("{f}: {w}")).collect();
        e.message = format!(
            "{} \"{name}\" is invalid: [{}]",
            res.qualified_kind(),
            all.join(", ")
        );
    }
    // kube-apiserver's cause reasons, from the kind of message.
    e.details["causes"] = Value::Array(
        errors
            .iter()
            .map(|(f, w)| {
                let reason = if w.starts_with("Required value") {
                    "FieldValueRequired"
                } else if w.starts_with("Unsupported value") {
                    "FieldValueNotSupported"
                } else if w.contains("in body must be of type") {
                    "FieldValueTypeInvalid"
                } else {
                    "FieldValueInvalid"
                };
                serde_json::json!({"reason": reason, "message": w, "field": f})
            })
            .collect(),
    );
    Err(e)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

fn walk(
    schema: &Value,
    v: &mut Value,
    path: &str,
    errors: &mut Vec<(String, String)>,
    pruned: &mut Vec<String>,
) {
    if v.is_null() {
        return;
    }
    let field = if path.is_empty() { "<root>" } else { path };
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            errors.push((
                field.into(),
                format!(
                    "Invalid value: \"{t}\": {field} in body must be of type integer,string: \"{t}\"",
                    t = type_name(v)
                ),
            ));
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let have = type_name(v);
        let ok = have == want || (want == "number" && have == "integer");
        if !ok {
            errors.push((
                field.into(),
                format!(
                    "Invalid value: \"{have}\": {field} in body must be of type {want}: \"{have}\""
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push((
            field.into(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let preserve = schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
                || schema["x-kubernetes-embedded-resource"].as_bool() == Some(true);
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let sub = props.and_then(|p| p.get(&k));
                match sub {
                    Some(s) => {
                        if let Some(child) = m.get_mut(&k) {
                            walk(s, child, &join(path, &k), errors, pruned);
                        }
                    }
                    None if additional.is_object() => {
                        if let Some(child) = m.get_mut(&k) {
                            walk(additional, child, &join(path, &k), errors, pruned);
                        }
                    }
                    None if additional.as_bool() == Some(true) || preserve => {}
                    None => {
                        m.remove(&k);
                        pruned.push(join(path, &k));
                    }
                }
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = r.as_str()
                    && !m.contains_key(r)
                {
                    errors.push((join(path, r), "Required value".into()));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(
                    &schema["items"],
                    item,
                    &format!("{path}[{i}]"),
                    errors,
                    pruned,
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res() -> Resource {
        crate::resources::from_crd(&json!({"spec": {"group": "g.io", "scope": "Namespaced",
            "names": {"plural": "foos", "kind": "Foo"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}}))
        .remove(0)
    }

    #[test]
    fn prunes_unknown_fields_and_checks_types_and_required() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "required": ["a"], "properties": {"a": {"type": "string"}, "n": {"type": "integer"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "e": {"type": "string", "enum": ["x", "y"]}}}}});
        let mut obj = json!({"apiVersion": "g.io/v1", "kind": "Foo", "metadata": {"name": "f"},
            "spec": {"a": "1", "unknown": 3, "free": {"any": [1]}, "m": {"k": "v"}, "e": "x"}, "junk": true});
        apply(&res(), "f", &schema, &mut obj, false).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "g.io/v1", "kind": "Foo", "metadata": {"name": "f"},
            "spec": {"a": "1", "free": {"any": [1]}, "m": {"k": "v"}, "e": "x"}})
        );

        let mut missing = json!({"spec": {"n": 1}});
        let e = apply(&res(), "f", &schema, &mut missing, false).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("spec.a: Required value"),
            "{}",
            e.message
        );
        let mut wrong = json!({"spec": {"a": true, "e": "z", "m": {"k": 1}}});
        let e = apply(&res(), "f", &schema, &mut wrong, false).unwrap_err();
        assert!(
            e.message.contains(
                "spec.a: Invalid value: \"boolean\": spec.a in body must be of type string"
            ),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("spec.e: Unsupported value"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("spec.m.k: Invalid value"),
            "{}",
            e.message
        );
    }
}
