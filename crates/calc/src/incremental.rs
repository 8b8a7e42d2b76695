//! Incremental calculation for one node: resource updates in, changes to the desired dataplane
//! state out (programs of local endpoints, members of the IP sets they use).
//!
//! What an update touches:
//! - an endpoint or network set: its contribution to each active IP set (one selector match
//!   per active set), and its own program when it is local;
//! - a policy: the local endpoints its old or new selector selects, and the sets its rules use;
//! - a profile: the endpoints and network sets that inherit its labels, and the local endpoints
//!   that use it;
//! - a tier: every local program (tier order changes them all).
//!
//! Applying the changes to the previous state always gives [`Snapshot::node_program`] of the new
//! inputs; a property test holds this over random update sequences.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gingham_model::defaults::NAMESPACE_LABEL;
use gingham_model::{Kind, Resource};
use gingham_selector::Interner;
use ipnet::IpNet;
use serde::Serialize;

use crate::index::LabelIndex;
use crate::program::{Builder, EndpointProgram, IpSet, NodeProgram, SetId, SetSpec};
use crate::snapshot::{
    DEFAULT_ALLOW_PROFILE, Endpoint, EndpointKind, LabelSet, Policy, PolicyKind, PolicyRef,
    Snapshot, TierInfo, network_policy_kind, tier_list,
};

/// An input change.
#[derive(Clone, Debug)]
pub enum Update {
    Upsert(Box<Resource>),
    Delete {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
}

/// A change to the desired state, in the order the dataplane should apply them: new sets before
/// the programs that use them, programs before the sets they stopped using are removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    SetAdded {
        id: SetId,
        members: IpSet,
    },
    SetUpdated {
        id: SetId,
        added: IpSet,
        removed: IpSet,
    },
    SetRemoved {
        id: SetId,
    },
    ProgramSet {
        endpoint: String,
        program: Box<EndpointProgram>,
    },
    ProgramRemoved {
        endpoint: String,
    },
}

/// An IP set some local program uses.
struct ActiveSet {
    spec: SetSpec,
    /// How many local programs reference it.
    refs: usize,
    /// Members with how many sources (endpoints, network sets) contribute each.
    nets: BTreeMap<IpNet, usize>,
    ports: BTreeMap<(IpNet, u8, u16), usize>,
}

impl ActiveSet {
    fn members(&self) -> IpSet {
        IpSet {
            nets: self.nets.keys().copied().collect(),
            ports: self.ports.keys().copied().collect(),
        }
    }

    /// Replaces one source's contribution; returns what entered and left the set.
    fn replace(&mut self, old: &IpSet, new: &IpSet) -> (IpSet, IpSet) {
        let mut added = IpSet::default();
        let mut removed = IpSet::default();
        for n in new.nets.difference(&old.nets) {
            let c = self.nets.entry(*n).or_insert(0);
            *c += 1;
            if *c == 1 {
                added.nets.insert(*n);
            }
        }
        for n in old.nets.difference(&new.nets) {
            if let Some(c) = self.nets.get_mut(n) {
                *c -= 1;
                if *c == 0 {
                    self.nets.remove(n);
                    removed.nets.insert(*n);
                }
            }
        }
        for p in new.ports.difference(&old.ports) {
            let c = self.ports.entry(*p).or_insert(0);
            *c += 1;
            if *c == 1 {
                added.ports.insert(*p);
            }
        }
        for p in old.ports.difference(&new.ports) {
            if let Some(c) = self.ports.get_mut(p) {
                *c -= 1;
                if *c == 0 {
                    self.ports.remove(p);
                    removed.ports.insert(*p);
                }
            }
        }
        (added, removed)
    }
}

