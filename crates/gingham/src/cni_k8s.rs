//! The CNI plugin's Kubernetes path (Calico's `policy: {type: k8s}`): at ADD, the pod's
//! Namespace and Pod are read from the API server (the `kubernetes.kubeconfig` file, the
//! `k8s_api_root` and `policy.k8s_*` overrides, as Calico's plugin builds its client), and
//! become the WorkloadEndpoint's labels, profiles, service account and named ports through
//! `gingham_model::k8s::pod_to_workload_endpoint`, the conversion the controllers use. The
//! pod's Calico annotations are planned by `gingham_cni::PodPlan`. All of it happens before
//! anything is allocated, so an API server that cannot be reached fails ADD with nothing done.

use std::collections::BTreeMap;
use std::time::Duration;

use gingham_cni::{CniError, ErrorCode, NetConf, PodPlan};
use gingham_model::endpoint::WorkloadEndpointPort;
use gingham_model::k8s::{
    ANNOTATION_FLOATING_IPS, ANNOTATION_IP_ADDRS, ANNOTATION_POD_IP, ANNOTATION_POD_IPS, K8sPod,
    pod_to_workload_endpoint,
};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long ADD waits for the API server, in all (connecting, both reads).
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API says about the pod, for its WorkloadEndpoint.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod's labels and Calico's namespace, orchestrator and service-account labels.
    pub labels: BTreeMap<String, String>,
    /// `kns.<namespace>` and `ksa.<namespace>.<service account>`.
    pub profiles: Vec<String>,
    /// Named (and host) container ports.
    pub ports: Vec<WorkloadEndpointPort>,
    pub service_account: String,
    pub allow_spoofed_source_prefixes: Vec<IpNet>,
    /// What the pod's (and namespace's) Calico annotations ask for.
    pub plan: PodPlan,
}

fn api_error(msg: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Kubernetes, msg.to_string())
}

/// The API server's client configuration from the network configuration (`policy: {type:
/// k8s}` needs one).
async fn client_config(conf: &NetConf) -> Result<kube::Config, CniError> {
    configured(conf).await?.ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "network configuration: policy type \"k8s\" reads the pod from the Kubernetes API and needs kubernetes.kubeconfig (or kubernetes.k8s_api_root)",
        )
    })
}

/// The client configuration the network configuration gives (`kubernetes.kubeconfig`,
/// `k8s_api_root`, the `policy.k8s_*` overrides), as Calico's plugin builds its client; `None`
/// when it names no API server.
async fn configured(conf: &NetConf) -> Result<Option<kube::Config>, CniError> {
    let root = conf.k8s_api_root();
    let mut config = match (conf.kubeconfig(), &root) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!("network configuration field kubernetes.kubeconfig: {path}: {e}"),
                )
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    CniError::new(
                        ErrorCode::InvalidConfig,
                        format!("network configuration field kubernetes.kubeconfig: {path}: {e}"),
                    )
                })?
        }
        (None, Some(root)) => kube::Config::new(parse_root(root)?),
        (None, None) => return Ok(None),
    };
    if let Some(root) = &root {
        config.cluster_url = parse_root(root)?;
    }
    if let Some(p) = &conf.policy {
        if let Some(t) = p.k8s_auth_token.as_ref().filter(|t| !t.is_empty()) {
            config.auth_info.token = Some(t.clone().into());
        }
        if let Some(c) = p.k8s_client_certificate.as_ref().filter(|c| !c.is_empty()) {
            config.auth_info.client_certificate = Some(c.clone());
            config.auth_info.client_certificate_data = None;
        }
        if let Some(k) = p.k8s_client_key.as_ref().filter(|k| !k.is_empty()) {
            config.auth_info.client_key = Some(k.clone());
            config.auth_info.client_key_data = None;
        }
        if let Some(ca) = p
            .k8s_certificate_authority
            .as_ref()
            .filter(|c| !c.is_empty())
        {
            config.root_cert_file = Some(ca.into());
            config.root_cert = None;
        }
    }
    Ok(Some(config))
}

/// The Kubernetes datastore for Calico's `datastore_type: kubernetes`: the API server the
/// network configuration names (as for [`lookup`]), else `KUBECONFIG` or the pod's service
/// account, as Calico's plugin finds it. Every request is bounded by [`API_TIMEOUT`]; an API
/// server that cannot be reached (or does not serve Calico's CRDs) fails here, before anything
/// is allocated.
pub fn kdd_store(conf: &NetConf) -> Result<gingham_datastore_kdd::KddStore, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| api_error(format!("cannot start the Kubernetes client: {e}")))?;
    let (mut config, source) = match rt.block_on(configured(conf))? {
        Some(c) => {
            let source = conf.kubeconfig().map_or_else(
                || "network configuration field kubernetes.k8s_api_root".to_owned(),
                |k| format!("network configuration field kubernetes.kubeconfig {k}"),
            );
            (c, source)
        }
        None => {
            let c = rt.block_on(kube::Config::infer()).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "network configuration: datastore_type \"kubernetes\" needs the API server: set kubernetes.kubeconfig (or KUBECONFIG, or run in a pod): {e}"
                    ),
                )
            })?;
            (c, "KUBECONFIG or in-cluster".to_owned())
        }
    };
    config.connect_timeout = Some(API_TIMEOUT);
    config.read_timeout = Some(API_TIMEOUT);
    config.write_timeout = Some(API_TIMEOUT);
    gingham_datastore_kdd::KddStore::with_config(config, &source)
        .map_err(|e| CniError::new(ErrorCode::Datastore, format!("datastore: {e}")))
}

