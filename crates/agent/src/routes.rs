//! The route manager: felix's VXLAN, IPIP and route managers, and calico-node's tunnel address
//! allocation, in one place.
//!
//! From the Nodes (addresses, tunnel addresses, VTEP MACs), the IPPools (encapsulation modes)
//! and the IPAM blocks (each block goes to the node it is affine to; an address allocated to a
//! workload on another node, a *borrowed* address, gets a /32 to that node), it computes the
//! node's [`ClusterRoutes`] and has a [`RouteTable`] make them true: on every relevant change,
//! and every `routeRefreshInterval` (routes, neighbours or FDB entries someone removed are put
//! back).
//!
//! Which pools it programs depends on the networking backend: `vxlan`, all of them (a VXLAN
//! pool through `vxlan.calico`, an IPIP pool through `tunl0`, CrossSubnet and unencapsulated
//! pools by a plain route when the node is on the same subnet); `bird`, the pools BIRD's kernel
//! filter leaves to felix ([`gingham_bgp::bird_programs_pool`], v3.33's split: encapsulated
//! pools, and unencapsulated ones too under BGPConfiguration `programClusterRoutes: Disabled`
//! or `EnabledIPIPOnly`); `none`, nothing (someone else routes pods).
//!
//! "Same subnet" is Calico's: the remote node's `ipv4Address` lies inside this node's
//! `ipv4Address` prefix. IPv6 pools work alike with `ipv6Address`, `ipv6VXLANTunnelAddr` and
//! `vxlan-v6.calico` (IPIP is IPv4 only).
//!
//! A kernel without the `ipip` module cannot make `tunl0`: then IPIP routes are left out and
//! the node is not ready ("tunnels"), while everything else is programmed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gingham_datastore::Datastore;
use gingham_ipam::BlockRoutes;
use gingham_model::{IpPool, IpipMode, Kind, Resource, VxlanMode};
use gingham_net::routes::{ClusterRoute, ClusterRoutes, Via};
use gingham_net::vxlan::{IpipDevice, Vtep, VxlanDevice, vtep_mac, vtep_mac_v6};
use gingham_net::{MacAddr, NetError, Netlink, NetnsRef};
use ipnet::IpNet;

use crate::{Error, FelixConfigs, Health, Manager, Networking, Update};

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;

/// The name the route manager's readiness problems go under.
pub const PROBLEM: &str = "tunnels";

/// What this kernel says when asked for an IPIP tunnel it cannot make.
pub const NO_IPIP: &str = "this kernel cannot create IPIP tunnels (no ipip module); use vxlanMode";

/// Where the node's routes to other nodes' pods are made true.
pub trait RouteTable {
    /// Whether the kernel can make IPIP tunnels: `Err` says why not. Asked only while an
    /// IPIP pool exists.
    fn ipip_support(&mut self) -> Result<(), String>;
    /// Makes the tunnels and routes match `want`; returns what was changed, one line each.
    fn sync(&mut self, want: &ClusterRoutes) -> Result<Vec<String>, NetError>;
    /// The smallest MTU of the interfaces that are up and whose name matches `pattern`
    /// (felix's host MTU); `None` when none matches.
    fn host_mtu(&mut self, pattern: &regex::Regex) -> Result<Option<u32>, NetError>;
}

impl<T: RouteTable + ?Sized> RouteTable for Box<T> {
    fn ipip_support(&mut self) -> Result<(), String> {
        (**self).ipip_support()
    }
    fn sync(&mut self, want: &ClusterRoutes) -> Result<Vec<String>, NetError> {
        (**self).sync(want)
    }
    fn host_mtu(&mut self, pattern: &regex::Regex) -> Result<Option<u32>, NetError> {
        (**self).host_mtu(pattern)
    }
}

/// The kernel, through netlink, in the namespace the agent runs in.
pub struct NetlinkRoutes {
    nl: Netlink,
    /// The destinations the last pass wanted (what may be ours once its pool is gone).
    earlier: BTreeSet<IpNet>,
    /// Learnt once: a kernel does not grow modules while the agent runs.
    ipip: Option<Result<(), String>>,
}

impl NetlinkRoutes {
    pub fn open() -> Result<Self, Error> {
        Ok(NetlinkRoutes {
            nl: Netlink::open(&NetnsRef::Current).map_err(Error::Netlink)?,
            earlier: BTreeSet::new(),
            ipip: None,
        })
    }
}

