//! Every YAML snippet from the seed stories (/work/shared/seeds) loads, or fails with the
//! message a user should see. Snippets are kept as written; only indentation was fixed.

mod common;

use gingham_model::{Kind, LoadedDocument, Origin, load};

enum Expect {
    /// Loads to these (kind, namespace/name) pairs, from this origin.
    Ok(Origin, &'static [(Kind, &'static str)]),
    /// Fails; the single-line error contains every fragment.
    Err(&'static [&'static str]),
}

#[test]
fn seed_snippets() {
    use Expect::*;
    let table: &[(&str, Expect)] = &[
        // A rule fragment from a blog post (not a whole resource): no apiVersion.
        (
            "000_41fb79f9c1aef90c_1.yaml",
            Err(&["document 1 item 1", "apiVersion: missing apiVersion"]),
        ),
        (
            "000_41fb79f9c1aef90c_2.yaml",
            Ok(
                Origin::LegacyV1,
                &[(
                    Kind::GlobalNetworkPolicy,
                    "lijiaocn-space-isolation-access-rules-89bb923d",
                )],
            ),
        ),
        (
            "000_41fb79f9c1aef90c_3.yaml",
            Ok(
                Origin::LegacyV1,
                &[(Kind::HostEndpoint, "10.39.0.113.eth0")],
            ),
        ),
        (
            "000_41fb79f9c1aef90c_4.yaml",
            Ok(Origin::LegacyV1, &[(Kind::IpPool, "192-168-0-0-16")]),
        ),
        (
            "000_41fb79f9c1aef90c_5.yaml",
            Ok(
                Origin::LegacyV1,
                &[(Kind::HostEndpoint, "10.39.0.113.tunl0")],
            ),
        ),
        // Shell heredoc templates: `$i`, `$NAME` and `$IP` are placeholders the script substitutes,
        // so the raw snippet genuinely is not a valid endpoint.
        (
            "000_41fb79f9c1aef90c_6.yaml",
            Err(&[
                "(hostEndpoint eth0)",
                "spec.expectedIPs[0]",
                "\"$i\" is not a valid IP address",
            ]),
        ),
        (
            "000_41fb79f9c1aef90c_7.yaml",
            Err(&["spec.expectedIPs[0]", "\"$IP\" is not a valid IP address"]),
        ),
        // A fragment of a Deployment (the policy controller), not a resource.
        (
            "001_9f36853f34c022ce_1.yaml",
            Err(&["document 1: apiVersion: missing apiVersion"]),
        ),
        // A CNI network configuration (JSON), not a resource.
        ("001_9f36853f34c022ce_2.yaml", Err(&["missing apiVersion"])),
        (
            "001_9f36853f34c022ce_3.yaml",
            Ok(
                Origin::Kubernetes,
                &[(Kind::NetworkPolicy, "test/knp.default.access-nginx")],
            ),
        ),
        // A CNI plugin list (JSON), not a resource.
        ("002_eb447d6c08bf627a_1.yaml", Err(&["missing apiVersion"])),
        (
            "002_eb447d6c08bf627a_2.yaml",
            Ok(
                Origin::V3,
                &[(Kind::GlobalNetworkPolicy, "deny-circle-blue")],
            ),
        ),
        // The post anonymised the pod as `XXXXX`; a v1 k8s workload id must be `<ns>.<pod>`, so
        // calicoctl convert rejects exactly this.
        (
            "003_9060ae410391781c_1.yaml",
            Err(&["metadata.workload", "malformed k8s workload ID \"XXXXX\""]),
        ),
        (
            "004_0ce2436b08c0d50d_1.yaml",
            Ok(Origin::LegacyV1, &[(Kind::Profile, "kns.default")]),
        ),
    ];
    let files = common::files("seeds", &[".yaml"]);
    assert_eq!(
        files.len(),
        table.len(),
        "every seed fixture has an expectation"
    );
    for (file, expect) in table {
        let path = common::fixtures("seeds").join(file);
        let text = std::fs::read_to_string(&path).expect("fixture");
        match (load(file, &text), expect) {
            (Result::Ok(docs), Ok(origin, want)) => {
                assert!(docs.iter().all(|d| d.origin == *origin), "{file}: origin");
                let got: Vec<(Kind, String)> = LoadedDocument::all_resources(&docs)
                    .iter()
                    .map(|r| {
                        let id = match r.namespace() {
                            Some(ns) => format!("{ns}/{}", r.name()),
                            None => r.name().to_string(),
                        };
                        (r.kind(), id)
                    })
                    .collect();
                let want: Vec<(Kind, String)> =
                    want.iter().map(|(k, n)| (*k, n.to_string())).collect();
                assert_eq!(got, want, "{file}");
            }
            (Result::Err(e), Err(frags)) => {
                for line in e.errors() {
                    let s = line.to_string();
                    assert!(!s.contains('\n'), "{file}: multi-line error {s}");
                    assert!(
                        s.starts_with(file),
                        "{file}: error does not name the file: {s}"
                    );
                }
                let s = e.to_string();
                for f in *frags {
                    assert!(s.contains(f), "{file}: error {s:?} lacks {f:?}");
                }
            }
            (Result::Ok(_), Err(_)) => panic!("{file}: loaded but should fail"),
            (Result::Err(e), Ok(..)) => panic!("{file}: failed: {e}"),
        }
    }
}

#[test]
fn seed_v1_policy_semantics() {
    // The isolation policy from seed 000 keeps its meaning after conversion.
    let r = common::load_resources(&common::fixtures("seeds").join("000_41fb79f9c1aef90c_2.yaml"));
    let gingham_model::Resource::GlobalNetworkPolicy(p) = &r[0] else {
        panic!("not a GNP")
    };
    assert_eq!(
        p.spec.selector,
        "projectcalico.org/namespace == 'lijiaocn-space'"
    );
    assert_eq!(p.spec.order, Some(1000.0));
    assert_eq!(
        p.spec.ingress[0].source.selector,
        "projectcalico.org/namespace in { \"kube-system\", \"lijiaocn-space\" }"
    );
    assert_eq!(p.spec.types.len(), 2);
}
