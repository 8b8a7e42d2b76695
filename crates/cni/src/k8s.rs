//! A pod's Calico CNI annotations, read as Calico's plugin reads them at ADD (v3.33,
//! `cni-plugin/pkg/k8s`): pools (`ipv4pools`, `ipv6pools`, `ipFamilies`, from the namespace and
//! overridden by the pod) and the address annotations (`ipAddrs`, `ipAddrsNoIpam`) only with
//! Calico's IPAM; `ipAddrsNoIpam` and `floatingIPs` only when `feature_control` enables them.
//! Everything is checked here, before the plugin allocates anything.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gingham_model::k8s::{
    ANNOTATION_FLOATING_IPS, ANNOTATION_IP_ADDRS, ANNOTATION_IP_ADDRS_NO_IPAM,
    ANNOTATION_IP_FAMILIES, ANNOTATION_IPV4_POOLS, ANNOTATION_IPV6_POOLS,
};

use crate::{CniError, ErrorCode, NetConf};

/// Where the pod's addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodAddresses {
    /// IPAM chooses (from the pools the plan names, if any).
    Ipam,
    /// `ipAddrs`: these addresses, allocated from IPAM.
    Requested(Vec<IpAddr>),
    /// `ipAddrsNoIpam`: these addresses, IPAM bypassed.
    NoIpam(Vec<IpAddr>),
}

/// What the annotations ask of ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    pub ipv4_pools: Option<Vec<String>>,
    pub ipv6_pools: Option<Vec<String>>,
    /// From `ipFamilies`: which families get an address.
    pub families: Option<(bool, bool)>,
    pub addresses: PodAddresses,
    /// `floatingIPs`: external addresses NATed to the pod's address of the same family.
    pub floating_ips: Vec<String>,
}

fn invalid(pod: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, format!("pod {pod}: {msg}"))
}

/// A JSON list of strings, as Calico parses these annotations.
fn json_list(pod: &str, annotation: &str, value: &str) -> Result<Vec<String>, CniError> {
    serde_json::from_str::<Vec<String>>(value).map_err(|e| {
        invalid(
            pod,
            format!(
                "annotation {annotation}: failed to parse '{value}' as JSON: {e} (valid: a JSON list of strings, e.g. '[\"a\", \"b\"]')"
            ),
        )
    })
}

/// Calico's validateAndExtractIPs: a non-empty list with at most one IPv4 and one IPv6 address.
fn one_per_family(pod: &str, annotation: &str, value: &str) -> Result<Vec<IpAddr>, CniError> {
    let list = json_list(pod, annotation, value)?;
    if list.is_empty() {
        return Err(invalid(
            pod,
            format!("annotation \"{annotation}\" specified but empty"),
        ));
    }
    let (mut v4, mut v6) = (false, false);
    let mut out = Vec::new();
    for s in &list {
        let ip: IpAddr = s.parse().map_err(|_| {
            invalid(
                pod,
                format!("annotation \"{annotation}\": invalid IP format: {s}"),
            )
        })?;
        let seen = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if *seen {
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(invalid(
                pod,
                format!(
                    "cannot have more than one {family} address for \"{annotation}\" annotation"
                ),
            ));
        }
        *seen = true;
        out.push(ip);
    }
    Ok(out)
}

