//! Keys and values of the resources kept as CRDs (`crd.projectcalico.org/v1`).
//!
//! Pure conversions, laid out as Calico's kubernetes backend (libcalico-go
//! `lib/backend/k8s/resources`) lays them out:
//! - A `projectcalico.org/v3` resource at `KEY_ROOT/<plural>/[<ns>/]<name>` is the CRD object
//!   `<plural>.crd.projectcalico.org` named `<name>` (policy names as they are: Calico v3.33
//!   keeps the v3 name, tier prefix or not, and only reads a `default.` prefix away from objects
//!   older versions wrote). The spec (and any other top-level field) is kept; the v3 metadata
//!   that Kubernetes does not own goes into the annotation [`METADATA_ANNOTATION`], and only
//!   Calico's own labels and annotations (`projectcalico.org/`, `operator.tigera.io/`) stay on
//!   the CRD. `resourceVersion`, `uid` and `creationTimestamp` are the ones Kubernetes sets; the
//!   v3 `uid` is the CRD's with the bits of each byte reversed (Calico's `ConvertUID`).
//! - IPAM (`gingham_ipam::stored`): a block at `/calico/ipam/v2/assignment/...` is an
//!   `IPAMBlock` named after its CIDR (`.`, `:` and `/` become `-`); a handle is an
//!   `IPAMHandle` named after its id in lower case; a host affinity is a `BlockAffinity` named
//!   `<node>-<cidr name>` (spec `state`, `node`, `type: host`, `cidr`, `deleted` as a string);
//!   the IPAM configuration is the `IPAMConfig` `default`.

use std::net::IpAddr;

use gingham_ipam::stored::{
    self, AllocationBlock, BLOCK_PREFIX, CONFIG_KEY, HANDLE_PREFIX, HOST_PREFIX, IpamHandle,
    StoredConfig,
};
use gingham_model::crd::{CRD_GROUP, CRD_VERSION, CrdKind, kdd_crds};
use gingham_model::kind::{API_VERSION, KEY_ROOT};
use ipnet::IpNet;
use serde_json::{Map, Value, json};
use sha2::Digest;

/// The annotation holding the v3 metadata Kubernetes does not keep (Calico's).
pub const METADATA_ANNOTATION: &str = "projectcalico.org/metadata";
/// The name of the one IPAMConfig object.
pub const IPAM_CONFIG_NAME: &str = "default";
/// Labels Calico puts on every BlockAffinity (its hostname hash label needs SHA-3, not done).
pub const LABEL_AFFINITY_TYPE: &str = "projectcalico.org/affinity-type";
pub const LABEL_IP_VERSION: &str = "projectcalico.org/ip-version";
/// The v3 kinds whose metadata annotation also keeps the name (Calico's policy kinds).
const NAMED_IN_ANNOTATION: &[&str] = &[
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
];

/// `crd.projectcalico.org/v1`.
pub fn crd_api_version() -> String {
    format!("{CRD_GROUP}/{CRD_VERSION}")
}

/// Errors of the mapping; each names the key or the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(
        "{key}: no Calico CRD holds this key (the Kubernetes datastore keeps Calico resources under {KEY_ROOT}/ and IPAM under {ipam})",
        ipam = stored::IPAM_PREFIX
    )]
    NoCrd { key: String },
    #[error("{key}: {message}")]
    BadValue { key: String, message: String },
    #[error("{plural}.{CRD_GROUP} {name}: {message}")]
    BadObject {
        plural: String,
        name: String,
        message: String,
    },
}

/// How one CRD type's objects map to keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A v3 resource: `KEY_ROOT/<plural>/[<ns>/]<name>`.
    Resource,
    IpamBlock,
    IpamHandle,
    /// Host affinities (`/calico/ipam/v2/host/...`).
    BlockAffinity,
    IpamConfig,
}

/// One CRD type the store reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrdType {
    pub crd: CrdKind,
    pub layout: Layout,
}

