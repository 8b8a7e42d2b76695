//! The kube-rs plumbing: a reflector per watched kind (a watch that ends, 410 Gone included,
//! relists; the store is swapped whole once the list is complete), and one reconciler thread
//! that runs the pure passes of [`crate::reconcile`] and [`crate::ipam_gc`] against the
//! datastore when a kind changes, after every (re)list, and periodically.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gingham_api::Client;
use gingham_datastore::Datastore;
use gingham_ipam::Ipam;
use gingham_model::k8s::{K8sNamespace, K8sNetworkPolicy, K8sPod, K8sServiceAccount};
use gingham_model::{Kind, Resource};
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::health::Health;
use crate::ipam_gc::{self, Allocation, Cluster, Confirmed, Gc};
use crate::reconcile::{self, Desired, Owner};
use crate::{Config, Error};

/// The Kubernetes kinds watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watched {
    NetworkPolicies,
    Namespaces,
    ServiceAccounts,
    Pods,
    Nodes,
}

impl Watched {
    pub const ALL: [Watched; 5] = [
        Watched::NetworkPolicies,
        Watched::Namespaces,
        Watched::ServiceAccounts,
        Watched::Pods,
        Watched::Nodes,
    ];

    /// The resource's plural name (as the API and `/readiness` say it).
    pub fn name(self) -> &'static str {
        match self {
            Watched::NetworkPolicies => "networkpolicies",
            Watched::Namespaces => "namespaces",
            Watched::ServiceAccounts => "serviceaccounts",
            Watched::Pods => "pods",
            Watched::Nodes => "nodes",
        }
    }

    /// The passes a change of this kind calls for.
    fn tasks(self) -> &'static [Task] {
        match self {
            Watched::NetworkPolicies => &[Task::Own(Owner::Policies)],
            Watched::Namespaces => &[Task::Own(Owner::Namespaces)],
            Watched::ServiceAccounts => &[Task::Own(Owner::ServiceAccounts)],
            Watched::Pods => &[Task::Pods, Task::Ipam],
            Watched::Nodes => &[Task::Nodes, Task::Ipam],
        }
    }
}

/// One pass of one controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Own(Owner),
    Pods,
    Nodes,
    Ipam,
}

impl Task {
    const ALL: [Task; 6] = [
        Task::Own(Owner::Policies),
        Task::Own(Owner::Namespaces),
        Task::Own(Owner::ServiceAccounts),
        Task::Pods,
        Task::Nodes,
        Task::Ipam,
    ];

    /// The kinds whose caches must be complete before the pass may run.
    fn needs(self) -> &'static [Watched] {
        match self {
            Task::Own(Owner::Policies) => &[Watched::NetworkPolicies],
            Task::Own(Owner::Namespaces) => &[Watched::Namespaces],
            Task::Own(Owner::ServiceAccounts) => &[Watched::ServiceAccounts],
            Task::Pods => &[Watched::Pods],
            Task::Nodes => &[Watched::Nodes],
            Task::Ipam => &[Watched::Pods, Watched::Nodes],
        }
    }

    /// The kind whose first sync this pass completes (for `/readiness`).
    fn completes(self) -> Option<Watched> {
        match self {
            Task::Own(Owner::Policies) => Some(Watched::NetworkPolicies),
            Task::Own(Owner::Namespaces) => Some(Watched::Namespaces),
            Task::Own(Owner::ServiceAccounts) => Some(Watched::ServiceAccounts),
            Task::Pods => Some(Watched::Pods),
            Task::Nodes => Some(Watched::Nodes),
            Task::Ipam => None,
        }
    }
}

enum Signal {
    /// An object of the kind was added, changed or deleted.
    Changed(Watched),
    /// The kind's cache holds a complete listing (after the first list or a relist).
    Listed(Watched),
    /// A WorkloadEndpoint changed in the datastore (the CNI plugin made one, perhaps with
    /// labels older than its pod's).
    Endpoints,
    Stop,
}

