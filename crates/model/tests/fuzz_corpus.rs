//! Runs the `resources_yaml` fuzz property over every file of its seed corpus on stable Rust.

use std::path::Path;

#[test]
fn fuzz_corpus_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/resources_yaml");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        gingham_model::fuzzing::check(&data);
        n += 1;
    }
    assert!(
        n >= 20,
        "the corpus should hold at least 20 files, found {n}"
    );
}

#[test]
fn hostile_inputs_do_not_panic() {
    let inputs: &[&[u8]] = &[
        b"",
        b"\xff\xfe",
        b"[",
        b"{",
        b"- - - -",
        b"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nspec: [1, 2]\n",
        b"apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: .nan}\n",
        b"apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: 1e308}\n",
        b"a: &a [*a]\n",
        b"apiVersion: v1\nkind: List\nitems: 5\n",
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: \"-n\"}\n",
        b"apiVersion: v1\nkind: bgpPeer\nmetadata: {scope: node, peerIP: 10.0.0.1}\n",
        b"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec:\n  ingress:\n  - ports: [{port: x, endPort: 5}]\n",
    ];
    for data in inputs {
        gingham_model::fuzzing::check(data);
    }
}