fn parse_root(root: &str) -> Result<http::Uri, CniError> {
    root.parse().map_err(|e| {
        CniError::new(
            ErrorCode::InvalidConfig,
            format!("network configuration field k8s_api_root {root:?} is not a URL: {e}"),
        )
    })
}

/// Reads the pod `ns/name` and its namespace from the API server, with a time limit.
pub fn lookup(conf: &NetConf, node: &str, ns: &str, name: &str) -> Result<PodInfo, CniError> {
    lookup_within(conf, node, ns, name, API_TIMEOUT)
}

/// [`lookup`] with another time limit.
fn lookup_within(
    conf: &NetConf,
    node: &str,
    ns: &str,
    name: &str,
    limit: Duration,
) -> Result<PodInfo, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| api_error(format!("cannot start the Kubernetes client: {e}")))?;
    let (namespace, pod, server) = rt.block_on(async {
        let mut config = client_config(conf).await?;
        config.connect_timeout = Some(limit);
        config.read_timeout = Some(limit);
        let server = config.cluster_url.to_string();
        let fetch = async {
            let client = kube::Client::try_from(config).map_err(|e| {
                api_error(format!("cannot make a Kubernetes client for {server}: {e}"))
            })?;
            let namespace = Api::<Namespace>::all(client.clone())
                .get(ns)
                .await
                .map_err(|e| read_error(&server, &format!("namespace {ns}"), e))?;
            let pod = Api::<Pod>::namespaced(client, ns)
                .get(name)
                .await
                .map_err(|e| read_error(&server, &format!("pod {ns}/{name}"), e))?;
            Ok::<_, CniError>((namespace, pod))
        };
        let (namespace, pod) = tokio::time::timeout(limit, fetch)
            .await
            .map_err(|_| {
                api_error(format!(
                    "the Kubernetes API server {server} did not answer within {:?} reading pod {ns}/{name}; nothing was allocated",
                    limit
                ))
            })??;
        Ok::<_, CniError>((namespace, pod, server))
    })?;
    let ns_annotations: BTreeMap<String, String> = namespace
        .metadata
        .annotations
        .unwrap_or_default()
        .into_iter()
        .collect();
    let pod = serde_json::to_value(&pod)
        .and_then(serde_json::from_value::<K8sPod>)
        .map_err(|e| {
            api_error(format!(
                "the pod {ns}/{name} from {server} cannot be read: {e}"
            ))
        })?;
    pod_info(conf, node, &pod, &ns_annotations)
}

/// The endpoint's share of a pod read from the API (pure; `lookup` does the reading).
pub fn pod_info(
    conf: &NetConf,
    node: &str,
    pod: &K8sPod,
    ns_annotations: &BTreeMap<String, String>,
) -> Result<PodInfo, CniError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let key = format!("{ns}/{}", pod.metadata.name);
    let plan = PodPlan::from_annotations(conf, &key, ns_annotations, &pod.metadata.annotations)?;
    // The conversion the controllers use, for what the API knows before the pod has an
    // address: this ADD decides the addresses (and floating IPs), not the pod's status.
    let mut p = pod.clone();
    p.status = Default::default();
    for a in [
        ANNOTATION_POD_IP,
        ANNOTATION_POD_IPS,
        ANNOTATION_IP_ADDRS,
        ANNOTATION_FLOATING_IPS,
    ] {
        p.metadata.annotations.remove(a);
    }
    p.spec.host_network = false;
    p.spec.node_name = node.to_owned();
    let wep = match pod_to_workload_endpoint(&p) {
        Ok(Ok(w)) => w,
        Ok(Err(why)) => {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                format!("pod {key}: no endpoint: {why:?}"),
            ));
        }
        Err(e) => {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                format!("pod {key}: {e}"),
            ));
        }
    };
    Ok(PodInfo {
        labels: wep.metadata.labels.into_iter().collect(),
        profiles: wep.spec.profiles,
        ports: wep.spec.ports,
        service_account: wep.spec.service_account_name,
        allow_spoofed_source_prefixes: wep.spec.allow_spoofed_source_prefixes,
        plan,
    })
}

