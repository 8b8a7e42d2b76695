//! Output of resources: calicoctl's table columns (`ps`, `wide`), YAML, JSON and names.

use anyhow::Result;
use gingham_model::{Kind, Resource};
use serde_json::Value;

use crate::resources_cmd::OutputFormat;

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
