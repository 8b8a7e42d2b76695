//! The Kubernetes datastore (KDD): [`gingham_datastore::Datastore`] over the Kubernetes API.
//!
//! Calico's resources are kept as Calico's CRDs (`crd.projectcalico.org/v1`), Calico's Node
//! fields as the Kubernetes Node's annotations, IPAM blocks, handles and affinities as their
//! CRDs; Kubernetes NetworkPolicies, Namespaces, ServiceAccounts and Pods are read directly.
//!
//! Modules:
//! - `crd`: keys and values of the resources kept as CRDs (the generic mapping).
//! - `k8s_backed`: the kinds that live in Kubernetes' own objects (Node annotations,
//!   WorkloadEndpoints from Pods, `knp.`/`kns.`/`ksa.` from NetworkPolicies, Namespaces and
//!   ServiceAccounts).
//!
//! Keys are Gingham's usual ones; each names one Kubernetes object ([`crd::locate`]). What the
//! store promises, and where it differs from etcd:
//! - `mod_revision` is the object's `metadata.resourceVersion` (a number in kube-apiserver).
//!   `version` is `metadata.generation` (Kubernetes counts changes of the spec, not of labels
//!   and annotations). `create_revision` is not kept by Kubernetes: 0, except in the event of a
//!   watch that saw the object created (then it is the event's revision).
//! - A list reads every CRD type the prefix covers and merges them in key order; its revision is
//!   the highest resourceVersion of those lists.
//! - Transactions: compares and writes on one key are one conditional request (create, update
//!   with a resourceVersion precondition, delete with a precondition): exactly atomic. With
//!   several keys, the writes on compared keys go first, each conditional on the resourceVersion
//!   the comparison read, so a conflict stops the transaction before anything else is written;
//!   then the others. When a write fails midway the ones already applied are undone by
//!   compensating conditional writes and the transaction reports failure. This is not
//!   crash-atomic: a client that dies midway leaves the writes it made (as Calico's own KDD
//!   clients). Each write gets its own resourceVersion; the transaction reports the highest.
//!   IPAM stays safe because every block change is one conditional write of the block.
//! - Watches: one Kubernetes watch per CRD type the prefix covers, from resourceVersion
//!   `after`, resumed internally after disconnects and timeouts (it ends with
//!   [`Error::Unavailable`] after about 25 s without the API server); an expired resourceVersion
//!   (410 Gone) ends the watch with [`Error::Compacted`]. Events of one type come in revision
//!   order; across types, the events that have arrived when `next` is called are delivered in
//!   revision order (Kubernetes orders nothing across resources). A delete carries the object's
//!   last state as `prev`; its `mod_revision` is the last one this watch saw for the key, or 0.
//! - `compact` does nothing: kube-apiserver compacts its own history.
//! - Keys that no CRD holds (for example Gingham's own bookkeeping under `/gingham/`) are refused
//!   with an error naming the key, so the write-ahead layer (`gingham_datastore::atomic`) cannot
//!   run over this store; [`KddStore`] says it takes transactions of any size so that
//!   `Atomic::wrap` leaves it unwrapped.

pub mod crd;
pub mod k8s_backed;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use gingham_datastore::{
    Compare, Datastore, Error, Event, EventKind, KeyValue, Listing, Op, Result, Revision, Txn,
    TxnLimits, TxnOutcome, Watch, compare_holds,
};
use gingham_model::crd::{CRD_GROUP, CRD_VERSION};
use gingham_model::kind::KEY_ROOT;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions,
    WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::crd::{CrdType, MapError, ObjectRef};
use crate::k8s_backed::store::K8sObjects;
use crate::k8s_backed::{k8s_backed_kind, list_sources};

/// How many times a write that lost a race with another writer is tried again.
const RACE_RETRIES: usize = 32;
/// Items per page of a list.
const PAGE: u32 = 500;
/// How long one Kubernetes watch request lasts before it is renewed.
const WATCH_SECONDS: u32 = 290;
/// The CRD whose list tells the store's revision (every Calico installation has it).
const REVISION_PLURAL: &str = "clusterinformations";

/// Where a key lives: a CRD object, or one of Kubernetes' own objects (module `k8s_backed`).
enum Home {
    Crd(ObjectRef),
    /// Kept in Kubernetes' own objects; the text says which.
    K8s(&'static str),
}

fn home(key: &str) -> Result<Home> {
    if k8s_backed_kind(key).is_some() {
        return Ok(Home::K8s(
            "it is kept in Kubernetes' own objects (Nodes, Pods, NetworkPolicies, Namespaces, ServiceAccounts)",
        ));
    }
    crd::locate(key).map(Home::Crd).map_err(map_error)
}

fn map_error(e: MapError) -> Error {
    match e {
        MapError::NoCrd { .. } => Error::Config(e.to_string()),
        MapError::BadValue { .. } | MapError::BadObject { .. } => Error::Backend(e.to_string()),
    }
}

/// The store's own runtime: its calls are synchronous, as the other backends'.
fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gingham-kdd")
        .enable_all()
        .build()
        .map_err(|e| Error::Backend(format!("cannot start the Kubernetes client: {e}")))
}

