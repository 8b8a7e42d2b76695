//! The requests: routing, get, list, create, update, patch and delete over the datastore. Every
//! call here is synchronous (the datastore is); the HTTP layer runs them on blocking threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use gingham_datastore::{Compare, Datastore, KeyValue, Op, Txn, TxnOutcome};
use serde_json::{Map, Value, json};

use crate::discovery;
use crate::patch;
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::typed;
use crate::watch::{WatchPlan, WatchStart};

/// The namespaces a cluster starts with.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The annotation kubectl keeps client-side apply's last configuration in (set by kubectl; the
/// server stores it like any annotation).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// kube-apiserver's limit on the total size of an object's annotations (which is why large CRDs
/// need `kubectl apply --server-side` or `kubectl create`: the last-applied annotation).
pub const MAX_ANNOTATIONS_SIZE: usize = 256 * 1024;

/// How many times a write without a client precondition is retried after losing a race.
const WRITE_RETRIES: usize = 16;

/// One HTTP request, reduced to what the API needs.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub accept: String,
    pub body: Vec<u8>,
}

impl Request {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }
}

/// What to send back.
pub enum Reply {
    Json(u16, Value),
    Bytes(u16, &'static str, Vec<u8>),
    Watch(Box<WatchPlan>),
}

pub struct Api {
    pub store: Arc<dyn Datastore>,
    /// `host:port` the server is reached at (for `/api`'s serverAddressByClientCIDRs).
    pub address: String,
    /// Bumped whenever a CRD may have changed (by this server's writes, and by a watch of the
    /// CRDs for writes of other servers on the same datastore).
    pub crd_generation: Arc<AtomicU64>,
    /// The resource table and the CRD generation it was read at.
    cache: Mutex<Option<(u64, Arc<Vec<Resource>>)>>,
}

/// Where a resource request points.
struct Target {
    res: Resource,
    /// `fieldValidation=Strict`: fields a built-in kind does not have are refused.
    strict: bool,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

/// A DNS-1123 subdomain (most names) or label (namespaces).
fn name_problem(name: &str, label_only: bool) -> Option<String> {
    let max = if label_only { 63 } else { 253 };
    let ok_chars = name.chars().all(|c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label_only && c == '.')
    });
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.is_empty() {
        return Some("Required value: name or generateName is required".into());
    }
    if name.len() > max || !ok_chars || !ends_ok {
        let what = if label_only {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        return Some(format!(
            "Invalid value: \"{name}\": {what} (at most {max} characters)"
        ));
    }
    None
}

fn label_problem(labels: &Value) -> Option<(String, String)> {
    let m = labels.as_object()?;
    for (k, v) in m {
        let Some(v) = v.as_str() else {
            return Some((
                format!("metadata.labels[{k}]"),
                "Invalid value: label values must be strings".into(),
            ));
        };
        let (prefix, name) = match k.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok || prefix.is_some_and(|p| name_problem(p, false).is_some()) {
            return Some((
                "metadata.labels".into(),
                format!(
                    "Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters), with an optional DNS subdomain prefix and '/'"
                ),
            ));
        }
        let value_ok = v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && (v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric())));
        if !value_ok {
            return Some((
                "metadata.labels".to_owned(),
                format!(
                    "Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)"
                ),
            ));
        }
    }
    None
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Parses a request body as JSON, or YAML for apply patches.
fn parse_body(body: &[u8], yaml_ok: bool) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if yaml_ok => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text).map_err(|y| {
                ApiError::bad_request(format!(
                    "the request body is neither JSON ({e}) nor YAML ({y})"
                ))
            })
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

impl Api {
    pub fn new(store: Arc<dyn Datastore>, address: String) -> Self {
        Self {
            store,
            address,
            crd_generation: Arc::new(AtomicU64::new(0)),
            cache: Mutex::new(None),
        }
    }

