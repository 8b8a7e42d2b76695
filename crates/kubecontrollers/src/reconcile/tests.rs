use std::sync::Arc;

use gingham_datastore::mem::MemStore;
use gingham_model::k8s::{
    ISOLATION_ANNOTATION, K8sMeta, K8sNamespace, K8sNetworkPolicy, K8sPod, K8sServiceAccount,
};
use gingham_model::node::OrchRef;
use gingham_model::{Action, Kind, Node, Resource, WorkloadEndpoint};

use super::*;

fn client() -> Client {
    Client::new(Arc::new(MemStore::new()))
}

fn meta(ns: Option<&str>, name: &str, labels: &[(&str, &str)]) -> K8sMeta {
    K8sMeta {
        name: name.into(),
        namespace: ns.map(Into::into),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        ..K8sMeta::default()
    }
}

fn np(ns: &str, name: &str, app: &str) -> K8sNetworkPolicy {
    let mut p = K8sNetworkPolicy {
        metadata: meta(Some(ns), name, &[]),
        ..K8sNetworkPolicy::default()
    };
    p.spec
        .pod_selector
        .match_labels
        .insert("app".into(), app.into());
    p
}

fn names(client: &Client, kind: Kind) -> Vec<String> {
    client
        .list(kind, None)
        .expect("lists")
        .0
        .iter()
        .map(|r| match &r.meta().namespace {
            Some(ns) => format!("{ns}/{}", r.name()),
            None => r.name().to_owned(),
        })
        .collect()
}

fn policy(client: &Client, ns: &str, name: &str) -> gingham_model::NetworkPolicy {
    match client
        .get(Kind::NetworkPolicy, Some(ns), name)
        .expect("stored")
    {
        Resource::NetworkPolicy(p) => p,
        other => panic!("not a policy: {other:?}"),
    }
}

fn profile(client: &Client, name: &str) -> gingham_model::Profile {
    match client.get(Kind::Profile, None, name).expect("stored") {
        Resource::Profile(p) => p,
        other => panic!("not a profile: {other:?}"),
    }
}

#[test]
fn policies_are_created_replaced_and_orphans_removed() {
    let c = client();
    // Someone's own policy in the same namespace, and a namespace profile: never touched.
    let own = gingham_model::load_resources("test.yaml", 
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: mine, namespace: shop}\nspec: {selector: all()}\n",
    )
    .expect("loads");
    c.write_all(&own, WriteMode::Create).expect("writes");
    let nps = vec![np("shop", "web", "web"), np("shop", "db", "db")];
    let applied = sync(&c, Owner::Policies, &desired_policies(&nps)).expect("syncs");
    assert_eq!(
        applied,
        Applied {
            written: 2,
            deleted: 0
        }
    );
    assert_eq!(
        names(&c, Kind::NetworkPolicy),
        ["shop/knp.default.db", "shop/knp.default.web", "shop/mine"]
    );
    let web = policy(&c, "shop", "knp.default.web");
    assert_eq!(web.spec.order, Some(1000.0));
    assert!(
        web.spec.selector.contains("app == 'web'"),
        "{}",
        web.spec.selector
    );

    // A second pass with nothing changed writes nothing.
    let again = sync(&c, Owner::Policies, &desired_policies(&nps)).expect("syncs");
    assert_eq!(again, Applied::default());

    // web changes, db goes: web replaced, db's policy removed as an orphan, mine stays.
    let nps = vec![np("shop", "web", "shop")];
    let applied = sync(&c, Owner::Policies, &desired_policies(&nps)).expect("syncs");
    assert_eq!(
        applied,
        Applied {
            written: 1,
            deleted: 1
        }
    );
    assert_eq!(
        names(&c, Kind::NetworkPolicy),
        ["shop/knp.default.web", "shop/mine"]
    );
    assert!(
        policy(&c, "shop", "knp.default.web")
            .spec
            .selector
            .contains("app == 'shop'")
    );
}

#[test]
fn a_policy_that_cannot_be_converted_keeps_its_stored_copy() {
    let c = client();
    let nps = vec![np("shop", "web", "web")];
    sync(&c, Owner::Policies, &desired_policies(&nps)).expect("syncs");
    let mut bad = np("shop", "web", "web");
    bad.spec.policy_types = Some(vec!["Sideways".into()]);
    let d = desired_policies(&[bad]);
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    assert!(d.problems[0].contains("Sideways"), "{:?}", d.problems);
    let applied = sync(&c, Owner::Policies, &d).expect("syncs");
    assert_eq!(applied, Applied::default());
    assert_eq!(names(&c, Kind::NetworkPolicy), ["shop/knp.default.web"]);
}

