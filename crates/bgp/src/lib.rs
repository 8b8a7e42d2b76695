//! The BIRD configuration of a Calico node, rendered as Calico's confd renders it.
//!
//! Given the datastore content confd watches (Nodes, BGPConfigurations, BGPPeers, BGPFilters,
//! IPPools, the block affinities of IPAM, the secrets that hold BGP passwords and the endpoint
//! status files of local workloads that are BGP peers) and the name of the node,
//! [`render`] returns the six files confd writes for BIRD 1.6: `bird.cfg`, `bird6.cfg` (the
//! daemons' configurations), `bird_aggr.cfg`, `bird6_aggr.cfg` (blackholes and aggregation of
//! the node's blocks) and `bird_ipam.cfg`, `bird6_ipam.cfg` (export and kernel filters from the
//! pools). The text is the text Calico v3.33 renders for the same content, blank lines aside,
//! so that Calico know-how (protocol names such as `Mesh_10_0_0_2`, `birdc show protocols`)
//! applies unchanged.
//!
//! How it works, in confd's terms: the `view` module turns the resources into the facts
//! confd's templates read (per-host BGP fields, global settings, the set of peerings with the
//! unidirectional mesh rule, reverse peerings and "first emitter wins"), [`filter`] renders
//! BGPFilters, and the `text` module writes the files.
//!
//! Where confd's result depends on Go map order (two BGPPeers emitting the same peering), the
//! BGPPeer first in name order wins here. Not rendered yet: per-Service /32 routes (they need
//! Kubernetes Services and EndpointSlices); the ranges of the default BGPConfiguration are.
//!
//! This crate does no I/O: the caller reads files or the datastore ([`load`] turns resource text
//! into [`Input`]), writes the output and runs `bird -p -c` on it.

pub mod filter;
pub mod load;
pub mod status;
mod text;
mod view;

use std::collections::BTreeMap;

use gingham_model::{BgpConfiguration, BgpFilter, BgpPeer, BlockAffinity, IpPool, Node};

/// The environment variable that sets the router id (confd's).
pub const ROUTER_ID_ENV: &str = "CALICO_ROUTER_ID";
/// The environment variable naming where endpoint status files are (confd's and felix's).
pub const ENDPOINT_STATUS_PREFIX_ENV: &str = "CALICO_ENDPOINT_STATUS_PATH_PREFIX";

/// The files confd writes, in the order [`Rendered::files`] holds them.
pub const FILE_NAMES: [&str; 6] = [
    "bird.cfg",
    "bird6.cfg",
    "bird_aggr.cfg",
    "bird6_aggr.cfg",
    "bird_ipam.cfg",
    "bird6_ipam.cfg",
];

/// A local workload's endpoint status (felix's `<prefix>/endpoint-status/<name>` file): the
/// workloads selected by a BGPPeer's `localWorkloadSelector` name that peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalWorkload {
    /// The status file's name.
    #[serde(skip)]
    pub name: String,
    /// The BGPPeer whose localWorkloadSelector selects the workload (empty: none).
    #[serde(default)]
    pub bgp_peer_name: String,
    /// The workload's IPv4 networks (the first is used).
    #[serde(default)]
    pub ipv4_nets: Vec<String>,
    /// The workload's IPv6 networks (the first is used).
    #[serde(default)]
    pub ipv6_nets: Vec<String>,
}

/// Kubernetes secrets (namespace `kube-system`): secret name → key → decoded value.
pub type Secrets = BTreeMap<String, BTreeMap<String, String>>;

/// Everything confd reads. Order does not matter: peers and nodes are taken in name order.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Calico nodes.
    pub nodes: Vec<Node>,
    /// BGP configurations (`default` and `node.<name>`).
    pub bgp_configurations: Vec<BgpConfiguration>,
    /// BGP peers.
    pub bgp_peers: Vec<BgpPeer>,
    /// IP pools.
    pub ip_pools: Vec<IpPool>,
    /// BGP filters.
    pub bgp_filters: Vec<BgpFilter>,
    /// Local workloads that are BGP peers (endpoint status files).
    pub local_workloads: Vec<LocalWorkload>,
    /// Block affinities (every node's; only the rendered node's are used). Pending and
    /// deleted ones are ignored, as confd ignores them; an empty state counts as confirmed.
    pub affinities: Vec<BlockAffinity>,
    /// Secrets holding BGP passwords. A password whose secret or key is missing is left out
    /// (no `password` line), as confd does.
    pub secrets: Secrets,
}

/// Settings from the environment of confd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The node to render for (`NODENAME`).
    pub node_name: String,
    /// `CALICO_ROUTER_ID`: an IPv4 address, or `hash` for an id derived from the node name.
    /// Unset: the node's IPv4 address.
    pub router_id: Option<String>,
}

/// The rendered files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `(file name, text)` for each of [`FILE_NAMES`], in that order.
    pub files: Vec<(&'static str, String)>,
    /// Inputs that were skipped as confd skips them (with the reason), for the caller to log.
    pub warnings: Vec<String>,
}