/// The caches of every watched kind.
#[derive(Clone)]
struct Stores {
    policies: Store<NetworkPolicy>,
    namespaces: Store<Namespace>,
    service_accounts: Store<ServiceAccount>,
    pods: Store<Pod>,
    nodes: Store<KubeNode>,
}

/// A Kubernetes object as the model's conversion reads it.
fn decode<K: Serialize, T: DeserializeOwned>(obj: &K) -> Result<T, String> {
    let mut v = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    if let serde_json::Value::Object(m) = &mut v {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn decode_all<K: Serialize + ResourceExt, T: DeserializeOwned>(objs: &[Arc<K>]) -> Vec<T> {
    objs.iter()
        .filter_map(|o| match decode(o.as_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(object = %o.name_any(), error = %e, "cannot read a Kubernetes object; skipped");
                None
            }
        })
        .collect()
}

fn spawn_watch<K>(
    api: Api<K>,
    kind: Watched,
    tx: mpsc::Sender<Signal>,
    health: Health,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let signal = match item {
                Ok(ev) => {
                    health.state().problems.set(kind.name(), None);
                    match ev {
                        watcher::Event::Init => {
                            health.metrics.relists.inc();
                            None
                        }
                        watcher::Event::InitApply(_) => None,
                        watcher::Event::InitDone => Some(Signal::Listed(kind)),
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                            Some(Signal::Changed(kind))
                        }
                    }
                }
                Err(e) => {
                    health.metrics.errors.inc();
                    health.state().problems.set(
                        kind.name(),
                        Some(format!(
                            "cannot list or watch {} on the Kubernetes API server: {e}",
                            kind.name()
                        )),
                    );
                    None
                }
            };
            if let Some(s) = signal
                && tx.send(s).is_err()
            {
                return;
            }
        }
    });
    (reader, task)
}

/// Runs the controllers until `shutdown` completes: watches the five kinds through `kube`,
/// and keeps `store` in line with them. Health goes to `health`.
pub async fn run(
    kube: kube::Client,
    store: Arc<dyn Datastore>,
    config: Config,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    health.state().expected = Watched::ALL.iter().map(|w| w.name()).collect();
    let (tx, rx) = mpsc::channel();
    let (policies, t1) = spawn_watch(
        Api::<NetworkPolicy>::all(kube.clone()),
        Watched::NetworkPolicies,
        tx.clone(),
        health.clone(),
    );
    let (namespaces, t2) = spawn_watch(
        Api::<Namespace>::all(kube.clone()),
        Watched::Namespaces,
        tx.clone(),
        health.clone(),
    );
    let (service_accounts, t3) = spawn_watch(
        Api::<ServiceAccount>::all(kube.clone()),
        Watched::ServiceAccounts,
        tx.clone(),
        health.clone(),
    );
    let (pods, t4) = spawn_watch(
        Api::<Pod>::all(kube.clone()),
        Watched::Pods,
        tx.clone(),
        health.clone(),
    );
    let (nodes, t5) = spawn_watch(
        Api::<KubeNode>::all(kube.clone()),
        Watched::Nodes,
        tx.clone(),
        health.clone(),
    );
    let tasks = [t1, t2, t3, t4, t5];
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpoints = watch_endpoints(store.clone(), tx.clone(), stopping.clone())?;
    let reconciler = Reconciler {
        client: Client::new(store.clone()),
        store,
        gc: Gc::new(config.leak_grace),
        config,
        health,
        stores: Stores {
            policies,
            namespaces,
            service_accounts,
            pods,
            nodes,
        },
        kube,
        rt: tokio::runtime::Handle::current(),
    };
    let thread = std::thread::Builder::new()
        .name("reconciler".into())
        .spawn(move || reconciler.run(rx))
        .map_err(Error::Thread)?;
    shutdown.await;
    for t in &tasks {
        t.abort();
    }
    let _ = tx.send(Signal::Stop);
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        let _ = thread.join();
        let _ = endpoints.join();
    })
    .await
    .ok();
    Ok(())
}

