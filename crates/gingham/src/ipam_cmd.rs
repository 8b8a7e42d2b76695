//! `gingham ipam`: what the pools hold, leaks, and releasing an address by hand (calicoctl's
//! `ipam show`, `ipam check`, `ipam release`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gingham_api::Client;
use gingham_ipam::{AllocationStatus, EndpointClaim, Ipam, PoolSpec};
use gingham_model::{Kind, Resource};
use ipnet::IpNet;

use crate::Exit;

#[derive(Debug, Subcommand)]
pub enum IpamCmd {
    /// Addresses in use and free, per pool (and per block with --show-blocks).
    Show(ShowArgs),
    /// Find leaks: allocations whose workload is gone, blocks and affinities of missing nodes,
    /// inconsistent records, workload endpoints listing an address IPAM does not hold for their
    /// container, and addresses listed by two endpoints. Exits 1 when something is wrong.
    Check,
    /// Release an address whose workload is gone. An address a workload endpoint still lists
    /// (or whose handle's container still has an endpoint) is refused without --force.
    Release(ReleaseArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(long)]
    pub show_blocks: bool,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[arg(long)]
    pub ip: IpAddr,
    /// Release the address even though a workload still uses it (IPAM may then hand it to
    /// another workload while the first still has it).
    #[arg(long)]
    pub force: bool,
}

/// The workload endpoints as IPAM's check sees them: who claims which addresses.
fn endpoint_claims(weps: &[Resource]) -> Vec<EndpointClaim> {
    weps.iter()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(EndpointClaim {
                endpoint: format!("{}/{}", w.metadata.namespace_or_empty(), w.metadata.name),
                container_id: crate::cni_plugin::runtime_container_id(w).to_owned(),
                ips: w.spec.ip_networks.iter().map(IpNet::addr).collect(),
            }),
            _ => None,
        })
        .collect()
}