/// The store.
pub struct KddStore {
    rt: Arc<Runtime>,
    client: kube::Client,
    /// The API server's URL, for messages.
    server: String,
    /// Where the configuration came from (a kubeconfig path, or `KUBECONFIG`/in-cluster).
    source: String,
    /// The kinds kept in Kubernetes' own objects (Nodes, Pods, NetworkPolicies, Namespaces,
    /// ServiceAccounts).
    k8s: K8sObjects,
}

impl KddStore {
    /// Connects with the kubeconfig at `kubeconfig`, or else as `kubectl` and Calico do
    /// (`KUBECONFIG`, `~/.kube/config`, then the in-cluster service account), and checks that
    /// the API server answers and serves Calico's CRDs.
    pub fn connect(kubeconfig: Option<&Path>) -> Result<Self> {
        let rt = runtime()?;
        let source = match kubeconfig {
            Some(p) => p.display().to_string(),
            None => "KUBECONFIG or in-cluster".to_owned(),
        };
        let config = rt.block_on(async {
            match kubeconfig {
                Some(p) => {
                    let kc = Kubeconfig::read_from(p).map_err(|e| {
                        Error::Config(format!("cannot read the kubeconfig {}: {e}", p.display()))
                    })?;
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| Error::Config(format!("the kubeconfig {}: {e}", p.display())))
                }
                None => kube::Config::infer().await.map_err(|e| {
                    Error::Config(format!(
                        "cannot find the Kubernetes API server (set KUBECONFIG, give kubernetes:/path/to/kubeconfig, or run in a pod): {e}"
                    ))
                }),
            }
        })?;
        Self::start(rt, config, source)
    }

    /// Connects with a client configuration made elsewhere (the CNI plugin builds one from its
    /// network configuration, as Calico's does); `source` says where it came from, for
    /// messages. Checks that the API server answers and serves Calico's CRDs.
    pub fn with_config(config: kube::Config, source: &str) -> Result<Self> {
        Self::start(runtime()?, config, source.to_owned())
    }

    fn start(rt: Runtime, config: kube::Config, source: String) -> Result<Self> {
        let server = config.cluster_url.to_string();
        let client = {
            // Making a client spawns its connection machinery on the current runtime.
            let _in_runtime = rt.enter();
            kube::Client::try_from(config).map_err(|e| {
                Error::Config(format!(
                    "cannot make a client for the API server {server}: {e}"
                ))
            })?
        };
        let store = Self {
            rt: Arc::new(rt),
            k8s: K8sObjects::new(client.clone(), server.clone()),
            client,
            server,
            source,
        };
        store.revision()?;
        Ok(store)
    }

    /// Opens the store a child process was pointed at (`KUBECONFIG`).
    pub fn from_env() -> Result<Self> {
        Self::connect(None)
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn api(&self, ty: &CrdType, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: CRD_GROUP.into(),
            version: CRD_VERSION.into(),
            api_version: crd::crd_api_version(),
            kind: ty.crd.kind.into(),
            plural: ty.crd.plural.into(),
        };
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    fn crd_home(&self, key: &str) -> Result<ObjectRef> {
        match home(key)? {
            Home::Crd(r) => Ok(r),
            // Unreachable: `get_async` and `txn_async` send these keys to `k8s_backed::store`.
            Home::K8s(what) => Err(Error::Backend(format!("{key}: {what}, not in a CRD"))),
        }
    }

    /// The error for a failed request about `what`.
    fn failure(&self, what: &str, e: kube::Error) -> Error {
        request_error(&self.server, what, e)
    }

    async fn read(&self, r: &ObjectRef) -> Result<Option<Current>> {
        let api = self.api(&r.ty, r.namespace.as_deref());
        match api.get_opt(&r.name).await {
            Ok(Some(o)) => Ok(Some(Current::from_object(o)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(self.failure(&r.to_string(), e)),
        }
    }

    async fn get_async(&self, key: &str) -> Result<Option<KeyValue>> {
        if k8s_backed_kind(key).is_some() {
            return self.k8s.get(key).await;
        }
        let r = self.crd_home(key)?;
        let Some(cur) = self.read(&r).await? else {
            return Ok(None);
        };
        Ok(key_value(&r.ty, &cur.obj)?.filter(|kv| kv.key == key))
    }

    async fn revision_async(&self) -> Result<Revision> {
        let ty = crd::crd_types()
            .into_iter()
            .find(|t| t.crd.plural == REVISION_PLURAL)
            .ok_or_else(|| Error::Backend(format!("no {REVISION_PLURAL} CRD in the model")))?;
        let list = self
            .api(&ty, None)
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(|e| self.failure(&format!("{REVISION_PLURAL}.{CRD_GROUP}"), e))?;
        parse_revision(
            list.metadata.resource_version.as_deref(),
            "the list of clusterinformations",
        )
    }

    async fn list_async(&self, prefix: &str) -> Result<Listing> {
        let types = crd::types_for_prefix(prefix);
        let (k8s_kvs, k8s_revision) = self.k8s.list(prefix).await?;
        if types.is_empty()
            && list_sources(prefix).is_empty()
            && !prefix.starts_with(KEY_ROOT)
            && !KEY_ROOT.starts_with(prefix)
        {
            return Err(Error::Config(format!(
                "cannot list {prefix}: {}",
                MapError::NoCrd { key: prefix.into() }
            )));
        }
        let mut kvs = Vec::new();
        let mut revision = 0;
        for ty in &types {
            let namespace = list_namespace(ty, prefix);
            let api = self.api(ty, namespace.as_deref());
            let mut params = ListParams::default().limit(PAGE);
            loop {
                let page = api
                    .list(&params)
                    .await
                    .map_err(|e| self.failure(&format!("{}.{CRD_GROUP}", ty.crd.plural), e))?;
                let rv = parse_revision(
                    page.metadata.resource_version.as_deref(),
                    &format!("the list of {}", ty.crd.plural),
                )?;
                revision = revision.max(rv);
                for o in page.items {
                    let obj =
                        serde_json::to_value(&o).map_err(|e| Error::Backend(e.to_string()))?;
                    if let Some(kv) = key_value(ty, &obj)?
                        && kv.key.starts_with(prefix)
                    {
                        kvs.push(kv);
                    }
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => params = ListParams::default().limit(PAGE).continue_token(&c),
                    None => break,
                }
            }
        }
        kvs.extend(k8s_kvs);
        revision = revision.max(k8s_revision);
        if revision == 0 {
            revision = self.revision_async().await?;
        }
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Listing { kvs, revision })
    }

    /// Creates the object; `Ok(None)` when it already exists.
    async fn create_object(&self, r: &ObjectRef, obj: Value) -> Result<Option<Current>> {
        let api = self.api(&r.ty, r.namespace.as_deref());
        let o: DynamicObject = from_value(obj, r)?;
        match api.create(&PostParams::default(), &o).await {
            Ok(o) => Ok(Some(Current::from_object(o)?)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(self.failure(&r.to_string(), e)),
        }
    }

    /// Replaces the object if it is at `rv`; `Ok(None)` when it is not (changed or gone).
    async fn replace_object(
        &self,
        r: &ObjectRef,
        mut obj: Value,
        rv: Revision,
    ) -> Result<Option<Current>> {
        let api = self.api(&r.ty, r.namespace.as_deref());
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let o: DynamicObject = from_value(obj, r)?;
        match api.replace(&r.name, &PostParams::default(), &o).await {
            Ok(o) => Ok(Some(Current::from_object(o)?)),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(None),
            Err(e) => Err(self.failure(&r.to_string(), e)),
        }
    }

    /// Deletes the object if it is at `rv`; `Ok(false)` when it is not (changed or gone).
    async fn delete_object(&self, r: &ObjectRef, rv: Revision) -> Result<bool> {
        let api = self.api(&r.ty, r.namespace.as_deref());
        let dp = DeleteParams::default().preconditions(Preconditions {
            resource_version: Some(rv.to_string()),
            uid: None,
        });
        match api.delete(&r.name, &dp).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
            Err(e) => Err(self.failure(&r.to_string(), e)),
        }
    }

    async fn txn_async(&self, txn: &Txn) -> Result<TxnOutcome> {
        let touches_k8s = txn
            .compares
            .iter()
            .map(Compare::key)
            .chain(txn.ops.iter().map(op_key))
            .any(|k| k8s_backed_kind(k).is_some());
        if touches_k8s {
            self.txn_with_k8s(txn).await
        } else {
            self.txn_crd(txn).await
        }
    }

    /// A transaction over CRD keys only.
    async fn txn_crd(&self, txn: &Txn) -> Result<TxnOutcome> {
        let mut refs: BTreeMap<String, ObjectRef> = BTreeMap::new();
        for key in txn
            .compares
            .iter()
            .map(Compare::key)
            .chain(txn.ops.iter().map(op_key))
        {
            if !refs.contains_key(key) {
                refs.insert(key.to_owned(), self.crd_home(key)?);
            }
        }
        if let Some(outcome) = self.single_request(txn, &refs).await? {
            return Ok(outcome);
        }
        // Read and check the comparisons.
        let mut known: HashMap<String, Option<Current>> = HashMap::new();
        let mut failed = Vec::new();
        for c in &txn.compares {
            let key = c.key();
            if !known.contains_key(key) {
                let cur = self.read(&refs[key]).await?;
                // An object whose spec names another key (two handles differing in case) is
                // not this key's.
                let cur = match cur {
                    Some(cur)
                        if key_value(&refs[key].ty, &cur.obj)?.is_some_and(|kv| kv.key == key) =>
                    {
                        Some(cur)
                    }
                    Some(_) => {
                        return Err(Error::Backend(format!(
                            "{key}: the object {} holds another key",
                            refs[key]
                        )));
                    }
                    None => None,
                };
                known.insert(key.to_owned(), cur);
            }
            let kv = known[key].as_ref().map(|c| c.kv_stub(key));
            if !compare_holds(c, kv.as_ref()) && !failed.iter().any(|f| f == key) {
                failed.push(key.to_owned());
            }
        }
        if !failed.is_empty() {
            return Ok(TxnOutcome::Failed {
                failed_keys: failed,
            });
        }
        if txn.ops.is_empty() {
            return Ok(TxnOutcome::Committed {
                revision: self.revision_async().await?,
            });
        }
        // Writes on compared keys first, then the others, each in the transaction's order.
        let compared: Vec<&Op> = txn
            .ops
            .iter()
            .filter(|op| known.contains_key(op_key(op)))
            .collect();
        let others: Vec<&Op> = txn
            .ops
            .iter()
            .filter(|op| !known.contains_key(op_key(op)))
            .collect();
        let mut done: Vec<Applied> = Vec::new();
        let mut revision: Revision = 0;
        let mut deleted_any = false;
        for op in compared.into_iter().chain(others) {
            let key = op_key(op);
            let r = &refs[key];
            let conditional = txn.compares.iter().any(|c| c.key() == key);
            let result = self.apply_op(op, r, conditional, &mut known).await;
            match result {
                Ok(Some(applied)) => {
                    if let Some(c) = &applied.after {
                        revision = revision.max(c.rv);
                    } else {
                        deleted_any = true;
                    }
                    done.push(applied);
                }
                Ok(None) => {}
                Err(e) => {
                    self.undo(done, &refs).await;
                    return match e {
                        OpError::Lost => Ok(TxnOutcome::Failed {
                            failed_keys: vec![key.to_owned()],
                        }),
                        OpError::Failed(e) => Err(e),
                    };
                }
            }
        }
        if deleted_any || revision == 0 {
            revision = revision.max(self.revision_async().await?);
        }
        Ok(TxnOutcome::Committed { revision })
    }

    /// A transaction with keys kept in Kubernetes' own objects: their comparisons are checked,
    /// their writes made, each conditional on what its comparison read (a conflict fails the
    /// transaction before anything else is written); then the rest goes as a CRD transaction.
    /// When a later step fails, the Kubernetes-backed writes are undone (compensating
    /// conditional writes), as the CRD writes are.
    async fn txn_with_k8s(&self, txn: &Txn) -> Result<TxnOutcome> {
        use k8s_backed::store::{Expect, Write, Written};
        let is_k8s = |k: &str| k8s_backed_kind(k).is_some();
        let mut expect: HashMap<String, Expect> = HashMap::new();
        let mut failed = Vec::new();
        for c in txn.compares.iter().filter(|c| is_k8s(c.key())) {
            let key = c.key();
            let kv = self.k8s.get(key).await?;
            if !compare_holds(c, kv.as_ref()) {
                if !failed.iter().any(|f| f == key) {
                    failed.push(key.to_owned());
                }
                continue;
            }
            let e = match &kv {
                Some(kv) => Expect::ModRevision(kv.mod_revision),
                None => Expect::Absent,
            };
            expect.insert(key.to_owned(), e);
        }
        if !failed.is_empty() {
            return Ok(TxnOutcome::Failed {
                failed_keys: failed,
            });
        }
        let mut done: Vec<(String, Option<Vec<u8>>, Revision)> = Vec::new();
        let mut revision: Revision = 0;
        let mut outcome = None;
        for op in txn.ops.iter().filter(|op| is_k8s(op_key(op))) {
            let key = op_key(op);
            let write = match op {
                Op::Put { value, .. } => Write::Put(value),
                Op::Delete { .. } => Write::Delete,
            };
            // Only the first write of a key is conditional on its comparison.
            let e = expect.remove(key).unwrap_or(Expect::Any);
            match self.k8s.write(key, write, e).await {
                Ok(Written::Applied {
                    revision: rv,
                    before,
                }) => {
                    revision = revision.max(rv);
                    done.push((key.to_owned(), before, rv));
                }
                Ok(Written::Nothing) => {}
                Ok(Written::Lost { .. }) => {
                    outcome = Some(Ok(TxnOutcome::Failed {
                        failed_keys: vec![key.to_owned()],
                    }));
                    break;
                }
                Err(err) => {
                    outcome = Some(Err(err));
                    break;
                }
            }
        }
        if outcome.is_none() {
            let rest = Txn {
                compares: txn
                    .compares
                    .iter()
                    .filter(|c| !is_k8s(c.key()))
                    .cloned()
                    .collect(),
                ops: txn
                    .ops
                    .iter()
                    .filter(|op| !is_k8s(op_key(op)))
                    .cloned()
                    .collect(),
            };
            if rest.compares.is_empty() && rest.ops.is_empty() {
                if revision == 0 {
                    revision = self.revision_async().await?;
                }
                return Ok(TxnOutcome::Committed { revision });
            }
            match self.txn_crd(&rest).await {
                Ok(TxnOutcome::Committed { revision: r }) => {
                    return Ok(TxnOutcome::Committed {
                        revision: revision.max(r),
                    });
                }
                other => outcome = Some(other),
            }
        }
        for (key, before, after) in done.into_iter().rev() {
            let write = match &before {
                Some(v) => Write::Put(v),
                None => Write::Delete,
            };
            match self
                .k8s
                .write(&key, write, Expect::ModRevision(after))
                .await
            {
                Ok(Written::Applied { .. }) | Ok(Written::Nothing) => {
                    tracing::debug!(%key, "undid a write of a failed transaction")
                }
                Ok(Written::Lost { .. }) => tracing::warn!(
                    %key,
                    "cannot undo a write of a failed transaction: another writer changed the object since"
                ),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot undo a write of a failed transaction")
                }
            }
        }
        outcome.unwrap_or_else(|| {
            Err(Error::Backend(
                "a transaction ended without an outcome".into(),
            ))
        })
    }

    /// A transaction whose one comparison is the condition of its one write: one request.
    async fn single_request(
        &self,
        txn: &Txn,
        refs: &BTreeMap<String, ObjectRef>,
    ) -> Result<Option<TxnOutcome>> {
        let ([c], [op]) = (txn.compares.as_slice(), txn.ops.as_slice()) else {
            return Ok(None);
        };
        let key = c.key();
        if op_key(op) != key {
            return Ok(None);
        }
        let r = &refs[key];
        let failed = || TxnOutcome::Failed {
            failed_keys: vec![key.to_owned()],
        };
        let committed = |cur: Current| TxnOutcome::Committed { revision: cur.rv };
        Ok(Some(match (c, op) {
            (Compare::Absent { .. }, Op::Put { value, .. }) => {
                let obj = crd::to_object(r, key, value).map_err(map_error)?;
                self.create_object(r, obj)
                    .await?
                    .map_or_else(failed, committed)
            }
            (Compare::ModRevision { revision, .. }, Op::Put { value, .. }) => {
                let obj = crd::to_object(r, key, value).map_err(map_error)?;
                self.replace_object(r, obj, *revision)
                    .await?
                    .map_or_else(failed, committed)
            }
            (Compare::ModRevision { revision, .. }, Op::Delete { .. }) => {
                if self.delete_object(r, *revision).await? {
                    TxnOutcome::Committed {
                        revision: self.revision_async().await?,
                    }
                } else {
                    failed()
                }
            }
            _ => return Ok(None),
        }))
    }

    /// Applies one write. `conditional`: the key was compared, so the write must find it as the
    /// comparison read it (else [`OpError::Lost`]); otherwise a lost race is read and retried.
    async fn apply_op(
        &self,
        op: &Op,
        r: &ObjectRef,
        conditional: bool,
        known: &mut HashMap<String, Option<Current>>,
    ) -> Result<Option<Applied>, OpError> {
        let key = op_key(op);
        for _ in 0..RACE_RETRIES {
            let before = match known.get(key) {
                Some(c) => c.clone(),
                None => self.read(r).await?,
            };
            let outcome = match op {
                Op::Put { value, .. } => {
                    let obj = crd::to_object(r, key, value).map_err(map_error)?;
                    let written = match &before {
                        None => self.create_object(r, obj).await?,
                        Some(b) => self.replace_object(r, obj, b.rv).await?,
                    };
                    written.map(|after| Applied {
                        key: key.to_owned(),
                        before: before.clone(),
                        after: Some(after),
                    })
                }
                Op::Delete { .. } => match &before {
                    None => return Ok(None),
                    Some(b) => self.delete_object(r, b.rv).await?.then(|| Applied {
                        key: key.to_owned(),
                        before: before.clone(),
                        after: None,
                    }),
                },
            };
            match outcome {
                Some(applied) => {
                    known.insert(key.to_owned(), applied.after.clone());
                    return Ok(Some(applied));
                }
                None if conditional => return Err(OpError::Lost),
                None => {
                    known.remove(key);
                }
            }
        }
        Err(OpError::Failed(Error::Backend(format!(
            "{key}: {r} kept being changed by other writers on {} ({RACE_RETRIES} attempts)",
            self.server
        ))))
    }

    /// Undoes applied writes, newest first, each conditional on what this transaction wrote.
    async fn undo(&self, done: Vec<Applied>, refs: &BTreeMap<String, ObjectRef>) {
        for a in done.into_iter().rev() {
            let r = &refs[&a.key];
            let result = match (&a.before, &a.after) {
                (None, Some(after)) => self.delete_object(r, after.rv).await,
                (Some(before), Some(after)) => self
                    .replace_object(r, before.restorable(), after.rv)
                    .await
                    .map(|c| c.is_some()),
                (Some(before), None) => self
                    .create_object(r, before.restorable())
                    .await
                    .map(|c| c.is_some()),
                (None, None) => Ok(true),
            };
            match result {
                Ok(true) => tracing::debug!(key = %a.key, "undid a write of a failed transaction"),
                Ok(false) => tracing::warn!(
                    key = %a.key, object = %r,
                    "cannot undo a write of a failed transaction: another writer changed the object since"
                ),
                Err(e) => tracing::warn!(
                    key = %a.key, object = %r, error = %e,
                    "cannot undo a write of a failed transaction"
                ),
            }
        }
    }
}

