//! Fixture tests: every v3 kind loads from realistic YAML/JSON and round-trips; legacy v1 and
//! Kubernetes inputs convert to the reviewed expected outputs (`*.expected.yaml`; regenerate
//! with `UPDATE_EXPECTED=1` and review the diff).

mod common;

use std::collections::BTreeSet;

use gingham_model::{Kind, LoadedDocument, Origin, Resource, load, to_json, to_yaml};

#[test]
fn every_v3_kind_has_a_fixture_that_loads() {
    let mut kinds = BTreeSet::new();
    for path in common::files("v3", &[".yaml", ".json"]) {
        let docs = common::load_file(&path);
        for d in &docs {
            assert_eq!(d.origin, Origin::V3, "{}", path.display());
            assert!(d.notices.is_empty(), "{}", path.display());
        }
        for r in LoadedDocument::all_resources(&docs) {
            kinds.insert(r.kind());
        }
    }
    let missing: Vec<_> = Kind::ALL.iter().filter(|k| !kinds.contains(k)).collect();
    assert!(missing.is_empty(), "no fixture for {missing:?}");
}

#[test]
fn v3_fixtures_round_trip_through_yaml_json_and_storage() {
    for path in common::files("v3", &[".yaml", ".json"]) {
        let resources = common::load_resources(&path);
        assert_eq!(
            common::load_text(&to_yaml(&resources)),
            resources,
            "{} via YAML",
            path.display()
        );
        assert_eq!(
            common::load_text(&to_json(&resources)),
            resources,
            "{} via JSON",
            path.display()
        );
        for r in &resources {
            let back =
                Resource::from_stored(r.kind(), &r.to_stored()).expect("stored form reads back");
            assert_eq!(&back, r);
            let (kind, ns, name) = Kind::parse_key(&r.key()).expect("key parses");
            assert_eq!(
                (kind, ns.as_deref(), name.as_str()),
                (r.kind(), r.namespace(), r.name())
            );
        }
    }
}

#[test]
fn v3_list_forms() {
    let r = common::load_resources(&common::fixtures("v3").join("list.yaml"));
    assert_eq!(r.len(), 2);
    // The second item leaves out apiVersion and kind; the typed list supplies them.
    assert_eq!(r[1].kind(), Kind::GlobalNetworkPolicy);
    assert_eq!(r[1].name(), "allow-dns");
    assert_eq!(r[0].metadata().resource_version.as_deref(), Some("12000"));
}

fn check_conversions(dir: &str, origin: Origin) {
    for path in common::files(dir, &[".yaml"]) {
        let docs = common::load_file(&path);
        assert!(
            docs.iter().all(|d| d.origin == origin),
            "{}",
            path.display()
        );
        let resources = LoadedDocument::all_resources(&docs);
        let mut out = to_yaml(&resources);
        out.push_str("# notices:\n");
        for n in docs.iter().flat_map(|d| &d.notices) {
            out.push_str(&format!("# {n}\n"));
        }
        let expected = path.with_extension("expected.yaml");
        common::assert_snapshot(&expected, &out);
        // The expected output is itself valid v3 that loads to the same resources.
        let reloaded = common::load_resources(&expected);
        assert_eq!(reloaded, resources, "{}", expected.display());
    }
}

#[test]
fn v1_conversions_match_expected() {
    check_conversions("v1", Origin::LegacyV1);
}

#[test]
fn k8s_conversions_match_expected() {
    check_conversions("k8s", Origin::Kubernetes);
}