/// The incremental calculator of one node.
pub struct Calculator {
    node: String,
    /// The Tier resources, by name (tiers are rebuilt from them and the policies' tiers).
    /// Every other input lives only in compiled form in `snap`: a policy is kept once.
    tier_inputs: BTreeMap<String, TierInfo>,
    snap: Snapshot,
    programs: BTreeMap<String, (EndpointProgram, BTreeSet<SetId>)>,
    active: BTreeMap<SetId, ActiveSet>,
    /// Position of each policy in `snap.policies`.
    policy_index: HashMap<PolicyRef, usize>,
    /// Policies by namespace (`None`: global ones), filed by a label their selector requires.
    /// A namespaced policy's selector always requires its namespace, so an endpoint is only
    /// matched against the global policies and those of the namespace its labels name, and of
    /// those, only against the ones its labels can match.
    by_namespace: HashMap<Option<String>, LabelIndex<PolicyRef>>,
    /// The active sets, filed by a label their selector requires: an endpoint or network set
    /// that changes is matched only against the sets its labels can be in.
    set_index: LabelIndex<SetId>,
    /// For each local endpoint with a program: the policies selecting it, and the kind and
    /// labels that was worked out for (a change of either recomputes it). A program is then
    /// built from its few policies instead of matching every policy again.
    selecting: HashMap<String, Selecting>,
    /// One copy of each distinct policy selector, shared by the policies that use it.
    selectors: Interner,
    /// Selector matches tried by updates so far (see [`Calculator::selector_tests`]).
    tests: usize,
    /// Position of each endpoint in `snap.endpoints`, by key.
    endpoint_at: HashMap<String, usize>,
    /// The keys of the endpoints on this node.
    local: BTreeSet<String>,
    /// Endpoints looked at to find one by key or the local ones (see
    /// [`Calculator::endpoints_visited`]).
    visits: std::cell::Cell<usize>,
}

struct Selecting {
    kind: EndpointKind,
    labels: LabelSet,
    policies: BTreeSet<PolicyRef>,
}

/// Collected changes of one update.
#[derive(Default)]
struct Pending {
    added: Vec<Change>,
    updated: BTreeMap<SetId, (IpSet, IpSet)>,
    programs: Vec<Change>,
    removed: Vec<Change>,
}

impl Pending {
    fn finish(self) -> Vec<Change> {
        let mut out = self.added;
        out.extend(
            self.updated
                .into_iter()
                .filter(|(_, (a, r))| !a.is_empty() || !r.is_empty())
                .map(|(id, (added, removed))| Change::SetUpdated { id, added, removed }),
        );
        out.extend(self.programs);
        out.extend(self.removed);
        out
    }
}

/// The compiled policy an input policy becomes (`None` for other kinds), as
/// [`Snapshot::build`] names it.
fn policy_ref(kind: Kind, namespace: Option<&str>, name: &str) -> Option<PolicyRef> {
    match kind {
        Kind::NetworkPolicy => Some(PolicyRef {
            kind: network_policy_kind(name),
            namespace: Some(namespace.unwrap_or_default().to_owned()),
            name: name.to_owned(),
        }),
        Kind::GlobalNetworkPolicy => Some(PolicyRef {
            kind: PolicyKind::GlobalNetworkPolicy,
            namespace: None,
            name: name.to_owned(),
        }),
        _ => None,
    }
}

fn input_key(kind: Kind, namespace: Option<&str>, name: &str) -> (Kind, String) {
    match namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => (kind, format!("{ns}/{name}")),
        None => (kind, name.to_owned()),
    }
}

impl Calculator {
    /// A calculator for `node` with no inputs.
    pub fn new(node: &str) -> Self {
        Calculator {
            node: node.to_owned(),
            tier_inputs: BTreeMap::new(),
            selectors: Interner::new(),
            snap: Snapshot::build(&[]),
            programs: BTreeMap::new(),
            active: BTreeMap::new(),
            policy_index: HashMap::new(),
            by_namespace: HashMap::new(),
            set_index: LabelIndex::default(),
            selecting: HashMap::new(),
            tests: 0,
            endpoint_at: HashMap::new(),
            local: BTreeSet::new(),
            visits: std::cell::Cell::new(0),
        }
    }