/// Why one write of a transaction did not happen.
enum OpError {
    /// A compared key changed since the comparison read it.
    Lost,
    Failed(Error),
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Failed(e)
    }
}

/// One write a transaction made, for its undo.
struct Applied {
    key: String,
    before: Option<Current>,
    /// `None` for a delete.
    after: Option<Current>,
}

/// An object as read or written.
#[derive(Clone, Debug)]
struct Current {
    rv: Revision,
    obj: Value,
}

impl Current {
    fn from_object(o: DynamicObject) -> Result<Self> {
        let obj = serde_json::to_value(&o).map_err(|e| Error::Backend(e.to_string()))?;
        let rv = parse_revision(
            o.metadata.resource_version.as_deref(),
            &format!("object {}", o.metadata.name.as_deref().unwrap_or("?")),
        )?;
        Ok(Self { rv, obj })
    }

    /// Enough of a key-value for checking comparisons.
    fn kv_stub(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: self.rv,
            version: 0,
        }
    }

    /// The object as it can be written again (what Kubernetes manages removed).
    fn restorable(&self) -> Value {
        let mut obj = self.obj.clone();
        if let Some(m) = obj["metadata"].as_object_mut() {
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                m.remove(k);
            }
        }
        obj
    }
}

fn op_key(op: &Op) -> &str {
    match op {
        Op::Put { key, .. } | Op::Delete { key } => key,
    }
}