impl CrdType {
    /// The prefix every key of this type starts with (for the IPAM configuration: its key).
    pub fn key_space(&self) -> String {
        match self.layout {
            Layout::Resource => format!("{KEY_ROOT}/{}/", self.crd.plural),
            Layout::IpamBlock => BLOCK_PREFIX.to_owned(),
            Layout::IpamHandle => HANDLE_PREFIX.to_owned(),
            Layout::BlockAffinity => HOST_PREFIX.to_owned(),
            Layout::IpamConfig => CONFIG_KEY.to_owned(),
        }
    }

    /// Whether some key of this type can start with `prefix`.
    pub fn covers(&self, prefix: &str) -> bool {
        let space = self.key_space();
        space.starts_with(prefix) || prefix.starts_with(&space)
    }
}

/// Every CRD type that holds keys, from the model's CRD table (`gingham_model::crd`).
/// `KEY_ROOT/blockaffinities/` holds nothing: BlockAffinity resources are computed from IPAM's
/// keys, and the `blockaffinities` CRD holds those keys.
pub fn crd_types() -> Vec<CrdType> {
    kdd_crds()
        .into_iter()
        .map(|crd| CrdType {
            crd,
            layout: match crd.plural {
                "ipamblocks" => Layout::IpamBlock,
                "ipamhandles" => Layout::IpamHandle,
                "ipamconfigs" => Layout::IpamConfig,
                "blockaffinities" => Layout::BlockAffinity,
                _ => Layout::Resource,
            },
        })
        .collect()
}

/// The CRD types whose keys may start with `prefix`.
pub fn types_for_prefix(prefix: &str) -> Vec<CrdType> {
    crd_types()
        .into_iter()
        .filter(|t| t.covers(prefix))
        .collect()
}

/// The object a key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub ty: CrdType,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{CRD_GROUP} ", self.ty.crd.plural)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// Which object holds `key`.
pub fn locate(key: &str) -> Result<ObjectRef, MapError> {
    let no = || MapError::NoCrd { key: key.into() };
    let bad = |message: &str| MapError::BadValue {
        key: key.into(),
        message: message.into(),
    };
    let types = crd_types();
    let find = |layout: Layout| {
        types
            .iter()
            .copied()
            .find(|t| t.layout == layout)
            .ok_or_else(no)
    };
    if key == CONFIG_KEY {
        return Ok(ObjectRef {
            ty: find(Layout::IpamConfig)?,
            namespace: None,
            name: IPAM_CONFIG_NAME.into(),
        });
    }
    if key.starts_with(BLOCK_PREFIX) {
        let cidr = stored::parse_block_key(key).ok_or_else(|| {
            bad("not a block key (/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26)")
        })?;
        return Ok(ObjectRef {
            ty: find(Layout::IpamBlock)?,
            namespace: None,
            name: cidr_to_name(&cidr),
        });
    }
    if key.starts_with(HOST_PREFIX) {
        let (node, cidr) = stored::parse_affinity_key(key).ok_or_else(|| {
            bad("not a host affinity key (/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26)")
        })?;
        return Ok(ObjectRef {
            ty: find(Layout::BlockAffinity)?,
            namespace: None,
            name: affinity_name(&node, &cidr),
        });
    }
    if let Some(id) = key.strip_prefix(HANDLE_PREFIX) {
        if id.is_empty() || id.contains('/') {
            return Err(bad("not a handle key (/calico/ipam/v2/handle/<id>)"));
        }
        return Ok(ObjectRef {
            ty: find(Layout::IpamHandle)?,
            namespace: None,
            name: id.to_ascii_lowercase(),
        });
    }
    let rest = key
        .strip_prefix(KEY_ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(no)?;
    let (plural, rest) = rest.split_once('/').ok_or_else(no)?;
    let ty = types
        .iter()
        .copied()
        .find(|t| t.layout == Layout::Resource && t.crd.plural == plural)
        .ok_or_else(no)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, name) = match (ty.crd.namespaced, parts.as_slice()) {
        (true, [ns, name]) if !ns.is_empty() && !name.is_empty() => {
            (Some((*ns).to_owned()), (*name).to_owned())
        }
        (false, [name]) if !name.is_empty() => (None, (*name).to_owned()),
        (true, _) => {
            return Err(bad(&format!(
                "a {} key is {KEY_ROOT}/{plural}/<namespace>/<name>",
                ty.crd.kind
            )));
        }
        (false, _) => {
            return Err(bad(&format!(
                "a {} key is {KEY_ROOT}/{plural}/<name>",
                ty.crd.kind
            )));
        }
    };
    Ok(ObjectRef {
        ty,
        namespace,
        name,
    })
}