    /// Replaces every input at once (a cold start or a resync) and returns the changes from the
    /// previous state. Costs one full calculation instead of one update per resource.
    pub fn load_all(&mut self, resources: Vec<Resource>) -> Vec<Change> {
        // The same object twice: the last one wins, as with one update each.
        let mut unique: BTreeMap<(Kind, String), usize> = BTreeMap::new();
        for (i, r) in resources.iter().enumerate() {
            let m = r.meta();
            unique.insert(input_key(r.kind(), m.namespace.as_deref(), &m.name), i);
        }
        let mut slots: Vec<Option<Resource>> = resources.into_iter().map(Some).collect();
        let all: Vec<Resource> = unique
            .into_values()
            .filter_map(|i| slots[i].take())
            .collect();
        drop(slots);
        self.snap = Snapshot::build(&all);
        self.index_endpoints();
        for p in &mut self.snap.policies {
            p.share_selectors(&mut self.selectors);
        }
        self.selecting.clear();
        self.tier_inputs = all
            .iter()
            .filter_map(|r| match r {
                Resource::Tier(t) => Some((t.metadata.name.clone(), TierInfo::of(t))),
                _ => None,
            })
            .collect();
        drop(all);
        self.policy_index = self
            .snap
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        self.by_namespace.clear();
        for p in &self.snap.policies {
            self.by_namespace
                .entry(p.id.namespace.clone())
                .or_default()
                .insert(p.id.clone(), Some(&p.selector));
        }
        // Sets keep their identity; members are recomputed from the new snapshot.
        let mut pending = Pending::default();
        let ids: Vec<SetId> = self.active.keys().cloned().collect();
        for id in ids {
            let Some(set) = self.active.get_mut(&id) else {
                continue;
            };
            let before = set.members();
            let after = set.spec.members(&self.snap);
            recount(set, &self.snap);
            let added = IpSet {
                nets: after.nets.difference(&before.nets).copied().collect(),
                ports: after.ports.difference(&before.ports).copied().collect(),
            };
            let removed = IpSet {
                nets: before.nets.difference(&after.nets).copied().collect(),
                ports: before.ports.difference(&after.ports).copied().collect(),
            };
            merge(&mut pending, &id, added, removed);
        }
        let mut keys: BTreeSet<String> = self.programs.keys().cloned().collect();
        keys.extend(self.local_endpoints().map(|e| e.key.clone()));
        for k in keys {
            self.refresh_program(&k, &mut pending);
        }
        pending.finish()
    }

    /// The current desired state (what applying every change so far gives).
    /// The resources the calculator holds, compiled (every endpoint, node and policy).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// How many selector matches updates have tried so far (a policy against an endpoint, a
    /// set against an endpoint or network set): the part of an update's work that could grow
    /// with the cluster. Tests read it before and after an update.
    pub fn selector_tests(&self) -> usize {
        self.tests
    }

    /// How many endpoints updates have looked at so far to find the one they change, or the
    /// local ones: with every endpoint scanned, this grows with the cluster. Tests read it
    /// before and after an update.
    pub fn endpoints_visited(&self) -> usize {
        self.visits.get()
    }

    pub fn state(&self) -> NodeProgram {
        NodeProgram {
            endpoints: self
                .programs
                .iter()
                .map(|(k, (p, _))| (k.clone(), p.clone()))
                .collect(),
            sets: self
                .active
                .iter()
                .map(|(k, s)| (k.clone(), s.members()))
                .collect(),
        }
    }

    /// Applies one input change and returns the changes to the desired state.
    pub fn apply(&mut self, update: Update) -> Vec<Change> {
        let (key, policy, new) = match update {
            Update::Upsert(r) => {
                let m = r.meta();
                (
                    input_key(r.kind(), m.namespace.as_deref(), &m.name),
                    policy_ref(r.kind(), m.namespace.as_deref(), &m.name),
                    Some(*r),
                )
            }
            Update::Delete {
                kind,
                namespace,
                name,
            } => (
                input_key(kind, namespace.as_deref(), &name),
                policy_ref(kind, namespace.as_deref(), &name),
                None,
            ),
        };
        if key.0 == Kind::Tier {
            match &new {
                Some(Resource::Tier(t)) => {
                    self.tier_inputs.insert(key.1.clone(), TierInfo::of(t));
                }
                _ => {
                    self.tier_inputs.remove(&key.1);
                }
            }
        }
        let mut pending = Pending::default();
        match key.0 {
            Kind::WorkloadEndpoint | Kind::HostEndpoint => {
                self.endpoint_changed(key.0, &key.1, new.as_ref(), &mut pending)
            }
            Kind::NetworkSet | Kind::GlobalNetworkSet => {
                self.netset_changed(&key.1, new.as_ref(), &mut pending)
            }
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy => {
                if let Some(id) = policy {
                    self.policy_changed(id, new.as_ref(), &mut pending)
                }
            }
            Kind::Profile => self.profile_changed(&key.1, new.as_ref(), &mut pending),
            Kind::Tier => self.tiers_changed(&mut pending),
            // Staged policies are not enforced; nodes, pools, Felix settings do not change
            // programs.
            _ => {}
        }
        pending.finish()
    }

