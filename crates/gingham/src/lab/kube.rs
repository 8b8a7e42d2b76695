//! The lab as a small Kubernetes (`spec.kubernetes: true`): the API double over the lab's
//! datastore on 127.0.0.1 in the root namespace, carried to 127.0.0.1 in every node's namespace
//! by the lab's proxy (so one kubeconfig serves kubectl, the controllers and the CNI plugin),
//! `gingham kube-controllers`, and a kubelet's share of every node ([`kubelet`]): a Pod bound
//! to a lab node gets a network namespace, a CNI ADD through the plugin's Kubernetes path and
//! its server; its address and phase Running are written back; a deleted Pod gets CNI DEL and
//! its namespace goes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::pods::{remove_pod, start_pod};
use super::state::{KubeState, State, load_state, save_state, update_state};
use super::{DirArgs, lab_dir, self_exe, topology};
use crate::Exit;
use crate::datastore::DatastoreUrl;

/// The lab's kubeconfig, in its directory.
const KUBECONFIG: &str = "kubeconfig";
/// The logs of the lab's Kubernetes processes, in its directory.
const APISERVER_LOG: &str = "kube-apiserver.log";
const PROXY_LOG: &str = "kube-proxy.log";
const CONTROLLERS_LOG: &str = "kube-controllers.log";
const KUBELET_LOG: &str = "kubelet.log";
/// How long `lab up` and `lab apply` wait for the lab's Kubernetes to act.
const SETTLE: Duration = Duration::from_secs(60);
/// Seconds between the controllers' full resyncs in a lab.
const CONTROLLERS_RESYNC_SECONDS: &str = "30";

/// The Kubernetes kinds that go through the lab's API (the controllers turn them into Calico
/// resources, the kubelet runs the Pods), in the order they are written.
const KINDS: [(&str, &str, &str, bool); 4] = [
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("v1", "Pod", "pods", true),
];

fn kind_rank(doc: &Value) -> Option<usize> {
    let api = doc.get("apiVersion").and_then(Value::as_str)?;
    let kind = doc.get("kind").and_then(Value::as_str)?;
    KINDS
        .iter()
        .position(|(a, k, _, _)| *a == api && *k == kind)
}

/// Takes the Kubernetes objects the lab's API serves out of `docs` (`List` items too); what
/// stays is for the datastore.
pub(super) fn split_kubernetes(docs: &mut Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    docs.retain_mut(|d| {
        if let Some(items) = d.get_mut("items").and_then(Value::as_array_mut) {
            items.retain(|i| {
                let ours = kind_rank(i).is_some();
                if ours {
                    out.push(i.clone());
                }
                !ours
            });
            return !items.is_empty();
        }
        let ours = kind_rank(d).is_some();
        if ours {
            out.push(d.clone());
        }
        !ours
    });
    out
}

/// Gives Pods without `spec.nodeName` one from `schedule`, and every container an image (the
/// lab runs none; the API asks for one). A Pod bound to a node that is not among `nodes`
/// would never start: refused.
pub(super) fn prepare_pods(
    objects: &mut [Value],
    schedule: &mut dyn FnMut() -> String,
    nodes: &[String],
) -> Result<()> {
    for o in objects.iter_mut() {
        if o.get("kind").and_then(Value::as_str) != Some("Pod") {
            continue;
        }
        if let Some(node) = o.pointer("/spec/nodeName").and_then(Value::as_str)
            && !node.is_empty()
            && !nodes.iter().any(|n| n == node)
        {
            bail!(
                "pod {}: spec.nodeName {node:?} is not a node of the lab (valid: {})",
                key_of_doc(o),
                nodes.join(", ")
            );
        }
        if !o.get("spec").is_some_and(Value::is_object) {
            o["spec"] = serde_json::json!({});
        }
        let spec = &mut o["spec"];
        if spec
            .get("nodeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            spec["nodeName"] = Value::String(schedule());
        }
        if spec
            .get("containers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            spec["containers"] = serde_json::json!([{"name": "main"}]);
        }
        for c in spec["containers"].as_array_mut().into_iter().flatten() {
            if c.get("image").is_none() {
                c["image"] = Value::String("gingham.dev/lab-server".into());
            }
        }
    }
    Ok(())
}

/// `ns/name` of every Pod among `objects`.
fn pod_keys(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Pod"))
        .map(key_of_doc)
        .collect()
}

/// `ns/name` of an object (`name` for cluster-wide ones).
pub(super) fn key_of_doc(o: &Value) -> String {
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind_rank(o).is_some_and(|r| !KINDS[r].3) {
        return name.to_owned();
    }
    let ns = o
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    format!("{ns}/{name}")
}