    /// Creates the namespaces every cluster has, if missing.
    pub fn bootstrap(&self) -> Result<(), ApiError> {
        let ns = resources::builtins()
            .into_iter()
            .find(|r| r.plural == "namespaces")
            .expect("namespaces are built in");
        for name in INITIAL_NAMESPACES {
            if self.store.get(&ns.key(None, name))?.is_none() {
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
                match self.create(&ns, None, body, false, true) {
                    Ok(_) => {}
                    Err(e) if e.reason == "AlreadyExists" => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Every served resource: the built-in ones and those of stored CRDs (read again only
    /// when a CRD may have changed).
    pub fn resources(&self) -> Result<Arc<Vec<Resource>>, ApiError> {
        let generation = self.crd_generation.load(Ordering::SeqCst);
        let lock = || self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, all)) = lock().as_ref()
            && *g == generation
        {
            return Ok(all.clone());
        }
        let all = Arc::new(self.read_resources()?);
        *lock() = Some((generation, all.clone()));
        Ok(all)
    }

    fn read_resources(&self) -> Result<Vec<Resource>, ApiError> {
        let mut all = resources::builtins();
        let crds = self.store.list(&resources::crd_resource().prefix())?;
        for kv in crds.kvs {
            if let Ok(crd) = serde_json::from_slice::<Value>(&kv.value) {
                for r in resources::from_crd(&crd) {
                    if !all.iter().any(|a| {
                        a.group == r.group && a.version == r.version && a.plural == r.plural
                    }) {
                        all.push(r);
                    }
                }
            }
        }
        Ok(all)
    }

    pub fn handle(&self, req: &Request) -> Result<Reply, ApiError> {
        let reply = self.route(req);
        if req.method != "GET" && req.path.contains("/customresourcedefinitions") {
            // Whatever happened, the next request reads the CRDs again.
            self.crd_generation.fetch_add(1, Ordering::SeqCst);
        }
        reply
    }

    fn route(&self, req: &Request) -> Result<Reply, ApiError> {
        let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            [] => Ok(Reply::Json(200, discovery::root_paths(&self.resources()?))),
            ["version"] => Ok(Reply::Json(200, discovery::version())),
            ["healthz"] | ["livez"] | ["readyz"] => {
                Ok(Reply::Bytes(200, "text/plain", b"ok".to_vec()))
            }
            ["api"] => Ok(Reply::Json(200, discovery::api_versions(&self.address))),
            ["apis"] => Ok(Reply::Json(200, discovery::group_list(&self.resources()?))),
            ["api", "v1"] => Ok(Reply::Json(
                200,
                discovery::resource_list("", "v1", &self.resources()?)?,
            )),
            ["apis", group] => Ok(Reply::Json(
                200,
                discovery::group(group, &self.resources()?)?,
            )),
            ["apis", group, version] => Ok(Reply::Json(
                200,
                discovery::resource_list(group, version, &self.resources()?)?,
            )),
            ["openapi", "v2"] => Ok(Reply::Bytes(
                200,
                discovery::OPENAPI_V2_PROTOBUF,
                discovery::openapi_v2(),
            )),
            ["openapi", "v3"] => Ok(Reply::Json(
                200,
                discovery::openapi_v3_root(&self.resources()?),
            )),
            ["openapi", "v3", rest @ ..] => Ok(Reply::Json(
                200,
                discovery::openapi_v3_group_version(&rest.join("/"), &self.resources()?)?,
            )),
            ["api", "v1", rest @ ..] => self.resource_request(req, "", "v1", rest),
            ["apis", group, version, rest @ ..] => self.resource_request(req, group, version, rest),
            _ => Err(ApiError::no_route()),
        }
    }

    fn resource_request(
        &self,
        req: &Request,
        group: &str,
        version: &str,
        rest: &[&str],
    ) -> Result<Reply, ApiError> {
        let (namespace, rest) = match rest {
            ["namespaces", ns, r, ..] if !matches!(*r, "status" | "finalize") => {
                (Some((*ns).to_owned()), &rest[2..])
            }
            _ => (None, rest),
        };
        let (plural, name, sub) = match rest {
            [p] => (*p, None, None),
            [p, n] => (*p, Some((*n).to_owned()), None),
            [p, n, s] => (*p, Some((*n).to_owned()), Some(*s)),
            _ => return Err(ApiError::no_route()),
        };
        let res = self
            .resources()?
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
            .ok_or_else(ApiError::no_route)?;
        if namespace.is_some() && !res.namespaced {
            return Err(ApiError::no_route());
        }
        let status = match sub {
            None => false,
            Some("status") if res.status => true,
            Some(_) => return Err(ApiError::no_route()),
        };
        let t = Target {
            res,
            strict: req.q("fieldValidation") == Some("Strict"),
            namespace,
            name,
            status,
        };
        let dry_run = req.q("dryRun").is_some();
        if !req.body.is_empty()
            && req
                .content_type
                .starts_with("application/vnd.kubernetes.protobuf")
        {
            return Err(ApiError::unsupported_media_type(
                "the body is protobuf, which this Kubernetes API double does not read: send JSON or YAML (kubectl's typed generators such as `kubectl create namespace` or `kubectl run` send protobuf; `kubectl apply -f` and `kubectl create -f` send JSON)",
            ));
        }
        match (req.method.as_str(), &t.name) {
            ("GET", None) if req.flag("watch") => self.watch_plan(&t, req),
            ("GET", None) => self.list(&t, req).map(|v| Reply::Json(200, v)),
            ("GET", Some(name)) => {
                let kv = self.get_kv(&t, name)?;
                let obj = self.decorate(&t.res, &kv)?;
                let view = discovery::View::from_accept(&req.accept);
                if view != discovery::View::Full {
                    return Ok(Reply::Json(200, view.object(&t.res, kv.mod_revision, obj)));
                }
                Ok(Reply::Json(200, obj))
            }
            ("POST", None) => {
                let body = parse_body(&req.body, false)?;
                if t.res.namespaced && t.namespace.is_none() {
                    return Err(ApiError::no_route());
                }
                self.create(&t.res, t.namespace.as_deref(), body, dry_run, t.strict)
                    .map(|v| Reply::Json(201, v))
            }
            ("PUT", Some(name)) => {
                let body = parse_body(&req.body, false)?;
                self.update(&t, name, body, dry_run)
                    .map(|v| Reply::Json(200, v))
            }
            ("PATCH", Some(name)) => self.patch(&t, name, req, dry_run),
            ("DELETE", Some(name)) => self
                .delete(&t, name, &req.body, dry_run)
                .map(|v| Reply::Json(200, deleted_reply(&t.res, v))),
            ("DELETE", None) => self
                .delete_collection(&t, req, dry_run)
                .map(|v| Reply::Json(200, v)),
            (m, _) => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m} {})",
                req.path
            ))),
        }
    }

    fn get_kv(&self, t: &Target, name: &str) -> Result<KeyValue, ApiError> {
        self.store
            .get(&t.res.key(t.namespace.as_deref(), name))?
            .ok_or_else(|| ApiError::not_found(&t.res, name))
    }

    /// The stored object as served: with its resourceVersion and the requested apiVersion.
    pub fn decorate(&self, res: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
        decorate(res, kv)
    }

    fn list(&self, t: &Target, req: &Request) -> Result<Value, ApiError> {
        let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), &t.res)
            .map_err(ApiError::bad_request)?;
        let limit: Option<usize> = match req.q("limit") {
            None => None,
            Some(l) => match l.parse::<usize>() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "limit {l:?} is not a non-negative integer"
                    )));
                }
            },
        };
        let token = match req.q("continue") {
            None => None,
            Some(c) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("continue key {c:?} is not valid"))
                    })?,
            ),
        };
        let prefix = t.res.list_prefix(t.namespace.as_deref());
        let listing = self.store.list(&prefix)?;
        let rv = token.as_ref().map(|t| t.rv).unwrap_or(listing.revision);
        let mut matched = Vec::new();
        for kv in &listing.kvs {
            if let Some(tok) = &token
                && kv.key.as_str() <= tok.start.as_str()
            {
                continue;
            }
            let obj = decorate(&t.res, kv)?;
            if labels.matches(&obj["metadata"]["labels"]) && fields.matches(&obj) {
                matched.push((kv.key.clone(), obj));
            }
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(limit) = limit
            && matched.len() > limit
        {
            let remaining = matched.len() - limit;
            matched.truncate(limit);
            let last = matched.last().map(|(k, _)| k.clone()).unwrap_or_default();
            let tok = serde_json::to_vec(&ContinueToken { rv, start: last })
                .map_err(|e| ApiError::internal(e.to_string()))?;
            metadata["continue"] =
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok));
            metadata["remainingItemCount"] = json!(remaining);
        }
        let items: Vec<Value> = matched.into_iter().map(|(_, o)| o).collect();
        match discovery::View::from_accept(&req.accept) {
            discovery::View::Full => {}
            discovery::View::Table => return Ok(discovery::table(&t.res, rv, &items, &metadata)),
            discovery::View::Metadata => {
                let items: Vec<Value> = items.iter().map(discovery::partial).collect();
                return Ok(json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                    "items": items,
                }));
            }
        }
        Ok(json!({
            "kind": format!("{}List", t.res.kind),
            "apiVersion": t.res.api_version(),
            "metadata": metadata,
            "items": list_items(&t.res, items),
        }))
    }

    fn watch_plan(&self, t: &Target, req: &Request) -> Result<Reply, ApiError> {
        let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), &t.res)
            .map_err(ApiError::bad_request)?;
        let send_initial = req.flag("sendInitialEvents");
        let start = match req.q("resourceVersion") {
            None | Some("0") => WatchStart::Initial,
            Some(rv) => {
                let rv: i64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("resourceVersion {rv:?} is not a number"))
                })?;
                if send_initial {
                    WatchStart::Initial
                } else {
                    WatchStart::After(rv)
                }
            }
        };
        let timeout = match req.q("timeoutSeconds") {
            Some(s) => Duration::from_secs(s.parse().map_err(|_| {
                ApiError::bad_request(format!("timeoutSeconds {s:?} is not a number"))
            })?),
            None => Duration::from_secs(1800),
        };
        Ok(Reply::Watch(Box::new(WatchPlan {
            res: t.res.clone(),
            prefix: t.res.list_prefix(t.namespace.as_deref()),
            labels,
            fields,
            name: t.name.clone(),
            start,
            bookmarks: req.flag("allowWatchBookmarks"),
            initial_end_bookmark: send_initial,
            view: discovery::View::from_accept(&req.accept),
            timeout,
        })))
    }

    /// Creates an object (POST).
    pub fn create(
        &self,
        res: &Resource,
        namespace: Option<&str>,
        mut obj: Value,
        dry_run: bool,
        strict: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "the request body is not a {} object",
                res.kind
            )));
        }
        check_type(res, &mut obj)?;
        let m = meta(&mut obj);
        let name = match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_owned(),
            None => match m.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => format!("{g}{}", random_suffix()),
                _ => {
                    return Err(ApiError::invalid(
                        res,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        m.insert("name".into(), json!(name));
        if res.namespaced {
            let ns = namespace.expect("namespaced creates name a namespace");
            if let Some(given) = m.get("namespace").and_then(Value::as_str)
                && !given.is_empty()
                && given != ns
            {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
                )));
            }
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        validate(res, &name, &obj)?;
        prepare_create(res, &mut obj)?;
        typed::check(res, &mut obj, strict)?;
        fold_string_data(res, &mut obj);
        if let Some(ns) = namespace
            && res.namespaced
        {
            let ns_res = namespaces();
            if self.store.get(&ns_res.key(None, ns))?.is_none() {
                return Err(ApiError::not_found(&ns_res, ns));
            }
        }
        let key = res.key(namespace, &name);
        if dry_run {
            if self.store.get(&key)?.is_some() {
                return Err(ApiError::already_exists(res, &name));
            }
            return Ok(obj);
        }
        let value = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut txn = Txn::new()
            .when(Compare::Absent { key: key.clone() })
            .then(Op::Put {
                key: key.clone(),
                value,
            });
        if res.plural == "namespaces" && !res.custom {
            // The service account controller's share: every namespace has `default`.
            let sa_res = resources::builtins()
                .into_iter()
                .find(|r| r.plural == "serviceaccounts")
                .expect("serviceaccounts are built in");
            let sa_key = sa_res.key(Some(&name), "default");
            let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name}});
            let sm = meta(&mut sa);
            sm.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            sm.insert("creationTimestamp".into(), json!(now()));
            txn = txn
                .when(Compare::Absent {
                    key: sa_key.clone(),
                })
                .then(Op::Put {
                    key: sa_key,
                    value: serde_json::to_vec(&sa)
                        .map_err(|e| ApiError::internal(e.to_string()))?,
                });
        }
        match self.store.txn(&txn)? {
            TxnOutcome::Committed { revision } => {
                meta(&mut obj).insert("resourceVersion".into(), json!(revision.to_string()));
                set_api_version(res, &mut obj);
                tracing::debug!(resource = %res.qualified(), %name, revision, "created");
                Ok(obj)
            }
            TxnOutcome::Failed { failed_keys } if failed_keys.contains(&key) => {
                Err(ApiError::already_exists(res, &name))
            }
            TxnOutcome::Failed { .. } => {
                // A leftover `default` service account: create the namespace without it.
                let txn = Txn::new()
                    .when(Compare::Absent { key: key.clone() })
                    .then(Op::Put {
                        key: key.clone(),
                        value: serde_json::to_vec(&obj)
                            .map_err(|e| ApiError::internal(e.to_string()))?,
                    });
                match self.store.txn(&txn)? {
                    TxnOutcome::Committed { revision } => {
                        meta(&mut obj)
                            .insert("resourceVersion".into(), json!(revision.to_string()));
                        Ok(obj)
                    }
                    TxnOutcome::Failed { .. } => Err(ApiError::already_exists(res, &name)),
                }
            }
        }
    }

    fn update(
        &self,
        t: &Target,
        name: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "the request body is not a {} object",
                t.res.kind
            )));
        }
        check_type(&t.res, &mut obj)?;
        let given_name = str_at(&obj, &["metadata", "name"]).unwrap_or("");
        if given_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given_name}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(ns), Some(given)) = (
            t.namespace.as_deref(),
            str_at(&obj, &["metadata", "namespace"]),
        ) && !given.is_empty()
            && given != ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
            )));
        }
        let precondition: Option<i64> = match str_at(&obj, &["metadata", "resourceVersion"]) {
            None | Some("") => None,
            Some(rv) => Some(rv.parse().map_err(|_| {
                ApiError::bad_request(format!("metadata.resourceVersion {rv:?} is not valid"))
            })?),
        };
        // Custom resources and CRDs do not allow unconditional updates (their strategies'
        // AllowUnconditionalUpdate is false); the built-in kinds here do.
        let unconditional_ok = !t.res.custom && t.res.plural != "customresourcedefinitions";
        if precondition.is_none() && !unconditional_ok {
            return Err(ApiError::invalid(
                &t.res,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        self.write_loop(t, name, precondition, dry_run, |_cur| Ok(obj.clone()))
    }

    /// Reads the current object, computes the new one and writes it if unchanged since the read
    /// (retrying a lost race unless the client gave a resourceVersion).
    fn write_loop(
        &self,
        t: &Target,
        name: &str,
        precondition: Option<i64>,
        dry_run: bool,
        mut compute: impl FnMut(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let key = t.res.key(t.namespace.as_deref(), name);
        for _ in 0..WRITE_RETRIES {
            let cur = self
                .store
                .get(&key)?
                .ok_or_else(|| ApiError::not_found(&t.res, name))?;
            if let Some(p) = precondition
                && p != cur.mod_revision
            {
                return Err(ApiError::stale(&t.res, name));
            }
            let cur_obj = decorate(&t.res, &cur)?;
            let new = compute(&cur_obj)?;
            if let Some(rv) = str_at(&new, &["metadata", "resourceVersion"])
                && !rv.is_empty()
                && rv != cur.mod_revision.to_string()
            {
                return Err(ApiError::stale(&t.res, name));
            }
            let mut merged = prepare_update(&t.res, &cur_obj, new, t.status)?;
            validate(&t.res, name, &merged)?;
            typed::check(&t.res, &mut merged, t.strict)?;
            fold_string_data(&t.res, &mut merged);
            if merged == cur_obj || dry_run {
                return Ok(merged);
            }
            meta(&mut merged).remove("resourceVersion");
            let value =
                serde_json::to_vec(&merged).map_err(|e| ApiError::internal(e.to_string()))?;
            match self.store.update(&key, &value, Some(cur.mod_revision)) {
                Ok(revision) => {
                    meta(&mut merged).insert("resourceVersion".into(), json!(revision.to_string()));
                    set_api_version(&t.res, &mut merged);
                    return Ok(merged);
                }
                Err(gingham_datastore::Error::Conflict { .. }) if precondition.is_none() => {
                    continue;
                }
                Err(gingham_datastore::Error::Conflict { found: 0, .. })
                | Err(gingham_datastore::Error::NotFound { .. }) => {
                    return Err(ApiError::not_found(&t.res, name));
                }
                Err(gingham_datastore::Error::Conflict { .. }) => {
                    return Err(ApiError::stale(&t.res, name));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            &t.res,
            name,
            "the object kept changing while it was written; try again",
        ))
    }

    fn patch(
        &self,
        t: &Target,
        name: &str,
        req: &Request,
        dry_run: bool,
    ) -> Result<Reply, ApiError> {
        let ct = req.content_type.split(';').next().unwrap_or("").trim();
        let is_apply = ct == "application/apply-patch+yaml";
        let body = parse_body(&req.body, is_apply)?;
        let manager = req.q("fieldManager").map(str::to_owned);
        if is_apply {
            let Some(manager) = manager else {
                return Err(ApiError::bad_request(
                    "PATCH, fieldManager is required for apply requests",
                ));
            };
            let key = t.res.key(t.namespace.as_deref(), name);
            if self.store.get(&key)?.is_none() {
                if t.status {
                    return Err(ApiError::not_found(&t.res, name));
                }
                let mut obj = body.clone();
                if !obj.is_object() {
                    return Err(ApiError::bad_request(
                        "the applied configuration is not an object",
                    ));
                }
                let given = str_at(&obj, &["metadata", "name"])
                    .unwrap_or(name)
                    .to_owned();
                if given != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({given}) does not match the name on the URL ({name})"
                    )));
                }
                set_managed(&mut obj, &manager, &t.res, &body);
                return match self.create(&t.res, t.namespace.as_deref(), obj, dry_run, t.strict) {
                    Ok(v) => Ok(Reply::Json(201, v)),
                    // Created meanwhile: apply to it.
                    Err(e) if e.reason == "AlreadyExists" => {
                        self.apply_existing(t, name, &manager, &body, dry_run)
                    }
                    Err(e) => Err(e),
                };
            }
            return self.apply_existing(t, name, &manager, &body, dry_run);
        }
        let strategic = !t.res.custom;
        let kind = match ct {
            "application/json-patch+json" => 0,
            "application/merge-patch+json" => 1,
            "application/strategic-merge-patch+json" if strategic => 2,
            "application/strategic-merge-patch+json" => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for the custom resource {})",
                    t.res.qualified()
                )));
            }
            other => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                    if strategic {
                        ", application/strategic-merge-patch+json"
                    } else {
                        ""
                    }
                )));
            }
        };
        let json_patch: Option<json_patch::Patch> =
            if kind == 0 {
                Some(serde_json::from_value(body.clone()).map_err(|e| {
                    ApiError::bad_request(format!("the JSON patch is not valid: {e}"))
                })?)
            } else {
                None
            };
        let res = t.res.clone();
        let v = self.write_loop(t, name, None, dry_run, |cur| {
            let mut obj = cur.clone();
            match kind {
                0 => {
                    json_patch::patch(&mut obj, json_patch.as_ref().expect("parsed above"))
                        .map_err(|e| {
                            ApiError::invalid(
                                &res,
                                name,
                                "patch",
                                &format!("Invalid value: the JSON patch does not apply: {e}"),
                            )
                        })?;
                }
                1 => json_patch::merge(&mut obj, &body),
                _ => {
                    obj = patch::strategic_merge(&obj, &body).map_err(|e| {
                        ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
                    })?;
                }
            }
            Ok(obj)
        })?;
        Ok(Reply::Json(200, v))
    }

    fn apply_existing(
        &self,
        t: &Target,
        name: &str,
        manager: &str,
        applied: &Value,
        dry_run: bool,
    ) -> Result<Reply, ApiError> {
        let res = t.res.clone();
        let v = self.write_loop(t, name, None, dry_run, |cur| {
            let previous = cur["metadata"]["managedFields"]
                .as_array()
                .and_then(|a| {
                    a.iter().find(|e| {
                        e["manager"].as_str() == Some(manager)
                            && e["operation"].as_str() == Some("Apply")
                    })
                })
                .map(|e| patch::shape_of_fields(&e["fieldsV1"]));
            let mut stripped = applied.clone();
            if let Some(m) = stripped.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
            let mut obj = patch::apply(cur, &stripped, previous.as_ref(), !res.custom)
                .map_err(|e| ApiError::bad_request(format!("invalid apply configuration: {e}")))?;
            // The resourceVersion stays the current one: apply is not a conditional write.
            meta(&mut obj).insert(
                "resourceVersion".into(),
                cur["metadata"]["resourceVersion"].clone(),
            );
            // An apply that changes nothing writes nothing (not even the entry's time), as
            // kube-apiserver: controllers that apply on every reconcile see no event of their
            // own.
            let same_fields = cur["metadata"]["managedFields"]
                .as_array()
                .and_then(|a| {
                    a.iter().find(|e| {
                        e["manager"].as_str() == Some(manager)
                            && e["operation"].as_str() == Some("Apply")
                    })
                })
                .is_some_and(|e| e["fieldsV1"] == patch::fields_of(applied));
            if !(same_fields && obj == *cur) {
                set_managed(&mut obj, manager, &res, applied);
            }
            Ok(obj)
        })?;
        Ok(Reply::Json(200, v))
    }

    fn delete(
        &self,
        t: &Target,
        name: &str,
        body: &[u8],
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let opts = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            parse_body(body, false)?
        };
        let key = t.res.key(t.namespace.as_deref(), name);
        for _ in 0..WRITE_RETRIES {
            let cur = self
                .store
                .get(&key)?
                .ok_or_else(|| ApiError::not_found(&t.res, name))?;
            let obj = decorate(&t.res, &cur)?;
            if let Some(uid) = opts["preconditions"]["uid"].as_str()
                && Some(uid) != str_at(&obj, &["metadata", "uid"])
            {
                return Err(ApiError::conflict(
                    &t.res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        str_at(&obj, &["metadata", "uid"]).unwrap_or("")
                    ),
                ));
            }
            if let Some(rv) = opts["preconditions"]["resourceVersion"].as_str()
                && rv != cur.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    &t.res,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        cur.mod_revision
                    ),
                ));
            }
            // dryRun comes as a query parameter or in the DeleteOptions body (kube-rs).
            let dry_in_body = opts["dryRun"].as_array().is_some_and(|a| !a.is_empty());
            if dry_run || dry_in_body {
                return Ok(obj);
            }
            let mut txn = Txn::new()
                .when(Compare::ModRevision {
                    key: key.clone(),
                    revision: cur.mod_revision,
                })
                .then(Op::Delete { key: key.clone() });
            // What goes with it: a namespace's objects, a CRD's custom resources.
            for dependent in self.dependents(&t.res, name, &obj)? {
                txn = txn.then(Op::Delete { key: dependent });
            }
            match self.store.txn(&txn)? {
                TxnOutcome::Committed { revision } => {
                    tracing::debug!(resource = %t.res.qualified(), %name, revision, "deleted");
                    return Ok(obj);
                }
                TxnOutcome::Failed { .. } => continue,
            }
        }
        Err(ApiError::conflict(
            &t.res,
            name,
            "the object kept changing while it was deleted; try again",
        ))
    }

    fn dependents(&self, res: &Resource, name: &str, obj: &Value) -> Result<Vec<String>, ApiError> {
        let mut keys = Vec::new();
        if res.custom {
            return Ok(keys);
        }
        if res.plural == "namespaces" {
            for r in self.resources()?.iter() {
                if r.namespaced && r.version == self.storage_version(r)? {
                    keys.extend(
                        self.store
                            .list(&r.list_prefix(Some(name)))?
                            .kvs
                            .into_iter()
                            .map(|kv| kv.key),
                    );
                }
            }
        } else if res.plural == "customresourcedefinitions"
            && let Some(r) = resources::from_crd(obj).into_iter().next()
        {
            keys.extend(
                self.store
                    .list(&r.prefix())?
                    .kvs
                    .into_iter()
                    .map(|kv| kv.key),
            );
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// One version per group and plural, so that a resource served in several versions is
    /// listed once (every version shares the same keys).
    fn storage_version(&self, r: &Resource) -> Result<String, ApiError> {
        Ok(self
            .resources()?
            .iter()
            .find(|x| x.group == r.group && x.plural == r.plural)
            .map(|x| x.version.clone())
            .unwrap_or_else(|| r.version.clone()))
    }

    fn delete_collection(
        &self,
        t: &Target,
        req: &Request,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let listed = self.list(
            t,
            &Request {
                accept: String::new(),
                query: req
                    .query
                    .iter()
                    .filter(|(k, _)| *k == "labelSelector" || *k == "fieldSelector")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ..req.clone()
            },
        )?;
        let mut deleted = Vec::new();
        for item in listed["items"].as_array().into_iter().flatten() {
            let name = str_at(item, &["metadata", "name"]).unwrap_or("").to_owned();
            let ns = str_at(item, &["metadata", "namespace"]).map(str::to_owned);
            let target = Target {
                res: t.res.clone(),
                strict: false,
                namespace: ns,
                name: Some(name.clone()),
                status: false,
            };
            match self.delete(&target, &name, &req.body, dry_run) {
                Ok(v) => deleted.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "kind": format!("{}List", t.res.kind),
            "apiVersion": t.res.api_version(),
            "metadata": {"resourceVersion": self.store.revision()?.to_string()},
            "items": list_items(&t.res, deleted),
        }))
    }
}