impl RouteTable for NetlinkRoutes {
    fn ipip_support(&mut self) -> Result<(), String> {
        if let Some(known) = &self.ipip {
            return known.clone();
        }
        match gingham_net::routes::ipip_support(&self.nl) {
            Ok(answer) => {
                if let Err(why) = &answer {
                    tracing::error!(error = %why, "{NO_IPIP}");
                }
                self.ipip = Some(answer.clone());
                answer
            }
            // Could not even ask: say so, and ask again next time.
            Err(e) => Err(format!("cannot tell whether IPIP tunnels work: {e}")),
        }
    }

    fn sync(&mut self, want: &ClusterRoutes) -> Result<Vec<String>, NetError> {
        gingham_net::routes::sync(&self.nl, want, &mut self.earlier)
    }

    fn host_mtu(&mut self, pattern: &regex::Regex) -> Result<Option<u32>, NetError> {
        gingham_net::routes::host_mtu(&self.nl, |name| pattern.is_match(name))
    }
}

/// Keeps every request (for tests); changes nothing. Clones share the record.
#[derive(Clone, Debug)]
pub struct RecordingRoutes {
    pub requests: Arc<Mutex<Vec<ClusterRoutes>>>,
    /// What [`RouteTable::ipip_support`] answers.
    pub ipip: bool,
    /// What [`RouteTable::host_mtu`] answers.
    pub host_mtu: Option<u32>,
}

impl Default for RecordingRoutes {
    fn default() -> Self {
        RecordingRoutes {
            requests: Arc::default(),
            ipip: true,
            host_mtu: Some(1500),
        }
    }
}

impl RecordingRoutes {
    /// The last state asked for.
    pub fn last(&self) -> Option<ClusterRoutes> {
        self.requests.lock().expect("not poisoned").last().cloned()
    }
}

impl RouteTable for RecordingRoutes {
    fn ipip_support(&mut self) -> Result<(), String> {
        if self.ipip {
            Ok(())
        } else {
            Err("create ipip device tunl0: Operation not supported".into())
        }
    }

    fn sync(&mut self, want: &ClusterRoutes) -> Result<Vec<String>, NetError> {
        self.requests
            .lock()
            .expect("not poisoned")
            .push(want.clone());
        Ok(Vec::new())
    }

    fn host_mtu(&mut self, _pattern: &regex::Regex) -> Result<Option<u32>, NetError> {
        Ok(self.host_mtu)
    }
}

/// A node as routes see it, in one IP family.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Side {
    /// `spec.bgp.ipv4Address` (`ipv6Address`): the node's address and its subnet.
    addr: Option<(IpAddr, IpNet)>,
    /// `spec.ipv4VXLANTunnelAddr` (`ipv6VXLANTunnelAddr`).
    vxlan: Option<IpAddr>,
    /// `spec.vxlanTunnelMACAddr` (`…V6`), else Calico's derived MAC.
    mac: MacAddr,
}

/// A node as routes see it: IPv4 (`[0]`) and IPv6 (`[1]`), and its IPIP address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeInfo {
    side: [Side; 2],
    ipip: Option<Ipv4Addr>,
}

impl NodeInfo {
    fn of(n: &gingham_model::Node) -> NodeInfo {
        let bgp = n.spec.bgp.as_ref();
        let addr = |a: Option<IpNet>, v6: bool| {
            a.filter(|a| a.addr().is_ipv6() == v6)
                .map(|a| (a.addr(), a.trunc()))
        };
        let side = |v6: bool| Side {
            addr: addr(
                bgp.and_then(|b| if v6 { b.ipv6_address } else { b.ipv4_address }),
                v6,
            ),
            vxlan: if v6 {
                &n.spec.ipv6_vxlan_tunnel_addr
            } else {
                &n.spec.ipv4_vxlan_tunnel_addr
            }
            .parse::<IpAddr>()
            .ok()
            .filter(|a| a.is_ipv6() == v6),
            mac: if v6 {
                &n.spec.vxlan_tunnel_mac_addr_v6
            } else {
                &n.spec.vxlan_tunnel_mac_addr
            }
            .parse()
            .unwrap_or_else(|_| {
                if v6 {
                    vtep_mac_v6(&n.metadata.name)
                } else {
                    vtep_mac(&n.metadata.name)
                }
            }),
        };
        NodeInfo {
            side: [side(false), side(true)],
            ipip: bgp.and_then(|b| b.ipv4_ipip_tunnel_addr.parse().ok()),
        }
    }
}

