//! Table tests for defaulting: what a minimal resource becomes after loading.

mod common;

use gingham_model::{
    Action, AllowedUse, IpipMode, PolicyType, Resource, StagedAction, VxlanMode, apply_defaults,
};

fn one(text: &str) -> Resource {
    let mut r = common::load_text(text);
    assert_eq!(r.len(), 1);
    r.remove(0)
}

#[test]
fn policy_defaults() {
    // (rules, expected types)
    let cases: &[(&str, &[PolicyType])] = &[
        ("{}", &[PolicyType::Ingress]),
        ("{ingress: [{action: Allow}]}", &[PolicyType::Ingress]),
        ("{egress: [{action: Allow}]}", &[PolicyType::Egress]),
        (
            "{ingress: [{action: Allow}], egress: [{action: Deny}]}",
            &[PolicyType::Ingress, PolicyType::Egress],
        ),
        (
            "{types: [Egress], ingress: [{action: Allow}]}",
            &[PolicyType::Egress],
        ),
    ];
    for (spec, types) in cases {
        let r = one(&format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p}}\nspec: {spec}\n"
        ));
        let Resource::NetworkPolicy(p) = r else {
            panic!()
        };
        assert_eq!(p.spec.types, *types, "{spec}");
        assert_eq!(p.spec.tier, "default");
        assert_eq!(
            p.metadata.namespace.as_deref(),
            Some("default"),
            "calicoctl's default namespace"
        );
        assert_eq!(
            p.metadata
                .labels
                .get("projectcalico.org/tier")
                .map(String::as_str),
            Some("default")
        );
    }
    let r = one(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.p}\nspec: {tier: sec}\n",
    );
    assert_eq!(
        r.metadata()
            .labels
            .get("projectcalico.org/tier")
            .map(String::as_str),
        Some("sec")
    );
}

#[test]
fn staged_defaults() {
    let r = one(
        "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: s}\nspec: {}\n",
    );
    let Resource::StagedGlobalNetworkPolicy(p) = r else {
        panic!()
    };
    assert_eq!(p.spec.staged_action, Some(StagedAction::Set));
    assert_eq!(p.spec.types, vec![PolicyType::Ingress]);
    let r = one(
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: s}\nspec: {stagedAction: Delete}\n",
    );
    let Resource::StagedNetworkPolicy(p) = r else {
        panic!()
    };
    assert!(p.spec.types.is_empty(), "a Delete keeps an empty spec");
}

#[test]
fn tier_and_pool_defaults() {
    let Resource::Tier(t) =
        one("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\n")
    else {
        panic!()
    };
    assert_eq!(t.spec.default_action, Some(Action::Deny));
    assert_eq!(t.spec.order, None);

    let cases = [("10.0.0.0/16", 26), ("fd00::/48", 122)];
    for (cidr, bs) in cases {
        let Resource::IpPool(p) = one(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: \"{cidr}\"}}\n"
        )) else {
            panic!()
        };
        assert_eq!(p.spec.block_size, Some(bs), "{cidr}");
        assert_eq!(p.spec.ipip_mode, Some(IpipMode::Never));
        assert_eq!(p.spec.vxlan_mode, Some(VxlanMode::Never));
        assert_eq!(p.spec.node_selector, "all()");
        assert_eq!(
            p.spec.allowed_uses,
            vec![AllowedUse::Workload, AllowedUse::Tunnel]
        );
    }
}

#[test]
fn nets_are_normalised_where_calico_accepts_host_bits() {
    let Resource::GlobalNetworkSet(s) = one(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s}\nspec: {nets: [10.0.20.64/25, 192.168.1.1]}\n",
    ) else {
        panic!()
    };
    let nets: Vec<String> = s.spec.nets.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.20.0/25", "192.168.1.1/32"]);
    let Resource::GlobalNetworkPolicy(p) = one(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{action: Allow, source: {nets: [10.1.2.3]}}]}\n",
    ) else {
        panic!()
    };
    assert_eq!(p.spec.ingress[0].source.nets[0].to_string(), "10.1.2.3/32");
}

#[test]
fn workload_endpoint_defaults() {
    let Resource::WorkloadEndpoint(w) = one(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {namespace: ns1}\nspec: {node: rack1-host1, orchestrator: k8s, pod: web-1, endpoint: eth0, interfaceName: cali123}\n",
    ) else {
        panic!()
    };
    assert_eq!(w.metadata.name, "rack1--host1-k8s-web--1-eth0");
    assert_eq!(
        w.metadata
            .labels
            .get("projectcalico.org/namespace")
            .map(String::as_str),
        Some("ns1")
    );
    assert_eq!(
        w.metadata
            .labels
            .get("projectcalico.org/orchestrator")
            .map(String::as_str),
        Some("k8s")
    );
}

#[test]
fn defaults_are_idempotent() {
    for path in common::files("v3", &[".yaml", ".json"]) {
        for r in common::load_resources(&path) {
            let mut again = r.clone();
            apply_defaults(&mut again);
            assert_eq!(again, r, "{}", path.display());
        }
    }
}

#[test]
fn load_in_namespace_sets_missing_namespaces_only() {
    let text = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\n---\n\
                apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: b, namespace: other}\n---\n\
                apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: c}\nspec: {podSelector: {}}\n";
    let docs = gingham_model::load_in_namespace("ns.yaml", text, "team1").expect("loads");
    let r = gingham_model::LoadedDocument::all_resources(&docs);
    let ns: Vec<Option<&str>> = r.iter().map(|r| r.namespace()).collect();
    assert_eq!(ns, [Some("team1"), Some("other"), Some("team1")]);
}