fn from_value(obj: Value, r: &ObjectRef) -> Result<DynamicObject> {
    serde_json::from_value(obj)
        .map_err(|e| Error::Backend(format!("{r}: cannot encode the object: {e}")))
}

/// The namespace a list of `prefix` can be limited to.
fn list_namespace(ty: &CrdType, prefix: &str) -> Option<String> {
    if !ty.crd.namespaced || ty.layout != crd::Layout::Resource {
        return None;
    }
    let rest = prefix.strip_prefix(&ty.key_space())?;
    let (ns, _) = rest.split_once('/')?;
    (!ns.is_empty()).then(|| ns.to_owned())
}

fn parse_revision(rv: Option<&str>, what: &str) -> Result<Revision> {
    let rv = rv.unwrap_or("");
    rv.parse().map_err(|_| {
        Error::Backend(format!(
            "{what} has resourceVersion {rv:?}, not a number: the Kubernetes datastore needs kube-apiserver's numeric resourceVersions"
        ))
    })
}

/// The key-value an object holds (`create_revision` unknown: 0).
fn key_value(ty: &CrdType, obj: &Value) -> Result<Option<KeyValue>> {
    let Some(d) = crd::from_object(ty, obj).map_err(map_error)? else {
        return Ok(None);
    };
    let rv = parse_revision(
        obj["metadata"]["resourceVersion"].as_str(),
        &format!("{}.{CRD_GROUP} {}", ty.crd.plural, obj["metadata"]["name"]),
    )?;
    Ok(Some(KeyValue {
        key: d.key,
        value: d.value,
        create_revision: 0,
        mod_revision: rv,
        version: obj["metadata"]["generation"].as_i64().unwrap_or(1),
    }))
}

