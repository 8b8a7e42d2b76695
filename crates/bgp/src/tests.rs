//! Unit tests of single rules; whole files are checked in `tests/render.rs`.

use super::*;

fn input(yaml: &str) -> Input {
    let mut i = Input::default();
    load::add_text(&mut i, "test.yaml", yaml).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    i
}

fn opts(node: &str) -> Options {
    Options {
        node_name: node.into(),
        router_id: None,
    }
}

const TWO_NODES: &str = "
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1}
spec: {bgp: {ipv4Address: 10.0.0.9/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2}
spec: {bgp: {ipv4Address: 10.0.0.10/24}}
";

#[test]
fn router_id_hash_is_calicos() {
    // Values from Calico's own tests of HashToIPv4, and kube-master's id in its mesh/hash case.
    assert_eq!(hash_to_ipv4("nodeTest"), "109.174.215.226");
    assert_eq!(hash_to_ipv4("Testrobin123"), "207.94.5.27");
    assert_eq!(hash_to_ipv4("kube-master"), "25.79.212.8");
}

#[test]
fn mesh_is_unidirectional_by_address_string_order() {
    // "10.0.0.10" < "10.0.0.9" as strings: n2 dials, n1 waits.
    let i = input(TWO_NODES);
    let n1 = render(&i, &opts("n1")).unwrap();
    let n2 = render(&i, &opts("n2")).unwrap();
    let n1_cfg = n1.file("bird.cfg").unwrap();
    let n2_cfg = n2.file("bird.cfg").unwrap();
    assert!(n1_cfg.contains("protocol bgp Mesh_10_0_0_10 from bgp_template"));
    assert!(!n1_cfg.contains("passive on;"), "{n1_cfg}");
    assert!(n2_cfg.contains("protocol bgp Mesh_10_0_0_9 from bgp_template"));
    assert!(n2_cfg.contains("passive on;"), "{n2_cfg}");
}

#[test]
fn router_id_option_and_errors() {
    let i = input(TWO_NODES);
    let mut o = opts("n1");
    o.router_id = Some("192.0.2.7".into());
    let r = render(&i, &o).unwrap();
    assert!(
        r.file("bird6.cfg")
            .unwrap()
            .contains("router id 192.0.2.7;")
    );
    o.router_id = Some("not-an-address".into());
    assert_eq!(
        render(&i, &o).unwrap_err(),
        RenderError::BadRouterId("not-an-address".into())
    );
    assert_eq!(
        render(&i, &opts("n9")).unwrap_err(),
        RenderError::NodeNotFound("n9".into())
    );
    assert_eq!(render(&i, &opts("")).unwrap_err(), RenderError::NoNodeName);
    let v6_only = input(
        "
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: v6}
spec: {bgp: {ipv6Address: 'fd00::1/64'}}
",
    );
    let e = render(&v6_only, &opts("v6")).unwrap_err();
    assert_eq!(e, RenderError::NoRouterId("v6".into()));
    assert!(e.to_string().contains("CALICO_ROUTER_ID"), "{e}");
}

#[test]
fn missing_password_secret_leaves_the_password_out_and_warns() {
    let mut yaml = TWO_NODES.to_string();
    yaml.push_str(
        "
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 192.0.2.1
  asNumber: 65000
  password: {secretKeyRef: {name: bgp, key: tor}}
",
    );
    let r = render(&input(&yaml), &opts("n1")).unwrap();
    assert!(!r.file("bird.cfg").unwrap().contains("password"));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("BGPPeer tor") && w.contains("secret is missing")),
        "{:?}",
        r.warnings
    );
    // With the secret, the session has the password.
    yaml.push_str(
        "
---
apiVersion: v1
kind: Secret
metadata: {name: bgp, namespace: kube-system}
stringData: {tor: very-secret}
",
    );
    let r = render(&input(&yaml), &opts("n1")).unwrap();
    assert!(
        r.file("bird.cfg")
            .unwrap()
            .contains("  password \"very-secret\";")
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn bad_side_inputs_are_named() {
    let mut i = Input::default();
    let e = load::add_text(
        &mut i,
        "f.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BlockAffinity\nmetadata: {name: a}\nspec: {node: n1, cidr: nonsense}\n",
    )
    .unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("f.yaml: document 1 (BlockAffinity a): spec.cidr"),
        "{e:?}"
    );
    let e = load::add_text(
        &mut i,
        "f.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '%%%'}\n",
    )
    .unwrap_err();
    assert!(e[0].contains("(Secret s): data.k: not base64"), "{e:?}");
    // Nothing was added by the failed calls.
    assert!(i.affinities.is_empty() && i.secrets.is_empty());
}

#[test]
fn blank_line_comparison() {
    assert_eq!(diff_ignoring_blank_lines("a\n\n  \nb\n", "a\nb"), None);
    assert!(diff_ignoring_blank_lines("a\nb\n", "a\nc\n").is_some());
    assert!(diff_ignoring_blank_lines("a\n", "a\nb\n").is_some());
}