/// The items of a list as kube-apiserver encodes them: built-in kinds without their kind and
/// apiVersion (the list says them), custom resources with.
fn list_items(res: &Resource, mut items: Vec<Value>) -> Vec<Value> {
    if !res.custom {
        for i in &mut items {
            if let Some(o) = i.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
        }
    }
    items
}

/// What a DELETE answers: the object for the kinds kube-apiserver deletes gracefully (pods,
/// services, namespaces and CRDs, which have finalizers or grace periods), a Success Status
/// naming the object for the others.
fn deleted_reply(res: &Resource, obj: Value) -> Value {
    let returns_object = !res.custom
        && matches!(
            (res.group.as_str(), res.plural.as_str()),
            ("", "pods")
                | ("", "services")
                | ("", "namespaces")
                | ("apiextensions.k8s.io", "customresourcedefinitions")
        );
    if returns_object {
        return obj;
    }
    let mut details = json!({
        "name": obj["metadata"]["name"],
        "kind": res.plural,
        "uid": obj["metadata"]["uid"],
    });
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

fn namespaces() -> Resource {
    resources::builtins()
        .into_iter()
        .find(|r| r.plural == "namespaces")
        .expect("namespaces are built in")
}

/// The stored object as served.
pub fn decorate(res: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    meta(&mut obj).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    set_api_version(res, &mut obj);
    Ok(obj)
}

fn set_api_version(res: &Resource, obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(res.api_version()));
        o.insert("kind".into(), json!(res.kind));
    }
}

