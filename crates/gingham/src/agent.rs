//! `gingham agent`: felix's job on one node. Watches the datastore, feeds the incremental policy
//! calculator, and installs the node's nftables table whenever the desired state changes.
//!
//! This first version re-renders the whole table on each change and replaces it in one atomic
//! `nft -f` transaction (established connections are kept: conntrack state does not depend on
//! the table). Programs of endpoints not yet calculated do not exist, so their traffic is
//! dropped (fail closed).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use gingham_calc::incremental::{Calculator, Update};
use gingham_dataplane::{Dataplane, Nft, Settings, render};
use gingham_datastore::{Datastore, Error as StoreError, EventKind};
use gingham_model::{Kind, Resource};

use crate::Exit;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node this agent programs (its endpoints are the local ones).
    #[arg(long)]
    pub node: String,
    /// Program once and exit.
    #[arg(long)]
    pub once: bool,
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
    let mut s = Settings::default();
    for r in resources {
        if let Resource::FelixConfiguration(f) = r
            && f.metadata.name == "default"
            && let Some(a) = &f.spec.default_endpoint_to_host_action
        {
            s.endpoint_to_host = a.clone();
        }
    }
    s
}

struct Agent {
    node: String,
    calc: Calculator,
    settings: Settings,
    dataplane: Nft,
    felix: Vec<Resource>,
}

impl Agent {
    /// Lists everything and loads it; returns the listing's revision.
    fn resync(&mut self, store: &dyn Datastore) -> Result<i64> {
        let listing = store.list(PREFIX)?;
        let resources: Vec<Resource> = listing
            .kvs
            .iter()
            .filter_map(|kv| decode(&kv.key, &kv.value))
            .collect();
        self.felix = resources
            .iter()
            .filter(|r| r.kind() == Kind::FelixConfiguration)
            .cloned()
            .collect();
        self.settings = settings_from(&self.felix);
        self.calc = Calculator::new(&self.node);
        self.calc.load_all(resources);
        self.program()?;
        Ok(listing.revision)
    }

    fn program(&mut self) -> Result<()> {
        let t = Instant::now();
        let state = self.calc.state();
        let rendered = render(&state, &self.settings);
        self.dataplane
            .apply(&rendered)
            .context("installing the nftables table")?;
        tracing::info!(
            endpoints = state.endpoints.len(),
            chains = rendered.chains,
            sets = rendered.sets,
            set_members = rendered.set_members,
            elapsed_ms = t.elapsed().as_secs_f64() * 1e3,
            "programmed"
        );
        Ok(())
    }

    /// Applies one watch event; returns whether the desired state changed.
    fn event(&mut self, kind: EventKind, key: &str, value: &[u8]) -> bool {
        let Some((k, ns, name)) = Kind::parse_key(key) else {
            return false;
        };
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
        let update = match kind {
            EventKind::Put => match decode(key, value) {
                Some(r) => Update::Upsert(Box::new(r)),
                None => return false,
            },
            EventKind::Delete => Update::Delete {
                kind: k,
                namespace: ns,
                name,
            },
        };
        !self.calc.apply(update).is_empty()
    }
}

pub fn run(args: &AgentArgs, store: &dyn Datastore) -> Result<Exit> {
    let mut agent = Agent {
        node: args.node.clone(),
        calc: Calculator::new(&args.node),
        settings: Settings::default(),
        dataplane: Nft,
        felix: Vec::new(),
    };
    let mut revision = agent.resync(store)?;
    println!(
        "agent for node {} programmed; watching {}",
        args.node,
        store.describe()
    );
    if args.once {
        return Ok(Exit::Ok);
    }
    loop {
        let mut watch = store.watch(PREFIX, revision)?;
        loop {
            match watch.next(Duration::from_secs(5)) {
                Ok(None) => continue,
                Ok(Some(first)) => {
                    // Take whatever else arrives right away, then program once.
                    let mut changed = agent.event(first.kind, &first.kv.key, &first.kv.value);
                    while let Ok(Some(e)) = watch.next(Duration::from_millis(10)) {
                        changed |= agent.event(e.kind, &e.kv.key, &e.kv.value);
                    }
                    if changed && let Err(e) = agent.program() {
                        tracing::error!(error = %format!("{e:#}"), "programming failed; retrying with a resync");
                        revision = agent.resync(store)?;
                        break;
                    }
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