/// Maps a failed request about `what` onto the datastore's errors.
fn request_error(server: &str, what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) => match s.code {
            404 if s.message.contains("could not find the requested resource") => {
                Error::Backend(format!(
                    "the Kubernetes API server {server} does not serve {what}: {} (are Calico's CRDs installed? `gingham manifests crds | kubectl apply -f -`)",
                    s.message
                ))
            }
            404 => Error::Backend(format!(
                "the Kubernetes API server {server} answered 404 for {what}: {}",
                s.message
            )),
            410 => Error::Compacted {
                requested: 0,
                compacted: 0,
            },
            401 | 403 => Error::Unavailable(format!(
                "the Kubernetes API server {server} refused access to {what}: {} (check the kubeconfig's credentials and RBAC)",
                s.message
            )),
            code => Error::Backend(format!(
                "the Kubernetes API server {server} answered {code} {} for {what}: {}",
                s.reason, s.message
            )),
        },
        other => Error::Unavailable(format!(
            "cannot reach the Kubernetes API server {server} ({what}): {other}"
        )),
    }
}

impl Datastore for KddStore {
    fn describe(&self) -> String {
        format!("kubernetes:{} ({})", self.source, self.server)
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.rt.block_on(self.get_async(key))
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        self.rt.block_on(self.list_async(prefix))
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        self.rt.block_on(self.txn_async(txn))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        let types = crd::types_for_prefix(prefix);
        if types.is_empty()
            && list_sources(prefix).is_empty()
            && !prefix.starts_with(KEY_ROOT)
            && !KEY_ROOT.starts_with(prefix)
        {
            return Err(Error::Config(format!(
                "cannot watch {prefix}: {}",
                MapError::NoCrd { key: prefix.into() }
            )));
        }
        let (tx, rx) = mpsc::channel();
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = types
            .into_iter()
            .map(|ty| {
                let follower = Follower {
                    api: self.api(&ty, list_namespace(&ty, prefix).as_deref()),
                    ty,
                    prefix: prefix.to_owned(),
                    server: self.server.clone(),
                    tx: tx.clone(),
                };
                self.rt.spawn(follower.run(after))
            })
            .collect();
        for f in self.k8s.followers(prefix, after, &tx) {
            tasks.push(self.rt.spawn(f));
        }
        Ok(Box::new(KddWatch {
            rx,
            pending: Vec::new(),
            tasks,
            finished: false,
        }))
    }

