//! The resource table: the built-in kinds the double serves, and the kinds that stored
//! CustomResourceDefinitions add.

use serde_json::Value;

/// Where every object lives in the datastore, as kube-apiserver's default etcd prefix.
pub const REGISTRY_PREFIX: &str = "/registry/";

/// The datastore's name for the core group (the empty group).
pub const CORE_GROUP_KEY: &str = "core";

/// One served resource (one group, version and plural).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group, empty for the core group.
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Whether it has a `/status` subresource.
    pub status: bool,
    /// Served from a CustomResourceDefinition (no strategic merge patch).
    pub custom: bool,
    /// A custom resource's structural schema (its version's `openAPIV3Schema`).
    pub schema: Option<Value>,
}

impl Resource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, or `networkpolicies.networking.k8s.io`: how kube-apiserver names the resource in
    /// messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod`, or `NetworkPolicy.networking.k8s.io`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The datastore prefix of every object of this resource (all namespaces).
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() {
            CORE_GROUP_KEY
        } else {
            &self.group
        };
        format!("{REGISTRY_PREFIX}{group}/{}/", self.plural)
    }

    /// The datastore prefix of the objects in one namespace (or all, for `None`).
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The datastore key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.prefix()),
            _ => format!("{}{name}", self.prefix()),
        }
    }

    /// The verbs discovery lists.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    all: bool,
}

const fn b(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    all: bool,
) -> Builtin {
    Builtin {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        short_names,
        status,
        all,
    }
}

const BUILTINS: &[Builtin] = &[
    b("", "namespaces", "Namespace", false, &["ns"], true, false),
    b("", "pods", "Pod", true, &["po"], true, true),
    b(
        "",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
    ),
    b("", "nodes", "Node", false, &["no"], true, false),
    b("", "services", "Service", true, &["svc"], true, true),
    b("", "endpoints", "Endpoints", true, &["ep"], false, false),
    b("", "secrets", "Secret", true, &[], false, false),
    b("", "configmaps", "ConfigMap", true, &["cm"], false, false),
    b("", "events", "Event", true, &["ev"], false, false),
    b(
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        true,
        &[],
        false,
        false,
    ),
    b(
        "networking.k8s.io",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        false,
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        false,
    ),
    b("apps", "daemonsets", "DaemonSet", true, &["ds"], true, true),
    b(
        "apps",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
    ),
    b(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "roles",
        "Role",
        true,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        false,
        false,
    ),
    b(
        "coordination.k8s.io",
        "leases",
        "Lease",
        true,
        &[],
        false,
        false,
    ),
];

/// The built-in resources, in discovery order.
pub fn builtins() -> Vec<Resource> {
    BUILTINS
        .iter()
        .map(|b| Resource {
            group: b.group.into(),
            version: b.version.into(),
            plural: b.plural.into(),
            singular: b.kind.to_ascii_lowercase(),
            kind: b.kind.into(),
            namespaced: b.namespaced,
            short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
            categories: if b.all { vec!["all".into()] } else { vec![] },
            status: b.status,
            custom: false,
            schema: None,
        })
        .collect()
}

/// The built-in CustomResourceDefinition resource.
pub fn crd_resource() -> Resource {
    builtins()
        .into_iter()
        .find(|r| r.plural == "customresourcedefinitions")
        .expect("the CRD resource is built in")
}

/// The resources a stored CustomResourceDefinition serves (one per served version).
pub fn from_crd(crd: &Value) -> Vec<Resource> {
    let spec = &crd["spec"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        spec["names"]["plural"].as_str(),
        spec["names"]["kind"].as_str(),
    ) else {
        return vec![];
    };
    let singular = spec["names"]["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            Some(Resource {
                group: group.into(),
                version: v["name"].as_str()?.into(),
                plural: plural.into(),
                singular: singular.clone(),
                kind: kind.into(),
                namespaced,
                short_names: strings(&spec["names"]["shortNames"]),
                categories: strings(&spec["names"]["categories"]),
                status: v["subresources"]["status"].is_object(),
                custom: true,
                schema: Some(v["schema"]["openAPIV3Schema"].clone()).filter(|s| s.is_object()),
            })
        })
        .collect()
}
