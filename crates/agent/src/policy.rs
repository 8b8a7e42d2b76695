//! The policy manager: the incremental calculator, the renderer and the nftables programmer.
//!
//! Each change is rendered into the desired table and only the difference is sent, as one
//! atomic transaction. The kernel is read once at start (a restarted agent reconciles without
//! flushing: what matches stays, established connections are untouched) and then on the
//! periodic consistency check, which repairs anything changed behind the agent's back.
//! Programs of endpoints not yet calculated do not exist, so their traffic is dropped (fail
//! closed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use gingham_calc::incremental::{self, Calculator, Change};
use gingham_calc::snapshot::NatPools;
use gingham_dataplane::{Backend, Programmer, Renderer, Settings, Tunnels, VXLAN_PORT};
use gingham_datastore::Datastore;
use gingham_model::{Kind, Node, Resource};
use ipnet::IpNet;

use crate::links::Links;
use crate::{Config, Error, FelixConfigs, Health, Manager, Update};

pub struct PolicyManager<B> {
    health: Health,
    node: String,
    calc: Calculator,
    /// The calculator's changes not yet rendered.
    changes: Vec<Change>,
    felix: FelixConfigs,
    /// The IPPool resources by name (natOutgoing, tunnels).
    pools: BTreeMap<String, Resource>,
    /// The Node resources by name (the tunnels' peers).
    nodes: BTreeMap<String, Node>,
    settings: Settings,
    /// The desired table, kept up to date from the changes.
    renderer: Renderer,
    programmer: Programmer<B>,
    /// The desired state changed since the last programming.
    dirty: bool,
    /// Chains changed since the hit counters were last given the record of the rules' origins.
    origins_stale: bool,
    refresh: Option<Duration>,
    last_check: Instant,
    /// The flow logger's view, swapped after each installed table (when flow logs run).
    flow_view: Option<crate::flows::SharedView>,
    /// An endpoint or node changed without changing the table (an address added, say): the
    /// flow logger's names are refreshed at the next apply.
    view_stale: bool,
    /// The node's interfaces, when the workload dispatch maps are keyed by interface index
    /// ([`PolicyManager::set_links`]; the last listing is the renderer's table's `links`); when
    /// the link reports were last drained.
    links: Option<Box<dyn Links + Send>>,
    links_polled: Instant,
    /// A link report came but the listing after it failed.
    links_unlisted: bool,
}

/// How often the agent drains the kernel's link reports while nothing else wakes it: an
/// interface created again under a workload's name (a new index) is keyed again within this.
pub const LINK_POLL: Duration = Duration::from_millis(100);

fn settings_from(
    felix: &FelixConfigs,
    pools: &BTreeMap<String, Resource>,
    nodes: &BTreeMap<String, Node>,
    me: &str,
    flow_logs_allowed: bool,
) -> Settings {
    Settings {
        felix: gingham_calc::snapshot::FelixSettings::from_resources(felix.resources()),
        pools: NatPools::from_resources(pools.values()),
        tunnels: tunnels_from(felix, pools, nodes, me),
        flow_logs_allowed,
        ..Settings::default()
    }
}

