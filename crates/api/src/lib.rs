//! Typed access to Calico resources stored in a [`Datastore`], like libcalico-go's clientv3.
//!
//! What it does: maps resources to Calico's etcd key layout, fills in `resourceVersion`
//! (the key's mod revision), `uid` and `creationTimestamp`, enforces create/replace/apply semantics
//! with compare-and-swap, and writes several resources all-or-nothing.
//! What it does not do: parse or validate files (that is `gingham-model::load`, which callers run
//! first) or decide policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use gingham_datastore::atomic::Atomic;
use gingham_datastore::{Compare, Datastore, KeyValue, Op, Revision, Txn, TxnOutcome};
use gingham_model::{Kind, Resource};
use ipnet::IpNet;

/// Errors of resource operations, each naming the resource.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{kind} {name} already exists (use apply or replace to change it)")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {name} does not exist")]
    NotFound { kind: Kind, name: String },
    /// The resourceVersion given with the resource is not the stored one.
    #[error(
        "{kind} {name} was changed by someone else since resourceVersion {expected} was read: {}; get it again and retry, or leave resourceVersion out to overwrite it",
        describe_found(*found)
    )]
    Conflict {
        kind: Kind,
        name: String,
        expected: Revision,
        /// The stored resourceVersion, or `None` when the resource has been deleted since.
        found: Option<Revision>,
    },
    /// Other writers kept changing the resources while this write was prepared.
    #[error(
        "{kind} {name} kept being changed by other writers while this write was prepared ({attempts} attempts); nothing was written, try again"
    )]
    KeptChanging {
        kind: Kind,
        name: String,
        attempts: usize,
    },
    #[error(
        "{kind} {name}: resourceVersion {value:?} is not valid (expected a number from `get -o yaml`)"
    )]
    BadResourceVersion {
        kind: Kind,
        name: String,
        value: String,
    },
    #[error("stored {kind} at {key} cannot be read: {message}")]
    Corrupt {
        kind: Kind,
        key: String,
        message: String,
    },
    #[error("{kind} {name} is not valid: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        kind: Kind,
        name: String,
        problems: Vec<gingham_model::ValidationError>,
    },
    #[error(
        "{kind} {name} already has label {key} with value {value}; nothing was changed (use --overwrite to replace it)"
    )]
    LabelExists {
        kind: Kind,
        name: String,
        key: String,
        value: String,
    },
    #[error(
        "IPPool {name}: spec.cidr {cidr} overlaps IPPool {other} ({other_cidr}); pools may not overlap (Calico refuses it too): choose a CIDR outside every other pool, or delete {other} in the same apply"
    )]
    PoolOverlap {
        name: String,
        cidr: IpNet,
        other: String,
        other_cidr: IpNet,
    },
    #[error("{kind} {name} appears more than once in the input; keep one copy")]
    Duplicate { kind: Kind, name: String },
    #[error(
        "{kind} {name} cannot be written or deleted: {kind} resources are read-only, shown from IPAM's block affinities (manage them with `gingham ipam`)"
    )]
    ReadOnly { kind: Kind, name: String },
    #[error(transparent)]
    Datastore(#[from] gingham_datastore::Error),
}

fn describe_found(found: Option<Revision>) -> String {
    match found {
        Some(r) => format!("it is now at resourceVersion {r}"),
        None => "it has been deleted since".into(),
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// How many times a write is planned again when other writers changed what it read.
pub const WRITE_ATTEMPTS: usize = 8;

/// How a write treats an existing resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Fails if the resource exists.
    Create,
    /// Fails if the resource does not exist.
    Replace,
    /// Creates or replaces.
    Apply,
}

/// What happened to one resource of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Replaced,
    Unchanged,
}

/// A resource client over one datastore.
#[derive(Clone)]
pub struct Client {
    store: Arc<dyn Datastore>,
}