impl PodPlan {
    /// Reads the namespace's and the pod's annotations (`pod` is `namespace/name`, for
    /// messages) under the network configuration `conf`.
    pub fn from_annotations(
        conf: &NetConf,
        pod: &str,
        ns_annotations: &BTreeMap<String, String>,
        pod_annotations: &BTreeMap<String, String>,
    ) -> Result<PodPlan, CniError> {
        let get =
            |m: &BTreeMap<String, String>, k: &str| m.get(k).filter(|v| !v.is_empty()).cloned();
        let mut plan = PodPlan {
            ipv4_pools: None,
            ipv6_pools: None,
            families: None,
            addresses: PodAddresses::Ipam,
            floating_ips: Vec::new(),
        };
        let ipam_kind = conf
            .ipam
            .as_ref()
            .map(|i| i.kind.clone())
            .unwrap_or_default();
        if conf.calico_ipam() {
            // The namespace's annotation is the default; the pod's overrides it.
            let pick = |k: &str| get(pod_annotations, k).or_else(|| get(ns_annotations, k));
            if let Some(v) = pick(ANNOTATION_IPV4_POOLS) {
                plan.ipv4_pools = Some(json_list(pod, ANNOTATION_IPV4_POOLS, &v)?);
            }
            if let Some(v) = pick(ANNOTATION_IPV6_POOLS) {
                plan.ipv6_pools = Some(json_list(pod, ANNOTATION_IPV6_POOLS, &v)?);
            }
            if let Some(v) = pick(ANNOTATION_IP_FAMILIES) {
                let (mut v4, mut v6) = (false, false);
                for f in json_list(pod, ANNOTATION_IP_FAMILIES, &v)? {
                    match f.as_str() {
                        "IPv4" => v4 = true,
                        "IPv6" => v6 = true,
                        _ => {
                            return Err(invalid(
                                pod,
                                format!(
                                    "annotation {ANNOTATION_IP_FAMILIES}: error parsing ipFamilies: {v} (valid: \"IPv4\", \"IPv6\")"
                                ),
                            ));
                        }
                    }
                }
                plan.families = Some((v4, v6));
            }
        }
        let ip_addrs = get(pod_annotations, ANNOTATION_IP_ADDRS);
        let no_ipam = get(pod_annotations, ANNOTATION_IP_ADDRS_NO_IPAM);
        plan.addresses = match (ip_addrs, no_ipam) {
            (None, None) => PodAddresses::Ipam,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    pod,
                    "can't have both annotations: 'ipAddrs' and 'ipAddrsNoIpam' in use at the same time",
                ));
            }
            (None, Some(v)) => {
                if !conf.calico_ipam() {
                    return Err(invalid(
                        pod,
                        format!(
                            "ipAddrsNoIpam is not compatible with configured IPAM: {ipam_kind}"
                        ),
                    ));
                }
                if !conf.feature_control.ip_addrs_no_ipam {
                    return Err(invalid(
                        pod,
                        "requested feature is not enabled: ip_addrs_no_ipam (network configuration field feature_control.ip_addrs_no_ipam)",
                    ));
                }
                PodAddresses::NoIpam(one_per_family(pod, ANNOTATION_IP_ADDRS_NO_IPAM, &v)?)
            }
            (Some(v), None) => {
                if !conf.calico_ipam() {
                    return Err(invalid(
                        pod,
                        format!("ipAddrs is not compatible with configured IPAM: {ipam_kind}"),
                    ));
                }
                PodAddresses::Requested(one_per_family(pod, ANNOTATION_IP_ADDRS, &v)?)
            }
        };
        if let Some(v) = get(pod_annotations, ANNOTATION_FLOATING_IPS) {
            if !conf.feature_control.floating_ips {
                return Err(invalid(
                    pod,
                    "requested feature is not enabled: floating_ips (network configuration field feature_control.floating_ips)",
                ));
            }
            plan.floating_ips = json_list(pod, ANNOTATION_FLOATING_IPS, &v)?;
        }
        Ok(plan)
    }

    /// The network configuration with the plan's pools and families in its `ipam` section, as
    /// Calico's plugin rewrites the configuration it hands to IPAM.
    pub fn apply_to(&self, conf: &mut NetConf) {
        if self.ipv4_pools.is_none() && self.ipv6_pools.is_none() && self.families.is_none() {
            return;
        }
        let ipam = conf.ipam.get_or_insert_with(Default::default);
        if let Some(p) = &self.ipv4_pools {
            ipam.ipv4_pools = p.clone();
        }
        if let Some(p) = &self.ipv6_pools {
            ipam.ipv6_pools = p.clone();
        }
        if let Some((v4, v6)) = self.families {
            ipam.assign_ipv4 = Some(serde_json::Value::String(v4.to_string()));
            ipam.assign_ipv6 = Some(serde_json::Value::String(v6.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: serde_json::Value) -> NetConf {
        let mut v = serde_json::json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "gingham",
            "ipam": {"type": "calico-ipam"}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        NetConf::from_value(&v).unwrap()
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn plan(c: &NetConf, ns: &[(&str, &str)], pod: &[(&str, &str)]) -> Result<PodPlan, String> {
        PodPlan::from_annotations(c, "ns/p", &ann(ns), &ann(pod)).map_err(|e| e.msg)
    }

    #[test]
    fn no_annotations_leave_ipam_alone() {
        let p = plan(&conf(serde_json::json!({})), &[], &[]).unwrap();
        assert_eq!(p.addresses, PodAddresses::Ipam);
        let mut c = conf(serde_json::json!({}));
        let before = c.clone();
        p.apply_to(&mut c);
        assert_eq!(c, before);
    }

    #[test]
    fn pod_pools_override_the_namespace_pools() {
        let c = conf(serde_json::json!({}));
        let p = plan(
            &c,
            &[
                (ANNOTATION_IPV4_POOLS, r#"["ns-pool"]"#),
                (ANNOTATION_IPV6_POOLS, r#"["fd00::/64"]"#),
            ],
            &[(ANNOTATION_IPV4_POOLS, r#"["pod-pool", "10.1.0.0/16"]"#)],
        )
        .unwrap();
        assert_eq!(
            p.ipv4_pools,
            Some(vec!["pod-pool".to_owned(), "10.1.0.0/16".to_owned()])
        );
        assert_eq!(p.ipv6_pools, Some(vec!["fd00::/64".to_owned()]));
        let mut c2 = c.clone();
        p.apply_to(&mut c2);
        let ipam = c2.ipam.unwrap();
        assert_eq!(ipam.ipv4_pools, vec!["pod-pool", "10.1.0.0/16"]);
        assert_eq!(ipam.ipv6_pools, vec!["fd00::/64"]);
    }

    #[test]
    fn ip_families_set_what_is_assigned() {
        let c = conf(serde_json::json!({}));
        let p = plan(&c, &[], &[(ANNOTATION_IP_FAMILIES, r#"["IPv6"]"#)]).unwrap();
        let mut c2 = c.clone();
        p.apply_to(&mut c2);
        let ipam = c2.ipam.unwrap();
        assert!(!ipam.assign_ipv4() && ipam.assign_ipv6());
        let e = plan(&c, &[], &[(ANNOTATION_IP_FAMILIES, r#"["IPv5"]"#)]).unwrap_err();
        assert!(e.contains("error parsing ipFamilies"), "{e}");
    }

    #[test]
    fn ip_addrs_are_one_per_family() {
        let c = conf(serde_json::json!({}));
        let p = plan(
            &c,
            &[],
            &[(ANNOTATION_IP_ADDRS, r#"["10.0.0.5", "fd00::5"]"#)],
        )
        .unwrap();
        assert_eq!(
            p.addresses,
            PodAddresses::Requested(vec![
                "10.0.0.5".parse().unwrap(),
                "fd00::5".parse().unwrap()
            ])
        );
        for (value, want) in [
            (r#"["10.0.0.5", "10.0.0.6"]"#, "more than one IPv4"),
            (r#"["fd00::5", "fd00::6"]"#, "more than one IPv6"),
            ("[]", "specified but empty"),
            (r#"["10.0.0.300"]"#, "invalid IP format: 10.0.0.300"),
            ("10.0.0.5", "failed to parse '10.0.0.5' as JSON"),
        ] {
            let e = plan(&c, &[], &[(ANNOTATION_IP_ADDRS, value)]).unwrap_err();
            assert!(e.contains(want) && e.contains("pod ns/p"), "{value}: {e}");
        }
    }

    #[test]
    fn address_annotations_need_calico_ipam_and_their_features() {
        let host_local = conf(serde_json::json!({"ipam": {"type": "host-local"}}));
        let e = plan(
            &host_local,
            &[],
            &[(ANNOTATION_IP_ADDRS, r#"["10.0.0.5"]"#)],
        )
        .unwrap_err();
        assert!(
            e.contains("ipAddrs is not compatible with configured IPAM: host-local"),
            "{e}"
        );
        // Pool annotations are ignored with another IPAM, as Calico ignores them.
        let p = plan(&host_local, &[], &[(ANNOTATION_IPV4_POOLS, "not json")]).unwrap();
        assert_eq!(p.ipv4_pools, None);

        let c = conf(serde_json::json!({}));
        let e = plan(&c, &[], &[(ANNOTATION_IP_ADDRS_NO_IPAM, r#"["10.0.0.5"]"#)]).unwrap_err();
        assert!(
            e.contains("requested feature is not enabled: ip_addrs_no_ipam"),
            "{e}"
        );
        let e = plan(
            &c,
            &[],
            &[
                (ANNOTATION_IP_ADDRS_NO_IPAM, r#"["10.0.0.5"]"#),
                (ANNOTATION_IP_ADDRS, r#"["10.0.0.5"]"#),
            ],
        )
        .unwrap_err();
        assert!(e.contains("can't have both annotations"), "{e}");
        let e = plan(&c, &[], &[(ANNOTATION_FLOATING_IPS, r#"["1.2.3.4"]"#)]).unwrap_err();
        assert!(
            e.contains("requested feature is not enabled: floating_ips"),
            "{e}"
        );

        let enabled = conf(
            serde_json::json!({"feature_control": {"ip_addrs_no_ipam": true, "floating_ips": true}}),
        );
        let p = plan(
            &enabled,
            &[],
            &[
                (ANNOTATION_IP_ADDRS_NO_IPAM, r#"["10.0.0.5"]"#),
                (ANNOTATION_FLOATING_IPS, r#"["1.2.3.4"]"#),
            ],
        )
        .unwrap();
        assert_eq!(
            p.addresses,
            PodAddresses::NoIpam(vec!["10.0.0.5".parse().unwrap()])
        );
        assert_eq!(p.floating_ips, vec!["1.2.3.4"]);
    }

    #[test]
    fn the_api_root_drops_the_old_api_suffix() {
        let c = conf(
            serde_json::json!({"policy": {"type": "k8s", "k8s_api_root": "http://10.0.0.1:6443/api/v1/"}}),
        );
        assert!(c.k8s_policy());
        assert_eq!(c.k8s_api_root().as_deref(), Some("http://10.0.0.1:6443"));
        let c = conf(
            serde_json::json!({"kubernetes": {"kubeconfig": "/etc/k", "k8s_api_root": "http://a:1"},
            "policy": {"type": "k8s", "k8s_api_root": "http://b:2"}}),
        );
        assert_eq!(c.k8s_api_root().as_deref(), Some("http://a:1"));
        assert_eq!(c.kubeconfig(), Some("/etc/k"));
    }
}
