//! `gingham flows`: the agents' flow logs (see `gingham_agent::flows`), from one run directory
//! or from every node of a lab.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Seek as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use gingham_agent::flows::{FlowRecord, files};

use crate::Exit;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FlowsFormat {
    Table,
    /// `{"flows":[…]}`; with `--follow`, one record (JSON) per line.
    Json,
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Only this node's flows.
    #[arg(long)]
    pub node: Option<String>,
    /// Only denied flows.
    #[arg(long)]
    pub denied: bool,
    /// Keep printing new flows as they are logged.
    #[arg(long)]
    pub follow: bool,
    /// Only flows logged in this last period: a number and a unit (s, m, h, d), e.g. `5m`.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Duration>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: FlowsFormat,
    /// A node's run directory (the agent's `--run-dir`) to read instead of a lab's nodes.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The lab whose nodes' flows to read, when `--run-dir` is not given (if no lab is
    /// there: this node's run directory, `$CALICO_RUN_DIR` or /var/run/calico).
    #[arg(long, default_value = crate::lab::DEFAULT_DIR)]
    pub dir: PathBuf,
}

fn parse_since(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a period: a number and a unit (s, m, h, d), e.g. 5m");
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

/// The run directories to read, by node.
fn sources(args: &FlowsArgs) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    if let Some(dir) = &args.run_dir {
        out.insert(args.node.clone().unwrap_or_default(), dir.clone());
        return Ok(out);
    }
    if let Some(nodes) = crate::lab::node_run_dirs(&args.dir)? {
        for (node, dir) in nodes {
            if args.node.as_ref().is_none_or(|n| *n == node) {
                out.insert(node, dir);
            }
        }
        if let Some(n) = &args.node
            && out.is_empty()
        {
            bail!("the lab in {} has no node {n:?}", args.dir.display());
        }
        return Ok(out);
    }
    let run = std::env::var_os(gingham_agent::Config::RUN_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(gingham_agent::Config::DEFAULT_RUN_DIR));
    out.insert(args.node.clone().unwrap_or_default(), run);
    Ok(out)
}

fn keep(args: &FlowsArgs, r: &FlowRecord, after: Option<jiff::Timestamp>) -> bool {
    if args.denied && r.verdict != gingham_agent::flows::DENIED {
        return false;
    }
    if let Some(n) = &args.node
        && args.run_dir.is_none()
        && r.node != *n
    {
        return false;
    }
    match (after, r.time.parse::<jiff::Timestamp>()) {
        (Some(after), Ok(t)) => t >= after,
        _ => true,
    }
}

/// Reads the records of one file from `offset`; returns them and the offset reached.
fn read_from(path: &Path, offset: u64) -> Result<(Vec<FlowRecord>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(f);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 || !line.ends_with('\n') {
            // A line being written is read next time.
            break;
        }
        pos += n as u64;
        // A line that is not a record (cut by a crash) is skipped.
        if let Ok(r) = serde_json::from_str::<FlowRecord>(line.trim_end()) {
            out.push(r);
        }
    }
    Ok((out, pos))
}

fn row(r: &FlowRecord) -> Vec<String> {
    let peer = |name: &Option<String>, ip: &std::net::IpAddr| match name {
        Some(n) => format!("{n} ({ip})"),
        None => ip.to_string(),
    };
    vec![
        r.time.clone(),
        r.node.clone(),
        peer(&r.src, &r.src_ip),
        peer(&r.dst, &r.dst_ip),
        match r.port {
            Some(p) => format!("{}/{p}", r.protocol),
            None => r.protocol.clone(),
        },
        r.verdict.to_uppercase(),
        r.cause.clone(),
    ]
}

const HEADER: [&str; 7] = [
    "TIME",
    "NODE",
    "SOURCE",
    "DESTINATION",
    "PORT",
    "VERDICT",
    "CAUSE",
];

/// The records `args` selects (node, verdict, period) from every file of their run
/// directories, oldest first, and how far each file was read.
fn read_records(
    args: &FlowsArgs,
    sources: &BTreeMap<String, PathBuf>,
) -> Result<(Vec<FlowRecord>, BTreeMap<PathBuf, u64>)> {
    let after = args
        .since
        .map(|d| jiff::Timestamp::now() - jiff::SignedDuration::try_from(d).unwrap_or_default());
    let mut records = Vec::new();
    let mut offsets = BTreeMap::new();
    for dir in sources.values() {
        for path in files(dir) {
            let (rs, end) = read_from(&path, 0)?;
            records.extend(rs.into_iter().filter(|r| keep(args, r, after)));
            offsets.insert(path, end);
        }
    }
    records.sort_by(|a, b| a.time.cmp(&b.time));
    Ok((records, offsets))
}

/// What `flows -o json` prints for `args` (without `--follow`): `{"flows":[...]}`. The web
/// view (`gingham ui`) serves the same.
pub fn json_document(args: &FlowsArgs) -> Result<serde_json::Value> {
    let (records, _) = read_records(args, &sources(args)?)?;
    Ok(serde_json::json!({ "flows": records }))
}

pub fn run(args: &FlowsArgs) -> Result<Exit> {
    let sources = sources(args)?;
    let (records, mut offsets) = read_records(args, &sources)?;
    match (args.output, args.follow) {
        (FlowsFormat::Json, false) => {
            let doc = serde_json::json!({ "flows": records });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        (FlowsFormat::Json, true) => {
            for r in &records {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        (FlowsFormat::Table, _) => {
            let mut rows = vec![HEADER.iter().map(|s| (*s).to_owned()).collect()];
            rows.extend(records.iter().map(row));
            print!("{}", crate::output::table(&rows));
        }
    }
    if !args.follow {
        return Ok(Exit::Ok);
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut new = Vec::new();
        for dir in sources.values() {
            let [old, current] = files(dir);
            let at = offsets.get(&current).copied().unwrap_or(0);
            let len = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
            if len < at {
                // Rotated: the rest of the old file, then the new one from its start.
                let (rs, _) = read_from(&old, at)?;
                new.extend(rs);
                offsets.insert(current.clone(), 0);
            }
            let at = offsets.get(&current).copied().unwrap_or(0);
            let (rs, end) = read_from(&current, at)?;
            new.extend(rs);
            offsets.insert(current, end);
        }
        new.retain(|r| keep(args, r, None));
        new.sort_by(|a, b| a.time.cmp(&b.time));
        for r in &new {
            match args.output {
                FlowsFormat::Json => println!("{}", serde_json::to_string(r)?),
                FlowsFormat::Table => {
                    print!("{}", crate::output::table(&[row(r)]));
                }
            }
        }
    }
}