    /// Compiles one resource in the context of the current profiles.
    fn compile(&self, r: &Resource) -> Snapshot {
        let mut s = Snapshot::build(std::slice::from_ref(r));
        for e in &mut s.endpoints {
            e.effective_labels = self.snap.effective_labels(&e.labels, &e.profiles);
        }
        for n in &mut s.netsets {
            n.labels = self.snap.effective_labels(&n.own_labels, &n.profiles());
        }
        s
    }

    /// One source of set members (an endpoint or a network set) changed from `old` to `new`:
    /// the active sets whose selectors the labels of either can match (and only those) trade
    /// what `old` contributed for what `new` does.
    fn move_members<T>(
        &mut self,
        old: Option<&T>,
        new: Option<&T>,
        labels: impl Fn(&T) -> &LabelSet,
        members: impl Fn(&SetSpec, &T) -> IpSet,
        pending: &mut Pending,
    ) {
        let ids: BTreeSet<SetId> = old
            .into_iter()
            .chain(new)
            .flat_map(|x| self.set_index.candidates(labels(x)))
            .cloned()
            .collect();
        self.tests += ids.len();
        for id in &ids {
            let Some(set) = self.active.get_mut(id) else {
                continue;
            };
            let before = old.map(|x| members(&set.spec, x)).unwrap_or_default();
            let after = new.map(|x| members(&set.spec, x)).unwrap_or_default();
            if before != after {
                let (added, removed) = set.replace(&before, &after);
                merge(pending, id, added, removed);
            }
        }
    }

    /// Replaces (or removes) an endpoint, updating set contributions and its program.
    fn set_endpoint(&mut self, key: &str, new: Option<Endpoint>, pending: &mut Pending) {
        let old = self.take_endpoint(key);
        self.move_members(
            old.as_ref(),
            new.as_ref(),
            |e| &e.effective_labels,
            SetSpec::endpoint_members,
            pending,
        );
        if let Some(e) = new {
            self.put_endpoint(e);
        }
        self.refresh_program(key, pending);
    }

    fn endpoint_changed(
        &mut self,
        kind: Kind,
        name: &str,
        new: Option<&Resource>,
        pending: &mut Pending,
    ) {
        // The same key `Snapshot` gives the endpoint (see `Endpoint::key`).
        let key = match kind {
            Kind::HostEndpoint => format!("HostEndpoint/{name}"),
            _ => format!("WorkloadEndpoint/{name}"),
        };
        let new_ep = new.and_then(|r| self.compile(r).endpoints.into_iter().next());
        self.set_endpoint(&key, new_ep, pending);
    }

    fn netset_changed(&mut self, name: &str, new: Option<&Resource>, pending: &mut Pending) {
        let pos = self.snap.netsets.iter().position(|n| n.name == name);
        let before = pos.map(|i| self.snap.netsets.remove(i));
        let after = new.and_then(|r| self.compile(r).netsets.into_iter().next());
        self.move_members(
            before.as_ref(),
            after.as_ref(),
            |n| &n.labels,
            SetSpec::netset_members,
            pending,
        );
        if let Some(n) = after {
            self.snap.netsets.push(n);
        }
    }

