//! `gingham lab`: a small cluster on one machine, in network namespaces.
//!
//! Topology: an underlay namespace with a bridge; one namespace per node with a veth onto the
//! bridge (node `i` is 172.31.0.`i+1`/24, the bridge 172.31.0.254 is every node's default
//! route); one namespace per pod, wired by invoking the CNI plugin exactly as a kubelet would.
//! Each pod runs a small server on its declared ports. The root namespace is never touched.
//!
//! Everything made is recorded in `<dir>/state.json` *before* it is made, so `lab down` cleans
//! up after a crash too.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gingham_calc::eval::{parse_protocol, protocol_name};
use gingham_calc::input::prepare_documents_with;
use gingham_calc::reach::Matrix;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Exit;
use crate::datastore::DatastoreUrl;
use crate::reach_cmd::MatrixFormat;

/// Where labs keep their state by default (tmpfs: gone on reboot, like the namespaces).
const DEFAULT_DIR: &str = "/run/gingham/lab";
const UNDERLAY_PREFIX: &str = "172.31.0";
/// Where the lab's agents serve /metrics, on their node's loopback.
const AGENT_HEALTH_PORT: u16 = 9099;
/// The metric in which an agent says up to which datastore revision its table is programmed.
const AGENT_REVISION_METRIC: &str = "gingham_agent_datastore_revision";

/// What one connection attempt with real packets found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The server answered.
    Connected,
    /// The packet reached the destination and nothing listens there (TCP reset, ICMP port
    /// unreachable): policy let it through.
    Refused,
    /// Nothing came back: dropped (policy drops, it never rejects) or lost.
    NoAnswer,
}

impl Outcome {
    /// Whether the packet reached the destination, i.e. policy allowed it (reach's `allowed`).
    pub fn reached(self) -> bool {
        matches!(self, Outcome::Connected | Outcome::Refused)
    }

    /// The mark in a probe matrix; reached outcomes look like reach's `✓`.
    fn mark(self) -> &'static str {
        match self {
            Outcome::Connected => "✓",
            Outcome::Refused => "(✓)",
            Outcome::NoAnswer => "✗",
        }
    }

    /// `lab try`'s exit code for this outcome (documented in its help).
    fn exit(self) -> Exit {
        match self {
            Outcome::Connected => Exit::Ok,
            Outcome::Refused => Exit::Code(EXIT_REFUSED),
            Outcome::NoAnswer => Exit::Code(EXIT_NO_ANSWER),
        }
    }
}

/// The legend printed under a probe matrix.
const PROBE_LEGEND: &str = "✓ connected · (✓) refused: reached, nothing listens on the port (policy let it through) · ✗ no answer: dropped";

/// `lab try`'s exit code when the connection is refused (reached, nothing listens).
const EXIT_REFUSED: u8 = 3;
/// `lab try`'s exit code when nothing answers (dropped or lost).
const EXIT_NO_ANSWER: u8 = 4;

