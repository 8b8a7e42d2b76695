//! `gingham reach` and `gingham explain`: questions answered from the policy engine before any
//! packet flows, from files or from the datastore.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gingham_calc::eval::{Flow, PeerSpec, parse_protocol};
use gingham_calc::input::{PodPorts, prepare_documents};
use gingham_calc::{Snapshot, explain, reach};
use gingham_model::{Kind, Resource};

use crate::Exit;
use crate::resources_cmd::collect_sources;

/// Where the cluster comes from.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Calico resources and Kubernetes Namespaces, Pods and NetworkPolicies: a file, a directory,
    /// or - for stdin. Repeatable. Without -f, the resources in the datastore are used.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Descend into subdirectories of a directory given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MatrixFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ReachArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The destination port; without it, one matrix per port the servers declare.
    #[arg(long)]
    pub port: Option<u16>,
    /// TCP, UDP, SCTP, ICMP or a protocol number.
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: MatrixFormat,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The client: namespace/pod, node/host-endpoint, a node name, or an IP address.
    #[arg(long)]
    pub from: String,
    /// The server, named the same ways.
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: ExplainFormat,
}

/// The kinds the engine reads from a datastore.
pub const POLICY_KINDS: &[Kind] = &[
    Kind::Tier,
    Kind::NetworkPolicy,
    Kind::GlobalNetworkPolicy,
    Kind::StagedNetworkPolicy,
    Kind::StagedGlobalNetworkPolicy,
    Kind::StagedKubernetesNetworkPolicy,
    Kind::Profile,
    Kind::HostEndpoint,
    Kind::WorkloadEndpoint,
    Kind::NetworkSet,
    Kind::GlobalNetworkSet,
    Kind::Node,
    Kind::FelixConfiguration,
    // Their encapsulation decides whether a host reaches a pod from its tunnel address.
    Kind::IpPool,
];

/// Loads the cluster from files (Kubernetes objects converted as Calico's controllers do) or,
/// without files, from the datastore. Returns `None` after printing input errors.
fn load(
    source: &SourceArgs,
    client: &dyn Fn() -> Result<gingham_api::Client>,
) -> Result<Option<(Snapshot, PodPorts)>> {
    load_kinds(source, client, POLICY_KINDS)
}

/// [`load`], reading `kinds` from the datastore.
pub fn load_kinds(
    source: &SourceArgs,
    client: &dyn Fn() -> Result<gingham_api::Client>,
    kinds: &[Kind],
) -> Result<Option<(Snapshot, PodPorts)>> {
    let loaded = if source.files.is_empty() {
        Some((load_datastore_kinds(&client()?, kinds)?, PodPorts::new()))
    } else {
        load_files(&source.files, source.recursive)?
    };
    Ok(loaded.map(|(resources, pod_ports)| (snapshot(&resources, ""), pod_ports)))
}

/// The resources of the kinds the engine reads, from the datastore.
pub fn load_datastore(client: &gingham_api::Client) -> Result<Vec<Resource>> {
    load_datastore_kinds(client, POLICY_KINDS)
}

/// The resources of `kinds`, from the datastore.
pub fn load_datastore_kinds(client: &gingham_api::Client, kinds: &[Kind]) -> Result<Vec<Resource>> {
    let mut resources = Vec::new();
    for kind in kinds {
        let (items, _) = client.list(*kind, None)?;
        resources.extend(items);
    }
    Ok(resources)
}

/// The resources in files (Kubernetes objects converted as Calico's controllers do; pods that
/// name no node placed on one) and the ports the pods declare. Returns `None` after printing
/// every input error (file, document and field).
pub fn load_files(files: &[String], recursive: bool) -> Result<Option<Loaded>> {
    let (loaded, messages) = load_files_quietly(files, recursive)?;
    for m in messages {
        eprintln!("{m}");
    }
    Ok(loaded)
}

/// Resources read from files, and the ports their pods declare.
pub type Loaded = (Vec<Resource>, PodPorts);

/// [`load_files`] with the messages it would print (errors, notices) returned in order
/// instead: several inputs can load at once and still print one after the other.
pub fn load_files_quietly(
    files: &[String],
    recursive: bool,
) -> Result<(Option<Loaded>, Vec<String>)> {
    let mut resources: Vec<Resource> = Vec::new();
    let mut pod_ports = PodPorts::new();
    let mut sources = Vec::new();
    for f in files {
        collect_sources(f, recursive, &mut sources)?;
    }
    let mut failed = false;
    let mut messages = Vec::new();
    for (name, text) in sources {
        let mut docs = match gingham_model::load::parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                messages.push(format!("{name}: {e}"));
                failed = true;
                continue;
            }
        };
        // A lab's file works too: its Lab document is `gingham lab`'s alone. An empty List
        // takes its place, so that later documents keep their numbers in messages.
        for (i, d) in docs.iter_mut().enumerate() {
            if crate::lab::spec::is_lab(d) {
                messages.push(format!(
                    "notice: {name}: document {} is a Lab document; ignored",
                    i + 1
                ));
                *d = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": []});
            }
        }
        let (ports, notes) = prepare_documents(&mut docs);
        messages.extend(notes.into_iter().map(|n| format!("notice: {n}")));
        pod_ports.extend(ports);
        match load_documents(&name, &docs) {
            Ok(loaded) => resources.extend(loaded),
            Err(e) => {
                messages.push(e.to_string());
                failed = true;
            }
        }
    }
    Ok(((!failed).then_some((resources, pod_ports)), messages))
}