/// Checks a body's kind and apiVersion against the resource, filling them in when missing.
fn check_type(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    if let Some(kind) = obj["kind"].as_str()
        && !kind.is_empty()
        && kind != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource {} (kind {})",
            res.qualified(),
            res.kind
        )));
    }
    if let Some(av) = obj["apiVersion"].as_str()
        && !av.is_empty()
    {
        let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if group != res.group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                res.api_version()
            )));
        }
    }
    set_api_version(res, obj);
    Ok(())
}

fn validate(res: &Resource, name: &str, obj: &Value) -> Result<(), ApiError> {
    let label_only = res.plural == "namespaces" && !res.custom;
    if let Some(p) = name_problem(name, label_only) {
        return Err(ApiError::invalid(res, name, "metadata.name", &p));
    }
    if let Some((field, p)) = label_problem(&obj["metadata"]["labels"]) {
        return Err(ApiError::invalid(res, name, &field, &p));
    }
    if let Some(a) = obj["metadata"].get("annotations")
        && !a.is_null()
        && !a
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
    {
        return Err(ApiError::invalid(
            res,
            name,
            "metadata.annotations",
            "Invalid value: annotations must be a map of strings",
        ));
    }
    let annotations_size: usize = obj["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if annotations_size > MAX_ANNOTATIONS_SIZE {
        return Err(ApiError::invalid(
            res,
            name,
            "metadata.annotations",
            &format!("Too long: must have at most {MAX_ANNOTATIONS_SIZE} bytes"),
        ));
    }
    if res.plural == "customresourcedefinitions" && !res.custom {
        validate_crd(res, name, obj)?;
    }
    Ok(())
}