/// Deletes pod `ns/name` through the lab's API and waits until the kubelet stopped it.
pub(super) fn delete_pod(dir: &Path, key: &str) -> Result<()> {
    let state = load_state(dir)?;
    let k = state
        .kubernetes
        .as_ref()
        .context("this lab has no Kubernetes (spec.kubernetes)")?;
    let (ns, name) = key.split_once('/').context("a pod is `namespace/name`")?;
    runtime()?.block_on(async {
        let client = gingham_kubecontrollers::kube_client(&k.kubeconfig).await?;
        let api: Api<Pod> = Api::namespaced(client, ns);
        api.delete(name, &Default::default())
            .await
            .map_err(in_words)
            .with_context(|| format!("deleting pod {key} through the lab's API"))?;
        Ok::<_, anyhow::Error>(())
    })?;
    let end = Instant::now() + SETTLE;
    while load_state(dir)?.pods.iter().any(|p| p.key() == key) {
        if Instant::now() >= end {
            bail!(
                "the kubelet did not stop {key} within {} s; see {}",
                SETTLE.as_secs(),
                dir.join(KUBELET_LOG).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn spawn_logged(dir: &Path, log: &str, cmd: &mut Command, what: &str) -> Result<u32> {
    let log = std::fs::File::create(dir.join(log))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    Ok(child.id())
}

fn wait_for(what: &str, log: &Path, mut ready: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not start; see {}", log.display())
}

/// Starts the lab's Kubernetes: the API double, its proxy into the nodes, the controllers and
/// the kubelet. Each process is recorded in the state as it starts.
pub(super) fn start(dir: &Path, state: &mut State) -> Result<()> {
    let exe = self_exe()?;
    let kubeconfig = dir.join(KUBECONFIG);
    state.kubernetes = Some(KubeState {
        kubeconfig: kubeconfig.clone(),
        ..KubeState::default()
    });
    save_state(dir, state)?;
    fn k(s: &mut State) -> &mut KubeState {
        s.kubernetes.as_mut().expect("set above")
    }

    let pid = spawn_logged(
        dir,
        APISERVER_LOG,
        Command::new(&exe)
            .args(["lab", "apiserver", "--listen", "127.0.0.1:0"])
            .args([
                "--datastore".as_ref(),
                state.datastore.as_ref(),
                "--kubeconfig".as_ref(),
                kubeconfig.as_os_str(),
            ]),
        "the Kubernetes API double",
    )?;
    k(state).apiserver_pid = Some(pid);
    save_state(dir, state)?;
    let mut port = None;
    wait_for(
        "the Kubernetes API double",
        &dir.join(APISERVER_LOG),
        || {
            port = api_port(&dir.join(APISERVER_LOG));
            port.is_some()
        },
    )?;
    let port = port.expect("waited for").to_string();

    let mut proxy = Command::new(&exe);
    proxy.args([
        "lab",
        "proxy",
        "--listen-port",
        &port,
        "--upstream",
        &format!("127.0.0.1:{port}"),
    ]);
    for n in &state.nodes {
        proxy.args(["--netns", &n.netns]);
    }
    let pid = spawn_logged(dir, PROXY_LOG, &mut proxy, "the API's proxy into the nodes")?;
    k(state).proxy_pid = Some(pid);
    save_state(dir, state)?;
    wait_for("the API's proxy", &dir.join(PROXY_LOG), || {
        std::fs::read_to_string(dir.join(PROXY_LOG)).is_ok_and(|s| s.contains("listening"))
    })?;

    let pid = spawn_logged(
        dir,
        CONTROLLERS_LOG,
        Command::new(&exe)
            .args([
                "kube-controllers",
                "--log",
                "info",
                "--datastore",
                &state.datastore,
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--health-listen",
                "127.0.0.1:0",
                "--resync-interval",
                CONTROLLERS_RESYNC_SECONDS,
            ]),
        "kube-controllers",
    )?;
    k(state).controllers_pid = Some(pid);
    save_state(dir, state)?;

    let pid = spawn_logged(
        dir,
        KUBELET_LOG,
        Command::new(&exe)
            .args(["lab", "kubelet", "--log", "info", "--dir"])
            .arg(dir),
        "the kubelet",
    )?;
    k(state).kubelet_pid = Some(pid);
    save_state(dir, state)?;
    Ok(())
}

/// The port of the API: `lab apiserver` prints its URL, a whole line, once it listens and its
/// kubeconfig is written.
fn api_port(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .take(text.matches('\n').count())
        .find_map(|l| l.trim().strip_prefix("http://127.0.0.1:")?.parse().ok())
}

/// Writes `objects` through the lab's API (created, or merged into what is there), in
/// [`KINDS`] order, Namespaces that Pods name but nobody declares created first; then waits
/// until the controllers turned the NetworkPolicies and Namespaces into Calico resources and
/// the kubelet runs every Pod.
pub(super) fn apply(dir: &Path, objects: Vec<Value>) -> Result<()> {
    let state = load_state(dir)?;
    let k = state
        .kubernetes
        .as_ref()
        .context("this lab has no Kubernetes (spec.kubernetes)")?;
    let mut objects = objects;
    let declared: BTreeSet<String> = objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Namespace"))
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let named: BTreeSet<String> = objects
        .iter()
        .filter(|o| kind_rank(o).is_some_and(|r| KINDS[r].3))
        .map(|o| {
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned()
        })
        .collect();
    let implied: Vec<Value> = named
        .difference(&declared)
        .map(|n| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
        .collect();
    objects.sort_by_key(|o| kind_rank(o).unwrap_or(usize::MAX));
    let pods = pod_keys(&objects);
    let converted = calico_names(&objects, &named);
    let (pod_objects, others): (Vec<Value>, Vec<Value>) = objects
        .into_iter()
        .partition(|o| o.get("kind").and_then(Value::as_str) == Some("Pod"));
    let rt = runtime()?;
    let client = rt.block_on(async {
        let client = gingham_kubecontrollers::kube_client(&k.kubeconfig).await?;
        for ns in implied {
            write(&client, ns, true).await?;
        }
        for o in others {
            write(&client, o, false).await?;
        }
        Ok::<_, anyhow::Error>(client)
    })?;
    // Policies and profiles in force before the pods start, as in a lab without Kubernetes.
    wait_converted(dir, &state, &converted)?;
    rt.block_on(async {
        for o in pod_objects {
            write(&client, o, false).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    wait_pods_running(dir, &pods, &rt, &client)
}

/// The Calico resources the controllers make of `objects`' NetworkPolicies and of the
/// namespaces: (kind, namespace, name).
fn calico_names(
    objects: &[Value],
    namespaces: &BTreeSet<String>,
) -> Vec<(gingham_model::Kind, Option<String>, String)> {
    use gingham_model::k8s::{K8S_POLICY_PREFIX, NAMESPACE_PROFILE_PREFIX};
    let mut out: Vec<_> = namespaces
        .iter()
        .map(|n| {
            (
                gingham_model::Kind::Profile,
                None,
                format!("{NAMESPACE_PROFILE_PREFIX}{n}"),
            )
        })
        .collect();
    for o in objects {
        if o.get("kind").and_then(Value::as_str) == Some("NetworkPolicy") {
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.push((
                gingham_model::Kind::NetworkPolicy,
                Some(ns.to_owned()),
                format!("{K8S_POLICY_PREFIX}{name}"),
            ));
        }
    }
    out
}

/// Waits until the controllers wrote every resource of `names`, naming those they did not.
fn wait_converted(
    dir: &Path,
    state: &State,
    names: &[(gingham_model::Kind, Option<String>, String)],
) -> Result<()> {
    let client = gingham_api::Client::new(DatastoreUrl::parse(&state.datastore)?.open()?);
    let end = Instant::now() + SETTLE;
    loop {
        let missing: Vec<String> = names
            .iter()
            .filter(|(kind, ns, name)| client.get(*kind, ns.as_deref(), name).is_err())
            .map(|(kind, ns, name)| {
                format!(
                    "{kind:?} {}{name}",
                    ns.as_ref().map(|n| format!("{n}/")).unwrap_or_default()
                )
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!(
                "kube-controllers did not write {} within {} s; see {}",
                missing.join(", "),
                SETTLE.as_secs(),
                dir.join(CONTROLLERS_LOG).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Creates `o`, or merges it into the object of its name; `keep`: leave an existing one alone.
async fn write(client: &kube::Client, o: Value, keep: bool) -> Result<()> {
    let rank = kind_rank(&o).context("not a kind of the lab's API")?;
    let (api_version, kind, plural, namespaced) = KINDS[rank];
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let api: Api<DynamicObject> = if namespaced {
        let ns = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let obj: DynamicObject =
        serde_json::from_value(o.clone()).with_context(|| format!("{kind} {name}"))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            if !keep {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&o))
                    .await
                    .map_err(in_words)
                    .with_context(|| format!("updating {kind} {name} through the lab's API"))?;
            }
            Ok(())
        }
        Err(e) => Err(in_words(e))
            .with_context(|| format!("creating {kind} {name} through the lab's API")),
    }
}

/// An error of the API in its own words (its message and reason), others as they are.
fn in_words(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("{} ({} {})", s.message, s.code, s.reason),
        e => e.into(),
    }
}

/// Waits until the kubelet runs every pod of `keys`: the lab has its address and the API
/// says Running with it. Names those it does not.
fn wait_pods_running(
    dir: &Path,
    keys: &[String],
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
) -> Result<()> {
    let end = Instant::now() + SETTLE;
    loop {
        let state = load_state(dir)?;
        let listed = rt
            .block_on(Api::<Pod>::all(client.clone()).list(&Default::default()))
            .map_err(in_words)
            .context("listing the lab's pods")?;
        let running = |key: &String| {
            let ip = state
                .pods
                .iter()
                .find(|p| &p.key() == key)
                .and_then(|p| p.ip.as_deref());
            listed.items.iter().any(|p| {
                &key_of(p) == key
                    && p.status.as_ref().is_some_and(|s| {
                        s.phase.as_deref() == Some("Running") && s.pod_ip.is_some()
                    })
                    && p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == ip
            })
        };
        let missing: Vec<&str> = keys
            .iter()
            .filter(|k| !running(k))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!(
                "the kubelet did not start {} within {} s; see {}",
                missing.join(", "),
                SETTLE.as_secs(),
                dir.join(KUBELET_LOG).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gingham lab kubeconfig`: the path of the lab's kubeconfig.
pub(super) fn kubeconfig(args: &DirArgs) -> Result<Exit> {
    let dir = &lab_dir(&args.dir)?;
    let state = load_state(dir)?;
    let Some(k) = &state.kubernetes else {
        bail!(
            "the lab in {} has no Kubernetes (set `spec.kubernetes: true` in its Lab document)",
            dir.display()
        );
    };
    println!("{}", k.kubeconfig.display());
    Ok(Exit::Ok)
}

/// Ends a process and waits (up to 5 s) until it is gone or a zombie nobody reaps.
pub(super) fn end_process(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    for _ in 0..500 {
        let status = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
        if !proc_dir.exists() || status.contains("State:\tZ") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// Stops the kubelet first (so that no pod starts while the lab goes down), under the state's
/// lock so that it is not between two writes.
pub(super) fn stop_kubelet(dir: &Path) -> Result<()> {
    update_state(dir, |s| {
        if let Some(pid) = s.kubernetes.as_mut().and_then(|k| k.kubelet_pid.take()) {
            end_process(pid);
        }
        Ok(())
    })
}

/// Stops the rest of the lab's Kubernetes and removes its files. The Pods bound to the lab's
/// nodes are deleted from the API first (their endpoints went with CNI DEL), so that a lab
/// made later on the same datastore does not find them.
pub(super) fn stop(dir: &Path, state: &State, k: &KubeState) -> Vec<String> {
    let mut problems = Vec::new();
    if k.apiserver_pid.is_some()
        && let Err(e) = delete_lab_pods(state, k)
    {
        problems.push(format!("deleting the lab's pods from its API: {e:#}"));
    }
    for pid in [k.controllers_pid, k.proxy_pid, k.apiserver_pid]
        .into_iter()
        .flatten()
    {
        end_process(pid);
    }
    for f in [
        KUBECONFIG,
        APISERVER_LOG,
        PROXY_LOG,
        CONTROLLERS_LOG,
        KUBELET_LOG,
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    problems
}

fn delete_lab_pods(state: &State, k: &KubeState) -> Result<()> {
    runtime()?.block_on(async {
        let work = async {
            let client = gingham_kubecontrollers::kube_client(&k.kubeconfig).await?;
            let all: Api<Pod> = Api::all(client.clone());
            for pod in all.list(&Default::default()).await.map_err(in_words)? {
                let on_lab_node = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| state.node(n).is_some());
                if !on_lab_node {
                    continue;
                }
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                match api
                    .delete(
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        &Default::default(),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(in_words(e)),
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .context("the API did not answer within 10 s")?
    })
}

/// `gingham lab kubelet` (internal): the kubelet's share of every node of the lab.
pub(super) fn kubelet(args: &DirArgs) -> Result<Exit> {
    let dir = lab_dir(&args.dir)?;
    let state = load_state(&dir)?;
    let k = state
        .kubernetes
        .clone()
        .context("this lab has no Kubernetes")?;
    let nodes: BTreeMap<String, String> = state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ip.clone()))
        .collect();
    let exe = self_exe()?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = gingham_kubecontrollers::kube_client(&k.kubeconfig).await?;
        let all: Api<Pod> = Api::all(client.clone());
        let mut events = watcher(all, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listed = BTreeSet::new();
        tracing::info!("kubelet watching pods");
        while let Some(event) = events.next().await {
            // A failed watch (the API away, 410 Gone) is retried with backoff, relisting.
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("watching pods: {e}");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listed.clear(),
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    let key = key_of(&pod);
                    listed.insert(key.clone());
                    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                    let Some(host_ip) = node.as_ref().and_then(|n| nodes.get(n)) else {
                        continue;
                    };
                    if pod.metadata.deletion_timestamp.is_some() {
                        stop_pod(&dir, &exe, &key);
                        continue;
                    }
                    let node = node.expect("looked up");
                    match tokio::task::block_in_place(|| run_pod(&dir, &exe, &pod, &node)) {
                        Ok(ip) => report(&client, &pod, &ip, host_ip).await,
                        Err(e) => tracing::error!(pod = %key, "cannot start the pod: {e:#}"),
                    }
                }
                watcher::Event::InitDone => {
                    // Pods deleted while nobody watched.
                    let gone: Vec<String> = match load_state(&dir) {
                        Ok(s) => s
                            .pods
                            .iter()
                            .map(super::state::PodState::key)
                            .filter(|k| !listed.contains(k))
                            .collect(),
                        Err(e) => {
                            tracing::warn!("reading the lab's state: {e:#}");
                            Vec::new()
                        }
                    };
                    for key in gone {
                        tokio::task::block_in_place(|| stop_pod(&dir, &exe, &key));
                    }
                }
                watcher::Event::Delete(pod) => {
                    let key = key_of(&pod);
                    listed.remove(&key);
                    tokio::task::block_in_place(|| stop_pod(&dir, &exe, &key));
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Exit::Ok)
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Runs `pod` on `node` unless it runs already; its address.
fn run_pod(dir: &Path, exe: &Path, pod: &Pod, node: &str) -> Result<String> {
    let key = key_of(pod);
    update_state(dir, |state| {
        if let Some(p) = state.pods.iter().find(|p| p.key() == key) {
            return p
                .ip
                .clone()
                .with_context(|| format!("pod {key} has no address"));
        }
        let mut doc = [serde_json::to_value(pod)?];
        let (ports, _) =
            gingham_calc::input::prepare_documents_with(&mut doc, &mut || node.to_owned());
        let ports = ports.get(&key).cloned().unwrap_or_default();
        let (ns, name) = key.split_once('/').expect("ns/name");
        if let Err(e) = start_pod(dir, state, exe, ns, name, node, &ports, None) {
            // Undone: the next change to the pod tries again.
            if let Some(pos) = state.pods.iter().position(|p| p.key() == key) {
                let p = state.pods.remove(pos);
                for problem in remove_pod(dir, state, exe, &p) {
                    tracing::warn!(pod = %key, "undoing: {problem}");
                }
            }
            return Err(e);
        }
        sync_routes(state);
        tracing::info!(pod = %key, node, "pod started");
        state
            .pods
            .iter()
            .find(|p| p.key() == key)
            .and_then(|p| p.ip.clone())
            .with_context(|| format!("the CNI plugin gave pod {key} no address"))
    })
}

fn sync_routes(state: &State) {
    let synced = DatastoreUrl::parse(&state.datastore)
        .and_then(|u| u.open())
        .and_then(|store| topology::sync_routes(state, store.as_ref()));
    if let Err(e) = synced {
        tracing::warn!("cannot update the lab's pod routes: {e:#}");
    }
}

/// CNI DEL of a pod the lab runs, and its namespace removed.
fn stop_pod(dir: &Path, exe: &Path, key: &str) {
    let done = update_state(dir, |state| {
        let Some(pos) = state.pods.iter().position(|p| p.key() == key) else {
            return Ok(());
        };
        let p = state.pods[pos].clone();
        let problems = remove_pod(dir, state, exe, &p);
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        state.pods.remove(pos);
        sync_routes(state);
        tracing::info!(pod = %key, "pod deleted");
        Ok(())
    });
    if let Err(e) = done {
        tracing::error!(pod = %key, "cannot delete the pod: {e:#}");
    }
}

/// Writes the pod's address and phase Running to its status, as a kubelet does.
async fn report(client: &kube::Client, pod: &Pod, ip: &str, host_ip: &str) {
    let running = pod
        .status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.as_deref() == Some(ip));
    if running {
        return;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
    }});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        tracing::warn!(pod = %format!("{ns}/{name}"), "cannot write the pod's status: {e}");
    }
}
