//! The plumbing manager: the host side of local workloads (sysctls, /32 routes, permanent
//! neighbours) and the blackhole routes of the node's IPAM blocks, checked when local
//! workloads change and every `routeRefreshInterval` (FelixConfiguration, 90 s by default),
//! and repaired if changed.
//!
//! A block's blackhole has one owner, as in Calico v3.33: whoever programs its pool's cluster
//! routes. With the `bird` backend BIRD owns the blocks of the pools its kernel filter accepts
//! (`bird_aggr.cfg`'s static protocol, exported to the kernel; see
//! [`gingham_bgp::bird_programs_pool`]) and of no pool (the filter's final `accept`), and the
//! agent the others (felix's VXLAN, IPIP and no-encap route managers); with `vxlan` and
//! `none`, no BIRD runs and the agent owns them all.

use std::collections::BTreeMap;
use std::time::Instant;

use gingham_datastore::Datastore;
use gingham_model::{IpPool, Kind, Resource};
use gingham_net::host::{HostState, HostWorkload};
use gingham_net::{NetError, Netlink, NetnsRef};

use crate::{Error, FelixConfigs, Health, Manager, Networking, Update};

/// Where the host's plumbing is made true.
pub trait Plumbing {
    /// Makes the host side match `want`; returns what was repaired, one line each.
    fn repair(&mut self, want: &HostState) -> Result<Vec<String>, NetError>;
}

/// The kernel, through netlink, in the namespace the agent runs in.
pub struct NetlinkPlumbing(Netlink);

impl NetlinkPlumbing {
    pub fn open() -> Result<Self, Error> {
        Netlink::open(&NetnsRef::Current)
            .map(NetlinkPlumbing)
            .map_err(Error::Netlink)
    }
}

impl Plumbing for NetlinkPlumbing {
    fn repair(&mut self, want: &HostState) -> Result<Vec<String>, NetError> {
        gingham_net::host::repair(&self.0, want)
    }
}

/// Keeps every request (for tests); repairs nothing.
#[derive(Debug, Default)]
pub struct RecordingPlumbing {
    pub requests: Vec<HostState>,
}

impl Plumbing for RecordingPlumbing {
    fn repair(&mut self, want: &HostState) -> Result<Vec<String>, NetError> {
        self.requests.push(want.clone());
        Ok(Vec::new())
    }
}

pub struct PlumbingManager<P> {
    health: Health,
    node: String,
    networking: Networking,
    plumbing: P,
    /// The IP pools, by name (who owns a block's blackhole follows its pool).
    pools: BTreeMap<String, IpPool>,
    /// The default BGPConfiguration's `programClusterRoutes`.
    program_cluster_routes: Option<String>,
    felix: FelixConfigs,
    /// Local workloads' host side, by endpoint key.
    workloads: BTreeMap<String, HostWorkload>,
    /// Local workloads changed since the last check.
    due: bool,
    last: Instant,
}

/// The host side of a workload endpoint, if it runs on `node`.
fn host_workload(r: &Resource, node: &str) -> Option<HostWorkload> {
    let Resource::WorkloadEndpoint(w) = r else {
        return None;
    };
    (w.spec.node == node && !w.spec.interface_name.is_empty()).then(|| HostWorkload {
        ifname: w.spec.interface_name.clone(),
        addresses: w.spec.ip_networks.clone(),
        mac: w.spec.mac.parse().ok(),
    })
}

impl<P: Plumbing> PlumbingManager<P> {
    pub fn new(node: &str, networking: Networking, plumbing: P, health: Health) -> Self {
        PlumbingManager {
            health,
            node: node.to_owned(),
            networking,
            plumbing,
            pools: BTreeMap::new(),
            program_cluster_routes: None,
            felix: FelixConfigs::default(),
            workloads: BTreeMap::new(),
            due: true,
            last: Instant::now(),
        }
    }

    /// The dataplane (what was asked of it, for tests).
    pub fn plumbing(&self) -> &P {
        &self.plumbing
    }

    /// How often the host side is checked even when nothing changed.
    pub fn route_refresh(&self) -> std::time::Duration {
        self.felix.route_refresh()
    }