fn validate_crd(res: &Resource, name: &str, obj: &Value) -> Result<(), ApiError> {
    let spec = &obj["spec"];
    let inv = |f: &str, why: &str| Err(ApiError::invalid(res, name, f, why));
    let Some(group) = spec["group"].as_str().filter(|g| !g.is_empty()) else {
        return inv("spec.group", "Required value");
    };
    let Some(plural) = spec["names"]["plural"].as_str().filter(|g| !g.is_empty()) else {
        return inv("spec.names.plural", "Required value");
    };
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        return inv("spec.names.kind", "Required value");
    }
    if name != format!("{plural}.{group}") {
        return inv(
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group ({plural}.{group})"
            ),
        );
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced") | Some("Cluster")) {
        return inv(
            "spec.scope",
            "Unsupported value: must be one of \"Cluster\", \"Namespaced\"",
        );
    }
    let versions = spec["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if versions.is_empty() {
        return inv(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        );
    }
    if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        return inv(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        );
    }
    if versions
        .iter()
        .any(|v| v["name"].as_str().is_none_or(str::is_empty))
    {
        return inv("spec.versions[].name", "Required value");
    }
    if versions
        .iter()
        .any(|v| v["schema"]["openAPIV3Schema"].is_null())
    {
        return inv(
            "spec.versions[].schema.openAPIV3Schema",
            "Required value: schemas are required",
        );
    }
    Ok(())
}

