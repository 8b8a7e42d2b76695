//! `gingham lab`: a small cluster on one machine, in network namespaces.
//!
//! The underlay ([`topology`]): a flat subnet on one bridge, or racks (a subnet and a bridge
//! each) joined by a router namespace, with an external host beyond it. One namespace per
//! node, running the agent with the lab's networking backend; one namespace per pod, wired by
//! invoking the CNI plugin exactly as a kubelet would. Each pod runs a small server on its
//! declared ports. The root namespace is never touched.
//!
//! Everything made is recorded in `<dir>/state.json` *before* it is made ([`state`]), so
//! `lab down` cleans up after a crash too.

mod apiserver;
mod kube;
mod pods;
mod probe;
mod servers;
pub(crate) mod spec;
mod state;
mod topology;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gingham_agent::Networking;
use serde_json::Value;

use crate::Exit;
use crate::datastore::DatastoreUrl;
use crate::reach_cmd::MatrixFormat;
use pods::{Inputs, add_pod, load_inputs, remove_pod};
use state::{PodState, State, load_state, save_state, state_path};

/// Where labs keep their state by default (tmpfs: gone on reboot, like the namespaces).
pub const DEFAULT_DIR: &str = "/run/gingham/lab";
/// Where the lab's agents serve /metrics, on their node's loopback.
const AGENT_HEALTH_PORT: u16 = 9099;
/// The metric in which an agent says up to which datastore revision its table is programmed.
const AGENT_REVISION_METRIC: &str = "gingham_agent_datastore_revision";
/// Calico's AS number for nodes when the BGPConfiguration `default` names none.
const DEFAULT_NODE_AS: u32 = 64512;

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build the lab from a Lab document, Namespaces, Pods and Calico resources.
    ///
    /// The Lab document (`apiVersion: gingham.dev/v1`, `kind: Lab`, optional; at most one):
    ///
    /// `metadata.name`: 1-6 lowercase letters or digits (default `lab`), the prefix of the
    /// lab's namespaces (`gl-NAME-...`).
    ///
    /// `spec.nodes: [NAME...]`: a flat lab, one subnet 172.31.0.0/24 (node i is .i+1, the
    /// bridge .254 the gateway); default two nodes, node-1 and node-2.
    ///
    /// `spec.racks: [{name, subnet, nodes: [NAME...]}]`: each rack its own subnet and bridge;
    /// a `router` namespace holds the first host address of every rack subnet (its nodes'
    /// default gateway, the nodes take the following addresses), forwards between racks and
    /// knows only the rack subnets and the external host, never pod routes unless it learns
    /// them by BGP or takes the lab's static ones. Nodes get the label `rack: NAME` and
    /// `spec.bgp.ipv4Address` with the rack's prefix.
    ///
    /// `spec.networking: bird | vxlan | none`: passed to every node's agent as
    /// `--networking` (default: `none` for a flat lab, `bird` with racks). With `none`, the
    /// lab routes pods itself (the canal-like case: policy over someone else's routing): each
    /// node's IPAM blocks via that node on the nodes of the same subnet, a /32 for every
    /// borrowed address (a pod whose address is in a block affine to another node) via the
    /// pod's node, all with `proto static`, kept up to date by `lab apply` and `lab delete`.
    /// Across racks the nodes send pod traffic to the router. With `bird` and racks, pod
    /// traffic between racks needs a router that knows the pods: give it an `asNumber` and
    /// the nodes BGPPeer resources towards it (a top-of-rack fabric).
    ///
    /// `spec.router: {asNumber: N, staticPodRoutes: BOOL}`: with `asNumber`, the router runs
    /// BIRD (configuration and control socket in DIR/router) with a BGP session to every node
    /// (the nodes' AS: the BGPConfiguration `default`'s asNumber among the lab's documents,
    /// else 64512) that imports pod routes into its kernel table, so that BGPPeer resources
    /// towards the router give a top-of-rack fabric. The router learns and advertises
    /// nothing back: nodes send what they do not know to their gateway, the router. With
    /// the node-to-node mesh on, every node also advertises the blocks it learned from the
    /// mesh, with itself as next hop: give those BGPPeers `keepOriginalNextHop: true` (or
    /// turn the mesh off), or the router may send a block's traffic to the wrong node. `staticPodRoutes`: whether the router
    /// takes the lab's static pod routes (default: true with `networking: none`, the only
    /// backend it is valid with); false makes replies to un-NATed pod traffic from outside
    /// the rack undeliverable.
    ///
    /// `spec.external: {address: A}`: a host beyond the router, on a link of its own, in no
    /// pool: `lab try POD external --port P [--protocol UDP]` connects to it; it answers on
    /// every port `lab try` names, with the source address it saw (`peer`). Needs racks.
    ///
    /// `spec.nodePorts: [80, "UDP/53"]`: ports every node's host listens on.
    ///
    /// `spec.flowLogsAllowed: true`: every node's agent logs the new flows that policy and
    /// profile Allow rules let through as well as the dropped ones (`gingham flows`).
    ///
    /// `spec.kubernetes: true`: the lab is a small Kubernetes that kubectl drives
    /// (`gingham lab kubeconfig` prints its kubeconfig). It serves the Kubernetes API (the
    /// test double of `gingham lab apiserver`, over the lab's datastore) on 127.0.0.1 of this
    /// host and of every node, runs `gingham kube-controllers` (NetworkPolicies, Namespaces,
    /// ServiceAccounts and Pods into Calico resources) and a kubelet's share of every node: a
    /// Pod bound to a lab node (`spec.nodeName`) gets a network namespace, a CNI ADD through
    /// the plugin's Kubernetes path (`policy: {type: k8s}`: labels, service account, named
    /// ports and Calico's annotations read from the API) and a server on its container ports,
    /// and its status says Running with its address; a deleted Pod gets CNI DEL. The
    /// Namespaces, ServiceAccounts, NetworkPolicies and Pods of the lab's documents (and of
    /// `lab apply`) are written through the API; `lab delete` deletes the Pod there.
    Up(UpArgs),
    /// Try every pod-to-pod connection with real packets; print the matrix.
    ///
    /// Each cell: `✓` connected, `(✓)` refused (the packet reached the pod and nothing listens
    /// on the port: policy let it through, as reach's `✓` says), `✗` no answer (dropped).
    /// `-o json`: reach's schema (`allowed`: connected or refused) and `outcomes`
    /// (`{from: {to: "connected" | "refused" | "no-answer"}}`).
    Probe(ProbeArgs),
    /// Apply resources to a running lab: new pods are started, pods and namespaces applied again
    /// relabel their endpoints (as Kubernetes' controllers do), policies take effect.
    Apply(UpArgs),
    /// Delete a pod from a running lab, as the kubelet would: CNI DEL and its namespace.
    Delete(DeleteArgs),
    /// Try one connection with real packets: from a pod, a node, `router` or `external` to a
    /// pod, a node (answering on the Lab's `spec.nodePorts`), `router` (its address in the
    /// rack of FROM: nothing listens there, so reaching it is `refused`) or `external`
    /// (answering on every port it is asked for).
    ///
    /// Prints the outcome: `connected`; `refused: nothing listens on ADDR:PORT/PROTO` (the
    /// packet reached the destination, so policy let it through); or `no answer (dropped)`
    /// (policy drops, it never rejects; or the packet was lost).
    ///
    /// Exit codes: 0 connected, 3 refused, 4 no answer, 1 error (bad arguments, no lab).
    Try(TryArgs),
    /// Run a command in the network namespace of a pod, a node, `router` or `external`:
    /// `gingham lab exec node-a -- gingham node status`. Its exit code is passed through.
    ///
    /// On a node, the environment is the node's: GINGHAM_DATASTORE (the datastore as the node
    /// reaches it), GINGHAM_RUN_DIR (DIR/run/NODE) and GINGHAM_BIRD_SOCKET /
    /// GINGHAM_BIRD6_SOCKET (its BIRDs' control sockets there), so that `gingham get`,
    /// `gingham node status` and `birdc -s "$GINGHAM_BIRD_SOCKET"` work (and KUBECONFIG, the
    /// lab's, in a lab with `spec.kubernetes: true`: kubectl works); on the router,
    /// GINGHAM_BIRD_SOCKET is the router's BIRD's.
    Exec(ExecArgs),
    /// Kill a node's agent (SIGKILL, as a crash would) and start it again.
    RestartAgent(RestartArgs),
    /// Wait until every node's agent has programmed everything written to the datastore so
    /// far (their `gingham_agent_datastore_revision` metric): what was applied is in force.
    Wait(WaitArgs),
    /// Remove everything the lab made.
    Down(DirArgs),
    /// Print the path of the lab's kubeconfig (a lab with `spec.kubernetes: true`):
    /// `kubectl --kubeconfig "$(gingham lab kubeconfig)" get pods -A`. The API is served on
    /// 127.0.0.1 in this host's namespace and in every node's, so the same file works there.
    Kubeconfig(DirArgs),
    /// Serve the Kubernetes API test double in the foreground, over the datastore
    /// (`--datastore`): kubectl and kube-rs clients work against it (discovery, get, list,
    /// watch, create, update, patch, server-side apply, delete, CRDs). Objects are stored under
    /// `/registry/`; a resourceVersion is the datastore revision.
    Apiserver(apiserver::ApiserverArgs),
    /// (internal) The kubelet's share of the lab's nodes (`spec.kubernetes: true`).
    #[command(hide = true)]
    Kubelet(DirArgs),
    /// (internal) The server a pod runs on its declared ports.
    #[command(hide = true)]
    Serve(ServeArgs),
    /// (internal) Connection attempts from inside a pod, printed as JSON.
    #[command(hide = true)]
    Connect(ConnectArgs),
    /// (internal) Gives the nodes' loopback a way to this host's etcd.
    #[command(hide = true)]
    Proxy(ProxyArgs),
    /// (internal) Holds one TCP connection open from inside a pod, echoing through it; or, with
    /// --new-connections, opens new connections over and over. Prints counts as JSON.
    #[command(hide = true)]
    Traffic(TrafficArgs),
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    /// The node whose agent is restarted.
    pub node: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    /// Give up (exit 1, naming the agents behind) after this long.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct TrafficArgs {
    pub target: IpAddr,
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Count new connections that succeed instead of holding one.
    #[arg(long)]
    pub new_connections: bool,
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// The lab's state directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    /// Do not start the agent on the nodes (no policy is enforced).
    #[arg(long)]
    pub no_agent: bool,
    /// Lab, Namespace and Pod documents and Calico resources: files or directories.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// How long one connection attempt may take.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: MatrixFormat,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    /// `namespace/pod`, a node name, `router` or `external`.
    pub target: String,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TryArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    /// `namespace/pod`, a node name, `router` or `external`.
    pub from: String,
    /// `namespace/pod`, a node name, `router` or `external`.
    pub to: String,
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// `text`, or `json`: {"from", "to", "address", "port", "protocol", "outcome", "peer"}
    /// (`peer`: the source address the server saw, null without an answer).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: TryFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TryFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    /// `namespace/pod`.
    pub pod: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, value_delimiter = ',')]
    pub tcp: Vec<u16>,
    #[arg(long, value_delimiter = ',')]
    pub udp: Vec<u16>,
    /// What the server answers with.
    #[arg(long, default_value = "gingham")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Listen on 127.0.0.1:LISTEN_PORT inside each of these network namespaces.
    #[arg(long = "netns", required = true)]
    pub netns: Vec<String>,
    #[arg(long, default_value_t = 2379)]
    pub listen_port: u16,
    /// Where to forward, as this host reaches it (host:port).
    #[arg(long)]
    pub upstream: String,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[arg(long)]
    pub protocol: String,
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// UDP: send to the i-th target from this port plus i (0: any port). `lab probe` and
    /// `lab try` hand out ports that were not used recently, so that a probe never rides on
    /// the connection-tracking entry of an earlier one (a flow the policy allowed then).
    #[arg(long, default_value_t = 0)]
    pub udp_source_port: u16,
    pub targets: Vec<IpAddr>,
}

