//! `gingham bgp render`: the BIRD configuration Calico's confd would write for a node, from
//! resource files or from the datastore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use gingham_bgp::{Affinity, Input, Options};
use gingham_model::{Kind, Resource};
use serde_json::Value;

use crate::Exit;

#[derive(Debug, Subcommand)]
pub enum BgpCmd {
    /// Write bird.cfg, bird6.cfg, bird_aggr.cfg, bird6_aggr.cfg, bird_ipam.cfg and
    /// bird6_ipam.cfg for a node, with the text Calico's confd renders for the same resources.
    ///
    /// With -f, the resources come from files (Calico v3 resources, Kubernetes `v1` Secrets
    /// holding BGP passwords, and `BlockAffinity` objects with spec.node, spec.cidr and
    /// spec.state); without, from the datastore (affinities from IPAM). CALICO_ROUTER_ID (an
    /// IPv4 address, or `hash`) sets the router id.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The node to render for.
    #[arg(long, env = "NODENAME")]
    pub node: String,
    /// Resource files or directories (`-` for standard input); without, the datastore.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// The directory to write the six files to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The router id: an IPv4 address, or `hash` (derived from the node name).
    #[arg(long, env = "CALICO_ROUTER_ID")]
    pub router_id: Option<String>,
}

pub fn run(cmd: &BgpCmd, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    match cmd {
        BgpCmd::Render(a) => render(a, client),
    }
}

fn render(a: &RenderArgs, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    let input = if a.files.is_empty() {
        from_datastore(&client()?)?
    } else {
        match from_files(&a.files)? {
            Some(i) => i,
            None => return Ok(Exit::UserError),
        }
    };
    let opts = Options {
        node_name: a.node.clone(),
        router_id: a.router_id.clone(),
    };
    let rendered = gingham_bgp::render(&input, &opts)?;
    for w in &rendered.warnings {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    write_files(&a.out, &rendered.files)?;
    Ok(Exit::Ok)
}

/// Writes every file to a temporary name first, then renames them all, so a failure leaves
/// the previous files in place.
fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut staged = Vec::new();
    for (name, text) in files {
        let tmp = dir.join(format!(".{name}.tmp"));
        if let Err(e) = std::fs::write(&tmp, text) {
            for (t, _) in &staged {
                let _ = std::fs::remove_file(t);
            }
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
        staged.push((tmp, dir.join(name)));
    }
    for (tmp, dest) in staged {
        std::fs::rename(&tmp, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    }
    Ok(())
}

fn from_datastore(client: &gingham_api::Client) -> Result<Input> {
    let mut input = Input::default();
    for kind in [
        Kind::Node,
        Kind::BgpConfiguration,
        Kind::BgpPeer,
        Kind::IpPool,
    ] {
        let (list, _) = client
            .list(kind, None)
            .with_context(|| format!("cannot list {kind} resources"))?;
        add_resources(&mut input, list);
    }
    let store = client.store();
    let listing = store
        .list(gingham_ipam::stored::HOST_PREFIX)
        .context("cannot list block affinities")?;
    for kv in listing.kvs {
        let Some((node, cidr)) = gingham_ipam::stored::parse_affinity_key(&kv.key) else {
            continue;
        };
        let aff = gingham_ipam::stored::BlockAffinity::from_bytes(&kv.value)
            .with_context(|| format!("block affinity {} is not valid JSON", kv.key))?;
        if aff.deleted {
            continue;
        }
        let state = serde_json::to_value(aff.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        input.affinities.push(Affinity { node, cidr, state });
    }
    Ok(input)
}

fn add_resources(input: &mut Input, list: Vec<Resource>) {
    for r in list {
        match r {
            Resource::Node(n) => input.nodes.push(n),
            Resource::BgpConfiguration(c) => input.bgp_configurations.push(c),
            Resource::BgpPeer(p) => input.bgp_peers.push(p),
            Resource::IpPool(p) => input.ip_pools.push(p),
            _ => {}
        }
    }
}

/// Reads the files; on any error prints every problem and returns `None`.
fn from_files(files: &[String]) -> Result<Option<Input>> {
    let mut sources = Vec::new();
    for f in files {
        crate::resources_cmd::collect_sources(f, false, &mut sources)?;
    }
    let mut input = Input::default();
    let mut failed = false;
    for (name, text) in sources {
        let docs = match gingham_model::parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{name}: {e}");
                failed = true;
                continue;
            }
        };
        // Secrets and block affinities are taken out here; the other documents go to the
        // resource loader in place (an empty list keeps the document numbers of its messages).
        let mut rest = Vec::with_capacity(docs.len());
        for (i, doc) in docs.into_iter().enumerate() {
            let what = format!("{name}: document {}", i + 1);
            let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let taken = match (api, kind) {
                ("v1", "Secret") => secret(&doc, &what).map(|(n, d)| {
                    input.secrets.entry(n).or_default().extend(d);
                }),
                (_, "BlockAffinity") => affinity(&doc, &what).map(|a| input.affinities.push(a)),
                _ => {
                    rest.push(doc);
                    continue;
                }
            };
            rest.push(Value::Array(Vec::new()));
            if let Err(e) = taken {
                eprintln!("{e}");
                failed = true;
            }
        }
        let stream: Vec<String> = rest
            .iter()
            .map(|v| format!("---\n{}\n", serde_json::to_string(v).unwrap_or_default()))
            .collect();
        match gingham_model::load_resources(&name, &stream.concat()) {
            Ok(list) => add_resources(&mut input, list),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("nothing was rendered");
        return Ok(None);
    }
    Ok(Some(input))
}

/// A Kubernetes Secret's name and decoded data (`data` is base64, `stringData` plain).
fn secret(doc: &Value, what: &str) -> Result<(String, BTreeMap<String, String>)> {
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        bail!("{what} (Secret): metadata.name is required");
    }
    let what = format!("{what} (Secret {name})");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("kube-system");
    if ns != "kube-system" {
        bail!(
            "{what}: metadata.namespace: {ns:?} is not read (valid: kube-system, where Calico reads BGP passwords)"
        );
    }
    let mut out = BTreeMap::new();
    if let Some(data) = doc.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v.as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| anyhow::anyhow!("{what}: data.{k}: not base64 ({e})"))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{what}: data.{k}: not UTF-8 text"))?;
            out.insert(k.clone(), text);
        }
    }
    if let Some(data) = doc.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            let Some(s) = v.as_str() else {
                bail!("{what}: stringData.{k}: must be a string");
            };
            out.insert(k.clone(), s.to_string());
        }
    }
    Ok((name.to_string(), out))
}

/// A `BlockAffinity` object: spec.node, spec.cidr, spec.state.
fn affinity(doc: &Value, what: &str) -> Result<Affinity> {
    let spec = doc.get("spec");
    let field = |f: &str| {
        spec.and_then(|s| s.get(f))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let what = format!("{what} (BlockAffinity)");
    let node = field("node");
    if node.is_empty() {
        bail!("{what}: spec.node is required");
    }
    let cidr_text = field("cidr");
    let cidr: ipnet::IpNet = cidr_text.parse().map_err(|_| {
        anyhow::anyhow!("{what}: spec.cidr: {cidr_text:?} is not a CIDR (valid: 10.244.0.0/26)")
    })?;
    let state = field("state");
    if !matches!(
        state.as_str(),
        "" | "confirmed" | "pending" | "pendingDeletion"
    ) {
        bail!(
            "{what}: spec.state: {state:?} is not valid (valid: confirmed, pending, pendingDeletion)"
        );
    }
    Ok(Affinity {
        node,
        cidr: cidr.trunc(),
        state,
    })
}
