//! Items with selectors (policies, IP sets) filed by a label their selector requires, so that
//! the items an endpoint can match are looked up by its labels instead of trying every item:
//! an update then costs the selectors that could match it, not the cluster's number of them.

use std::collections::{BTreeSet, HashMap};

use gingham_model::defaults::NAMESPACE_LABEL;
use gingham_selector::{Expr, LabelOp, Selector};

use crate::snapshot::LabelSet;

/// A `key == value` test every match of `e` passes, if the expression requires one (itself,
/// or a term of a conjunction). A test on another label is preferred to the namespace's:
/// namespaced policies are already kept apart by namespace.
fn anchor(e: &Expr) -> Option<(&str, &str)> {
    match e {
        Expr::Label {
            key,
            op: LabelOp::Eq(v),
        } => Some((key, v)),
        Expr::And(parts) => {
            let mut found = parts.iter().filter_map(anchor);
            let first = found.next()?;
            if first.0 != NAMESPACE_LABEL {
                return Some(first);
            }
            Some(found.find(|(k, _)| *k != NAMESPACE_LABEL).unwrap_or(first))
        }
        _ => None,
    }
}

/// Items filed under their selector's anchor (`None` selectors and selectors without one are
/// candidates for every endpoint). An item is removed with the selector it was filed by.
pub(crate) struct LabelIndex<K> {
    /// Buckets are small vectors (a B-tree node per bucket would cost more than its items).
    by_label: HashMap<Box<str>, HashMap<Box<str>, Vec<K>>>,
    rest: BTreeSet<K>,
}

impl<K> Default for LabelIndex<K> {
    fn default() -> Self {
        LabelIndex {
            by_label: HashMap::new(),
            rest: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> LabelIndex<K> {
    /// Files `item` by `selector` (`None`: it may match any labels).
    pub(crate) fn insert(&mut self, item: K, selector: Option<&Selector>) {
        match selector.and_then(|s| anchor(s.expr())) {
            Some((k, v)) => {
                let values = match self.by_label.get_mut(k) {
                    Some(values) => values,
                    None => self.by_label.entry(Box::from(k)).or_default(),
                };
                let items = match values.get_mut(v) {
                    Some(items) => items,
                    None => values.entry(Box::from(v)).or_default(),
                };
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            None => {
                self.rest.insert(item);
            }
        }
    }

    /// Takes out `item`, filed by `selector`.
    pub(crate) fn remove(&mut self, item: &K, selector: Option<&Selector>) {
        match selector.and_then(|s| anchor(s.expr())) {
            Some((k, v)) => {
                if let Some(values) = self.by_label.get_mut(k) {
                    if let Some(items) = values.get_mut(v) {
                        if let Some(at) = items.iter().position(|i| i == item) {
                            items.swap_remove(at);
                        }
                        if items.is_empty() {
                            values.remove(v);
                        }
                    }
                    if values.is_empty() {
                        self.by_label.remove(k);
                    }
                }
            }
            None => {
                self.rest.remove(item);
            }
        }
    }

    /// The items whose selector can match `labels` (each once): the others cannot.
    pub(crate) fn candidates<'a>(&'a self, labels: &'a LabelSet) -> impl Iterator<Item = &'a K> {
        let filed = labels
            .iter()
            .filter_map(|(k, v)| self.by_label.get(k).and_then(|values| values.get(v)));
        self.rest.iter().chain(filed.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        LabelSet::from(map)
    }

    #[test]
    fn candidates_are_what_can_match() {
        let sels = [
            "app == 'a' && role == 'r'",
            "app == 'b'",
            "has(app)",
            "app == 'a' || app == 'b'",
            "projectcalico.org/namespace == 'ns0' && app == 'a'",
            "projectcalico.org/namespace == 'ns0'",
            "all()",
        ];
        let mut index = LabelIndex::default();
        let parsed: Vec<Selector> = sels.iter().map(|s| Selector::parse(s).unwrap()).collect();
        for (i, s) in parsed.iter().enumerate() {
            index.insert(i, Some(s));
        }
        index.insert(99, None);
        for ls in [
            labels(&[("app", "a"), ("role", "r")]),
            labels(&[("app", "b"), ("projectcalico.org/namespace", "ns0")]),
            labels(&[("app", "a"), ("projectcalico.org/namespace", "ns0")]),
            labels(&[]),
        ] {
            let got: BTreeSet<usize> = index.candidates(&ls).copied().collect();
            assert_eq!(got.len(), index.candidates(&ls).count(), "each once");
            for (i, s) in sels.iter().enumerate() {
                if Selector::parse(s).unwrap().matches(&ls) {
                    assert!(
                        got.contains(&i),
                        "{s} matches {ls:?} but is not a candidate"
                    );
                }
            }
            assert!(got.contains(&99));
        }
        // Filed by the test they require, the namespace's last.
        let only_b = labels(&[("app", "b")]);
        let got: BTreeSet<usize> = index.candidates(&only_b).copied().collect();
        assert_eq!(got, BTreeSet::from([1, 2, 3, 6, 99]));
        for (i, s) in parsed.iter().enumerate() {
            index.remove(&i, Some(s));
        }
        index.remove(&99, None);
        assert!(index.by_label.is_empty() && index.rest.is_empty());
    }
}
