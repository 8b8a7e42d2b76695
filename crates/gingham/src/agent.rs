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

/// What the agent reports on its health endpoint.
#[derive(Default)]
struct Health {
    ready: bool,
    /// Why it is not ready, or the last error.
    problem: Option<String>,
    endpoints: usize,
    chains: usize,
    sets: usize,
    set_members: usize,
    programs_total: u64,
    errors_total: u64,
    resyncs_total: u64,
    last_program_seconds: f64,
    last_calculation_seconds: f64,
    script_bytes: usize,
    script_commands: usize,
    kernel_reads_total: u64,
    repairs_total: u64,
    plumbing_repairs_total: u64,
    /// The datastore revision the installed table reflects (every event up to it is in).
    datastore_revision: i64,
    /// Stored resources that cannot be read (skipped).
    unreadable: Vec<String>,
    /// Missing objects that close local endpoints (fail closed), with what they close.
    closed: Vec<String>,
}

impl Health {
    fn is_ready(&self) -> bool {
        self.ready && self.problem.is_none() && self.unreadable.is_empty() && self.closed.is_empty()
    }

    fn why_not(&self) -> String {
        if let Some(p) = &self.problem {
            return p.clone();
        }
        if !self.unreadable.is_empty() {
            return format!(
                "stored resources that cannot be read are skipped: {}",
                self.unreadable.join(", ")
            );
        }
        if !self.closed.is_empty() {
            return format!(
                "endpoints closed (all their traffic dropped) for want of: {}",
                self.closed.join("; ")
            );
        }
        "starting".into()
    }
}

type Shared = std::sync::Arc<std::sync::Mutex<Health>>;

fn lock(h: &Shared) -> std::sync::MutexGuard<'_, Health> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

