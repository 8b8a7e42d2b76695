//! Label sets that selectors can be matched against.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

/// A set of labels (key → value) that a selector can be evaluated against.
///
/// Implementations must answer without side effects; matching calls `get_label` once per
/// label test in the selector, so it should be cheap and must not need to allocate.
pub trait Labels {
    /// The value of label `key`, or `None` if the label is not set.
    /// A label that is set to the empty string is present: `Some("")`.
    fn get_label(&self, key: &str) -> Option<&str>;
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get_label(&self, key: &str) -> Option<&str> {
        (**self).get_label(key)
    }
}

impl<K, V> Labels for BTreeMap<K, V>
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

impl<K, V, S> Labels for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

/// An endpoint's own labels layered over the labels its profiles apply.
///
/// This is how Calico evaluates selectors against workload and host endpoints: a label is looked
/// up in the endpoint's own labels first, then in each parent (profile `labelsToApply`) in order.
/// The first layer that has the key wins, so own labels override profile labels and earlier
/// profiles override later ones.
///
/// Building one allocates only when parents are added; looking labels up never allocates.
pub struct LayeredLabels<'a> {
    own: &'a dyn Labels,
    parents: Vec<&'a dyn Labels>,
}

impl<'a> LayeredLabels<'a> {
    /// Layers with only the endpoint's own labels (no parents yet).
    pub fn new(own: &'a dyn Labels) -> Self {
        LayeredLabels {
            own,
            parents: Vec::new(),
        }
    }

    /// Own labels over the given parents, in priority order (first parent wins among parents).
    pub fn with_parents<I>(own: &'a dyn Labels, parents: I) -> Self
    where
        I: IntoIterator<Item = &'a dyn Labels>,
    {
        LayeredLabels {
            own,
            parents: parents.into_iter().collect(),
        }
    }

    /// Adds one more parent, with lower priority than those already added.
    pub fn push_parent(&mut self, parent: &'a dyn Labels) {
        self.parents.push(parent);
    }

    /// Builder form of [`LayeredLabels::push_parent`].
    #[must_use]
    pub fn parent(mut self, parent: &'a dyn Labels) -> Self {
        self.parents.push(parent);
        self
    }
}

impl Labels for LayeredLabels<'_> {
    fn get_label(&self, key: &str) -> Option<&str> {
        if let Some(value) = self.own.get_label(key) {
            return Some(value);
        }
        self.parents.iter().find_map(|parent| parent.get_label(key))
    }
}

impl std::fmt::Debug for LayeredLabels<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredLabels")
            .field("parents", &self.parents.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn maps_answer_lookups() {
        let b = map(&[("a", "1"), ("empty", "")]);
        assert_eq!(b.get_label("a"), Some("1"));
        assert_eq!(b.get_label("empty"), Some(""));
        assert_eq!(b.get_label("missing"), None);
        let h: HashMap<String, String> = b.clone().into_iter().collect();
        assert_eq!(h.get_label("a"), Some("1"));
        assert_eq!(h.get_label("missing"), None);
        let borrowed: BTreeMap<&str, &str> = [("x", "y")].into_iter().collect();
        assert_eq!(borrowed.get_label("x"), Some("y"));
        assert_eq!((&&b).get_label("a"), Some("1"));
    }

    #[test]
    fn own_labels_win_then_parents_in_order() {
        let own = map(&[("a", "own")]);
        let p1 = map(&[("a", "p1"), ("b", "p1")]);
        let p2 = map(&[("b", "p2"), ("c", "p2")]);
        let layered = LayeredLabels::new(&own).parent(&p1).parent(&p2);
        assert_eq!(layered.get_label("a"), Some("own"));
        assert_eq!(layered.get_label("b"), Some("p1"));
        assert_eq!(layered.get_label("c"), Some("p2"));
        assert_eq!(layered.get_label("d"), None);

        let parents: [&dyn Labels; 2] = [&p2, &p1];
        let reversed = LayeredLabels::with_parents(&own, parents);
        assert_eq!(reversed.get_label("b"), Some("p2"));

        let mut pushed = LayeredLabels::new(&own);
        assert_eq!(pushed.get_label("c"), None);
        pushed.push_parent(&p2);
        assert_eq!(pushed.get_label("c"), Some("p2"));
        assert_eq!(format!("{pushed:?}"), "LayeredLabels { parents: 1, .. }");
    }
}
