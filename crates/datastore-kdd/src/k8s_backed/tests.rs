//! Unit tests of the Kubernetes-backed kinds. Fixtures are shaped after Calico's own tests
//! (libcalico-go lib/backend/k8s/resources/node_test.go, lib/backend/k8s/conversion/
//! conversion_test.go); no code is taken from them.

use super::*;
use gingham_model::endpoint::WorkloadEndpoint;
use gingham_model::kind::KEY_ROOT;

fn obj<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture")
}

/// Applies a JSON merge patch (RFC 7386) to a JSON document, as the API server does.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.shift_remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn patched<T: serde::Serialize + DeserializeOwned>(o: &T, patch: &Value) -> T {
    let mut v = serde_json::to_value(o).expect("to json");
    merge(&mut v, patch);
    serde_json::from_value(v).expect("patched object")
}

fn calico_node(bytes: &[u8]) -> Node {
    match Resource::from_stored(Kind::Node, bytes).expect("stored node") {
        Resource::Node(n) => n,
        other => panic!("not a node: {other:?}"),
    }
}

fn endpoint(bytes: &[u8]) -> WorkloadEndpoint {
    match Resource::from_stored(Kind::WorkloadEndpoint, bytes).expect("stored wep") {
        Resource::WorkloadEndpoint(w) => w,
        other => panic!("not a wep: {other:?}"),
    }
}

// ===== Keys =====

#[test]
fn classifies_keys_and_their_objects() {
    let k = |kind: Kind, ns: Option<&str>, name: &str| k8s_backed_kind(&kind.key(ns, name));
    assert_eq!(
        k(Kind::Node, None, "node-a"),
        Some(K8sBacked::Node {
            name: "node-a".into()
        })
    );
    let wep = k(
        Kind::WorkloadEndpoint,
        Some("shop"),
        "node--a-k8s-web--1-eth0",
    )
    .expect("wep");
    assert_eq!(
        wep,
        K8sBacked::WorkloadEndpoint {
            namespace: "shop".into(),
            name: "node--a-k8s-web--1-eth0".into(),
            node: "node-a".into(),
            pod: "web-1".into(),
        }
    );
    assert_eq!(
        wep.object(),
        Some(K8sObjectRef {
            kind: K8sObjectKind::Pod,
            namespace: Some("shop".into()),
            name: "web-1".into()
        })
    );
    assert_eq!(
        k(Kind::NetworkPolicy, Some("shop"), "knp.default.web")
            .and_then(|b| b.object())
            .map(|o| (o.kind, o.namespace, o.name)),
        Some((
            K8sObjectKind::NetworkPolicy,
            Some("shop".into()),
            "web".into()
        ))
    );
    assert_eq!(
        k(Kind::Profile, None, "kns.shop"),
        Some(K8sBacked::NamespaceProfile {
            namespace: "shop".into()
        })
    );
    assert_eq!(
        k(Kind::Profile, None, "ksa.shop.web.v2"),
        Some(K8sBacked::ServiceAccountProfile {
            namespace: "shop".into(),
            name: "web.v2".into()
        })
    );
    // Calico's own resources are CRDs, IPAM is elsewhere: not Kubernetes-backed.
    assert_eq!(k(Kind::NetworkPolicy, Some("shop"), "allow-web"), None);
    assert_eq!(k(Kind::GlobalNetworkPolicy, None, "knp.default.x"), None);
    assert_eq!(k(Kind::IpPool, None, "pool"), None);
    assert_eq!(
        k8s_backed_kind("/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26"),
        None
    );
    // Kinds that live in Kubernetes objects but with names no object has.
    for key in [
        Kind::Profile.key(None, "my-profile"),
        Kind::Profile.key(None, "ksa.nodot"),
        Kind::WorkloadEndpoint.key(Some("ns"), "node-cni-abc123-eth0"),
        Kind::WorkloadEndpoint.key(Some("ns"), "node-k8s-pod-net1"),
    ] {
        let b = k8s_backed_kind(&key).expect("backed kind");
        assert!(matches!(b, K8sBacked::Unbacked { .. }), "{key}: {b:?}");
        assert_eq!(b.object(), None);
        let err = b.check_write().expect_err("unbacked write");
        assert!(err.to_string().starts_with(&key), "{err}");
    }
}

#[test]
fn endpoint_names_split_as_calico_parses_them() {
    let cases: &[(&str, &[&str])] = &[
        ("nodeA-k8s-podA-eth0", &["nodeA", "k8s", "podA", "eth0"]),
        (
            "node--1-k8s-my--pod--x-eth0",
            &["node-1", "k8s", "my-pod-x", "eth0"],
        ),
        ("a-b", &["a", "b"]),
    ];
    for (name, want) in cases {
        assert_eq!(split_endpoint_name(name), *want, "{name}");
    }
    // The name the model computes parses back to the same parts.
    let name =
        gingham_model::names::workload_endpoint_name("ip-10-0-0-1", "k8s", "web-7f-x", "eth0")
            .expect("name");
    assert_eq!(
        split_endpoint_name(&name),
        ["ip-10-0-0-1", "k8s", "web-7f-x", "eth0"]
    );
}