/// One connection attempt as `lab connect` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Attempt {
    outcome: Outcome,
    /// The source address the server saw (it says so in its greeting), when it answered.
    peer: Option<IpAddr>,
}

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build the lab from a Lab document, Namespaces, Pods and Calico resources.
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
    /// Try one connection with real packets: from a pod or a node to a pod or a node (a node
    /// answers on the Lab's `spec.nodePorts`).
    ///
    /// Prints the outcome: `connected`; `refused: nothing listens on ADDR:PORT/PROTO` (the
    /// packet reached the destination, so policy let it through); or `no answer (dropped)`
    /// (policy drops, it never rejects; or the packet was lost).
    ///
    /// Exit codes: 0 connected, 3 refused, 4 no answer, 1 error (bad arguments, no lab).
    Try(TryArgs),
    /// Run a command in a pod's network namespace: `gingham lab exec ns/pod -- CMD...`.
    Exec(ExecArgs),
    /// Kill a node's agent (SIGKILL, as a crash would) and start it again.
    RestartAgent(RestartArgs),
    /// Wait until every node's agent has programmed everything written to the datastore so
    /// far (their `gingham_agent_datastore_revision` metric): what was applied is in force.
    Wait(WaitArgs),
    /// Remove everything the lab made.
    Down(DirArgs),
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
    /// `namespace/pod`, or a node name.
    pub target: String,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TryArgs {
    #[command(flatten)]
    pub lab: DirArgs,
    /// `namespace/pod` or a node name.
    pub from: String,
    /// `namespace/pod` or a node name.
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
/// `ipv4pools`, `ipv6pools`. Calico's plugin reads them from the API server; the lab hands them
/// over the way a kubelet can, in CNI_ARGS and the network configuration.
type PodAnnotations = BTreeMap<String, BTreeMap<String, String>>;

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
struct Inputs {
    resources: Vec<gingham_model::Resource>,
    pod_ports: BTreeMap<String, Vec<(u8, u16)>>,
    annotations: PodAnnotations,
}

/// Loads parsed documents (Lab documents dropped): pods of `running` stay on their node, the
/// others are scheduled; Calico's pod annotations and declared ports are collected. Prints every
/// error and returns `None` if there was one.
fn load_inputs(
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

/// What the lab made, written before each thing is made.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    name: String,
    /// The datastore as this host reaches it.
    datastore: String,
    /// The datastore as the nodes reach it (differs for etcd, which they reach through the
    /// lab's proxy on their own loopback).
    #[serde(default)]
    node_datastore: String,
    /// The proxy that gives the nodes their view of etcd.
    #[serde(default)]
    proxy_pid: Option<u32>,
    underlay: Option<String>,
    nodes: Vec<NodeState>,
    pods: Vec<PodState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeState {
    name: String,
    netns: String,
    ip: String,
    /// The node's agent, which programs its nftables table.
    #[serde(default)]
    agent_pid: Option<u32>,
    /// The server on the Lab's `nodePorts`, in the node's own namespace.
    #[serde(default)]
    server_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PodState {
    namespace: String,
    name: String,
    node: String,
    netns: String,
    container_id: String,
    ip: Option<String>,
    ports: Vec<(u8, u16)>,
    server_pid: Option<u32>,
}

impl PodState {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn load_state(dir: &Path) -> Result<State> {
    let text = std::fs::read_to_string(state_path(dir))
        .with_context(|| format!("no lab in {} (run `gingham lab up` first)", dir.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a lab state", state_path(dir).display()))
}

fn save_state(dir: &Path, state: &State) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, state_path(dir))?;
    Ok(())
}

/// Runs `ip` with arguments; fails with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    ip(&full)
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

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

pub fn run(cmd: &LabCmd, datastore: Option<&str>) -> Result<Exit> {
    match cmd {
        LabCmd::Up(a) => up(a, datastore),
        LabCmd::Probe(a) => probe(a),
        LabCmd::Apply(a) => apply(a),
        LabCmd::Delete(a) => delete(a),
        LabCmd::Try(a) => try_connect(a),
        LabCmd::Exec(a) => exec(a),
        LabCmd::RestartAgent(a) => restart_agent(a),
        LabCmd::Wait(a) => wait(a),
        LabCmd::Down(a) => down(&a.dir),
        LabCmd::Serve(a) => serve(a),
        LabCmd::Connect(a) => connect(a),
        LabCmd::Proxy(a) => proxy(a),
        LabCmd::Traffic(a) => traffic(a),
    }
}

fn restart_agent(args: &RestartArgs) -> Result<Exit> {
    let dir = &args.lab.dir;
    let mut state = load_state(dir)?;
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
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    save_state(dir, &state)?;
    let pid = start_agent(&self_exe()?, dir, &state.nodes[i], &state.node_datastore)?;
    state.nodes[i].agent_pid = Some(pid);
    save_state(dir, &state)?;
    println!("agent of node {} restarted (pid {pid})", args.node);
    Ok(Exit::Ok)
}

/// The datastore revision a node's agent has programmed, from its /metrics.
fn agent_revision(node: &NodeState) -> Result<i64> {
    let target = gingham_net::NetnsRef::named(&node.netns);
    let addr = SocketAddr::from(([127, 0, 0, 1], AGENT_HEALTH_PORT));
    // A socket keeps the namespace it was made in.
    let mut stream = gingham_net::in_netns(&target, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
    })
    .with_context(|| format!("entering {}", node.netns))?
    .with_context(|| format!("the agent of node {} does not answer on {addr}", node.name))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .with_context(|| format!("reading the metrics of node {}'s agent", node.name))?;
    text.lines()
        .filter(|l| {
            l.strip_prefix(AGENT_REVISION_METRIC)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .find_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as i64)
        .with_context(|| {
            format!(
                "the agent of node {} does not report {AGENT_REVISION_METRIC}",
                node.name
            )
        })
}

/// Whether a write the agents watch happened after `after`, up to `upto`.
fn watched_write_between(
    store: &dyn gingham_datastore::Datastore,
    after: i64,
    upto: i64,
) -> Result<bool> {
    // What the agents watch: every Calico resource.
    let prefix = format!("{}/", gingham_model::kind::KEY_ROOT);
    let mut watch = match store.watch(&prefix, after) {
        Ok(w) => w,
        // History forgotten: the agent must reach `upto` itself.
        Err(gingham_datastore::Error::Compacted { .. }) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    Ok(watch
        .next(Duration::from_millis(200))?
        .is_some_and(|e| e.revision() <= upto))
}

fn wait(args: &WaitArgs) -> Result<Exit> {
    let state = load_state(&args.lab.dir)?;
    let store = DatastoreUrl::parse(&state.datastore)?.open()?;
    // Everything written so far; writes the agents do not watch (IPAM) need not be reached.
    let target = store.revision()?;
    let deadline = std::time::Instant::now() + Duration::from_millis(args.timeout_ms);
    let agents: Vec<&NodeState> = state
        .nodes
        .iter()
        .filter(|n| n.agent_pid.is_some())
        .collect();
    loop {
        let mut behind = Vec::new();
        for node in &agents {
            let problem = match agent_revision(node) {
                Ok(r) if r >= target => continue,
                Ok(r) => match watched_write_between(store.as_ref(), r, target) {
                    Ok(false) => continue,
                    Ok(true) => format!("{} at revision {r}", node.name),
                    Err(e) => format!("{}: {e:#}", node.name),
                },
                Err(e) => format!("{e:#}"),
            };
            behind.push(problem);
        }
        if behind.is_empty() {
            println!("{} agents programmed up to revision {target}", agents.len());
            return Ok(Exit::Ok);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "agents behind the datastore (revision {target}) after {} ms: {}",
                args.timeout_ms,
                behind.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Default, Serialize)]
struct TrafficReport {
    /// Round trips through the held connection, or new connections that succeeded.
    ok: u64,
    /// Round trips that failed, or connection attempts that did not succeed.
    failed: u64,
    /// What went wrong first, if anything.
    first_error: Option<String>,
}

fn traffic(args: &TrafficArgs) -> Result<Exit> {
    let addr = SocketAddr::new(args.target, args.port);
    let end = std::time::Instant::now() + Duration::from_secs_f64(args.seconds);
    let interval = Duration::from_millis(args.interval_ms);
    let timeout = Duration::from_millis(500);
    let mut report = TrafficReport::default();
    let fail = |report: &mut TrafficReport, e: String| {
        report.failed += 1;
        report.first_error.get_or_insert(e);
    };
    if args.new_connections {
        while std::time::Instant::now() < end {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(_) => report.ok += 1,
                Err(e) => fail(&mut report, e.to_string()),
            }
            std::thread::sleep(interval);
        }
    } else {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        // The greeting: one line.
        let mut byte = [0u8; 1];
        while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {}
        while std::time::Instant::now() < end {
            let sent = (report.ok % 256) as u8;
            let round = stream
                .write_all(&[sent])
                .and_then(|()| stream.read_exact(&mut byte));
            match round {
                Ok(()) if byte[0] == sent => report.ok += 1,
                Ok(()) => fail(&mut report, format!("echo {} for {sent}", byte[0])),
                Err(e) => {
                    fail(&mut report, e.to_string());
                    break;
                }
            }
            std::thread::sleep(interval);
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(Exit::Ok)
}

/// The apiVersion of the `Lab` document.
const LAB_API_VERSION: &str = "gingham.dev/v1";

/// A `Lab` document: the lab's name, its nodes and the ports every node serves. Unknown fields
/// are refused, as for every other kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabDoc {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    /// `Lab` (how the document was recognised).
    #[serde(rename = "kind", default)]
    _kind: String,
    #[serde(default)]
    metadata: LabMeta,
    #[serde(default)]
    spec: LabSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabMeta {
    /// 1-6 lowercase letters or digits: it prefixes network namespace names.
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabSpec {
    /// Node names (default: node-1, node-2).
    #[serde(default)]
    nodes: Vec<String>,
    /// Ports every node's host listens on: `80` is TCP, `"UDP/53"` names the protocol.
    #[serde(default)]
    node_ports: Vec<Value>,
}

/// A problem in a Lab document, in the form of every other load error.
fn lab_error(
    source: &str,
    document: usize,
    doc: &Value,
    path: &str,
    message: String,
) -> anyhow::Error {
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    anyhow::Error::new(gingham_model::LoadError {
        source_name: source.to_owned(),
        document: Some(document),
        item: None,
        object: Some(format!("Lab {name}").trim_end().to_owned()),
        path: path.to_owned(),
        message,
    })
}

/// Reads one Lab document (`document`: its 1-based number in `source`).
fn parse_lab(source: &str, document: usize, doc: &Value) -> Result<(LabDoc, Vec<PortSpec>)> {
    let lab: LabDoc = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        lab_error(source, document, doc, &path, e.into_inner().to_string())
    })?;
    if let Some(v) = &lab.api_version
        && v != LAB_API_VERSION
    {
        return Err(lab_error(
            source,
            document,
            doc,
            "apiVersion",
            format!("{v:?} is not the Lab's apiVersion (valid: {LAB_API_VERSION})"),
        ));
    }
    if let Some(name) = &lab.metadata.name
        && (name.is_empty()
            || name.len() > 6
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        return Err(lab_error(
            source,
            document,
            doc,
            "metadata.name",
            format!(
                "{name:?} must be 1-6 lowercase letters or digits (it prefixes network namespace names)"
            ),
        ));
    }
    let mut ports = Vec::new();
    for (i, p) in lab.spec.node_ports.iter().enumerate() {
        let port = node_port(p).ok_or_else(|| {
            lab_error(
                source,
                document,
                doc,
                &format!("spec.nodePorts[{i}]"),
                format!("{p} is not a port (valid: 80 for TCP, or \"UDP/53\", \"TCP/22\")"),
            )
        })?;
        ports.push(port);
    }
    Ok((lab, ports))
}

/// One entry of a Lab document's `spec.nodePorts`: `80` is TCP, `UDP/53` names the protocol.
fn node_port(p: &Value) -> Option<PortSpec> {
    let entry = match p {
        Value::Number(n) => (6, n.as_u64().and_then(|n| u16::try_from(n).ok())?),
        Value::String(text) => {
            let (proto, port) = text.split_once('/')?;
            let proto = parse_protocol(proto).filter(|p| *p == 6 || *p == 17)?;
            (proto, port.parse().ok()?)
        }
        _ => return None,
    };
    (entry.1 != 0).then_some(entry)
}

/// (protocol number, port).
type PortSpec = (u8, u16);

fn is_lab(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("Lab")
}

/// The Lab document's name, node names and node ports (defaults without one: `lab`, two
/// nodes, no ports). At most one Lab document.
fn lab_nodes(all_docs: &[(String, Vec<Value>)]) -> Result<(String, Vec<String>, Vec<PortSpec>)> {
    let mut found: Option<(String, usize)> = None;
    let mut name = "lab".to_owned();
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for (source, docs) in all_docs {
        for (i, d) in docs.iter().enumerate().filter(|(_, d)| is_lab(d)) {
            if let Some((first, n)) = &found {
                return Err(lab_error(
                    source,
                    i + 1,
                    d,
                    "",
                    format!("a second Lab document (a lab has one: {first} document {n})"),
                ));
            }
            found = Some((source.clone(), i + 1));
            let (lab, p) = parse_lab(source, i + 1, d)?;
            name = lab.metadata.name.unwrap_or(name);
            nodes = lab.spec.nodes;
            ports = p;
        }
    }
    if nodes.is_empty() {
        nodes = vec!["node-1".into(), "node-2".into()];
    }
    Ok((name, nodes, ports))
}

fn up(args: &UpArgs, datastore: Option<&str>) -> Result<Exit> {
    let dir = &args.lab.dir;
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
    let (lab, nodes, node_ports) = lab_nodes(&all_docs)?;
    let mut next = 0usize;
    let mut schedule = || {
        let n = nodes[next % nodes.len()].clone();
        next += 1;
        n
    };
    let Some(inputs) = load_inputs(all_docs, &mut schedule, &[]) else {
        eprintln!("nothing was made");
        return Ok(Exit::UserError);
    };
    let url = DatastoreUrl::resolve(datastore)?;
    let client = gingham_api::Client::new(url.open()?);
    let mut state = State {
        name: lab.clone(),
        datastore: url.to_string(),
        node_datastore: url.to_string(),
        ..State::default()
    };
    save_state(dir, &state)?;
    // From here on, a failure leaves state that `lab down` cleans.
    let result = build(
        dir,
        &mut state,
        &client,
        (&nodes, &node_ports),
        &inputs,
        !args.no_agent,
    );
    if let Err(e) = result {
        eprintln!("lab up failed: {e:#}");
        eprintln!("cleaning up what was made");
        let _ = down(dir);
        return Err(e);
    }
    println!(
        "lab {lab}: {} nodes, {} pods (state in {})",
        state.nodes.len(),
        state.pods.len(),
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

fn build(
    dir: &Path,
    state: &mut State,
    client: &gingham_api::Client,
    (nodes, node_ports): (&[String], &[(u8, u16)]),
    inputs: &Inputs,
    start_agents: bool,
) -> Result<()> {
    let Inputs {
        resources,
        pod_ports,
        annotations,
    } = inputs;
    let lab = state.name.clone();
    let exe = self_exe()?;
    // The underlay: a bridge every node plugs into.
    let underlay = format!("gl-{lab}-u");
    state.underlay = Some(underlay.clone());
    save_state(dir, state)?;
    ip(&["netns", "add", &underlay])?;
    in_ns(&underlay, &["ip", "link", "set", "lo", "up"])?;
    in_ns(&underlay, &["ip", "link", "add", "br0", "type", "bridge"])?;
    in_ns(
        &underlay,
        &[
            "ip",
            "addr",
            "add",
            &format!("{UNDERLAY_PREFIX}.254/24"),
            "dev",
            "br0",
        ],
    )?;
    in_ns(&underlay, &["ip", "link", "set", "br0", "up"])?;
    // Nodes.
    let mut node_docs = String::new();
    for (i, name) in nodes.iter().enumerate() {
        let ns = format!("gl-{lab}-n{i}");
        let node_ip = format!("{UNDERLAY_PREFIX}.{}", i + 1);
        state.nodes.push(NodeState {
            name: name.clone(),
            netns: ns.clone(),
            ip: node_ip.clone(),
            agent_pid: None,
            server_pid: None,
        });
        save_state(dir, state)?;
        ip(&["netns", "add", &ns])?;
        in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        let peer = format!("n{i}");
        in_ns(
            &ns,
            &[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns",
                &underlay,
            ],
        )?;
        in_ns(
            &ns,
            &["ip", "addr", "add", &format!("{node_ip}/24"), "dev", "eth0"],
        )?;
        in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
        in_ns(
            &underlay,
            &["ip", "link", "set", &peer, "master", "br0", "up"],
        )?;
        in_ns(
            &ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{UNDERLAY_PREFIX}.254"),
            ],
        )?;
        let pid = start_server(&exe, dir, &ns, name, node_ports)?;
        state.nodes[i].server_pid = pid;
        save_state(dir, state)?;
        node_docs.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: {node_ip}/24}}}}\n---\n"
        ));
    }
    if let Ok(DatastoreUrl::Etcd(eps)) = DatastoreUrl::parse(&state.datastore) {
        start_etcd_proxy(dir, state, eps)?;
    }
    let node_resources = gingham_model::load_resources("lab nodes", &node_docs)?;
    let mut all = node_resources;
    all.extend(resources.iter().cloned());
    client.write_all(&all, gingham_api::WriteMode::Apply)?;
    // The agents, before any pod: a pod is then closed until its policy is programmed.
    if start_agents {
        for i in 0..state.nodes.len() {
            let pid = start_agent(&exe, dir, &state.nodes[i], &state.node_datastore)?;
            state.nodes[i].agent_pid = Some(pid);
            save_state(dir, state)?;
        }
    }
    // Pods: a namespace each, wired by the CNI plugin as a kubelet would.
    for r in resources {
        if let gingham_model::Resource::WorkloadEndpoint(w) = r
            && w.spec.orchestrator == "k8s"
        {
            add_pod(dir, state, &exe, w, pod_ports, annotations)?;
        }
    }
    route_blocks(state, client)
}

/// Routes for the pods' blocks: a route via the owning node on the others (no BGP yet); a
/// blackhole route on the owning node when no agent runs there (the agent keeps its own).
fn route_blocks(state: &State, client: &gingham_api::Client) -> Result<()> {
    let store = client.store().clone();
    let ipam = gingham_ipam::Ipam::new(store.as_ref());
    for n in &state.nodes {
        for block in ipam.blocks_for_node(&n.name)? {
            // As calico/node does: a blackhole route for the node's own block, so addresses
            // of the block that no pod holds go nowhere instead of out of the default route
            // (the pods' /32 routes are more specific). The agent, when it runs, owns these.
            if n.agent_pid.is_none() {
                in_ns(
                    &n.netns,
                    &["ip", "route", "replace", "blackhole", &block.to_string()],
                )?;
            }
            for other in state.nodes.iter().filter(|o| o.name != n.name) {
                in_ns(
                    &other.netns,
                    &["ip", "route", "replace", &block.to_string(), "via", &n.ip],
                )?;
            }
        }
    }
    Ok(())
}

/// Makes one pod: its namespace, the CNI ADD, its server. Recorded in the state first.
fn add_pod(
    dir: &Path,
    state: &mut State,
    exe: &Path,
    w: &gingham_model::endpoint::WorkloadEndpoint,
    pod_ports: &BTreeMap<String, Vec<(u8, u16)>>,
    annotations: &PodAnnotations,
) -> Result<()> {
    let ns = w.metadata.namespace_or_empty().to_owned();
    let pod = w.spec.pod.clone();
    let node = state
        .nodes
        .iter()
        .find(|n| n.name == w.spec.node)
        .cloned()
        .with_context(|| {
            format!(
                "pod {ns}/{pod} is on node {}, which is not in the Lab's nodes",
                w.spec.node
            )
        })?;
    let netns = pod_netns(&state.name, &ns, &pod);
    let container_id = fnv_hex(&format!("{}/{ns}/{pod}", state.name))[..16].to_owned();
    let ports = pod_ports
        .get(&format!("{ns}/{pod}"))
        .cloned()
        .unwrap_or_default();
    state.pods.push(PodState {
        namespace: ns.clone(),
        name: pod.clone(),
        node: node.name.clone(),
        netns: netns.clone(),
        container_id: container_id.clone(),
        ip: None,
        ports: ports.clone(),
        server_pid: None,
    });
    save_state(dir, state)?;
    ip(&["netns", "add", &netns])?;
    in_ns(&netns, &["ip", "link", "set", "lo", "up"])?;
    let requested = annotations.get(&format!("{ns}/{pod}"));
    let result = cni(
        exe,
        &node,
        "ADD",
        &state.node_datastore,
        &ns,
        &pod,
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
        &format!("{}/{ns}/{pod}", state.name),
        &ports,
    )?;
    let entry = state.pods.last_mut().expect("just pushed");
    entry.ip = pod_ip;
    entry.server_pid = pid;
    save_state(dir, state)?;
    Ok(())
}

/// Invokes the CNI plugin for one pod, as a kubelet would.
#[allow(clippy::too_many_arguments)]
fn cni(
    exe: &Path,
    node: &NodeState,
    command: &str,
    datastore: &str,
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
        "datastore": datastore,
        "ipam": {"type": "gingham-ipam"},
    });
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