/// Watches the datastore's WorkloadEndpoints: each change asks for a pod pass. A lost watch
/// (compacted, unavailable) is opened again from the current revision, with a pass.
fn watch_endpoints(
    store: Arc<dyn Datastore>,
    tx: mpsc::Sender<Signal>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, Error> {
    let prefix = Kind::WorkloadEndpoint.key_prefix(None);
    std::thread::Builder::new()
        .name("endpoints".into())
        .spawn(move || {
            let stopped = || stopping.load(std::sync::atomic::Ordering::Relaxed);
            while !stopped() {
                let watch = store
                    .revision()
                    .and_then(|rev| store.watch(&prefix, rev).map(|w| (w, rev)));
                let mut watch = match watch {
                    Ok((w, _)) => w,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch the datastore's endpoints; trying again");
                        std::thread::sleep(RETRY);
                        continue;
                    }
                };
                if tx.send(Signal::Endpoints).is_err() {
                    return;
                }
                while !stopped() {
                    match watch.next(Duration::from_millis(200)) {
                        Ok(None) => {}
                        Ok(Some(_)) => {
                            if tx.send(Signal::Endpoints).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "the datastore's endpoint watch ended; watching again");
                            break;
                        }
                    }
                }
            }
        })
        .map_err(Error::Thread)
}

struct Reconciler {
    client: Client,
    store: Arc<dyn Datastore>,
    config: Config,
    health: Health,
    gc: Gc,
    stores: Stores,
    kube: kube::Client,
    rt: tokio::runtime::Handle,
}

/// How long the reconciler gathers further changes after the first one before a pass.
const COALESCE: Duration = Duration::from_millis(50);

/// How soon a failed pass is tried again.
const RETRY: Duration = Duration::from_secs(1);

