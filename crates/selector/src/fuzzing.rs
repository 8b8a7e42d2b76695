//! Invariant checks shared by the `selector_parse` fuzz target and the corpus test.
//! Not a stable API.

use std::collections::BTreeMap;

use crate::{Expr, LabelOp, LayeredLabels, Selector, normalise};

/// Parses `data` (when it is UTF-8) and panics if any invariant breaks:
///
/// - errors have a position inside the input, on a character boundary, and a one-line message;
/// - a parsed selector's canonical form re-parses, to an equal selector with the same unique ID
///   (except `!(!x)`, which Calico prints as `!!x`; there the canonical form is stable from the
///   second round on and the verdicts do not change);
/// - matching gives the same verdicts before and after the round trip, after the `pcns.` key
///   prefix rewrite (on prefixed labels), through [`LayeredLabels`], and under `and`.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Selector::parse(text) {
        Err(error) => check_error(text, &error),
        Ok(selector) => check_selector(text, &selector),
    }
}

fn check_error(text: &str, error: &crate::ParseError) {
    assert!(
        error.position() <= text.len(),
        "{error} is past the end of {text:?}"
    );
    assert!(
        text.is_char_boundary(error.position()),
        "{error} splits a character in {text:?}"
    );
    let message = error.to_string();
    assert!(
        !message.contains(['\n', '\r']),
        "error message is not one line: {message:?}"
    );
    assert!(
        Selector::parse(text).as_ref().err() == Some(error),
        "parsing is not deterministic"
    );
}

fn check_selector(text: &str, selector: &Selector) {
    let canonical = selector.canonical();
    assert_eq!(normalise(text), canonical, "normalise({text:?})");
    let reparsed = Selector::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {text:?} does not parse: {e}"));
    let stable = Selector::parse(reparsed.canonical_str())
        .unwrap_or_else(|e| panic!("canonical form {reparsed} does not parse: {e}"));
    assert_eq!(stable, reparsed, "canonical form of {text:?} is not stable");
    if !selector.has_double_negation() {
        assert_eq!(&reparsed, selector, "round trip of {text:?}");
        assert_eq!(reparsed.expr(), selector.expr(), "round trip of {text:?}");
        assert_eq!(
            reparsed.unique_id(),
            selector.unique_id(),
            "round trip of {text:?}"
        );
    }
    assert_eq!(selector.and(&Selector::all()), *selector);
    assert_eq!(Selector::all().and(selector), *selector);
    assert_eq!(
        selector.is_global(),
        matches!(selector.expr(), Expr::Global)
    );
    assert!(!selector.is_global() || selector.contains_global());

    let prefixed_selector = selector.with_key_prefix("pcns.");
    assert_eq!(prefixed_selector.is_all(), selector.is_all());
    let doubled = selector.and(selector);
    let empty = BTreeMap::<String, String>::new();
    for labels in label_sets(selector) {
        let verdict = selector.matches(&labels);
        assert_eq!(
            reparsed.matches(&labels),
            verdict,
            "{canonical} on {labels:?} after round trip"
        );
        assert_eq!(
            doubled.matches(&labels),
            verdict,
            "{canonical} && itself on {labels:?}"
        );
        let prefixed: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (format!("pcns.{k}"), v.clone()))
            .collect();
        assert_eq!(
            prefixed_selector.matches(&prefixed),
            verdict,
            "{prefixed_selector} on {prefixed:?}"
        );
        let layered = LayeredLabels::new(&empty).parent(&empty).parent(&labels);
        assert_eq!(
            selector.matches(&layered),
            verdict,
            "{canonical} through layers"
        );
        let overridden = LayeredLabels::new(&labels).parent(&prefixed);
        assert_eq!(
            selector.matches(&overridden),
            verdict,
            "{canonical} with own labels first"
        );
    }
}

/// Label sets likely to tell verdicts apart: built from the selector's own keys and literals.
fn label_sets(selector: &Selector) -> Vec<BTreeMap<String, String>> {
    let keys: Vec<&str> = selector.label_keys().take(6).collect();
    let mut values = vec![String::new(), "zz-other".to_owned()];
    collect_literals(selector.expr(), &mut values);
    values.truncate(8);

    let mut sets = vec![BTreeMap::new()];
    for value in &values {
        sets.push(
            keys.iter()
                .map(|k| ((*k).to_owned(), value.clone()))
                .collect(),
        );
        for key in &keys {
            sets.push(BTreeMap::from([((*key).to_owned(), value.clone())]));
        }
    }
    // Keys with different values each.
    sets.push(
        keys.iter()
            .zip(values.iter().cycle().skip(2))
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    );
    sets
}

fn collect_literals(expr: &Expr, out: &mut Vec<String>) {
    match expr {
        Expr::Label { op, .. } => match op {
            LabelOp::Eq(v)
            | LabelOp::Ne(v)
            | LabelOp::Contains(v)
            | LabelOp::StartsWith(v)
            | LabelOp::EndsWith(v) => {
                out.push(v.to_string());
                // A longer value that still contains, starts and ends with the literal.
                out.push(format!("{v}{v}"));
            }
            LabelOp::In(set) | LabelOp::NotIn(set) => out.extend(set.iter().map(str::to_owned)),
            LabelOp::Has => {}
        },
        Expr::Not(inner) => collect_literals(inner, out),
        Expr::And(operands) | Expr::Or(operands) => {
            operands.iter().for_each(|e| collect_literals(e, out));
        }
        Expr::All | Expr::Global => {}
    }
}
