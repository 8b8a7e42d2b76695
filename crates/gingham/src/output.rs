//! Output: the one writer every command prints through, and the rendering of resources
//! (calicoctl's table columns `ps` and `wide`, YAML, JSON and names).
//!
//! Standard output may be a pipe its reader closed (`gingham get ... | head -1`) or a full
//! device: a command never panics on it. A closed pipe ends the process quietly, as Unix tools
//! do (exit status 141, what a shell shows for a tool killed by SIGPIPE); any other write error
//! ends it with `error: writing output: ...` and exit status 1. A command that changed the
//! datastore before printing registers a note ([`note_if_output_fails`]) that is then printed
//! on stderr, so the user learns that the change was made although its report was lost.

use std::io::Write;
use std::sync::Mutex;

use anyhow::Result;
use gingham_model::{Kind, Resource};
use serde_json::Value;

use crate::resources_cmd::OutputFormat;

/// The exit status when standard output is a pipe that its reader closed: 128 + SIGPIPE, what
/// a shell reports for a tool that died of SIGPIPE.
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// What to tell the user on stderr if writing the rest of the output fails.
static NOTE_ON_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Registers a note printed on stderr if writing standard output fails from now on (e.g. that a
/// write was committed although its report cannot be printed).
pub fn note_if_output_fails(note: impl Into<String>) {
    if let Ok(mut n) = NOTE_ON_FAILURE.lock() {
        *n = Some(note.into());
    }
}

/// Writes to standard output (what `print!` and `println!` do in this binary) and flushes, so
/// that a failure is seen here and not lost at exit. Ends the process on failure (see the module
/// documentation).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        drop(out);
        output_failed(&e);
    }
}

/// Writes to standard error (what `eprint!` and `eprintln!` do in this binary). Errors are
/// ignored: there is nowhere left to report them.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// Ends the process after standard output failed with `e`.
pub fn output_failed(e: &std::io::Error) -> ! {
    let note = NOTE_ON_FAILURE.lock().ok().and_then(|mut n| n.take());
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        if let Some(note) = note {
            write_stderr(format_args!("{note}\n"));
        }
        std::process::exit(i32::from(EXIT_BROKEN_PIPE));
    }
    write_stderr(format_args!(
        "error: writing output: {}\n",
        io_error_words(e)
    ));
    if let Some(note) = note {
        write_stderr(format_args!("{note}\n"));
    }
    std::process::exit(1);
}