    fn revision(&self) -> Result<Revision> {
        self.rt.block_on(self.revision_async())
    }

    /// Does nothing: kube-apiserver compacts its own history (`--etcd-compaction-interval`);
    /// a watch from before it ends with [`Error::Compacted`].
    fn compact(&self, _revision: Revision) -> Result<()> {
        Ok(())
    }

    fn txn_limits(&self) -> TxnLimits {
        TxnLimits::UNLIMITED
    }

    /// Yes, in the sense `Atomic::wrap` asks: there is no size limit, and the write-ahead layer
    /// could not run here anyway (its bookkeeping keys have no CRD). How multi-key
    /// transactions behave is in the crate's documentation.
    fn atomic_at_any_size(&self) -> bool {
        true
    }
}

/// An open watch: events from one task per CRD type.
struct KddWatch {
    rx: mpsc::Receiver<Result<Event>>,
    /// Events received but not yet delivered, in revision order.
    pending: Vec<Event>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    finished: bool,
}

impl Watch for KddWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        if self.finished {
            return Err(Error::Backend("the watch has ended".into()));
        }
        if self.pending.is_empty() {
            match self.rx.recv_timeout(timeout) {
                Ok(item) => self.take(item)?,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.finished = true;
                    return Err(Error::Backend("the watch has ended".into()));
                }
            }
        }
        while let Ok(item) = self.rx.try_recv() {
            self.take(item)?;
        }
        self.pending.sort_by_key(Event::revision);
        Ok(Some(self.pending.remove(0)))
    }
}