/// The stored IPPools as IPAM sees them, and every IPReservation CIDR. With `node_labels`, a
/// pool's nodeSelector is evaluated for that node; without, every pool counts as selecting.
pub fn stored_pools(
    client: &Client,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<(Vec<PoolSpec>, Vec<IpNet>), gingham_api::ApiError> {
    let (stored, _) = client.list(Kind::IpPool, None)?;
    let mut out = Vec::new();
    for r in stored {
        let Resource::IpPool(p) = r else { continue };
        out.extend(gingham_agent::tunnels::pool_spec(&p, node_labels));
    }
    let (reservations, _) = client.list(Kind::IpReservation, None)?;
    let reserved = reservations
        .into_iter()
        .filter_map(|r| match r {
            Resource::IpReservation(r) => Some(r.spec.reserved_cidrs),
            _ => None,
        })
        .flatten()
        .collect();
    Ok((out, reserved))
}

pub fn run(client: &Client, cmd: &IpamCmd) -> Result<Exit> {
    let store = client.store().clone();
    let ipam = Ipam::new(store.as_ref());
    match cmd {
        IpamCmd::Show(args) => {
            let (pools, reserved) = stored_pools(client, None)?;
            let usage = ipam.show(&pools, &reserved)?;
            let mut rows = vec![vec![
                "POOL".to_owned(),
                "CIDR".into(),
                "IN USE".into(),
                "FREE".into(),
                "RESERVED".into(),
                "TOTAL".into(),
            ]];
            for p in &usage.pools {
                rows.push(vec![
                    p.name.clone(),
                    p.cidr.to_string(),
                    p.in_use.to_string(),
                    p.free.to_string(),
                    p.reserved.to_string(),
                    p.total.to_string(),
                ]);
                if args.show_blocks {
                    for b in &p.blocks {
                        rows.push(vec![
                            format!(
                                "  block ({})",
                                b.affinity.as_deref().unwrap_or("no affinity")
                            ),
                            b.cidr.to_string(),
                            b.in_use.to_string(),
                            b.free.to_string(),
                            b.reserved.to_string(),
                            b.total.to_string(),
                        ]);
                    }
                }
            }
            for b in &usage.orphan_blocks {
                rows.push(vec![
                    "  block outside every pool".into(),
                    b.cidr.to_string(),
                    b.in_use.to_string(),
                    b.free.to_string(),
                    b.reserved.to_string(),
                    b.total.to_string(),
                ]);
            }
            print!("{}", crate::output::table(&rows));
            Ok(Exit::Ok)
        }
        IpamCmd::Check => {
            let (weps, _) = client.list(Kind::WorkloadEndpoint, None)?;
            let (nodes, _) = client.list(Kind::Node, None)?;
            let (heps, _) = client.list(Kind::HostEndpoint, None)?;
            let claims = endpoint_claims(&weps);
            let containers: BTreeSet<&str> =
                claims.iter().map(|c| c.container_id.as_str()).collect();
            let mut live_nodes: BTreeSet<String> =
                nodes.iter().map(|n| n.meta().name.clone()).collect();
            for w in &weps {
                if let Resource::WorkloadEndpoint(w) = w {
                    live_nodes.insert(w.spec.node.clone());
                }
            }
            for h in &heps {
                if let Resource::HostEndpoint(h) = h {
                    live_nodes.insert(h.spec.node.clone());
                }
            }
            // Handles are `<network>.<containerID>`; a container ID may itself hold dots, so
            // every suffix after a dot is tried.
            let node_names: BTreeSet<&str> = nodes.iter().map(|n| n.meta().name.as_str()).collect();
            // A node's tunnel address lives as long as its Node (calico-node's allocateip
            // gives and takes it back).
            let tunnel_of_live_node = |attrs: &BTreeMap<String, String>| {
                let tunnel = attrs.get(gingham_ipam::ATTR_TYPE).is_some_and(|t| {
                    gingham_agent::tunnels::TunnelKind::ALL
                        .iter()
                        .any(|k| k.attr_type() == t)
                });
                tunnel
                    && attrs
                        .get(gingham_ipam::ATTR_NODE)
                        .is_some_and(|n| node_names.contains(n.as_str()))
            };
            let is_live = |handle: &str, attrs: &BTreeMap<String, String>| {
                tunnel_of_live_node(attrs)
                    || containers.contains(handle)
                    || handle
                        .match_indices('.')
                        .any(|(i, _)| containers.contains(&handle[i + 1..]))
            };
            let nodes: Vec<String> = live_nodes.into_iter().collect();
            let report = ipam.check_with_endpoints(&is_live, &nodes, &claims)?;
            println!(
                "{} blocks, {} allocations, {} handles",
                report.blocks, report.allocations, report.handles
            );
            for l in &report.leaked {
                println!(
                    "leaked: {} (block {}, handle {}): no workload endpoint owns it; `gingham ipam release --ip {}`",
                    l.ip,
                    l.block,
                    l.handle_id.as_deref().unwrap_or("none"),
                    l.ip
                );
            }
            for g in &report.blocks_of_missing_nodes {
                println!(
                    "block {} is affine to node {}, which does not exist",
                    g.block, g.node
                );
            }
            for g in &report.affinities_of_missing_nodes {
                println!("affinity of missing node {} for block {}", g.node, g.block);
            }
            for a in &report.affinity_problems {
                println!(
                    "affinity of node {} for block {}: {}",
                    a.node, a.block, a.problem
                );
            }
            for m in &report.handle_mismatches {
                println!(
                    "handle {} records {} addresses in block {} but the block holds {}",
                    m.handle_id, m.recorded, m.block, m.actual
                );
            }
            for c in &report.corrupt {
                println!("unreadable: {c}");
            }
            for m in &report.endpoint_mismatches {
                println!(
                    "workload endpoint {} lists {}, but {}",
                    m.endpoint, m.ip, m.problem
                );
            }
            for d in &report.shared_addresses {
                println!(
                    "{} is listed by {} workload endpoints: {}",
                    d.ip,
                    d.endpoints.len(),
                    d.endpoints.join(", ")
                );
            }
            if report.is_clean() {
                println!("no problems found");
                Ok(Exit::Ok)
            } else {
                Ok(Exit::UserError)
            }
        }
        IpamCmd::Release(args) => {
            if let Some(users) = in_use_by(client, &ipam, args.ip)? {
                if !args.force {
                    eprintln!(
                        "warning: {} is in use by {users}; releasing it would let IPAM give it to another workload while this one still has it. Nothing released; delete the workload (CNI DEL) first, or re-run with --force",
                        args.ip
                    );
                    return Ok(Exit::UserError);
                }
                eprintln!(
                    "warning: releasing {} although it is in use by {users} (--force)",
                    args.ip
                );
            }
            let out = ipam
                .release_ips(&[args.ip])
                .with_context(|| format!("releasing {}", args.ip))?;
            for ip in &out.released {
                println!("released {ip}");
            }
            for ip in &out.not_allocated {
                eprintln!("{ip} is not allocated; nothing to release");
            }
            Ok(if out.not_allocated.is_empty() {
                Exit::Ok
            } else {
                Exit::UserError
            })
        }
    }
}

/// Who still uses `ip`: the workload endpoints that list it, and those of the container whose
/// handle holds it. `None` when nobody does.
fn in_use_by(client: &Client, ipam: &Ipam<'_>, ip: IpAddr) -> Result<Option<String>> {
    let (weps, _) = client.list(Kind::WorkloadEndpoint, None)?;
    let claims = endpoint_claims(&weps);
    let handle = match ipam.get_allocation(ip)? {
        AllocationStatus::InUse(info) => info.handle_id,
        _ => None,
    };
    let users: Vec<String> = claims
        .iter()
        .filter(|c| {
            c.ips.contains(&ip)
                || handle
                    .as_deref()
                    .is_some_and(|h| gingham_ipam::handle_is_for_container(h, &c.container_id))
        })
        .map(|c| format!("workload endpoint {}", c.endpoint))
        .collect();
    if users.is_empty() {
        return Ok(None);
    }
    Ok(Some(match handle {
        Some(h) => format!("{} (handle {h})", users.join(", ")),
        None => users.join(", "),
    }))
}
