//! Loading resources from YAML or JSON text.
//!
//! Accepted input: JSON (an object or an array of objects) or YAML (one or more documents
//! separated by `---`; empty documents are skipped). A document may be a single object, a list
//! object (`kind: List` or `kind: <Kind>List` with `items`), or a top-level sequence of objects
//! (the form calicoctl 1.x printed). Each object is a Calico v3 resource, a legacy v1 resource
//! (converted), or a Kubernetes NetworkPolicy, Namespace or Pod (converted).
//!
//! Everything is checked before anything is returned: if any object has a problem, [`load`]
//! returns every problem (each on one line) and no resources.

use serde_json::Value;

use crate::defaults::{DEFAULT_NAMESPACE, apply_defaults_in};
use crate::error::{LoadError, LoadErrors, ValidationError};
use crate::k8s;
use crate::kind::{API_VERSION, Kind};
use crate::resource::Resource;
use crate::v1;
use crate::validate::validate;

/// Where a document's resources came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// `projectcalico.org/v3` resources, loaded as written.
    V3,
    /// Legacy Calico v1 resources (`apiVersion: v1`, lower-camel kinds), converted.
    LegacyV1,
    /// Kubernetes objects (NetworkPolicy, Namespace, Pod), converted as Calico's controllers do.
    Kubernetes,
}

/// The resources of one document, defaulted and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedDocument {
    /// 1-based document number in the input.
    pub index: usize,
    /// Where the resources came from (of the first object, for mixed lists).
    pub origin: Origin,
    /// The resources, in input order.
    pub resources: Vec<Resource>,
    /// Notes about conversions and skipped objects, one line each.
    pub notices: Vec<String>,
}

impl LoadedDocument {
    /// All resources of several documents, in order.
    pub fn all_resources(docs: &[LoadedDocument]) -> Vec<Resource> {
        docs.iter()
            .flat_map(|d| d.resources.iter().cloned())
            .collect()
    }
}

/// The apiVersions this loader understands, for messages.
pub const VALID_API_VERSIONS: &str = "projectcalico.org/v3, v1 (legacy Calico or Kubernetes core), networking.k8s.io/v1, extensions/v1beta1";

/// The deepest nesting of mappings and sequences a YAML document may have (a Calico resource
/// needs fewer than ten levels; the limit protects the parser's stack).
pub const MAX_YAML_DEPTH: usize = 64;

/// YAML reading options: only `true`/`false` are booleans (so names and labels such as `n`,
/// `no` or `on` stay strings), and errors without source snippets (one line).
fn yaml_options() -> serde_saphyr::Options {
    // The default budget stops at 1,024 documents and 250,000 nodes, less than a cluster's
    // worth of policies in one file; raise the size caps, keep the anti-bomb (alias) limits.
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_documents: 10_000_000,
            max_nodes: 100_000_000,
            max_events: 400_000_000,
            max_total_scalar_bytes: 1024 * 1024 * 1024,
            max_depth: MAX_YAML_DEPTH,
        },
    }
}

/// Splits text into JSON values, one per non-empty document.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON: one value, or several concatenated values.
        let mut out = Vec::new();
        let stream = serde_json::Deserializer::from_str(trimmed).into_iter::<NoDuplicateKeys>();
        let mut json_err = None;
        for v in stream {
            match v {
                Ok(NoDuplicateKeys(v)) => out.push(v),
                Err(e) => {
                    json_err = Some(e);
                    break;
                }
            }
        }
        match json_err {
            None => return Ok(out),
            // Flow-style YAML also starts with '{' or '['; give YAML a chance before failing.
            Some(e) => {
                return match serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options())
                {
                    Ok(v) => Ok(v.into_iter().filter(|d| !d.is_null()).collect()),
                    Err(_) => Err(format!("invalid JSON: {e}")),
                };
            }
        }
    }
    serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options())
        .map(|v| v.into_iter().filter(|d| !d.is_null()).collect())
        .map_err(|e| format!("invalid YAML: {}", yaml_error_words(&e)))
}

/// A YAML parser error in the words of this tool, not of the parser library (no advice about
/// its options, no Rust debug output), with the place when known.
fn yaml_error_words(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::budget::BudgetBreach;
    let what = match e {
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => match key {
            Some(k) if k.chars().count() <= crate::error::QUOTE_MAX_CHARS => {
                format!("duplicate key `{k}` in one mapping")
            }
            Some(k) => format!("duplicate key {} in one mapping", crate::error::quote(k)),
            None => "duplicate key in one mapping".to_owned(),
        },
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => {
                format!("nesting deeper than {MAX_YAML_DEPTH} levels")
            }
            BudgetBreach::Aliases { aliases } => {
                format!("too many aliases (*name): {aliases}")
            }
            BudgetBreach::Anchors { anchors } => {
                format!("too many anchors (&name): {anchors}")
            }
            BudgetBreach::AliasAnchorRatio { .. } => {
                "too many aliases for its anchors (an alias bomb?)".to_owned()
            }
            BudgetBreach::Documents { documents } => {
                format!(
                    "too many documents: more than {}",
                    documents.saturating_sub(1)
                )
            }
            _ => "the document is too large to read".to_owned(),
        },
        other => return first_line(&other.to_string()),
    };
    match e.location() {
        Some(l) => format!("{what} at line {}, column {}", l.line(), l.column()),
        None => what,
    }
}