/// A Secret's `stringData` is write-only: kube-apiserver folds it into `data` (base64, its
/// values winning over `data`'s for the same key) and never stores or returns it.
fn fold_string_data(res: &Resource, obj: &mut Value) {
    use base64::Engine as _;
    if res.custom || !res.group.is_empty() || res.plural != "secrets" {
        return;
    }
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = o.remove("stringData") else {
        return;
    };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (k, v) in strings {
        if let Some(text) = v.as_str() {
            data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
}

/// What kube-apiserver's strategies and admission set when an object is created.
fn prepare_create(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    if res.custom {
        if res.status
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        return Ok(());
    }
    let name = str_at(obj, &["metadata", "name"]).unwrap_or("").to_owned();
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "namespaces") => {
            let labels = meta(obj).entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => {
            let spec = obj["spec"].as_object_mut().ok_or_else(|| {
                ApiError::invalid(res, &name, "spec.containers", "Required value")
            })?;
            if spec
                .get("containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                return Err(ApiError::invalid(
                    res,
                    &name,
                    "spec.containers",
                    "Required value",
                ));
            }
            for (k, v) in [
                ("restartPolicy", json!("Always")),
                ("dnsPolicy", json!("ClusterFirst")),
                ("schedulerName", json!("default-scheduler")),
                ("serviceAccountName", json!("default")),
                ("terminationGracePeriodSeconds", json!(30)),
                ("securityContext", json!({})),
            ] {
                spec.entry(k).or_insert(v);
            }
            let sa = spec["serviceAccountName"].clone();
            spec.entry("serviceAccount").or_insert(sa);
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "services") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        // Their strategies reset status to the empty one (the counts a DaemonSet's status
        // always has are zero).
        ("apps", "deployments") => {
            obj["status"] = json!({});
        }
        ("apps", "daemonsets") => {
            obj["status"] = json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0});
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            crd_defaults(obj);
            obj["status"] = crd_status(obj);
        }
        _ => {
            // Nodes register with their status; other kinds get theirs from controllers.
            if res.status
                && res.plural != "nodes"
                && let Some(o) = obj.as_object_mut()
            {
                o.remove("status");
            }
        }
    }
    Ok(())
}