/// Calico's `names.CIDRToName`: `10.244.0.0/26` → `10-244-0-0-26`, `fd00::/122` → `fd00---122`.
pub fn cidr_to_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// The longest object name Kubernetes takes.
const MAX_NAME: usize = 253;

/// Calico's BlockAffinity name: `<node>-<cidr name>`, and when that is too long the node name
/// cut short plus the first 11 hex digits of SHA-256 of `<node>+<cidr name>`.
pub fn affinity_name(node: &str, cidr: &IpNet) -> String {
    let cidr_name = cidr_to_name(cidr);
    let name = format!("{node}-{cidr_name}");
    if name.len() < MAX_NAME {
        return name;
    }
    let keep = (MAX_NAME - 1).saturating_sub(cidr_name.len() + 13);
    let mut cut = keep.min(node.len());
    while !node.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = sha2::Sha256::digest(format!("{node}+{cidr_name}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{cidr_name}-{}", &node[..cut], &hex[..11])
}

/// Calico's `ConvertUID`: the bits of every byte reversed, the version and variant bytes kept.
/// It is its own inverse. `None` when `uid` is not a UUID.
pub fn convert_uid(uid: &str) -> Option<String> {
    let hex: String = uid.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || uid.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let mut out = bytes.map(u8::reverse_bits);
    out[6] = bytes[6];
    out[8] = bytes[8];
    let h: String = out.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn is_ours(k: &str) -> bool {
    k.contains("projectcalico.org/") || k.contains("operator.tigera.io/")
}

/// The CRD object for `key` holding `value` (the bytes other backends store). No
/// `resourceVersion`: the caller sets it for a conditional write.
pub fn to_object(r: &ObjectRef, key: &str, value: &[u8]) -> Result<Value, MapError> {
    let bad = |message: String| MapError::BadValue {
        key: key.into(),
        message,
    };
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(r.name));
    if let Some(ns) = &r.namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(crd_api_version()));
    obj.insert("kind".into(), json!(r.ty.crd.kind));
    let spec = match r.ty.layout {
        Layout::Resource => {
            let v: Value = serde_json::from_slice(value)
                .map_err(|e| bad(format!("the value is not a JSON resource: {e}")))?;
            let Value::Object(v) = v else {
                return Err(bad("the value is not a JSON object".into()));
            };
            if let Some(kind) = v.get("kind").and_then(Value::as_str)
                && kind != r.ty.crd.kind
            {
                return Err(bad(format!(
                    "the value is a {kind}, the key holds a {}",
                    r.ty.crd.kind
                )));
            }
            let mut v3meta = match v.get("metadata") {
                Some(Value::Object(m)) => m.clone(),
                None | Some(Value::Null) => Map::new(),
                Some(_) => return Err(bad("metadata is not an object".into())),
            };
            if let Some(name) = v3meta.get("name").and_then(Value::as_str)
                && name != r.name
            {
                return Err(bad(format!(
                    "metadata.name is {name:?}, the key names {:?}",
                    r.name
                )));
            }
            // Kubernetes owns these; the key says the rest.
            for k in [
                "namespace",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                v3meta.remove(k);
            }
            if !NAMED_IN_ANNOTATION.contains(&r.ty.crd.kind) {
                v3meta.remove("name");
            }
            let mut labels = Map::new();
            if let Some(Value::Object(l)) = v3meta.get("labels") {
                labels.extend(
                    l.iter()
                        .filter(|(k, _)| is_ours(k))
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            let mut annotations = Map::new();
            if let Some(Value::Object(a)) = v3meta.get("annotations") {
                annotations.extend(
                    a.iter()
                        .filter(|(k, _)| is_ours(k))
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            annotations.insert(
                METADATA_ANNOTATION.into(),
                json!(Value::Object(v3meta).to_string()),
            );
            if !labels.is_empty() {
                metadata.insert("labels".into(), Value::Object(labels));
            }
            metadata.insert("annotations".into(), Value::Object(annotations));
            obj.insert("metadata".into(), Value::Object(metadata));
            for (k, val) in v {
                if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    obj.insert(k, val);
                }
            }
            return Ok(Value::Object(obj));
        }
        Layout::IpamBlock => {
            let b: AllocationBlock = serde_json::from_slice(value)
                .map_err(|e| bad(format!("the value is not an allocation block: {e}")))?;
            if stored::block_key(&b.cidr) != key {
                return Err(bad(format!("the block's cidr {} is not the key's", b.cidr)));
            }
            let mut spec = as_object(serde_json::to_value(&b).map_err(|e| bad(e.to_string()))?);
            rename(&mut spec, "affinity_claim_time", "affinityClaimTime");
            spec.entry("strictAffinity").or_insert(json!(false));
            spec
        }
        Layout::IpamHandle => {
            let h: IpamHandle = serde_json::from_slice(value)
                .map_err(|e| bad(format!("the value is not an IPAM handle: {e}")))?;
            let id = key.strip_prefix(HANDLE_PREFIX).unwrap_or(&r.name);
            let mut spec = Map::new();
            spec.insert("handleID".into(), json!(id));
            spec.extend(as_object(
                serde_json::to_value(&h).map_err(|e| bad(e.to_string()))?,
            ));
            spec
        }
        Layout::BlockAffinity => {
            let a = stored::BlockAffinity::from_bytes(value)
                .map_err(|e| bad(format!("the value is not a block affinity: {e}")))?;
            let (node, cidr) =
                stored::parse_affinity_key(key).ok_or_else(|| bad("not an affinity key".into()))?;
            let mut spec = Map::new();
            spec.insert(
                "state".into(),
                serde_json::to_value(a.state).map_err(|e| bad(e.to_string()))?,
            );
            spec.insert("node".into(), json!(node));
            spec.insert("type".into(), json!("host"));
            spec.insert("cidr".into(), json!(cidr.to_string()));
            spec.insert("deleted".into(), json!(a.deleted.to_string()));
            spec.extend(a.extra);
            let version = if matches!(cidr.addr(), IpAddr::V6(_)) {
                "6"
            } else {
                "4"
            };
            metadata.insert(
                "labels".into(),
                json!({LABEL_AFFINITY_TYPE: "host", LABEL_IP_VERSION: version}),
            );
            spec
        }
        Layout::IpamConfig => {
            let c: StoredConfig = if value.iter().all(u8::is_ascii_whitespace) {
                StoredConfig::default()
            } else {
                serde_json::from_slice(value)
                    .map_err(|e| bad(format!("the value is not an IPAM configuration: {e}")))?
            };
            let mut spec = Map::new();
            spec.insert("strictAffinity".into(), json!(c.strict_affinity));
            spec.insert("autoAllocateBlocks".into(), json!(c.auto_allocate_blocks));
            if c.max_blocks_per_host != 0 {
                spec.insert("maxBlocksPerHost".into(), json!(c.max_blocks_per_host));
            }
            if c.ip_cooldown_seconds != 0 {
                spec.insert("ipCooldownSeconds".into(), json!(c.ip_cooldown_seconds));
            }
            spec.extend(c.extra);
            spec
        }
    };
    obj.insert("metadata".into(), Value::Object(metadata));
    obj.insert("spec".into(), Value::Object(spec));
    Ok(Value::Object(obj))
}

fn as_object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn rename(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.into(), v);
    }
}

/// One stored key and value read from an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub key: String,
    pub value: Vec<u8>,
}