/// `node`'s underlay address in one family (`spec.bgp.ipv4Address`, `ipv6Address`), and
/// whether it has a VTEP in that family (felix's VTEP parent address).
pub(crate) fn underlay(node: &gingham_model::Node, v6: bool) -> Option<(IpAddr, bool)> {
    let side = &NodeInfo::of(node).side[usize::from(v6)];
    side.addr.map(|(a, _)| (a, side.vxlan.is_some()))
}

/// How a pool's routes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encap {
    Vxlan { cross_subnet: bool },
    Ipip { cross_subnet: bool },
    None,
}

pub struct RouteManager<R> {
    health: Health,
    node: String,
    networking: Networking,
    table: R,
    felix: FelixConfigs,
    nodes: BTreeMap<String, gingham_model::Node>,
    pools: BTreeMap<String, IpPool>,
    reservations: BTreeMap<String, Vec<IpNet>>,
    /// The default BGPConfiguration's `programClusterRoutes` (with BIRD: which pools BIRD
    /// programs, [`gingham_bgp::bird_programs_pool`]).
    program_cluster_routes: Option<String>,
    /// The blocks as last read (`None`: not read yet, or unreadable).
    blocks: Option<Vec<BlockRoutes>>,
    /// The node's tunnel addresses need checking (pools or the node changed).
    allocate: bool,
    /// The blocks need reading.
    ipam: bool,
    /// The routes need recomputing.
    due: bool,
    last: Instant,
    /// Where the pod MTU is written for the CNI plugin (`None`: nowhere).
    mtu_file: Option<PathBuf>,
    /// The host's MTU as last detected.
    host_mtu: u32,
}

impl<R: RouteTable> RouteManager<R> {
    pub fn new(node: &str, networking: Networking, table: R, health: Health) -> Self {
        RouteManager {
            health,
            node: node.to_owned(),
            networking,
            table,
            felix: FelixConfigs::default(),
            nodes: BTreeMap::new(),
            pools: BTreeMap::new(),
            reservations: BTreeMap::new(),
            program_cluster_routes: None,
            blocks: None,
            allocate: true,
            ipam: true,
            due: true,
            last: Instant::now(),
            mtu_file: None,
            host_mtu: crate::mtu::UNDETECTED_HOST_MTU,
        }
    }

    /// Writes the pod MTU to `path` for the CNI plugin ([`crate::mtu`]), on every pass that
    /// finds it saying something else (the agent's binary: [`crate::mtu::file_in`] its run
    /// directory).
    pub fn set_mtu_file(&mut self, path: PathBuf) {
        self.mtu_file = Some(path);
        self.due = true;
    }

    /// The route table (what was asked of it, for tests).
    pub fn table(&self) -> &R {
        &self.table
    }

    fn take(&mut self, r: &Resource) {
        match r {
            Resource::Node(n) => {
                self.nodes.insert(n.metadata.name.clone(), n.clone());
            }
            Resource::IpPool(p) => {
                self.pools.insert(p.metadata.name.clone(), p.clone());
            }
            Resource::IpReservation(x) => {
                self.reservations
                    .insert(x.metadata.name.clone(), x.spec.reserved_cidrs.clone());
            }
            Resource::BgpConfiguration(c) if c.metadata.name == "default" => {
                self.program_cluster_routes = c.spec.program_cluster_routes.clone();
            }
            _ => {}
        }
    }

    fn encap(pool: &IpPool) -> Encap {
        match (pool.spec.vxlan(), pool.spec.ipip()) {
            (VxlanMode::Always, _) => Encap::Vxlan {
                cross_subnet: false,
            },
            (VxlanMode::CrossSubnet, _) => Encap::Vxlan { cross_subnet: true },
            (VxlanMode::Never, IpipMode::Always) => Encap::Ipip {
                cross_subnet: false,
            },
            (VxlanMode::Never, IpipMode::CrossSubnet) => Encap::Ipip { cross_subnet: true },
            (VxlanMode::Never, IpipMode::Never) => Encap::None,
        }
    }

    /// The global FelixConfiguration's settings.
    fn felix_spec(&self) -> Option<&gingham_model::FelixConfigurationSpec> {
        self.felix.resources().iter().find_map(|r| match r {
            Resource::FelixConfiguration(f) if f.metadata.name == "default" => Some(&f.spec),
            _ => None,
        })
    }