fn read_error(server: &str, what: &str, e: kube::Error) -> CniError {
    match e {
        kube::Error::Api(s) if s.code == 404 => api_error(format!(
            "{what} is not in the Kubernetes API ({server}): {}; nothing was allocated",
            s.message
        )),
        other => api_error(format!(
            "cannot read {what} from the Kubernetes API server {server}: {other}; nothing was allocated"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> NetConf {
        NetConf::from_value(
            &serde_json::json!({"cniVersion": "1.0.0", "name": "k8s-pod-network",
            "type": "gingham", "policy": {"type": "k8s"}, "ipam": {"type": "calico-ipam"}}),
        )
        .unwrap()
    }

    fn pod(yaml: &str) -> K8sPod {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn a_pod_gives_labels_profiles_service_account_and_named_ports() {
        let p = pod(r#"
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  annotations:
    cni.projectcalico.org/ipAddrs: '["10.244.1.9"]'
spec:
  serviceAccountName: frontend
  containers:
  - name: c
    ports:
    - {name: http, containerPort: 8080}
    - {containerPort: 9090}
    - {name: dns, containerPort: 53, protocol: UDP}
status:
  podIP: 10.9.9.9
"#);
        let info = pod_info(&conf(), "node-1", &p, &BTreeMap::new()).unwrap();
        assert_eq!(info.labels["app"], "web");
        assert_eq!(info.labels["projectcalico.org/namespace"], "shop");
        assert_eq!(info.labels["projectcalico.org/orchestrator"], "k8s");
        assert_eq!(info.labels["projectcalico.org/serviceaccount"], "frontend");
        assert_eq!(info.profiles, vec!["kns.shop", "ksa.shop.frontend"]);
        assert_eq!(info.service_account, "frontend");
        let ports: Vec<(String, u16)> = info
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port))
            .collect();
        assert_eq!(
            ports,
            vec![("http".to_owned(), 8080), ("dns".to_owned(), 53)],
            "unnamed ports without a host port are not endpoint ports"
        );
        assert_eq!(
            info.plan.addresses,
            gingham_cni::PodAddresses::Requested(vec!["10.244.1.9".parse().unwrap()])
        );
    }

    #[test]
    fn namespace_pools_apply_when_the_pod_has_none() {
        let p = pod("metadata: {name: a, namespace: n}\n");
        let ns = BTreeMap::from([(
            "cni.projectcalico.org/ipv4pools".to_owned(),
            r#"["blue"]"#.to_owned(),
        )]);
        let info = pod_info(&conf(), "node-1", &p, &ns).unwrap();
        assert_eq!(info.plan.ipv4_pools, Some(vec!["blue".to_owned()]));
        assert_eq!(info.service_account, "default");
    }

    #[test]
    fn without_a_kubeconfig_policy_k8s_says_what_is_missing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt.block_on(client_config(&conf())).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig as u32);
        assert!(e.msg.contains("kubernetes.kubeconfig"), "{}", e.msg);
    }

    #[test]
    fn a_missing_kubeconfig_names_the_field_and_the_file() {
        let c = NetConf::from_value(&serde_json::json!({"cniVersion": "1.0.0", "name": "n",
            "type": "gingham", "policy": {"type": "k8s"},
            "kubernetes": {"kubeconfig": "/nonexistent/gingham-kubeconfig"}}))
        .unwrap();
        let e = lookup(&c, "node-1", "default", "p").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig as u32);
        assert!(
            e.msg.contains(
                "network configuration field kubernetes.kubeconfig: /nonexistent/gingham-kubeconfig"
            ),
            "{}",
            e.msg
        );
    }

    #[test]
    fn an_api_server_that_does_not_answer_is_given_up_in_time() {
        // Connections are accepted (the kernel's backlog) and never answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = NetConf::from_value(&serde_json::json!({"cniVersion": "1.0.0", "name": "n",
            "type": "gingham", "policy": {"type": "k8s"},
            "kubernetes": {"k8s_api_root": format!("http://127.0.0.1:{port}")}}))
        .unwrap();
        let started = std::time::Instant::now();
        let e =
            lookup_within(&c, "node-1", "default", "p", Duration::from_millis(500)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(e.code, ErrorCode::Kubernetes as u32, "{}", e.msg);
        assert!(e.msg.contains("nothing was allocated"), "{}", e.msg);
        drop(listener);
    }

    #[test]
    fn an_unreachable_api_server_is_a_kubernetes_error() {
        // A port nothing listens on: connection refused, at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = NetConf::from_value(&serde_json::json!({"cniVersion": "1.0.0", "name": "n",
            "type": "gingham", "policy": {"type": "k8s"},
            "kubernetes": {"k8s_api_root": format!("http://127.0.0.1:{port}")}}))
        .unwrap();
        let e = lookup(&c, "node-1", "default", "p").unwrap_err();
        assert_eq!(e.code, ErrorCode::Kubernetes as u32, "{}", e.msg);
        assert!(
            e.msg.contains("cannot read namespace default")
                && e.msg.contains("nothing was allocated"),
            "{}",
            e.msg
        );
    }
}
