//! The Kubernetes-backed kinds over the API, as [`crate::KddStore`] dispatches them: get, list,
//! conditional writes of one key, and watch followers. Conversions are the parent module's.
//!
//! A key's `mod_revision` is its object's `metadata.resourceVersion`; a write is one merge patch
//! of the object's `status` subresource, conditional on the resourceVersion the condition was
//! checked against (409 means another writer got there first: the condition is read again).

use std::collections::HashMap;
use std::sync::mpsc;

use gingham_datastore::{Error, Event, EventKind, KeyValue, Result, Revision};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::{
    K8sBacked, K8sObjectKind, K8sObjectRef, k8s_backed_kind, k8s_node_delete_patch,
    k8s_node_patch_for, kvs_from_object, list_sources, object_keys,
    pod_patch_for_workload_endpoint, pod_patch_for_workload_endpoint_delete, value_for_key,
    with_preconditions,
};
use crate::{PAGE, RACE_RETRIES, follow, parse_revision, request_error};

/// The condition of a write of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// None.
    Any,
    /// The key does not exist.
    Absent,
    /// The key exists.
    Exists,
    /// The key exists at this mod revision.
    ModRevision(Revision),
}

/// A write of one key.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// Store this value.
    Put(&'a [u8]),
    /// Remove the key.
    Delete,
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Applied: the object's resourceVersion after it, and the key's value before (`None`:
    /// absent), for an undo.
    Applied {
        revision: Revision,
        before: Option<Vec<u8>>,
    },
    /// Nothing to do: a delete of a key that does not exist, without a condition.
    Nothing,
    /// The condition did not hold; `found` is the key's mod revision (0: absent).
    Lost { found: Revision },
}

/// The Kubernetes-backed kinds of one store.
#[derive(Clone)]
pub struct K8sObjects {
    client: kube::Client,
    server: String,
}

fn resource(kind: K8sObjectKind) -> ApiResource {
    match kind {
        K8sObjectKind::Node => ApiResource::erase::<corev1::Node>(&()),
        K8sObjectKind::Pod => ApiResource::erase::<corev1::Pod>(&()),
        K8sObjectKind::NetworkPolicy => ApiResource::erase::<netv1::NetworkPolicy>(&()),
        K8sObjectKind::Namespace => ApiResource::erase::<corev1::Namespace>(&()),
        K8sObjectKind::ServiceAccount => ApiResource::erase::<corev1::ServiceAccount>(&()),
    }
}

fn api(client: &kube::Client, kind: K8sObjectKind, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = resource(kind);
    match namespace {
        Some(ns) if kind.is_namespaced() => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn to_json(o: &DynamicObject) -> Result<Value> {
    serde_json::to_value(o).map_err(backend)
}

fn object_revision(obj: &Value, what: &dyn std::fmt::Display) -> Result<Revision> {
    parse_revision(
        obj.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str),
        &what.to_string(),
    )
}

fn key_value(key: String, value: Vec<u8>, rv: Revision, obj: &Value) -> KeyValue {
    KeyValue {
        key,
        value,
        create_revision: 0,
        mod_revision: rv,
        version: obj
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1),
    }
}

/// Every (key, value) `obj` holds, as key-values at its resourceVersion. An object that cannot
/// be converted holds nothing (logged): one bad NetworkPolicy must not hide the others.
fn object_kvs(kind: K8sObjectKind, obj: &Value) -> Result<Vec<KeyValue>> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let rv = object_revision(obj, &format!("Kubernetes {} {name}", kind.kind()))?;
    match kvs_from_object(kind, obj) {
        Ok(kvs) => Ok(kvs
            .into_iter()
            .map(|(k, v)| key_value(k, v, rv, obj))
            .collect()),
        Err(e) => {
            tracing::warn!(error = %e, "a Kubernetes object cannot be read as a Calico resource; skipped");
            Ok(Vec::new())
        }
    }
}

impl K8sObjects {
    /// The kinds over `client` (of the API server at `server`, for messages).
    pub fn new(client: kube::Client, server: String) -> Self {
        Self { client, server }
    }

    fn failure(&self, what: &dyn std::fmt::Display, e: kube::Error) -> Error {
        request_error(&self.server, &what.to_string(), e)
    }