    /// The felix settings that shape the VXLAN device.
    fn felix_setting(
        &self,
        pick: impl Fn(&gingham_model::FelixConfigurationSpec) -> Option<i64>,
    ) -> Option<i64> {
        self.felix_spec().and_then(pick)
    }

    /// Felix's MTU of each tunnel, from the host's MTU as last detected.
    fn tunnel_mtus(&self) -> crate::mtu::TunnelMtus {
        crate::mtu::TunnelMtus::of(self.host_mtu, self.felix_spec())
    }

    /// Detects the host's MTU (felix's `findHostMTU`) and writes the pod MTU to the MTU file
    /// if it says something else.
    fn sync_mtu(&mut self) {
        let pattern = self
            .felix_spec()
            .and_then(|s| s.mtu_iface_pattern.as_deref())
            .filter(|p| !p.is_empty())
            .unwrap_or(crate::mtu::DEFAULT_IFACE_PATTERN)
            .to_owned();
        let re = match regex::Regex::new(&pattern) {
            Ok(re) => re,
            Err(e) => {
                tracing::error!(%pattern, error = %e, "FelixConfiguration mtuIfacePattern is not a regular expression; using felix's default");
                regex::Regex::new(crate::mtu::DEFAULT_IFACE_PATTERN).expect("a valid pattern")
            }
        };
        match self.table.host_mtu(&re) {
            Ok(Some(m)) => self.host_mtu = m,
            Ok(None) => {
                tracing::warn!(%pattern, "no interface that is up matches mtuIfacePattern; assuming a host MTU of {}", crate::mtu::UNDETECTED_HOST_MTU);
                self.host_mtu = crate::mtu::UNDETECTED_HOST_MTU;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list interfaces to detect the host MTU; keeping {}", self.host_mtu);
            }
        }
        let Some(path) = self.mtu_file.clone() else {
            return;
        };
        let encaps = crate::mtu::Encaps::of(self.pools.values(), self.felix_spec());
        let mtu = crate::mtu::pod_mtu(self.host_mtu, &self.tunnel_mtus(), &encaps);
        if matches!(crate::mtu::read(&path), Ok(Some(m)) if m == mtu) {
            return;
        }
        match crate::mtu::write(&path, mtu) {
            Ok(()) => tracing::info!(mtu, file = %path.display(), "pod MTU written"),
            Err(e) => {
                self.health.metrics.errors.inc();
                self.due = true;
                tracing::error!(file = %path.display(), error = %e, "cannot write the pod MTU file");
            }
        }
    }

