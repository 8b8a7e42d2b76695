//! The node agent: felix's job on one node. It watches the datastore and keeps the node's
//! dataplane what the resources say it should be.
//!
//! The agent is driven by a closed set of [`Event`]s: a full listing ([`Event::Resync`]), one
//! watched change ([`Event::Update`]), the end of a batch of changes ([`Event::Flush`]), and
//! the passing of time ([`Event::Tick`]). Stored values are decoded in one place, whether they
//! come from a listing or from the watch, and every [`Manager`] is fed the same decoded
//! [`Update`]s; on a flush or a tick each makes its part of the dataplane match:
//!
//! - [`policy::PolicyManager`]: the incremental policy calculator, the renderer and the
//!   nftables programmer (the kernel through [`gingham_dataplane::Nft`], or
//!   [`gingham_dataplane::Recording`] in tests).
//! - [`plumbing::PlumbingManager`]: the host side of local workloads (sysctls, /32 routes,
//!   permanent neighbours) and the blackhole routes of the node's IPAM blocks (netlink through
//!   [`plumbing::NetlinkPlumbing`], or [`plumbing::RecordingPlumbing`] in tests).
//! - [`routes::RouteManager`]: felix's route, VXLAN and IPIP managers: routes to other nodes'
//!   blocks and borrowed addresses, the VXLAN device and its neighbours and FDB entries
//!   ([`routes::NetlinkRoutes`], or [`routes::RecordingRoutes`] in tests), and the node's tunnel
//!   addresses ([`tunnels`], calico-node's allocateip); it also detects the host's MTU and
//!   writes felix's pod MTU to the MTU file the CNI plugin reads ([`mtu`]).
//! - [`status::StatusManager`]: felix's endpoint status files, one per local workload
//!   endpoint, naming the BGPPeer whose `localWorkloadSelector` selects it (the BGP manager
//!   reads them for local workload peers).
//! - [`bgp::BgpManager`]: with the `bird` backend, confd's and runit's job: the BIRD
//!   configuration rendered, checked and loaded, `bird` and `bird6` kept running
//!   ([`bgp::BirdSupervisor`], or [`bgp::RecordingSupervisor`] in tests).
//!
//! [`Agent::start`] lists and programs once; [`Agent::step`] waits for one batch of changes (or
//! a timer) and handles it; [`Agent::run`] steps forever. A watch that is lost (compacted
//! history, datastore unavailable) or a programming error leads to a resync. `health` serves
//! /liveness, /readiness and /metrics; `gingham_agent_datastore_revision` is the revision the
//! dataplane reflects.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use gingham_dataplane::Backend;
use gingham_datastore::{Datastore, EventKind, Listing, Revision, Watch};
use gingham_model::{Kind, Resource};

pub mod bgp;
pub mod flows;
pub mod health;
pub mod links;
pub mod memory;
pub mod mtu;
pub mod plumbing;
pub mod policy;
pub mod routes;
pub mod status;
#[cfg(test)]
mod tests;
pub mod tunnels;

use bgp::{BgpManager, BirdSupervisor, Supervisor};
pub use health::Health;
use plumbing::{Plumbing, PlumbingManager};
use policy::PolicyManager;
use routes::{RouteManager, RouteTable};
use status::StatusManager;

/// Where the agent watches: every Calico resource ([`gingham_model::kind::KEY_ROOT`]) and the IPAM
/// keys ([`gingham_ipam::stored::IPAM_PREFIX`]: blocks, affinities, handles), which the route,
/// tunnel and BGP managers follow.
pub const PREFIX: &str = "/calico/";

/// How pod routes get between nodes (felix and confd read `CALICO_NETWORKING_BACKEND`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Networking {
    /// BIRD speaks BGP for unencapsulated pools; the agent programs encapsulated ones.
    #[default]
    Bird,
    /// No BGP: the agent programs VXLAN (and plain CrossSubnet) routes for every pool.
    Vxlan,
    /// Someone else routes pods (flannel, static routes): policy and local plumbing only.
    None,
}

impl Networking {
    /// The names `CALICO_NETWORKING_BACKEND` takes.
    pub const VALID: &'static str = "bird, vxlan, none";

    pub fn name(self) -> &'static str {
        match self {
            Networking::Bird => "bird",
            Networking::Vxlan => "vxlan",
            Networking::None => "none",
        }
    }
}