impl Rendered {
    /// The text of one file.
    pub fn file(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.as_str())
    }
}

/// Why nothing could be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// No node name was given.
    #[error("no node name given (set NODENAME or pass --node)")]
    NoNodeName,
    /// The node does not exist.
    #[error(
        "node {0:?} not found among the Node resources (confd renders nothing until it exists)"
    )]
    NodeNotFound(String),
    /// The node has no IPv4 address and no router id was given: BIRD needs a 4-byte id.
    #[error(
        "node {0:?} has no IPv4 address (spec.bgp.ipv4Address), so BIRD has no router id: set CALICO_ROUTER_ID to an IPv4 address or to hash"
    )]
    NoRouterId(String),
    /// `CALICO_ROUTER_ID` is neither an IPv4 address nor `hash`.
    #[error(
        "CALICO_ROUTER_ID {0:?} is not valid (valid: an IPv4 address such as 10.0.0.1, or hash)"
    )]
    BadRouterId(String),
}

/// Renders the six files for `opts.node_name`.
pub fn render(input: &Input, opts: &Options) -> Result<Rendered, RenderError> {
    if opts.node_name.is_empty() {
        return Err(RenderError::NoNodeName);
    }
    let mut warnings = Vec::new();
    let v = view::View::build(input, &opts.node_name, &mut warnings)?;
    let router_id = match opts.router_id.as_deref() {
        None | Some("") => None,
        Some("hash") => Some(hash_to_ipv4(&opts.node_name)),
        Some(s) => match s.parse::<std::net::Ipv4Addr>() {
            Ok(a) => Some(a.to_string()),
            Err(_) => return Err(RenderError::BadRouterId(s.to_string())),
        },
    };
    if router_id.is_none() && !v.has_ipv4() {
        // confd would write `router id ;`, which BIRD rejects.
        return Err(RenderError::NoRouterId(opts.node_name.clone()));
    }
    let mut files = Vec::with_capacity(6);
    for name in FILE_NAMES {
        let version = if name.starts_with("bird6") { 6 } else { 4 };
        let cfg = v.bird_config(version, router_id.as_deref(), &mut warnings);
        let text = match name {
            "bird.cfg" | "bird6.cfg" => text::bird_cfg(&cfg),
            "bird_aggr.cfg" | "bird6_aggr.cfg" => text::aggr_cfg(&cfg),
            _ => text::ipam_cfg(&cfg),
        };
        files.push((name, text));
    }
    warnings.sort();
    warnings.dedup();
    Ok(Rendered { files, warnings })
}

/// Who programs a pool's cluster routes in BIRD mode (confd's `processIPPool` with the default
/// BGPConfiguration's `programClusterRoutes`: unset is `EnabledNoEncapOnly`): `true` when BIRD
/// does, its kernel filter accepting the pool's routes, and with them the blackholes of the
/// node's blocks in it (`bird_aggr.cfg`'s static protocol); `false` when felix (our agent)
/// does: VXLAN pools always, IPIP pools unless `Enabled`/`EnabledIPIPOnly`, unencapsulated
/// pools under `Disabled`/`EnabledIPIPOnly`.
pub fn bird_programs_pool(pool: &IpPool, program_cluster_routes: Option<&str>) -> bool {
    let (bird_ipip, bird_no_encap) = match program_cluster_routes {
        Some("Disabled") => (false, false),
        Some("Enabled") => (true, true),
        Some("EnabledIPIPOnly") => (true, false),
        _ => (false, true),
    };
    if pool.spec.vxlan() != gingham_model::VxlanMode::Never {
        return false;
    }
    if pool.spec.ipip() != gingham_model::IpipMode::Never {
        bird_ipip
    } else {
        bird_no_encap
    }
}

/// Calico's `CALICO_ROUTER_ID=hash`: the first four bytes of sha256(node name) as an IPv4
/// address, with a first octet above 223 (multicast and reserved) lowered by 32.
pub fn hash_to_ipv4(node_name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(node_name.as_bytes());
    let mut first = h[0];
    if first > 223 {
        first -= 32;
    }
    format!("{}.{}.{}.{}", first, h[1], h[2], h[3])
}

/// Compares two configurations as the acceptance criterion does: line by line, ignoring blank
/// (empty or whitespace-only) lines. Returns the first difference, if any.
pub fn diff_ignoring_blank_lines(got: &str, want: &str) -> Option<String> {
    let g: Vec<&str> = got.lines().filter(|l| !l.trim().is_empty()).collect();
    let w: Vec<&str> = want.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
        if a != b {
            return Some(format!(
                "non-blank line {}: got\n  {a:?}\nwant\n  {b:?}",
                i + 1
            ));
        }
    }
    if g.len() != w.len() {
        let (longer, which) = if g.len() > w.len() {
            (&g, "got")
        } else {
            (&w, "want")
        };
        let extra = longer[g.len().min(w.len())..].join("\n");
        return Some(format!("{which} has extra lines:\n{extra}"));
    }
    None
}

#[cfg(test)]
mod tests;