    /// What the node's tunnels and routes should be, and the IPIP problem if there is one.
    fn desired(&mut self) -> (ClusterRoutes, Option<String>) {
        let mut want = ClusterRoutes::default();
        if self.networking == Networking::None {
            return (want, None);
        }
        let infos: BTreeMap<&str, NodeInfo> = self
            .nodes
            .iter()
            .map(|(k, n)| (k.as_str(), NodeInfo::of(n)))
            .collect();
        let Some(me) = infos.get(self.node.as_str()).cloned() else {
            // Not known yet: no address, no subnet, no tunnel; nothing can be decided.
            return (want, None);
        };
        want.local = me.side[0].addr.map(|(ip, _)| ip);
        want.local_v6 = me.side[1].addr.map(|(ip, _)| ip);
        want.pools = self.pools.values().filter_map(|p| p.spec.cidr).collect();
        let pools: Vec<(IpNet, Encap, &str)> = self
            .pools
            .values()
            .filter_map(|p| Some((p.spec.cidr?, Self::encap(p), p.metadata.name.as_str())))
            .collect();
        // With BIRD, the pools whose routes BIRD programs are left to it.
        let bird_pools: Vec<IpNet> = if self.networking == Networking::Bird {
            self.pools
                .values()
                .filter(|p| {
                    gingham_bgp::bird_programs_pool(p, self.program_cluster_routes.as_deref())
                })
                .filter_map(|p| p.spec.cidr)
                .collect()
        } else {
            Vec::new()
        };

        // VXLAN, per family: wanted while a VXLAN pool of the family exists and the node has
        // what a VTEP needs.
        let vni = self
            .felix_setting(|s| s.vxlan_vni)
            .and_then(|v| u32::try_from(v).ok());
        let port = self
            .felix_setting(|s| s.vxlan_port)
            .and_then(|v| u16::try_from(v).ok());
        for v6 in [false, true] {
            let any = pools
                .iter()
                .any(|(c, e, _)| c.addr().is_ipv6() == v6 && matches!(e, Encap::Vxlan { .. }));
            let side = &me.side[usize::from(v6)];
            let (Some((local, _)), Some(addr), true) = (side.addr, side.vxlan, any) else {
                continue;
            };
            let mut dev = match (local, addr) {
                (IpAddr::V4(l), IpAddr::V4(a)) => VxlanDevice::calico(l, a, side.mac),
                (IpAddr::V6(l), IpAddr::V6(a)) => VxlanDevice::calico_v6(l, a, side.mac),
                _ => continue,
            };
            dev.vni = vni.unwrap_or(dev.vni);
            dev.port = port.unwrap_or(dev.port);
            let mtus = self.tunnel_mtus();
            dev.mtu = Some(if v6 { mtus.vxlan_v6 } else { mtus.vxlan });
            want.vteps.extend(
                infos
                    .iter()
                    .filter(|(name, _)| **name != self.node)
                    .filter_map(|(_, i)| {
                        let s = &i.side[usize::from(v6)];
                        Some(Vtep {
                            tunnel_ip: s.vxlan?,
                            mac: s.mac,
                            host_ip: s.addr?.0,
                        })
                    }),
            );
            if v6 {
                want.vxlan_v6 = Some(dev);
            } else {
                want.vxlan = Some(dev);
            }
        }

        // IPIP: wanted while an IPIP pool exists, if the kernel can.
        let ipip_pools: Vec<&str> = pools
            .iter()
            .filter(|(c, e, _)| c.addr().is_ipv4() && matches!(e, Encap::Ipip { .. }))
            .map(|(_, _, n)| *n)
            .collect();
        let mut problem = None;
        if !ipip_pools.is_empty() {
            match self.table.ipip_support() {
                Ok(()) => {
                    if let Some(addr) = me.ipip {
                        want.ipip = Some(IpipDevice {
                            address: addr,
                            mtu: Some(self.tunnel_mtus().ipip),
                        });
                    }
                }
                Err(why) => {
                    problem = Some(format!(
                        "{NO_IPIP} (IPPool {} has ipipMode on; {why})",
                        ipip_pools.join(", ")
                    ));
                }
            }
        }

        // The routes.
        let route = |dst: IpNet,
                     node: &str,
                     tunnel_dst: bool,
                     encap: Encap|
         -> Option<ClusterRoute> {
            if node == self.node {
                return None;
            }
            let v6 = dst.addr().is_ipv6();
            let mine = &me.side[usize::from(v6)];
            let remote = infos.get(node)?;
            let theirs = &remote.side[usize::from(v6)];
            let same_subnet = matches!((mine.addr, theirs.addr), (Some((_, net)), Some((ip, _))) if net.contains(&ip));
            let underlay = || {
                Some(ClusterRoute {
                    dst,
                    via: Via::Underlay(theirs.addr?.0),
                })
            };
            match encap {
                Encap::Vxlan { cross_subnet } => {
                    if cross_subnet && same_subnet {
                        return underlay();
                    }
                    if v6 {
                        want.vxlan_v6.as_ref()?;
                    } else {
                        want.vxlan.as_ref()?;
                    }
                    let gw = theirs.vxlan?;
                    let via = if tunnel_dst && dst == IpNet::from(gw) {
                        Via::VxlanDevice
                    } else {
                        Via::Vxlan(gw)
                    };
                    Some(ClusterRoute { dst, via })
                }
                Encap::Ipip { cross_subnet } => {
                    if v6 {
                        return None;
                    }
                    if cross_subnet && same_subnet {
                        return underlay();
                    }
                    want.ipip.as_ref()?;
                    match theirs.addr? {
                        (IpAddr::V4(ip), _) => Some(ClusterRoute {
                            dst,
                            via: Via::Ipip(ip),
                        }),
                        _ => None,
                    }
                }
                // Felix's no-encap route manager: a plain route within the subnet only.
                Encap::None => {
                    if same_subnet {
                        underlay()
                    } else {
                        None
                    }
                }
            }
        };
        let mut routes = BTreeSet::new();
        for b in self.blocks.iter().flatten() {
            let Some((cidr, encap, _)) = pools.iter().find(|(c, _, _)| c.contains(&b.cidr)) else {
                continue;
            };
            if bird_pools.contains(cidr) {
                continue;
            }
            if let Some(node) = &b.node
                && let Some(r) = route(b.cidr, node, false, *encap)
            {
                routes.insert(r);
            }
            for (ip, node) in &b.borrowed {
                if let Some(r) = route(IpNet::from(*ip), node, true, *encap) {
                    routes.insert(r);
                }
            }
        }
        want.routes = routes;
        (want, problem)
    }

