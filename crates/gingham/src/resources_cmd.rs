//! `apply`, `create`, `replace`, `delete`, `get`, `label` and `convert`: calicoctl's resource
//! commands, with kubectl's conventions where calicoctl has none.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gingham_api::{Client, Outcome, WriteMode};
use gingham_model::{Kind, LoadedDocument, Resource};

use crate::Exit;
use crate::output;

/// Where resources come from: `-f FILE|DIR|-`.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// A file, a directory of .yaml/.yml/.json files, or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Descend into subdirectories of a directory given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace for namespaced resources that do not name one (default: default).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table (calicoctl's default columns).
    Ps,
    /// A table with more columns.
    Wide,
    Yaml,
    Json,
    /// kind/name only.
    Name,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The kind (calicoctl's names and short names: policy, gnp, hep, wep, ippool, profile...).
    pub kind: String,
    /// Names to show (all when omitted).
    pub names: Vec<String>,
    /// Namespace (namespaced kinds; default: default).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// ps, wide (for networkpolicy and globalnetworkpolicy: one row per rule with its hit
    /// counters, packets and bytes summed across the nodes' agents), yaml, json or name.
    #[arg(short = 'o', long, value_enum, default_value = "ps")]
    pub output: OutputFormat,
    /// With -o wide: read the hit counters from the agents of the lab whose state directory
    /// this is (`lab up --dir`), rather than from this node's agent.
    #[arg(long, value_name = "DIR")]
    pub lab: Option<PathBuf>,
    /// With -o wide and no --lab: the port of this node's agent's /metrics (its --health-port).
    #[arg(long, default_value_t = crate::agent::DEFAULT_HEALTH_PORT)]
    pub agent_port: u16,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// A kind and names, when no -f is given.
    pub target: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Do not fail on resources that do not exist.
    #[arg(long)]
    pub skip_not_exists: bool,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    pub kind: String,
    pub name: String,
    /// key=value to set; with --remove, the keys to remove.
    pub labels: Vec<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Replace a label that already has another value.
    #[arg(long)]
    pub overwrite: bool,
    /// Remove the named label keys instead of setting them.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub files: FileArgs,
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: OutputFormat,
}