impl std::str::FromStr for Networking {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bird" => Ok(Networking::Bird),
            "vxlan" => Ok(Networking::Vxlan),
            "none" => Ok(Networking::None),
            other => Err(format!(
                "networking backend {other:?} is not one of {}",
                Networking::VALID
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("datastore: {0}")]
    Datastore(#[from] gingham_datastore::Error),
    #[error("installing the nftables table: {0}")]
    Program(#[from] gingham_dataplane::Error),
    #[error("opening netlink: {0}")]
    Netlink(#[source] gingham_net::NetError),
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot serve health on 127.0.0.1:{port} ({what}): {source}")]
    Health {
        port: u16,
        what: &'static str,
        source: std::io::Error,
    },
}

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node this agent programs (its endpoints are the local ones).
    pub node: String,
    /// Between consistency checks of the kernel's table (felix's refresh interval); `None`:
    /// never.
    pub refresh_interval: Option<Duration>,
    /// How pod routes get between nodes.
    pub networking: Networking,
    /// The node's run directory (Calico: `/var/run/calico`): BIRD's control sockets and the
    /// rendered BIRD configuration live here.
    pub run_dir: std::path::PathBuf,
}

impl Config {
    /// Where Calico keeps its run state on a node.
    pub const DEFAULT_RUN_DIR: &'static str = "/var/run/calico";
    /// The environment variable naming the run directory (the agent's `--run-dir`; `gingham
    /// node status` finds BIRD's sockets there).
    pub const RUN_DIR_ENV: &'static str = "GINGHAM_RUN_DIR";

    /// A node's configuration with the defaults (BIRD networking, Calico's run directory,
    /// felix's 90 s refresh).
    pub fn new(node: &str) -> Self {
        Config {
            node: node.to_owned(),
            refresh_interval: Some(Duration::from_secs(90)),
            networking: Networking::default(),
            run_dir: Self::DEFAULT_RUN_DIR.into(),
        }
    }
}

/// What drives the agent. Closed: every input of the agent is one of these.
#[derive(Debug)]
pub enum Event {
    /// Everything under [`PREFIX`], at a revision: start, or the watch was lost.
    Resync(Listing),
    /// One watched change, not yet decoded.
    Update {
        kind: EventKind,
        key: String,
        value: Vec<u8>,
        revision: Revision,
    },
    /// The end of a batch of updates: make the dataplane match; everything written up to
    /// `revision` is then in force.
    Flush { revision: Revision },
    /// Time passed: periodic work that is due (consistency checks, plumbing refresh).
    Tick(Instant),
}

/// Whether `key` is an IPAM key (a block, an affinity, a handle): managers that follow IPAM are
/// told of it ([`Manager::on_ipam`]) and read what they need through `gingham-ipam`.
pub fn is_ipam_key(key: &str) -> bool {
    key.starts_with(gingham_ipam::stored::IPAM_PREFIX)
}

/// One decoded change, as every manager sees it.
#[derive(Clone, Debug)]
pub struct Update {
    pub key: String,
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
    /// The resource now; `None`: deleted, or unreadable (whatever was there before is gone as
    /// far as the agent can tell).
    pub resource: Option<Resource>,
}

/// One part of the node's dataplane, kept true from the datastore's updates.
pub trait Manager {
    /// Forget everything and take the whole listing.
    fn resync(&mut self, resources: &[Resource]);
    /// One change (every manager sees every change).
    fn on_update(&mut self, update: &Update);
    /// An IPAM key changed (written or deleted); the value is read through `gingham-ipam` when
    /// the manager applies. Most managers do not care.
    fn on_ipam(&mut self, _key: &str) {}
    /// When periodic work is next due (`None`: no timer).
    fn deadline(&self) -> Option<Instant>;
    /// Makes the dataplane match, if anything changed or periodic work is due at `now`. An
    /// error asks for a resync.
    fn apply(&mut self, store: &dyn Datastore, now: Instant) -> Result<(), Error>;
}

/// The FelixConfiguration resources, kept from the updates (the managers read their settings
/// from them).
#[derive(Clone, Debug, Default)]
pub struct FelixConfigs(Vec<Resource>);

impl FelixConfigs {
    pub fn resync(&mut self, resources: &[Resource]) {
        self.0 = resources
            .iter()
            .filter(|r| r.kind() == Kind::FelixConfiguration)
            .cloned()
            .collect();
    }

    /// Takes an update; returns whether it was a FelixConfiguration.
    pub fn on_update(&mut self, update: &Update) -> bool {
        if update.kind != Kind::FelixConfiguration {
            return false;
        }
        self.0.retain(|r| r.meta().name != update.name);
        self.0.extend(update.resource.clone());
        true
    }

    pub fn resources(&self) -> &[Resource] {
        &self.0
    }

    /// The global routeRefreshInterval, 90 s by default; zero: never.
    pub fn route_refresh(&self) -> Duration {
        self.0
            .iter()
            .find_map(|r| match r {
                Resource::FelixConfiguration(f) if f.metadata.name == "default" => f
                    .spec
                    .route_refresh_interval
                    .as_deref()
                    .and_then(gingham_model::felix::parse_duration),
                _ => None,
            })
            .unwrap_or(Duration::from_secs(90))
    }
}

/// The agent of one node: the decode path, the managers, and the watch.
pub struct Agent<B: Backend, P: Plumbing, S: Supervisor = BirdSupervisor> {
    pub health: Health,
    /// Keys whose stored value cannot be read: skipped (logged once each) and reported on
    /// /readiness until fixed or deleted.
    unreadable: BTreeSet<String>,
    pub policy: PolicyManager<B>,
    pub plumbing: PlumbingManager<P>,
    pub bgp: BgpManager<S>,
    pub routes: RouteManager<Box<dyn RouteTable>>,
    pub status: StatusManager,
    /// The revision the dataplane reflects.
    revision: Revision,
    watch: Option<Box<dyn Watch>>,
}

fn decode(key: &str, value: &[u8]) -> Option<Resource> {
    let (kind, _, _) = Kind::parse_key(key)?;
    match Resource::from_stored(kind, value) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable resource skipped");
            None
        }
    }
}

impl<B: Backend, P: Plumbing> Agent<B, P> {
    /// An agent programming nftables through `nft`, the host through `plumbing`, the routes
    /// to other nodes through `routes`, and running BIRD in `config.run_dir` (with the `bird`
    /// backend).
    pub fn new(config: &Config, nft: B, plumbing: P, routes: Box<dyn RouteTable>) -> Self {
        Agent::with_supervisor(
            config,
            nft,
            plumbing,
            routes,
            BirdSupervisor::new(&config.run_dir),
        )
    }
}

impl<B: Backend, P: Plumbing, S: Supervisor> Agent<B, P, S> {
    /// [`Agent::new`] with BIRD's processes and files through `supervisor`.
    pub fn with_supervisor(
        config: &Config,
        nft: B,
        plumbing: P,
        routes: Box<dyn RouteTable>,
        supervisor: S,
    ) -> Self {
        let health = Health::default();
        Agent {
            policy: PolicyManager::new(config, nft, health.clone()),
            plumbing: PlumbingManager::new(
                &config.node,
                config.networking,
                plumbing,
                health.clone(),
            ),
            bgp: BgpManager::new(config, supervisor, health.clone()),
            routes: RouteManager::new(&config.node, config.networking, routes, health.clone()),
            status: StatusManager::new(&config.node, health.clone()),
            health,
            unreadable: BTreeSet::new(),
            revision: 0,
            watch: None,
        }
    }

