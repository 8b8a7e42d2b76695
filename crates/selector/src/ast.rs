//! The parsed form of a selector: evaluation and Calico's canonical string form.

use crate::labels::Labels;

/// One node of a parsed selector expression.
///
/// The shapes mirror Calico's parser exactly: parentheses produce no node of their own, a run of
/// `!` collapses to at most one [`Expr::Not`], and `&&`/`||` chains become one n-ary node with at
/// least two operands.
/// The only way to get a `Not` directly inside a `Not` is `!(!x)`; Calico prints that as `!!x`,
/// which re-parses to plain `x` (same verdicts, different canonical form).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Expr {
    /// `all()` (also the empty selector): matches everything.
    All,
    /// `global()`: matches everything; it only has meaning in a namespaceSelector, where it
    /// means "non-namespaced resources".
    Global,
    /// A test on one label.
    Label {
        /// The label key.
        key: Box<str>,
        /// The test applied to the label's value.
        op: LabelOp,
    },
    /// `!x`.
    Not(Box<Expr>),
    /// `a && b && ...` (at least two operands).
    And(Box<[Expr]>),
    /// `a || b || ...` (at least two operands).
    Or(Box<[Expr]>),
}

/// The test applied to one label's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LabelOp {
    /// `has(k)`: the label is present (with any value, including empty).
    Has,
    /// `k == "v"`: present and equal. Absent labels do not match.
    Eq(Box<str>),
    /// `k != "v"`: absent, or present with another value. Absent labels **match**.
    Ne(Box<str>),
    /// `k contains "s"`: present and containing the substring.
    Contains(Box<str>),
    /// `k starts with "s"`: present and starting with the prefix.
    StartsWith(Box<str>),
    /// `k ends with "s"`: present and ending with the suffix.
    EndsWith(Box<str>),
    /// `k in {...}`: present with one of the values.
    In(ValueSet),
    /// `k not in {...}`: absent, or present with none of the values. Absent labels **match**.
    NotIn(ValueSet),
}

/// The literal set of an `in`/`not in` test: sorted by bytes and de-duplicated, as Calico keeps
/// it, so membership is a binary search and the canonical form lists members in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ValueSet(Box<[Box<str>]>);

impl ValueSet {
    /// Builds a set from literal values in any order, with duplicates.
    pub(crate) fn from_values<'s>(values: impl IntoIterator<Item = &'s str>) -> Self {
        let mut values: Vec<Box<str>> = values.into_iter().map(Box::from).collect();
        values.sort_unstable();
        values.dedup();
        ValueSet(values.into_boxed_slice())
    }

    /// Whether `value` is a member.
    pub fn contains(&self, value: &str) -> bool {
        self.0
            .binary_search_by(|member| (**member).cmp(value))
            .is_ok()
    }

    /// The members, sorted by bytes, without duplicates.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|member| &**member)
    }

    /// How many distinct members the set has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty (`k in {}`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ===== evaluation =====

impl Expr {
    /// Evaluates the expression; never allocates.
    pub(crate) fn eval<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Label { key, op } => op.eval(labels.get_label(key)),
            Expr::Not(inner) => !inner.eval(labels),
            Expr::And(operands) => operands.iter().all(|e| e.eval(labels)),
            Expr::Or(operands) => operands.iter().any(|e| e.eval(labels)),
        }
    }
}

impl LabelOp {
    /// Applies the test to a label's value (`None` when the label is absent).
    pub fn eval(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (LabelOp::Has, value) => value.is_some(),
            (LabelOp::Ne(expected), value) => value != Some(&**expected),
            (LabelOp::NotIn(set), value) => value.is_none_or(|v| !set.contains(v)),
            (_, None) => false,
            (LabelOp::Eq(expected), Some(v)) => v == &**expected,
            (LabelOp::Contains(needle), Some(v)) => v.contains(&**needle),
            (LabelOp::StartsWith(prefix), Some(v)) => v.starts_with(&**prefix),
            (LabelOp::EndsWith(suffix), Some(v)) => v.ends_with(&**suffix),
            (LabelOp::In(set), Some(v)) => set.contains(v),
        }
    }
}

// ===== canonical form =====

impl Expr {
    /// Appends Calico's canonical string for this expression (its `String()` form).
    pub(crate) fn write_canonical(&self, out: &mut String) {
        match self {
            Expr::All => out.push_str("all()"),
            Expr::Global => out.push_str("global()"),
            Expr::Label { key, op } => op.write_canonical(key, out),
            Expr::Not(inner) => {
                out.push('!');
                inner.write_canonical(out);
            }
            Expr::And(operands) => write_group(operands, " && ", out),
            Expr::Or(operands) => write_group(operands, " || ", out),
        }
    }