/// Reads and validates every document of every file; on any error prints them all and returns
/// `None`, so nothing is written.
pub fn load_all(args: &FileArgs) -> Result<Option<Vec<Resource>>> {
    let mut sources = Vec::new();
    for f in &args.files {
        collect_sources(f, args.recursive, &mut sources)?;
    }
    let mut resources = Vec::new();
    let mut failed = false;
    let default_ns = args.namespace.as_deref().unwrap_or("default");
    for (name, text) in sources {
        match gingham_model::load_in_namespace(&name, &text, default_ns) {
            Ok(docs) => {
                for doc in docs {
                    print_notices(&doc);
                    resources.extend(doc.resources);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed {
        eprintln!("nothing was written");
        return Ok(None);
    }
    Ok(Some(resources))
}

fn print_notices(doc: &LoadedDocument) {
    for n in &doc.notices {
        eprintln!("notice: {n}");
    }
}

/// The largest input read from one file (or stdin): a policy file of 10,000 resources is a few
/// megabytes; a device such as /dev/zero is refused instead of read forever.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads one input whole, refusing more than [`MAX_INPUT_BYTES`] and text that is not UTF-8.
fn read_input(name: &str, reader: impl Read) -> Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        bail!(
            "{name}: larger than {} MiB, the limit for one input (split it into several files)",
            MAX_INPUT_BYTES / (1024 * 1024)
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Expands `-f` arguments into (display name, text) pairs.
pub fn collect_sources(arg: &str, recursive: bool, out: &mut Vec<(String, String)>) -> Result<()> {
    if arg == "-" {
        let text = read_input("<stdin>", std::io::stdin().lock())?;
        out.push(("<stdin>".into(), text));
        return Ok(());
    }
    let path = Path::new(arg);
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {arg}"))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        let mut visited = std::collections::HashSet::new();
        walk(path, recursive, &mut visited, &mut files)?;
        files.sort();
        if files.is_empty() {
            bail!("{arg}: no .yaml, .yml or .json files in this directory");
        }
        for f in files {
            let name = f.display().to_string();
            let file = std::fs::File::open(&f).with_context(|| format!("cannot read {name}"))?;
            let text = read_input(&name, file)?;
            out.push((name, text));
        }
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {arg}"))?;
        out.push((arg.to_owned(), read_input(arg, file)?));
    }
    Ok(())
}

/// Collects the resource files under `dir`. A directory is entered once, however many
/// symbolic links lead to it, so a link back to an ancestor (a loop) ends the descent instead
/// of yielding the same files again and again.
fn walk(
    dir: &Path,
    recursive: bool,
    visited: &mut std::collections::HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let real =
        std::fs::canonicalize(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !visited.insert(real) {
        tracing::debug!(dir = %dir.display(), "directory already read (symbolic link); skipped");
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        entries.push(
            entry
                .with_context(|| format!("cannot read {}", dir.display()))?
                .path(),
        );
    }
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                walk(&p, recursive, visited, out)?;
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

pub fn write(client: &Client, args: &FileArgs, mode: WriteMode) -> Result<Exit> {
    let Some(resources) = load_all(args)? else {
        return Ok(Exit::UserError);
    };
    if resources.is_empty() {
        eprintln!("no resources found in {}", args.files.join(", "));
        return Ok(Exit::UserError);
    }
    let outcomes = client.write_all(&resources, mode)?;
    output::note_if_output_fails(format!(
        "note: the write was committed ({} resource(s)); only its report could not be printed",
        resources.len()
    ));
    for (r, o) in resources.iter().zip(outcomes) {
        println!("{} {}", output::qualified_name(r), outcome_verb(&o));
    }
    Ok(Exit::Ok)
}

/// What a write did to one resource, in kubectl's words.
pub fn outcome_verb(o: &Outcome) -> &'static str {
    match o {
        Outcome::Created => "created",
        Outcome::Replaced => "configured",
        Outcome::Unchanged => "unchanged",
    }
}

pub fn delete(client: &Client, args: &DeleteArgs) -> Result<Exit> {
    let mut targets: Vec<(Kind, Option<String>, String)> = Vec::new();
    if !args.files.is_empty() {
        if !args.target.is_empty() {
            bail!("give either -f FILE or KIND NAME..., not both");
        }
        let fa = FileArgs {
            files: args.files.clone(),
            recursive: args.recursive,
            namespace: args.namespace.clone(),
        };
        let Some(resources) = load_all(&fa)? else {
            return Ok(Exit::UserError);
        };
        for r in resources {
            targets.push((r.kind(), r.meta().namespace.clone(), r.meta().name.clone()));
        }
    } else {
        let Some((kind, names)) = args.target.split_first() else {
            bail!("nothing to delete: give KIND NAME... or -f FILE");
        };
        if names.is_empty() {
            bail!("delete {kind}: name the resources to delete");
        }
        let kind = parse_kind(kind)?;
        let ns = namespace_for(kind, args.namespace.as_deref());
        for n in names {
            check_name_length(n)?;
            targets.push((kind, ns.clone(), n.clone()));
        }
    }
    if args.skip_not_exists {
        let mut missing = 0;
        let mut deleted = Vec::new();
        for (kind, ns, name) in &targets {
            match client.delete(*kind, ns.as_deref(), name, None) {
                Ok(r) => deleted.push(r),
                Err(gingham_api::ApiError::NotFound { .. }) => missing += 1,
                Err(e) => {
                    for r in &deleted {
                        eprintln!("{} deleted", output::qualified_name(r));
                    }
                    return Err(e.into());
                }
            }
        }
        output::note_if_output_fails(format!(
            "note: the delete was committed ({} resource(s)); only its report could not be printed",
            deleted.len()
        ));
        for r in &deleted {
            println!("{} deleted", output::qualified_name(r));
        }
        if missing > 0 {
            eprintln!("{missing} resource(s) did not exist (skipped)");
        }
        return Ok(Exit::Ok);
    }
    let deleted = client.delete_all(&targets)?;
    output::note_if_output_fails(format!(
        "note: the delete was committed ({} resource(s)); only its report could not be printed",
        deleted.len()
    ));
    for r in &deleted {
        println!("{} deleted", output::qualified_name(r));
    }
    Ok(Exit::Ok)
}

pub fn get(client: &Client, args: &GetArgs) -> Result<Exit> {
    let kind = parse_kind(&args.kind)?;
    let resources = if args.names.is_empty() {
        let ns = if args.all_namespaces {
            None
        } else {
            namespace_for(kind, args.namespace.as_deref())
        };
        client.list(kind, ns.as_deref())?.0
    } else {
        let ns = namespace_for(kind, args.namespace.as_deref());
        let mut out = Vec::new();
        for n in &args.names {
            check_name_length(n)?;
            out.push(client.get(kind, ns.as_deref(), n)?);
        }
        out
    };
    let show_ns = kind.is_namespaced() && args.all_namespaces;
    if args.output == OutputFormat::Wide
        && matches!(kind, Kind::NetworkPolicy | Kind::GlobalNetworkPolicy)
    {
        let hits = match &args.lab {
            Some(dir) => crate::hits::from_lab(dir)?,
            None => crate::hits::from_local(args.agent_port),
        };
        if let Some(note) = hits.note() {
            eprintln!("note: {note}");
        }
        print!(
            "{}",
            output::render_with_hits(kind, &resources, show_ns, &hits)
        );
        return Ok(Exit::Ok);
    }
    print!(
        "{}",
        output::render(
            kind,
            &resources,
            args.output,
            show_ns,
            !args.names.is_empty()
        )?
    );
    Ok(Exit::Ok)
}

pub fn label(client: &Client, args: &LabelArgs) -> Result<Exit> {
    check_name_length(&args.name)?;
    let kind = parse_kind(&args.kind)?;
    let ns = namespace_for(kind, args.namespace.as_deref());
    let mut changes = BTreeMap::new();
    if args.labels.is_empty() {
        bail!("label: give key=value pairs (or keys with --remove)");
    }
    for l in &args.labels {
        if args.remove {
            changes.insert(l.clone(), None);
        } else {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("label {} is not key=value", gingham_model::quote(l)))?;
            changes.insert(k.to_owned(), Some(v.to_owned()));
        }
    }
    let r = client.label(kind, ns.as_deref(), &args.name, &changes, args.overwrite)?;
    output::note_if_output_fails(
        "note: the labels were committed; only the report could not be printed",
    );
    println!("{} labeled", output::qualified_name(&r));
    Ok(Exit::Ok)
}

pub fn convert(args: &ConvertArgs) -> Result<Exit> {
    let Some(resources) = load_all(&args.files)? else {
        return Ok(Exit::UserError);
    };
    match args.output {
        OutputFormat::Json => println!("{}", gingham_model::to_json(&resources)),
        OutputFormat::Yaml => print!("{}", gingham_model::to_yaml(&resources)),
        other => bail!("convert prints yaml or json, not {other:?}"),
    }
    Ok(Exit::Ok)
}

pub fn parse_kind(s: &str) -> Result<Kind> {
    Kind::from_cli_name(s).with_context(|| {
        format!(
            "unknown resource kind {} (valid: {})",
            gingham_model::quote(s),
            Kind::ALL
                .iter()
                .map(|k| k.name().to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Refuses a name longer than any resource's, without echoing it whole.
fn check_name_length(name: &str) -> Result<()> {
    if name.len() > gingham_model::names::MAX_SUBDOMAIN {
        bail!(
            "{}: no resource has a name this long (valid: at most {} characters)",
            gingham_model::quote(name),
            gingham_model::names::MAX_SUBDOMAIN
        );
    }
    Ok(())
}

fn namespace_for(kind: Kind, ns: Option<&str>) -> Option<String> {
    kind.is_namespaced()
        .then(|| ns.unwrap_or("default").to_owned())
}