#[test]
fn writes_to_views_of_kubernetes_objects_are_refused() {
    let cases = [
        (
            Kind::NetworkPolicy.key(Some("default"), "knp.default.web"),
            "NetworkPolicy default/knp.default.web is read-only in the Kubernetes datastore: it is Kubernetes NetworkPolicy default/web seen through Calico; change the NetworkPolicy instead (kubectl edit networkpolicy -n default web)",
        ),
        (
            Kind::Profile.key(None, "kns.shop"),
            "Profile kns.shop is read-only in the Kubernetes datastore: it is Kubernetes Namespace shop seen through Calico; change the Namespace instead (kubectl label namespace shop KEY=VALUE)",
        ),
        (
            Kind::Profile.key(None, "ksa.shop.web"),
            "Profile ksa.shop.web is read-only in the Kubernetes datastore: it is Kubernetes ServiceAccount shop/web seen through Calico; change the ServiceAccount instead (kubectl label serviceaccount -n shop web KEY=VALUE)",
        ),
    ];
    for (key, want) in cases {
        let b = k8s_backed_kind(&key).expect("backed");
        assert!(b.is_read_only(), "{key}");
        let err = b.check_write().expect_err("refused");
        assert!(matches!(err, K8sBackedError::ReadOnly { .. }));
        assert_eq!(err.to_string(), want);
        // A missing object does not turn a refusal into "create it".
        assert_eq!(b.missing_object(), Some(err));
    }
    let other = k8s_backed_kind(&Kind::Profile.key(None, "allow-all")).expect("backed");
    let msg = other.check_write().expect_err("refused").to_string();
    assert!(
        msg.contains("a Profile is a Namespace (kns.<namespace>) or a ServiceAccount (ksa.<namespace>.<serviceaccount>)")
            && msg.contains("\"allow-all\" cannot be stored"),
        "{msg}"
    );
    for key in [
        Kind::Node.key(None, "n"),
        Kind::WorkloadEndpoint.key(Some("ns"), "n-k8s-p-eth0"),
    ] {
        let b = k8s_backed_kind(&key).expect("backed");
        assert!(!b.is_read_only());
        assert_eq!(b.check_write(), Ok(()));
    }
    let missing = k8s_backed_kind(&Kind::Node.key(None, "n"))
        .and_then(|b| b.missing_object())
        .expect("error")
        .to_string();
    assert_eq!(
        missing,
        "Node n cannot be written: there is no Kubernetes Node n in Kubernetes (in the Kubernetes datastore a Calico Node is the Kubernetes Node's projectcalico.org/ annotations: register the node with Kubernetes (kubelet) first)"
    );
}

#[test]
fn list_sources_cover_the_prefix() {
    let src = |kind, ns: Option<&str>| ListSource {
        kind,
        namespace: ns.map(str::to_owned),
    };
    use K8sObjectKind as O;
    let all = vec![
        src(O::Node, None),
        src(O::Pod, None),
        src(O::NetworkPolicy, None),
        src(O::Namespace, None),
        src(O::ServiceAccount, None),
    ];
    let cases: Vec<(String, Vec<ListSource>)> = vec![
        ("/calico/".into(), all.clone()),
        (format!("{KEY_ROOT}/"), all),
        (Kind::Node.key_prefix(None), vec![src(O::Node, None)]),
        (Kind::Node.key(None, "node-a"), vec![src(O::Node, None)]),
        (
            Kind::WorkloadEndpoint.key_prefix(Some("shop")),
            vec![src(O::Pod, Some("shop"))],
        ),
        (
            format!("{KEY_ROOT}/networkpolicies/"),
            vec![src(O::NetworkPolicy, None)],
        ),
        (
            Kind::NetworkPolicy.key_prefix(Some("shop")),
            vec![src(O::NetworkPolicy, Some("shop"))],
        ),
        (Kind::NetworkPolicy.key(Some("shop"), "allow-"), vec![]),
        (
            Kind::NetworkPolicy.key(Some("shop"), "knp.default.w"),
            vec![src(O::NetworkPolicy, Some("shop"))],
        ),
        (
            Kind::Profile.key_prefix(None),
            vec![src(O::Namespace, None), src(O::ServiceAccount, None)],
        ),
        (
            Kind::Profile.key(None, "kns.sh"),
            vec![src(O::Namespace, None)],
        ),
        (
            Kind::Profile.key(None, "ksa.shop.w"),
            vec![src(O::ServiceAccount, Some("shop"))],
        ),
        (
            Kind::Profile.key(None, "k"),
            vec![src(O::Namespace, None), src(O::ServiceAccount, None)],
        ),
        (Kind::Profile.key(None, "default-allow"), vec![]),
        (Kind::GlobalNetworkPolicy.key_prefix(None), vec![]),
        ("/calico/ipam/v2/".into(), vec![]),
        // A plural's start: the networkpolicies and the networksets (a CRD).
        (
            format!("{KEY_ROOT}/networkp"),
            vec![src(O::NetworkPolicy, None)],
        ),
    ];
    for (prefix, want) in cases {
        assert_eq!(list_sources(&prefix), want, "{prefix}");
    }
}

// ===== Nodes =====