    async fn read(&self, r: &K8sObjectRef) -> Result<Option<(Revision, Value)>> {
        let api = api(&self.client, r.kind, r.namespace.as_deref());
        match api.get_opt(&r.name).await {
            Ok(Some(o)) => {
                let obj = to_json(&o)?;
                Ok(Some((object_revision(&obj, r)?, obj)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.failure(r, e)),
        }
    }

    /// The key-value of `key` (a key [`k8s_backed_kind`] classifies).
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let Some(r) = k8s_backed_kind(key).and_then(|b| b.object()) else {
            return Ok(None);
        };
        let Some((rv, obj)) = self.read(&r).await? else {
            return Ok(None);
        };
        let value = value_for_key(key, r.kind, &obj).map_err(backend)?;
        Ok(value.map(|v| key_value(key.to_owned(), v, rv, &obj)))
    }

    /// Every key-backed key under `prefix`, in key order, and the highest resourceVersion of
    /// the lists read (0: none read).
    pub async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let mut kvs = Vec::new();
        let mut revision = 0;
        for source in list_sources(prefix) {
            let api = api(&self.client, source.kind, source.namespace.as_deref());
            let mut params = ListParams::default().limit(PAGE);
            loop {
                let page = api
                    .list(&params)
                    .await
                    .map_err(|e| self.failure(&source.kind.plural(), e))?;
                revision = revision.max(parse_revision(
                    page.metadata.resource_version.as_deref(),
                    &format!("the list of {}", source.kind.plural()),
                )?);
                for o in &page.items {
                    let obj = to_json(o)?;
                    kvs.extend(
                        object_kvs(source.kind, &obj)?
                            .into_iter()
                            .filter(|kv| kv.key.starts_with(prefix)),
                    );
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => params = ListParams::default().limit(PAGE).continue_token(&c),
                    None => break,
                }
            }
        }
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((kvs, revision))
    }

    /// One write of one key under `expect`: a merge patch of its object conditional on the
    /// resourceVersion the condition was checked at. Writes to read-only or unbacked keys, and
    /// puts whose object does not exist, are errors saying what to do instead.
    pub async fn write(&self, key: &str, write: Write<'_>, expect: Expect) -> Result<Written> {
        let b = k8s_backed_kind(key)
            .ok_or_else(|| backend(format!("{key} is not kept in Kubernetes' own objects")))?;
        b.check_write().map_err(backend)?;
        let r = b
            .object()
            .ok_or_else(|| backend(format!("{key}: no Kubernetes object holds it")))?;
        let objects = api(&self.client, r.kind, r.namespace.as_deref());
        for _ in 0..RACE_RETRIES {
            let Some((rv, obj)) = self.read(&r).await? else {
                return match (write, expect) {
                    (Write::Delete, Expect::Any | Expect::Absent) => Ok(Written::Nothing),
                    (_, Expect::Exists | Expect::ModRevision(_)) => Ok(Written::Lost { found: 0 }),
                    (Write::Put(_), _) => Err(backend(
                        b.missing_object()
                            .map_or_else(|| format!("{key}: no {r}"), |e| e.to_string()),
                    )),
                };
            };
            let before = value_for_key(key, r.kind, &obj).map_err(backend)?;
            let found = if before.is_some() { rv } else { 0 };
            let holds = match expect {
                Expect::Any => true,
                Expect::Absent => before.is_none(),
                Expect::Exists => before.is_some(),
                Expect::ModRevision(want) => before.is_some() && rv == want,
            };
            if !holds {
                return Ok(Written::Lost { found });
            }
            let patch = match (write, &b) {
                (Write::Delete, _) if before.is_none() => return Ok(Written::Nothing),
                (Write::Put(value), K8sBacked::Node { .. }) => {
                    let node: corev1::Node =
                        serde_json::from_value(obj.clone()).map_err(backend)?;
                    k8s_node_patch_for(value, &node).map_err(backend)?
                }
                (Write::Delete, K8sBacked::Node { .. }) => {
                    let node: corev1::Node =
                        serde_json::from_value(obj.clone()).map_err(backend)?;
                    k8s_node_delete_patch(&node)
                }
                (Write::Put(value), _) => {
                    pod_patch_for_workload_endpoint(key, value)
                        .map_err(backend)?
                        .1
                }
                (Write::Delete, _) => {
                    pod_patch_for_workload_endpoint_delete(key)
                        .map_err(backend)?
                        .1
                }
            };
            let patch = with_preconditions(patch, Some(&rv.to_string()), None);
            match objects
                .patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(o) => {
                    let after = to_json(&o)?;
                    return Ok(Written::Applied {
                        revision: object_revision(&after, &r)?,
                        before,
                    });
                }
                // Changed or gone since the read: check the condition again.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => continue,
                Err(e) => return Err(self.failure(&r, e)),
            }
        }
        Err(backend(format!(
            "{key}: {r} kept being changed by other writers on {} ({RACE_RETRIES} attempts)",
            self.server
        )))
    }

    /// The followers of a watch of `prefix` from `after`: one per kind of object, each sending
    /// its events (or the error that ends it) to `tx`. Spawn them on the store's runtime.
    pub fn followers(
        &self,
        prefix: &str,
        after: Revision,
        tx: &mpsc::Sender<Result<Event>>,
    ) -> Vec<impl Future<Output = ()> + Send + 'static + use<>> {
        list_sources(prefix)
            .into_iter()
            .map(|source| {
                let kind = source.kind;
                let prefix = prefix.to_owned();
                let mut known = Known::new();
                follow(
                    api(&self.client, kind, source.namespace.as_deref()),
                    kind.plural().to_owned(),
                    self.server.clone(),
                    after,
                    tx.clone(),
                    move |change, o| {
                        let obj = to_json(&o)?;
                        let (added, deleted) = (change == Some(true), change.is_none());
                        watch_events(kind, &prefix, added, deleted, &obj, &mut known)
                    },
                )
            })
            .collect()
    }
}

