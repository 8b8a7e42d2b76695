//! `gingham lint`: the problems of a policy set before any packet flows (codes, severities,
//! resources, fixes), from files or from the datastore. The findings are `gingham_calc::lint`'s;
//! this module loads the input as `reach` does and prints.

use anyhow::Result;
use clap::{Args, ValueEnum};
use gingham_calc::lint::{self, CODES, Finding, Severity};
use gingham_model::Kind;
use serde::Serialize;

use crate::Exit;
use crate::reach_cmd::{POLICY_KINDS, SourceArgs, load_kinds};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LintFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// `table`, or `json`: {"findings":[{"code","severity","resource","message","fix"}]}.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: LintFormat,
    /// Leave out findings with this code (repeatable).
    #[arg(long = "ignore", value_name = "CODE",
          value_parser = clap::builder::PossibleValuesParser::new(CODES.iter().map(|c| c.0)))]
    pub ignore: Vec<String>,
}

/// The codes, their severities and meanings, for `gingham lint --help`.
pub fn codes_help() -> String {
    let mut s = String::from(
        "Exit status: 1 when a finding of severity error remains (after --ignore), 0 otherwise.\n\nCodes:\n",
    );
    for (code, severity, meaning) in CODES {
        s.push_str(&format!("  {code} ({severity}): {meaning}\n"));
    }
    s
}

/// What `lint` reads from a datastore: what `reach` reads, and the nodes' IPAM blocks.
pub fn kinds() -> Vec<Kind> {
    let mut k = POLICY_KINDS.to_vec();
    k.push(Kind::BlockAffinity);
    k
}

/// `lint -o json`'s document.
#[derive(Serialize)]
pub struct Report<'a> {
    pub findings: &'a [Finding],
}

pub fn run(args: &LintArgs, client: &dyn Fn() -> Result<gingham_api::Client>) -> Result<Exit> {
    let Some((snap, _)) = load_kinds(&args.source, client, &kinds())? else {
        return Ok(Exit::UserError);
    };
    let findings: Vec<Finding> = lint::lint(&snap)
        .into_iter()
        .filter(|f| !args.ignore.iter().any(|c| c == f.code))
        .collect();
    match args.output {
        LintFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                findings: &findings
            })?
        ),
        LintFormat::Table => print!("{}", table(&findings)),
    }
    Ok(if findings.iter().any(|f| f.severity == Severity::Error) {
        Exit::UserError
    } else {
        Exit::Ok
    })
}

/// One header line per finding (severity, code, resource), then its message and fix indented;
/// a count at the end.
fn table(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "no findings\n".into();
    }
    let sev_w = "SEVERITY".len();
    let code_w = findings
        .iter()
        .map(|f| f.code.len())
        .chain(["CODE".len()])
        .max()
        .unwrap_or(4);
    let mut out = format!("{:<sev_w$}  {:<code_w$}  RESOURCE\n", "SEVERITY", "CODE");
    let indent = " ".repeat(sev_w + 2);
    for f in findings {
        out.push_str(&format!(
            "{:<sev_w$}  {:<code_w$}  {}\n",
            f.severity.as_str(),
            f.code,
            f.resource
        ));
        out.push_str(&format!("{indent}{}\n", f.message));
        out.push_str(&format!("{indent}fix: {}\n", f.fix));
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let parts: Vec<String> = [Severity::Error, Severity::Warning, Severity::Info]
        .into_iter()
        .filter(|s| count(*s) > 0)
        .map(|s| {
            let n = count(s);
            format!("{n} {s}{}", if n == 1 { "" } else { "s" })
        })
        .collect();
    out.push_str(&format!(
        "\n{} finding{}: {}\n",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        parts.join(", ")
    ));
    out
}
