//! The controllers against the Kubernetes API double (`gingham-kubeapi`) over an in-memory
//! datastore: objects made, changed and deleted with kube-rs; each check waits on the datastore
//! (polled every 10 ms, with a deadline), never on a sleep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gingham_api::{Client, WriteMode};
use gingham_datastore::Datastore;
use gingham_datastore::mem::MemStore;
use gingham_ipam::{AssignRequest, Ipam, PoolSpec};
use gingham_kubeapi::{ApiServer, RunningApiServer};
use gingham_kubecontrollers::{Config, Health};
use gingham_model::{Kind, Resource};
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The controllers must follow a change within this long.
const FOLLOW: Duration = Duration::from_secs(1);

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), gingham_kubecontrollers::Error>>,
    health: Health,
    health_addr: SocketAddr,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the controllers' task")
            .expect("the controllers stop cleanly");
    }

    fn readiness(&self) -> String {
        gingham_health::http_get(self.health_addr, "/readiness").expect("readiness answers")
    }
}

fn kube_client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().expect("a URL"))).expect("a client")
}

fn start_controllers(url: &str, store: &Arc<dyn Datastore>, config: Config) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("gingham=debug,gingham_kubecontrollers=debug")
        .with_test_writer()
        .try_init();
    let health = Health::default();
    let health_addr = gingham_health::serve("127.0.0.1:0".parse().expect("addr"), health.clone())
        .expect("health serves");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gingham_kubecontrollers::run(
        kube_client(url),
        store.clone(),
        config,
        health.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        stop,
        task,
        health,
        health_addr,
    }
}

fn fast() -> Config {
    Config {
        resync: Duration::from_secs(60),
        leak_grace: Duration::from_millis(300),
    }
}

struct Env {
    store: Arc<dyn Datastore>,
    server: Option<RunningApiServer>,
    kube: kube::Client,
}

impl Env {
    async fn start() -> Env {
        let store: Arc<dyn Datastore> = Arc::new(MemStore::new());
        let server = ApiServer::start(store.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("the API double starts");
        let kube = kube_client(&server.url());
        Env {
            store,
            server: Some(server),
            kube,
        }
    }

    fn server(&self) -> &RunningApiServer {
        self.server.as_ref().expect("the API server runs")
    }

    async fn stop_server(&mut self) {
        self.server
            .take()
            .expect("the API server runs")
            .shutdown()
            .await;
    }

    fn client(&self) -> Client {
        Client::new(self.store.clone())
    }

    fn has(&self, kind: Kind, ns: Option<&str>, name: &str) -> bool {
        self.client().get(kind, ns, name).is_ok()
    }

    fn get(&self, kind: Kind, ns: Option<&str>, name: &str) -> Option<Resource> {
        self.client().get(kind, ns, name).ok()
    }
}

/// Waits until `f` holds, polling every 10 ms; panics naming `what` after `within`.
async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn network_policy(name: &str, app: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                         "ports": [{"port": 80}]}]
        }
    }))
    .expect("a NetworkPolicy")
}

fn namespace(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
        .expect("a Namespace")
}

fn selector_of(r: Option<Resource>) -> String {
    match r {
        Some(Resource::NetworkPolicy(p)) => p.spec.selector,
        other => panic!("not a policy: {other:?}"),
    }
}

