//! The facts confd's templates read, computed from the resources as confd's client computes
//! them (its v1 key/value view: per-host BGP fields, global settings, peerings), and the
//! per-family configuration the templates print.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gingham_model::bgp::{BgpPassword, Community, PrefixAdvertisement};
use gingham_model::{BgpConfiguration, BgpPeer, IpPool, IpipMode, VxlanMode};
use gingham_selector::Selector;
use ipnet::IpNet;

use crate::{Input, RenderError, Secrets};
use gingham_model::BgpFilter;

/// BIRD's largest integer; route priorities are carried as `2147483647 - bgp_local_pref`.
pub(crate) const BIRD_INT_MAX: i64 = 2_147_483_647;
/// The `preference` an imported higher-priority route gets, so it beats a local workload route.
const OVERRIDE_PREFERENCE: u32 = 200;
/// The AS number when none is configured.
const DEFAULT_AS: &str = "64512";
/// The BGP port that needs no `port` in a peering key.
const DEFAULT_BGP_PORT: u16 = 179;
/// Routes at this priority (kernel metric) are normal; lower ones are elevated.
const DEFAULT_ROUTE_PRIORITY: i64 = 1024;
/// The prefix of per-node BGPConfiguration names.
const NODE_CONFIG_PREFIX: &str = "node.";

/// One node's BGP fields (confd's `/calico/bgp/v1/host/<node>/...` keys).
#[derive(Debug, Clone, Default)]
struct Host {
    labels: BTreeMap<String, String>,
    /// Address without prefix, or empty.
    ip4: String,
    ip6: String,
    /// The subnet of the address (`10.0.0.0/24`), when there is an address.
    net4: Option<String>,
    net6: Option<String>,
    /// The node's own AS number, when set.
    as_num: Option<String>,
    rr_cluster_id: String,
    wg4: String,
    wg6: String,
}

/// A peering as confd stores it (its `backends.BGPPeer` JSON).
#[derive(Debug, Clone)]
struct V1Peer {
    ip: IpAddr,
    as_num: u32,
    local_as_num: u32,
    rr_cluster_id: String,
    password: Option<String>,
    source_addr: String,
    restart_time: String,
    keepalive_time: String,
    port: u16,
    keep_next_hop: bool,
    calico_node: bool,
    num_allow_local_as: i32,
    ttl_security: u8,
    filters: Vec<String>,
    reachable_by: String,
    passive_mode: bool,
    next_hop_mode: String,
    /// A local workload peering.
    local: bool,
}

impl V1Peer {
    fn new(ip: IpAddr) -> V1Peer {
        V1Peer {
            ip,
            as_num: 0,
            local_as_num: 0,
            rr_cluster_id: String::new(),
            password: None,
            source_addr: String::new(),
            restart_time: String::new(),
            keepalive_time: String::new(),
            port: 0,
            keep_next_hop: false,
            calico_node: false,
            num_allow_local_as: 0,
            ttl_security: 0,
            filters: Vec::new(),
            reachable_by: String::new(),
            passive_mode: false,
            next_hop_mode: String::new(),
            local: false,
        }
    }
}

/// The key segment of a peering: `<ip>` or `<ip>-<port>` (179 counts as no port).
fn peer_key(ip: IpAddr, port: u16) -> String {
    let v = if ip.is_ipv4() { 4 } else { 6 };
    if port == 0 || port == DEFAULT_BGP_PORT {
        format!("peer_v{v}/{ip}")
    } else {
        format!("peer_v{v}/{ip}-{port}")
    }
}

/// One BIRD `protocol bgp` section.
#[derive(Debug, Clone, Default)]
pub(crate) struct BirdPeer {
    pub name: String,
    pub ip: String,
    pub port: String,
    pub as_number: String,
    pub local_as_number: String,
    pub kind: &'static str,
    pub import_filter: Vec<String>,
    pub export_filter: Vec<String>,
    pub password: String,
    /// A hop count, or `off`.
    pub ttl_security: String,
    pub route_reflector: bool,
    pub rr_cluster_id: String,
    pub source_addr: String,
    pub next_hop_self: bool,
    pub next_hop_keep: bool,
    pub passive: bool,
    pub graceful_restart: String,
    pub keepalive_time: String,
    pub num_allow_local_as: String,
}

/// What the templates print for one address family.
#[derive(Debug, Clone, Default)]
pub(crate) struct BirdConfig {
    pub version: u8,
    pub node_ip: String,
    pub node_ip6: String,
    pub as_number: String,
    pub router_id: String,
    pub peers: Vec<BirdPeer>,
    /// `(cidr, add statements)`.
    pub communities: Vec<(String, Vec<String>)>,
    pub debug_mode: String,
    pub peer_debug_mode: String,
    pub listen_address: String,
    pub listen_port: String,
    pub direct_interfaces: String,
    pub external_ips: Vec<String>,
    pub load_balancer_ips: Vec<String>,
    pub export_disabled_pools: Vec<String>,
    pub ibgp_tunnel_filter: Vec<String>,
    pub export_enabled_pools: Vec<String>,
    pub kernel_pools: Vec<String>,
    pub set_metric: Vec<String>,
    pub wireguard_kernel: Vec<String>,
    pub normal_route_priority: i64,
    /// This node's blocks of this family: `(cidr, state)` in key order.
    pub blocks: Vec<(String, String)>,
    /// `(peer ip, via)` static routes for global / node-specific peers with `reachableBy`.
    pub reachable_global: Vec<(String, String)>,
    pub reachable_node: Vec<(String, String)>,
    /// Whether this node is a route reflector (non-empty cluster id).
    pub is_route_reflector: bool,
    /// Lines of the BGPFilter functions section.
    pub filter_funcs: Vec<String>,
    /// Service ranges advertised from this node (blackholed and exported), in key order.
    pub static_routes: Vec<String>,
    /// Service ranges never programmed into the kernel, in key order.
    pub reject_cidrs: Vec<String>,
}