/// A minimal HTTP server for health and Prometheus metrics.
fn serve_health(port: u16, health: Shared) -> Result<()> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot serve health on 127.0.0.1:{port}"))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let h = lock(&health);
            let (status, body) = match path {
                "/liveness" => ("200 OK", "ok\n".to_owned()),
                "/readiness" if h.is_ready() => ("200 OK", "ready\n".to_owned()),
                "/readiness" => (
                    "503 Service Unavailable",
                    format!("not ready: {}\n", h.why_not()),
                ),
                "/metrics" => ("200 OK", metrics(&h)),
                _ => (
                    "404 Not Found",
                    "try /liveness, /readiness or /metrics\n".to_owned(),
                ),
            };
            drop(h);
            let _ = write!(
                stream,
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

fn metrics(h: &Health) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "gingham_agent_ready",
        "1 when the node is programmed and nothing is wrong.",
        f64::from(u8::from(h.is_ready())),
    );
    gauge(
        "gingham_agent_local_endpoints",
        "Local endpoints with a program.",
        h.endpoints as f64,
    );
    gauge(
        "gingham_agent_nft_chains",
        "Chains in the installed table.",
        h.chains as f64,
    );
    gauge(
        "gingham_agent_nft_sets",
        "Sets in the installed table.",
        h.sets as f64,
    );
    gauge(
        "gingham_agent_nft_set_members",
        "Members of all sets.",
        h.set_members as f64,
    );
    gauge(
        "gingham_agent_last_calculation_seconds",
        "Time of the last policy calculation.",
        h.last_calculation_seconds,
    );
    gauge(
        "gingham_agent_last_apply_seconds",
        "Time of the last nft transaction.",
        h.last_program_seconds,
    );
    gauge(
        "gingham_agent_last_apply_bytes",
        "Size of the last nft transaction.",
        h.script_bytes as f64,
    );
    gauge(
        "gingham_agent_last_apply_commands",
        "Commands in the last nft transaction (0: nothing had to change).",
        h.script_commands as f64,
    );
    gauge(
        "gingham_agent_datastore_revision",
        "The datastore revision the installed table reflects: every write up to it is programmed.",
        h.datastore_revision as f64,
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    };
    counter(
        "gingham_agent_programs_total",
        "Tables installed.",
        h.programs_total,
    );
    counter(
        "gingham_agent_errors_total",
        "Errors (datastore, calculation, nft).",
        h.errors_total,
    );
    counter(
        "gingham_agent_resyncs_total",
        "Full listings of the datastore.",
        h.resyncs_total,
    );
    counter(
        "gingham_agent_kernel_reads_total",
        "Readings of the installed table (start, errors, consistency checks).",
        h.kernel_reads_total,
    );
    counter(
        "gingham_agent_kernel_repairs_total",
        "Consistency checks that found the kernel changed behind the agent's back.",
        h.repairs_total,
    );
    counter(
        "gingham_agent_plumbing_repairs_total",
        "Routes, neighbours, sysctls and blackholes of local workloads put back.",
        h.plumbing_repairs_total,
    );
    out
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
    health: Shared,
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
    /// Lists everything and loads it; returns the listing's revision.
    fn resync(&mut self, store: &dyn Datastore) -> Result<i64> {
        lock(&self.health).resyncs_total += 1;
        let listing = store.list(PREFIX)?;
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
        lock(&self.health).datastore_revision = listing.revision;
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
                let mut h = lock(&self.health);
                h.errors_total += 1;
                h.problem = Some(format!("installing the nftables table: {e}"));
                return Err(e).context("installing the nftables table");
            }
        };
        {
            let mut h = lock(&self.health);
            h.ready = true;
            h.problem = None;
            for c in closed.iter().filter(|c| !h.closed.contains(c)) {
                tracing::warn!(problem = %c, "endpoints closed until the missing object exists");
            }
            h.closed = closed;
            h.endpoints = endpoints;
            h.chains = chains;
            h.sets = sets;
            h.set_members = set_members;
            h.programs_total += 1;
            h.last_calculation_seconds = calculated.as_secs_f64();
            h.last_program_seconds = (t.elapsed() - calculated).as_secs_f64();
            h.script_bytes = applied.bytes;
            h.script_commands = applied.commands;
            h.kernel_reads_total += u64::from(applied.read_kernel);
            if check && applied.commands > 0 {
                h.repairs_total += 1;
            }
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
                lock(&self.health).plumbing_repairs_total += done.len() as u64;
            }
            Err(e) => {
                let mut h = lock(&self.health);
                h.errors_total += 1;
                tracing::error!(error = %e, "checking the host plumbing failed");
            }
        }
    }

    /// Decodes a stored value, keeping track of the keys that cannot be read.
    fn read(&mut self, key: &str, value: &[u8]) -> Option<Resource> {
        let r = decode(key, value);
        let changed = if r.is_some() {
            self.unreadable.remove(key)
        } else {
            self.unreadable.insert(key.to_owned())
        };
        if changed {
            let mut h = lock(&self.health);
            h.unreadable = self.unreadable.iter().cloned().collect();
        }
        r
    }

    /// Applies one watch event; returns whether the desired state changed.
    fn event(&mut self, kind: EventKind, key: &str, value: &[u8]) -> bool {
        let Some((k, ns, name)) = Kind::parse_key(key) else {
            return false;
        };
        if kind == EventKind::Delete && self.unreadable.remove(key) {
            lock(&self.health).unreadable = self.unreadable.iter().cloned().collect();
        }
        if k == Kind::FelixConfiguration {
            self.felix.retain(|r| r.meta().name != name);
            if kind == EventKind::Put
                && let Some(r) = decode(key, value)
            {
                self.felix.push(r);
            }
            let before = self.settings.clone();
            self.settings = settings_from(&self.felix);
            return before != self.settings;
        }
        if k == Kind::WorkloadEndpoint {
            let local = match kind {
                EventKind::Put => decode(key, value).and_then(|r| host_workload(&r, &self.node)),
                EventKind::Delete => None,
            };
            let before = match local {
                Some(w) => self.workloads.insert(key.to_owned(), w.clone()) != Some(w),
                None => self.workloads.remove(key).is_some(),
            };
            self.plumbing_due |= before;
        }
        let update = match kind {
            EventKind::Put => match self.read(key, value) {
                Some(r) => Update::Upsert(Box::new(r)),
                None => {
                    // Whatever was there before is gone as far as we can tell.
                    Update::Delete {
                        kind: k,
                        namespace: ns,
                        name,
                    }
                }
            },
            EventKind::Delete => Update::Delete {
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
    let health = Shared::default();
    if args.health_port != 0 && !args.once {
        serve_health(args.health_port, health.clone())?;
    }
    let mut agent = Agent {
        health,
        unreadable: Default::default(),
        node: args.node.clone(),
        calc: Calculator::new(&args.node),
        changes: Vec::new(),
        settings: Settings::default(),
        renderer: Renderer::new(Default::default(), Settings::default()),
        dataplane: Programmer::new(Nft::default()),
        felix: Vec::new(),
        workloads: Default::default(),
        plumbing_due: true,
    };
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
                        seen = e.revision();
                    }
                    if changed && let Err(e) = agent.program() {
                        tracing::error!(error = %format!("{e:#}"), "programming failed; retrying with a resync");
                        revision = agent.resync(store)?;
                        break;
                    }
                    lock(&agent.health).datastore_revision = seen;
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