/// Starts a node's agent inside the node namespace and waits until it has programmed the node.
fn start_agent(exe: &Path, dir: &Path, node: &NodeState, datastore: &str) -> Result<u32> {
    let log_path = dir.join(format!("agent-{}.log", node.name));
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(exe)
        .args([
            "agent",
            "--node",
            &node.name,
            "--datastore",
            datastore,
            "--log",
            "info",
            "--health-port",
            &AGENT_HEALTH_PORT.to_string(),
        ])
        .env_remove("GINGHAM_DATASTORE")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the agent")?;
    for _ in 0..500 {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("programmed; watching") {
            return Ok(child.id());
        }
        if text.contains("error") {
            bail!("the agent of node {} failed: {text}", node.name);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "the agent of node {} did not start; see {}",
        node.name,
        log_path.display()
    )
}

/// Starts the pod's server on its declared ports (detached); returns its pid.
fn start_server(
    exe: &Path,
    dir: &Path,
    netns: &str,
    name: &str,
    ports: &[(u8, u16)],
) -> Result<Option<u32>> {
    let tcp: Vec<String> = ports
        .iter()
        .filter(|(p, _)| *p == 6)
        .map(|(_, n)| n.to_string())
        .collect();
    let udp: Vec<String> = ports
        .iter()
        .filter(|(p, _)| *p == 17)
        .map(|(_, n)| n.to_string())
        .collect();
    if tcp.is_empty() && udp.is_empty() {
        return Ok(None);
    }
    let log = std::fs::File::create(dir.join(format!("{netns}.log")))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .arg(exe)
        .args(["lab", "serve", "--name", name]);
    if !tcp.is_empty() {
        cmd.args(["--tcp", &tcp.join(",")]);
    }
    if !udp.is_empty() {
        cmd.args(["--udp", &udp.join(",")]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the pod's server")?;
    // Wait until it listens, so a probe right after `lab up` finds it.
    for _ in 0..100 {
        let ready = std::fs::read_to_string(dir.join(format!("{netns}.log")))
            .map(|s| s.contains("listening"))
            .unwrap_or(false);
        if ready {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(child.id()))
}

/// Starts the etcd proxy for the nodes and points the nodes' datastore at it.
fn start_etcd_proxy(dir: &Path, state: &mut State, endpoints: Option<Vec<String>>) -> Result<()> {
    let endpoints =
        endpoints.unwrap_or_else(|| gingham_datastore_etcd::EtcdConfig::from_env().endpoints);
    let first = endpoints.first().context("no etcd endpoint")?;
    let upstream = first
        .strip_prefix("http://")
        .with_context(|| format!("the lab reaches etcd over plain http only (got {first})"))?
        .trim_end_matches('/')
        .to_owned();
    let exe = self_exe()?;
    let log = std::fs::File::create(dir.join("etcd-proxy.log"))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["lab", "proxy", "--upstream", &upstream]);
    for n in &state.nodes {
        cmd.args(["--netns", &n.netns]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the etcd proxy")?;
    state.proxy_pid = Some(child.id());
    state.node_datastore = "etcd:http://127.0.0.1:2379".into();
    save_state(dir, state)?;
    for _ in 0..200 {
        let ready = std::fs::read_to_string(dir.join("etcd-proxy.log"))
            .map(|s| s.contains("listening"))
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "the etcd proxy did not start; see {}",
        dir.join("etcd-proxy.log").display()
    )
}

/// Forwards connections made to 127.0.0.1:port inside each node namespace to the upstream,
/// reached from this process's own namespace. Sockets keep the namespace they were made in, so
/// one process serves every node.
fn proxy(args: &ProxyArgs) -> Result<Exit> {
    let mut listeners = Vec::new();
    for ns in &args.netns {
        let target = gingham_net::NetnsRef::named(ns);
        let port = args.listen_port;
        let listener =
            gingham_net::in_netns(&target, move || TcpListener::bind(("127.0.0.1", port)))
                .with_context(|| format!("entering {ns}"))?
                .with_context(|| format!("listening on 127.0.0.1:{port} in {ns}"))?;
        listeners.push(listener);
    }
    println!(
        "listening in {} namespaces, forwarding to {}",
        args.netns.len(),
        args.upstream
    );
    std::thread::scope(|sc| {
        for listener in &listeners {
            let upstream = args.upstream.clone();
            sc.spawn(move || {
                for inbound in listener.incoming().flatten() {
                    let Ok(outbound) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let (Ok(mut a_read), Ok(mut b_read)) =
                        (inbound.try_clone(), outbound.try_clone())
                    else {
                        continue;
                    };
                    let (mut a_write, mut b_write) = (inbound, outbound);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a_read, &mut b_write);
                        let _ = b_write.shutdown(std::net::Shutdown::Write);
                    });
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut b_read, &mut a_write);
                        let _ = a_write.shutdown(std::net::Shutdown::Write);
                    });
                }
            });
        }
    });
    Ok(Exit::Ok)
}