/// A JSON value read as YAML is read: a key twice in one object is an error (serde_json would
/// keep the last value without a word).
struct NoDuplicateKeys(Value);

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeysVisitor)
            .map(NoDuplicateKeys)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(NoDuplicateKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {} in one object",
                    crate::error::quote(&key)
                )));
            }
            let NoDuplicateKeys(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// The first non-empty line of a parser message (the rest is a source snippet).
fn first_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// One object to convert, with its position.
struct Item {
    item: Option<usize>,
    value: Value,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Expands a document into its objects (list forms included).
fn items_of(doc: Value) -> Result<Vec<Item>, ValidationError> {
    match doc {
        Value::Array(items) => Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, value)| Item {
                item: Some(i + 1),
                value,
            })
            .collect()),
        Value::Object(mut m) => {
            let kind = m
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if kind == "List" || (kind.ends_with("List") && m.contains_key("items")) {
                let api = m.get("apiVersion").cloned();
                let item_kind = kind.strip_suffix("List").unwrap_or("").to_string();
                let items = match m.remove("items") {
                    Some(Value::Array(items)) => items,
                    Some(Value::Null) | None => Vec::new(),
                    Some(_) => {
                        return Err(ValidationError::new(
                            "items",
                            "items must be a list of objects",
                        ));
                    }
                };
                Ok(items
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut value)| {
                        // Items of a typed list may leave out their envelope.
                        if let Value::Object(o) = &mut value {
                            if !item_kind.is_empty() && !o.contains_key("kind") {
                                o.insert("kind".into(), Value::String(item_kind.clone()));
                            }
                            if let Some(api) = &api
                                && !o.contains_key("apiVersion")
                                && !item_kind.is_empty()
                            {
                                o.insert("apiVersion".into(), api.clone());
                            }
                        }
                        Item {
                            item: Some(i + 1),
                            value,
                        }
                    })
                    .collect())
            } else {
                Ok(vec![Item {
                    item: None,
                    value: Value::Object(m),
                }])
            }
        }
        other => Err(ValidationError::new(
            "",
            format!(
                "expected a resource (a mapping with apiVersion and kind), found {}",
                type_name(&other)
            ),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// What an object is.
enum Class {
    V3(Kind),
    V1(v1::V1Kind),
    K8s(k8s::K8sKind),
}

fn classify(v: &Value) -> Result<Class, ValidationError> {
    if !v.is_object() {
        return Err(ValidationError::new(
            "",
            format!(
                "expected a resource (a mapping with apiVersion and kind), found {}",
                type_name(v)
            ),
        ));
    }
    let api = match v.get("apiVersion") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(ValidationError::new(
                "apiVersion",
                "apiVersion must be a string",
            ));
        }
        None => {
            return Err(ValidationError::new(
                "apiVersion",
                format!("missing apiVersion (valid: {VALID_API_VERSIONS})"),
            ));
        }
    };
    let kind = match v.get("kind") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ValidationError::new("kind", "kind must be a string")),
        None => {
            return Err(ValidationError::new(
                "kind",
                format!(
                    "missing kind (valid with {API_VERSION}: {})",
                    Kind::valid_names()
                ),
            ));
        }
    };
    let kind_q = crate::error::quote(kind);
    match api {
        API_VERSION => match Kind::from_name(kind) {
            Some(k) => Ok(Class::V3(k)),
            None => {
                let mut msg = format!(
                    "unknown kind {kind_q} for {API_VERSION} (valid: {})",
                    Kind::valid_names()
                );
                if let Some(k) = Kind::ALL
                    .iter()
                    .find(|k| k.name().eq_ignore_ascii_case(kind))
                {
                    msg.push_str(&format!("; kinds are case-sensitive, did you mean {k}?"));
                } else if v1::V1Kind::from_name(kind).is_some() {
                    msg.push_str(&format!(
                        "; {kind_q} is a legacy v1 kind, which needs apiVersion: v1"
                    ));
                }
                Err(ValidationError::new("kind", msg))
            }
        },
        "v1" => {
            if let Some(k) = v1::V1Kind::from_name(kind) {
                Ok(Class::V1(k))
            } else if let Some(k) = k8s::K8sKind::from_api_kind(api, kind) {
                Ok(Class::K8s(k))
            } else {
                Err(ValidationError::new(
                    "kind",
                    format!(
                        "unknown kind {kind_q} for apiVersion v1 (valid: legacy Calico {}; Kubernetes Namespace, Pod)",
                        v1::V1Kind::valid_names()
                    ),
                ))
            }
        }
        "networking.k8s.io/v1" | "extensions/v1beta1" => {
            match k8s::K8sKind::from_api_kind(api, kind) {
                Some(k) => Ok(Class::K8s(k)),
                None => Err(ValidationError::new(
                    "kind",
                    format!("unsupported kind {kind_q} for {api} (valid: NetworkPolicy)"),
                )),
            }
        }
        other => {
            let mut msg = format!(
                "unsupported apiVersion {} (valid: {VALID_API_VERSIONS})",
                crate::error::quote(other)
            );
            if other == "crd.projectcalico.org/v1" {
                msg.push_str("; export CRDs through calicoctl or use projectcalico.org/v3");
            }
            Err(ValidationError::new("apiVersion", msg))
        }
    }
}