/// Shaped after node_test.go's "should parse a k8s Node to a Calico Node".
fn k8s_node() -> corev1::Node {
    obj(json!({
        "metadata": {
            "name": "TestNode",
            "uid": "6f1b5c0e-0000-4000-8000-000000000001",
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "resourceVersion": "1234",
            "labels": {"kubernetes.io/hostname": "TestNode", "zone": "a"},
            "annotations": {
                "projectcalico.org/IPv4Address": "172.17.17.10",
                "projectcalico.org/ASNumber": "2546",
                "projectcalico.org/Interfaces": "[{\"name\":\"eth1\",\"addresses\":[\"172.31.11.4\"]},{\"name\":\"eth0\",\"addresses\":[\"172.17.17.10\",\"172.17.17.11\"]}]",
                "node.alpha.kubernetes.io/ttl": "0"
            }
        },
        "spec": {"podCIDR": "10.0.0.1/24", "podCIDRs": ["10.0.0.0/24"]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "172.17.17.10"},
            {"type": "ExternalIP", "address": "192.168.1.100"},
            {"type": "Hostname", "address": "172-17-17-10"}
        ]}
    }))
}

#[test]
fn node_from_kubernetes_annotations() {
    let (key, value) = calico_node_from_k8s(&k8s_node()).expect("converts");
    assert_eq!(key, Kind::Node.key(None, "TestNode"));
    let want: Node = obj(json!({
        "metadata": {
            "name": "TestNode",
            "uid": "6f1b5c0e-0000-4000-8000-000000000001",
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"kubernetes.io/hostname": "TestNode", "zone": "a"},
            "annotations": {
                "projectcalico.org/kube-labels": "{\"kubernetes.io/hostname\":\"TestNode\",\"zone\":\"a\"}"
            }
        },
        "spec": {
            "bgp": {"asNumber": 2546, "ipv4Address": "172.17.17.10/32"},
            "orchRefs": [{"nodeName": "TestNode", "orchestrator": "k8s"}],
            "addresses": [
                {"address": "172.17.17.10/32", "type": "CalicoNodeIP"},
                {"address": "172.17.17.10", "type": "InternalIP"},
                {"address": "192.168.1.100", "type": "ExternalIP"}
            ],
            "interfaces": [
                {"name": "eth1", "addresses": ["172.31.11.4"]},
                {"name": "eth0", "addresses": ["172.17.17.10", "172.17.17.11"]}
            ]
        },
        "status": {"podCIDRs": ["10.0.0.0/24"]}
    }));
    // Byte for byte what any other backend holds for this Node.
    assert_eq!(
        String::from_utf8(value.clone()).expect("utf8"),
        String::from_utf8(Resource::Node(want).to_stored()).expect("utf8")
    );
    let n = calico_node(&value);
    assert_eq!(n.spec.bgp.as_ref().expect("bgp").ipv4_ipip_tunnel_addr, "");
    assert!(n.spec.wireguard.is_none());
}

#[test]
fn node_invalid_annotations_are_ignored() {
    // As node_test.go's "should ignore RR cluster ID if its an invalid IPv4 address" and
    // "... if it an IPv6 address", and the same for the other validated fields.
    for (annotation, bad) in [
        (NODE_RR_CLUSTER_ID, "288.0.4.5"),
        (NODE_RR_CLUSTER_ID, "fd10::10"),
        (NODE_IPV4_ADDRESS, "fd10::10/64"),
        (NODE_IPV6_ADDRESS, "10.0.0.1"),
        (NODE_IPV4_IPIP_TUNNEL_ADDR, "10.0.0.1/24"),
        (NODE_IPV4_VXLAN_TUNNEL_ADDR, "bogus"),
        (NODE_VXLAN_TUNNEL_MAC, "66:cf:1:2"),
        (NODE_AS_NUMBER, "sixty"),
        (NODE_WIREGUARD_IPV6_ADDR, "10.0.0.9"),
    ] {
        let mut node = k8s_node();
        let ann = node.metadata.annotations.get_or_insert_default();
        ann.clear();
        ann.insert(annotation.into(), bad.into());
        let n = calico_node(&calico_node_from_k8s(&node).expect("converts").1);
        assert_eq!(n.spec.bgp, None, "{annotation}={bad}");
        assert_eq!(n.spec.wireguard, None, "{annotation}={bad}");
        assert_eq!(n.spec.ipv4_vxlan_tunnel_addr, "", "{annotation}={bad}");
        assert_eq!(n.spec.vxlan_tunnel_mac_addr, "", "{annotation}={bad}");
    }
    // A valid cluster id is kept (node_test.go "... with RR cluster ID").
    let mut node = k8s_node();
    node.metadata
        .annotations
        .get_or_insert_default()
        .insert(NODE_RR_CLUSTER_ID.into(), "255.0.0.1".into());
    let n = calico_node(&calico_node_from_k8s(&node).expect("converts").1);
    assert_eq!(
        n.spec.bgp.expect("bgp").route_reflector_cluster_id,
        "255.0.0.1"
    );
}