fn profile_label(r: Option<Resource>, key: &str) -> Option<String> {
    match r {
        Some(Resource::Profile(p)) => p.spec.labels_to_apply.get(key).cloned(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_namespaces_and_service_accounts_follow_within_a_second() {
    let env = Env::start().await;
    let ctl = start_controllers(&env.server().url(), &env.store, fast());
    let pp = PostParams::default();
    let nss: Api<Namespace> = Api::all(env.kube.clone());
    nss.create(&pp, &namespace("shop", json!({"team": "a"})))
        .await
        .expect("namespace");
    // The namespaces every cluster has, and the new one, get their profiles.
    let t = until("kns.shop", FOLLOW, || {
        env.has(Kind::Profile, None, "kns.shop")
    })
    .await;
    assert!(env.has(Kind::Profile, None, "kns.default"));
    eprintln!("kns.shop after {t:?}");

    let nps: Api<NetworkPolicy> = Api::namespaced(env.kube.clone(), "shop");
    nps.create(&pp, &network_policy("web", "web"))
        .await
        .expect("policy");
    until("knp.default.web", FOLLOW, || {
        env.has(Kind::NetworkPolicy, Some("shop"), "knp.default.web")
    })
    .await;
    assert!(
        selector_of(env.get(Kind::NetworkPolicy, Some("shop"), "knp.default.web"))
            .contains("app == 'web'")
    );

    // Changed: replaced.
    nps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"podSelector": {"matchLabels": {"app": "shop"}}}})),
    )
    .await
    .expect("patched");
    until("knp.default.web follows the change", FOLLOW, || {
        selector_of(env.get(Kind::NetworkPolicy, Some("shop"), "knp.default.web"))
            .contains("app == 'shop'")
    })
    .await;

    // Namespace labels and the DefaultDeny annotation reach the profile.
    nss.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "labels": {"team": "b"},
            "annotations": {"net.beta.kubernetes.io/network-policy": "{\"ingress\":{\"isolation\":\"DefaultDeny\"}}"}
        }})),
    )
    .await
    .expect("labelled");
    until("kns.shop relabelled and isolated", FOLLOW, || {
        match env.get(Kind::Profile, None, "kns.shop") {
            Some(Resource::Profile(p)) => {
                p.spec.labels_to_apply.get("pcns.team").map(String::as_str) == Some("b")
                    && p.spec.ingress[0].action == gingham_model::Action::Deny
            }
            _ => false,
        }
    })
    .await;

    // A service account.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(env.kube.clone(), "shop");
    sas.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "web", "labels": {"tier": "front"}}}))
            .expect("a ServiceAccount"),
    )
    .await
    .expect("service account");
    until("ksa.shop.web", FOLLOW, || {
        profile_label(env.get(Kind::Profile, None, "ksa.shop.web"), "pcsa.tier").as_deref()
            == Some("front")
    })
    .await;

    // Deleted: the policy goes; the namespace goes, and its profile with it.
    nps.delete("web", &DeleteParams::default())
        .await
        .expect("deleted");
    until("knp.default.web removed", FOLLOW, || {
        !env.has(Kind::NetworkPolicy, Some("shop"), "knp.default.web")
    })
    .await;
    nss.delete("shop", &DeleteParams::default())
        .await
        .expect("deleted");
    until("kns.shop removed", FOLLOW, || {
        !env.has(Kind::Profile, None, "kns.shop")
    })
    .await;
    assert!(
        ctl.readiness().starts_with("HTTP/1.0 200"),
        "{}",
        ctl.readiness()
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_converges_on_changes_made_while_the_controllers_were_down() {
    let env = Env::start().await;
    let pp = PostParams::default();
    let nps: Api<NetworkPolicy> = Api::namespaced(env.kube.clone(), "default");
    let nss: Api<Namespace> = Api::all(env.kube.clone());
    for n in ["a", "b"] {
        nps.create(&pp, &network_policy(n, n))
            .await
            .expect("policy");
    }
    nss.create(&pp, &namespace("shop", json!({"team": "a"})))
        .await
        .expect("namespace");
    let ctl = start_controllers(&env.server().url(), &env.store, fast());
    until("first sync", FOLLOW * 5, || {
        env.has(Kind::NetworkPolicy, Some("default"), "knp.default.a")
            && env.has(Kind::NetworkPolicy, Some("default"), "knp.default.b")
            && env.has(Kind::Profile, None, "kns.shop")
    })
    .await;
    ctl.stop().await;

    // While down: b deleted, c created, the namespace relabelled, another deleted; and someone
    // removed knp.default.a from the datastore.
    nps.delete("b", &DeleteParams::default())
        .await
        .expect("deleted");
    nps.create(&pp, &network_policy("c", "c"))
        .await
        .expect("policy");
    nss.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await
    .expect("labelled");
    nss.delete("kube-public", &DeleteParams::default())
        .await
        .expect("deleted");
    env.client()
        .delete(Kind::NetworkPolicy, Some("default"), "knp.default.a", None)
        .expect("drift");
    assert!(env.has(Kind::Profile, None, "kns.kube-public"));

    let ctl = start_controllers(&env.server().url(), &env.store, fast());
    until("the restart converges", FOLLOW * 5, || {
        env.has(Kind::NetworkPolicy, Some("default"), "knp.default.a")
            && !env.has(Kind::NetworkPolicy, Some("default"), "knp.default.b")
            && env.has(Kind::NetworkPolicy, Some("default"), "knp.default.c")
            && profile_label(env.get(Kind::Profile, None, "kns.shop"), "pcns.team").as_deref()
                == Some("b")
            && !env.has(Kind::Profile, None, "kns.kube-public")
    })
    .await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_ends_with_410_gone_relists_and_converges() {
    let mut env = Env::start().await;
    let pp = PostParams::default();
    let nps: Api<NetworkPolicy> = Api::namespaced(env.kube.clone(), "default");
    for n in ["a", "b"] {
        nps.create(&pp, &network_policy(n, n))
            .await
            .expect("policy");
    }
    let url = env.server().url();
    let addr = env.server().addr();
    let ctl = start_controllers(&url, &env.store, fast());
    until("first sync", FOLLOW * 5, || {
        env.has(Kind::NetworkPolicy, Some("default"), "knp.default.b")
    })
    .await;
    let relists = || ctl.health.metrics.relists.get();
    assert_eq!(relists(), 5, "one listing per watched kind");

    // The API server goes away; meanwhile b is deleted and c created (through another server
    // on the same store), and the store is compacted past the controllers' watches.
    env.stop_server().await;
    let other = ApiServer::start(env.store.clone(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("starts");
    let nps2: Api<NetworkPolicy> = Api::namespaced(kube_client(&other.url()), "default");
    nps2.delete("b", &DeleteParams::default())
        .await
        .expect("deleted");
    nps2.create(&pp, &network_policy("c", "c"))
        .await
        .expect("policy");
    other.shutdown().await;
    env.store
        .compact(env.store.revision().expect("revision"))
        .expect("compacts");

    // Back on the same address: the controllers' watches from their old revisions get 410
    // Gone, they list again, and the datastore follows.
    let server = ApiServer::start(env.store.clone(), addr)
        .await
        .expect("restarts on the same address");
    until("the relist converges", Duration::from_secs(30), || {
        !env.has(Kind::NetworkPolicy, Some("default"), "knp.default.b")
            && env.has(Kind::NetworkPolicy, Some("default"), "knp.default.c")
    })
    .await;
    assert!(relists() > 5, "the watches listed again: {}", relists());
    ctl.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_when_the_api_server_cannot_be_reached() {
    let mut env = Env::start().await;
    let ctl = start_controllers(&env.server().url(), &env.store, fast());
    until("ready", FOLLOW * 5, || {
        ctl.readiness().starts_with("HTTP/1.0 200")
    })
    .await;
    env.stop_server().await;
    until("not ready once the API server is gone", FOLLOW * 5, || {
        let r = ctl.readiness();
        r.starts_with("HTTP/1.0 503") && r.contains("Kubernetes API server")
    })
    .await;
    eprintln!("{}", ctl.readiness());
    ctl.stop().await;

    // An API server that never was: not ready from the start, and why.
    let nothing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let ctl = start_controllers(&format!("http://{nothing}"), &env.store, fast());
    until("not ready without an API server", FOLLOW * 5, || {
        let r = ctl.readiness();
        r.starts_with("HTTP/1.0 503") && r.contains("cannot list or watch")
    })
    .await;
    ctl.stop().await;
}

/// Writes the endpoint the CNI plugin would; returns its name.
fn endpoint_as_the_cni_plugin_writes_it(
    client: &Client,
    node: &str,
    pod: &str,
    ip: &str,
) -> String {
    let name =
        gingham_model::names::workload_endpoint_name(node, "k8s", pod, "eth0").expect("a name");
    let yaml = format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {name}
  namespace: default
  labels: {{app: old, projectcalico.org/namespace: default, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: {pod}
  endpoint: eth0
  containerID: ctr-{pod}
  interfaceName: cali1234567890a
  ipNetworks: [{ip}/32]
  profiles: [kns.default, ksa.default.default]
"
    );
    let r = gingham_model::load_resources("cni.yaml", &yaml).expect("loads");
    client.write_all(&r, WriteMode::Create).expect("writes");
    name
}

fn endpoint_label(env: &Env, name: &str, key: &str) -> Option<String> {
    match env.get(Kind::WorkloadEndpoint, Some("default"), name) {
        Some(Resource::WorkloadEndpoint(w)) => w.metadata.labels.get(key).cloned(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_labels_follow_to_the_endpoint_and_endpoints_are_never_made_or_removed() {
    let env = Env::start().await;
    let pods: Api<Pod> = Api::namespaced(env.kube.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let ctl = start_controllers(&env.server().url(), &env.store, fast());
    // Every kind synced (the pod seen) before the plugin writes the endpoint, with old labels:
    // the endpoint's own change brings the pod's labels, with no pod event and no resync.
    until("ready", FOLLOW * 5, || {
        ctl.readiness().starts_with("HTTP/1.0 200")
    })
    .await;
    let wep = &endpoint_as_the_cni_plugin_writes_it(&env.client(), "node-a", "web", "10.0.0.5");
    until("the new endpoint takes the pod's labels", FOLLOW, || {
        endpoint_label(&env, wep, "app").as_deref() == Some("web")
    })
    .await;
    pods.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "shop", "tier": "front"}}})),
    )
    .await
    .expect("labelled");
    until("the endpoint follows kubectl label", FOLLOW, || {
        endpoint_label(&env, wep, "app").as_deref() == Some("shop")
            && endpoint_label(&env, wep, "tier").as_deref() == Some("front")
    })
    .await;
    match env.get(Kind::WorkloadEndpoint, Some("default"), wep) {
        Some(Resource::WorkloadEndpoint(w)) => {
            assert_eq!(w.spec.ip_networks.len(), 1, "addresses kept");
            assert_eq!(w.spec.interface_name, "cali1234567890a");
        }
        other => panic!("{other:?}"),
    }
    // A pod without an endpoint gets none; a deleted pod's endpoint stays (the plugin's DEL).
    let other: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db", "labels": {"app": "db"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("a pod");
    pods.create(&PostParams::default(), &other)
        .await
        .expect("pod");
    pods.delete("web", &DeleteParams::default())
        .await
        .expect("deleted");
    // Wait for the controllers to have seen both (a pass after the deletion).
    let before = ctl.health.metrics.syncs.get();
    until("a pass after the pod changes", FOLLOW, || {
        ctl.health.metrics.syncs.get() > before
    })
    .await;
    let names: Vec<String> = env
        .client()
        .list(Kind::WorkloadEndpoint, None)
        .expect("lists")
        .0
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    assert_eq!(names, std::slice::from_ref(wep));
    ctl.stop().await;
}

fn calico_node(client: &Client, name: &str) {
    let yaml = format!(
        "apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {name}}}
spec:
  orchRefs: [{{nodeName: {name}, orchestrator: k8s}}]
"
    );
    let r = gingham_model::load_resources("node.yaml", &yaml).expect("loads");
    client.write_all(&r, WriteMode::Create).expect("writes");
}

fn allocate(store: &Arc<dyn Datastore>, node: &str, pod: &str) -> std::net::IpAddr {
    let ipam = Ipam::new(store.as_ref());
    let handle = format!("k8s-pod-network.ctr-{pod}");
    let req = AssignRequest {
        handle_id: handle.clone(),
        attrs: [("namespace", "default"), ("pod", pod), ("node", node)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        node: node.into(),
        num_v4: 1,
        pools_v4: vec![PoolSpec::new(
            "pool",
            "10.244.0.0/16".parse().expect("cidr"),
        )],
        ..AssignRequest::default()
    };
    ipam.auto_assign(&req).expect("assigns").v4[0].ip
}

fn allocated(store: &Arc<dyn Datastore>) -> Vec<std::net::IpAddr> {
    Ipam::new(store.as_ref())
        .allocations()
        .expect("reads")
        .iter()
        .map(|a| a.ip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_takes_its_calico_node_and_ipam_and_leaks_are_collected() {
    let env = Env::start().await;
    let pp = PostParams::default();
    let knodes: Api<KubeNode> = Api::all(env.kube.clone());
    for n in ["node-a", "node-b"] {
        knodes
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": n}})).expect("a Node"),
            )
            .await
            .expect("node");
        calico_node(&env.client(), n);
    }
    // A running pod on node-a that reports its address; a leaked address of a pod that is
    // gone, on node-a; and a pod's address on node-b.
    let pods: Api<Pod> = Api::namespaced(env.kube.clone(), "default");
    let web_ip = allocate(&env.store, "node-a", "web");
    let web: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("a pod");
    pods.create(&pp, &web).await.expect("pod");
    pods.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": web_ip.to_string(),
            "podIPs": [{"ip": web_ip.to_string()}]}}),
        ),
    )
    .await
    .expect("status");
    let leaked = allocate(&env.store, "node-a", "gone");
    let on_b = allocate(&env.store, "node-b", "db");
    // db has not reported addresses yet: its allocation is valid.
    let db: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"nodeName": "node-b", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("a pod");
    pods.create(&pp, &db).await.expect("pod");

    let config = fast();
    let grace = config.leak_grace;
    let started = Instant::now();
    let ctl = start_controllers(&env.server().url(), &env.store, config);
    until(
        "the leaked address is released",
        Duration::from_secs(10),
        || !allocated(&env.store).contains(&leaked),
    )
    .await;
    assert!(
        started.elapsed() >= grace,
        "released only after the grace period ({:?})",
        started.elapsed()
    );
    let left = allocated(&env.store);
    assert!(left.contains(&web_ip) && left.contains(&on_b), "{left:?}");

    // node-b goes from Kubernetes (and its pod with it): its Calico Node, its addresses and
    // its blocks follow.
    pods.delete("db", &DeleteParams::default())
        .await
        .expect("deleted");
    knodes
        .delete("node-b", &DeleteParams::default())
        .await
        .expect("deleted");
    until(
        "node-b's Calico Node and IPAM are gone",
        Duration::from_secs(5),
        || {
            let ipam = Ipam::new(env.store.as_ref());
            !env.has(Kind::Node, None, "node-b")
                && !allocated(&env.store).contains(&on_b)
                && ipam.blocks_for_node("node-b").expect("reads").is_empty()
        },
    )
    .await;
    assert!(env.has(Kind::Node, None, "node-a"));
    assert!(allocated(&env.store).contains(&web_ip));
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_the_double_writes_is_read() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    env.server().write_kubeconfig(&path).expect("writes");
    let kube = gingham_kubecontrollers::kube_client(&path)
        .await
        .expect("reads the kubeconfig");
    let nss: Api<Namespace> = Api::all(kube);
    assert!(nss.get("default").await.is_ok());
    let Err(e) = gingham_kubecontrollers::kube_client(&dir.path().join("nope")).await else {
        panic!("a missing kubeconfig is refused");
    };
    assert!(e.to_string().contains("nope"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_when_the_datastore_cannot_be_reached() {
    let env = Env::start().await;
    // The controllers' datastore is gone (every call fails); the API server's is fine.
    let dead: Arc<dyn Datastore> =
        Arc::new(gingham_datastore::mem::Dying::new(env.store.clone(), 0));
    let ctl = start_controllers(&env.server().url(), &dead, fast());
    until("not ready without the datastore", FOLLOW * 5, || {
        let r = ctl.readiness();
        r.starts_with("HTTP/1.0 503")
            && r.contains("cannot bring the datastore in line")
            && r.contains("the writing process died")
    })
    .await;
    assert!(ctl.health.metrics.errors.get() > 0);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_resync_repairs_the_datastore_behind_the_controllers_back() {
    let env = Env::start().await;
    let nps: Api<NetworkPolicy> = Api::namespaced(env.kube.clone(), "default");
    nps.create(&PostParams::default(), &network_policy("a", "a"))
        .await
        .expect("policy");
    let config = Config {
        resync: Duration::from_millis(300),
        ..fast()
    };
    let ctl = start_controllers(&env.server().url(), &env.store, config);
    until("knp.default.a", FOLLOW * 5, || {
        env.has(Kind::NetworkPolicy, Some("default"), "knp.default.a")
    })
    .await;
    // No Kubernetes event follows these: only the resync sees them.
    env.client()
        .delete(Kind::NetworkPolicy, Some("default"), "knp.default.a", None)
        .expect("deleted");
    let orphan = gingham_model::load_resources(
        "orphan.yaml",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: knp.default.gone, namespace: default}\nspec: {selector: all()}\n",
    )
    .expect("loads");
    env.client()
        .write_all(&orphan, WriteMode::Create)
        .expect("writes");
    until("the resync repairs both", Duration::from_secs(3), || {
        env.has(Kind::NetworkPolicy, Some("default"), "knp.default.a")
            && !env.has(Kind::NetworkPolicy, Some("default"), "knp.default.gone")
    })
    .await;
    ctl.stop().await;
}