/// A WorkloadEndpoint written again without the fields the CNI plugin owns (as a Pod converted
/// to an endpoint is: the controller knows labels, not interfaces) keeps the stored ones, so
/// re-applying a Pod with new labels relabels its running workload instead of unplugging it.
fn keep_cni_fields(new: &mut Resource, old: &Resource) {
    let (Resource::WorkloadEndpoint(new), Resource::WorkloadEndpoint(old)) = (new, old) else {
        return;
    };
    let (n, o) = (&mut new.spec, &old.spec);
    if n.ip_networks.is_empty() && n.mac.is_empty() {
        n.ip_networks = o.ip_networks.clone();
        n.interface_name = o.interface_name.clone();
        n.mac = o.mac.clone();
        if n.container_id.is_empty() {
            n.container_id = o.container_id.clone();
        }
    }
}

/// One resource's part of a write: the condition on its key and the write itself (none when
/// the stored value is already the desired one).
struct Unit {
    compare: Compare,
    op: Option<Op>,
}

enum Committed {
    Yes,
    /// Another writer changed something this write read: plan again.
    Retry,
}

/// A short pause before planning again, growing with the attempts and varying between
/// processes so that identical writers do not collide again in step.
fn retry_pause(attempt: usize) {
    let jitter = u64::from(std::process::id() % 7) + (uuid::Uuid::new_v4().as_u128() % 11) as u64;
    let ms = (5u64 << attempt.min(6)) + jitter;
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// A display name for errors: `ns/name` for namespaced resources.
fn display_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

impl Client {
    /// A client over `store`; writes of any size are all-or-nothing (see
    /// [`gingham_datastore::atomic`]).
    pub fn new(store: Arc<dyn Datastore>) -> Self {
        Self {
            store: Atomic::wrap(store),
        }
    }

    pub fn store(&self) -> &Arc<dyn Datastore> {
        &self.store
    }

    /// Reads one resource, with `resourceVersion` set.
    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<Resource> {
        if !kind.is_stored() {
            return self
                .list(kind, None)?
                .0
                .into_iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| ApiError::NotFound {
                    kind,
                    name: name.to_owned(),
                });
        }
        let key = kind.key(namespace, name);
        match self.store.get(&key)? {
            Some(kv) => decode(kind, &kv.key, &kv.value, kv.mod_revision),
            None => Err(ApiError::NotFound {
                kind,
                name: display_name(namespace, name),
            }),
        }
    }

    /// Lists resources of a kind, in one namespace or (with `None`) in all, ordered by key.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<(Vec<Resource>, Revision)> {
        list(self.store.as_ref(), kind, namespace)
    }

    /// Writes every resource or none: existence and `resourceVersion` conditions of all of them
    /// are checked in the same (logical) transaction as the writes. Returns one outcome per
    /// resource.
    ///
    /// A write of any size is all-or-nothing, also on etcd, whose transactions hold 128
    /// operations: the store is wrapped in [`Atomic`]. When another writer changes a resource
    /// between the read and the commit, the write is planned again from a fresh read (as kubectl
    /// does), up to [`WRITE_ATTEMPTS`] times; the conditions the caller set (`resourceVersion`,
    /// create, replace) are checked again each time.
    pub fn write_all(&self, resources: &[Resource], mode: WriteMode) -> Result<Vec<Outcome>> {
        Self::check_write(resources)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (plan, units, _) = self.plan(resources, mode)?;
            match self.commit(units, resources, attempt)? {
                Committed::Yes => return Ok(plan),
                Committed::Retry => retry_pause(attempt),
            }
        }
    }

    /// What [`Client::write_all`] would do, without writing: the same checks and the same plan
    /// from the current state (so the same errors), and each resource as it would be stored
    /// (identity fields and the CNI plugin's fields of an existing endpoint kept). Nothing is
    /// written: `apply --dry-run` leaves the datastore's revision where it was.
    pub fn dry_run(
        &self,
        resources: &[Resource],
        mode: WriteMode,
    ) -> Result<Vec<(Outcome, Resource)>> {
        Self::check_write(resources)?;
        let (plan, _, stored) = self.plan(resources, mode)?;
        Ok(plan.into_iter().zip(stored).collect())
    }

    /// The checks of a write that need no read: writable kinds, valid resources, no resource
    /// twice.
    fn check_write(resources: &[Resource]) -> Result<()> {
        for r in resources {
            refuse_read_only(r.kind(), r.meta().namespace.as_deref(), r.name())?;
        }
        // Every write path validates as `apply` does: nothing stored here can fail to load.
        for r in resources {
            let problems = gingham_model::validate(r);
            if !problems.is_empty() {
                return Err(ApiError::Invalid {
                    kind: r.kind(),
                    name: display_name(r.meta().namespace.as_deref(), &r.meta().name),
                    problems,
                });
            }
        }
        // The same resource twice in one write is ambiguous (and etcd refuses it).
        let mut seen = std::collections::HashSet::with_capacity(resources.len());
        for r in resources {
            if !seen.insert(r.key()) {
                return Err(ApiError::Duplicate {
                    kind: r.kind(),
                    name: display_name(r.meta().namespace.as_deref(), &r.meta().name),
                });
            }
        }
        Ok(())
    }

    /// Refuses IP pools that would overlap, as libcalico-go does: each pool written is
    /// compared with the other pools of the write and with the stored ones it does not
    /// replace. (Like Calico's check, this reads before it writes: two writers creating
    /// overlapping pools at the same instant are not both refused.)
    fn refuse_overlapping_pools(&self, resources: &[Resource]) -> Result<()> {
        let written: Vec<(&str, IpNet)> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::IpPool(p) => Some((p.metadata.name.as_str(), p.spec.cidr?)),
                _ => None,
            })
            .collect();
        if written.is_empty() {
            return Ok(());
        }
        let (stored, _) = self.list(Kind::IpPool, None)?;
        let stored: Vec<(String, IpNet)> = stored
            .iter()
            .filter_map(|r| match r {
                Resource::IpPool(p) => Some((p.metadata.name.clone(), p.spec.cidr?)),
                _ => None,
            })
            .filter(|(name, _)| !written.iter().any(|(w, _)| w == name))
            .collect();
        for (i, (name, cidr)) in written.iter().enumerate() {
            let others = written[..i]
                .iter()
                .map(|(n, c)| (*n, *c))
                .chain(stored.iter().map(|(n, c)| (n.as_str(), *c)));
            for (other, other_cidr) in others {
                if gingham_model::cidr::overlaps(cidr, &other_cidr) {
                    return Err(ApiError::PoolOverlap {
                        name: (*name).to_owned(),
                        cidr: *cidr,
                        other: other.to_owned(),
                        other_cidr,
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads the current state and decides what to write: an outcome, a unit of the
    /// transaction and the resource as it will be stored, for each resource.
    fn plan(
        &self,
        resources: &[Resource],
        mode: WriteMode,
    ) -> Result<(Vec<Outcome>, Vec<Unit>, Vec<Resource>)> {
        self.refuse_overlapping_pools(resources)?;
        let current = self.prefetch(resources)?;
        // Resolve the current state of every key first, to report precise errors.
        let mut plan = Vec::with_capacity(resources.len());
        let mut units = Vec::with_capacity(resources.len());
        let mut planned = Vec::with_capacity(resources.len());
        for r in resources {
            let kind = r.kind();
            let meta = r.meta();
            let ns = meta.namespace.as_deref();
            let name = display_name(ns, &meta.name);
            let key = r.key();
            let current = current.get(&key).cloned().flatten();
            let expected = match meta.resource_version.as_deref().filter(|v| !v.is_empty()) {
                Some(v) => {
                    Some(
                        v.parse::<Revision>()
                            .map_err(|_| ApiError::BadResourceVersion {
                                kind,
                                name: name.clone(),
                                value: v.to_owned(),
                            })?,
                    )
                }
                None => None,
            };
            let mut stored = r.clone();
            match (&current, mode) {
                (Some(_), WriteMode::Create) => {
                    return Err(ApiError::AlreadyExists { kind, name });
                }
                (None, WriteMode::Replace) => return Err(ApiError::NotFound { kind, name }),
                (None, _) => {
                    if let Some(e) = expected {
                        return Err(ApiError::Conflict {
                            kind,
                            name,
                            expected: e,
                            found: None,
                        });
                    }
                    let m = stored.meta_mut();
                    m.resource_version = None;
                    if m.uid.is_none() {
                        m.uid = Some(new_uid());
                    }
                    if m.creation_timestamp.is_none() {
                        m.creation_timestamp = Some(now_rfc3339());
                    }
                    units.push(Unit {
                        compare: Compare::Absent { key: key.clone() },
                        op: Some(Op::Put {
                            key,
                            value: stored.to_stored(),
                        }),
                    });
                    plan.push(Outcome::Created);
                    planned.push(stored);
                }
                (Some(kv), _) => {
                    if let Some(e) = expected
                        && e != kv.mod_revision
                    {
                        return Err(ApiError::Conflict {
                            kind,
                            name,
                            expected: e,
                            found: Some(kv.mod_revision),
                        });
                    }
                    // Keep identity fields of the stored object.
                    let old = decode(kind, &kv.key, &kv.value, kv.mod_revision)?;
                    let m = stored.meta_mut();
                    m.resource_version = None;
                    m.uid = old.meta().uid.clone();
                    m.creation_timestamp = old.meta().creation_timestamp.clone();
                    keep_cni_fields(&mut stored, &old);
                    let value = stored.to_stored();
                    let compare = Compare::ModRevision {
                        key: key.clone(),
                        revision: kv.mod_revision,
                    };
                    if value == kv.value {
                        units.push(Unit { compare, op: None });
                        plan.push(Outcome::Unchanged);
                    } else {
                        units.push(Unit {
                            compare,
                            op: Some(Op::Put { key, value }),
                        });
                        plan.push(Outcome::Replaced);
                    }
                    planned.push(stored);
                }
            }
        }
        Ok((plan, units, planned))
    }

    /// The stored value of every resource's key (`None`: absent). Kinds with many resources in
    /// the write are read with one listing instead of one read per resource.
    fn prefetch(
        &self,
        resources: &[Resource],
    ) -> Result<std::collections::HashMap<String, Option<KeyValue>>> {
        const LIST_THRESHOLD: usize = 16;
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in resources {
            let prefix = r.kind().key_prefix(r.meta().namespace.as_deref());
            groups.entry(prefix).or_default().push(r.key());
        }
        let mut out = std::collections::HashMap::with_capacity(resources.len());
        for (prefix, keys) in groups {
            if keys.len() >= LIST_THRESHOLD {
                let mut stored: std::collections::HashMap<String, KeyValue> = self
                    .store
                    .list(&prefix)?
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.key.clone(), kv))
                    .collect();
                for k in keys {
                    let v = stored.remove(&k);
                    out.insert(k, v);
                }
            } else {
                for k in keys {
                    let v = self.store.get(&k)?;
                    out.insert(k, v);
                }
            }
        }
        Ok(out)
    }

    /// Commits the units in one transaction (of any size: the store is [`Atomic`]). A failed
    /// condition means another writer changed a resource since it was read: plan again, or,
    /// after the last attempt, say which resource kept changing.
    fn commit(
        &self,
        units: Vec<Unit>,
        resources: &[Resource],
        attempt: usize,
    ) -> Result<Committed> {
        // Nothing to write: the read is the answer (conditions on unchanged resources would only
        // say that nothing changed in between, which no reader could tell apart from later).
        if units.iter().all(|u| u.op.is_none()) {
            return Ok(Committed::Yes);
        }
        let mut txn = Txn::new();
        for unit in units {
            txn.compares.push(unit.compare);
            txn.ops.extend(unit.op);
        }
        match self.store.txn(&txn)? {
            TxnOutcome::Committed { .. } => Ok(Committed::Yes),
            TxnOutcome::Failed { .. } if attempt < WRITE_ATTEMPTS => {
                tracing::debug!(
                    attempt,
                    "a resource changed while the write was prepared; planning again"
                );
                Ok(Committed::Retry)
            }
            TxnOutcome::Failed { failed_keys } => {
                let key = failed_keys.first().cloned().unwrap_or_default();
                let (kind, name) = match resources.iter().find(|r| r.key() == key) {
                    Some(r) => (
                        r.kind(),
                        display_name(r.meta().namespace.as_deref(), &r.meta().name),
                    ),
                    None => match Kind::parse_key(&key) {
                        Some((kind, ns, name)) => (kind, display_name(ns.as_deref(), &name)),
                        None => (resources[0].kind(), key.clone()),
                    },
                };
                Err(ApiError::KeptChanging {
                    kind,
                    name,
                    attempts: attempt,
                })
            }
        }
    }

    /// Deletes one resource, optionally only at `resource_version`.
    pub fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Resource> {
        refuse_read_only(kind, namespace, name)?;
        let key = kind.key(namespace, name);
        let shown = display_name(namespace, name);
        let expected = match resource_version.filter(|v| !v.is_empty()) {
            Some(v) => Some(
                v.parse::<Revision>()
                    .map_err(|_| ApiError::BadResourceVersion {
                        kind,
                        name: shown.clone(),
                        value: v.to_owned(),
                    })?,
            ),
            None => None,
        };
        match self.store.delete(&key, expected) {
            Ok(kv) => decode(kind, &kv.key, &kv.value, kv.mod_revision),
            Err(gingham_datastore::Error::NotFound { .. }) => {
                Err(ApiError::NotFound { kind, name: shown })
            }
            Err(gingham_datastore::Error::Conflict {
                expected, found, ..
            }) => Err(ApiError::Conflict {
                kind,
                name: shown,
                expected,
                found: (found != 0).then_some(found),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes several resources all-or-nothing; every one must exist.
    pub fn delete_all(&self, targets: &[(Kind, Option<String>, String)]) -> Result<Vec<Resource>> {
        for (kind, ns, name) in targets {
            refuse_read_only(*kind, ns.as_deref(), name)?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut units = Vec::with_capacity(targets.len());
            let mut deleted = Vec::new();
            for (kind, ns, name) in targets {
                let key = kind.key(ns.as_deref(), name);
                let Some(kv) = self.store.get(&key)? else {
                    return Err(ApiError::NotFound {
                        kind: *kind,
                        name: display_name(ns.as_deref(), name),
                    });
                };
                deleted.push(decode(*kind, &kv.key, &kv.value, kv.mod_revision)?);
                units.push(Unit {
                    compare: Compare::ModRevision {
                        key: key.clone(),
                        revision: kv.mod_revision,
                    },
                    op: Some(Op::Delete { key }),
                });
            }
            match self.commit(units, &deleted, attempt)? {
                Committed::Yes => return Ok(deleted),
                Committed::Retry => retry_pause(attempt),
            }
        }
    }

    /// Sets (or with `None` removes) labels on a stored resource, with compare-and-swap.
    pub fn label(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
        overwrite: bool,
    ) -> Result<Resource> {
        refuse_read_only(kind, namespace, name)?;
        let mut r = self.get(kind, namespace, name)?;
        {
            let labels = &mut r.meta_mut().labels;
            for (k, v) in changes {
                match v {
                    Some(v) => {
                        if !overwrite && labels.get(k).is_some_and(|old| old != v) {
                            return Err(ApiError::LabelExists {
                                kind,
                                name: display_name(namespace, name),
                                key: gingham_model::quote(k),
                                value: gingham_model::quote(&labels[k]),
                            });
                        }
                        labels.insert(k.clone(), v.clone());
                    }
                    None => {
                        labels.remove(k);
                    }
                }
            }
        }
        self.write_all(std::slice::from_ref(&r), WriteMode::Replace)?;
        self.get(kind, namespace, name)
    }
}

/// Refuses writes of kinds that are views of other data (BlockAffinity: IPAM's keys).
fn refuse_read_only(kind: Kind, namespace: Option<&str>, name: &str) -> Result<()> {
    if kind.is_stored() {
        Ok(())
    } else {
        Err(ApiError::ReadOnly {
            kind,
            name: display_name(namespace, name),
        })
    }
}

impl Client {
    /// Every block affinity of IPAM as a `BlockAffinity` resource (see [`block_affinities`]).
    pub fn block_affinities(&self) -> Result<(Vec<Resource>, Revision)> {
        block_affinities(self.store.as_ref())
    }
}

/// Lists resources of a kind in `store`, in one namespace or (with `None`) in all, ordered by
/// key ([`Client::list`] without a client, for readers that hold a plain store).
pub fn list(
    store: &dyn Datastore,
    kind: Kind,
    namespace: Option<&str>,
) -> Result<(Vec<Resource>, Revision)> {
    if kind == Kind::BlockAffinity {
        return block_affinities(store);
    }
    let prefix = kind.key_prefix(namespace);
    let listing = store.list(&prefix)?;
    let mut out = Vec::with_capacity(listing.kvs.len());
    for kv in &listing.kvs {
        // A prefix without a namespace also matches longer plural names; keep only this kind.
        match Kind::parse_key(&kv.key) {
            Some((k, _, _)) if k == kind => {}
            _ => continue,
        }
        out.push(decode(kind, &kv.key, &kv.value, kv.mod_revision)?);
    }
    Ok((out, listing.revision))
}

/// Every block affinity of IPAM (`/calico/ipam/v2/host/<node>/ipv<N>/block/<cidr>`) as a
/// `BlockAffinity` resource named as Calico names it, in key order; `resourceVersion` is the
/// affinity key's mod revision. IPAM's keys stay the one source of truth.
pub fn block_affinities(store: &dyn Datastore) -> Result<(Vec<Resource>, Revision)> {
    use gingham_ipam::stored;
    let listing = store.list(stored::HOST_PREFIX)?;
    let mut out = Vec::new();
    for kv in &listing.kvs {
        let Some((node, cidr)) = stored::parse_affinity_key(&kv.key) else {
            continue;
        };
        let aff = stored::BlockAffinity::from_bytes(&kv.value).map_err(|e| ApiError::Corrupt {
            kind: Kind::BlockAffinity,
            key: kv.key.clone(),
            message: e.to_string(),
        })?;
        let state = serde_json::to_value(aff.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut r = gingham_model::BlockAffinity::new(&node, &cidr, &state, aff.deleted);
        r.metadata.resource_version = Some(kv.mod_revision.to_string());
        out.push(Resource::BlockAffinity(r));
    }
    Ok((out, listing.revision))
}

fn decode(kind: Kind, key: &str, value: &[u8], revision: Revision) -> Result<Resource> {
    let mut r = Resource::from_stored(kind, value).map_err(|e| ApiError::Corrupt {
        kind,
        key: key.to_owned(),
        message: e.to_string(),
    })?;
    r.meta_mut().resource_version = Some(revision.to_string());
    Ok(r)
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The current UTC time as RFC 3339 with seconds, as Kubernetes prints timestamps.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_514), (2026, 3, 2));
    }

    #[test]
    fn uids_are_uuid_shaped_and_distinct() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