#[test]
fn namespace_profiles_follow_labels_and_the_default_deny_annotation() {
    let c = client();
    let mut shop = K8sNamespace {
        metadata: meta(None, "shop", &[("team", "a")]),
    };
    let sa = K8sServiceAccount {
        metadata: meta(Some("shop"), "web", &[]),
    };
    sync(
        &c,
        Owner::ServiceAccounts,
        &desired_service_account_profiles([&sa]),
    )
    .expect("syncs");
    sync(&c, Owner::Namespaces, &desired_namespace_profiles([&shop])).expect("syncs");
    let p = profile(&c, "kns.shop");
    assert_eq!(p.spec.labels_to_apply["pcns.team"], "a");
    assert_eq!(
        p.spec.labels_to_apply["pcns.projectcalico.org/name"],
        "shop"
    );
    assert_eq!(p.spec.ingress[0].action, Action::Allow);

    shop.metadata.labels.insert("team".into(), "b".into());
    shop.metadata.annotations.insert(
        ISOLATION_ANNOTATION.into(),
        r#"{"ingress":{"isolation":"DefaultDeny"}}"#.into(),
    );
    sync(&c, Owner::Namespaces, &desired_namespace_profiles([&shop])).expect("syncs");
    let p = profile(&c, "kns.shop");
    assert_eq!(p.spec.labels_to_apply["pcns.team"], "b");
    assert_eq!(p.spec.ingress[0].action, Action::Deny);

    // The namespace goes: its profile goes, the service account's (another owner) stays.
    let applied = sync(&c, Owner::Namespaces, &desired_namespace_profiles([])).expect("syncs");
    assert_eq!(applied.deleted, 1);
    assert_eq!(names(&c, Kind::Profile), ["ksa.shop.web"]);
    let sa_profile = profile(&c, "ksa.shop.web");
    assert_eq!(
        sa_profile.spec.labels_to_apply["pcsa.projectcalico.org/name"],
        "web"
    );
}

fn endpoint_as_the_cni_plugin_writes_it(c: &Client) -> WorkloadEndpoint {
    let yaml = "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--a-k8s-web-eth0
  namespace: shop
  labels: {app: old, projectcalico.org/namespace: shop, projectcalico.org/orchestrator: k8s}
spec:
  orchestrator: k8s
  node: node-a
  pod: web
  endpoint: eth0
  containerID: abc
  interfaceName: cali1234567890a
  mac: ee:ee:ee:ee:ee:ee
  ipNetworks: [10.0.0.5/32]
  profiles: [kns.shop, ksa.shop.default]
";
    let r = gingham_model::load_resources("test.yaml", yaml).expect("loads");
    c.write_all(&r, WriteMode::Create).expect("writes");
    match c
        .get(Kind::WorkloadEndpoint, Some("shop"), "node--a-k8s-web-eth0")
        .expect("stored")
    {
        Resource::WorkloadEndpoint(w) => w,
        other => panic!("{other:?}"),
    }
}

fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> K8sPod {
    let mut p = K8sPod {
        metadata: meta(Some(ns), name, labels),
        ..K8sPod::default()
    };
    p.spec.node_name = node.into();
    p
}

#[test]
fn pod_labels_and_service_account_reach_the_endpoint_and_nothing_else() {
    let c = client();
    let before = endpoint_as_the_cni_plugin_writes_it(&c);
    let mut web = pod("shop", "web", "node-a", &[("app", "new")]);
    web.spec.service_account_name = "web-sa".into();
    // A pod without an endpoint (the plugin has not run yet): none is created.
    let other = pod("shop", "db", "node-a", &[("app", "db")]);
    let n = sync_pods(&c, [&web, &other]).expect("syncs");
    assert_eq!(n, 1);
    let after = match c
        .get(Kind::WorkloadEndpoint, Some("shop"), "node--a-k8s-web-eth0")
        .expect("stored")
    {
        Resource::WorkloadEndpoint(w) => w,
        other => panic!("{other:?}"),
    };
    assert_eq!(after.metadata.labels["app"], "new");
    assert_eq!(
        after.metadata.labels["projectcalico.org/serviceaccount"],
        "web-sa"
    );
    assert_eq!(after.spec.service_account_name, "web-sa");
    assert_eq!(after.spec.profiles, ["kns.shop", "ksa.shop.web-sa"]);
    // What the plugin owns is untouched.
    assert_eq!(after.spec.ip_networks, before.spec.ip_networks);
    assert_eq!(after.spec.interface_name, before.spec.interface_name);
    assert_eq!(after.spec.mac, before.spec.mac);
    assert_eq!(after.spec.container_id, before.spec.container_id);
    assert_eq!(
        names(&c, Kind::WorkloadEndpoint),
        ["shop/node--a-k8s-web-eth0"]
    );
    // Nothing left to change; and with the pod gone the endpoint stays (the plugin's DEL
    // removes it).
    assert_eq!(sync_pods(&c, [&web]).expect("syncs"), 0);
    assert_eq!(sync_pods(&c, []).expect("syncs"), 0);
    assert_eq!(
        names(&c, Kind::WorkloadEndpoint),
        ["shop/node--a-k8s-web-eth0"]
    );
}

#[test]
fn a_pod_on_another_node_does_not_relabel_an_endpoint() {
    let c = client();
    endpoint_as_the_cni_plugin_writes_it(&c);
    let moved = pod("shop", "web", "node-b", &[("app", "new")]);
    assert_eq!(sync_pods(&c, [&moved]).expect("syncs"), 0);
}

fn calico_node(name: &str, k8s: Option<&str>) -> Node {
    let mut n = Node::default();
    n.metadata.name = name.into();
    if let Some(k) = k8s {
        n.spec.orch_refs.push(OrchRef {
            node_name: k.into(),
            orchestrator: "k8s".into(),
        });
    }
    n
}

#[test]
fn stale_nodes_are_the_kubernetes_nodes_that_are_gone() {
    let calico = [
        calico_node("a", Some("a")),
        calico_node("b", Some("kb")),
        calico_node("c", None),
    ];
    let k8s = ["a".to_owned()].into_iter().collect();
    assert_eq!(
        stale_nodes(&calico, &k8s),
        [("b".to_owned(), "kb".to_owned())]
    );
}