/// The Calico CNI annotations of each pod (`ns/pod` → annotation → value): `ipAddrs`,
fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the gingham binary")
}

/// A short, stable name for a pod's namespace (names are limited in length).
fn pod_netns(lab: &str, ns: &str, pod: &str) -> String {
    let digest = fnv_hex(&format!("{ns}/{pod}"));
    format!("gl-{lab}-p-{}", &digest[..10])
}

fn fnv_hex(s: &str) -> String {
    // FNV-1a, 64 bits, twice with different seeds: stable, dependency-free, enough to avoid
    // collisions between a lab's pods.
    let mut out = String::new();
    for seed in [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4] {
        let mut h = seed;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// Each node's run directory (where its agent writes its flow log), when a lab is in `dir`.
pub fn node_run_dirs(dir: &Path) -> Result<Option<Vec<(String, PathBuf)>>> {
    if !state_path(dir).exists() {
        return Ok(None);
    }
    let state = load_state(dir)?;
    Ok(Some(
        state
            .nodes
            .iter()
            .map(|n| (n.name.clone(), State::run_dir(dir, &n.name)))
            .collect(),
    ))
}

/// The lab directory as an absolute path: it is handed to processes in other namespaces.
fn lab_dir(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

pub fn run(cmd: &LabCmd, datastore: Option<&str>) -> Result<Exit> {
    match cmd {
        LabCmd::Up(a) => up(a, datastore),
        LabCmd::Probe(a) => probe::probe(a),
        LabCmd::Apply(a) => apply(a),
        LabCmd::Delete(a) => delete(a),
        LabCmd::Try(a) => probe::try_connect(a),
        LabCmd::Exec(a) => exec(a),
        LabCmd::RestartAgent(a) => restart_agent(a),
        LabCmd::Wait(a) => servers::wait(a),
        LabCmd::Down(a) => down(&a.dir),
        LabCmd::Kubeconfig(a) => kube::kubeconfig(a),
        LabCmd::Kubelet(a) => kube::kubelet(a),
        LabCmd::Apiserver(a) => apiserver::run(a, datastore),
        LabCmd::Serve(a) => servers::serve(a),
        LabCmd::Connect(a) => probe::connect(a),
        LabCmd::Proxy(a) => servers::proxy(a),
        LabCmd::Traffic(a) => servers::traffic(a),
    }
}

fn restart_agent(args: &RestartArgs) -> Result<Exit> {
    let dir = &lab_dir(&args.lab.dir)?;
    // Under the state's lock: a Kubernetes lab's kubelet writes the state too.
    let pid = state::update_state(dir, |state| {
        let Some(i) = state.nodes.iter().position(|n| n.name == args.node) else {
            let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "{:?} is not a node of this lab (valid: {})",
                args.node,
                names.join(", ")
            );
        };
        if let Some(pid) = state.nodes[i].agent_pid.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            for _ in 0..500 {
                // Gone, or a zombie nobody reaps (its parent, `lab up`, has exited).
                let status = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
                if !proc_dir.exists() || status.contains("State:\tZ") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        save_state(dir, state)?;
        let pid = servers::start_agent(&self_exe()?, dir, state, &state.nodes[i])?;
        state.nodes[i].agent_pid = Some(pid);
        Ok(pid)
    })?;
    println!("agent of node {} restarted (pid {pid})", args.node);
    Ok(Exit::Ok)
}

fn up(args: &UpArgs, datastore: Option<&str>) -> Result<Exit> {
    let dir = &lab_dir(&args.lab.dir)?;
    if state_path(dir).exists() {
        bail!(
            "a lab already exists in {} (run `gingham lab down --dir {}` first)",
            dir.display(),
            dir.display()
        );
    }
    // Read everything first: nothing is made if the input is bad.
    let mut sources = Vec::new();
    for f in &args.files {
        crate::resources_cmd::collect_sources(f, false, &mut sources)?;
    }
    let mut all_docs: Vec<(String, Vec<Value>)> = Vec::new();
    for (name, text) in sources {
        let docs = gingham_model::load::parse_documents(&text)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        all_docs.push((name, docs));
    }
    let plan = spec::lab_plan(&all_docs)?;
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let mut next = 0usize;
    let mut schedule = || {
        let n = names[next % names.len()].clone();
        next += 1;
        n
    };
    // With Kubernetes, its objects go through the lab's API (checked here all the same).
    let kube_objects = if plan.kubernetes {
        let (objects, docs) = split_kubernetes(all_docs, &mut schedule, &[], &names)?;
        all_docs = docs;
        objects
    } else {
        Vec::new()
    };
    let Some(inputs) = load_inputs(all_docs, &mut schedule, &[]) else {
        eprintln!("nothing was made");
        return Ok(Exit::UserError);
    };
    let url = DatastoreUrl::resolve(datastore)?;
    let client = gingham_api::Client::new(url.open()?);
    let start_agents = !args.no_agent;
    let mut state = State {
        name: plan.name.clone(),
        datastore: url.to_string(),
        node_datastore: url.to_string(),
        networking: plan.networking.name().to_owned(),
        flow_logs_allowed: plan.flow_logs_allowed,
        // Nobody else routes pods without agents.
        lab_routes: plan.networking == Networking::None || !start_agents,
        ..State::default()
    };
    save_state(dir, &state)?;
    // From here on, a failure leaves state that `lab down` cleans.
    let built = build(dir, &mut state, &client, &plan, &inputs, start_agents).and_then(|()| {
        if plan.kubernetes {
            kube::apply(dir, kube_objects)?;
            // The kubelet added the pods.
            state = load_state(dir)?;
        }
        Ok(())
    });
    if let Err(e) = built {
        eprintln!("lab up failed: {e:#}");
        eprintln!("cleaning up what was made");
        let _ = down(dir);
        return Err(e);
    }
    let racks = if plan.racks.is_empty() {
        String::new()
    } else {
        format!(" in {} racks", plan.racks.len())
    };
    println!(
        "lab {}: {} nodes{racks}, {} pods, networking {} (state in {})",
        plan.name,
        state.nodes.len(),
        state.pods.len(),
        state.networking,
        dir.display()
    );
    for p in &state.pods {
        println!(
            "  {:<30} {:<10} {}",
            p.key(),
            p.node,
            p.ip.as_deref().unwrap_or("-")
        );
    }
    Ok(Exit::Ok)
}

/// The Node resources of the lab: the rack label and the node's address with its prefix.
fn node_documents(state: &State) -> String {
    let mut docs = String::new();
    for n in &state.nodes {
        let labels = n
            .rack
            .as_ref()
            .map(|r| format!(", labels: {{rack: {r}}}"))
            .unwrap_or_default();
        docs.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {}{labels}}}\nspec: {{bgp: {{ipv4Address: {}/{}}}}}\n---\n",
            n.name, n.ip, n.prefix_len
        ));
    }
    docs
}

