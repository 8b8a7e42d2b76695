//! Kubernetes `LabelSelector` → Calico selector text, as Calico's Kubernetes conversion writes it.

use std::collections::BTreeMap;

use crate::lexer::is_valid_label_key;

/// Converts a Kubernetes `LabelSelector` into Calico selector text, formatted exactly as
/// libcalico-go's `k8sSelectorToCalico` formats it.
///
/// - `matchLabels`, in key order, become `key == 'value'`;
/// - `matchExpressions`, in the given order, become `key in { 'a', 'b' }`,
///   `key not in { 'a', 'b' }`, `has(key)` or `! has(key)` for the operators `In`, `NotIn`,
///   `Exists` and `DoesNotExist`;
/// - the terms are joined with ` && `; no terms give `""`, which parses as `all()`.
///
/// Each expression is `(key, operator, values)`.
/// Calico's conversion also prepends `projectcalico.org/orchestrator == 'k8s'` to pod selectors
/// and turns an empty namespace selector into `all()`; those are the caller's business.
///
/// Unlike Calico, which silently skips unknown operators, this rejects input that the
/// Kubernetes API would reject or that would not produce a valid selector: an unknown operator,
/// `In`/`NotIn` without values, `Exists`/`DoesNotExist` with values, a key that is not a label
/// key, or a value containing `'`.
pub fn k8s_label_selector(
    match_labels: &BTreeMap<String, String>,
    match_expressions: &[(String, String, Vec<String>)],
) -> Result<String, String> {
    let mut terms = Vec::with_capacity(match_labels.len() + match_expressions.len());
    for (key, value) in match_labels {
        check_key(key, "matchLabels")?;
        check_value(key, value, "matchLabels")?;
        terms.push(format!("{key} == '{value}'"));
    }
    for (index, (key, operator, values)) in match_expressions.iter().enumerate() {
        let place = format!("matchExpressions[{index}]");
        check_key(key, &place)?;
        let term = match operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    return Err(format!(
                        "{place}: operator {operator} on key {key:?} needs at least one value"
                    ));
                }
                for value in values {
                    check_value(key, value, &place)?;
                }
                let word = if operator == "In" { "in" } else { "not in" };
                format!("{key} {word} {{ '{}' }}", values.join("', '"))
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    return Err(format!(
                        "{place}: operator {operator} on key {key:?} takes no values, got {}",
                        values.len()
                    ));
                }
                if operator == "Exists" {
                    format!("has({key})")
                } else {
                    format!("! has({key})")
                }
            }
            other => {
                return Err(format!(
                    "{place}: unknown operator {other:?} on key {key:?}; valid operators are In, NotIn, Exists and DoesNotExist"
                ));
            }
        };
        terms.push(term);
    }
    Ok(terms.join(" && "))
}

fn check_key(key: &str, place: &str) -> Result<(), String> {
    if is_valid_label_key(key) {
        Ok(())
    } else {
        Err(format!(
            "{place}: {key:?} is not a valid label key (1 to 512 characters from a-z, A-Z, 0-9, '_', '.', '/', '-')"
        ))
    }
}

fn check_value(key: &str, value: &str, place: &str) -> Result<(), String> {
    if value.contains('\'') {
        Err(format!(
            "{place}: value {value:?} for key {key:?} contains a single quote, which a label value cannot"
        ))
    } else {
        Ok(())
    }
}