/// Every field Calico keeps in annotations, set.
fn full_node() -> corev1::Node {
    let mut node = k8s_node();
    let ann = node.metadata.annotations.get_or_insert_default();
    for (k, v) in [
        (NODE_IPV4_ADDRESS, "172.17.17.10/24"),
        (NODE_IPV6_ADDRESS, "fd00:1::10/64"),
        (NODE_IPV4_IPIP_TUNNEL_ADDR, "10.244.0.1"),
        (NODE_IPV4_VXLAN_TUNNEL_ADDR, "10.244.0.2"),
        (NODE_VXLAN_TUNNEL_MAC, "66:cf:b2:7c:4e:01"),
        (NODE_IPV6_VXLAN_TUNNEL_ADDR, "fd00:244::2"),
        (NODE_VXLAN_TUNNEL_MAC_V6, "66:cf:b2:7c:4e:02"),
        (NODE_AS_NUMBER, "64512"),
        (NODE_RR_CLUSTER_ID, "224.0.0.1"),
        (NODE_WIREGUARD_IPV4_ADDR, "10.244.0.3"),
        (NODE_WIREGUARD_IPV6_ADDR, "fd00:244::3"),
        (
            NODE_WIREGUARD_PUBLIC_KEY,
            "jlkVyQYooZYzI2wFfNhSZez5eWh44yfq1wKVjLvSXgY=",
        ),
        (
            NODE_WIREGUARD_PUBLIC_KEY_V6,
            "hTnWXbIO2FuJz0xlOO1K9BXZz0OrQymIl6RW5GJxcTk=",
        ),
        (NODE_CALICO_LABELS, "{\"route-reflector\":\"true\"}"),
        (NODE_CALICO_ANNOTATIONS, "{\"note\":\"calico's own\"}"),
    ] {
        ann.insert(k.into(), v.into());
    }
    node
}

#[test]
fn node_round_trips_through_annotations() {
    let node = full_node();
    let (_, value) = calico_node_from_k8s(&node).expect("converts");
    let n = calico_node(&value);
    assert_eq!(
        n.metadata.labels.get("route-reflector").map(String::as_str),
        Some("true")
    );
    assert_eq!(n.metadata.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(
        n.metadata.annotations.get("note").map(String::as_str),
        Some("calico's own")
    );
    let bgp = n.spec.bgp.clone().expect("bgp");
    assert_eq!(
        bgp.ipv4_address.map(|a| a.to_string()).as_deref(),
        Some("172.17.17.10/24")
    );
    assert_eq!(bgp.ipv4_ipip_tunnel_addr, "10.244.0.1");
    assert_eq!(n.spec.ipv6_vxlan_tunnel_addr, "fd00:244::2");
    assert_eq!(
        n.spec.wireguard.clone().expect("wg").interface_ipv6_address,
        "fd00:244::3"
    );
    assert_eq!(
        n.status.clone().expect("status").wireguard_public_key_v6,
        "hTnWXbIO2FuJz0xlOO1K9BXZz0OrQymIl6RW5GJxcTk="
    );

    // Writing back what was read changes nothing.
    let patch = k8s_node_patch_for(&value, &node).expect("patch");
    assert_eq!(patch, json!({"metadata": {}}));

    // A change: new VXLAN address, no WireGuard, one more Calico label, an inherited label
    // "changed" (ignored: it belongs to the Kubernetes Node).
    let mut changed = n.clone();
    changed.spec.ipv4_vxlan_tunnel_addr = "10.244.0.9".into();
    changed.spec.wireguard = None;
    if let Some(s) = changed.status.as_mut() {
        s.wireguard_public_key.clear();
        s.wireguard_public_key_v6.clear();
    }
    changed.metadata.labels.insert("rack".into(), "r1".into());
    changed.metadata.labels.insert("zone".into(), "b".into());
    let patch =
        k8s_node_patch_for(&Resource::Node(changed.clone()).to_stored(), &node).expect("patch");
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {
            NODE_CALICO_LABELS: "{\"rack\":\"r1\",\"route-reflector\":\"true\"}",
            NODE_IPV4_VXLAN_TUNNEL_ADDR: "10.244.0.9",
            NODE_WIREGUARD_IPV4_ADDR: null,
            NODE_WIREGUARD_IPV6_ADDR: null,
            NODE_WIREGUARD_PUBLIC_KEY: null,
            NODE_WIREGUARD_PUBLIC_KEY_V6: null
        }}})
    );
    let after = patched(&node, &patch);
    assert_eq!(
        after.metadata.labels, node.metadata.labels,
        "labels untouched"
    );
    let reread = calico_node(&calico_node_from_k8s(&after).expect("converts").1);
    let mut want = changed;
    want.metadata.labels.insert("zone".into(), "a".into());
    assert_eq!(reread, want);

    // With BGP gone, its annotations go too.
    let mut no_bgp = calico_node(&value);
    no_bgp.spec.bgp = None;
    no_bgp.spec.addresses.clear();
    let patch = k8s_node_patch_for(&Resource::Node(no_bgp).to_stored(), &node).expect("patch");
    let after = patched(&node, &patch);
    let ann = after.metadata.annotations.expect("annotations");
    for k in [
        NODE_IPV4_ADDRESS,
        NODE_IPV6_ADDRESS,
        NODE_IPV4_IPIP_TUNNEL_ADDR,
        NODE_AS_NUMBER,
        NODE_RR_CLUSTER_ID,
    ] {
        assert!(!ann.contains_key(k), "{k} kept");
    }
    assert!(ann.contains_key(NODE_IPV4_VXLAN_TUNNEL_ADDR));
}