#[test]
fn bgp_filter_problems_are_named_and_missing_filters_warned() {
    let mut i = Input::default();
    let e = load::add_text(
        &mut i,
        "f.yaml",
        "apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: bad}
spec:
  exportV4:
    - {action: Drop, cidr: 10.0.0.0/8}
",
    )
    .unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("f.yaml: document 1 (BGPFilter bad): spec.exportV4[0].action: \"Drop\""),
        "{e:?}"
    );
    assert!(e[0].contains("(valid: Accept, Reject)"), "{e:?}");
    assert!(i.bgp_filters.is_empty());

    let mut yaml = TWO_NODES.to_string();
    yaml.push_str(
        "
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 192.0.2.1, asNumber: 65000, filters: [nope]}
",
    );
    let r = render(&input(&yaml), &opts("n1")).unwrap();
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("BGPFilter \"nope\" does not exist")),
        "{:?}",
        r.warnings
    );
    // confd v3.33 (bgp_processor.go, buildImportFilter/buildExportFilter) skips a filter it
    // cannot read: the session is still rendered, with the default import and export.
    let bird = r.file("bird.cfg").unwrap();
    assert!(!bird.contains("nope"), "{bird}");
    assert!(bird.contains("neighbor 192.0.2.1 as 65000;"), "{bird}");
    assert!(
        bird.contains("calico_export_to_bgp_peers(false);\n    reject;"),
        "{bird}"
    );
}

#[test]
fn bird_programmed_ipip_is_calicos_text_with_a_warning() {
    let mut yaml = TWO_NODES.to_string();
    yaml.push_str(
        "
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {programClusterRoutes: Enabled}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ipip-cross}
spec: {cidr: 10.247.0.0/16, ipipMode: CrossSubnet}
",
    );
    let r = render(&input(&yaml), &opts("n1")).unwrap();
    let ipam = r.file("bird_ipam.cfg").unwrap();
    assert!(
        ipam.contains(
            "  if (net ~ 10.247.0.0/16) then { if (defined(bgp_next_hop)&&(bgp_next_hop ~ 10.0.0.0/24)) then krt_tunnel=\"\"; else krt_tunnel=\"tunl0\"; accept; }"
        ),
        "{ipam}"
    );
    // BIRD programs IPIP routes itself: tunl0 routes are not filtered from iBGP exports.
    assert!(ipam.contains("if ((ifname ~ \"*.cali\") || (ifname ~ \"*.calico\")) then {"));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("IPPool ipip-cross:") && w.contains("krt_tunnel")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn wireguard_peers_routes_are_left_to_the_agent_only_when_this_node_runs_wireguard() {
    let yaml = "
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1}
spec: {bgp: {ipv4Address: 10.0.0.9/24}, wireguard: {interfaceIPv4Address: 10.250.0.1}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2}
spec: {bgp: {ipv4Address: 10.0.0.10/24}, wireguard: {interfaceIPv4Address: 10.250.0.2}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n3}
spec: {bgp: {ipv4Address: 10.0.0.11/24}}
";
    let i = input(yaml);
    let n1 = render(&i, &opts("n1")).unwrap();
    let ipam = n1.file("bird_ipam.cfg").unwrap();
    assert!(ipam.contains(
        "  if (defined(bgp_next_hop) && bgp_next_hop = 10.0.0.10) then { reject; } # WireGuard routes handled by Felix."
    ));
    assert!(!ipam.contains("bgp_next_hop = 10.0.0.11"), "{ipam}");
    let n3 = render(&i, &opts("n3")).unwrap();
    assert!(!n3.file("bird_ipam.cfg").unwrap().contains("WireGuard"));
}

#[test]
fn deleted_and_pending_affinities_are_not_the_nodes_blocks() {
    let mut yaml = TWO_NODES.to_string();
    for (name, cidr, extra) in [
        ("a", "10.244.1.0/26", "state: confirmed"),
        ("b", "10.244.2.0/26", "state: confirmed, deleted: true"),
        ("c", "10.244.3.0/26", "state: pending"),
        ("d", "10.244.4.0/26", "state: ''"),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: projectcalico.org/v3\nkind: BlockAffinity\nmetadata: {{name: {name}}}\nspec: {{node: n1, cidr: {cidr}, {extra}}}\n"
        ));
    }
    let r = render(&input(&yaml), &opts("n1")).unwrap();
    let aggr = r.file("bird_aggr.cfg").unwrap();
    assert!(aggr.contains("route 10.244.1.0/26 blackhole;"), "{aggr}");
    assert!(aggr.contains("route 10.244.4.0/26 blackhole;"), "{aggr}");
    assert!(!aggr.contains("10.244.2.0"), "{aggr}");
    assert!(!aggr.contains("10.244.3.0"), "{aggr}");
}
