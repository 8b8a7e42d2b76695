//! `gingham agent`: felix's job on one node. Watches the datastore, feeds the incremental policy
//! calculator, and installs the node's nftables table whenever the desired state changes.
//!
//! Each change is rendered into the desired table and only the difference is sent, as one
//! atomic `nft -f` transaction. The kernel is read once at start (a restarted agent reconciles
//! without flushing: what matches stays, established connections are untouched) and then on
//! the periodic consistency check, which repairs anything changed behind the agent's back.
//! Programs of endpoints not yet calculated do not exist, so their traffic is dropped (fail
//! closed).
//!
//! The host side of local workloads (sysctls, routes, neighbours) and the blackhole routes of
//! the node's IPAM blocks are checked when local workloads change and every
//! `routeRefreshInterval` (FelixConfiguration, 90 s by default), and repaired if changed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use gingham_calc::incremental::{Calculator, Change, Update};
use gingham_dataplane::{Nft, Programmer, Renderer, Settings};
use gingham_datastore::{Datastore, Error as StoreError, EventKind};
use gingham_model::{Kind, Resource};
use gingham_net::host::{HostState, HostWorkload};
use gingham_net::{Netlink, NetnsRef};

use crate::Exit;

mod health;
use health::Health;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node this agent programs (its endpoints are the local ones).
    #[arg(long)]
    pub node: String,
    /// Program once and exit.
    #[arg(long)]
    pub once: bool,
    /// Serve /liveness, /readiness and /metrics on 127.0.0.1:PORT (0: off).
    #[arg(long, default_value_t = 9099)]
    pub health_port: u16,
    /// Seconds between consistency checks of the kernel's table (felix's refresh interval;
    /// 0: never).
    #[arg(long, default_value_t = 90)]
    pub refresh_interval: u64,
}

const PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

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

fn settings_from(resources: &[Resource]) -> Settings {
    Settings {
        felix: gingham_calc::snapshot::FelixSettings::from_resources(resources),
        ..Settings::default()
    }
}