#[test]
fn node_written_without_kube_labels_keeps_all_labels_as_calicos() {
    // A Calico Node that was not read from Kubernetes (no kube-labels bookkeeping): all its
    // labels are its own, as Calico's restoreCalicoLabels leaves them.
    let node = k8s_node();
    let mut n = calico_node(&calico_node_from_k8s(&node).expect("converts").1);
    n.metadata.annotations.clear();
    n.metadata.labels = [("a".to_owned(), "1".to_owned())].into();
    let patch = k8s_node_patch_for(&Resource::Node(n).to_stored(), &node).expect("patch");
    assert_eq!(
        patch.pointer("/metadata/annotations/projectcalico.org~1labels"),
        Some(&json!("{\"a\":\"1\"}"))
    );
    assert_eq!(patch.pointer("/metadata/labels"), None);
}

#[test]
fn node_patch_refuses_bad_values() {
    let node = k8s_node();
    let err = k8s_node_patch_for(b"{not json", &node).expect_err("bad json");
    assert!(matches!(err, K8sBackedError::BadValue { .. }), "{err}");
    let mut other = calico_node(&calico_node_from_k8s(&node).expect("converts").1);
    other.metadata.name = "other".into();
    let err = k8s_node_patch_for(&Resource::Node(other).to_stored(), &node).expect_err("name");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the value to write is not valid: metadata.name is \"other\" but the Kubernetes Node is \"TestNode\"",
            Kind::Node.key(None, "TestNode")
        )
    );
}

#[test]
fn node_delete_removes_calicos_annotations_only() {
    let node = full_node();
    let patch = k8s_node_delete_patch(&node);
    let after = patched(&node, &patch);
    let ann = after.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.keys().map(String::as_str).collect::<Vec<_>>(),
        ["node.alpha.kubernetes.io/ttl"]
    );
    assert_eq!(after.metadata.labels, node.metadata.labels);
    // What is left reads as a bare Calico Node of the Kubernetes Node.
    let n = calico_node(&calico_node_from_k8s(&after).expect("converts").1);
    assert_eq!(n.spec.bgp, None);
    assert_eq!(n.spec.orch_refs.len(), 1);
    assert_eq!(
        n.metadata.labels,
        node.metadata.labels.clone().unwrap_or_default()
    );
}

// ===== Pods =====

/// Shaped after conversion_test.go's "should parse a Pod with an IP to a WorkloadEndpoint",
/// with the annotations Calico's CNI plugin writes.
fn pod() -> corev1::Pod {
    obj(json!({
        "metadata": {
            "name": "podA",
            "namespace": "default",
            "uid": "0b7e07c4-0000-4000-8000-0000000000aa",
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "resourceVersion": "1234",
            "labels": {"labelA": "valueA", "labelB": "valueB"},
            "annotations": {
                "arbitrary": "annotation",
                "cni.projectcalico.org/podIP": "192.168.0.1/32",
                "cni.projectcalico.org/podIPs": "192.168.0.1/32,fd00::1/128",
                "cni.projectcalico.org/containerID": "0123abcd"
            }
        },
        "spec": {
            "nodeName": "nodeA",
            "serviceAccountName": "web",
            "containers": [{"name": "c", "ports": [
                {"containerPort": 5678},
                {"name": "no-proto", "containerPort": 1234},
                {"name": "udp-proto", "protocol": "UDP", "containerPort": 432},
                {"name": "unkn-proto", "protocol": "unknown", "containerPort": 567}
            ]}]
        },
        "status": {"phase": "Running"}
    }))
}

#[test]
fn pod_with_cni_annotations_is_a_workload_endpoint() {
    let p = pod();
    let kvs = workload_endpoints_from_pod(&p).expect("converts");
    assert_eq!(kvs.len(), 1);
    let (key, value) = &kvs[0];
    assert_eq!(
        key,
        &Kind::WorkloadEndpoint.key(Some("default"), "nodeA-k8s-podA-eth0")
    );
    // The bytes are the model's conversion, stored as every backend stores it.
    let model: K8sPod = obj({
        let mut v = serde_json::to_value(&p).expect("json");
        v.as_object_mut().map(|m| m.shift_remove("metadata"));
        let meta = json!({
            "name": "podA", "namespace": "default",
            "uid": "0b7e07c4-0000-4000-8000-0000000000aa",
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"labelA": "valueA", "labelB": "valueB"},
            "annotations": p.metadata.annotations,
        });
        v["metadata"] = meta;
        v
    });
    let want = k8s::pod_to_workload_endpoint(&model)
        .expect("converts")
        .expect("an endpoint");
    assert_eq!(value, &Resource::WorkloadEndpoint(want).to_stored());

    let w = endpoint(value);
    assert_eq!(
        w.spec
            .ip_networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["192.168.0.1/32", "fd00::1/128"]
    );
    assert_eq!(w.spec.container_id, "0123abcd");
    assert_eq!(w.spec.profiles, ["kns.default", "ksa.default.web"]);
    assert_eq!(
        w.spec.interface_name,
        gingham_model::names::pod_interface_name("default", "podA")
    );
    assert_eq!(
        w.metadata
            .labels
            .get("projectcalico.org/serviceaccount")
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(
        w.metadata.uid.as_deref(),
        Some("0b7e07c4-0000-4000-8000-0000000000aa")
    );
    assert_eq!(w.metadata.resource_version, None);
    // Named ports with known protocols only, as conversion_test.go expects.
    assert_eq!(
        w.spec
            .ports
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["no-proto", "udp-proto"]
    );
}

