//! The plumbing manager: the host side of local workloads (sysctls, /32 routes, permanent
//! neighbours) and the blackhole routes of the node's IPAM blocks, checked when local
//! workloads change and every `routeRefreshInterval` (FelixConfiguration, 90 s by default),
//! and repaired if changed.

use std::collections::BTreeMap;
use std::time::Instant;

use gingham_datastore::Datastore;
use gingham_model::{Kind, Resource};
use gingham_net::host::{HostState, HostWorkload};
use gingham_net::{NetError, Netlink, NetnsRef};

use crate::{Error, FelixConfigs, Health, Manager, Update};

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
    plumbing: P,
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
    pub fn new(node: &str, plumbing: P, health: Health) -> Self {
        PlumbingManager {
            health,
            node: node.to_owned(),
            plumbing,
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

    /// Puts back whatever of the local workloads' host side and the node's blackhole routes
    /// is missing or wrong.
    fn plumb(&mut self, store: &dyn Datastore, now: Instant) {
        self.due = false;
        self.last = now;
        let blocks = match gingham_ipam::Ipam::new(store).blocks_for_node(&self.node) {
            Ok(b) => Some(b.into_iter().collect()),
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
        self.workloads = resources
            .iter()
            .filter_map(|r| Some((r.key(), host_workload(r, &self.node)?)))
            .collect();
        self.due = true;
    }

    fn on_update(&mut self, update: &Update) {
        if self.felix.on_update(update) || update.kind != Kind::WorkloadEndpoint {
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