/// What felix's static rules need of the tunnels: which are on (its encapsulation calculator),
/// every node's address (`all-hosts-net`), the underlay address of every other node's VTEP
/// (`all-vxlan-net`), both with FelixConfiguration's `externalNodesList`.
fn tunnels_from(
    felix: &FelixConfigs,
    pools: &BTreeMap<String, Resource>,
    nodes: &BTreeMap<String, Node>,
    me: &str,
) -> Tunnels {
    let spec = felix.resources().iter().find_map(|r| match r {
        Resource::FelixConfiguration(f) if f.metadata.name == "default" => Some(&f.spec),
        _ => None,
    });
    let encaps = crate::mtu::Encaps::of(
        pools.values().filter_map(|r| match r {
            Resource::IpPool(p) => Some(p),
            _ => None,
        }),
        spec,
    );
    let external: BTreeSet<IpNet> = spec
        .and_then(|s| s.external_nodes_list.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.parse::<IpNet>()
                .ok()
                .or_else(|| c.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();
    let mut t = Tunnels {
        ipip: encaps.ipip,
        vxlan: encaps.vxlan,
        vxlan_v6: encaps.vxlan_v6,
        vxlan_port: spec
            .and_then(|s| s.vxlan_port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(VXLAN_PORT),
        hosts: external.clone(),
        vxlan_sources: external,
    };
    for (name, node) in nodes {
        for v6 in [false, true] {
            let Some((addr, vtep)) = crate::routes::underlay(node, v6) else {
                continue;
            };
            if !v6 {
                t.hosts.insert(IpNet::from(addr));
            }
            if vtep && name != me {
                t.vxlan_sources.insert(IpNet::from(addr));
            }
        }
    }
    t
}

impl<B: Backend> PolicyManager<B> {
    pub fn new(config: &Config, backend: B, health: Health) -> Self {
        health.metrics.rules.set_reader(backend.reader());
        PolicyManager {
            health,
            node: config.node.clone(),
            calc: Calculator::new(&config.node),
            changes: Vec::new(),
            felix: FelixConfigs::default(),
            pools: BTreeMap::new(),
            nodes: BTreeMap::new(),
            settings: Settings::default(),
            renderer: Renderer::new(Default::default(), Settings::default()),
            programmer: Programmer::new(backend),
            dirty: true,
            origins_stale: true,
            refresh: config.refresh_interval.filter(|d| !d.is_zero()),
            last_check: Instant::now(),
            flow_view: None,
            view_stale: false,
            links: None,
            links_polled: Instant::now(),
            links_unlisted: false,
        }
    }

    /// Keys the workload dispatch maps by interface index, learning the node's interfaces
    /// from `links` (listed now, and again whenever it reports a change). If the first listing
    /// fails the maps stay keyed by name.
    pub fn set_links(&mut self, mut links: Box<dyn Links + Send>) {
        match links.list() {
            Ok(known) => {
                self.renderer.set_links(Some(known));
                self.links = Some(links);
                self.dirty = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the node's interfaces; dispatch maps stay keyed by name");
            }
        }
    }

    /// Drains the link reports; on a change, lists the interfaces again and gives the renderer
    /// what differs.
    fn poll_links(&mut self, now: Instant) {
        let Some(links) = self.links.as_mut() else {
            return;
        };
        self.links_polled = now;
        // A report whose listing failed is listed again at the next poll.
        if !links.changed() && !self.links_unlisted {
            return;
        }
        match links.list() {
            Ok(known) => {
                self.links_unlisted = false;
                if self.renderer.table().links != known {
                    self.renderer.set_links(Some(known));
                    self.dirty = true;
                }
            }
            Err(e) => {
                self.links_unlisted = true;
                tracing::warn!(error = %e, "cannot list the node's interfaces; trying again");
            }
        }
    }

    /// The desired table's renderer.
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// The programmer (and through it the backend: what was sent, for tests).
    pub fn programmer(&self) -> &Programmer<B> {
        &self.programmer
    }

    /// Logs the new flows that Allow rules let through, too (`flowLogsAllowed`).
    pub fn set_flow_logs_allowed(&mut self, on: bool) {
        if self.settings.flow_logs_allowed != on {
            self.settings.flow_logs_allowed = on;
            self.dirty = true;
        }
    }

    /// Keeps the flow logger's view of the programs and addresses up to date.
    pub fn set_flow_view(&mut self, view: crate::flows::SharedView) {
        self.flow_view = Some(view);
        self.dirty = true;
        self.view_stale = true;
    }

    /// Gives the flow logger the programs and every known address, as of now.
    fn refresh_flow_view(&mut self) {
        self.view_stale = false;
        if let Some(view) = &self.flow_view {
            let new = crate::flows::FlowView::new(
                &self.renderer.program().endpoints,
                self.renderer.set_families(),
                self.calc.snapshot(),
            );
            if let Ok(mut v) = view.lock() {
                *v = std::sync::Arc::new(new);
            }
        }
    }

    pub fn programmer_mut(&mut self) -> &mut Programmer<B> {
        &mut self.programmer
    }

    /// Renders the changes into the desired table and installs the difference; with `check`,
    /// reads the kernel first and repairs whatever differs.
    fn install(&mut self, check: bool) -> Result<(), Error> {
        self.dirty = false;
        let t = Instant::now();
        // The flow logger's view holds the programs and which families of their sets are
        // empty (stage chain names depend on both): made again only when a program changed or
        // a chain did (a set's family that gained its first member or lost its last renames
        // the stages using it), never for a set member alone.
        self.view_stale |= self
            .changes
            .iter()
            .any(|c| matches!(c, Change::ProgramSet { .. } | Change::ProgramRemoved { .. }));
        self.renderer.apply(&std::mem::take(&mut self.changes));
        self.renderer.set_settings(self.settings.clone());
        let touched = self.renderer.take_touched();
        let chains_changed = touched.all || !touched.chains.is_empty();
        self.origins_stale |= chains_changed;
        self.view_stale |= chains_changed && self.flow_view.is_some();
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
        if self.view_stale || check {
            self.refresh_flow_view();
        }
        let result = if check {
            self.programmer.check(self.renderer.table().clone())
        } else {
            self.programmer
                .sync_touched(self.renderer.table(), &touched)
        };
        let applied = match result {
            Ok(a) => a,
            Err(e) => {
                self.health.metrics.errors.inc();
                self.health.state().set_problem(
                    "policy",
                    Some(format!("installing the nftables table: {e}")),
                );
                return Err(e.into());
            }
        };
        // What the installed table's rules are, for the hit counters read at scrape time. The
        // record changes only with chains: an update of set or map elements alone (most
        // updates) keeps the copy the counters hold, instead of copying every chain's record.
        if self.origins_stale {
            self.origins_stale = false;
            let origins = std::sync::Arc::new(self.renderer.origins().clone());
            self.health.metrics.rules.set_origins(origins);
        }
        {
            let mut h = self.health.state();
            h.ready = true;
            h.set_problem("policy", None);
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
}

impl<B: Backend> Manager for PolicyManager<B> {
    fn resync(&mut self, resources: &[Resource]) {
        self.felix.resync(resources);
        self.pools = resources
            .iter()
            .filter(|r| r.kind() == Kind::IpPool)
            .map(|r| (r.meta().name.clone(), r.clone()))
            .collect();
        self.nodes = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Node(n) => Some((n.metadata.name.clone(), n.clone())),
                _ => None,
            })
            .collect();
        self.settings = settings_from(
            &self.felix,
            &self.pools,
            &self.nodes,
            &self.node,
            self.settings.flow_logs_allowed,
        );
        self.calc = Calculator::new(&self.node);
        self.calc.load_all(resources.to_vec());
        self.changes.clear();
        let links = self
            .links
            .as_ref()
            .map(|_| self.renderer.table().links.clone());
        self.renderer = Renderer::with_links(self.calc.state(), self.settings.clone(), links);
        self.dirty = true;
        self.view_stale = true;
    }

    fn on_update(&mut self, update: &Update) {
        let felix = self.felix.on_update(update);
        if update.kind == Kind::IpPool {
            match &update.resource {
                Some(r) => self.pools.insert(update.name.clone(), r.clone()),
                None => self.pools.remove(&update.name),
            };
        }
        if update.kind == Kind::Node {
            match &update.resource {
                Some(Resource::Node(n)) => self.nodes.insert(update.name.clone(), n.clone()),
                _ => self.nodes.remove(&update.name),
            };
        }
        if felix || update.kind == Kind::IpPool || update.kind == Kind::Node {
            let settings = settings_from(
                &self.felix,
                &self.pools,
                &self.nodes,
                &self.node,
                self.settings.flow_logs_allowed,
            );
            if settings != self.settings {
                self.settings = settings;
                self.dirty = true;
            }
            // Nodes also matter to policy (host endpoints' addresses, reach).
            if update.kind != Kind::Node {
                return;
            }
        }
        let u = match &update.resource {
            Some(r) => incremental::Update::Upsert(Box::new(r.clone())),
            None => incremental::Update::Delete {
                kind: update.kind,
                namespace: update.namespace.clone(),
                name: update.name.clone(),
            },
        };
        if matches!(
            update.kind,
            Kind::WorkloadEndpoint | Kind::HostEndpoint | Kind::Node
        ) {
            self.view_stale = self.flow_view.is_some();
        }
        let changes = self.calc.apply(u);
        self.dirty |= !changes.is_empty();
        self.changes.extend(changes);
    }

    fn deadline(&self) -> Option<Instant> {
        let check = self.refresh.map(|every| self.last_check + every);
        let links = self.links.as_ref().map(|_| self.links_polled + LINK_POLL);
        check.into_iter().chain(links).min()
    }

    fn apply(&mut self, _store: &dyn Datastore, now: Instant) -> Result<(), Error> {
        // Every programming knows the interfaces there are (a pod's interface is made before
        // its WorkloadEndpoint is written).
        self.poll_links(now);
        if let Some(due) = self.refresh.map(|every| self.last_check + every)
            && now >= due
        {
            self.last_check = now;
            if let Err(e) = self.install(true) {
                // The programmer forgot its record: the next programming reads the kernel.
                tracing::error!(error = %e, "consistency check failed");
            }
            return Ok(());
        }
        if self.dirty {
            self.install(false)?;
        } else if self.view_stale {
            self.refresh_flow_view();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tunnel_tests {
    use super::*;

    fn load(text: &str) -> Vec<Resource> {
        gingham_model::load::load_resources("test.yaml", text).expect("valid test input")
    }

    /// Felix's `all-hosts-net` holds every node (this one too) and `externalNodesList`;
    /// `all-vxlan-net` the other nodes with a VTEP, and the external list.
    #[test]
    fn tunnel_peers_are_the_nodes_and_the_external_list() {
        let resources = load(
            "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0.0/16, vxlanMode: CrossSubnet}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {externalNodesList: [192.0.2.0/28, 198.51.100.7], vxlanPort: 4790}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: me}
spec: {bgp: {ipv4Address: 10.91.1.2/24}, ipv4VXLANTunnelAddr: 10.244.1.0}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: vtep}
spec: {bgp: {ipv4Address: 10.91.2.2/24}, ipv4VXLANTunnelAddr: 10.244.2.0}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: plain}
spec: {bgp: {ipv4Address: 10.91.2.3/24}}
",
        );
        let mut felix = FelixConfigs::default();
        felix.resync(&resources);
        let pools: BTreeMap<String, Resource> = resources
            .iter()
            .filter(|r| r.kind() == Kind::IpPool)
            .map(|r| (r.meta().name.clone(), r.clone()))
            .collect();
        let nodes: BTreeMap<String, Node> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Node(n) => Some((n.metadata.name.clone(), n.clone())),
                _ => None,
            })
            .collect();
        let t = tunnels_from(&felix, &pools, &nodes, "me");
        let nets =
            |v: &[&str]| -> BTreeSet<IpNet> { v.iter().map(|n| n.parse().unwrap()).collect() };
        assert_eq!(
            (t.ipip, t.vxlan, t.vxlan_v6, t.vxlan_port),
            (false, true, false, 4790)
        );
        assert_eq!(
            t.hosts,
            nets(&[
                "10.91.1.2/32",
                "10.91.2.2/32",
                "10.91.2.3/32",
                "192.0.2.0/28",
                "198.51.100.7/32"
            ])
        );
        assert_eq!(
            t.vxlan_sources,
            nets(&["10.91.2.2/32", "192.0.2.0/28", "198.51.100.7/32"])
        );
    }
}