/// The nodes' AS number: the BGPConfiguration `default` among the lab's documents, else
/// Calico's default.
fn node_as(resources: &[gingham_model::Resource]) -> u32 {
    resources
        .iter()
        .find_map(|r| match r {
            gingham_model::Resource::BgpConfiguration(c) if c.metadata.name == "default" => {
                c.spec.as_number.map(|a| a.0)
            }
            _ => None,
        })
        .unwrap_or(DEFAULT_NODE_AS)
}

fn build(
    dir: &Path,
    state: &mut State,
    client: &gingham_api::Client,
    plan: &spec::Plan,
    inputs: &Inputs,
    start_agents: bool,
) -> Result<()> {
    let Inputs {
        resources,
        pod_ports,
        annotations,
    } = inputs;
    let exe = self_exe()?;
    topology::build_underlay(dir, state, plan)?;
    for i in 0..plan.nodes.len() {
        topology::add_node(dir, state, plan, i)?;
        let ns = state.nodes[i].netns.clone();
        let pid = servers::start_server(
            &exe,
            dir,
            &ns,
            &format!("{ns}.log"),
            &plan.nodes[i].name,
            &plan.node_ports,
        )?;
        state.nodes[i].server_pid = pid;
        save_state(dir, state)?;
    }
    if let Some(address) = plan.external {
        topology::build_external(dir, state, address)?;
        // Every port a pod or node declares, at once; others when `lab try` names them.
        let mut ports: Vec<(u8, u16)> = pod_ports
            .values()
            .flatten()
            .chain(&plan.node_ports)
            .copied()
            .collect();
        ports.sort_unstable();
        ports.dedup();
        for (proto, port) in ports {
            servers::ensure_external_server_in(dir, state, &exe, proto, port)?;
        }
    }
    if let Ok(DatastoreUrl::Etcd(eps)) = DatastoreUrl::parse(&state.datastore) {
        servers::start_etcd_proxy(dir, state, eps)?;
    }
    let mut all = gingham_model::load_resources("lab nodes", &node_documents(state))?;
    all.extend(resources.iter().cloned());
    client.write_all(&all, gingham_api::WriteMode::Apply)?;
    if let Some(asn) = plan.router_as {
        servers::start_router_bird(dir, state, asn, node_as(resources))?;
    }
    // The agents, before any pod: a pod is then closed until its policy is programmed.
    if start_agents {
        for i in 0..state.nodes.len() {
            let pid = servers::start_agent(&exe, dir, state, &state.nodes[i])?;
            state.nodes[i].agent_pid = Some(pid);
            save_state(dir, state)?;
        }
    }
    if plan.kubernetes {
        kube::start(dir, state)?;
    }
    // Pods: a namespace each, wired by the CNI plugin as a kubelet would.
    for r in resources {
        if let gingham_model::Resource::WorkloadEndpoint(w) = r
            && w.spec.orchestrator == "k8s"
        {
            add_pod(dir, state, &exe, w, pod_ports, annotations)?;
        }
    }
    topology::sync_routes(state, client.store().as_ref())
}