    /// Whether the agent, rather than BIRD, owns the blackhole of the node's block `block`.
    fn owns_blackhole(&self, block: &ipnet::IpNet) -> bool {
        if self.networking != Networking::Bird {
            return true;
        }
        self.pools
            .values()
            .find(|p| p.spec.cidr.is_some_and(|c| c.contains(block)))
            .is_some_and(|p| {
                !gingham_bgp::bird_programs_pool(p, self.program_cluster_routes.as_deref())
            })
    }

    /// Takes a pool or the default BGPConfiguration; returns whether it was one.
    fn take(&mut self, kind: Kind, name: &str, r: Option<&Resource>) -> bool {
        match (kind, r) {
            (Kind::IpPool, Some(Resource::IpPool(p))) => {
                self.pools.insert(name.to_owned(), p.clone());
            }
            (Kind::IpPool, _) => {
                self.pools.remove(name);
            }
            (Kind::BgpConfiguration, r) if name == "default" => {
                self.program_cluster_routes = match r {
                    Some(Resource::BgpConfiguration(c)) => c.spec.program_cluster_routes.clone(),
                    _ => None,
                };
            }
            _ => return false,
        }
        true
    }

    /// Puts back whatever of the local workloads' host side and the node's blackhole routes
    /// is missing or wrong.
    fn plumb(&mut self, store: &dyn Datastore, now: Instant) {
        self.due = false;
        self.last = now;
        let blocks = match gingham_ipam::Ipam::new(store).blocks_for_node(&self.node) {
            Ok(b) => Some(b.into_iter().filter(|b| self.owns_blackhole(b)).collect()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node's IPAM blocks; blackholes left as they are");
                None
            }
        };
        let want = HostState {
            workloads: self.workloads.values().cloned().collect(),
            blackholes: blocks,
        };
        match self.plumbing.repair(&want) {
            Ok(done) => {
                for d in &done {
                    tracing::warn!(repair = %d, "host plumbing repaired");
                }
                self.health
                    .metrics
                    .plumbing_repairs
                    .inc_by(done.len() as u64);
            }
            Err(e) => {
                self.health.metrics.errors.inc();
                tracing::error!(error = %e, "checking the host plumbing failed");
            }
        }
    }
}

impl<P: Plumbing> Manager for PlumbingManager<P> {
    fn resync(&mut self, resources: &[Resource]) {
        self.felix.resync(resources);
        self.pools.clear();
        self.program_cluster_routes = None;
        for r in resources {
            self.take(r.kind(), &r.meta().name, Some(r));
        }
        self.workloads = resources
            .iter()
            .filter_map(|r| Some((r.key(), host_workload(r, &self.node)?)))
            .collect();
        self.due = true;
    }

    fn on_update(&mut self, update: &Update) {
        if self.felix.on_update(update) {
            return;
        }
        if self.take(update.kind, &update.name, update.resource.as_ref()) {
            // Who owns the blackholes may have changed.
            self.due |= self.networking == Networking::Bird;
            return;
        }
        if update.kind != Kind::WorkloadEndpoint {
            return;
        }
        let local = update
            .resource
            .as_ref()
            .and_then(|r| host_workload(r, &self.node));
        self.due |= match local {
            Some(w) => self.workloads.insert(update.key.clone(), w.clone()) != Some(w),
            None => self.workloads.remove(&update.key).is_some(),
        };
    }

    fn on_ipam(&mut self, key: &str) {
        // An affinity of this node came or went: its blackholes change.
        let ours = key
            .strip_prefix(gingham_ipam::stored::HOST_PREFIX)
            .and_then(|rest| rest.strip_prefix(self.node.as_str()))
            .is_some_and(|rest| rest.starts_with('/'));
        self.due |= ours;
    }

    fn deadline(&self) -> Option<Instant> {
        let every = self.felix.route_refresh();
        (!every.is_zero()).then(|| self.last + every)
    }