fn serve(args: &ServeArgs) -> Result<Exit> {
    let mut handles = Vec::new();
    for &port in &args.tcp {
        let listener =
            TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind TCP {port}"))?;
        let name = args.name.clone();
        handles.push(std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                // Greet with our name and the address the client comes from, then echo
                // whatever comes (long-lived connections in tests).
                let name = name.clone();
                std::thread::spawn(move || {
                    let peer = stream
                        .peer_addr()
                        .map_or_else(|_| "-".to_owned(), |a| a.to_string());
                    let _ = stream.write_all(format!("{name} {peer}\n").as_bytes());
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for &port in &args.udp {
        let socket =
            UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("bind UDP {port}"))?;
        let name = args.name.clone();
        handles.push(std::thread::spawn(move || {
            // Answer each datagram with our name and the address it came from.
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(format!("{name} {from}\n").as_bytes(), from);
            }
        }));
    }
    println!("listening on TCP {:?} UDP {:?}", args.tcp, args.udp);
    for h in handles {
        let _ = h.join();
    }
    Ok(Exit::Ok)
}

/// The source address a server's greeting names: `NAME PEER_IP:PORT`.
fn greeting_peer(greeting: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(greeting).ok()?;
    let last = text.split_whitespace().last()?;
    last.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// One TCP or UDP connection attempt to `addr`, classified.
fn attempt(proto: u8, addr: SocketAddr, timeout: Duration, udp_source_port: u16) -> Attempt {
    use std::io::ErrorKind;
    let classify = |e: &std::io::Error| match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        _ => Outcome::NoAnswer,
    };
    let no_answer = Attempt {
        outcome: Outcome::NoAnswer,
        peer: None,
    };
    match proto {
        6 => match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut s) => {
                // The server greets with its name and the address it sees us from.
                let _ = s.set_read_timeout(Some(timeout));
                let mut greeting = Vec::new();
                let mut byte = [0u8; 1];
                while greeting.len() < 1024 {
                    match s.read(&mut byte) {
                        Ok(1) if byte[0] != b'\n' => greeting.push(byte[0]),
                        _ => break,
                    }
                }
                if greeting.is_empty() {
                    return no_answer;
                }
                Attempt {
                    outcome: Outcome::Connected,
                    peer: greeting_peer(&greeting),
                }
            }
            Err(e) => Attempt {
                outcome: classify(&e),
                peer: None,
            },
        },
        17 => {
            // The port handed out, or any port if that one is taken here.
            let socket = match UdpSocket::bind(("0.0.0.0", udp_source_port))
                .or_else(|_| UdpSocket::bind(("0.0.0.0", 0)))
            {
                Ok(s) => s,
                Err(_) => return no_answer,
            };
            let _ = socket.set_read_timeout(Some(timeout));
            // A connected socket: an ICMP port unreachable comes back as ECONNREFUSED.
            if let Err(e) = socket.connect(addr).and_then(|()| socket.send(b"probe")) {
                return Attempt {
                    outcome: classify(&e),
                    peer: None,
                };
            }
            let mut buf = [0u8; 1500];
            match socket.recv(&mut buf) {
                Ok(n) => Attempt {
                    outcome: Outcome::Connected,
                    peer: greeting_peer(&buf[..n]),
                },
                Err(e) => Attempt {
                    outcome: classify(&e),
                    peer: None,
                },
            }
        }
        _ => no_answer,
    }
}