/// confd's view of the datastore, for one node.
pub(crate) struct View<'a> {
    me: String,
    hosts: BTreeMap<String, Host>,
    global: Option<&'a BgpConfiguration>,
    node_cfg: Option<&'a BgpConfiguration>,
    global_as: String,
    mesh_enabled: bool,
    global_listen_port: u16,
    node_listen_ports: BTreeMap<String, u16>,
    /// Global peerings, by key (`peer_v4/<ip>[-port]`).
    global_peers: BTreeMap<String, V1Peer>,
    /// This node's node-specific peerings, by key.
    node_peers: BTreeMap<String, V1Peer>,
    pools: Vec<&'a IpPool>,
    /// This node's non-pending affinities: `(family, key segment, cidr, state)`.
    blocks: Vec<(u8, String, String, String)>,
    secrets: &'a Secrets,
    /// BGP filters in name order.
    filters: Vec<&'a BgpFilter>,
    /// Local workload peers in status file name order.
    local_workloads: Vec<&'a crate::LocalWorkload>,
}

fn secret_value(secrets: &Secrets, pw: Option<&BgpPassword>) -> Option<String> {
    let r = pw?.secret_key_ref.as_ref()?;
    secrets.get(&r.name)?.get(&r.key).cloned()
}

/// Go's `math.Round(d.Seconds())` of a duration string, as a string.
fn rounded_seconds(d: &str, what: &str, warnings: &mut Vec<String>) -> String {
    match gingham_model::felix::parse_duration(d) {
        Some(x) => format!("{}", x.as_secs_f64().round() as u64),
        None => {
            warnings.push(format!("{what}: {d:?} is not a duration; ignored"));
            String::new()
        }
    }
}

/// Go's `net.SplitHostPort` then a 16-bit port, as confd's `parseIPPort`.
fn parse_ip_port(s: &str) -> (String, u16) {
    let split = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once("]:")
            .map(|(h, p)| (h.to_string(), p.to_string()))
    } else {
        match s.split_once(':') {
            Some((h, p)) if !p.contains(':') => Some((h.to_string(), p.to_string())),
            _ => None,
        }
    };
    match split {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(port) => (h, port),
            Err(_) => (s.to_string(), 0),
        },
        None => (s.to_string(), 0),
    }
}

impl<'a> View<'a> {
    pub(crate) fn build(
        input: &'a Input,
        me: &str,
        warnings: &mut Vec<String>,
    ) -> Result<View<'a>, RenderError> {
        let mut hosts = BTreeMap::new();
        for n in &input.nodes {
            let mut h = Host {
                labels: n.metadata.labels.clone(),
                ..Host::default()
            };
            if let Some(bgp) = &n.spec.bgp {
                if let Some(a) = bgp.ipv4_address {
                    h.ip4 = a.addr().to_string();
                    h.net4 = Some(a.trunc().to_string());
                }
                if let Some(a) = bgp.ipv6_address {
                    h.ip6 = a.addr().to_string();
                    h.net6 = Some(a.trunc().to_string());
                }
                h.as_num = bgp.as_number.map(|a| a.to_string());
                h.rr_cluster_id = bgp.route_reflector_cluster_id.clone();
            }
            if let Some(wg) = &n.spec.wireguard {
                h.wg4 = wg.interface_ipv4_address.clone();
                h.wg6 = wg.interface_ipv6_address.clone();
            }
            hosts.insert(n.metadata.name.clone(), h);
        }
        if !hosts.contains_key(me) {
            return Err(RenderError::NodeNotFound(me.to_string()));
        }
        let global = input
            .bgp_configurations
            .iter()
            .find(|c| c.metadata.name == "default");
        let mut node_listen_ports = BTreeMap::new();
        let mut node_cfg = None;
        for c in &input.bgp_configurations {
            let Some(node) = c.metadata.name.strip_prefix(NODE_CONFIG_PREFIX) else {
                if c.metadata.name != "default" {
                    warnings.push(format!(
                        "BGPConfiguration {:?}: bad name (valid: default, node.<nodename>); ignored",
                        c.metadata.name
                    ));
                }
                continue;
            };
            if let Some(p) = c.spec.listen_port.filter(|p| *p != 0) {
                node_listen_ports.insert(node.to_string(), p);
            }
            if node == me {
                node_cfg = Some(c);
            }
        }
        let global_as = global
            .and_then(|g| g.spec.as_number)
            .map(|a| a.to_string())
            .unwrap_or_else(|| DEFAULT_AS.to_string());
        let mesh_enabled = global
            .and_then(|g| g.spec.node_to_node_mesh_enabled)
            .unwrap_or(true);
        let global_listen_port = global.and_then(|g| g.spec.listen_port).unwrap_or(0);

