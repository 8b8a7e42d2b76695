//! `gingham agent`: the node agent's arguments; the agent itself is `gingham-agent`.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use gingham_agent::plumbing::NetlinkPlumbing;
use gingham_agent::routes::NetlinkRoutes;
use gingham_agent::{Agent, Config, Networking};
use gingham_dataplane::Nft;
use gingham_datastore::Datastore;

use crate::Exit;

/// Where the agent serves /liveness, /readiness and /metrics unless told otherwise.
pub const DEFAULT_HEALTH_PORT: u16 = 9099;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node this agent programs (its endpoints are the local ones).
    #[arg(long)]
    pub node: String,
    /// Program once and exit.
    #[arg(long)]
    pub once: bool,
    /// Serve /liveness, /readiness and /metrics on 127.0.0.1:PORT (0: off).
    #[arg(long, default_value_t = DEFAULT_HEALTH_PORT)]
    pub health_port: u16,
    /// Seconds between consistency checks of the kernel's table (felix's refresh interval;
    /// 0: never).
    #[arg(long, default_value_t = 90)]
    pub refresh_interval: u64,
    /// How pod routes get between nodes: bird (BGP for unencapsulated pools, the agent's
    /// routes for encapsulated ones), vxlan, or none (someone else routes pods).
    #[arg(long, env = "CALICO_NETWORKING_BACKEND", default_value = "bird",
          value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Networking>()))]
    pub networking: Networking,
    /// The node's run directory: BIRD's control sockets and configuration.
    #[arg(long, env = Config::RUN_DIR_ENV, default_value = Config::DEFAULT_RUN_DIR)]
    pub run_dir: std::path::PathBuf,
    /// BIRD's router id: an IPv4 address, or `hash` (derived from the node name); unset: the
    /// node's IPv4 address.
    #[arg(long, env = gingham_bgp::ROUTER_ID_ENV)]
    pub router_id: Option<String>,
    /// Where felix's endpoint status files are (`<prefix>/endpoint-status/`): the local
    /// workloads BGPPeers with a localWorkloadSelector peer with. Default: the run directory.
    #[arg(long, env = gingham_bgp::ENDPOINT_STATUS_PREFIX_ENV)]
    pub endpoint_status_prefix: Option<std::path::PathBuf>,
    /// A kubeconfig for the Kubernetes API, read as confd reads it whatever the datastore:
    /// BGP password Secrets (namespace `NAMESPACE`, default kube-system) and the Services and
    /// EndpointSlices of per-Service routes, watched. Unset: none of them.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The node's name in the Kubernetes API, when it differs from the Calico node's: the
    /// EndpointSlices' `nodeName` that makes a Service's endpoint local.
    #[arg(long, env = gingham_bgp::K8S_NODE_REF_ENV)]
    pub k8s_node_ref: Option<String>,
    /// Log the new flows that policy and profile Allow rules let through as well as dropped
    /// ones (`flowLogsAllowed`; as environment, felix's way: FELIX_FLOWLOGSALLOWED=true).
    #[arg(long, env = FLOW_LOGS_ALLOWED_ENV)]
    pub flow_logs_allowed: bool,
}

/// The environment variable of `--flow-logs-allowed`.
pub const FLOW_LOGS_ALLOWED_ENV: &str = "FELIX_FLOWLOGSALLOWED";

pub fn run(args: &AgentArgs, store: &dyn Datastore) -> Result<Exit> {
    let config = Config {
        node: args.node.clone(),
        refresh_interval: (args.refresh_interval > 0)
            .then(|| Duration::from_secs(args.refresh_interval)),
        networking: args.networking,
        run_dir: args.run_dir.clone(),
    };
    let plumbing = NetlinkPlumbing::open()?;
    let routes = NetlinkRoutes::open()?;
    let mut agent = Agent::new(&config, Nft::default(), plumbing, Box::new(routes));
    // The workload dispatch maps are keyed by interface index (the node's interfaces,
    // watched), each backed by a map keyed by name for interfaces not keyed yet.
    agent
        .policy
        .set_links(Box::new(gingham_agent::links::NetlinkLinks::open()?));
    agent
        .routes
        .set_mtu_file(gingham_agent::mtu::file_in(&config.run_dir));
    agent.bgp.set_router_id(args.router_id.clone());
    agent.bgp.set_k8s_node_ref(args.k8s_node_ref.clone());
    agent.set_endpoint_status_prefix(
        args.endpoint_status_prefix
            .clone()
            .unwrap_or_else(|| config.run_dir.clone()),
    );
    if let Some(path) = &args.kubeconfig
        && args.networking == Networking::Bird
    {
        let ns = gingham_agent::bgp::kube::secrets_namespace();
        let watch = gingham_agent::bgp::kube::KubeWatch::start(path, &ns)?;
        agent.bgp.set_side_inputs(Box::new(watch));
    }
    if !args.once {
        // Flow logs of dropped (and, if asked, allowed) traffic (NFLOG); the agent runs
        // without them if the kernel refuses (no nfnetlink_log).
        match gingham_agent::flows::start(
            &args.node,
            &config.run_dir,
            agent.health.metrics.flow_logs_dropped.clone(),
        ) {
            Ok(logger) => {
                agent.policy.set_flow_view(logger.view);
                agent.policy.set_flow_logs_allowed(args.flow_logs_allowed);
            }
            Err(e) => tracing::warn!(error = %e, "flow logs are off: cannot read NFLOG"),
        }
    }
    if args.health_port != 0 && !args.once {
        gingham_agent::health::serve(&agent.health, args.health_port)?;
    }
    agent.start(store)?;
    println!(
        "agent for node {} programmed; watching {}",
        args.node,
        store.describe()
    );
    if args.once {
        return Ok(Exit::Ok);
    }
    match agent.run(store)? {}
}