/// An I/O error in words: `no space left on device`, without Rust's `(os error 28)`.
pub fn io_error_words(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

/// Whether an error (anywhere in its chain) is a write to a pipe whose reader is gone.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `Kind name` or `Kind namespace/name`, as printed after a write.
pub fn qualified_name(r: &Resource) -> String {
    let m = r.meta();
    match &m.namespace {
        Some(ns) => format!("{} {ns}/{}", r.kind().name(), m.name),
        None => format!("{} {}", r.kind().name(), m.name),
    }
}

/// A column: header and how to read the cell from the resource's JSON form.
struct Column {
    header: &'static str,
    cell: fn(&Value) -> String,
}

fn s(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

macro_rules! col {
    ($h:expr, $ptr:expr) => {
        Column {
            header: $h,
            cell: |v| s(v, $ptr),
        }
    };
    ($h:expr, $ptr:expr, $default:expr) => {
        Column {
            header: $h,
            cell: |v| {
                let x = s(v, $ptr);
                if x.is_empty() {
                    $default.to_string()
                } else {
                    x
                }
            },
        }
    };
}

fn columns(kind: Kind, wide: bool) -> Vec<Column> {
    let mut cols = vec![col!("NAME", "/metadata/name")];
    let extra: Vec<Column> = match kind {
        Kind::NetworkPolicy
        | Kind::GlobalNetworkPolicy
        | Kind::StagedNetworkPolicy
        | Kind::StagedGlobalNetworkPolicy => {
            let mut c = vec![col!("TIER", "/spec/tier", "default")];
            if wide {
                c.push(col!("ORDER", "/spec/order"));
                c.push(col!("SELECTOR", "/spec/selector", "all()"));
            }
            c
        }
        Kind::StagedKubernetesNetworkPolicy => vec![col!("ACTION", "/spec/stagedAction", "Set")],
        Kind::Tier => vec![col!("ORDER", "/spec/order")],
        Kind::IpPool => {
            let mut c = vec![col!("CIDR", "/spec/cidr")];
            if wide {
                c.push(col!("NAT", "/spec/natOutgoing", "false"));
                c.push(col!("IPIPMODE", "/spec/ipipMode", "Never"));
                c.push(col!("VXLANMODE", "/spec/vxlanMode", "Never"));
                c.push(col!("DISABLED", "/spec/disabled", "false"));
                c.push(col!("DISABLEBGPEXPORT", "/spec/disableBGPExport", "false"));
            }
            c.push(col!("SELECTOR", "/spec/nodeSelector", "all()"));
            c
        }
        Kind::HostEndpoint => {
            let mut c = vec![col!("NODE", "/spec/node")];
            if wide {
                c.push(col!("INTERFACE", "/spec/interfaceName"));
                c.push(col!("IPS", "/spec/expectedIPs"));
                c.push(col!("PROFILES", "/spec/profiles"));
            }
            c
        }
        Kind::WorkloadEndpoint => {
            // calicoctl shows WORKLOAD first; NAME moves to the wide columns.
            cols.clear();
            let mut c = vec![
                col!("WORKLOAD", "/spec/pod"),
                col!("NODE", "/spec/node"),
                col!("NETWORKS", "/spec/ipNetworks"),
                col!("INTERFACE", "/spec/interfaceName"),
            ];
            if wide {
                c.push(col!("NAME", "/metadata/name"));
                c.push(col!("PROFILES", "/spec/profiles"));
            }
            c
        }
        Kind::Node => {
            if wide {
                vec![
                    col!("ASN", "/spec/bgp/asNumber", "(64512)"),
                    col!("IPV4", "/spec/bgp/ipv4Address"),
                    col!("IPV6", "/spec/bgp/ipv6Address"),
                ]
            } else {
                vec![]
            }
        }
        Kind::BgpPeer => vec![
            col!("PEERIP", "/spec/peerIP"),
            col!("NODE", "/spec/node", "(global)"),
            col!("ASN", "/spec/asNumber"),
        ],
        Kind::BgpConfiguration => vec![
            col!("LOGSEVERITY", "/spec/logSeverityScreen", "Info"),
            col!("MESHENABLED", "/spec/nodeToNodeMeshEnabled", "true"),
            col!("ASNUMBER", "/spec/asNumber", "64512"),
        ],
        Kind::NetworkSet | Kind::GlobalNetworkSet => {
            if wide {
                vec![col!("NETS", "/spec/nets")]
            } else {
                vec![]
            }
        }
        Kind::IpReservation => vec![col!("CIDRS", "/spec/reservedCIDRs")],
        Kind::BlockAffinity => vec![
            col!("NODE", "/spec/node"),
            col!("CIDR", "/spec/cidr"),
            col!("STATE", "/spec/state"),
        ],
        _ => vec![],
    };
    cols.extend(extra);
    cols
}

/// A list of one kind, as calicoctl prints it: `kind: <Kind>List` with the items.
fn typed_list(kind: Kind, resources: &[Resource]) -> serde_json::Value {
    let mut v = gingham_model::list_value(resources);
    v["apiVersion"] = "projectcalico.org/v3".into();
    v["kind"] = format!("{}List", kind.name()).into();
    v
}

/// Renders resources in the requested format. `single` means specific names were asked for
/// (YAML/JSON of one resource is then printed bare, not as a List).
pub fn render(
    kind: Kind,
    resources: &[Resource],
    format: OutputFormat,
    show_namespace: bool,
    single: bool,
) -> Result<String> {
    Ok(match format {
        OutputFormat::Yaml => {
            if single && resources.len() == 1 {
                gingham_model::to_yaml(resources)
            } else {
                let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
                serde_saphyr::to_string_with_options(&typed_list(kind, resources), options)?
            }
        }
        OutputFormat::Json => {
            let mut s = if single && resources.len() == 1 {
                gingham_model::to_json(resources)
            } else {
                serde_json::to_string_pretty(&typed_list(kind, resources))?
            };
            s.push('\n');
            s
        }
        OutputFormat::Name => resources
            .iter()
            .map(|r| format!("{}/{}\n", kind.name().to_lowercase(), r.meta().name))
            .collect(),
        OutputFormat::Ps | OutputFormat::Wide => {
            let cols = columns(kind, format == OutputFormat::Wide);
            let mut header: Vec<String> = Vec::new();
            if show_namespace {
                header.push("NAMESPACE".into());
            }
            header.extend(cols.iter().map(|c| c.header.to_owned()));
            let mut rows = vec![header];
            for r in resources {
                let v = r.to_value();
                let mut row = Vec::new();
                if show_namespace {
                    row.push(s(&v, "/metadata/namespace"));
                }
                row.extend(cols.iter().map(|c| (c.cell)(&v)));
                rows.push(row);
            }
            table(&rows)
        }
    })
}

/// Policies in the wide table with their rules' hit counters: one row per rule (direction,
/// index, action, packets and bytes summed across the nodes; `-` when no node answered), one
/// row of `-` for a policy without rules.
pub fn render_with_hits(
    kind: Kind,
    resources: &[Resource],
    show_namespace: bool,
    hits: &crate::hits::NodeHits,
) -> String {
    let cols = columns(kind, true);
    let mut header: Vec<String> = Vec::new();
    if show_namespace {
        header.push("NAMESPACE".into());
    }
    header.extend(cols.iter().map(|c| c.header.to_owned()));
    header.extend(["DIRECTION", "RULE", "ACTION", "PACKETS", "BYTES"].map(String::from));
    let mut rows = vec![header];
    let kind_label = kind.name().to_lowercase();
    for r in resources {
        let v = r.to_value();
        let mut base = Vec::new();
        if show_namespace {
            base.push(s(&v, "/metadata/namespace"));
        }
        base.extend(cols.iter().map(|c| (c.cell)(&v)));
        let policy = match &r.meta().namespace {
            Some(ns) => format!("{ns}/{}", r.meta().name),
            None => r.meta().name.clone(),
        };
        let mut any = false;
        for direction in ["ingress", "egress"] {
            let rules = v
                .pointer(&format!("/spec/{direction}"))
                .and_then(Value::as_array);
            for (i, rule) in rules.into_iter().flatten().enumerate() {
                any = true;
                let key = crate::hits::RuleKey {
                    kind: kind_label.clone(),
                    policy: policy.clone(),
                    direction: direction.into(),
                    rule: i,
                };
                let (packets, bytes) = match hits.get(&key) {
                    Some(h) => (h.packets.to_string(), h.bytes.to_string()),
                    None => ("-".into(), "-".into()),
                };
                let mut row = base.clone();
                row.extend([
                    direction.to_owned(),
                    i.to_string(),
                    s(rule, "/action"),
                    packets,
                    bytes,
                ]);
                rows.push(row);
            }
        }
        if !any {
            let mut row = base;
            row.extend(["-"; 5].map(String::from));
            rows.push(row);
        }
    }
    table(&rows)
}

/// Left-aligned columns separated by three spaces, as calicoctl and kubectl print them.
pub fn table(rows: &[Vec<String>]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; ncols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_in_words() {
        let e = std::io::Error::from_raw_os_error(28);
        assert_eq!(io_error_words(&e), "no space left on device");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["NAME".to_string(), "TIER".to_string()],
            vec!["deny-ssh-dashboard".to_string(), "default".to_string()],
            vec!["a".to_string(), "security".to_string()],
        ];
        assert_eq!(
            table(&rows),
            "NAME                 TIER\ndeny-ssh-dashboard   default\na                    security\n"
        );
    }
}