        let mut blocks: Vec<(u8, String, String, String)> = input
            .affinities
            .iter()
            .filter(|a| a.spec.node == me && a.spec.state != "pending" && !a.spec.deleted)
            .filter_map(|a| {
                let net = a.spec.cidr.parse::<IpNet>().ok()?.trunc();
                let fam = if net.addr().is_ipv4() { 4 } else { 6 };
                let seg = format!("{}-{}", net.network(), net.prefix_len());
                let cidr = format!("{}/{}", net.network(), net.prefix_len());
                Some((fam, seg, cidr, a.spec.state.clone()))
            })
            .collect();
        blocks.sort();
        blocks.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);

        let mut v = View {
            me: me.to_string(),
            hosts,
            global,
            node_cfg,
            global_as,
            mesh_enabled,
            global_listen_port,
            node_listen_ports,
            global_peers: BTreeMap::new(),
            node_peers: BTreeMap::new(),
            pools: input.ip_pools.iter().collect(),
            blocks,
            secrets: &input.secrets,
            local_workloads: {
                let mut w: Vec<&crate::LocalWorkload> = input.local_workloads.iter().collect();
                w.sort_by(|a, b| a.name.cmp(&b.name));
                w
            },
            filters: {
                let mut f: Vec<&BgpFilter> = input.bgp_filters.iter().collect();
                f.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                f
            },
        };
        let mut peers: Vec<&BgpPeer> = input.bgp_peers.iter().collect();
        peers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v.compute_peerings(&peers, warnings);
        Ok(v)
    }

    fn nodes_matching(&self, sel: &str, warnings: &mut Vec<String>) -> Vec<String> {
        match Selector::parse(sel) {
            Ok(s) => self
                .hosts
                .iter()
                .filter(|(_, h)| s.matches(&h.labels))
                .map(|(n, _)| n.clone())
                .collect(),
            Err(e) => {
                warnings.push(format!(
                    "selector {sel:?} does not parse ({e}); it matches no node"
                ));
                Vec::new()
            }
        }
    }

    fn node_ips(&self) -> BTreeSet<&str> {
        self.hosts
            .values()
            .flat_map(|h| [h.ip4.as_str(), h.ip6.as_str()])
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// confd's `nodesWithIPPortAndAS`, quirks included.
    fn nodes_with_ip_port_and_as(&self, ip: &str, as_num: u32, port: u16) -> Vec<String> {
        let want_as = if as_num == 0 {
            self.global_as.clone()
        } else {
            as_num.to_string()
        };
        let mut out = Vec::new();
        for (name, h) in &self.hosts {
            if h.ip4 != ip && h.ip6 != ip {
                continue;
            }
            let node_as = h.as_num.clone().unwrap_or_else(|| self.global_as.clone());
            if node_as != want_as {
                continue;
            }
            if port != 0 {
                match self.node_listen_ports.get(name) {
                    Some(np) if *np != port => continue,
                    _ => {
                        if self.global_listen_port != 0 && self.global_listen_port != port {
                            continue;
                        }
                    }
                }
            }
            out.push(name.clone());
        }
        out
    }

    /// confd's `nodeAsBGPPeers`.
    fn node_as_peers(&self, node: &str, v4: bool, v6: bool, p: &BgpPeer) -> Vec<V1Peer> {
        let Some(h) = self.hosts.get(node) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (want, ip) in [(v4, &h.ip4), (v6, &h.ip6)] {
            if !want || ip.is_empty() {
                continue;
            }
            let Ok(addr) = ip.parse::<IpAddr>() else {
                continue;
            };
            let mut peer = V1Peer::new(addr);
            peer.ttl_security = p.spec.ttl_security.unwrap_or(0);
            peer.filters = p.spec.filters.clone();
            peer.reachable_by = p.spec.reachable_by.clone();
            if let Some(port) = self.node_listen_ports.get(node) {
                peer.port = *port;
            } else if self.global_listen_port != 0 {
                peer.port = self.global_listen_port;
            }
            let as_str = h.as_num.clone().unwrap_or_else(|| self.global_as.clone());
            peer.as_num = as_str.parse().unwrap_or(0);
            peer.rr_cluster_id = h.rr_cluster_id.clone();
            let (keep, mode) = next_hop_mode(p);
            peer.keep_next_hop = keep;
            peer.next_hop_mode = mode;
            out.push(peer);
        }
        out
    }

    /// confd's `localBGPPeerDataAsBGPPeers` for the workloads that name this BGPPeer: passive
    /// sessions to the workload's first address of each family, without a source address.
    fn local_workload_peers(&self, p: &BgpPeer, warnings: &mut Vec<String>) -> Vec<V1Peer> {
        let mut out = Vec::new();
        for w in &self.local_workloads {
            if w.bgp_peer_name.is_empty() || w.bgp_peer_name != p.metadata.name {
                continue;
            }
            let first = |nets: &[String]| -> Result<Option<IpAddr>, ()> {
                match nets.first() {
                    None => Ok(None),
                    Some(n) => n
                        .parse::<ipnet::IpNet>()
                        .map(|n| Some(n.addr()))
                        .map_err(|_| ()),
                }
            };
            let (Ok(v4), Ok(v6)) = (first(&w.ipv4_nets), first(&w.ipv6_nets)) else {
                warnings.push(format!(
                    "endpoint status {}: an address is not a CIDR; ignored",
                    w.name
                ));
                continue;
            };
            for ip in [v4, v6].into_iter().flatten() {
                let mut peer = V1Peer::new(ip);
                peer.local_as_num = p.spec.local_as_number.map(|a| a.0).unwrap_or(0);
                peer.filters = p.spec.filters.clone();
                peer.as_num = p.spec.as_number.map(|a| a.0).unwrap_or(0);
                peer.source_addr = "None".into();
                peer.passive_mode = true;
                peer.local = true;
                out.push(peer);
            }
        }
        out
    }

    /// confd's `setPeerConfigFieldsFromV3Resource`.
    fn set_common_fields(&self, peers: &mut [V1Peer], p: &BgpPeer, warnings: &mut Vec<String>) {
        let password = secret_value(self.secrets, p.spec.password.as_ref());
        if p.spec.password.is_some() && password.is_none() {
            warnings.push(format!(
                "BGPPeer {}: the password secret is missing; the session has no password",
                p.metadata.name
            ));
        }
        let what = format!("BGPPeer {}", p.metadata.name);
        let restart = p
            .spec
            .max_restart_time
            .as_deref()
            .map(|d| rounded_seconds(d, &format!("{what} maxRestartTime"), warnings));
        let keepalive = p
            .spec
            .keepalive_time
            .as_deref()
            .map(|d| rounded_seconds(d, &format!("{what} keepaliveTime"), warnings));
        for peer in peers {
            peer.password = password.clone();
            peer.source_addr = if p.spec.source_address.is_empty() {
                "UseNodeIP".to_string()
            } else {
                p.spec.source_address.clone()
            };
            if let Some(r) = &restart {
                peer.restart_time = r.clone();
            }
            if let Some(k) = &keepalive {
                peer.keepalive_time = k.clone();
            }
        }
    }

    /// confd's `updatePeersV1`, for this node: global peerings first, then node-specific ones
    /// (skipping those that duplicate a global one), then reverse peerings; the first emitter
    /// of a key wins. BGPPeers are taken in name order.
    fn compute_peerings(&mut self, peers: &[&BgpPeer], warnings: &mut Vec<String>) {
        let mut global = BTreeMap::new();
        let mut node = BTreeMap::new();
        for global_pass in [true, false] {
            for p in peers {
                let is_global = p.spec.node_selector.is_empty() && p.spec.node.is_empty();
                if global_pass != is_global {
                    continue;
                }
                let local_nodes = if !p.spec.node_selector.is_empty() {
                    self.nodes_matching(&p.spec.node_selector, warnings)
                } else if !p.spec.node.is_empty() {
                    vec![p.spec.node.clone()]
                } else {
                    Vec::new()
                };
                let mut v1 = Vec::new();
                if !p.spec.local_workload_selector.is_empty() {
                    v1 = self.local_workload_peers(p, warnings);
                } else if !p.spec.peer_selector.is_empty() {
                    for n in self.nodes_matching(&p.spec.peer_selector, warnings) {
                        v1.extend(self.node_as_peers(&n, true, true, p));
                    }
                    self.set_common_fields(&mut v1, p, warnings);
                } else {
                    let (host, mut port) = parse_ip_port(&p.spec.peer_ip);
                    let Ok(ip) = host.parse::<IpAddr>() else {
                        warnings.push(format!(
                            "BGPPeer {}: peerIP {:?} is not an address (valid: 10.0.0.1, 10.0.0.1:1790, [fd00::1]:1790); skipped",
                            p.metadata.name, p.spec.peer_ip
                        ));
                        continue;
                    };
                    let as_num = p.spec.as_number.map(|a| a.0).unwrap_or(0);
                    if port == 0 {
                        let names = self.nodes_with_ip_port_and_as(&host, as_num, 0);
                        if let Some(first) = names.first() {
                            if let Some(np) = self.node_listen_ports.get(first) {
                                port = *np;
                            } else if self.global_listen_port != 0 {
                                port = self.global_listen_port;
                            }
                        }
                    }
                    let mut reachable_by = String::new();
                    if !p.spec.reachable_by.is_empty() {
                        match p.spec.reachable_by.parse::<IpAddr>() {
                            Ok(rb) if rb.is_ipv4() == ip.is_ipv4() => {
                                reachable_by = p.spec.reachable_by.clone()
                            }
                            _ => {
                                warnings.push(format!(
                                    "BGPPeer {}: reachableBy {:?} is not an address of the peer's family; skipped",
                                    p.metadata.name, p.spec.reachable_by
                                ));
                                continue;
                            }
                        }
                    }
                    let mut peer = V1Peer::new(ip);
                    peer.as_num = as_num;
                    peer.local_as_num = p.spec.local_as_number.map(|a| a.0).unwrap_or(0);
                    peer.source_addr = p.spec.source_address.clone();
                    peer.port = port;
                    let (keep, mode) = next_hop_mode(p);
                    peer.keep_next_hop = keep;
                    peer.next_hop_mode = mode;
                    peer.calico_node = self.node_ips().contains(host.as_str());
                    peer.ttl_security = p.spec.ttl_security.unwrap_or(0);
                    peer.filters = p.spec.filters.clone();
                    peer.num_allow_local_as = p.spec.num_allowed_local_as_numbers.unwrap_or(0);
                    peer.reachable_by = reachable_by;
                    v1.push(peer);
                    self.set_common_fields(&mut v1, p, warnings);
                }
                for peer in v1 {
                    let key = peer_key(peer.ip, peer.port);
                    if global_pass {
                        global.entry(key).or_insert(peer);
                    } else if local_nodes.contains(&self.me) && !global.contains_key(&key) {
                        node.entry(key).or_insert(peer);
                    }
                }
            }
        }
        // Reverse peerings: the nodes a BGPPeer points at peer back with the nodes it is for.
        for p in peers {
            if p.spec.reverse_peering.as_deref() == Some("Manual")
                || !p.spec.local_workload_selector.is_empty()
            {
                continue;
            }
            let (local_nodes, v4, v6) = if !p.spec.peer_selector.is_empty() {
                (
                    self.nodes_matching(&p.spec.peer_selector, warnings),
                    true,
                    true,
                )
            } else {
                let (ip, port) = parse_ip_port(&p.spec.peer_ip);
                let as_num = p.spec.as_number.map(|a| a.0).unwrap_or(0);
                let v6 = ip.contains(':');
                (self.nodes_with_ip_port_and_as(&ip, as_num, port), !v6, v6)
            };
            if !local_nodes.contains(&self.me) {
                continue;
            }
            let peer_nodes = if !p.spec.node_selector.is_empty() {
                self.nodes_matching(&p.spec.node_selector, warnings)
            } else if !p.spec.node.is_empty() {
                vec![p.spec.node.clone()]
            } else {
                self.hosts.keys().cloned().collect()
            };
            let mut v1 = Vec::new();
            for n in &peer_nodes {
                v1.extend(self.node_as_peers(n, v4, v6, p));
            }
            self.set_common_fields(&mut v1, p, warnings);
            for peer in v1 {
                let key = peer_key(peer.ip, peer.port);
                if !global.contains_key(&key) {
                    node.entry(key).or_insert(peer);
                }
            }
        }
        self.global_peers = global;
        self.node_peers = node;
    }

    /// Whether the rendered node has an IPv4 address.
    pub(crate) fn has_ipv4(&self) -> bool {
        !self.host().ip4.is_empty()
    }

    fn host(&self) -> &Host {
        &self.hosts[&self.me]
    }

    /// A per-node setting if the node's BGPConfiguration sets it, else the global one.
    fn node_or_global<T>(&self, f: impl Fn(&BgpConfiguration) -> Option<T>) -> Option<T> {
        self.node_cfg
            .and_then(&f)
            .or_else(|| self.global.and_then(&f))
    }

    /// The configuration the templates print for one family (confd's `GetBirdBGPConfig`).
    pub(crate) fn bird_config(
        &self,
        version: u8,
        router_id: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> BirdConfig {
        let me = self.host();
        let mut c = BirdConfig {
            version,
            node_ip: me.ip4.clone(),
            node_ip6: me.ip6.clone(),
            as_number: me.as_num.clone().unwrap_or_else(|| self.global_as.clone()),
            ..BirdConfig::default()
        };
        let level = self
            .node_or_global(|b| {
                let l = b.spec.log_severity_screen.to_lowercase();
                (!l.is_empty()).then(|| match l.as_str() {
                    "debug" | "info" => l,
                    _ => "none".to_string(),
                })
            })
            .unwrap_or_else(|| "info".to_string());
        match level.as_str() {
            "none" => {}
            "debug" => {
                c.debug_mode = "all".into();
                c.peer_debug_mode = "debug all;".into();
            }
            _ => {
                c.debug_mode = "{ states }".into();
                c.peer_debug_mode = "debug { states, routes, filters, events };".into();
            }
        }
        c.router_id = router_id.map(str::to_string).unwrap_or(me.ip4.clone());
        let bind_node_ip = self
            .global
            .and_then(|g| g.spec.bind_mode.as_deref())
            .is_some_and(|m| m == "NodeIP");
        if bind_node_ip {
            c.listen_address = if version == 6 {
                me.ip6.clone()
            } else {
                me.ip4.clone()
            };
        }
        c.listen_port = self
            .node_or_global(|b| b.spec.listen_port.filter(|p| *p != 0))
            .map(|p| p.to_string())
            .unwrap_or_default();
        let mut patterns: Vec<String> = self
            .global
            .map(|g| {
                g.spec
                    .ignored_interfaces
                    .iter()
                    .map(|i| format!("-\"{i}\""))
                    .collect()
            })
            .unwrap_or_default();
        patterns.extend(["-\"cali*\"", "-\"kube-ipvs*\"", "\"*\""].map(String::from));
        c.direct_interfaces = patterns.join(", ");
        c.normal_route_priority = self
            .global
            .and_then(|g| {
                if version == 4 {
                    g.spec.ipv4_normal_route_priority
                } else {
                    g.spec.ipv6_normal_route_priority
                }
            })
            .unwrap_or(DEFAULT_ROUTE_PRIORITY);
        let prio = c.normal_route_priority;
        c.set_metric = vec![
            "  if (defined(source) && (source = RTS_BGP) && !defined(krt_metric)) then {".into(),
            format!("      krt_metric = {prio};"),
            "      if (defined(bgp_local_pref)) then {".into(),
            format!("          krt_metric = {BIRD_INT_MAX} - bgp_local_pref;"),
            "      }".into(),
            format!("      if (krt_metric < {prio}) then {{"),
            format!("          preference = {OVERRIDE_PREFERENCE};"),
            "      }".into(),
            "  }".into(),
        ];
        if let Some(g) = self.global {
            c.external_ips = g
                .spec
                .service_external_ips
                .iter()
                .filter_map(|b| b.cidr.map(|n| n.to_string()))
                .collect();
            c.load_balancer_ips = g
                .spec
                .service_load_balancer_ips
                .iter()
                .filter_map(|b| b.cidr.map(|n| n.to_string()))
                .collect();
        }
        c.peers = self.peers(&c, version, warnings);
        c.peers.sort_by(|a, b| a.name.cmp(&b.name));
        c.communities = self.communities(version);
        self.pools(&mut c, version, warnings);
        self.wireguard(&mut c, version);
        c.blocks = self
            .blocks
            .iter()
            .filter(|b| b.0 == version)
            .map(|b| (b.2.clone(), b.3.clone()))
            .collect();
        let reach = |m: &BTreeMap<String, V1Peer>| -> Vec<(String, String)> {
            m.iter()
                .filter(|(k, p)| {
                    k.starts_with(&format!("peer_v{version}/")) && !p.reachable_by.is_empty()
                })
                .map(|(_, p)| (p.ip.to_string(), p.reachable_by.clone()))
                .collect()
        };
        c.reachable_global = reach(&self.global_peers);
        c.reachable_node = reach(&self.node_peers);
        c.is_route_reflector = !me.rr_cluster_id.is_empty();
        c.filter_funcs = crate::filter::functions(&self.filters, version);
        (c.static_routes, c.reject_cidrs) = self.service_routes(version);
        c
    }

    /// The service ranges of the default BGPConfiguration that every node advertises (confd's
    /// global routes): all cluster IP ranges, external IP and (with aggregation, the default)
    /// LoadBalancer IP ranges that are not single addresses. A node labelled
    /// `node.kubernetes.io/exclude-from-external-load-balancers=true` advertises none, but
    /// still keeps them out of its kernel. Per-Service /32 routes need Services and
    /// EndpointSlices and are not rendered.
    fn service_routes(&self, version: u8) -> (Vec<String>, Vec<String>) {
        let Some(g) = self.global else {
            return (Vec::new(), Vec::new());
        };
        let cidrs = |list: &[gingham_model::bgp::CidrBlock], ranges_only: bool| -> Vec<String> {
            list.iter()
                .filter_map(|b| b.cidr)
                .filter(|n| !ranges_only || n.prefix_len() != n.max_prefix_len())
                .map(|n| n.to_string())
                .collect()
        };
        let mut all = cidrs(&g.spec.service_cluster_ips, false);
        all.extend(cidrs(&g.spec.service_external_ips, true));
        if g.spec.service_load_balancer_aggregation.as_deref() != Some("Disabled") {
            all.extend(cidrs(&g.spec.service_load_balancer_ips, true));
        }
        // Keyed as confd keys them: the CIDR with `-` for `/`, listed in key order.
        let keys: BTreeSet<String> = all
            .into_iter()
            .filter(|c| c.contains(':') == (version == 6))
            .map(|c| c.replacen('/', "-", 1))
            .collect();
        let routes: Vec<String> = keys.iter().map(|k| k.replacen('-', "/", 1)).collect();
        let excluded = self
            .host()
            .labels
            .get("node.kubernetes.io/exclude-from-external-load-balancers")
            .is_some_and(|v| v == "true");
        if excluded {
            (Vec::new(), routes)
        } else {
            (routes.clone(), routes)
        }
    }

    fn peers(&self, c: &BirdConfig, version: u8, warnings: &mut Vec<String>) -> Vec<BirdPeer> {
        let me = self.host();
        let my_ip = if version == 4 { &me.ip4 } else { &me.ip6 };
        let cluster_id = &me.rr_cluster_id;
        let mut out = Vec::new();
        // The full mesh, unless this node is a route reflector.
        if cluster_id.is_empty() && self.mesh_enabled {
            let password = secret_value(
                self.secrets,
                self.global.and_then(|g| g.spec.node_mesh_password.as_ref()),
            )
            .unwrap_or_default();
            let restart = self
                .global
                .and_then(|g| g.spec.node_mesh_max_restart_time.as_deref())
                .map(|d| rounded_seconds(d, "BGPConfiguration nodeMeshMaxRestartTime", warnings))
                .unwrap_or_default();
            for (name, h) in &self.hosts {
                let ip = if version == 4 { &h.ip4 } else { &h.ip6 };
                if ip.is_empty() || ip == my_ip || !h.rr_cluster_id.is_empty() {
                    continue;
                }
                let as_number = h.as_num.clone().unwrap_or_else(|| c.as_number.clone());
                let port = self
                    .node_listen_ports
                    .get(name)
                    .map(|p| p.to_string())
                    .or_else(|| {
                        (self.global_listen_port != 0).then(|| self.global_listen_port.to_string())
                    })
                    .unwrap_or_default();
                let same_as = as_number == c.as_number;
                out.push(BirdPeer {
                    name: format!("Mesh_{}", ip.replace(['.', ':'], "_")),
                    ip: ip.clone(),
                    port,
                    import_filter: import_filter(&[], c.normal_route_priority),
                    export_filter: export_filter(&[], same_as, c.normal_route_priority),
                    as_number,
                    kind: "mesh",
                    source_addr: my_ip.clone(),
                    ttl_security: "off".into(),
                    password: password.clone(),
                    graceful_restart: restart.clone(),
                    passive: ip.as_str() > my_ip.as_str(),
                    ..BirdPeer::default()
                });
            }
        }
        for (map, prefix) in [(&self.global_peers, "Global"), (&self.node_peers, "Node")] {
            for (key, p) in map {
                if !key.starts_with(&format!("peer_v{version}/")) {
                    continue;
                }
                let prefix = if p.local { "Local_Workload" } else { prefix };
                let calls = |import: bool, same_as: bool| -> Vec<String> {
                    p.filters
                        .iter()
                        .filter_map(|name| {
                            let f = self.filters.iter().find(|f| f.metadata.name == *name);
                            if f.is_none() {
                                warnings.push(format!(
                                    "BGP peering with {}: BGPFilter {name:?} does not exist; the session is rendered without it",
                                    p.ip
                                ));
                            }
                            crate::filter::call(f?, import, version, same_as)
                        })
                        .collect()
                };
                if let Some(bp) = build_peer(p, prefix, c, my_ip, cluster_id, calls) {
                    out.push(bp);
                }
            }
        }
        out
    }

    /// Community statements: the node's BGPConfiguration's prefix advertisements if it has
    /// any, else the global ones.
    fn communities(&self, version: u8) -> Vec<(String, Vec<String>)> {
        let has = |b: &&BgpConfiguration| !b.spec.prefix_advertisements.is_empty();
        let Some(cfg) = self.node_cfg.filter(has).or(self.global.filter(has)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for adv in &cfg.spec.prefix_advertisements {
            let Some(cidr) = adv.cidr else { continue };
            let cidr = cidr.to_string();
            if cidr.contains(':') != (version == 6) {
                continue;
            }
            let adds: Vec<String> = community_values(adv, &cfg.spec.communities)
                .iter()
                .filter_map(|v| {
                    let parts: Vec<&str> = v.split(':').collect();
                    match parts.as_slice() {
                        [a, b] => Some(format!("bgp_community.add(({a}, {b}));")),
                        [a, b, c] => Some(format!("bgp_large_community.add(({a}, {b}, {c}));")),
                        _ => None,
                    }
                })
                .collect();
            if !adds.is_empty() {
                out.push((cidr, adds));
            }
        }
        out
    }

    fn pools(&self, c: &mut BirdConfig, version: u8, warnings: &mut Vec<String>) {
        let program_cluster_routes = self
            .global
            .and_then(|g| g.spec.program_cluster_routes.as_deref());
        let bird_ipip = matches!(program_cluster_routes, Some("Enabled" | "EnabledIPIPOnly"));
        let mut patterns = vec!["*.cali", "*.calico"];
        if !bird_ipip {
            patterns.push("tunl0");
        }
        let conds: Vec<String> = patterns
            .iter()
            .map(|p| format!("(ifname ~ \"{p}\")"))
            .collect();
        c.ibgp_tunnel_filter = vec![
            "if (defined(ifname)) then {".into(),
            format!("  if ({}) then {{", conds.join(" || ")),
            "    reject;".into(),
            "  }".into(),
            "}".into(),
        ];
        let me = self.host();
        let local_subnet = if version == 4 { &me.net4 } else { &me.net6 };
        for pool in &self.pools {
            let Some(cidr) = pool.spec.cidr else { continue };
            if cidr.addr().is_ipv4() != (version == 4) {
                continue;
            }
            let cidr = cidr.to_string();
            let vxlan = pool.spec.vxlan() != VxlanMode::Never;
            let ipip = pool.spec.ipip() != IpipMode::Never;
            let bird_programs = crate::bird_programs_pool(pool, program_cluster_routes);
            // Export to peers.
            if pool.spec.disable_bgp_export {
                c.export_disabled_pools.push(statement(
                    &cidr,
                    "",
                    "reject",
                    "BGP export is disabled.",
                ));
            } else {
                c.export_enabled_pools
                    .push(statement(&cidr, "", "accept", ""));
            }
            // Kernel programming (IPv4 only with a known local subnet; IPv6 rejects only).
            if version == 4 && local_subnet.is_none() {
                continue;
            }
            let (extra, action, comment) = if vxlan {
                (
                    String::new(),
                    "reject",
                    "VXLAN routes are handled by Felix.",
                )
            } else if bird_programs {
                if version == 4 && ipip {
                    warnings.push(format!(
                        "IPPool {}: BGPConfiguration programClusterRoutes makes BIRD program its IPIP routes with krt_tunnel, which only Calico's BIRD fork accepts (stock BIRD rejects the configuration); use EnabledNoEncapOnly (the default) and let the agent program IPIP routes",
                        pool.metadata.name
                    ));
                }
                let extra = if version == 4 {
                    match pool.spec.ipip() {
                        IpipMode::Always => "krt_tunnel=\"tunl0\";".to_string(),
                        IpipMode::CrossSubnet => format!(
                            "if (defined(bgp_next_hop)&&(bgp_next_hop ~ {})) then krt_tunnel=\"\"; else krt_tunnel=\"tunl0\";",
                            local_subnet.as_deref().unwrap_or("")
                        ),
                        IpipMode::Never => String::new(),
                    }
                } else {
                    String::new()
                };
                (extra, "accept", "")
            } else {
                (
                    String::new(),
                    "reject",
                    "Cluster routes are handled by Felix.",
                )
            };
            if version == 6 && action != "reject" {
                continue;
            }
            c.kernel_pools
                .push(statement(&cidr, &extra, action, comment));
        }
        c.kernel_pools.sort();
        c.export_disabled_pools.sort();
        c.export_enabled_pools.sort();
    }

    fn wireguard(&self, c: &mut BirdConfig, version: u8) {
        let wg = |h: &Host| {
            if version == 4 {
                h.wg4.clone()
            } else {
                h.wg6.clone()
            }
        };
        if wg(self.host()).is_empty() {
            return;
        }
        for (name, h) in &self.hosts {
            let ip = if version == 4 { &h.ip4 } else { &h.ip6 };
            if *name == self.me || ip.is_empty() || wg(h).is_empty() {
                continue;
            }
            c.wireguard_kernel.push(format!(
                "  if (defined(bgp_next_hop) && bgp_next_hop = {ip}) then {{ reject; }} # WireGuard routes handled by Felix."
            ));
        }
        c.wireguard_kernel.sort();
    }
}

/// The community values of a prefix advertisement: literal values and the values of named
/// communities, deduplicated and sorted as strings.
fn community_values(adv: &PrefixAdvertisement, defined: &[Community]) -> Vec<String> {
    let mut set = BTreeSet::new();
    for c in &adv.communities {
        if is_community_value(c) {
            set.insert(c.clone());
        } else if let Some(d) = defined.iter().find(|d| d.name == *c) {
            set.insert(d.value.clone());
        }
    }
    set.into_iter().collect()
}

fn is_community_value(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    (parts.len() == 2 || parts.len() == 3)
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn statement(cidr: &str, extra: &str, action: &str, comment: &str) -> String {
    let mut s = if extra.is_empty() {
        format!("  if (net ~ {cidr}) then {{ {action}; }}")
    } else {
        format!("  if (net ~ {cidr}) then {{ {extra} {action}; }}")
    };
    if !comment.is_empty() {
        s.push_str(&format!(" # {comment}"));
    }
    s
}

fn next_hop_mode(p: &BgpPeer) -> (bool, String) {
    match &p.spec.next_hop_mode {
        Some(m) => (false, m.clone()),
        None => (p.spec.keep_original_next_hop, String::new()),
    }
}

fn import_filter(calls: &[String], prio: i64) -> Vec<String> {
    let mut v = calls.to_vec();
    v.extend([
        format!(
            "if (defined(bgp_local_pref)&&(bgp_local_pref > {})) then",
            BIRD_INT_MAX - prio
        ),
        format!("  preference = {OVERRIDE_PREFERENCE};"),
        "accept;".into(),
    ]);
    v
}

fn export_filter(calls: &[String], same_as: bool, prio: i64) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {".into(),
        format!("  krt_metric = {BIRD_INT_MAX} - bgp_local_pref;"),
        "} else {".into(),
        format!("  if (!defined(krt_metric)) then {{ krt_metric = {prio}; }}"),
        format!("  bgp_local_pref = {BIRD_INT_MAX} - krt_metric;"),
        "}".into(),
    ];
    v.extend(calls.iter().cloned());
    v.push(format!("calico_export_to_bgp_peers({same_as});"));
    v.push("reject;".into());
    v
}

/// confd's `buildPeerFromData`.
fn build_peer(
    p: &V1Peer,
    prefix: &str,
    c: &BirdConfig,
    my_ip: &str,
    cluster_id: &str,
    mut filter_calls: impl FnMut(bool, bool) -> Vec<String>,
) -> Option<BirdPeer> {
    let ip = p.ip.to_string();
    if ip == my_ip {
        return None;
    }
    let mut name = format!("{prefix}_{}", ip.replace(['.', ':'], "_"));
    if p.port > 0 {
        name.push_str(&format!("_port_{}", p.port));
    }
    let mut b = BirdPeer {
        name,
        ip: ip.clone(),
        kind: match prefix {
            "Global" => "global",
            "Local_Workload" => "local_workload",
            _ => "node",
        },
        port: if p.port > 0 {
            p.port.to_string()
        } else {
            String::new()
        },
        as_number: p.as_num.to_string(),
        ..BirdPeer::default()
    };
    if p.local_as_num != 0 {
        b.local_as_number = p.local_as_num.to_string();
    }
    b.ttl_security = if p.ttl_security > 0 {
        p.ttl_security.to_string()
    } else {
        "off".into()
    };
    if p.source_addr == "UseNodeIP" {
        b.source_addr = my_ip.to_string();
    }
    let node_as = if b.local_as_number.is_empty() {
        c.as_number.clone()
    } else {
        b.local_as_number.clone()
    };
    let same_as = b.as_number == node_as;
    b.import_filter = import_filter(&filter_calls(true, same_as), c.normal_route_priority);
    b.export_filter = export_filter(
        &filter_calls(false, same_as),
        same_as,
        c.normal_route_priority,
    );
    if let Some(pw) = &p.password {
        b.password = pw.clone();
    }
    b.graceful_restart = p.restart_time.clone();
    b.keepalive_time = p.keepalive_time.clone();
    b.passive = p.passive_mode;
    if p.num_allow_local_as > 0 {
        b.num_allow_local_as = p.num_allow_local_as.to_string();
    }
    match p.next_hop_mode.as_str() {
        "Self" => b.next_hop_self = true,
        "Keep" => b.next_hop_keep = true,
        _ => {}
    }
    if p.keep_next_hop && !same_as {
        b.next_hop_keep = true;
    }
    if same_as
        && !cluster_id.is_empty()
        && (p.rr_cluster_id.is_empty() || p.rr_cluster_id != cluster_id)
    {
        b.route_reflector = true;
        b.rr_cluster_id = cluster_id.to_string();
    }
    if matches!(b.kind, "global" | "local_workload")
        && !b.passive
        && p.calico_node
        && ip.as_str() > my_ip
    {
        b.passive = true;
    }
    Some(b)
}
