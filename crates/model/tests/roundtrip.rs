//! Property test: generated policies serialise and load back to equal resources.

use gingham_model::{
    Action, EntityRule, GlobalNetworkPolicy, GlobalNetworkPolicySpec, LoadedDocument, ObjectMeta,
    Port, Protocol, Resource, Rule, apply_defaults, load, to_json, to_yaml, validate,
};
use proptest::prelude::*;

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

fn port() -> impl Strategy<Value = Port> {
    prop_oneof![
        (1u16..=65535).prop_map(Port::single),
        (1u16..30000, 0u16..30000).prop_map(|(a, d)| Port::Range { min: a, max: a + d }),
        prop::sample::select(vec!["http", "dns", "metrics-9"])
            .prop_map(|s| Port::Named(s.to_string())),
    ]
}

fn net() -> impl Strategy<Value = ipnet::IpNet> {
    (any::<[u8; 4]>(), 1u8..=32).prop_map(|(o, len)| {
        ipnet::IpNet::V4(
            ipnet::Ipv4Net::new(o.into(), len)
                .expect("valid prefix")
                .trunc(),
        )
    })
}

fn selector() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "all()",
        "role == 'db'",
        "has(app) && app != \"x\"",
        "tier in {'a', 'b'} || !has(canary)",
        "k8s-app == 'kubernetes-dashboard'",
    ])
    .prop_map(str::to_string)
}

fn entity() -> impl Strategy<Value = EntityRule> {
    (
        prop::collection::vec(net(), 0..3),
        selector(),
        prop::collection::vec(port(), 0..3),
        prop::collection::vec(net(), 0..2),
    )
        .prop_map(|(nets, selector, ports, not_nets)| EntityRule {
            nets,
            selector,
            ports,
            not_nets: not_nets
                .into_iter()
                .filter(|n| n.prefix_len() > 0)
                .collect(),
            ..EntityRule::default()
        })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        action(),
        prop::sample::select(vec![
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Number(6),
        ]),
        entity(),
        entity(),
    )
        .prop_map(|(action, protocol, source, destination)| {
            let mut r = Rule::new(action);
            r.protocol = Some(protocol);
            r.source = source;
            r.destination = destination;
            r
        })
}

fn policy() -> impl Strategy<Value = Resource> {
    (
        "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        prop::option::of(-1000i32..100000),
        selector(),
        prop::collection::vec(rule(), 0..4),
        prop::collection::vec(rule(), 0..4),
        prop::collection::btree_map("[a-z]{1,8}", "[a-zA-Z0-9]{0,8}", 0..3),
    )
        .prop_map(|(name, order, selector, ingress, egress, labels)| {
            let mut r = Resource::GlobalNetworkPolicy(GlobalNetworkPolicy {
                metadata: ObjectMeta {
                    labels,
                    ..ObjectMeta::named(name)
                },
                spec: GlobalNetworkPolicySpec {
                    order: order.map(|o| f64::from(o) / 4.0),
                    selector,
                    ingress,
                    egress,
                    ..GlobalNetworkPolicySpec::default()
                },
            });
            apply_defaults(&mut r);
            r
        })
}

proptest! {
    #[test]
    fn generated_policies_round_trip(policies in prop::collection::vec(policy(), 1..4)) {
        for p in &policies {
            prop_assert!(validate(p).is_empty(), "{:?}", validate(p));
        }
        for text in [to_yaml(&policies), to_json(&policies)] {
            let back = load("generated", &text).map(|d| LoadedDocument::all_resources(&d));
            prop_assert_eq!(back.as_ref(), Ok(&policies), "{}", text);
        }
    }
}