fn apply(args: &UpArgs) -> Result<Exit> {
    let dir = &lab_dir(&args.lab.dir)?;
    let mut state = load_state(dir)?;
    let mut sources = Vec::new();
    for f in &args.files {
        crate::resources_cmd::collect_sources(f, false, &mut sources)?;
    }
    let nodes: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    let mut next = state.pods.len();
    let mut schedule = || {
        let n = nodes[next % nodes.len()].clone();
        next += 1;
        n
    };
    let mut all_docs = Vec::new();
    for (name, text) in sources {
        let docs = gingham_model::load::parse_documents(&text)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        all_docs.push((name, docs));
    }
    // With Kubernetes, its objects go through the lab's API.
    let mut kube_objects = Vec::new();
    if state.kubernetes.is_some() {
        let (objects, docs) = split_kubernetes(all_docs, &mut schedule, &state.pods, &nodes)?;
        all_docs = docs;
        kube_objects = objects;
    }
    let Some(Inputs {
        resources,
        pod_ports,
        annotations,
    }) = load_inputs(all_docs, &mut schedule, &state.pods)
    else {
        eprintln!("nothing was applied");
        return Ok(Exit::UserError);
    };
    let client = gingham_api::Client::new(DatastoreUrl::parse(&state.datastore)?.open()?);
    let outcomes = client.write_all(&resources, gingham_api::WriteMode::Apply)?;
    for (r, o) in resources.iter().zip(&outcomes) {
        println!("{} {o:?}", r.describe());
    }
    let exe = self_exe()?;
    for r in &resources {
        if let gingham_model::Resource::WorkloadEndpoint(w) = r
            && w.spec.orchestrator == "k8s"
        {
            let key = format!("{}/{}", w.metadata.namespace_or_empty(), w.spec.pod);
            if !state.pods.iter().any(|p| p.key() == key) {
                add_pod(dir, &mut state, &exe, w, &pod_ports, &annotations)?;
                println!("pod {key} started");
            }
        }
    }
    if state.kubernetes.is_some() {
        let before: Vec<String> = state.pods.iter().map(PodState::key).collect();
        for o in &kube_objects {
            println!(
                "{} {} applied through the lab's API",
                o["kind"].as_str().unwrap_or_default(),
                kube::key_of_doc(o)
            );
        }
        kube::apply(dir, kube_objects)?;
        // The kubelet added the new pods.
        state = load_state(dir)?;
        for p in state.pods.iter().filter(|p| !before.contains(&p.key())) {
            println!("pod {} started", p.key());
        }
    }
    topology::sync_routes(&state, client.store().as_ref())?;
    Ok(Exit::Ok)
}

