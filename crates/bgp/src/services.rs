//! Kubernetes Services and EndpointSlices as confd's route generator reads them, and the
//! per-Service routes a node advertises.
//!
//! Calico v3.33's route generator (`confd/pkg/backends/calico/routes.go`) advertises, from a
//! node, a /32 (IPv4) or /128 (IPv6) for each cluster IP (when the default BGPConfiguration
//! has `serviceClusterIPs`), each external IP inside `serviceExternalIPs` and each
//! LoadBalancer ingress IP inside `serviceLoadBalancerIPs` of a Service it decides to
//! advertise (`advertiseThisService`): the node is not labelled
//! `node.kubernetes.io/exclude-from-external-load-balancers=true`; the Service is of type
//! ClusterIP, NodePort or LoadBalancer with a cluster IP; then either
//! `externalTrafficPolicy: Cluster` with a single-address LoadBalancer or external IP range
//! (advertised from every node), or a ready endpoint in an EndpointSlice of one of the
//! Service's IP families: on this node for `externalTrafficPolicy: Local`, anywhere for
//! other Services when LoadBalancer aggregation is `Disabled` (with aggregation, the default,
//! only the ranges are advertised for them).
//!
//! Objects are read from their Kubernetes JSON (a file's document or the API server's
//! answer), with the API server's defaults where a file may leave them out (`type`
//! ClusterIP, `clusterIPs` from `clusterIP`, `ipFamilies` from the cluster IPs).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The node label that keeps a node from advertising services.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the route generator reads of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `spec.type` (ClusterIP when absent).
    pub service_type: String,
    /// `spec.clusterIP`.
    pub cluster_ip: String,
    /// `spec.clusterIPs` (`[clusterIP]` when absent).
    pub cluster_ips: Vec<String>,
    /// `spec.ipFamilies` (`IPv4`/`IPv6`; from the cluster IPs when absent).
    pub ip_families: Vec<String>,
    /// `spec.externalTrafficPolicy` (empty when absent).
    pub external_traffic_policy: String,
    /// `spec.externalIPs`.
    pub external_ips: Vec<String>,
    /// `spec.loadBalancerIP`.
    pub load_balancer_ip: String,
    /// `status.loadBalancer.ingress[].ip`.
    pub ingress_ips: Vec<String>,
}

/// What the route generator reads of an EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label (empty: the slice belongs to no Service).
    pub service_name: String,
    /// `addressType`: `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// `(conditions.ready, nodeName)` of each endpoint.
    pub endpoints: Vec<(Option<bool>, Option<String>)>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn strings_at(v: &Value, path: &[&str], what: &str) -> Result<Vec<String>, String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return Ok(Vec::new()),
        }
    }
    match cur {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what}: {}: must be a list of strings", path.join(".")))
            })
            .collect(),
        _ => Err(format!(
            "{what}: {}: must be a list of strings",
            path.join(".")
        )),
    }
}

fn metadata(doc: &Value, kind: &str, what: &str) -> Result<(String, String), String> {
    let name = str_at(doc, &["metadata", "name"]);
    if name.is_empty() {
        return Err(format!("{what} ({kind}): metadata.name is required"));
    }
    let ns = str_at(doc, &["metadata", "namespace"]);
    let ns = if ns.is_empty() { "default" } else { ns };
    Ok((ns.to_string(), name.to_string()))
}

/// A Service from its Kubernetes JSON; `what` starts every message.
pub fn service(doc: &Value, what: &str) -> Result<Service, String> {
    let (namespace, name) = metadata(doc, "Service", what)?;
    let what = format!("{what} (Service {namespace}/{name})");
    let mut s = Service {
        namespace,
        name,
        service_type: str_at(doc, &["spec", "type"]).to_string(),
        cluster_ip: str_at(doc, &["spec", "clusterIP"]).to_string(),
        cluster_ips: strings_at(doc, &["spec", "clusterIPs"], &what)?,
        ip_families: strings_at(doc, &["spec", "ipFamilies"], &what)?,
        external_traffic_policy: str_at(doc, &["spec", "externalTrafficPolicy"]).to_string(),
        external_ips: strings_at(doc, &["spec", "externalIPs"], &what)?,
        load_balancer_ip: str_at(doc, &["spec", "loadBalancerIP"]).to_string(),
        ingress_ips: Vec::new(),
    };
    if let Some(ingress) = doc
        .get("status")
        .and_then(|s| s.get("loadBalancer"))
        .and_then(|l| l.get("ingress"))
        .and_then(Value::as_array)
    {
        s.ingress_ips = ingress
            .iter()
            .map(|i| str_at(i, &["ip"]).to_string())
            .filter(|ip| !ip.is_empty())
            .collect();
    }
    // The API server's defaults.
    if s.service_type.is_empty() {
        s.service_type = "ClusterIP".into();
    }
    if s.cluster_ips.is_empty() && !s.cluster_ip.is_empty() {
        s.cluster_ips = vec![s.cluster_ip.clone()];
    }
    if s.ip_families.is_empty() {
        s.ip_families = s
            .cluster_ips
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" }.to_string())
            .collect();
    }
    Ok(s)
}