    /// Policy `id` is now `new` (`None`: deleted). The old version is the compiled one in the
    /// snapshot (the calculator keeps no other copy of a policy).
    fn policy_changed(&mut self, id: PolicyRef, new: Option<&Resource>, pending: &mut Pending) {
        let new_snap = new.map(|r| self.compile(r));
        let new_p = new_snap
            .and_then(|s| {
                self.snap.warnings.extend(s.warnings);
                s.policies.into_iter().next()
            })
            .map(|mut p| {
                p.share_selectors(&mut self.selectors);
                p
            });
        let old_p = self.policy_index.get(&id).map(|&i| &self.snap.policies[i]);
        // The local endpoints the old or the new version selects, and whether the new one does.
        let mut tests = 0;
        let affected: Vec<(String, bool)> = self
            .local_endpoints()
            .filter_map(|e| {
                tests += usize::from(new_p.is_some()) + usize::from(old_p.is_some());
                let now = new_p.as_ref().is_some_and(|p| p.selects(e));
                (now || old_p.is_some_and(|p| p.selects(e))).then(|| (e.key.clone(), now))
            })
            .collect();
        self.tests += tests;
        let changed_id = (old_p.is_some() || new_p.is_some()).then_some(id);
        if let Some(id) = &changed_id
            && let Some(i) = self.policy_index.remove(id)
        {
            let old = self.snap.policies.swap_remove(i);
            if let Some(moved) = self.snap.policies.get(i) {
                self.policy_index.insert(moved.id.clone(), i);
            }
            if let Some(ids) = self.by_namespace.get_mut(&id.namespace) {
                ids.remove(id, Some(&old.selector));
            }
        }
        if let Some(p) = new_p {
            if !self.snap.tiers.iter().any(|t| t.name == p.tier) {
                self.snap.tiers.push(TierInfo {
                    name: p.tier.clone(),
                    order: None,
                    default_action: gingham_model::Action::Deny,
                    exists: p.tier == gingham_model::policy::DEFAULT_TIER,
                });
                self.sort_tiers();
            }
            self.policy_index
                .insert(p.id.clone(), self.snap.policies.len());
            self.by_namespace
                .entry(p.id.namespace.clone())
                .or_default()
                .insert(p.id.clone(), Some(&p.selector));
            self.snap.policies.push(p);
        }
        if let Some(id) = changed_id {
            for (name, now) in &affected {
                if let Some(sel) = self.selecting.get_mut(name) {
                    sel.policies.remove(&id);
                    if *now {
                        sel.policies.insert(id.clone());
                    }
                }
            }
        }
        for (name, _) in affected {
            self.refresh_program(&name, pending);
        }
    }

    /// Works out the policies selecting a local endpoint, unless the cache holds them for its
    /// kind and labels; [`Calculator::selected`] then lists them.
    fn refresh_selecting(&mut self, e: &Endpoint) {
        let fresh = self
            .selecting
            .get(&e.key)
            .is_some_and(|s| s.kind == e.kind && s.labels == e.effective_labels);
        if !fresh {
            let namespace = e.effective_labels.get(NAMESPACE_LABEL).map(str::to_owned);
            let mut candidates: Vec<&PolicyRef> = Vec::new();
            for ns in [None, namespace.filter(|_| e.kind != EndpointKind::Host)] {
                if let Some(ids) = self.by_namespace.get(&ns) {
                    candidates.extend(ids.candidates(&e.effective_labels));
                }
            }
            self.tests += candidates.len();
            let policies = candidates
                .into_iter()
                .filter_map(|id| self.policy_index.get(id))
                .map(|&i| &self.snap.policies[i])
                .filter(|p| p.selects(e))
                .map(|p| p.id.clone())
                .collect();
            self.selecting.insert(
                e.key.clone(),
                Selecting {
                    kind: e.kind,
                    labels: e.effective_labels.clone(),
                    policies,
                },
            );
        }
    }

    /// The policies selecting a local endpoint, as [`Calculator::refresh_selecting`] left
    /// them (borrowed: building a program copies no policy).
    fn selected(&self, key: &str) -> Vec<&Policy> {
        self.selecting
            .get(key)
            .into_iter()
            .flat_map(|s| &s.policies)
            .filter_map(|id| self.policy_index.get(id))
            .map(|&i| &self.snap.policies[i])
            .collect()
    }

    fn profile_changed(&mut self, name: &str, new: Option<&Resource>, pending: &mut Pending) {
        match new.and_then(|r| self.compile(r).profiles.remove(name)) {
            Some(info) => {
                self.snap.profiles.insert(name.to_owned(), info);
            }
            None => {
                self.snap.profiles.remove(name);
                // The built-in allow-all profile exists even when not stored.
                if name == DEFAULT_ALLOW_PROFILE
                    && let Some(builtin) = Snapshot::build(&[]).profiles.remove(name)
                {
                    self.snap.profiles.insert(name.to_owned(), builtin);
                }
            }
        }
        // Endpoints and network sets inheriting its labels.
        let users: Vec<Endpoint> = self
            .snap
            .endpoints
            .iter()
            .filter(|e| e.profiles.iter().any(|p| p == name))
            .cloned()
            .collect();
        for mut e in users {
            e.effective_labels = self.snap.effective_labels(&e.labels, &e.profiles);
            let k = e.key.clone();
            self.set_endpoint(&k, Some(e), pending);
        }
        let sets: Vec<String> = self
            .snap
            .netsets
            .iter()
            .filter(|n| n.profiles().iter().any(|p| p == name))
            .map(|n| n.name.clone())
            .collect();
        for set_name in sets {
            let Some(pos) = self.snap.netsets.iter().position(|n| n.name == set_name) else {
                continue;
            };
            let before = self.snap.netsets.remove(pos);
            let mut after = before.clone();
            after.labels = self
                .snap
                .effective_labels(&after.own_labels, &after.profiles());
            self.move_members(
                Some(&before),
                Some(&after),
                |n| &n.labels,
                SetSpec::netset_members,
                pending,
            );
            self.snap.netsets.push(after);
        }
    }