/// What a follower knows of a key: its last key-value, or that it is absent.
pub(super) type Known = HashMap<String, Option<KeyValue>>;

/// The datastore events of one watch event of an object of `kind` (`added`: an ADDED event,
/// `deleted`: a DELETED one) for a watch of `prefix`: a Put for each key it holds now whose
/// value changed, a Delete for each key it held and holds no more (all of them when it is
/// deleted). `known` is what the watch has seen of each key. Changes of the object that leave a
/// key's value as it was (kubelet's status updates of a pod, a Node's conditions) give no event.
pub(super) fn watch_events(
    kind: K8sObjectKind,
    prefix: &str,
    added: bool,
    deleted: bool,
    obj: &Value,
    known: &mut Known,
) -> Result<Vec<Event>> {
    let rv = object_revision(obj, &kind.kind())?;
    let now: Vec<KeyValue> = if deleted {
        Vec::new()
    } else {
        object_kvs(kind, obj)?
    };
    let mut out = Vec::new();
    let mut keys = object_keys(kind, obj);
    // Keys the object holds that `object_keys` did not name cannot occur; they still count.
    for kv in &now {
        if !keys.contains(&kv.key) {
            keys.push(kv.key.clone());
        }
    }
    for key in keys {
        if !key.starts_with(prefix) {
            continue;
        }
        let prev = known.get(&key).cloned();
        match now.iter().find(|kv| kv.key == key) {
            Some(kv) => {
                let mut kv = kv.clone();
                kv.create_revision = match &prev {
                    Some(Some(p)) => p.create_revision,
                    Some(None) => kv.mod_revision,
                    None if added => kv.mod_revision,
                    None => 0,
                };
                known.insert(key, Some(kv.clone()));
                if let Some(Some(p)) = &prev
                    && p.value == kv.value
                {
                    continue;
                }
                out.push(Event {
                    kind: EventKind::Put,
                    kv,
                    prev: prev.flatten(),
                });
            }
            None => {
                known.insert(key.clone(), None);
                // A key this watch never saw: deleted only when the object says it had one
                // (the object went, or the CNI plugin's DEL emptied the pod's podIP).
                let report = match &prev {
                    Some(Some(_)) => true,
                    Some(None) => false,
                    None => deleted || pod_ip_taken_back(obj),
                };
                if report {
                    let gone = |mod_revision| KeyValue {
                        key: key.clone(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision,
                        version: 0,
                    };
                    let prev = prev.flatten().unwrap_or_else(|| gone(0));
                    out.push(Event {
                        kind: EventKind::Delete,
                        kv: gone(rv),
                        prev: Some(prev),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Whether a pod's `cni.projectcalico.org/podIP` annotation is present and empty: the CNI
/// plugin's DEL took its addresses back.
fn pod_ip_taken_back(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(super::ANNOTATION_POD_IP))
        .and_then(Value::as_str)
        .is_some_and(str::is_empty)
}