fn delete(args: &DeleteArgs) -> Result<Exit> {
    let dir = &lab_dir(&args.lab.dir)?;
    let mut state = load_state(dir)?;
    let Some(pos) = state.pods.iter().position(|p| p.key() == args.pod) else {
        let names: Vec<String> = state.pods.iter().map(PodState::key).collect();
        bail!(
            "{:?} is not a pod of this lab (valid: {})",
            args.pod,
            names.join(", ")
        );
    };
    if state.kubernetes.is_some() {
        // As kubectl would: the kubelet stops the pod.
        kube::delete_pod(dir, &args.pod)?;
        println!("pod {} deleted", args.pod);
        return Ok(Exit::Ok);
    }
    let pod = state.pods[pos].clone();
    let problems = remove_pod(dir, &state, &self_exe()?, &pod);
    if !problems.is_empty() {
        bail!("deleting {}: {}", args.pod, problems.join("; "));
    }
    state.pods.remove(pos);
    save_state(dir, &state)?;
    // Its borrowed address's routes go with it.
    let store = DatastoreUrl::parse(&state.datastore)?.open()?;
    topology::sync_routes(&state, store.as_ref())?;
    println!("pod {} deleted", args.pod);
    Ok(Exit::Ok)
}

fn exec(args: &ExecArgs) -> Result<Exit> {
    let dir = &lab_dir(&args.lab.dir)?;
    let state = load_state(dir)?;
    let netns = probe::netns_of(&state, &args.target)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &netns]).args(&args.command);
    // This `gingham` first on PATH, so `lab exec node-a -- gingham node status` runs the
    // binary that made the lab even where it is not installed.
    if let Some(bin) = self_exe()?.parent() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(
            std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)),
        )
        .context("PATH")?;
        cmd.env("PATH", joined);
    }
    if let Some(node) = state.node(&args.target) {
        let run = State::run_dir(dir, &node.name);
        cmd.env("GINGHAM_DATASTORE", &state.node_datastore)
            .env("GINGHAM_BIRD_SOCKET", run.join("bird.ctl"))
            .env("GINGHAM_BIRD6_SOCKET", run.join("bird6.ctl"))
            .env("GINGHAM_RUN_DIR", run);
        // The lab's API answers on the node's 127.0.0.1 too: kubectl works there.
        if let Some(k) = &state.kubernetes {
            cmd.env("KUBECONFIG", &k.kubeconfig);
        }
    } else if args.target == probe::ROUTER {
        cmd.env(
            "GINGHAM_BIRD_SOCKET",
            State::router_dir(dir).join(servers::ROUTER_BIRD_SOCKET),
        );
    }
    let status = cmd.status().context("cannot run the command")?;
    Ok(match status.code() {
        Some(0) => Exit::Ok,
        Some(code) => Exit::Code(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: as a shell reports it.
        None => {
            use std::os::unix::process::ExitStatusExt;
            Exit::Code(status.signal().map_or(1, |s| 128 + (s as u8 & 0x7f)))
        }
    })
}