/// An EndpointSlice from its Kubernetes JSON; `what` starts every message.
pub fn endpoint_slice(doc: &Value, what: &str) -> Result<EndpointSlice, String> {
    let (namespace, name) = metadata(doc, "EndpointSlice", what)?;
    let what = format!("{what} (EndpointSlice {namespace}/{name})");
    let address_type = str_at(doc, &["addressType"]).to_string();
    if !matches!(address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
        return Err(format!(
            "{what}: addressType: {address_type:?} is not valid (valid: IPv4, IPv6, FQDN)"
        ));
    }
    let mut endpoints = Vec::new();
    match doc.get("endpoints") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, e) in list.iter().enumerate() {
                let ready = match e.get("conditions").and_then(|c| c.get("ready")) {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => {
                        return Err(format!(
                            "{what}: endpoints[{i}].conditions.ready: must be true or false"
                        ));
                    }
                };
                let node = e
                    .get("nodeName")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                endpoints.push((ready, node));
            }
        }
        Some(_) => return Err(format!("{what}: endpoints: must be a list")),
    }
    Ok(EndpointSlice {
        namespace,
        name,
        service_name: str_at(doc, &["metadata", "labels", SERVICE_NAME_LABEL]).to_string(),
        address_type,
        endpoints,
    })
}

/// The service ranges of the default BGPConfiguration, as the route generator holds them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ranges {
    /// `serviceClusterIPs` is set (cluster IPs are advertised).
    pub cluster: bool,
    pub external: Vec<IpNet>,
    pub load_balancer: Vec<IpNet>,
    /// `serviceLoadBalancerAggregation` is not `Disabled`.
    pub aggregate: bool,
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn in_ranges(ranges: &[IpNet], ip: &str, single_only: bool) -> bool {
    let Some(ip) = parse_ip(ip) else { return false };
    ranges
        .iter()
        .any(|n| n.contains(&ip) && (!single_only || n.prefix_len() == n.max_prefix_len()))
}

/// confd's `advertiseThisService`.
fn advertise(
    svc: &Service,
    slices: &[&EndpointSlice],
    node: &str,
    excluded: bool,
    r: &Ranges,
) -> bool {
    if excluded {
        return false;
    }
    if !matches!(
        svc.service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        return false;
    }
    if svc.cluster_ip.is_empty() || svc.cluster_ip == "None" {
        return false;
    }
    let local = svc.external_traffic_policy == "Local";
    if svc.external_traffic_policy == "Cluster" {
        let single_lb = in_ranges(&r.load_balancer, &svc.load_balancer_ip, true)
            || svc
                .ingress_ips
                .iter()
                .any(|ip| in_ranges(&r.load_balancer, ip, true));
        if svc.service_type == "LoadBalancer" && single_lb {
            return true;
        }
        if svc
            .external_ips
            .iter()
            .any(|ip| in_ranges(&r.external, ip, true))
        {
            return true;
        }
    }
    if !local && r.aggregate {
        return false;
    }
    slices
        .iter()
        .filter(|s| svc.ip_families.contains(&s.address_type))
        .flat_map(|s| s.endpoints.iter())
        .filter(|(ready, _)| *ready != Some(false))
        .any(|(_, n)| !local || n.as_deref() == Some(node))
}

/// confd's `getAllRoutesForService`: the addresses with their full prefix length.
fn routes_of(svc: &Service, r: &Ranges, out: &mut Vec<String>) {
    let mut ips: Vec<&str> = Vec::new();
    if r.cluster {
        ips.extend(svc.cluster_ips.iter().map(String::as_str));
    }
    ips.extend(
        svc.external_ips
            .iter()
            .filter(|ip| in_ranges(&r.external, ip, false))
            .map(String::as_str),
    );
    ips.extend(
        svc.ingress_ips
            .iter()
            .filter(|ip| in_ranges(&r.load_balancer, ip, false))
            .map(String::as_str),
    );
    for ip in ips {
        // The API server validates cluster IPs; one from a file that is not an address is
        // left out rather than given to BIRD.
        if parse_ip(ip).is_none() {
            continue;
        }
        if ip.contains(':') {
            out.push(format!("{ip}/128"));
        } else {
            out.push(format!("{ip}/32"));
        }
    }
}

/// Every per-Service route `node` advertises, unsorted, possibly repeated.
pub(crate) fn service_routes(
    services: &[Service],
    slices: &[EndpointSlice],
    node: &str,
    excluded: bool,
    r: &Ranges,
) -> Vec<String> {
    let mut out = Vec::new();
    for svc in services {
        let mine: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| s.namespace == svc.namespace && s.service_name == svc.name)
            .collect();
        // confd looks at a Service only with its EndpointSlices: one with none is not
        // advertised, whatever its policy.
        if mine.is_empty() {
            continue;
        }
        if advertise(svc, &mine, node, excluded, r) {
            routes_of(svc, r, &mut out);
        }
    }
    out
}
