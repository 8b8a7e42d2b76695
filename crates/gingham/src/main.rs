//! `gingham`: one binary for the CLI, the node agent and the CNI plugin.
//!
//! When a container runtime invokes it as a CNI plugin (`CNI_COMMAND` is set) it speaks the CNI
//! protocol on stdin/stdout; otherwise it is the command-line tool described by `gingham --help`.
//! Exit codes: 0 success, 1 user error (bad input, failed check), 2 usage error, 141 standard
//! output was a pipe its reader closed (see [`output`]).

// Every module of this binary prints through `output`: these definitions shadow the standard
// macros in all modules declared below, so that a closed pipe or a full device never panics
// (std's `println!` does) and new code gets the same behaviour without thinking about it.
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}
macro_rules! println {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
macro_rules! eprintln {
    () => { $crate::output::write_stderr(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod agent;
mod bgp_cmd;
mod cni_k8s;
mod cni_plugin;
mod datastore;
mod diff_cmd;
mod flows_cmd;
mod hits;
mod ipam_cmd;
mod kube_controllers_cmd;
mod lab;
mod lint_cmd;
mod manifests_cmd;
mod node_cmd;
mod output;
mod reach_cmd;
mod resources_cmd;
mod selector_cmd;
mod ui_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// How a command ended, when it did not fail with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// A negative answer or rejected input that was already reported.
    UserError,
    /// A command-specific exit code documented in its help (e.g. `lab try`'s outcomes).
    Code(u8),
}

#[derive(Debug, Parser)]
#[command(
    name = "gingham",
    version,
    about = "Container networking and network policy for Linux, compatible with Calico"
)]
struct Cli {
    /// Where resources are stored: sqlite:PATH (default sqlite:/var/lib/gingham/gingham.db),
    /// etcd (endpoints from ETCD_ENDPOINTS), etcd:URL[,URL], kubernetes (the API server from
    /// KUBECONFIG or in-cluster) or kubernetes:/path/to/kubeconfig. DATASTORE_TYPE=etcdv3 also
    /// selects etcd, DATASTORE_TYPE=kubernetes the Kubernetes datastore.
    #[arg(long, global = true, env = "GINGHAM_DATASTORE")]
    datastore: Option<String>,

    /// Log filter for diagnostics on stderr (e.g. info, debug, gingham=trace).
    #[arg(long, global = true, env = "GINGHAM_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the resources in files (all or nothing); with --dry-run, write nothing
    /// and print the pairs of endpoints the change would let in and shut out.
    Apply(diff_cmd::ApplyArgs),
    /// Create the resources in files; fails if any exists (all or nothing).
    Create(resources_cmd::FileArgs),
    /// Replace the resources in files; fails if any does not exist (all or nothing).
    Replace(resources_cmd::FileArgs),
    /// Delete resources named in files or on the command line.
    Delete(resources_cmd::DeleteArgs),
    /// Show resources.
    Get(resources_cmd::GetArgs),
    /// Set or remove labels on a resource.
    Label(resources_cmd::LabelArgs),
    /// Print legacy v1 or Kubernetes resources as Calico v3 resources.
    Convert(resources_cmd::ConvertArgs),
    /// Work with selector expressions.
    #[command(subcommand)]
    Selector(selector_cmd::SelectorCmd),
    /// Program this node's policy in nftables from the datastore, and keep it up to date.
    Agent(agent::AgentArgs),
    /// calico-kube-controllers (etcd mode): Kubernetes NetworkPolicies, Namespaces,
    /// ServiceAccounts, Pods and Nodes kept as Calico resources; IPAM garbage collection.
    KubeControllers(kube_controllers_cmd::KubeControllersArgs),
    /// IP address management: usage, leak checks, manual release.
    #[command(subcommand)]
    Ipam(ipam_cmd::IpamCmd),
    /// A cluster of nodes and pods in network namespaces on this machine.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Print which endpoints may connect to which (the reachability matrix), from policy.
    Reach(reach_cmd::ReachArgs),
    /// BGP: render the BIRD configuration Calico's confd writes for a node.
    #[command(subcommand)]
    Bgp(bgp_cmd::BgpCmd),
    /// This node: whether its agent and BIRD run, and BIRD's BGP peers.
    #[command(subcommand)]
    Node(node_cmd::NodeCmd),
    /// Say whether one flow is allowed, which policy, rule or missing object decided, and
    /// what to change.
    Explain(reach_cmd::ExplainArgs),
    /// Find problems in policy before deploying it: each with a code, a severity, the
    /// resource, what goes wrong and the fix (from files, or the datastore without -f).
    #[command(after_help = lint_cmd::codes_help())]
    Lint(lint_cmd::LintArgs),
    /// The connectivity difference between two policy sets (files, or files against the
    /// datastore): per port, the pairs that gain and lose access, each loss with its cause.
    Diff(diff_cmd::DiffArgs),
    /// Print the flows the agents logged: dropped traffic with its cause in `explain`'s
    /// words (from every node of a lab, or one node's run directory).
    Flows(flows_cmd::FlowsArgs),
    /// Print manifests derived from the model (the Kubernetes datastore's CRDs).
    #[command(subcommand)]
    Manifests(manifests_cmd::ManifestsCmd),
    /// Serve a web page of the datastore's policy: the reachability matrix (each cell's
    /// explanation on click), the lint findings and the denied flows as they are logged.
    Ui(ui_cmd::UiArgs),
}

fn main() -> ExitCode {
    // A container runtime runs CNI plugins with CNI_COMMAND set; `gingham-ipam` is the IPAM-only
    // plugin (the same binary under another name).
    let ipam_only = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n == "gingham-ipam");
    if std::env::var_os("CNI_COMMAND").is_some() || ipam_only {
        use std::io::Read;
        let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
        let mut stdin = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut stdin);
        let (out, code) = cni_plugin::run(&env, &stdin, ipam_only);
        if !out.is_empty() {
            println!("{out}");
        }
        return ExitCode::from(code);
    }
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = run(cli);
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::UserError) => ExitCode::from(1),
        Ok(Exit::Code(c)) => ExitCode::from(c),
        Err(e) if output::is_broken_pipe(&e) => ExitCode::from(output::EXIT_BROKEN_PIPE),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    let client = || -> anyhow::Result<gingham_api::Client> {
        let url = datastore::DatastoreUrl::resolve(cli.datastore.as_deref())?;
        Ok(gingham_api::Client::new(url.open()?))
    };
    use gingham_api::WriteMode;
    match &cli.command {
        Command::Apply(a) => diff_cmd::apply(a, &client),
        Command::Create(a) => resources_cmd::write(&client()?, a, WriteMode::Create),
        Command::Replace(a) => resources_cmd::write(&client()?, a, WriteMode::Replace),
        Command::Delete(a) => resources_cmd::delete(&client()?, a),
        Command::Get(a) => resources_cmd::get(&client()?, a),
        Command::Label(a) => resources_cmd::label(&client()?, a),
        Command::Convert(a) => resources_cmd::convert(a),
        Command::Selector(cmd) => selector_cmd::run(cmd),
        Command::Agent(a) => agent::run(a, client()?.store().as_ref()),
        Command::KubeControllers(a) => kube_controllers_cmd::run(a, client()?.store().clone()),
        Command::Ipam(cmd) => ipam_cmd::run(&client()?, cmd),
        Command::Lab(cmd) => lab::run(cmd, cli.datastore.as_deref()),
        Command::Reach(a) => reach_cmd::reach(a, &client),
        Command::Explain(a) => reach_cmd::explain(a, &client),
        Command::Lint(a) => lint_cmd::run(a, &client),
        Command::Diff(a) => diff_cmd::diff(a, &client),
        Command::Flows(a) => flows_cmd::run(a),
        Command::Bgp(cmd) => bgp_cmd::run(cmd, &client),
        Command::Node(cmd) => node_cmd::run(cmd),
        Command::Manifests(cmd) => manifests_cmd::run(cmd).map(|()| Exit::Ok),
        Command::Ui(a) => ui_cmd::run(a, cli.datastore.as_deref()),
    }
}

/// Colours only for a person at a terminal: never when stderr is a file or a pipe, nor when
/// NO_COLOR is set to anything non-empty (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_on_stderr())
        .with_writer(std::io::stderr)
        .try_init();
}