impl KddWatch {
    fn take(&mut self, item: Result<Event>) -> Result<()> {
        match item {
            Ok(e) => {
                self.pending.push(e);
                Ok(())
            }
            Err(e) => {
                self.finished = true;
                Err(e)
            }
        }
    }
}

impl Drop for KddWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Follows one Kubernetes resource for a watch from `after`: the watch request is renewed after
/// timeouts and disconnects, an expired resourceVersion (410 Gone) ends it with
/// [`Error::Compacted`]; each change (`Some(true)` added, `Some(false)` modified, `None`
/// deleted) becomes what `convert` makes of it, sent to `tx` with any error that ends it.
pub(crate) async fn follow(
    api: Api<DynamicObject>,
    what: String,
    server: String,
    after: Revision,
    tx: mpsc::Sender<Result<Event>>,
    mut convert: impl FnMut(Option<bool>, DynamicObject) -> Result<Vec<Event>> + Send,
) {
    let mut rv = after.to_string();
    let mut failures = 0u32;
    loop {
        let params = WatchParams::default().timeout(WATCH_SECONDS);
        let stream = match api.watch(&params, &rv).await {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 410 => {
                let _ = tx.send(Err(compacted(&rv, &s.message)));
                return;
            }
            Err(e @ kube::Error::Api(_)) => {
                let _ = tx.send(Err(request_error(&server, &what, e)));
                return;
            }
            Err(e) => {
                failures += 1;
                if failures > 30 {
                    let _ = tx.send(Err(request_error(&server, &what, e)));
                    return;
                }
                tracing::debug!(error = %e, %what, "watch request failed; trying again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10)))).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(error = %e, %what, "watch stream broke; resuming");
                    break;
                }
            };
            failures = 0;
            let (kind, o) = match ev {
                WatchEvent::Added(o) => (Some(true), o),
                WatchEvent::Modified(o) => (Some(false), o),
                WatchEvent::Deleted(o) => (None, o),
                WatchEvent::Bookmark(b) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(s) if s.code == 410 => {
                    let _ = tx.send(Err(compacted(&rv, &s.message)));
                    return;
                }
                WatchEvent::Error(s) => {
                    let _ = tx.send(Err(Error::Backend(format!(
                        "the watch of {what} on {server} failed: {} {}",
                        s.code, s.message
                    ))));
                    return;
                }
            };
            rv = o.metadata.resource_version.clone().unwrap_or_default();
            match convert(kind, o) {
                Ok(events) => {
                    for event in events {
                        if tx.send(Ok(event)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    }
}

/// Follows one CRD type for a watch.
struct Follower {
    api: Api<DynamicObject>,
    ty: CrdType,
    prefix: String,
    server: String,
    tx: mpsc::Sender<Result<Event>>,
}

impl Follower {
    async fn run(self, after: Revision) {
        let what = format!("{}.{CRD_GROUP}", self.ty.crd.plural);
        // The last state seen of each key, for `prev`.
        let mut last: HashMap<String, KeyValue> = HashMap::new();
        let Follower {
            api,
            ty,
            prefix,
            server,
            tx,
        } = self;
        follow(api, what, server, after, tx, move |kind, o| {
            Ok(event(&ty, &prefix, kind, o, &mut last)?
                .into_iter()
                .collect())
        })
        .await
    }
}

/// The event for one watch event of a CRD object (`added`: Some(true) added, Some(false)
/// modified, None deleted) for a watch of `prefix`.
fn event(
    ty: &CrdType,
    prefix: &str,
    added: Option<bool>,
    o: DynamicObject,
    last: &mut HashMap<String, KeyValue>,
) -> Result<Option<Event>> {
    let obj = serde_json::to_value(&o).map_err(|e| Error::Backend(e.to_string()))?;
    let Some(mut kv) = key_value(ty, &obj)? else {
        return Ok(None);
    };
    if !kv.key.starts_with(prefix) {
        return Ok(None);
    }
    let prev = last.remove(&kv.key);
    let event = match added {
        Some(created) => {
            if created {
                kv.create_revision = kv.mod_revision;
            }
            last.insert(kv.key.clone(), kv.clone());
            Event {
                kind: EventKind::Put,
                kv,
                prev,
            }
        }
        None => {
            let mut old = kv.clone();
            old.mod_revision = prev.as_ref().map_or(0, |p| p.mod_revision);
            old.create_revision = prev.as_ref().map_or(0, |p| p.create_revision);
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    value: Vec::new(),
                    create_revision: 0,
                    version: 0,
                    ..kv
                },
                prev: Some(old),
            }
        }
    };
    Ok(Some(event))
}

/// [`Error::Compacted`] for a watch from `rv`; kube-apiserver says the oldest revision it still
/// has in parentheses ("too old resource version: 5 (10)").
fn compacted(rv: &str, message: &str) -> Error {
    let requested: Revision = rv.parse().unwrap_or(0);
    let compacted = message
        .rsplit_once('(')
        .and_then(|(_, r)| r.trim_end_matches(')').trim().parse().ok())
        .unwrap_or(requested + 1);
    Error::Compacted {
        requested,
        compacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k8s_backed_keys_have_their_own_home() {
        for key in [
            format!("{KEY_ROOT}/nodes/n1"),
            format!("{KEY_ROOT}/workloadendpoints/ns/n1-k8s-pod-eth0"),
            format!("{KEY_ROOT}/profiles/kns.default"),
            format!("{KEY_ROOT}/networkpolicies/ns/knp.default.deny"),
        ] {
            assert!(matches!(home(&key), Ok(Home::K8s(_))), "{key}");
        }
        assert!(matches!(
            home(&format!("{KEY_ROOT}/networkpolicies/ns/deny")),
            Ok(Home::Crd(_))
        ));
        let e = map_error(crd::locate("/gingham/atomic/lock").unwrap_err());
        assert!(
            matches!(&e, Error::Config(m) if m.contains("/gingham/atomic/lock")),
            "{e}"
        );
    }

    #[test]
    fn lists_of_one_namespace_ask_for_that_namespace() {
        let ty = |plural: &str| {
            crd::crd_types()
                .into_iter()
                .find(|t| t.crd.plural == plural)
                .unwrap()
        };
        let np = ty("networkpolicies");
        let root = format!("{KEY_ROOT}/networkpolicies/");
        assert_eq!(
            list_namespace(&np, &format!("{root}ns1/")),
            Some("ns1".into())
        );
        assert_eq!(
            list_namespace(&np, &format!("{root}ns1/allow")),
            Some("ns1".into())
        );
        assert_eq!(list_namespace(&np, &format!("{root}ns")), None);
        assert_eq!(list_namespace(&np, &root), None);
        assert_eq!(
            list_namespace(&ty("ippools"), &format!("{KEY_ROOT}/ippools/a/")),
            None
        );
    }

    #[test]
    fn compacted_reads_kube_apiservers_message() {
        match compacted("5", "too old resource version: 5 (10)") {
            Error::Compacted {
                requested,
                compacted,
            } => assert_eq!((requested, compacted), (5, 10)),
            e => panic!("{e}"),
        }
    }
}