#[test]
fn pods_without_an_endpoint() {
    let mut cases: Vec<(&str, corev1::Pod)> = Vec::new();
    let mut p = pod();
    p.metadata.annotations = None;
    cases.push(("no CNI annotations and no status IP", p));
    let mut p = pod();
    p.spec.as_mut().expect("spec").host_network = Some(true);
    cases.push(("host network", p));
    let mut p = pod();
    p.spec.as_mut().expect("spec").node_name = None;
    cases.push(("not scheduled", p));
    for phase in ["Succeeded", "Failed"] {
        let mut p = pod();
        p.status.as_mut().expect("status").phase = Some(phase.into());
        cases.push((phase, p));
    }
    // Being deleted, after the CNI plugin's DEL emptied the podIP annotation.
    let mut p = patched(
        &pod(),
        &pod_patch_for_workload_endpoint_delete(
            &Kind::WorkloadEndpoint.key(Some("default"), "nodeA-k8s-podA-eth0"),
        )
        .expect("patch")
        .1,
    );
    p.metadata.deletion_timestamp = pod().metadata.creation_timestamp;
    cases.push(("deleted by the CNI plugin", p));
    for (what, p) in cases {
        assert_eq!(
            workload_endpoints_from_pod(&p).expect("converts"),
            vec![],
            "{what}"
        );
    }
    // Being deleted with its addresses still in place: still an endpoint.
    let mut p = pod();
    p.metadata.deletion_timestamp = p.metadata.creation_timestamp.clone();
    assert_eq!(workload_endpoints_from_pod(&p).expect("converts").len(), 1);
    // kubelet's status IP alone is enough (another writer than the CNI plugin).
    let mut p = pod();
    p.metadata.annotations = None;
    p.status.as_mut().expect("status").pod_ip = Some("192.168.0.7".into());
    let kvs = workload_endpoints_from_pod(&p).expect("converts");
    assert_eq!(
        endpoint(&kvs[0].1).spec.ip_networks[0].to_string(),
        "192.168.0.7/32"
    );
}

#[test]
fn malformed_pod_ip_is_an_error_naming_the_pod() {
    let mut p = pod();
    p.metadata
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_POD_IPS.into(), "192.168.0.1/32,bogus".into());
    let err = workload_endpoints_from_pod(&p).expect_err("bad ip");
    let msg = err.to_string();
    assert!(
        msg.starts_with("Kubernetes Pod default/podA: cannot be read as a Calico resource: metadata.annotations.cni.projectcalico.org/podIPs:"),
        "{msg}"
    );
}

#[test]
fn workload_endpoint_write_is_the_cni_annotation_patch() {
    let key = Kind::WorkloadEndpoint.key(Some("default"), "nodeA-k8s-podA-eth0");
    // A pod before the CNI plugin's ADD: no endpoint.
    let mut before = pod();
    before.metadata.annotations = None;
    assert!(
        workload_endpoints_from_pod(&before)
            .expect("converts")
            .is_empty()
    );

    // The endpoint the CNI plugin writes (what `pod()` converts to).
    let written = workload_endpoints_from_pod(&pod())
        .expect("converts")
        .remove(0)
        .1;
    let (object, patch) = pod_patch_for_workload_endpoint(&key, &written).expect("patch");
    assert_eq!(
        object,
        K8sObjectRef {
            kind: K8sObjectKind::Pod,
            namespace: Some("default".into()),
            name: "podA".into()
        }
    );
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {
            "cni.projectcalico.org/podIP": "192.168.0.1/32",
            "cni.projectcalico.org/podIPs": "192.168.0.1/32,fd00::1/128",
            "cni.projectcalico.org/containerID": "0123abcd"
        }}})
    );
    let after = patched(&before, &patch);
    let read = workload_endpoints_from_pod(&after).expect("converts");
    assert_eq!(read, vec![(key.clone(), written.clone())]);

    // The runtime's own container ID wins when Gingham's CNI had to rewrite spec.containerID.
    let mut w = endpoint(&written);
    w.spec.container_id = "abc-0011223344556677".into();
    w.metadata
        .annotations
        .insert(ANNOTATION_CONTAINER_ID.into(), "ABC".into());
    let (_, patch) =
        pod_patch_for_workload_endpoint(&key, &Resource::WorkloadEndpoint(w.clone()).to_stored())
            .expect("patch");
    assert_eq!(
        patch.pointer("/metadata/annotations/cni.projectcalico.org~1containerID"),
        Some(&json!("ABC"))
    );
    // No addresses: nothing to patch, as Calico's calcCNIAnnotations.
    w.spec.ip_networks.clear();
    let (_, patch) =
        pod_patch_for_workload_endpoint(&key, &Resource::WorkloadEndpoint(w).to_stored())
            .expect("patch");
    assert_eq!(patch, json!({"metadata": {}}));

    // Preconditions as Calico's calculateAnnotationPatch adds them.
    let (_, del) = pod_patch_for_workload_endpoint_delete(&key).expect("patch");
    assert_eq!(
        with_preconditions(del, Some("1234"), Some("0b7e07c4")),
        json!({"metadata": {
            "annotations": {"cni.projectcalico.org/podIP": "", "cni.projectcalico.org/podIPs": ""},
            "resourceVersion": "1234",
            "uid": "0b7e07c4"
        }})
    );
}