    fn apply(&mut self, store: &dyn Datastore, now: Instant) -> Result<(), Error> {
        if self.due || self.deadline().is_some_and(|d| now >= d) {
            self.plumb(store, now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use gingham_datastore::mem::MemStore;
    use gingham_ipam::{AssignRequest, Ipam, PoolSpec};
    use ipnet::IpNet;

    use super::*;

    const NODE: &str = "node-a";

    fn load(text: &str) -> Resource {
        gingham_model::load::load_resources("test.yaml", text)
            .expect("valid test input")
            .remove(0)
    }

    fn put(store: &MemStore, r: &Resource) {
        store.put(&r.key(), &r.to_stored()).expect("written");
    }

    fn listing(store: &MemStore) -> Vec<Resource> {
        store
            .list(crate::PREFIX)
            .expect("listed")
            .kvs
            .iter()
            .filter_map(|kv| {
                let (kind, _, _) = Kind::parse_key(&kv.key)?;
                Resource::from_stored(kind, &kv.value).ok()
            })
            .collect()
    }

    /// Two pools, one block of each claimed by the node: `plain` (no encapsulation) and
    /// `tunnel` (VXLAN); the blocks.
    fn two_pools(store: &MemStore) -> (IpNet, IpNet) {
        put(
            store,
            &load(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: plain}\nspec: {cidr: 10.244.0.0/16}\n",
            ),
        );
        put(
            store,
            &load(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tunnel}\nspec: {cidr: 10.245.0.0/16, vxlanMode: Always}\n",
            ),
        );
        let claim = |pool: &str, cidr: &str| {
            let a = Ipam::new(store)
                .auto_assign(&AssignRequest {
                    handle_id: format!("h-{pool}"),
                    node: NODE.into(),
                    num_v4: 1,
                    pools_v4: vec![PoolSpec::new(pool, cidr.parse().expect("cidr"))],
                    ..Default::default()
                })
                .expect("assigned");
            IpNet::new(a.v4[0].ip, 26).expect("/26").trunc()
        };
        (
            claim("plain", "10.244.0.0/16"),
            claim("tunnel", "10.245.0.0/16"),
        )
    }

    fn blackholes(networking: Networking, store: &MemStore) -> BTreeSet<IpNet> {
        let mut m = PlumbingManager::new(
            NODE,
            networking,
            RecordingPlumbing::default(),
            Health::default(),
        );
        m.resync(&listing(store));
        m.apply(store, Instant::now()).expect("applied");
        m.plumbing()
            .requests
            .last()
            .and_then(|r| r.blackholes.clone())
            .expect("blackholes asked for")
    }

    /// One owner per block's blackhole: with BIRD, the agent leaves the blocks of pools BIRD
    /// programs (its kernel filter accepts them, `bird_aggr.cfg` blackholes them) and keeps the
    /// VXLAN pool's; `programClusterRoutes: Disabled` hands the unencapsulated pool to the
    /// agent too; without BIRD (`vxlan`, `none`) the agent owns every block.
    #[test]
    fn each_blackhole_has_one_owner_per_networking_mode() {
        let store = MemStore::new();
        let (plain, tunnel) = two_pools(&store);
        assert_eq!(
            blackholes(Networking::Bird, &store),
            BTreeSet::from([tunnel])
        );
        assert_eq!(
            blackholes(Networking::Vxlan, &store),
            BTreeSet::from([plain, tunnel])
        );
        assert_eq!(
            blackholes(Networking::None, &store),
            BTreeSet::from([plain, tunnel])
        );
        put(
            &store,
            &load(
                "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {programClusterRoutes: Disabled}\n",
            ),
        );
        assert_eq!(
            blackholes(Networking::Bird, &store),
            BTreeSet::from([plain, tunnel]),
            "BIRD's kernel filter rejects both pools: the agent owns both"
        );
    }

    /// A pool or BGPConfiguration change moves ownership at once (BIRD mode).
    #[test]
    fn a_pool_changing_encapsulation_moves_its_blackhole() {
        let store = MemStore::new();
        let (plain, tunnel) = two_pools(&store);
        let mut m = PlumbingManager::new(
            NODE,
            Networking::Bird,
            RecordingPlumbing::default(),
            Health::default(),
        );
        m.resync(&listing(&store));
        m.apply(&store, Instant::now()).expect("applied");
        let r = load(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: plain}\nspec: {cidr: 10.244.0.0/16, vxlanMode: CrossSubnet}\n",
        );
        m.on_update(&Update {
            key: r.key(),
            kind: Kind::IpPool,
            namespace: None,
            name: "plain".into(),
            resource: Some(r),
        });
        m.apply(&store, Instant::now()).expect("applied");
        let requests = &m.plumbing().requests;
        assert_eq!(requests.len(), 2, "checked again when the pool changed");
        assert_eq!(
            requests[1].blackholes,
            Some(BTreeSet::from([plain, tunnel]))
        );
    }
}