fn connect(args: &ConnectArgs) -> Result<Exit> {
    let proto = parse_protocol(&args.protocol).context("--protocol")?;
    if proto != 6 && proto != 17 {
        bail!("lab connect sends TCP or UDP (got {})", args.protocol);
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let results: Vec<(IpAddr, Attempt)> = std::thread::scope(|sc| {
        let hs: Vec<_> = args
            .targets
            .iter()
            .enumerate()
            .map(|(i, &ip)| {
                let source = match args.udp_source_port {
                    0 => 0,
                    first => u16::try_from(i)
                        .ok()
                        .and_then(|i| first.checked_add(i))
                        .unwrap_or(0),
                };
                sc.spawn(move || {
                    let to = SocketAddr::new(ip, args.port);
                    (ip, attempt(proto, to, timeout, source))
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let map: BTreeMap<String, Attempt> = results
        .into_iter()
        .map(|(ip, a)| (ip.to_string(), a))
        .collect();
    println!("{}", serde_json::to_string(&map)?);
    Ok(Exit::Ok)
}

/// Runs `lab connect` inside `netns` towards `targets`; what each target did (a target
/// missing from the answer did not answer).
fn connect_from(
    exe: &Path,
    netns: &str,
    proto: u8,
    port: u16,
    timeout_ms: u64,
    udp_source_port: u16,
    targets: &[String],
) -> Result<BTreeMap<String, Attempt>> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(exe)
        .args([
            "lab",
            "connect",
            "--protocol",
            &protocol_name(proto),
            "--port",
            &port.to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
            "--udp-source-port",
            &udp_source_port.to_string(),
        ])
        .args(targets)
        .output()
        .context("cannot run `ip netns exec` (install iproute2)")?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "probing from {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// The UDP source ports probes take turns on, far below the kernel's ephemeral range. A UDP
/// conntrack entry lives 30 s after its last packet (120 s for a stream): at one matrix of 81
/// probes a second the range comes round after two minutes.
const PROBE_UDP_PORTS: std::ops::Range<u16> = 20_000..30_000;

/// The file in the lab directory that holds the next probe's UDP source port.
const UDP_PORT_COUNTER: &str = "udp-source-port";

/// Hands out `n` consecutive UDP source ports that no probe of this lab used recently (a
/// counter in the lab directory, taken under a lock), so that a new probe is a new flow for
/// connection tracking rather than an old flow's reply direction that policy no longer sees.
fn reserve_udp_ports(dir: &Path, n: usize) -> Result<u16> {
    let path = dir.join(UDP_PORT_COUNTER);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let span = PROBE_UDP_PORTS.end - PROBE_UDP_PORTS.start;
    let n = u16::try_from(n)
        .ok()
        .filter(|n| *n <= span)
        .with_context(|| {
            format!("{n} probe targets at once is more than {span} source ports can tell apart")
        })?;
    let mut first = text
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| PROBE_UDP_PORTS.contains(p))
        .unwrap_or(PROBE_UDP_PORTS.start);
    if first + n > PROBE_UDP_PORTS.end {
        first = PROBE_UDP_PORTS.start;
    }
    let next = first + n;
    file.set_len(0)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(0)).map(drop))
        .and_then(|()| file.write_all(next.to_string().as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(first)
}

/// A probe matrix: reach's schema (`allowed`: the packet reached the destination, whether
/// it connected or was refused) and what each attempt found.
#[derive(Debug, Serialize)]
struct ProbeMatrix {
    #[serde(flatten)]
    matrix: Matrix,
    /// client → server → outcome.
    outcomes: BTreeMap<String, BTreeMap<String, Outcome>>,
}

impl ProbeMatrix {
    fn new(
        port: u16,
        proto: u8,
        endpoints: Vec<String>,
        outcomes: BTreeMap<String, BTreeMap<String, Outcome>>,
    ) -> Self {
        let allowed = outcomes
            .iter()
            .map(|(from, row)| {
                let row = row
                    .iter()
                    .map(|(to, o)| (to.clone(), o.reached()))
                    .collect();
                (from.clone(), row)
            })
            .collect();
        ProbeMatrix {
            matrix: Matrix {
                port: Some(port),
                protocol: protocol_name(proto),
                endpoints,
                allowed,
            },
            outcomes,
        }
    }

    fn outcome(&self, from: &str, to: &str) -> Outcome {
        self.outcomes
            .get(from)
            .and_then(|r| r.get(to))
            .copied()
            .unwrap_or(Outcome::NoAnswer)
    }

    /// Reach's table with a mark per outcome, and the legend.
    fn render(&self) -> String {
        let mut out = gingham_calc::reach::render_table_with(&self.matrix, &|from, to| {
            self.outcome(from, to).mark()
        });
        out.push_str(PROBE_LEGEND);
        out.push('\n');
        out
    }
}

fn probe(args: &ProbeArgs) -> Result<Exit> {
    let state = load_state(&args.lab.dir)?;
    let proto = parse_protocol(&args.protocol).with_context(|| {
        format!(
            "--protocol {:?} is not a protocol (valid: TCP, UDP)",
            args.protocol
        )
    })?;
    if proto != 6 && proto != 17 {
        bail!("lab probe sends TCP or UDP (got {})", args.protocol);
    }
    let ports: Vec<u16> = match args.port {
        Some(p) => vec![p],
        None => {
            let mut ports: Vec<u16> = state
                .pods
                .iter()
                .flat_map(|p| {
                    p.ports
                        .iter()
                        .filter(|(pr, _)| *pr == proto)
                        .map(|(_, n)| *n)
                })
                .collect();
            ports.sort_unstable();
            ports.dedup();
            if ports.is_empty() {
                bail!(
                    "no pod declares a {} port; name one with --port",
                    args.protocol
                );
            }
            ports
        }
    };
    let exe = self_exe()?;
    let mut pods: Vec<&PodState> = state.pods.iter().filter(|p| p.ip.is_some()).collect();
    pods.sort_by_key(|p| p.key());
    let endpoints: Vec<String> = pods.iter().map(|p| p.key()).collect();
    let targets: Vec<String> = pods.iter().filter_map(|p| p.ip.clone()).collect();
    let mut matrices = Vec::new();
    for port in ports {
        let udp_source_port = reserve_udp_ports(&args.lab.dir, targets.len())?;
        // One prober per client pod, all at once.
        let rows: Vec<Result<BTreeMap<String, Attempt>>> = std::thread::scope(|sc| {
            let hs: Vec<_> = pods
                .iter()
                .map(|client| {
                    let (exe, targets) = (&exe, &targets);
                    sc.spawn(move || {
                        connect_from(
                            exe,
                            &client.netns,
                            proto,
                            port,
                            args.timeout_ms,
                            udp_source_port,
                            targets,
                        )
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a prober thread panicked")))
                })
                .collect()
        });
        let mut outcomes = BTreeMap::new();
        for (client, row) in pods.iter().zip(rows) {
            let got = row?;
            let row = pods
                .iter()
                .map(|server| {
                    let outcome = server
                        .ip
                        .as_ref()
                        .and_then(|ip| got.get(ip))
                        .map_or(Outcome::NoAnswer, |a| a.outcome);
                    (server.key(), outcome)
                })
                .collect();
            outcomes.insert(client.key(), row);
        }
        matrices.push(ProbeMatrix::new(port, proto, endpoints.clone(), outcomes));
    }
    match args.output {
        MatrixFormat::Json if matrices.len() == 1 => {
            println!("{}", serde_json::to_string_pretty(&matrices[0])?)
        }
        MatrixFormat::Json => println!("{}", serde_json::to_string_pretty(&matrices)?),
        MatrixFormat::Table => {
            let tables: Vec<String> = matrices.iter().map(ProbeMatrix::render).collect();
            print!("{}", tables.join("\n"));
        }
    }
    Ok(Exit::Ok)
}

fn apply(args: &UpArgs) -> Result<Exit> {
    let dir = &args.lab.dir;
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
    route_blocks(&state, &client)?;
    Ok(Exit::Ok)
}

/// Gives a Pod document of a pod the lab runs the node it runs on.
fn pin_running_pod(key: &str, doc: &mut Value, pods: &[PodState]) {
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

fn delete(args: &DeleteArgs) -> Result<Exit> {
    let dir = &args.lab.dir;
    let mut state = load_state(dir)?;
    let Some(pos) = state.pods.iter().position(|p| p.key() == args.pod) else {
        let names: Vec<String> = state.pods.iter().map(PodState::key).collect();
        bail!(
            "{:?} is not a pod of this lab (valid: {})",
            args.pod,
            names.join(", ")
        );
    };
    let pod = state.pods[pos].clone();
    let problems = remove_pod(dir, &state, &self_exe()?, &pod);
    if !problems.is_empty() {
        bail!("deleting {}: {}", args.pod, problems.join("; "));
    }
    state.pods.remove(pos);
    save_state(dir, &state)?;
    println!("pod {} deleted", args.pod);
    Ok(Exit::Ok)
}

/// The network namespace of a pod or node of the lab, or an error listing the valid names.
fn netns_of(state: &State, target: &str) -> Result<String> {
    state
        .pods
        .iter()
        .find(|p| p.key() == target)
        .map(|p| p.netns.clone())
        .or_else(|| {
            state
                .nodes
                .iter()
                .find(|n| n.name == target)
                .map(|n| n.netns.clone())
        })
        .with_context(|| {
            let names: Vec<String> = state
                .pods
                .iter()
                .map(PodState::key)
                .chain(state.nodes.iter().map(|n| n.name.clone()))
                .collect();
            format!(
                "{target:?} is not a pod or node of this lab (valid: {})",
                names.join(", ")
            )
        })
}

fn try_connect(args: &TryArgs) -> Result<Exit> {
    let state = load_state(&args.lab.dir)?;
    let from = netns_of(&state, &args.from)?;
    let ip = state
        .pods
        .iter()
        .find(|p| p.key() == args.to)
        .and_then(|p| p.ip.clone())
        .or_else(|| {
            state
                .nodes
                .iter()
                .find(|n| n.name == args.to)
                .map(|n| n.ip.clone())
        })
        .with_context(|| {
            format!(
                "{:?} is not a pod (with an address) or a node of this lab",
                args.to
            )
        })?;
    let proto = parse_protocol(&args.protocol)
        .filter(|p| *p == 6 || *p == 17)
        .with_context(|| {
            format!(
                "--protocol {:?}: lab try sends TCP or UDP (valid: TCP, UDP)",
                args.protocol
            )
        })?;
    let got = connect_from(
        &self_exe()?,
        &from,
        proto,
        args.port,
        args.timeout_ms,
        reserve_udp_ports(&args.lab.dir, 1)?,
        std::slice::from_ref(&ip),
    )?;
    let attempt = got.get(&ip).cloned().unwrap_or(Attempt {
        outcome: Outcome::NoAnswer,
        peer: None,
    });
    let protocol = protocol_name(proto);
    match args.output {
        TryFormat::Json => println!(
            "{}",
            serde_json::json!({
                "from": args.from,
                "to": args.to,
                "address": ip,
                "port": args.port,
                "protocol": protocol,
                "outcome": attempt.outcome,
                "peer": attempt.peer,
            })
        ),
        TryFormat::Text => {
            let what = match attempt.outcome {
                Outcome::Connected => "connected".to_owned(),
                Outcome::Refused => {
                    format!("refused: nothing listens on {ip}:{}/{protocol}", args.port)
                }
                Outcome::NoAnswer => "no answer (dropped)".to_owned(),
            };
            println!(
                "{} -> {} ({ip}) {protocol}/{}: {what}",
                args.from, args.to, args.port
            );
        }
    }
    Ok(attempt.outcome.exit())
}

fn exec(args: &ExecArgs) -> Result<Exit> {
    let state = load_state(&args.lab.dir)?;
    let netns = netns_of(&state, &args.target)?;
    let status = Command::new("ip")
        .args(["netns", "exec", &netns])
        .args(&args.command)
        .status()
        .context("cannot run the command")?;
    Ok(if status.success() {
        Exit::Ok
    } else {
        Exit::UserError
    })
}

/// Tears one pod down as a kubelet would: stop it, CNI DEL, remove its namespace. Returns what
/// could not be done (what is already gone is fine).
fn remove_pod(dir: &Path, state: &State, exe: &Path, p: &PodState) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(pid) = p.server_pid {
        // The server may be gone already; then kill fails and that is fine.
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    if let Some(node) = state.nodes.iter().find(|n| n.name == p.node)
        && netns_exists(&node.netns)
        && let Err(e) = cni(
            exe,
            node,
            "DEL",
            &state.node_datastore,
            &p.namespace,
            &p.name,
            &p.container_id,
            &p.netns,
            None,
        )
    {
        problems.push(format!("{e:#}"));
    }
    if netns_exists(&p.netns)
        && let Err(e) = ip(&["netns", "del", &p.netns])
    {
        problems.push(format!("{e:#}"));
    }
    let _ = std::fs::remove_file(dir.join(format!("{}.log", p.netns)));
    problems
}

/// Removes everything recorded in the state, in reverse order, tolerating what is already gone.
fn down(dir: &Path) -> Result<Exit> {
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
    for n in &state.nodes {
        for pid in n.agent_pid.iter().chain(&n.server_pid) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = std::fs::remove_file(dir.join(format!("{}.log", n.netns)));
        let _ = std::fs::remove_file(dir.join(format!("agent-{}.log", n.name)));
    }
    if let Some(pid) = state.proxy_pid {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let _ = std::fs::remove_file(dir.join("etcd-proxy.log"));
    }
    for n in state.nodes.iter().rev() {
        if netns_exists(&n.netns)
            && let Err(e) = ip(&["netns", "del", &n.netns])
        {
            problems.push(format!("{e:#}"));
        }
    }
    if let Some(u) = &state.underlay
        && netns_exists(u)
        && let Err(e) = ip(&["netns", "del", u])
    {
        problems.push(format!("{e:#}"));
    }
    if !problems.is_empty() {
        bail!("lab down left things behind:\n{}", problems.join("\n"));
    }
    std::fs::remove_file(state_path(dir))?;
    let _ = std::fs::remove_file(dir.join(UDP_PORT_COUNTER));
    let _ = std::fs::remove_dir(dir);
    println!("lab {} removed", state.name);
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes never share a UDP source port until the range comes round: a repeated port
    /// would let a probe ride on an earlier probe's conntrack entry, past a policy that now
    /// drops it (a flake of the agreement test in CI, x/a → z/a on UDP 81).
    #[test]
    fn probes_take_fresh_udp_source_ports_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let span = usize::from(PROBE_UDP_PORTS.end - PROBE_UDP_PORTS.start);
        let mut taken = 0;
        while taken + 9 <= span {
            let first = reserve_udp_ports(dir.path(), 9).unwrap();
            for p in first..first + 9 {
                assert!(PROBE_UDP_PORTS.contains(&p), "{p}");
                assert!(seen.insert(p), "port {p} handed out twice in one round");
            }
            taken += 9;
        }
        // The round ends: the range starts again rather than running past its end.
        assert_eq!(
            reserve_udp_ports(dir.path(), 9).unwrap(),
            PROBE_UDP_PORTS.start
        );
        assert!(reserve_udp_ports(dir.path(), span + 1).is_err());
    }
}