    /// The managers, in the order they apply.
    fn managers(&mut self) -> [&mut dyn Manager; 5] {
        [
            &mut self.policy,
            &mut self.plumbing,
            &mut self.routes,
            // Before BGP, which reads the endpoint status files it writes.
            &mut self.status,
            &mut self.bgp,
        ]
    }

    /// Where felix's endpoint status files go (`<prefix>/endpoint-status/`): written by the
    /// status manager, read by the BGP manager for local workload peers.
    pub fn set_endpoint_status_prefix(&mut self, prefix: std::path::PathBuf) {
        self.status.set_prefix(prefix.clone());
        self.bgp.set_endpoint_status_prefix(prefix);
    }

    /// The datastore revision the dataplane reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Lists everything and programs it; returns the listing's revision.
    pub fn start(&mut self, store: &dyn Datastore) -> Result<Revision, Error> {
        self.resync(store)?;
        Ok(self.revision)
    }

    fn resync(&mut self, store: &dyn Datastore) -> Result<(), Error> {
        self.watch = None;
        let listing = store.list(PREFIX)?;
        self.handle(Event::Resync(listing), store)
    }

    /// Handles one event.
    pub fn handle(&mut self, event: Event, store: &dyn Datastore) -> Result<(), Error> {
        match event {
            Event::Resync(listing) => {
                self.health.metrics.resyncs.inc();
                self.unreadable.clear();
                self.health.state().unreadable.clear();
                // Resources are decoded here; IPAM keys are read by the managers that need them.
                let resources: Vec<Resource> = listing
                    .kvs
                    .iter()
                    .filter(|kv| Kind::parse_key(&kv.key).is_some())
                    .filter_map(|kv| self.read(&kv.key, &kv.value))
                    .collect();
                let revision = listing.revision;
                drop(listing);
                for m in self.managers() {
                    m.resync(&resources);
                }
                drop(resources);
                self.apply(store, Instant::now())?;
                self.set_revision(revision);
                // The listing, its decoded resources and the first programming are the agent's
                // largest transient allocations: give their pages back to the kernel.
                memory::release_free();
                Ok(())
            }
            Event::Update {
                kind,
                key,
                value,
                revision: _,
            } => {
                if is_ipam_key(&key) {
                    for m in self.managers() {
                        m.on_ipam(&key);
                    }
                } else if let Some(update) = self.decode_update(kind, key, &value) {
                    for m in self.managers() {
                        m.on_update(&update);
                    }
                }
                Ok(())
            }
            Event::Flush { revision } => {
                self.apply(store, Instant::now())?;
                self.set_revision(self.revision.max(revision));
                Ok(())
            }
            Event::Tick(now) => self.apply(store, now),
        }
    }