/// `Kind name` from the raw object, for error messages before conversion.
fn raw_object_name(v: &Value) -> Option<String> {
    let kind = str_field(v, "kind")?;
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .or_else(|| meta.and_then(|m| m.get("cidr")).and_then(Value::as_str))
        .or_else(|| meta.and_then(|m| m.get("peerIP")).and_then(Value::as_str));
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    Some(match (ns, name) {
        (Some(ns), Some(n)) => format!("{kind} {ns}/{n}"),
        (None, Some(n)) => format!("{kind} {n}"),
        _ => kind.to_string(),
    })
}

/// The outcome of converting one object.
struct Converted {
    origin: Origin,
    resources: Vec<Resource>,
    notices: Vec<String>,
}

fn convert_item(mut value: Value, namespace: &str) -> Result<Converted, ValidationError> {
    let class = classify(&value)?;
    if let Class::K8s(k8s::K8sKind::NetworkPolicy | k8s::K8sKind::Pod) = class
        && let Some(Value::Object(meta)) = value.get_mut("metadata")
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        // Kubernetes objects without a namespace go to the default namespace, as with kubectl.
        meta.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    match class {
        Class::V3(kind) => Ok(Converted {
            origin: Origin::V3,
            resources: vec![Resource::from_value(kind, value)?],
            notices: Vec::new(),
        }),
        Class::V1(kind) => {
            let c = v1::convert_v1_value(kind, value)
                .map_err(|e| ValidationError::new(e.path, e.message))?;
            Ok(Converted {
                origin: Origin::LegacyV1,
                resources: c.resources,
                notices: c.notices,
            })
        }
        Class::K8s(kind) => {
            let c = k8s::convert_k8s_value(kind, value)
                .map_err(|e| ValidationError::new(e.path, e.message))?;
            Ok(Converted {
                origin: Origin::Kubernetes,
                resources: c.resources,
                notices: c.notices,
            })
        }
    }
}

/// Loads every resource in `text`. `source_name` (usually the file name) prefixes messages.
/// Namespaced objects that name no namespace go to `default`.
///
/// Returns one [`LoadedDocument`] per non-empty document, or every problem found (and nothing
/// else) if any object fails to parse, convert or validate.
pub fn load(source_name: &str, text: &str) -> Result<Vec<LoadedDocument>, LoadErrors> {
    load_in_namespace(source_name, text, DEFAULT_NAMESPACE)
}

/// [`load`] with another namespace for namespaced objects that name none (calicoctl's `-n`).
pub fn load_in_namespace(
    source_name: &str,
    text: &str,
    namespace: &str,
) -> Result<Vec<LoadedDocument>, LoadErrors> {
    let docs = parse_documents(text).map_err(|message| {
        LoadErrors(vec![LoadError {
            source_name: source_name.to_string(),
            document: None,
            item: None,
            object: None,
            path: String::new(),
            message,
        }])
    })?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let index = i + 1;
        let mk = |item: Option<usize>, object: Option<String>, e: ValidationError| LoadError {
            source_name: source_name.to_string(),
            document: Some(index),
            item,
            object,
            path: e.path,
            message: e.message,
        };
        let items = match items_of(doc) {
            Ok(items) => items,
            Err(e) => {
                errors.push(mk(None, None, e));
                continue;
            }
        };
        let mut loaded = LoadedDocument {
            index,
            origin: Origin::V3,
            resources: Vec::new(),
            notices: Vec::new(),
        };
        let mut first = true;
        for Item { item, value } in items {
            let raw_name = raw_object_name(&value);
            match convert_item(value, namespace) {
                Err(e) => errors.push(mk(item, raw_name, e)),
                Ok(c) => {
                    if first {
                        loaded.origin = c.origin;
                        first = false;
                    }
                    loaded.notices.extend(c.notices);
                    for mut r in c.resources {
                        apply_defaults_in(&mut r, namespace);
                        let problems = validate(&r);
                        if problems.is_empty() {
                            loaded.resources.push(r);
                        } else {
                            let object = if c.origin == Origin::V3 {
                                Some(r.describe())
                            } else {
                                Some(format!(
                                    "{}, converted from {}",
                                    r.describe(),
                                    raw_name.clone().unwrap_or_default()
                                ))
                            };
                            for p in problems {
                                errors.push(mk(item, object.clone(), p));
                            }
                        }
                    }
                }
            }
        }
        out.push(loaded);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Loads text and returns just the resources (see [`load`]).
pub fn load_resources(source_name: &str, text: &str) -> Result<Vec<Resource>, LoadErrors> {
    load(source_name, text).map(|docs| LoadedDocument::all_resources(&docs))
}