#[test]
fn v1_conversion_rules() {
    use gingham_model::Resource as R;
    let dir = common::fixtures("v1");
    let wep = common::load_resources(&dir.join("workloadendpoint.yaml"));
    let R::WorkloadEndpoint(w) = &wep[0] else {
        panic!()
    };
    assert_eq!(w.metadata.name, "rack1--host1-k8s-frontend--5gs43-eth0");
    assert_eq!(w.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(w.spec.pod, "frontend-5gs43");
    assert_eq!(
        w.metadata
            .labels
            .get("projectcalico.org/namespace")
            .map(String::as_str),
        Some("default")
    );
    assert!(!w.metadata.labels.contains_key("calico/k8s_ns"));

    let prof = common::load_resources(&dir.join("profile.yaml"));
    let R::Profile(p) = &prof[0] else { panic!() };
    assert_eq!(
        p.spec.ingress[1].source.not_nets[0].to_string(),
        "10.0.20.0/25"
    );
    assert_eq!(p.spec.ingress[0].source.selector, "ctag == ''");
    assert_eq!(p.spec.ingress[0].source.not_selector, "dtag == ''");
    assert_eq!(
        p.spec.labels_to_apply.get("atag").map(String::as_str),
        Some("")
    );
    assert_eq!(prof[1].name(), "kns.kube-system");

    let pools = common::load_resources(&dir.join("ippool.yaml"));
    assert_eq!(pools[0].name(), "10-1-0-0-16");
    let R::IpPool(pool) = &pools[0] else { panic!() };
    assert_eq!(pool.spec.ipip(), gingham_model::IpipMode::CrossSubnet);
    assert_eq!(pool.spec.block_size, Some(26));

    let peers = common::load_resources(&dir.join("bgppeer.yaml"));
    assert_eq!(peers[0].name(), "rack1-host1.192-168-1-1");

    let pols = common::load_resources(&dir.join("policy.yaml"));
    let R::GlobalNetworkPolicy(gnp) = &pols[1] else {
        panic!()
    };
    assert_eq!(gnp.metadata.name, "default-untracked-ssh-72a685af");
    assert!(
        gnp.spec.apply_on_forward,
        "doNotTrack forces applyOnForward"
    );
    let R::GlobalNetworkPolicy(first) = &pols[0] else {
        panic!()
    };
    assert_eq!(
        first.spec.ingress[4].action,
        gingham_model::Action::Pass,
        "next-tier is Pass"
    );
    assert_eq!(first.spec.ingress[4].source.selector, "blue == ''");
}

#[test]
fn convert_v1_document_handles_lists() {
    let text = std::fs::read_to_string(common::fixtures("v1").join("ippool.yaml")).unwrap();
    let doc = gingham_model::parse_documents(&text).unwrap().remove(0);
    let c = gingham_model::convert_v1_document(doc).expect("converts");
    assert_eq!(c.resources.len(), 2);
    assert_eq!(c.notices.len(), 2);
    let bad = serde_json::json!([{"apiVersion": "v1", "kind": "ipPool", "metadata": {"cidr": "10.0.0.0/8"}},
                                 {"apiVersion": "v1", "kind": "tier"}]);
    let e = gingham_model::convert_v1_document(bad).unwrap_err();
    assert_eq!(e.path, "items[1].kind");
}

#[test]
fn k8s_conversion_rules() {
    let dir = common::fixtures("k8s");
    let r = common::load_resources(&dir.join("networkpolicy.yaml"));
    let Resource::NetworkPolicy(np) = &r[0] else {
        panic!()
    };
    assert_eq!(np.metadata.name, "knp.default.test-network-policy");
    assert_eq!(np.spec.order, Some(1000.0));
    assert_eq!(
        np.spec.selector,
        "projectcalico.org/orchestrator == 'k8s' && role == 'db'"
    );
    assert_eq!(np.spec.ingress.len(), 3, "one rule per peer");
    assert_eq!(
        np.spec.ingress[1].source.namespace_selector,
        "project == 'myproject'"
    );

    let pods = common::load_resources(&dir.join("pod.yaml"));
    assert_eq!(
        pods.len(),
        2,
        "host-network and unscheduled pods have no endpoint"
    );
    let Resource::WorkloadEndpoint(w) = &pods[0] else {
        panic!()
    };
    assert_eq!(
        w.spec.interface_name,
        gingham_model::names::pod_interface_name("default", "frontend-5gs43")
    );
    assert_eq!(w.spec.profiles, vec!["kns.default", "ksa.default.web"]);
    assert_eq!(
        w.spec.ports.len(),
        3,
        "unnamed ports without a host port are skipped"
    );

    let ns = common::load_resources(&dir.join("namespace.yaml"));
    let Resource::Profile(test) = &ns[1] else {
        panic!()
    };
    assert_eq!(test.spec.ingress[0].action, gingham_model::Action::Deny);
    assert_eq!(test.spec.egress[0].action, gingham_model::Action::Allow);
}

#[test]
fn load_reports_all_errors_and_nothing_else() {
    let text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: ok}\nspec: {}\n---\n\
                apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: Bad}\nspec:\n  selector: \"a ==\"\n";
    let e = load("mixed.yaml", text).unwrap_err();
    assert_eq!(e.errors().len(), 2, "{e}");
    assert!(e.errors().iter().all(|l| l.document == Some(2)));
}