/// The engine's snapshot of `resources`, its warnings printed (after `side`, when not empty:
/// `before`, `after`).
pub fn snapshot(resources: &[Resource], side: &str) -> Snapshot {
    let snap = Snapshot::build(resources);
    for w in &snap.warnings {
        if side.is_empty() {
            eprintln!("warning: {}", w.0);
        } else {
            eprintln!("warning ({side}): {}", w.0);
        }
    }
    snap
}

pub fn protocol(s: &str) -> Result<u8> {
    parse_protocol(s).with_context(|| {
        format!(
            "--protocol {} is not a protocol (valid: TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 1-255)",
            gingham_model::quote(s)
        )
    })
}

/// Refuses `--port` with a protocol that has no ports: Calico matches ports only for the
/// protocols [`gingham_model::Protocol::supports_ports`] names.
pub fn check_port(proto: u8, name: &str, port: Option<u16>) -> Result<()> {
    if port.is_some()
        && !gingham_model::Protocol::from_number(u64::from(proto)).is_ok_and(|p| p.supports_ports())
    {
        bail!(
            "--port does not apply to protocol {name}: ports exist only for TCP, UDP and SCTP (leave out --port, or choose one of those)"
        );
    }
    Ok(())
}

/// Said when no port is asked for and the servers declare none.
pub const NO_PORTS: &str =
    "the servers declare no ports (spec.containers[].ports); name one with --port";

pub fn reach(args: &ReachArgs, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    let proto = protocol(&args.protocol)?;
    check_port(proto, &args.protocol, args.port)?;
    let Some((snap, pod_ports)) = load(&args.source, client)? else {
        return Ok(Exit::UserError);
    };
    let endpoints = reach::matrix_endpoints(&snap);
    let matrices = matrices(&snap, &pod_ports, &endpoints, proto, args.port)?;
    print_matrices(&matrices, args.output)?;
    Ok(Exit::Ok)
}

/// The matrices `reach` prints for `endpoints` (rows and columns): one for `port`, or, without
/// one, one per port the servers declare. The web view (`gingham ui`) shows the same.
pub fn matrices(
    snap: &Snapshot,
    pod_ports: &PodPorts,
    endpoints: &[String],
    proto: u8,
    port: Option<u16>,
) -> Result<Vec<reach::Matrix>> {
    if endpoints.is_empty() {
        bail!("no pods with addresses and no host endpoints in the input; nothing to compute");
    }
    let ports = reach::probes(proto, port, &reach::declared_ports(snap, pod_ports));
    if ports.is_empty() {
        bail!("{NO_PORTS}");
    }
    Ok(reach::matrices(snap, endpoints, &ports)?)
}

/// Loads documents that were parsed (and prepared) already. Concatenated JSON keeps the document
/// numbers of the original for error messages.
pub fn load_documents(
    name: &str,
    docs: &[serde_json::Value],
) -> Result<Vec<Resource>, gingham_model::LoadErrors> {
    let json: Vec<String> = docs.iter().map(ToString::to_string).collect();
    gingham_model::load(name, &json.join("\n"))
        .map(|loaded| loaded.into_iter().flat_map(|d| d.resources).collect())
}

/// Prints matrices: JSON (one object, or an array when there are several) or tables.
pub fn print_matrices(matrices: &[reach::Matrix], format: MatrixFormat) -> Result<()> {
    match format {
        MatrixFormat::Json if matrices.len() == 1 => {
            println!("{}", serde_json::to_string_pretty(&matrices[0])?)
        }
        MatrixFormat::Json => println!("{}", serde_json::to_string_pretty(matrices)?),
        MatrixFormat::Table => {
            for (i, m) in matrices.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", reach::render_table(m));
            }
        }
    }
    Ok(())
}

/// The flow `explain` decides: from `from` to `to` (names checked for length), protocol
/// `protocol` (a name or number), on `port` (needed for TCP, UDP and SCTP, refused for others).
pub fn explain_flow(from: &str, to: &str, protocol_arg: &str, port: Option<u16>) -> Result<Flow> {
    let proto = protocol(protocol_arg)?;
    check_port(proto, protocol_arg, port)?;
    if port.is_none() && matches!(proto, 6 | 17 | 132) {
        bail!("--port is needed for {}", protocol_arg.to_uppercase());
    }
    // No pod, host endpoint, node or address has a longer name (namespace/name: 63 + 1 + 253).
    const MAX_PEER_LEN: usize = 317;
    for (flag, value) in [("--from", from), ("--to", to)] {
        if value.len() > MAX_PEER_LEN {
            bail!(
                "{flag} {}: too long for a pod (namespace/pod), host endpoint, node or IP address",
                gingham_model::quote(value)
            );
        }
    }
    Ok(Flow {
        src: PeerSpec::parse(from),
        dst: PeerSpec::parse(to),
        protocol: proto,
        port,
        src_port: None,
        icmp: None,
        ipv6: false,
    })
}

pub fn explain(
    args: &ExplainArgs,
    client: &dyn Fn() -> Result<gingham_api::Client>,
) -> Result<Exit> {
    let flow = explain_flow(&args.from, &args.to, &args.protocol, args.port)?;
    let Some((snap, _)) = load(&args.source, client)? else {
        return Ok(Exit::UserError);
    };
    let verdict = snap.verdict(&flow)?;
    match args.output {
        ExplainFormat::Json => println!("{}", serde_json::to_string_pretty(&verdict)?),
        ExplainFormat::Text => print!("{}", explain::render(&snap, &verdict)),
    }
    Ok(Exit::Ok)
}