    /// Calls `f` on every label key, in source order, with repeats.
    pub(crate) fn for_each_key<'s>(&'s self, f: &mut impl FnMut(&'s str)) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Label { key, .. } => f(key),
            Expr::Not(inner) => inner.for_each_key(f),
            Expr::And(operands) | Expr::Or(operands) => {
                operands.iter().for_each(|e| e.for_each_key(f));
            }
        }
    }

    /// A copy with every label key prefixed (Calico's `PrefixVisitor`).
    pub(crate) fn with_key_prefix(&self, prefix: &str) -> Expr {
        match self {
            Expr::All => Expr::All,
            Expr::Global => Expr::Global,
            Expr::Label { key, op } => Expr::Label {
                key: format!("{prefix}{key}").into_boxed_str(),
                op: op.clone(),
            },
            Expr::Not(inner) => Expr::Not(Box::new(inner.with_key_prefix(prefix))),
            Expr::And(operands) => {
                Expr::And(operands.iter().map(|e| e.with_key_prefix(prefix)).collect())
            }
            Expr::Or(operands) => {
                Expr::Or(operands.iter().map(|e| e.with_key_prefix(prefix)).collect())
            }
        }
    }

    /// Whether `global()` appears anywhere in the expression.
    pub(crate) fn contains_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::All | Expr::Label { .. } => false,
            Expr::Not(inner) => inner.contains_global(),
            Expr::And(operands) | Expr::Or(operands) => operands.iter().any(Expr::contains_global),
        }
    }

    /// Whether a `Not` sits directly inside a `Not` anywhere (only `!(!x)` produces that).
    /// Such selectors print as `!!x`, which Calico re-parses to `x`.
    pub(crate) fn has_double_negation(&self) -> bool {
        match self {
            Expr::All | Expr::Global | Expr::Label { .. } => false,
            Expr::Not(inner) => matches!(**inner, Expr::Not(_)) || inner.has_double_negation(),
            Expr::And(operands) | Expr::Or(operands) => {
                operands.iter().any(Expr::has_double_negation)
            }
        }
    }
}

fn write_group(operands: &[Expr], separator: &str, out: &mut String) {
    out.push('(');
    for (i, operand) in operands.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        operand.write_canonical(out);
    }
    out.push(')');
}

impl LabelOp {
    fn write_canonical(&self, key: &str, out: &mut String) {
        let (operator, value) = match self {
            LabelOp::Has => {
                out.push_str("has(");
                out.push_str(key);
                out.push(')');
                return;
            }
            LabelOp::In(set) => return write_set(key, "in", set, out),
            LabelOp::NotIn(set) => return write_set(key, "not in", set, out),
            LabelOp::Eq(v) => (" == ", v),
            LabelOp::Ne(v) => (" != ", v),
            LabelOp::Contains(v) => (" contains ", v),
            LabelOp::StartsWith(v) => (" starts with ", v),
            LabelOp::EndsWith(v) => (" ends with ", v),
        };
        out.push_str(key);
        out.push_str(operator);
        push_quoted(value, out);
    }
}

fn write_set(key: &str, operator: &str, set: &ValueSet, out: &mut String) {
    out.push_str(key);
    out.push(' ');
    out.push_str(operator);
    out.push_str(" {");
    for (i, value) in set.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_quoted(value, out);
    }
    out.push('}');
}

/// Calico's quoting rule: double quotes, unless the value contains a double quote.
/// (A parsed value never contains both kinds of quote, since literals have no escapes.)
fn push_quoted(value: &str, out: &mut String) {
    let quote = if value.contains('"') { '\'' } else { '"' };
    out.push(quote);
    out.push_str(value);
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_set_sorts_dedups_and_searches() {
        let set = ValueSet::from_values(["z", "a", "z", "", "m"]);
        assert_eq!(set.iter().collect::<Vec<_>>(), ["", "a", "m", "z"]);
        assert_eq!(set.len(), 4);
        assert!(!set.is_empty());
        for member in ["", "a", "m", "z"] {
            assert!(set.contains(member), "{member}");
        }
        for other in ["b", "zz", " ", "A"] {
            assert!(!set.contains(other), "{other}");
        }
        assert!(ValueSet::default().is_empty());
    }

    #[test]
    fn label_ops_follow_calico_for_absent_labels() {
        let set = ValueSet::from_values(["x"]);
        let cases: &[(LabelOp, bool)] = &[
            (LabelOp::Has, false),
            (LabelOp::Eq("x".into()), false),
            (LabelOp::Ne("x".into()), true),
            (LabelOp::Contains("".into()), false),
            (LabelOp::StartsWith("".into()), false),
            (LabelOp::EndsWith("".into()), false),
            (LabelOp::In(set.clone()), false),
            (LabelOp::NotIn(set), true),
        ];
        for (op, expected) in cases {
            assert_eq!(op.eval(None), *expected, "{op:?}");
        }
    }
}