#[test]
fn workload_endpoint_write_must_match_its_pod() {
    let key = Kind::WorkloadEndpoint.key(Some("default"), "nodeA-k8s-podA-eth0");
    let written = workload_endpoints_from_pod(&pod())
        .expect("converts")
        .remove(0)
        .1;
    let mut w = endpoint(&written);
    w.spec.pod = "podB".into();
    let err = pod_patch_for_workload_endpoint(&key, &Resource::WorkloadEndpoint(w).to_stored())
        .expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        format!(
            "{key}: the value to write is not valid: spec.pod is \"podB\" but the key names \"podA\" (in the Kubernetes datastore a WorkloadEndpoint is its pod's)"
        )
    );
    let err = pod_patch_for_workload_endpoint(&key, b"[]").expect_err("not an object");
    assert!(matches!(err, K8sBackedError::BadValue { .. }), "{err}");
    let cni_key = Kind::WorkloadEndpoint.key(Some("default"), "nodeA-cni-0123abcd-eth0");
    let err = pod_patch_for_workload_endpoint(&cni_key, &written).expect_err("not a pod");
    assert!(matches!(err, K8sBackedError::Unbacked { .. }), "{err}");
    let err = pod_patch_for_workload_endpoint_delete(&Kind::Node.key(None, "n")).expect_err("node");
    assert!(
        err.to_string().contains("not a WorkloadEndpoint key"),
        "{err}"
    );
}

// ===== NetworkPolicy, Namespace, ServiceAccount =====

#[test]
fn kubernetes_policy_namespace_and_service_account() {
    let np: netv1::NetworkPolicy = obj(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-np", "resourceVersion": "7",
                     "creationTimestamp": "2025-01-02T03:04:05Z",
                     "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"port": 80}]}],
            "policyTypes": ["Ingress"]
        }
    }));
    let (key, value) = policy_from_network_policy(&np).expect("converts");
    assert_eq!(
        key,
        Kind::NetworkPolicy.key(Some("shop"), "knp.default.web")
    );
    let model: K8sNetworkPolicy = obj(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-np",
                     "creationTimestamp": "2025-01-02T03:04:05Z"},
        "spec": serde_json::to_value(&np.spec).expect("spec")
    }));
    let want = k8s::network_policy_to_calico(&model).expect("converts");
    assert_eq!(value, Resource::NetworkPolicy(want).to_stored());

    let ns: corev1::Namespace = obj(json!({
        "metadata": {"name": "shop", "uid": "u-ns", "labels": {"team": "a"},
                     "creationTimestamp": "2025-01-02T03:04:05Z"}
    }));
    let (key, value) = profile_from_namespace(&ns).expect("converts");
    assert_eq!(key, Kind::Profile.key(None, "kns.shop"));
    let model: K8sNamespace = obj(serde_json::to_value(&ns).expect("json"));
    assert_eq!(
        value,
        Resource::Profile(k8s::namespace_to_profile(&model)).to_stored()
    );

    let sa: corev1::ServiceAccount = obj(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-sa", "labels": {"tier": "fe"},
                     "creationTimestamp": "2025-01-02T03:04:05Z"}
    }));
    let (key, value) = profile_from_service_account(&sa).expect("converts");
    assert_eq!(key, Kind::Profile.key(None, "ksa.shop.web"));
    let Resource::Profile(p) = Resource::from_stored(Kind::Profile, &value).expect("profile")
    else {
        panic!("not a profile")
    };
    assert_eq!(p.metadata.uid.as_deref(), Some("u-sa"));
    assert_eq!(
        p.spec.labels_to_apply.get("pcsa.tier").map(String::as_str),
        Some("fe")
    );

    // Bad input names the object and the field.
    let bad: netv1::NetworkPolicy = obj(json!({
        "metadata": {"name": "bad", "namespace": "shop"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}
    }));
    assert_eq!(
        policy_from_network_policy(&bad)
            .expect_err("bad protocol")
            .to_string(),
        "Kubernetes NetworkPolicy shop/bad: cannot be read as a Calico resource: spec.ingress[0].ports[0].protocol: \"ICMP\" is not a valid protocol (valid: TCP, UDP, SCTP)"
    );
}

#[test]
fn objects_as_json_convert_to_every_key_they_hold() {
    let pod_json = serde_json::to_value(pod()).expect("json");
    let kvs = kvs_from_object(K8sObjectKind::Pod, &pod_json).expect("pod");
    assert_eq!(kvs, workload_endpoints_from_pod(&pod()).expect("pod"));
    let node_json = serde_json::to_value(k8s_node()).expect("json");
    assert_eq!(
        kvs_from_object(K8sObjectKind::Node, &node_json).expect("node"),
        vec![calico_node_from_k8s(&k8s_node()).expect("node")]
    );
    let err = kvs_from_object(
        K8sObjectKind::Namespace,
        &json!({"metadata": {"name": "x", "labels": "not a map"}}),
    )
    .expect_err("bad object");
    assert!(
        err.to_string()
            .starts_with("Kubernetes Namespace x: cannot be read"),
        "{err}"
    );
}