    fn program(&mut self, store: &dyn Datastore, now: Instant) {
        self.due = false;
        self.last = now;
        self.sync_mtu();
        if self.networking == Networking::None {
            return;
        }
        if std::mem::take(&mut self.allocate) {
            let pools: Vec<IpPool> = self.pools.values().cloned().collect();
            let reservations: Vec<IpNet> = self.reservations.values().flatten().copied().collect();
            match crate::tunnels::reconcile(store, &self.node, &pools, &reservations) {
                Ok(Some(node)) => {
                    // Use what was written at once; the watch brings it back too.
                    self.nodes.insert(self.node.clone(), node);
                }
                Ok(None) => {}
                Err(e) => {
                    // Tried again on the next pass (a write that lost a race, a datastore
                    // hiccup).
                    self.allocate = true;
                    self.due = true;
                    self.health.metrics.errors.inc();
                    tracing::error!(error = %e, "assigning the node's tunnel addresses failed; retrying");
                }
            }
        }
        if std::mem::take(&mut self.ipam) || self.blocks.is_none() {
            match gingham_ipam::Ipam::new(store).block_routes() {
                Ok(b) => self.blocks = Some(b),
                Err(e) => {
                    self.ipam = true;
                    self.due = true;
                    tracing::warn!(error = %e, "cannot read the IPAM blocks; routes left as they are");
                    return;
                }
            }
        }
        let (want, mut problem) = self.desired();
        match self.table.sync(&want) {
            Ok(done) => {
                for d in &done {
                    tracing::info!(change = %d, "routes to other nodes");
                }
            }
            Err(e) => {
                self.health.metrics.errors.inc();
                self.due = true;
                let failed = format!("programming the routes to other nodes failed: {e}");
                problem = Some(match problem {
                    Some(p) => format!("{p}; {failed}"),
                    None => failed,
                });
            }
        }
        self.health.state().set_problem(PROBLEM, problem);
    }
}

impl<R: RouteTable> Manager for RouteManager<R> {
    fn resync(&mut self, resources: &[Resource]) {
        self.felix.resync(resources);
        self.nodes.clear();
        self.pools.clear();
        self.reservations.clear();
        self.program_cluster_routes = None;
        for r in resources {
            self.take(r);
        }
        self.allocate = true;
        self.ipam = true;
        self.due = true;
    }

    fn on_update(&mut self, update: &Update) {
        if self.felix.on_update(update) {
            self.due = true;
            return;
        }
        match update.kind {
            Kind::Node | Kind::IpPool | Kind::IpReservation => {}
            Kind::BgpConfiguration if update.name == "default" => {
                self.program_cluster_routes = match &update.resource {
                    Some(Resource::BgpConfiguration(c)) => c.spec.program_cluster_routes.clone(),
                    _ => None,
                };
                self.due = true;
                return;
            }
            _ => return,
        }
        match &update.resource {
            Some(r) => self.take(r),
            None => {
                if update.kind == Kind::Node {
                    self.nodes.remove(&update.name);
                } else if update.kind == Kind::IpPool {
                    self.pools.remove(&update.name);
                } else if update.kind == Kind::IpReservation {
                    self.reservations.remove(&update.name);
                }
            }
        }
        // Pools, reservations and this node's own record decide its tunnel addresses.
        if update.kind != Kind::Node || update.name == self.node {
            self.allocate = true;
        }
        self.due = true;
    }

    fn on_ipam(&mut self, key: &str) {
        if key.starts_with(gingham_ipam::stored::BLOCK_PREFIX) {
            self.ipam = true;
            self.due = true;
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let every = self.felix.route_refresh();
        (self.networking != Networking::None && !every.is_zero()).then(|| self.last + every)
    }

    fn apply(&mut self, store: &dyn Datastore, now: Instant) -> Result<(), Error> {
        if self.due || self.deadline().is_some_and(|d| now >= d) {
            self.program(store, now);
        }
        Ok(())
    }
}