struct Agent {
    health: Health,
    /// Keys whose stored value cannot be read: skipped (logged once each) and reported on
    /// /readiness until fixed or deleted.
    unreadable: std::collections::BTreeSet<String>,
    node: String,
    calc: Calculator,
    /// The calculator's changes not yet rendered.
    changes: Vec<Change>,
    settings: Settings,
    /// The desired table, kept up to date from the changes.
    renderer: Renderer,
    dataplane: Programmer<Nft>,
    felix: Vec<Resource>,
    /// Local workloads' host side, by endpoint key.
    workloads: std::collections::BTreeMap<String, HostWorkload>,
    /// Local workloads changed since the last plumbing check.
    plumbing_due: bool,
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

/// FelixConfiguration's routeRefreshInterval (the global one), 90 s by default; zero: never.
fn route_refresh(felix: &[Resource]) -> Duration {
    felix
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

impl Agent {
    fn new(node: &str) -> Agent {
        Agent {
            health: Health::default(),
            unreadable: Default::default(),
            node: node.to_owned(),
            calc: Calculator::new(node),
            changes: Vec::new(),
            settings: Settings::default(),
            renderer: Renderer::new(Default::default(), Settings::default()),
            dataplane: Programmer::new(Nft::default()),
            felix: Vec::new(),
            workloads: Default::default(),
            plumbing_due: true,
        }
    }

    /// Lists everything and loads it; returns the listing's revision.
    fn resync(&mut self, store: &dyn Datastore) -> Result<i64> {
        self.health.metrics.resyncs.inc();
        let listing = store.list(PREFIX)?;
        self.unreadable.clear();
        self.health.state().unreadable.clear();
        let resources: Vec<Resource> = listing
            .kvs
            .iter()
            .filter_map(|kv| self.read(&kv.key, &kv.value))
            .collect();
        self.felix = resources
            .iter()
            .filter(|r| r.kind() == Kind::FelixConfiguration)
            .cloned()
            .collect();
        self.settings = settings_from(&self.felix);
        self.workloads = resources
            .iter()
            .filter_map(|r| Some((r.key(), host_workload(r, &self.node)?)))
            .collect();
        self.plumbing_due = true;
        self.calc = Calculator::new(&self.node);
        self.calc.load_all(resources);
        self.changes.clear();
        self.renderer = Renderer::new(self.calc.state(), self.settings.clone());
        self.program()?;
        self.health.metrics.datastore_revision.set(listing.revision);
        Ok(listing.revision)
    }

    fn program(&mut self) -> Result<()> {
        self.install(false)
    }

    /// Renders the changes into the desired table and installs the difference; with `check`,
    /// reads the kernel first and repairs whatever differs.
    fn install(&mut self, check: bool) -> Result<()> {
        let t = Instant::now();
        self.renderer.apply(&std::mem::take(&mut self.changes));
        self.renderer.set_settings(self.settings.clone());
        let touched = self.renderer.take_touched();
        let calculated = t.elapsed();
        let program = self.renderer.program();
        let closed: Vec<String> = program
            .problems()
            .into_iter()
            .map(|(what, eps)| {
                format!(
                    "{what} (closes {})",
                    eps.into_iter().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        let endpoints = program.endpoints.len();
        let (chains, sets, set_members) = self.renderer.counts();
        let result = if check {
            self.dataplane.check(self.renderer.table().clone())
        } else {
            self.dataplane.sync_touched(self.renderer.table(), &touched)
        };
        let applied = match result {
            Ok(a) => a,
            Err(e) => {
                self.health.metrics.errors.inc();
                self.health.state().problem = Some(format!("installing the nftables table: {e}"));
                return Err(e).context("installing the nftables table");
            }
        };
        {
            let mut h = self.health.state();
            h.ready = true;
            h.problem = None;
            for c in closed.iter().filter(|c| !h.closed.contains(c)) {
                tracing::warn!(problem = %c, "endpoints closed until the missing object exists");
            }
            h.closed = closed;
        }
        let m = &self.health.metrics;
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        m.endpoints.set(count(endpoints));
        m.chains.set(count(chains));
        m.sets.set(count(sets));
        m.set_members.set(count(set_members));
        m.programs.inc();
        m.last_calculation_seconds.set(calculated.as_secs_f64());
        m.last_apply_seconds
            .set((t.elapsed() - calculated).as_secs_f64());
        m.last_apply_bytes.set(count(applied.bytes));
        m.last_apply_commands.set(count(applied.commands));
        m.kernel_reads.inc_by(u64::from(applied.read_kernel));
        if check && applied.commands > 0 {
            m.kernel_repairs.inc();
        }
        if check && applied.commands > 0 {
            tracing::warn!(
                commands = applied.commands,
                replaced = applied.replaced,
                "the kernel's table had been changed; repaired"
            );
        }
        tracing::info!(
            endpoints,
            chains,
            sets,
            set_members,
            commands = applied.commands,
            bytes = applied.bytes,
            read_kernel = applied.read_kernel,
            elapsed_ms = t.elapsed().as_secs_f64() * 1e3,
            "programmed"
        );
        Ok(())
    }

    /// Puts back whatever of the local workloads' host side and the node's blackhole routes
    /// is missing or wrong.
    fn plumb(&mut self, store: &dyn Datastore, netlink: &Netlink) {
        self.plumbing_due = false;
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
        match gingham_net::host::repair(netlink, &want) {
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

    /// Applies one watch event; returns whether the desired state changed.
    fn event(&mut self, kind: EventKind, key: &str, value: &[u8]) -> bool {
        let Some((k, ns, name)) = Kind::parse_key(key) else {
            return false;
        };
        // `None`: deleted, or unreadable (whatever was there before is gone as far as we can
        // tell).
        let resource = match kind {
            EventKind::Put => self.read(key, value),
            EventKind::Delete => {
                if self.unreadable.remove(key) {
                    self.health.state().unreadable = self.unreadable.iter().cloned().collect();
                }
                None
            }
        };
        if k == Kind::FelixConfiguration {
            self.felix.retain(|r| r.meta().name != name);
            self.felix.extend(resource);
            let before = self.settings.clone();
            self.settings = settings_from(&self.felix);
            return before != self.settings;
        }
        if k == Kind::WorkloadEndpoint {
            let local = resource.as_ref().and_then(|r| host_workload(r, &self.node));
            let before = match local {
                Some(w) => self.workloads.insert(key.to_owned(), w.clone()) != Some(w),
                None => self.workloads.remove(key).is_some(),
            };
            self.plumbing_due |= before;
        }
        let update = match resource {
            Some(r) => Update::Upsert(Box::new(r)),
            None => Update::Delete {
                kind: k,
                namespace: ns,
                name,
            },
        };
        let changes = self.calc.apply(update);
        let changed = !changes.is_empty();
        self.changes.extend(changes);
        changed
    }
}

pub fn run(args: &AgentArgs, store: &dyn Datastore) -> Result<Exit> {
    let mut agent = Agent::new(&args.node);
    if args.health_port != 0 && !args.once {
        agent.health.serve(args.health_port)?;
    }
    let netlink = Netlink::open(&NetnsRef::Current).context("opening netlink")?;
    let mut revision = agent.resync(store)?;
    agent.plumb(store, &netlink);
    let mut last_plumbing = Instant::now();
    println!(
        "agent for node {} programmed; watching {}",
        args.node,
        store.describe()
    );
    if args.once {
        return Ok(Exit::Ok);
    }
    let refresh = (args.refresh_interval > 0).then(|| Duration::from_secs(args.refresh_interval));
    let mut last_check = Instant::now();
    loop {
        let mut watch = store.watch(PREFIX, revision)?;
        loop {
            if let Some(every) = refresh
                && last_check.elapsed() >= every
            {
                last_check = Instant::now();
                if let Err(e) = agent.install(true) {
                    tracing::error!(error = %format!("{e:#}"), "consistency check failed");
                }
            }
            let every = route_refresh(&agent.felix);
            // `every` is also the bound of the watch's wait below.
            if agent.plumbing_due || (!every.is_zero() && last_plumbing.elapsed() >= every) {
                last_plumbing = Instant::now();
                agent.plumb(store, &netlink);
            }
            let wait = refresh
                .map(|every| every.saturating_sub(last_check.elapsed()))
                .unwrap_or(Duration::from_secs(5))
                .min(if every.is_zero() {
                    Duration::MAX
                } else {
                    every.saturating_sub(last_plumbing.elapsed())
                })
                .clamp(Duration::from_millis(10), Duration::from_secs(5));
            match watch.next(wait) {
                Ok(None) => continue,
                Ok(Some(first)) => {
                    // Take whatever else arrives right away, then program once.
                    let mut changed = agent.event(first.kind, &first.kv.key, &first.kv.value);
                    let mut seen = first.revision();
                    while let Ok(Some(e)) = watch.next(Duration::from_millis(10)) {
                        changed |= agent.event(e.kind, &e.kv.key, &e.kv.value);
                        seen = seen.max(e.revision());
                    }
                    if changed && let Err(e) = agent.program() {
                        tracing::error!(error = %format!("{e:#}"), "programming failed; retrying with a resync");
                        revision = agent.resync(store)?;
                        break;
                    }
                    revision = revision.max(seen);
                    agent.health.metrics.datastore_revision.set(revision);
                }
                Err(StoreError::Compacted { .. }) | Err(StoreError::Unavailable(_)) => {
                    tracing::warn!("watch lost; listing again");
                    std::thread::sleep(Duration::from_millis(200));
                    revision = agent.resync(store)?;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn felix(yaml_spec: &str) -> Resource {
        let text = format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n{yaml_spec}"
        );
        gingham_model::load::load_resources("felix.yaml", &text)
            .expect("a valid FelixConfiguration")
            .remove(0)
    }

    /// Regression: a FelixConfiguration unreadable at resync and fixed by a later write left
    /// /readiness at 503 until the next resync (the watch decoded it on a path of its own).
    #[test]
    fn an_unreadable_resource_fixed_by_a_watched_write_is_readable_again() {
        let mut agent = Agent::new("node-a");
        agent.health.state().ready = true;
        let good = felix("  routeRefreshInterval: 30s\n");
        let key = good.key();
        // As the resync reads it.
        assert!(agent.read(&key, b"{not json").is_none());
        assert_eq!(
            agent.health.readiness().0,
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(agent.health.readiness().1.contains(&key));
        // The fix arrives through the watch.
        agent.event(EventKind::Put, &key, &good.to_stored());
        assert_eq!(agent.health.readiness().0, axum::http::StatusCode::OK);
        assert_eq!(route_refresh(&agent.felix), Duration::from_secs(30));
        // Broken again through the watch: reported again, and its settings are gone.
        agent.event(EventKind::Put, &key, b"{not json");
        assert!(agent.health.readiness().1.contains(&key));
        assert_eq!(route_refresh(&agent.felix), Duration::from_secs(90));
        // Deleted: nothing left to report.
        agent.event(EventKind::Delete, &key, b"");
        assert_eq!(agent.health.readiness().0, axum::http::StatusCode::OK);
    }
}