    fn tiers_changed(&mut self, pending: &mut Pending) {
        // Tiers are few: rebuild their list, as a full build would.
        self.snap.tiers = tier_list(self.tier_inputs.clone(), &self.snap.policies);
        self.selecting.clear();
        let names: Vec<String> = self.local_endpoints().map(|e| e.key.clone()).collect();
        for name in names {
            self.refresh_program(&name, pending);
        }
    }

    fn sort_tiers(&mut self) {
        use crate::snapshot::OrderKey;
        self.snap.tiers.sort_by(|a, b| {
            OrderKey(a.order)
                .cmp(&OrderKey(b.order))
                .then_with(|| a.name.cmp(&b.name))
        });
    }

    fn local_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.local.iter().filter_map(|k| self.endpoint(k))
    }

    /// The endpoint with this key.
    fn endpoint(&self, key: &str) -> Option<&Endpoint> {
        self.visits.set(self.visits.get() + 1);
        let &i = self.endpoint_at.get(key)?;
        self.snap.endpoints.get(i)
    }

    /// Files every endpoint of the snapshot by key (after it was built whole).
    fn index_endpoints(&mut self) {
        self.endpoint_at = self
            .snap
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
        self.local = self
            .snap
            .endpoints
            .iter()
            .filter(|e| e.node == self.node)
            .map(|e| e.key.clone())
            .collect();
    }

    /// Takes the endpoint with this key out of the snapshot (the last one takes its place).
    fn take_endpoint(&mut self, key: &str) -> Option<Endpoint> {
        self.visits.set(self.visits.get() + 1);
        let i = self.endpoint_at.remove(key)?;
        self.local.remove(key);
        let e = self.snap.endpoints.swap_remove(i);
        if let Some(moved) = self.snap.endpoints.get(i) {
            self.endpoint_at.insert(moved.key.clone(), i);
        }
        Some(e)
    }

    /// Adds an endpoint to the snapshot (none with its key is there).
    fn put_endpoint(&mut self, e: Endpoint) {
        self.endpoint_at
            .insert(e.key.clone(), self.snap.endpoints.len());
        if e.node == self.node {
            self.local.insert(e.key.clone());
        }
        self.snap.endpoints.push(e);
    }

    /// Recomputes one endpoint's program (removing it if the endpoint is gone or not local).
    fn refresh_program(&mut self, name: &str, pending: &mut Pending) {
        let ep = self.endpoint(name).filter(|e| e.node == self.node).cloned();
        let built = ep.map(|e| {
            self.refresh_selecting(&e);
            let policies = self.selected(&e.key);
            let mut b = Builder::new(&self.snap, false);
            b.preselected = true;
            let program = b.endpoint(&policies, &e);
            self.tests += b.matched;
            (program, b.specs)
        });
        if built.is_none() {
            self.selecting.remove(name);
        }
        let old_ids = self
            .programs
            .get(name)
            .map(|(_, ids)| ids.clone())
            .unwrap_or_default();
        match built {
            Some((program, specs)) => {
                let ids: BTreeSet<SetId> = specs.keys().cloned().collect();
                for (id, spec) in specs {
                    if !old_ids.contains(&id) {
                        self.activate(id, spec, pending);
                    }
                }
                let changed = self.programs.get(name).is_none_or(|(p, _)| *p != program);
                if changed {
                    pending.programs.push(Change::ProgramSet {
                        endpoint: name.to_owned(),
                        program: Box::new(program.clone()),
                    });
                }
                for id in old_ids.difference(&ids) {
                    self.deactivate(id, pending);
                }
                self.programs.insert(name.to_owned(), (program, ids));
            }
            None => {
                if self.programs.remove(name).is_some() {
                    pending.programs.push(Change::ProgramRemoved {
                        endpoint: name.to_owned(),
                    });
                    for id in &old_ids {
                        self.deactivate(id, pending);
                    }
                }
            }
        }
    }

    fn activate(&mut self, id: SetId, spec: SetSpec, pending: &mut Pending) {
        if let Some(set) = self.active.get_mut(&id) {
            set.refs += 1;
            return;
        }
        let mut set = ActiveSet {
            spec,
            refs: 1,
            nets: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        recount(&mut set, &self.snap);
        self.set_index.insert(id.clone(), set.spec.selector());
        // A set removed and added again within one update is just an update.
        if let Some(pos) = pending
            .removed
            .iter()
            .position(|c| matches!(c, Change::SetRemoved { id: r } if *r == id))
        {
            pending.removed.remove(pos);
        }
        pending.updated.remove(&id);
        pending.added.push(Change::SetAdded {
            id: id.clone(),
            members: set.members(),
        });
        self.active.insert(id, set);
    }

    fn deactivate(&mut self, id: &SetId, pending: &mut Pending) {
        let Some(set) = self.active.get_mut(id) else {
            return;
        };
        set.refs -= 1;
        if set.refs == 0 {
            if let Some(set) = self.active.remove(id) {
                self.set_index.remove(id, set.spec.selector());
            }
            pending.updated.remove(id);
            match pending
                .added
                .iter()
                .position(|c| matches!(c, Change::SetAdded { id: a, .. } if a == id))
            {
                // Added and removed within one update: neither needs to reach the dataplane.
                Some(pos) => {
                    pending.added.remove(pos);
                }
                None => pending.removed.push(Change::SetRemoved { id: id.clone() }),
            }
        }
    }
}

