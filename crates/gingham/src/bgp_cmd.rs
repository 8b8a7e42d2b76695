//! `gingham bgp render`: the BIRD configuration Calico's confd would write for a node, from
//! resource files or from the datastore.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gingham_bgp::{Input, Options};

use crate::Exit;

#[derive(Debug, Subcommand)]
pub enum BgpCmd {
    /// Write bird.cfg, bird6.cfg, bird_aggr.cfg, bird6_aggr.cfg, bird_ipam.cfg and
    /// bird6_ipam.cfg for a node, with the text Calico's confd renders for the same resources.
    ///
    /// With -f, the resources come from files (Calico v3 resources, BGPFilters and
    /// BlockAffinities included, and Kubernetes `v1` Secrets holding BGP passwords); without,
    /// from the datastore (BGPFilters as stored, block affinities from IPAM). CALICO_ROUTER_ID
    /// (an IPv4 address, or `hash`) sets the router id.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The node to render for.
    #[arg(long, env = "NODENAME")]
    pub node: String,
    /// Resource files or directories (`-` for standard input); without, the datastore.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// The directory to write the six files to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The router id: an IPv4 address, or `hash` (derived from the node name).
    #[arg(long, env = gingham_bgp::ROUTER_ID_ENV)]
    pub router_id: Option<String>,
    /// Where workload endpoint status files are (`<prefix>/endpoint-status/`): the local
    /// workloads that BGPPeers with a localWorkloadSelector peer with.
    #[arg(
        long,
        env = gingham_bgp::ENDPOINT_STATUS_PREFIX_ENV,
        default_value = gingham_agent::Config::DEFAULT_RUN_DIR
    )]
    pub endpoint_status_prefix: PathBuf,
    /// A kubeconfig: without -f, BGP password Secrets (namespace `NAMESPACE`, default
    /// kube-system) and the Services and EndpointSlices of per-Service routes are read from
    /// that Kubernetes API, as confd reads them whatever the datastore.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The node's name in the Kubernetes API, when it differs from the Calico node's: the
    /// EndpointSlices' `nodeName` that makes a Service's endpoint local.
    #[arg(long, env = gingham_bgp::K8S_NODE_REF_ENV)]
    pub k8s_node_ref: Option<String>,
}

pub fn run(cmd: &BgpCmd, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    match cmd {
        BgpCmd::Render(a) => render(a, client),
    }
}

fn render(a: &RenderArgs, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    let mut input = if a.files.is_empty() {
        let mut input = from_datastore(&client()?)?;
        if let Some(path) = &a.kubeconfig {
            from_kubernetes(path, &mut input)?;
        }
        input
    } else {
        match from_files(&a.files)? {
            Some(i) => i,
            None => return Ok(Exit::UserError),
        }
    };
    read_endpoint_status(&a.endpoint_status_prefix, &mut input)?;
    let opts = Options {
        node_name: a.node.clone(),
        router_id: a.router_id.clone(),
        k8s_node_ref: a.k8s_node_ref.clone(),
    };
    let rendered = gingham_bgp::render(&input, &opts)?;
    for w in &rendered.warnings {
        eprintln!("warning: {w}");
    }
    write_files(&a.out, &rendered.files)?;
    Ok(Exit::Ok)
}

/// Reads `<prefix>/endpoint-status/*` (a missing directory means no local workloads). Files
/// that do not parse are skipped with a warning, as confd skips them.
fn read_endpoint_status(prefix: &Path, input: &mut Input) -> Result<()> {
    let warnings = gingham_agent::bgp::read_endpoint_status(prefix, input)
        .with_context(|| format!("cannot read {}", prefix.join("endpoint-status").display()))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Writes every file to a temporary name first, then renames them all, so a failure leaves
/// the previous files in place.
fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut staged = Vec::new();
    for (name, text) in files {
        let tmp = dir.join(format!(".{name}.tmp"));
        if let Err(e) = std::fs::write(&tmp, text) {
            for (t, _) in &staged {
                let _ = std::fs::remove_file(t);
            }
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
        staged.push((tmp, dir.join(name)));
    }
    for (tmp, dest) in staged {
        std::fs::rename(&tmp, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    }
    Ok(())
}

/// Reads every kind the renderer takes from the datastore (block affinities are the
/// BlockAffinity view of IPAM's keys), as the agent does.
fn from_datastore(client: &gingham_api::Client) -> Result<Input> {
    gingham_agent::bgp::input_from_datastore(client.store().as_ref())
        .context("cannot read the BGP resources from the datastore")
}

/// Adds the Secrets, Services and EndpointSlices of the Kubernetes API the kubeconfig at
/// `path` names.
fn from_kubernetes(path: &Path, input: &mut Input) -> Result<()> {
    use gingham_agent::bgp::kube;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for the Kubernetes API")?;
    let objects = rt.block_on(async {
        let client = kube::client(path).await?;
        kube::KubeObjects::list(&client, &kube::secrets_namespace()).await
    })?;
    for w in objects.add_to(input) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Reads the files; on any error prints every problem and returns `None`.
fn from_files(files: &[String]) -> Result<Option<Input>> {
    let mut sources = Vec::new();
    for f in files {
        crate::resources_cmd::collect_sources(f, false, &mut sources)?;
    }
    let mut input = Input::default();
    let mut failed = false;
    for (name, text) in sources {
        if let Err(errors) = gingham_bgp::load::add_text(&mut input, &name, &text) {
            for e in errors {
                eprintln!("{e}");
            }
            failed = true;
        }
    }
    if failed {
        eprintln!("nothing was rendered");
        return Ok(None);
    }
    Ok(Some(input))
}