    fn apply(&mut self, store: &dyn Datastore, now: Instant) -> Result<(), Error> {
        for m in self.managers() {
            m.apply(store, now)?;
        }
        Ok(())
    }

    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
        self.health.metrics.datastore_revision.set(revision);
    }

    /// When the next periodic work of any manager is due.
    pub fn deadline(&mut self) -> Option<Instant> {
        self.managers().iter().filter_map(|m| m.deadline()).min()
    }

    /// Decodes a stored value, keeping track of the keys that cannot be read. The one decode
    /// path of the agent: resync and watch both come through here.
    fn read(&mut self, key: &str, value: &[u8]) -> Option<Resource> {
        let r = decode(key, value);
        let changed = if r.is_some() {
            self.unreadable.remove(key)
        } else {
            self.unreadable.insert(key.to_owned())
        };
        if changed {
            self.health.state().unreadable = self.unreadable.iter().cloned().collect();
        }
        r
    }

    fn decode_update(&mut self, kind: EventKind, key: String, value: &[u8]) -> Option<Update> {
        let (k, namespace, name) = Kind::parse_key(&key)?;
        let resource = match kind {
            EventKind::Put => self.read(&key, value),
            EventKind::Delete => {
                if self.unreadable.remove(&key) {
                    self.health.state().unreadable = self.unreadable.iter().cloned().collect();
                }
                None
            }
        };
        Some(Update {
            key,
            kind: k,
            namespace,
            name,
            resource,
        })
    }

    /// Waits up to `max_wait` (less when periodic work is due sooner) for changes and handles
    /// them: periodic work first, then one batch of updates and a flush. A lost watch or a
    /// programming error leads to a resync; an error of the resync itself is returned.
    pub fn step(&mut self, store: &dyn Datastore, max_wait: Duration) -> Result<(), Error> {
        if let Err(e) = self.handle(Event::Tick(Instant::now()), store) {
            tracing::error!(error = %e, "periodic work failed; retrying with a resync");
            self.resync(store)?;
        }
        let wait = self
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(max_wait)
            .clamp(
                Duration::from_millis(10),
                max_wait.max(Duration::from_millis(10)),
            );
        let watch = match self.watch.as_mut() {
            Some(w) => w,
            None => match store.watch(PREFIX, self.revision) {
                Ok(w) => self.watch.insert(w),
                Err(e) => return self.lost(store, e),
            },
        };
        let first = match watch.next(wait) {
            Ok(None) => return Ok(()),
            Ok(Some(e)) => e,
            Err(e) => return self.lost(store, e),
        };
        // Take whatever else arrives right away, then program once.
        let mut batch = vec![first];
        while let Ok(Some(e)) = watch.next(Duration::from_millis(10)) {
            batch.push(e);
        }
        let mut seen = self.revision;
        for e in batch {
            seen = seen.max(e.revision());
            self.handle(
                Event::Update {
                    kind: e.kind,
                    key: e.kv.key,
                    value: e.kv.value,
                    revision: e.kv.mod_revision,
                },
                store,
            )?;
        }
        if let Err(e) = self.handle(Event::Flush { revision: seen }, store) {
            tracing::error!(error = %e, "programming failed; retrying with a resync");
            self.resync(store)?;
        }
        Ok(())
    }

    fn lost(&mut self, store: &dyn Datastore, e: gingham_datastore::Error) -> Result<(), Error> {
        match e {
            gingham_datastore::Error::Compacted { .. }
            | gingham_datastore::Error::Unavailable(_) => {
                tracing::warn!(error = %e, "watch lost; listing again");
                std::thread::sleep(Duration::from_millis(200));
                self.resync(store)
            }
            e => Err(e.into()),
        }
    }

    /// Steps forever (after [`Agent::start`]).
    pub fn run(&mut self, store: &dyn Datastore) -> Result<Infallible, Error> {
        loop {
            self.step(store, Duration::from_secs(5))?;
        }
    }
}