/// kube-apiserver's defaults of a CRD: `names.listKind` and the `None` conversion strategy.
fn crd_defaults(crd: &mut Value) {
    let kind = crd["spec"]["names"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let names = &mut crd["spec"]["names"];
    if names.is_object() && names.get("listKind").is_none() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    let spec = &mut crd["spec"];
    if spec.is_object() && spec.get("conversion").is_none() {
        spec["conversion"] = json!({"strategy": "None"});
    }
}

/// A CRD is Established and its names accepted as soon as it is stored.
fn crd_status(crd: &Value) -> Value {
    let t = now();
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
        ],
        "storedVersions": storage,
    })
}

/// The object an update stores: spec and metadata from the new one (status from the old one when
/// status is a subresource), or only status for `/status`; identity fields kept; generation
/// bumped when the spec changes.
fn prepare_update(
    res: &Resource,
    old: &Value,
    mut new: Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    set_api_version(res, &mut new);
    let mut out = if status_only {
        let mut o = old.clone();
        o["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if !res.custom {
            // kube-apiserver's status strategies for the built-in kinds keep the new labels
            // and annotations (custom resources take only status).
            for k in ["labels", "annotations"] {
                match new["metadata"].get(k) {
                    Some(v) => meta(&mut o).insert(k.into(), v.clone()),
                    None => meta(&mut o).remove(k),
                };
            }
        }
        if o["status"].is_null()
            && let Some(m) = o.as_object_mut()
        {
            m.remove("status");
        }
        o
    } else {
        if res.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        new
    };
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    let m = meta(&mut out);
    for k in ["uid", "creationTimestamp", "name", "namespace"] {
        match old_meta.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    if !m.contains_key("managedFields")
        && let Some(mf) = old_meta.get("managedFields")
    {
        m.insert("managedFields".into(), mf.clone());
    }
    let spec_changed = {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("metadata");
                o.remove("status");
            }
            v
        };
        strip(old) != strip(&out)
    };
    let generation = old_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    meta(&mut out).insert(
        "generation".into(),
        json!(if spec_changed && !status_only {
            generation + 1
        } else {
            generation
        }),
    );
    if !res.custom {
        match (res.group.as_str(), res.plural.as_str()) {
            ("", "namespaces") => {
                let name = str_at(old, &["metadata", "name"]).unwrap_or("").to_owned();
                let labels = meta(&mut out).entry("labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels["kubernetes.io/metadata.name"] = json!(name);
                if !status_only {
                    out["spec"] = old["spec"].clone();
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") if !status_only => {
                crd_defaults(&mut out);
                out["status"] = crd_status(&out);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Records a server-side apply in `metadata.managedFields`.
fn set_managed(obj: &mut Value, manager: &str, res: &Resource, applied: &Value) {
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": res.api_version(),
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": patch::fields_of(applied),
    });
    let m = meta(obj);
    let list = m.entry("managedFields").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let arr = list.as_array_mut().expect("an array");
    arr.retain(|e| {
        !(e["manager"].as_str() == Some(manager) && e["operation"].as_str() == Some("Apply"))
    });
    arr.push(entry);
}
