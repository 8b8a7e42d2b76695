//! Pods: reading Pod documents and Calico's pod annotations, making a pod as a kubelet would
//! (a namespace, the CNI ADD, its server) and tearing it down.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use gingham_calc::input::prepare_documents_with;
use serde_json::Value;

use super::servers::start_server;
use super::spec::{is_lab, parse_lab};
use super::state::{NodeState, PodState, State, save_state};
use super::topology;
use super::{fnv_hex, pod_netns};

/// The Calico CNI annotations of each pod (`ns/pod` → annotation → value): `ipAddrs`,
/// `ipv4pools`, `ipv6pools`. Calico's plugin reads them from the API server; the lab hands them
/// over the way a kubelet can, in CNI_ARGS and the network configuration.
pub(super) type PodAnnotations = BTreeMap<String, BTreeMap<String, String>>;

/// Calls `f` with every Pod document (`kind: List` items included) and its `namespace/name`.
fn for_each_pod(doc: &mut Value, f: &mut dyn FnMut(&str, &mut Value)) {
    if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            for_each_pod(item, f);
        }
        return;
    }
    if doc.get("kind").and_then(Value::as_str) != Some("Pod") {
        return;
    }
    let key = format!(
        "{}/{}",
        doc.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default"),
        doc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    f(&key, doc);
}

/// Records a pod's Calico CNI annotations.
fn collect_annotations(key: &str, doc: &Value, out: &mut PodAnnotations) {
    let wanted = ["ipAddrs", "ipv4pools", "ipv6pools"];
    let found: BTreeMap<String, String> = doc
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let short = k.strip_prefix("cni.projectcalico.org/")?;
            (wanted.contains(&short))
                .then(|| (short.to_owned(), v.as_str().unwrap_or_default().to_owned()))
        })
        .collect();
    if !found.is_empty() {
        out.insert(key.to_owned(), found);
    }
}

/// A lab's input, loaded.
pub(super) struct Inputs {
    pub resources: Vec<gingham_model::Resource>,
    pub pod_ports: BTreeMap<String, Vec<(u8, u16)>>,
    pub annotations: PodAnnotations,
}