/// Recomputes a set's per-member source counts from a snapshot.
fn recount(set: &mut ActiveSet, snap: &Snapshot) {
    set.nets.clear();
    set.ports.clear();
    let empty = IpSet::default();
    for e in &snap.endpoints {
        let m = set.spec.endpoint_members(e);
        set.replace(&empty, &m);
    }
    for n in &snap.netsets {
        let m = set.spec.netset_members(n);
        set.replace(&empty, &m);
    }
}

fn merge(pending: &mut Pending, id: &SetId, added: IpSet, removed: IpSet) {
    // A set added in this same update already carries its members.
    if pending
        .added
        .iter()
        .any(|c| matches!(c, Change::SetAdded { id: a, .. } if a == id))
    {
        if let Some(Change::SetAdded { members, .. }) = pending
            .added
            .iter_mut()
            .find(|c| matches!(c, Change::SetAdded { id: a, .. } if a == id))
        {
            for n in &removed.nets {
                members.nets.remove(n);
            }
            for p in &removed.ports {
                members.ports.remove(p);
            }
            members.extend(added);
        }
        return;
    }
    let entry = pending.updated.entry(id.clone()).or_default();
    for n in removed.nets {
        if !entry.0.nets.remove(&n) {
            entry.1.nets.insert(n);
        }
    }
    for p in removed.ports {
        if !entry.0.ports.remove(&p) {
            entry.1.ports.insert(p);
        }
    }
    for n in added.nets {
        if !entry.1.nets.remove(&n) {
            entry.0.nets.insert(n);
        }
    }
    for p in added.ports {
        if !entry.1.ports.remove(&p) {
            entry.0.ports.insert(p);
        }
    }
}

/// Applies changes to a copy of the desired state (what a dataplane does with them).
pub fn apply_changes(state: &mut NodeProgram, changes: &[Change]) {
    for c in changes {
        match c {
            Change::SetAdded { id, members } => {
                state.sets.insert(id.clone(), members.clone());
            }
            Change::SetUpdated { id, added, removed } => {
                let set = state.sets.entry(id.clone()).or_default();
                for n in &removed.nets {
                    set.nets.remove(n);
                }
                for p in &removed.ports {
                    set.ports.remove(p);
                }
                set.extend(added.clone());
            }
            Change::SetRemoved { id } => {
                state.sets.remove(id);
            }
            Change::ProgramSet { endpoint, program } => {
                state
                    .endpoints
                    .insert(endpoint.clone(), (**program).clone());
            }
            Change::ProgramRemoved { endpoint } => {
                state.endpoints.remove(endpoint);
            }
        }
    }
}
