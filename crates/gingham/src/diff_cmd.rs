//! `gingham diff` and `gingham apply --dry-run`: the connectivity a change gains and loses,
//! before anything is written.

use std::collections::HashMap;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use gingham_api::WriteMode;
use gingham_calc::input::PodPorts;
use gingham_calc::{diff, reach};
use gingham_model::Resource;

use crate::Exit;
use crate::output;
use crate::reach_cmd::{self, NO_PORTS, POLICY_KINDS};
use crate::resources_cmd::{self, FileArgs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// One line per pair: gained, or lost with its cause.
    Table,
    /// `{"gained":[{from,to,port,protocol}],"lost":[{from,to,port,protocol,cause}]}`.
    Json,
}

/// Which flows are compared.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The destination port; without it, every port the servers declare on either side (pods'
    /// container ports in files, named ports of endpoints), as `reach` does.
    #[arg(long)]
    pub port: Option<u16>,
    /// TCP, UDP, SCTP, ICMP or a protocol number (with --port, or for ICMP).
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: DiffFormat,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The cluster before the change: files or directories of Calico resources and Kubernetes
    /// Namespaces, Pods and NetworkPolicies (as `reach -f` reads them), or - for stdin.
    /// Repeatable. Without it, the datastore's resources.
    #[arg(long, value_name = "FILE|DIR")]
    pub before: Vec<String>,
    /// The cluster after the change, read the same way. Without it, the datastore's resources.
    #[arg(long, short = 'f', visible_alias = "filename", value_name = "FILE|DIR")]
    pub after: Vec<String>,
    /// Descend into subdirectories of the directories given.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `apply`, and with `--dry-run` the difference it would make instead of the write.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Write nothing: print what the apply would change (created / configured / unchanged) and
    /// the pairs of endpoints that would gain and lose access, as `gingham diff` prints them.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: the port compared (default: every port the endpoints declare).
    #[arg(long, requires = "dry_run")]
    pub port: Option<u16>,
    /// With --dry-run: the protocol compared.
    #[arg(long, requires = "dry_run", default_value = "TCP")]
    pub protocol: String,
    /// With --dry-run: table or json (the JSON of `gingham diff -o json`).
    #[arg(
        short = 'o',
        long,
        value_enum,
        requires = "dry_run",
        default_value = "table"
    )]
    pub output: DiffFormat,
}

pub fn diff(args: &DiffArgs, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    if args.before.is_empty() && args.after.is_empty() {
        bail!(
            "nothing to compare: give --before FILE|DIR and --after FILE|DIR (or -f), or one of them to compare with the datastore"
        );
    }
    let stdin = |side: &[String]| side.iter().any(|f| f == "-");
    if stdin(&args.before) && stdin(&args.after) {
        bail!("- (stdin) can be read by one side only: give --before or --after a file");
    }
    let proto = reach_cmd::protocol(&args.probe.protocol)?;
    reach_cmd::check_port(proto, &args.probe.protocol, args.probe.port)?;
    let side = |files: &[String]| -> Result<Option<(Vec<Resource>, PodPorts)>> {
        if files.is_empty() {
            Ok(Some((
                reach_cmd::load_datastore(&client()?)?,
                PodPorts::new(),
            )))
        } else {
            reach_cmd::load_files(files, args.recursive)
        }
    };
    // Both sides are read (and every input error of both printed) before giving up. Two sides
    // of files load at once, their messages printed in order.
    let (before, after) = if !args.before.is_empty() && !args.after.is_empty() {
        let (b, a) = std::thread::scope(|sc| {
            let after = sc.spawn(|| reach_cmd::load_files_quietly(&args.after, args.recursive));
            let before = reach_cmd::load_files_quietly(&args.before, args.recursive);
            (before, after.join())
        });
        let (before, before_messages) = b?;
        for m in before_messages {
            eprintln!("{m}");
        }
        let (after, after_messages) =
            a.map_err(|_| anyhow::anyhow!("reading --after's files failed"))??;
        for m in after_messages {
            eprintln!("{m}");
        }
        (before, after)
    } else {
        (side(&args.before)?, side(&args.after)?)
    };
    let (Some(before), Some(after)) = (before, after) else {
        return Ok(Exit::UserError);
    };
    let d = compare(before, after, proto, args.probe.port)?;
    print(&d, args.probe.output)?;
    Ok(Exit::Ok)
}

/// The difference between two clusters for the probes asked for: `port`, or every port the
/// servers declare on either side.
fn compare(
    before: (Vec<Resource>, PodPorts),
    after: (Vec<Resource>, PodPorts),
    proto: u8,
    port: Option<u16>,
) -> Result<diff::Diff> {
    let snap_before = reach_cmd::snapshot(&before.0, "before");
    let snap_after = reach_cmd::snapshot(&after.0, "after");
    let mut declared = reach::declared_ports(&snap_before, &before.1);
    declared.extend(reach::declared_ports(&snap_after, &after.1));
    declared.sort_unstable();
    declared.dedup();
    let probes = reach::probes(proto, port, &declared);
    if probes.is_empty() {
        bail!("{NO_PORTS}");
    }
    Ok(diff::diff(&snap_before, &snap_after, &probes)?)
}

fn print(d: &diff::Diff, format: DiffFormat) -> Result<()> {
    match format {
        DiffFormat::Json => println!("{}", serde_json::to_string_pretty(d)?),
        DiffFormat::Table => print!("{}", diff::render_table(d)),
    }
    Ok(())
}

/// `apply`: the write, or with `--dry-run` its plan and its difference in connectivity (the
/// datastore now against the datastore with the change), writing nothing.
pub fn apply(args: &ApplyArgs, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    if !args.dry_run {
        return resources_cmd::write(&client()?, &args.files, WriteMode::Apply);
    }
    let proto = reach_cmd::protocol(&args.protocol)?;
    reach_cmd::check_port(proto, &args.protocol, args.port)?;
    let Some(resources) = resources_cmd::load_all(&args.files)? else {
        return Ok(Exit::UserError);
    };
    if resources.is_empty() {
        eprintln!("no resources found in {}", args.files.files.join(", "));
        return Ok(Exit::UserError);
    }
    let client = client()?;
    let planned = client.dry_run(&resources, WriteMode::Apply)?;
    let before = reach_cmd::load_datastore(&client)?;
    let after = overlay(&before, planned.iter().map(|(_, r)| r));
    let d = compare(
        (before, PodPorts::new()),
        (after, PodPorts::new()),
        proto,
        args.port,
    )?;
    if args.output == DiffFormat::Table {
        for (o, r) in &planned {
            println!(
                "{} {} (dry run)",
                output::qualified_name(r),
                resources_cmd::outcome_verb(o)
            );
        }
        println!();
    }
    print(&d, args.output)?;
    Ok(Exit::Ok)
}

/// `stored` with `written` applied: a resource with the same key replaced in place, a new one
/// added. Only the kinds the engine reads are kept, as the datastore side reads only those.
fn overlay<'a>(stored: &[Resource], written: impl Iterator<Item = &'a Resource>) -> Vec<Resource> {
    let mut out = stored.to_vec();
    let mut at: HashMap<String, usize> =
        out.iter().enumerate().map(|(i, r)| (r.key(), i)).collect();
    for r in written.filter(|r| POLICY_KINDS.contains(&r.kind())) {
        match at.get(&r.key()) {
            Some(&i) => out[i] = r.clone(),
            None => {
                at.insert(r.key(), out.len());
                out.push(r.clone());
            }
        }
    }
    out
}