#[test]
fn keys_an_object_can_hold_and_the_value_of_one() {
    let key = Kind::WorkloadEndpoint.key(Some("default"), "nodeA-k8s-podA-eth0");
    let with_ip = serde_json::to_value(pod()).expect("json");
    let mut without_ip = with_ip.clone();
    without_ip["metadata"]["annotations"] = json!({});
    // The key is the pod's whether or not it has an endpoint now.
    assert_eq!(object_keys(K8sObjectKind::Pod, &with_ip), vec![key.clone()]);
    assert_eq!(
        object_keys(K8sObjectKind::Pod, &without_ip),
        vec![key.clone()]
    );
    assert_eq!(
        value_for_key(&key, K8sObjectKind::Pod, &with_ip).expect("reads"),
        Some(
            workload_endpoints_from_pod(&pod())
                .expect("converts")
                .remove(0)
                .1
        )
    );
    assert_eq!(
        value_for_key(&key, K8sObjectKind::Pod, &without_ip).expect("reads"),
        None
    );
    let other_node = Kind::WorkloadEndpoint.key(Some("default"), "nodeB-k8s-podA-eth0");
    assert_eq!(
        value_for_key(&other_node, K8sObjectKind::Pod, &with_ip).expect("reads"),
        None
    );
    let mut host = with_ip.clone();
    host["spec"]["hostNetwork"] = json!(true);
    assert_eq!(object_keys(K8sObjectKind::Pod, &host), Vec::<String>::new());

    // Every other kind: the one key its conversion gives.
    let ns = json!({"metadata": {"name": "shop"}});
    let sa = json!({"metadata": {"name": "web", "namespace": "shop"}});
    let np = json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"podSelector": {}}});
    let node = serde_json::to_value(k8s_node()).expect("json");
    for (kind, o) in [
        (K8sObjectKind::Namespace, ns),
        (K8sObjectKind::ServiceAccount, sa),
        (K8sObjectKind::NetworkPolicy, np),
        (K8sObjectKind::Node, node),
    ] {
        let keys: Vec<String> = kvs_from_object(kind, &o)
            .expect("converts")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(object_keys(kind, &o), keys, "{kind:?}");
        assert!(
            k8s_backed_kind(&keys[0])
                .and_then(|b| b.object())
                .is_some_and(|r| r.kind == kind)
        );
    }
}

#[test]
fn watch_events_follow_a_pod_through_the_cni_plugin() {
    use gingham_datastore::EventKind;
    use store::{Known, watch_events};
    let key = Kind::WorkloadEndpoint.key(Some("default"), "nodeA-k8s-podA-eth0");
    let prefix = Kind::WorkloadEndpoint.key_prefix(None);
    let at = |mut v: Value, rv: u64| {
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        v
    };
    let with_ip = serde_json::to_value(pod()).expect("json");
    let mut pending = with_ip.clone();
    pending["metadata"]["annotations"] = json!({});
    let mut running = with_ip.clone();
    running["status"]["phase"] = json!("Running");
    running["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    let mut relabelled = running.clone();
    relabelled["metadata"]["labels"]["labelA"] = json!("changed");
    let mut del = relabelled.clone();
    del["metadata"]["annotations"]["cni.projectcalico.org/podIP"] = json!("");
    del["metadata"]["annotations"]["cni.projectcalico.org/podIPs"] = json!("");

    let mut known = Known::new();
    let mut step = |added: bool, deleted: bool, obj: Value| {
        watch_events(
            K8sObjectKind::Pod,
            &prefix,
            added,
            deleted,
            &obj,
            &mut known,
        )
        .expect("events")
        .into_iter()
        .map(|e| {
            (
                e.kind,
                e.kv.mod_revision,
                e.kv.create_revision,
                e.prev.map(|p| p.mod_revision),
            )
        })
        .collect::<Vec<_>>()
    };
    // Created without an address: nothing yet.
    assert_eq!(step(true, false, at(pending, 10)), vec![]);
    // The CNI plugin's ADD: the endpoint is created.
    assert_eq!(
        step(false, false, at(with_ip, 11)),
        vec![(EventKind::Put, 11, 11, None)]
    );
    // kubelet's status update changes nothing Calico sees: no event.
    assert_eq!(step(false, false, at(running, 12)), vec![]);
    // A label: a Put whose prev is the last state seen (its revision the silent update's).
    assert_eq!(
        step(false, false, at(relabelled, 13)),
        vec![(EventKind::Put, 13, 11, Some(12))]
    );
    // The CNI plugin's DEL: a Delete; the pod's deletion afterwards: nothing more.
    assert_eq!(
        step(false, false, at(del.clone(), 14)),
        vec![(EventKind::Delete, 14, 0, Some(13))]
    );
    assert_eq!(step(false, true, at(del.clone(), 15)), vec![]);

    // A watch that starts late learns of a DEL it had not seen the endpoint for.
    let mut fresh = Known::new();
    let events = watch_events(
        K8sObjectKind::Pod,
        &prefix,
        false,
        false,
        &at(del, 16),
        &mut fresh,
    )
    .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].kv.key.as_str()),
        (EventKind::Delete, key.as_str())
    );
    // Keys outside the prefix give nothing.
    let mut other = Known::new();
    let ns_prefix = Kind::WorkloadEndpoint.key_prefix(Some("elsewhere"));
    let with_ip = at(serde_json::to_value(pod()).expect("json"), 17);
    assert!(
        watch_events(
            K8sObjectKind::Pod,
            &ns_prefix,
            true,
            false,
            &with_ip,
            &mut other
        )
        .expect("events")
        .is_empty()
    );
}