/// Removes everything recorded in the state, in reverse order, tolerating what is already gone.
fn down(dir: &Path) -> Result<Exit> {
    let dir = &lab_dir(dir)?;
    if load_state(dir)?.kubernetes.is_some() {
        kube::stop_kubelet(dir)?;
    }
    let state = load_state(dir)?;
    let exe = self_exe()?;
    let mut problems = Vec::new();
    for p in state.pods.iter().rev() {
        problems.extend(remove_pod(dir, &state, &exe, p));
    }
    // The stored objects the lab made: its nodes (pods' endpoints went with CNI DEL).
    if let Ok(url) = DatastoreUrl::parse(&state.datastore)
        && let Ok(store) = url.open()
    {
        let client = gingham_api::Client::new(store);
        let store = client.store().clone();
        let ipam = gingham_ipam::Ipam::new(store.as_ref());
        for n in &state.nodes {
            // Blocks the node held go back to the pool once empty (they are, after CNI DEL).
            if let Err(e) = ipam.release_host_affinities(&n.name, true) {
                problems.push(format!("releasing the blocks of node {}: {e}", n.name));
            }
            let _ = client.delete(gingham_model::Kind::Node, None, &n.name, None);
        }
    }
    let kill = |pid: &u32| {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    };
    for n in &state.nodes {
        n.agent_pid.iter().chain(&n.server_pid).for_each(kill);
        let _ = std::fs::remove_file(dir.join(format!("{}.log", n.netns)));
        let _ = std::fs::remove_file(dir.join(format!("agent-{}.log", n.name)));
    }
    if let Some(x) = &state.external {
        for (proto, port, pid) in &x.servers {
            kill(pid);
            let _ = std::fs::remove_file(dir.join(servers::external_log(*proto, *port)));
        }
    }
    if let Some(r) = &state.router {
        r.bird_pid.iter().for_each(kill);
    }
    if let Some(k) = &state.kubernetes {
        problems.extend(kube::stop(dir, &state, k));
    }
    if let Some(pid) = &state.proxy_pid {
        kill(pid);
        let _ = std::fs::remove_file(dir.join("etcd-proxy.log"));
    }
    // What the lab's processes started in its namespaces (an agent's BIRD) goes too.
    let namespaces: Vec<&str> = state
        .external
        .iter()
        .map(|x| x.netns.as_str())
        .chain(state.nodes.iter().rev().map(|n| n.netns.as_str()))
        .chain(state.router.iter().map(|r| r.netns.as_str()))
        .chain(state.underlay.as_deref())
        .collect();
    for ns in namespaces {
        topology::kill_processes_in(ns);
        if let Err(e) = topology::remove_netns(ns) {
            problems.push(format!("{e:#}"));
        }
    }
    for d in [dir.join("run"), State::router_dir(dir)] {
        if d.exists()
            && let Err(e) = std::fs::remove_dir_all(&d)
        {
            problems.push(format!("removing {}: {e}", d.display()));
        }
    }
    if !problems.is_empty() {
        bail!("lab down left things behind:\n{}", problems.join("\n"));
    }
    std::fs::remove_file(state_path(dir))?;
    let _ = std::fs::remove_file(dir.join(probe::UDP_PORT_COUNTER));
    let _ = std::fs::remove_file(dir.join(servers::EXTERNAL_LOCK));
    let _ = std::fs::remove_file(dir.join(state::STATE_LOCK));
    let _ = std::fs::remove_dir(dir);
    println!("lab {} removed", state.name);
    Ok(Exit::Ok)
}

