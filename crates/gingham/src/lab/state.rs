//! What the lab made, in `<dir>/state.json`: written *before* each thing is made, so that
//! `lab down` cleans up after a crash too.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What the lab made.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub name: String,
    /// The datastore as this host reaches it.
    pub datastore: String,
    /// The datastore as the nodes reach it (differs for etcd, which they reach through the
    /// lab's proxy on their own loopback).
    #[serde(default)]
    pub node_datastore: String,
    /// The proxy that gives the nodes their view of etcd.
    #[serde(default)]
    pub proxy_pid: Option<u32>,
    /// The namespace of the switches: one bridge for a flat lab, one per rack.
    pub underlay: Option<String>,
    /// How pod routes get between nodes (`--networking` of every agent): bird, vxlan, none.
    #[serde(default = "default_networking")]
    pub networking: String,
    /// Every agent logs allowed flows too (`spec.flowLogsAllowed`).
    #[serde(default)]
    pub flow_logs_allowed: bool,
    /// Whether the lab itself routes pods (blocks and borrowed addresses): with
    /// `networking: none`, or when no agent runs.
    #[serde(default = "yes")]
    pub lab_routes: bool,
    /// The router joining the racks (rack labs only).
    #[serde(default)]
    pub router: Option<RouterState>,
    /// The host beyond the router.
    #[serde(default)]
    pub external: Option<ExternalState>,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// The lab's Kubernetes (`spec.kubernetes: true`).
    #[serde(default)]
    pub kubernetes: Option<KubeState>,
}

/// The processes of a lab's Kubernetes and where to reach its API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct KubeState {
    /// The kubeconfig every client uses, in the root namespace and in the nodes' alike.
    pub kubeconfig: PathBuf,
    /// The API double, on 127.0.0.1 in the root namespace.
    #[serde(default)]
    pub apiserver_pid: Option<u32>,
    /// Carries the API's port into every node's namespace (on its 127.0.0.1).
    #[serde(default)]
    pub proxy_pid: Option<u32>,
    #[serde(default)]
    pub controllers_pid: Option<u32>,
    /// The kubelet's share of every node: Pods bound to a node get a namespace and CNI ADD.
    #[serde(default)]
    pub kubelet_pid: Option<u32>,
}

fn default_networking() -> String {
    "none".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct NodeState {
    pub name: String,
    pub netns: String,
    pub ip: String,
    /// The node's prefix length on its subnet.
    #[serde(default = "flat_prefix")]
    pub prefix_len: u8,
    /// Its default gateway (the router's address in its rack, or the flat lab's bridge).
    #[serde(default)]
    pub gateway: String,
    /// Its rack, in a rack lab.
    #[serde(default)]
    pub rack: Option<String>,
    /// The node's agent, which programs its nftables table.
    #[serde(default)]
    pub agent_pid: Option<u32>,
    /// The server on the Lab's `nodePorts`, in the node's own namespace.
    #[serde(default)]
    pub server_pid: Option<u32>,
}

fn flat_prefix() -> u8 {
    24
}

impl NodeState {
    /// Whether `other` is on this node's subnet (same rack, or both in the flat lab).
    pub fn same_segment(&self, other: &NodeState) -> bool {
        self.rack == other.rack
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RouterState {
    pub netns: String,
    /// One leg per rack.
    pub racks: Vec<RackState>,
    /// Whether the router holds the lab's static routes to the pods (`networking: none`).
    pub static_pod_routes: bool,
    /// The router's BIRD (`spec.router.asNumber`).
    #[serde(default)]
    pub bird_pid: Option<u32>,
    #[serde(default)]
    pub as_number: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RackState {
    pub name: String,
    pub subnet: String,
    /// The router's address in the rack (the first host address), every node's gateway.
    pub gateway: String,
    /// The router's interface into the rack.
    pub ifname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ExternalState {
    pub netns: String,
    pub address: String,
    /// Its servers: (protocol number, port, pid).
    #[serde(default)]
    pub servers: Vec<(u8, u16, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PodState {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ip: Option<String>,
    pub ports: Vec<(u8, u16)>,
    pub server_pid: Option<u32>,
}

impl PodState {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl State {
    /// A node's run directory (`--run-dir` of its agent: BIRD's sockets and configuration),
    /// in the lab directory since the nodes share one filesystem.
    pub fn run_dir(dir: &Path, node: &str) -> PathBuf {
        dir.join("run").join(node)
    }

    /// The router's directory: its BIRD's configuration and control socket.
    pub fn router_dir(dir: &Path) -> PathBuf {
        dir.join("router")
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

pub(super) fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

pub(super) fn load_state(dir: &Path) -> Result<State> {
    let text = std::fs::read_to_string(state_path(dir))
        .with_context(|| format!("no lab in {} (run `gingham lab up` first)", dir.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a lab state", state_path(dir).display()))
}

pub(super) fn save_state(dir: &Path, state: &State) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, state_path(dir))?;
    Ok(())
}

/// Runs `f` on the state as stored, under the lab's lock, and stores what it leaves: the
/// kubelet and the lab's commands change the state from different processes.
pub(super) fn update_state<T>(dir: &Path, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    // No lab, no lock file made.
    load_state(dir)?;
    let lock = std::fs::File::create(dir.join(STATE_LOCK))
        .with_context(|| format!("cannot create the lock in {}", dir.display()))?;
    lock.lock().context("cannot lock the lab's state")?;
    let mut state = load_state(dir)?;
    let out = f(&mut state);
    save_state(dir, &state)?;
    out
}

/// The lock file of [`update_state`].
pub(super) const STATE_LOCK: &str = "state.lock";