impl Reconciler {
    fn run(mut self, rx: mpsc::Receiver<Signal>) {
        let mut listed: BTreeSet<Watched> = BTreeSet::new();
        let mut dirty: BTreeSet<Task> = BTreeSet::new();
        let start = Instant::now();
        let mut next_resync = start + self.config.resync;
        let mut next_gc = start + self.config.gc_interval();
        let mut retry_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let deadline = [Some(next_resync), Some(next_gc), retry_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_resync);
            let mut signals = Vec::new();
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(s) => {
                    signals.push(s);
                    // Gather what else arrives in a short window, so that a burst (one
                    // `kubectl apply` of many objects) costs a few passes, not one per object.
                    let window = Instant::now() + COALESCE;
                    loop {
                        match rx.recv_timeout(window.saturating_duration_since(Instant::now())) {
                            Ok(s) => signals.push(s),
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            signals.extend(rx.try_iter());
            for s in signals {
                match s {
                    Signal::Stop => return,
                    Signal::Listed(k) => {
                        listed.insert(k);
                        dirty.extend(k.tasks());
                    }
                    Signal::Changed(k) => dirty.extend(k.tasks()),
                    Signal::Endpoints => {
                        dirty.insert(Task::Pods);
                    }
                }
            }
            let now = Instant::now();
            if now >= next_resync {
                dirty.extend(Task::ALL);
                next_resync = now + self.config.resync;
            }
            if now >= next_gc {
                dirty.insert(Task::Ipam);
                next_gc = now + self.config.gc_interval();
            }
            if retry_at.is_some_and(|r| now >= r) {
                retry_at = None;
            }
            let mut failed = None;
            for task in dirty.clone() {
                if !task.needs().iter().all(|k| listed.contains(k)) {
                    continue;
                }
                match self.pass(task) {
                    Ok(()) => {
                        dirty.remove(&task);
                        if let Some(k) = task.completes() {
                            self.health.state().synced.insert(k.name());
                        }
                    }
                    Err(e) => {
                        self.health.metrics.errors.inc();
                        failed = Some(format!("{task:?}: {e}"));
                    }
                }
            }
            self.health.state().problems.set(
                "datastore",
                failed
                    .as_ref()
                    .map(|e| format!("cannot bring the datastore in line ({e})")),
            );
            if failed.is_some() {
                retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    fn pass(&mut self, task: Task) -> Result<(), Error> {
        self.health.metrics.syncs.inc();
        match task {
            Task::Own(owner) => {
                let desired = self.desired(owner);
                let applied = reconcile::sync(&self.client, owner, &desired)?;
                self.health.metrics.writes.inc_by(applied.written as u64);
                self.health.metrics.deletes.inc_by(applied.deleted as u64);
            }
            Task::Pods => {
                let pods: Vec<K8sPod> = decode_all(&self.stores.pods.state());
                let n = reconcile::sync_pods(&self.client, &pods)?;
                self.health.metrics.endpoint_updates.inc_by(n as u64);
            }
            Task::Nodes => self.delete_stale_nodes()?,
            Task::Ipam => self.collect_garbage()?,
        }
        Ok(())
    }

    fn desired(&self, owner: Owner) -> Desired {
        match owner {
            Owner::Policies => {
                let mut out = Desired::default();
                let mut nps = Vec::new();
                for o in self.stores.policies.state() {
                    match decode::<_, K8sNetworkPolicy>(o.as_ref()) {
                        Ok(np) => nps.push(np),
                        Err(e) => out.refuse(
                            o.namespace(),
                            format!("{}{}", gingham_model::k8s::K8S_POLICY_PREFIX, o.name_any()),
                            format!(
                                "Kubernetes NetworkPolicy {}/{} cannot be read: {e}",
                                o.namespace().unwrap_or_default(),
                                o.name_any()
                            ),
                        ),
                    }
                }
                let converted = reconcile::desired_policies(&nps);
                out.merge(converted);
                out
            }
            Owner::Namespaces => {
                let nss: Vec<K8sNamespace> = decode_all(&self.stores.namespaces.state());
                reconcile::desired_namespace_profiles(&nss)
            }
            Owner::ServiceAccounts => {
                let sas: Vec<K8sServiceAccount> = decode_all(&self.stores.service_accounts.state());
                reconcile::desired_service_account_profiles(&sas)
            }
        }
    }

    /// Deletes the Calico Nodes whose Kubernetes Node is gone, after asking the API server
    /// once more (as Calico does: the node may have come back since the cache saw it go).
    fn delete_stale_nodes(&mut self) -> Result<(), Error> {
        let calico = calico_nodes(&self.client)?;
        let k8s: BTreeSet<String> = self
            .stores
            .nodes
            .state()
            .iter()
            .map(|n| n.name_any())
            .collect();
        let calico: Vec<_> = calico.into_values().collect();
        for (cname, kname) in reconcile::stale_nodes(&calico, &k8s) {
            let api = Api::<KubeNode>::all(self.kube.clone());
            match self.rt.block_on(api.get_opt(&kname)) {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(e) => {
                    tracing::warn!(node = %kname, error = %e, "cannot confirm that a Kubernetes Node is gone; kept");
                    continue;
                }
            }
            match self.client.delete(Kind::Node, None, &cname, None) {
                Ok(_) => {
                    tracing::info!(node = %cname, "deleted the Calico Node of a deleted Kubernetes Node");
                    self.health.metrics.nodes_deleted.inc();
                }
                Err(gingham_api::ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn collect_garbage(&mut self) -> Result<(), Error> {
        let ipam = Ipam::new(self.store.as_ref());
        let allocations: Vec<Allocation> = ipam
            .allocations()?
            .into_iter()
            .map(Allocation::from_info)
            .collect();
        let (affinities, _) = self.client.block_affinities()?;
        let cluster = Cluster {
            pods: decode_all::<_, K8sPod>(&self.stores.pods.state())
                .into_iter()
                .map(|p| {
                    (
                        (
                            p.metadata.namespace.clone().unwrap_or_default(),
                            p.metadata.name.clone(),
                        ),
                        p,
                    )
                })
                .collect(),
            k8s_nodes: self
                .stores
                .nodes
                .state()
                .iter()
                .map(|n| n.name_any())
                .collect(),
            calico_nodes: calico_nodes(&self.client)?,
            affinity_nodes: affinities
                .iter()
                .filter_map(|r| match r {
                    Resource::BlockAffinity(a) => Some(a.spec.node.clone()),
                    _ => None,
                })
                .collect(),
        };
        let plan = self.gc.plan(Instant::now(), &allocations, &cluster);
        self.health
            .metrics
            .leak_candidates
            .set(plan.candidates as i64);
        if plan.confirmed.is_empty() && plan.release_nodes.is_empty() {
            return Ok(());
        }
        let (kube, rt) = (self.kube.clone(), self.rt.clone());
        let mut still_leaked = |c: &Confirmed| recheck(&kube, &rt, c);
        let released = ipam_gc::release(&ipam, &mut self.gc, &plan, &mut still_leaked)?;
        self.health
            .metrics
            .addresses_released
            .inc_by(released.addresses.len() as u64);
        Ok(())
    }
}

/// The second look at a confirmed leak before its release: on a node that exists, the pod is
/// read from the API server itself (not the cache). An error keeps the address.
fn recheck(kube: &kube::Client, rt: &tokio::runtime::Handle, c: &Confirmed) -> bool {
    let Some(knode) = &c.recheck_on else {
        return true;
    };
    let Some((ns, name)) = c.allocation.pod() else {
        // A tunnel address of a node that is gone.
        return true;
    };
    let api = Api::<Pod>::namespaced(kube.clone(), ns);
    match rt.block_on(api.get_opt(name)) {
        Ok(None) => !ipam_gc::allocation_is_valid(&c.allocation, Some(knode), None),
        Ok(Some(p)) => match decode::<_, K8sPod>(&p) {
            Ok(p) => !ipam_gc::allocation_is_valid(&c.allocation, Some(knode), Some(&p)),
            Err(_) => false,
        },
        Err(e) => {
            tracing::warn!(pod = %name, namespace = %ns, error = %e, "cannot read a pod again; its address is kept");
            false
        }
    }
}

fn calico_nodes(client: &Client) -> Result<BTreeMap<String, gingham_model::Node>, Error> {
    let (nodes, _) = client.list(Kind::Node, None)?;
    Ok(nodes
        .into_iter()
        .filter_map(|r| match r {
            Resource::Node(n) => Some((n.metadata.name.clone(), n)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a NetworkPolicy as kube-rs hands it over reaches the model's conversion
    /// (which refuses unknown fields), and so do a Pod's and a Namespace's with the fields the
    /// model ignores.
    #[test]
    fn kubernetes_objects_decode_into_the_model() {
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"a": "b"}, "annotations": {"x": "y"}},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"role": "client"}},
                     "namespaceSelector": {"matchLabels": {"team": "x"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                    "ports": [{"protocol": "TCP", "port": 80, "endPort": 90},
                              {"protocol": "UDP", "port": "dns"}]}],
                "egress": [{"to": [{"namespaceSelector": {}}]}]
            }
        }))
        .expect("a NetworkPolicy");
        let m: K8sNetworkPolicy = decode(&np).expect("decodes");
        let p = gingham_model::k8s::network_policy_to_calico(&m).expect("converts");
        assert_eq!(p.metadata.name, "knp.default.web");
        assert_eq!(p.spec.ingress.len(), 4, "two peers by two protocols");
        assert_eq!(p.spec.egress.len(), 1);

        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicaSet", "name": "r", "uid": "u"}]},
            "spec": {"nodeName": "node-a", "serviceAccountName": "sa",
                "containers": [{"name": "c", "image": "busybox",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "1"}}}],
                "tolerations": [{"key": "k", "operator": "Exists"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}], "qosClass": "Burstable"}
        }))
        .expect("a Pod");
        let m: K8sPod = decode(&pod).expect("decodes");
        let w = gingham_model::k8s::pod_to_workload_endpoint(&m)
            .expect("converts")
            .expect("an endpoint");
        assert_eq!(w.spec.service_account_name, "sa");
        assert_eq!(w.spec.ports.len(), 1);
        assert_eq!(w.spec.ip_networks.len(), 1);

        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "labels": {"team": "x"}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
        }))
        .expect("a Namespace");
        let m: K8sNamespace = decode(&ns).expect("decodes");
        assert_eq!(m.metadata.labels["team"], "x");
    }
}