/// Takes the Kubernetes objects out of the documents (they go through the lab's API), with
/// every Pod scheduled; checks them as the lab checks documents without Kubernetes. Returns
/// the objects and the documents that are left.
#[allow(clippy::type_complexity)]
fn split_kubernetes(
    all_docs: Vec<(String, Vec<Value>)>,
    schedule: &mut dyn FnMut() -> String,
    running: &[PodState],
    nodes: &[String],
) -> Result<(Vec<Value>, Vec<(String, Vec<Value>)>)> {
    let mut objects = Vec::new();
    let mut rest = Vec::new();
    for (name, mut docs) in all_docs {
        let mut mine = kube::split_kubernetes(&mut docs);
        for o in &mut mine {
            if o.get("kind").and_then(Value::as_str) == Some("Pod") {
                let key = kube::key_of_doc(o);
                pods::pin_running_pod(&key, o, running);
            }
        }
        kube::prepare_pods(&mut mine, schedule, nodes)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        objects.extend(mine);
        rest.push((name, docs));
    }
    Ok((objects, rest))
}

/// Every node's agent's /metrics in the lab at `dir`: per node, the text or why it could not
/// be had (no agent runs there, or it does not answer).
pub(crate) fn agents_metrics(dir: &Path) -> Result<Vec<(String, Result<String>)>> {
    let state = load_state(dir)?;
    Ok(state
        .nodes
        .iter()
        .map(|n| {
            let text = match n.agent_pid {
                None => Err(anyhow::anyhow!(
                    "no agent runs on node {} (the lab was made with --no-agent)",
                    n.name
                )),
                Some(_) => servers::agent_metrics(n),
            };
            (n.name.clone(), text)
        })
        .collect())
}
