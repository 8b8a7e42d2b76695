//! `gingham selector check|match|eval`: the selector language from the command line.
//! The output of these three commands is what users script against: keep it stable.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use gingham_model::quote;
use gingham_selector::Selector;
use serde::Deserialize;

use crate::Exit;

#[derive(Debug, Subcommand)]
pub enum SelectorCmd {
    /// Parses EXPR and prints its canonical form, or the parse error (exit 1).
    Check { expr: String },
    /// Prints `true` (exit 0) or `false` (exit 1): whether EXPR matches the labels key=value...
    Match {
        expr: String,
        /// Labels as key=value (a bare key means an empty value).
        labels: Vec<String>,
    },
    /// Reads JSON lines {"selector": "...", "labels": {...}} from stdin and writes one JSON line
    /// per input, in order: {"matches": true|false} or {"error": "..."}.
    Eval,
}

pub fn run(cmd: &SelectorCmd) -> Result<Exit> {
    match cmd {
        SelectorCmd::Check { expr } => match Selector::parse(expr) {
            Ok(sel) => {
                println!("{sel}");
                Ok(Exit::Ok)
            }
            Err(e) => {
                eprintln!("invalid selector {}: {e}", quote(expr));
                Ok(Exit::UserError)
            }
        },
        SelectorCmd::Match { expr, labels } => {
            let sel = Selector::parse(expr)
                .map_err(|e| anyhow::anyhow!("invalid selector {}: {e}", quote(expr)))?;
            let labels = parse_labels(labels)?;
            let m = sel.matches(&labels);
            println!("{m}");
            Ok(if m { Exit::Ok } else { Exit::UserError })
        }
        SelectorCmd::Eval => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut line = Vec::new();
            let mut n = 0usize;
            loop {
                line.clear();
                if input
                    .read_until(b'\n', &mut line)
                    .context("cannot read stdin")?
                    == 0
                {
                    break;
                }
                n += 1;
                let answer = match std::str::from_utf8(&line) {
                    // One line that is not text gets its own answer; the stream goes on.
                    Err(e) => serde_json::json!({"error": format!(
                        "line {n}: not valid UTF-8 (first bad byte at column {})",
                        e.valid_up_to() + 1
                    )}),
                    Ok(text) if text.trim().is_empty() => continue,
                    Ok(text) => eval_line(text)
                        .unwrap_or_else(|e| serde_json::json!({"error": format!("line {n}: {e}")})),
                };
                let written = serde_json::to_writer(&mut out, &answer)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                if let Err(e) = written {
                    crate::output::output_failed(&e);
                }
            }
            if let Err(e) = out.flush() {
                crate::output::output_failed(&e);
            }
            Ok(Exit::Ok)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalInput {
    selector: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn eval_line(line: &str) -> Result<serde_json::Value, String> {
    let input: EvalInput = serde_json::from_str(line).map_err(|e| {
        format!("expected {{\"selector\": \"...\", \"labels\": {{\"key\": \"value\"}}}}: {e}")
    })?;
    let sel = Selector::parse(&input.selector)
        .map_err(|e| format!("invalid selector {}: {e}", quote(&input.selector)))?;
    Ok(serde_json::json!({"matches": sel.matches(&input.labels)}))
}

fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for a in args {
        let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
        if k.is_empty() {
            bail!("label {} has no key (expected key=value)", quote(a));
        }
        labels.insert(k.to_owned(), v.to_owned());
    }
    Ok(labels)
}