/// The key and value an object of `ty` holds; `None` for objects no key represents (a
/// BlockAffinity of another type than `host`).
pub fn from_object(ty: &CrdType, obj: &Value) -> Result<Option<Decoded>, MapError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let bad = |message: String| MapError::BadObject {
        plural: ty.crd.plural.into(),
        name: name.clone(),
        message,
    };
    if name.is_empty() {
        return Err(bad("the object has no metadata.name".into()));
    }
    let spec = || match &obj["spec"] {
        Value::Object(m) => Ok(m.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(bad("spec is not an object".into())),
    };
    let encode = |v: &Value| serde_json::to_vec(v).map_err(|e| bad(e.to_string()));
    match ty.layout {
        Layout::Resource => {
            let k8s_meta = obj["metadata"].as_object().cloned().unwrap_or_default();
            let namespace = k8s_meta
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let key = match (&namespace, ty.crd.namespaced) {
                (Some(ns), true) => format!("{KEY_ROOT}/{}/{ns}/{name}", ty.crd.plural),
                (None, true) => return Err(bad("a namespaced object has no namespace".into())),
                (_, false) => format!("{KEY_ROOT}/{}/{name}", ty.crd.plural),
            };
            let mut annotations = k8s_meta
                .get("annotations")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut v3meta: Map<String, Value> = match annotations.remove(METADATA_ANNOTATION) {
                Some(Value::String(s)) => serde_json::from_str(&s).map_err(|e| {
                    bad(format!(
                        "annotation {METADATA_ANNOTATION} is not JSON metadata: {e}"
                    ))
                })?,
                Some(_) => {
                    return Err(bad(format!(
                        "annotation {METADATA_ANNOTATION} is not a string"
                    )));
                }
                None => Map::new(),
            };
            // Labels and annotations: the CRD's own, then the v3 ones (Calico's merge order).
            let mut labels = k8s_meta
                .get("labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if let Some(Value::Object(l)) = v3meta.remove("labels") {
                labels.extend(l);
            }
            if let Some(Value::Object(a)) = v3meta.remove("annotations") {
                annotations.extend(a);
            }
            let mut meta = Map::new();
            let v3name = v3meta
                .remove("name")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| name.clone());
            meta.insert("name".into(), json!(v3name));
            if let (Some(ns), true) = (&namespace, ty.crd.namespaced) {
                meta.insert("namespace".into(), json!(ns));
            }
            if let Some(uid) = k8s_meta.get("uid").and_then(Value::as_str) {
                let uid = convert_uid(uid).unwrap_or_else(|| uid.to_owned());
                meta.insert("uid".into(), json!(uid));
            }
            if let Some(ts) = k8s_meta.get("creationTimestamp").filter(|v| !v.is_null()) {
                meta.insert("creationTimestamp".into(), ts.clone());
            }
            for k in ["namespace", "resourceVersion", "uid", "creationTimestamp"] {
                v3meta.remove(k);
            }
            meta.extend(v3meta);
            if !labels.is_empty() {
                meta.insert("labels".into(), Value::Object(labels));
            }
            if !annotations.is_empty() {
                meta.insert("annotations".into(), Value::Object(annotations));
            }
            let mut v = Map::new();
            v.insert("apiVersion".into(), json!(API_VERSION));
            v.insert("kind".into(), json!(ty.crd.kind));
            v.insert("metadata".into(), Value::Object(meta));
            if let Some(o) = obj.as_object() {
                for (k, val) in o {
                    if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        v.insert(k.clone(), val.clone());
                    }
                }
            }
            Ok(Some(Decoded {
                key,
                value: encode(&Value::Object(v))?,
            }))
        }
        Layout::IpamBlock => {
            let mut spec = spec()?;
            rename(&mut spec, "affinityClaimTime", "affinity_claim_time");
            if spec.get("strictAffinity") == Some(&json!(false)) {
                spec.remove("strictAffinity");
            }
            let b: AllocationBlock = serde_json::from_value(Value::Object(spec))
                .map_err(|e| bad(format!("spec is not an allocation block: {e}")))?;
            Ok(Some(Decoded {
                key: stored::block_key(&b.cidr),
                value: stored::to_json(&b),
            }))
        }
        Layout::IpamHandle => {
            let mut spec = spec()?;
            let id = match spec.remove("handleID") {
                Some(Value::String(id)) if !id.is_empty() => id,
                _ => name.clone(),
            };
            let h: IpamHandle = serde_json::from_value(Value::Object(spec))
                .map_err(|e| bad(format!("spec is not an IPAM handle: {e}")))?;
            Ok(Some(Decoded {
                key: stored::handle_key(&id),
                value: stored::to_json(&h),
            }))
        }
        Layout::BlockAffinity => {
            let mut spec = spec()?;
            let ty_field = spec.remove("type");
            if !matches!(
                ty_field.as_ref().and_then(Value::as_str),
                None | Some("" | "host")
            ) {
                return Ok(None);
            }
            let node = match spec.remove("node") {
                Some(Value::String(n)) if !n.is_empty() => n,
                _ => return Err(bad("spec.node is missing".into())),
            };
            let cidr: IpNet = spec
                .remove("cidr")
                .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| bad("spec.cidr is not a CIDR".into()))?;
            let deleted = match spec.remove("deleted") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(Value::String(s)) if s.is_empty() => false,
                Some(Value::String(s)) => s
                    .parse()
                    .map_err(|_| bad(format!("spec.deleted {s:?} is not true or false")))?,
                Some(other) => return Err(bad(format!("spec.deleted {other} is not a bool"))),
            };
            let mut v = Map::new();
            v.insert(
                "state".into(),
                spec.remove("state").unwrap_or_else(|| json!("")),
            );
            v.insert("deleted".into(), json!(deleted));
            v.extend(spec);
            let a: stored::BlockAffinity = serde_json::from_value(Value::Object(v))
                .map_err(|e| bad(format!("spec is not a block affinity: {e}")))?;
            Ok(Some(Decoded {
                key: stored::affinity_key(&node, &cidr.trunc()),
                value: stored::to_json(&a),
            }))
        }
        Layout::IpamConfig => {
            if name != IPAM_CONFIG_NAME {
                return Ok(None);
            }
            let mut spec = spec()?;
            let flag = |spec: &mut Map<String, Value>, k: &str| {
                spec.remove(k).and_then(|v| v.as_bool()).unwrap_or(false)
            };
            let int = |spec: &mut Map<String, Value>, k: &str| {
                spec.remove(k).and_then(|v| v.as_i64()).unwrap_or(0)
            };
            let c = StoredConfig {
                strict_affinity: flag(&mut spec, "strictAffinity"),
                auto_allocate_blocks: flag(&mut spec, "autoAllocateBlocks"),
                max_blocks_per_host: int(&mut spec, "maxBlocksPerHost"),
                ip_cooldown_seconds: int(&mut spec, "ipCooldownSeconds"),
                extra: spec,
            };
            Ok(Some(Decoded {
                key: CONFIG_KEY.into(),
                value: stored::to_json(&c),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_model::kind::Kind;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// What the API server adds to a created object.
    fn as_created(mut obj: Value) -> Value {
        let m = obj["metadata"].as_object_mut().unwrap();
        m.insert("uid".into(), json!("6c6f2f3e-1a2b-4c3d-8e9f-0123456789ab"));
        m.insert("creationTimestamp".into(), json!("2026-01-02T03:04:05Z"));
        m.insert("resourceVersion".into(), json!("42"));
        m.insert("generation".into(), json!(1));
        obj
    }

    fn round_trip(key: &str, value: &Value) -> (Value, Value) {
        let r = locate(key).unwrap();
        let obj = to_object(&r, key, &serde_json::to_vec(value).unwrap()).unwrap();
        let d = from_object(&r.ty, &as_created(obj.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(d.key, key);
        (obj, serde_json::from_slice(&d.value).unwrap())
    }

    #[test]
    fn keys_name_calicos_objects() {
        let cases = [
            (
                Kind::NetworkPolicy.key(Some("ns1"), "default.allow"),
                "networkpolicies",
                Some("ns1"),
                "default.allow",
            ),
            (Kind::IpPool.key(None, "pool-a"), "ippools", None, "pool-a"),
            (
                stored::block_key(&net("10.244.0.64/26")),
                "ipamblocks",
                None,
                "10-244-0-64-26",
            ),
            (
                stored::block_key(&net("fd00:10:244::/122")),
                "ipamblocks",
                None,
                "fd00-10-244---122",
            ),
            (
                stored::affinity_key("node-1", &net("10.244.0.64/26")),
                "blockaffinities",
                None,
                "node-1-10-244-0-64-26",
            ),
            (
                stored::handle_key("k8s-pod-network.ABC"),
                "ipamhandles",
                None,
                "k8s-pod-network.abc",
            ),
            (CONFIG_KEY.into(), "ipamconfigs", None, "default"),
        ];
        for (key, plural, ns, name) in cases {
            let r = locate(&key).unwrap();
            assert_eq!(
                (r.ty.crd.plural, r.namespace.as_deref(), r.name.as_str()),
                (plural, ns, name),
                "{key}"
            );
        }
        for bad in [
            "/gingham/atomic/intent",
            "/calico/resources/v3/projectcalico.org/nosuchkinds/x",
            "/calico/resources/v3/projectcalico.org/blockaffinities/x",
        ] {
            let e = locate(bad).unwrap_err();
            assert!(matches!(e, MapError::NoCrd { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = locate(&format!("{KEY_ROOT}/networkpolicies/only-a-name")).unwrap_err();
        assert!(e.to_string().contains("<namespace>/<name>"), "{e}");
    }

    #[test]
    fn prefixes_cover_their_types() {
        let plurals =
            |p: &str| -> Vec<&str> { types_for_prefix(p).iter().map(|t| t.crd.plural).collect() };
        assert_eq!(plurals("/calico/ipam/v2/host/n1/"), ["blockaffinities"]);
        assert_eq!(
            plurals("/calico/ipam/v2/"),
            [
                "blockaffinities",
                "ipamblocks",
                "ipamconfigs",
                "ipamhandles"
            ]
        );
        assert_eq!(
            plurals(&Kind::NetworkPolicy.key_prefix(Some("a"))),
            ["networkpolicies"]
        );
        assert!(plurals(&format!("{KEY_ROOT}/")).contains(&"tiers"));
        assert!(plurals("/gingham/").is_empty());
        // Every model CRD but IPAM's own lives under KEY_ROOT.
        assert_eq!(crd_types().len(), kdd_crds().len());
    }

    #[test]
    fn long_affinity_names_are_cut_and_hashed() {
        let node = "n".repeat(260);
        let name = affinity_name(&node, &net("10.0.0.0/26"));
        assert!(name.len() < MAX_NAME, "{}", name.len());
        assert!(name.contains("-10-0-0-0-26-"), "{name}");
        assert_ne!(name, affinity_name(&"n".repeat(261), &net("10.0.0.0/26")));
    }

    #[test]
    fn uid_conversion_is_calicos() {
        let uid = "6c6f2f3e-1a2b-4c3d-8e9f-0123456789ab";
        let c = convert_uid(uid).unwrap();
        // 0x6c = 0110_1100 reversed is 0011_0110 = 0x36; bytes 6 (0x4c) and 8 (0x8e) kept.
        assert!(c.starts_with("36f6f47c-"), "{c}");
        assert_eq!(&c[14..16], "4c");
        assert_eq!(&c[19..21], "8e");
        assert_eq!(convert_uid(&c).unwrap(), uid);
        assert_eq!(convert_uid("not-a-uid"), None);
    }

    #[test]
    fn resources_round_trip_with_calicos_metadata_layout() {
        let key = Kind::NetworkPolicy.key(Some("ns1"), "allow-dns");
        let value = json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-dns", "namespace": "ns1", "uid": "old",
                "creationTimestamp": "2020-01-01T00:00:00Z",
                "labels": {"app": "x", "projectcalico.org/tier": "default"},
                "annotations": {"note": "n"}},
            "spec": {"tier": "default", "order": 10, "selector": "all()", "types": ["Egress"]}});
        let (obj, back) = round_trip(&key, &value);
        assert_eq!(obj["apiVersion"], "crd.projectcalico.org/v1");
        assert_eq!(obj["metadata"]["namespace"], "ns1");
        assert_eq!(
            obj["metadata"]["labels"],
            json!({"projectcalico.org/tier": "default"})
        );
        let inner: Value = serde_json::from_str(
            obj["metadata"]["annotations"][METADATA_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            inner,
            json!({"name": "allow-dns", "labels": {"app": "x", "projectcalico.org/tier": "default"},
                "annotations": {"note": "n"}})
        );
        assert_eq!(obj["spec"], value["spec"]);
        let mut want = value.clone();
        want["metadata"]["uid"] = json!(convert_uid("6c6f2f3e-1a2b-4c3d-8e9f-0123456789ab"));
        want["metadata"]["creationTimestamp"] = json!("2026-01-02T03:04:05Z");
        assert_eq!(back, want);

        // A cluster-wide kind keeps no name in the annotation; a status travels too.
        let key = Kind::IpPool.key(None, "p");
        let value = json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}, "status": {"x": 1}});
        let (obj, back) = round_trip(&key, &value);
        assert_eq!(obj["metadata"]["annotations"][METADATA_ANNOTATION], "{}");
        assert_eq!(obj["status"], json!({"x": 1}));
        assert_eq!(back["spec"], value["spec"]);
        assert_eq!(back["status"], value["status"]);

        // An object written by kubectl, without the annotation, reads as it is.
        let r = locate(&key).unwrap();
        let plain = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"cidr": "10.1.0.0/16"}});
        let d = from_object(&r.ty, &plain).unwrap().unwrap();
        let v: Value = serde_json::from_slice(&d.value).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"cidr": "10.1.0.0/16"}})
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let key = Kind::IpPool.key(None, "p");
        let r = locate(&key).unwrap();
        for (value, want) in [
            (&b"not json"[..], "not a JSON resource"),
            (br#"{"kind":"Tier","metadata":{"name":"p"}}"#, "is a Tier"),
            (
                br#"{"kind":"IPPool","metadata":{"name":"q"}}"#,
                "metadata.name",
            ),
        ] {
            let e = to_object(&r, &key, value).unwrap_err().to_string();
            assert!(e.contains(&key) && e.contains(want), "{e}");
        }
    }

    #[test]
    fn ipam_objects_round_trip_in_calicos_layout() {
        // A block as gingham_ipam writes it.
        let cidr = net("10.244.0.0/30");
        let block = json!({"cidr": "10.244.0.0/30", "affinity": "host:n1",
            "affinity_claim_time": "2026-01-01T00:00:00Z",
            "allocations": [0, null, null, null], "unallocated": [1, 2, 3],
            "attributes": [{"handle_id": "k8s-pod-network.x", "secondary": {"node": "n1"}}],
            "sequenceNumber": 7, "sequenceNumberForAllocation": {"0": 7}, "deleted": false});
        let (obj, back) = round_trip(&stored::block_key(&cidr), &block);
        assert_eq!(obj["kind"], "IPAMBlock");
        assert_eq!(obj["metadata"]["name"], "10-244-0-0-30");
        assert_eq!(obj["spec"]["affinityClaimTime"], "2026-01-01T00:00:00Z");
        assert_eq!(obj["spec"]["strictAffinity"], false);
        assert_eq!(
            obj["spec"]["attributes"][0]["handle_id"],
            "k8s-pod-network.x"
        );
        assert_eq!(back, block);

        let handle = json!({"block": {"10.244.0.0/30": 1}, "deleted": false});
        let (obj, back) = round_trip(&stored::handle_key("k8s-pod-network.X"), &handle);
        assert_eq!(
            obj["spec"],
            json!({"handleID": "k8s-pod-network.X", "block": {"10.244.0.0/30": 1}, "deleted": false})
        );
        assert_eq!(back, handle);

        let aff = json!({"state": "confirmed", "deleted": false});
        let (obj, back) = round_trip(&stored::affinity_key("n1", &net("fd00::/122")), &aff);
        assert_eq!(obj["metadata"]["name"], "n1-fd00---122");
        assert_eq!(
            obj["spec"],
            json!({"state": "confirmed", "node": "n1", "type": "host", "cidr": "fd00::/122", "deleted": "false"})
        );
        assert_eq!(obj["metadata"]["labels"][LABEL_IP_VERSION], "6");
        assert_eq!(back, aff);

        let cfg = json!({"strict_affinity": true, "maxBlocksPerHost": 4});
        let (obj, back) = round_trip(CONFIG_KEY, &cfg);
        assert_eq!(
            obj["spec"],
            json!({"strictAffinity": true, "autoAllocateBlocks": false, "maxBlocksPerHost": 4})
        );
        assert_eq!(back, cfg);
    }
}