/// Loads parsed documents (Lab documents dropped): pods of `running` stay on their node, the
/// others are scheduled; Calico's pod annotations and declared ports are collected. Prints every
/// error and returns `None` if there was one.
pub(super) fn load_inputs(
    all_docs: Vec<(String, Vec<Value>)>,
    schedule: &mut dyn FnMut() -> String,
    running: &[PodState],
) -> Option<Inputs> {
    let mut inputs = Inputs {
        resources: Vec::new(),
        pod_ports: BTreeMap::new(),
        annotations: PodAnnotations::new(),
    };
    let mut failed = false;
    for (name, mut docs) in all_docs {
        for (i, d) in docs.iter().enumerate().filter(|(_, d)| is_lab(d)) {
            if let Err(e) = parse_lab(&name, i + 1, d) {
                eprintln!("{e}");
                failed = true;
            }
        }
        docs.retain(|d| !is_lab(d));
        for d in &mut docs {
            for_each_pod(d, &mut |key, pod| {
                pin_running_pod(key, pod, running);
                collect_annotations(key, pod, &mut inputs.annotations);
            });
        }
        let (ports, notes) = prepare_documents_with(&mut docs, schedule);
        for n in notes {
            eprintln!("notice: {n}");
        }
        inputs.pod_ports.extend(ports);
        match crate::reach_cmd::load_documents(&name, &docs) {
            Ok(loaded) => inputs.resources.extend(loaded),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    (!failed).then_some(inputs)
}

/// Makes one pod: its namespace, the CNI ADD, its server. Recorded in the state first.
pub(super) fn add_pod(
    dir: &Path,
    state: &mut State,
    exe: &Path,
    w: &gingham_model::endpoint::WorkloadEndpoint,
    pod_ports: &BTreeMap<String, Vec<(u8, u16)>>,
    annotations: &PodAnnotations,
) -> Result<()> {
    let ns = w.metadata.namespace_or_empty();
    let key = format!("{ns}/{}", w.spec.pod);
    let ports = pod_ports.get(&key).cloned().unwrap_or_default();
    start_pod(
        dir,
        state,
        exe,
        ns,
        &w.spec.pod,
        &w.spec.node,
        &ports,
        annotations.get(&key),
    )
}

/// Makes pod `ns/pod` on `node` as a kubelet would: its namespace, the CNI ADD (with the
/// lab's Kubernetes path when it has one), its server on `ports`. Recorded in the state first.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_pod(
    dir: &Path,
    state: &mut State,
    exe: &Path,
    ns: &str,
    pod: &str,
    node: &str,
    ports: &[(u8, u16)],
    requested: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let node = state
        .nodes
        .iter()
        .find(|n| n.name == node)
        .cloned()
        .with_context(|| {
            format!("pod {ns}/{pod} is on node {node}, which is not in the Lab's nodes")
        })?;
    let netns = pod_netns(&state.name, ns, pod);
    let container_id = fnv_hex(&format!("{}/{ns}/{pod}", state.name))[..16].to_owned();
    state.pods.push(PodState {
        namespace: ns.to_owned(),
        name: pod.to_owned(),
        node: node.name.clone(),
        netns: netns.clone(),
        container_id: container_id.clone(),
        ip: None,
        ports: ports.to_vec(),
        server_pid: None,
    });
    save_state(dir, state)?;
    topology::new_netns(&netns)?;
    let result = cni(
        exe,
        dir,
        state,
        &node,
        "ADD",
        ns,
        pod,
        &container_id,
        &netns,
        requested,
    )?;
    let pod_ip = result
        .pointer("/ips/0/address")
        .and_then(Value::as_str)
        .map(|a| a.split('/').next().unwrap_or(a).to_owned());
    let pid = start_server(
        exe,
        dir,
        &netns,
        &format!("{netns}.log"),
        &format!("{}/{ns}/{pod}", state.name),
        ports,
    )?;
    let entry = state.pods.last_mut().expect("just pushed");
    entry.ip = pod_ip;
    entry.server_pid = pid;
    save_state(dir, state)?;
    Ok(())
}

/// Invokes the CNI plugin for one pod, as a kubelet would, with the node's run directory
/// (where its agent writes the pod MTU).
#[allow(clippy::too_many_arguments)]
pub(super) fn cni(
    exe: &Path,
    dir: &Path,
    state: &State,
    node: &NodeState,
    command: &str,
    ns: &str,
    pod: &str,
    container_id: &str,
    netns: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Value> {
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "gingham",
        "nodename": node.name,
        "datastore": state.node_datastore,
        "ipam": {"type": "gingham-ipam"},
    });
    // The Kubernetes path: the plugin reads the pod and its namespace from the lab's API.
    if let Some(k) = &state.kubernetes {
        conf["policy"] = serde_json::json!({"type": "k8s"});
        conf["kubernetes"] = serde_json::json!({"kubeconfig": k.kubeconfig});
    }
    let mut args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id}"
    );
    let list =
        |v: &str| -> Vec<String> { serde_json::from_str(v).unwrap_or_else(|_| vec![v.to_owned()]) };
    if let Some(a) = annotations {
        if let Some(ips) = a.get("ipAddrs") {
            args.push_str(&format!(";IP={}", list(ips).join(",")));
        }
        for (ann, field) in [("ipv4pools", "ipv4_pools"), ("ipv6pools", "ipv6_pools")] {
            if let Some(pools) = a.get(ann) {
                conf["ipam"][field] = serde_json::json!(list(pools));
            }
        }
    }
    let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin_dir)
        .env("CNI_ARGS", args)
        .env(
            gingham_agent::Config::RUN_DIR_ENV,
            State::run_dir(dir, &node.name),
        )
        .env_remove("GINGHAM_DATASTORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the CNI plugin")?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("CNI {command} for {ns}/{pod} failed: {}", text.trim());
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("CNI {command} printed {text}"))
}

/// Gives a Pod document of a pod the lab runs the node it runs on.
pub(super) fn pin_running_pod(key: &str, doc: &mut Value, pods: &[PodState]) {
    if let Some(p) = pods.iter().find(|p| p.key() == key) {
        let asked = doc
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !asked.is_empty() && asked != p.node {
            eprintln!(
                "notice: pod {key} runs on {}; it stays there (spec.nodeName {asked} ignored)",
                p.node
            );
        }
        if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(p.node.clone()));
        } else if let Some(obj) = doc.as_object_mut() {
            obj.insert("spec".into(), serde_json::json!({"nodeName": p.node}));
        }
    }
}

/// could not be done (what is already gone is fine).
pub(super) fn remove_pod(dir: &Path, state: &State, exe: &Path, p: &PodState) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(pid) = p.server_pid {
        // The server may be gone already; then kill fails and that is fine.
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    if let Some(node) = state.nodes.iter().find(|n| n.name == p.node)
        && gingham_net::netns_exists(&node.netns)
        && let Err(e) = cni(
            exe,
            dir,
            state,
            node,
            "DEL",
            &p.namespace,
            &p.name,
            &p.container_id,
            &p.netns,
            None,
        )
    {
        problems.push(format!("{e:#}"));
    }
    if let Err(e) = topology::remove_netns(&p.netns) {
        problems.push(format!("{e:#}"));
    }
    let _ = std::fs::remove_file(dir.join(format!("{}.log", p.netns)));
    problems
}
