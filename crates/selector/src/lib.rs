//! Calico's label selector language: parsing, canonical form, unique IDs and fast matching.
//!
//! This crate reproduces libcalico-go's `selector` package exactly: the same inputs are accepted
//! and rejected, parsed into the same tree shapes, printed in the same canonical form (Calico's
//! `Selector.String()`), hashed to the same unique IDs, and evaluated with the same semantics
//! (for example `a != "x"` and `a not in {...}` match label sets without `a`).
//!
//! ```
//! use std::collections::BTreeMap;
//! use gingham_selector::Selector;
//!
//! let sel: Selector = "app == 'web' && !has(canary)".parse()?;
//! assert_eq!(sel.canonical(), r#"(app == "web" && !has(canary))"#);
//! let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
//! assert!(sel.matches(&labels));
//! # Ok::<(), gingham_selector::ParseError>(())
//! ```
//!
//! It also converts Kubernetes `LabelSelector`s to selector text the way Calico's Kubernetes
//! conversion does ([`k8s_label_selector`]).
//!
//! It does not index selectors or labels, compute label restrictions, or know about resources,
//! namespaces or profiles beyond the [`LayeredLabels`] lookup rule and the key-prefix rewrite.
//! It does no I/O and has no serde dependency: callers store selectors as their text.
//!
//! Deliberate differences from Calico: parentheses may nest at most [`MAX_NESTING_DEPTH`] levels
//! (Calico has no limit), and errors carry a byte position and say what was expected.

mod ast;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod k8s;
mod labels;
mod lexer;
mod parser;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha224};

pub use ast::{Expr, LabelOp, ValueSet};
pub use error::ParseError;
pub use k8s::k8s_label_selector;
pub use labels::{Labels, LayeredLabels};
pub use lexer::{MAX_LABEL_LEN, is_valid_label_key};
pub use parser::MAX_NESTING_DEPTH;

/// A parsed, precompiled selector.
///
/// Cloning is cheap (the tree is shared). Two selectors are equal exactly when their canonical
/// forms are equal, which is also when their trees are equal and when their unique IDs are equal;
/// ordering and hashing follow the canonical form too.
#[derive(Clone)]
pub struct Selector {
    inner: Arc<Inner>,
}

struct Inner {
    expr: Expr,
    canonical: Box<str>,
}

impl Selector {
    /// Parses selector text. The empty string (or only spaces and tabs) is `all()`.
    pub fn parse(text: &str) -> Result<Selector, ParseError> {
        parser::parse(text).map(Selector::from_expr)
    }

    /// The selector that matches everything: `all()`.
    pub fn all() -> Selector {
        Selector::from_expr(Expr::All)
    }

    fn from_expr(expr: Expr) -> Selector {
        let mut canonical = String::new();
        expr.write_canonical(&mut canonical);
        Selector {
            inner: Arc::new(Inner {
                expr,
                canonical: canonical.into_boxed_str(),
            }),
        }
    }

    /// Whether this is exactly `all()` (also the empty selector, and `(all())`).
    pub fn is_all(&self) -> bool {
        matches!(self.inner.expr, Expr::All)
    }

    /// Whether the whole selector is `global()`.
    pub fn is_global(&self) -> bool {
        matches!(self.inner.expr, Expr::Global)
    }

    /// Whether `global()` appears anywhere in the selector.
    pub fn contains_global(&self) -> bool {
        self.inner.expr.contains_global()
    }

    /// The parsed tree.
    pub fn expr(&self) -> &Expr {
        &self.inner.expr
    }

    /// Calico's canonical form (`Selector.String()`), e.g. `(a == "b" && !has(c))`.
    pub fn canonical(&self) -> String {
        self.inner.canonical.to_string()
    }

    /// The canonical form, borrowed.
    pub fn canonical_str(&self) -> &str {
        &self.inner.canonical
    }

    /// Calico's unique ID: `"s:"` + unpadded base64url of SHA-224 of `"s:" + canonical`.
    /// Calico derives IP set names and cache keys from it.
    pub fn unique_id(&self) -> String {
        let mut hasher = Sha224::new();
        hasher.update(b"s:");
        hasher.update(self.inner.canonical.as_bytes());
        let digest = hasher.finalize();
        let mut id = String::with_capacity(2 + 38);
        id.push_str("s:");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(digest, &mut id);
        id
    }

    /// Evaluates the selector against a label set. Never allocates.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.inner.expr.eval(labels)
    }

    /// Every label key the selector tests, sorted by bytes and without repeats.
    pub fn label_keys(&self) -> impl Iterator<Item = &str> {
        let mut keys = Vec::new();
        self.inner.expr.for_each_key(&mut |key| keys.push(key));
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
    }

    /// A copy with `prefix` put in front of every label key, as Calico's `PrefixVisitor` does
    /// (a namespaceSelector `name == 'x'` becomes `pcns.name == "x"`). `all()` stays `all()`.
    ///
    /// The result re-parses only if `prefix` is made of label characters and the longer keys
    /// stay within [`MAX_LABEL_LEN`]; Calico does not check this either.
    pub fn with_key_prefix(&self, prefix: &str) -> Selector {
        if prefix.is_empty() {
            return self.clone();
        }
        Selector::from_expr(self.inner.expr.with_key_prefix(prefix))
    }

    /// The conjunction `self && other`, shaped as Calico's parse of `(self) && (other)`.
    /// `all()` on either side is an identity: the other selector is returned unchanged.
    pub fn and(&self, other: &Selector) -> Selector {
        Selector::and_all([self, other])
    }

    /// The conjunction of several selectors, shaped as Calico's parse of
    /// `(s1) && (s2) && ... && (sn)` (one flat `&&` node), with `all()` operands left out.
    /// No operands (or only `all()`) give `all()`; a single remaining operand is returned as is.
    pub fn and_all<'s>(selectors: impl IntoIterator<Item = &'s Selector>) -> Selector {
        let mut operands: Vec<&Selector> = selectors.into_iter().filter(|s| !s.is_all()).collect();
        match operands.len() {
            0 => Selector::all(),
            1 => operands.remove(0).clone(),
            _ => Selector::from_expr(Expr::And(
                operands.iter().map(|s| s.inner.expr.clone()).collect(),
            )),
        }
    }

    /// Whether printing and re-parsing changes the tree (only `!(!x)` does; see [`Expr`]).
    pub(crate) fn has_double_negation(&self) -> bool {
        self.inner.expr.has_double_negation()
    }
}

/// Calico's `selector.Normalise`: the canonical form of `text` (surrounding whitespace,
/// including newlines, trimmed first), or `text` trimmed and otherwise unchanged if it does
/// not parse.
pub fn normalise(text: &str) -> String {
    let trimmed = text.trim();
    match Selector::parse(trimmed) {
        Ok(selector) => selector.canonical(),
        Err(_) => trimmed.to_owned(),
    }
}

/// Shares equal selectors: [`Interner::intern`] gives back the copy it already holds of an
/// equal selector (same canonical form, so the same tree), so that many policies or rules
/// with the same selector hold one tree between them instead of one each.
///
/// A selector nobody else holds any more is dropped from the interner on a later call (when
/// the interner has doubled since it last looked), so it does not grow with churn.
#[derive(Default)]
pub struct Interner {
    held: std::collections::HashSet<Selector>,
    /// Selectors held after the last sweep of unused ones.
    swept: usize,
}

impl Interner {
    pub fn new() -> Interner {
        Interner::default()
    }

    /// The shared copy of `selector` (equal to it).
    pub fn intern(&mut self, selector: Selector) -> Selector {
        if let Some(shared) = self.held.get(&selector) {
            return shared.clone();
        }
        if self.held.len() >= 2 * self.swept.max(64) {
            self.held.retain(|s| Arc::strong_count(&s.inner) > 1);
            self.swept = self.held.len();
        }
        self.held.insert(selector.clone());
        selector
    }

    /// How many distinct selectors it holds.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Selector::parse(text)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.canonical)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector")
            .field(&&*self.inner.canonical)
            .finish()
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.canonical == other.inner.canonical
    }
}

impl Eq for Selector {}

impl Hash for Selector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.canonical.hash(state);
    }
}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Selector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.inner.canonical.cmp(&other.inner.canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interner_shares_equal_selectors_and_forgets_unused_ones() {
        let mut interner = Interner::new();
        let a = interner.intern(Selector::parse("app == 'web' && role == 'db'").unwrap());
        // Another spelling of the same selector: the first tree is given back.
        let b = interner.intern(Selector::parse("(app == \"web\") && role == \"db\"").unwrap());
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        let c = interner.intern(Selector::parse("app == 'api'").unwrap());
        assert!(!Arc::ptr_eq(&a.inner, &c.inner));
        assert_eq!(interner.len(), 2);
        drop((b, c));
        // Unused selectors go at a sweep; `a` is still held, so it stays shared.
        for i in 0..200 {
            drop(interner.intern(Selector::parse(&format!("n == '{i}'")).unwrap()));
        }
        assert!(interner.len() < 150, "{}", interner.len());
        let again = interner.intern(Selector::parse("app == 'web' && role == 'db'").unwrap());
        assert!(Arc::ptr_eq(&a.inner, &again.inner));
    }

    #[test]
    fn all_has_calicos_id() {
        assert_eq!(
            Selector::all().unique_id(),
            "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
        );
        assert!(Selector::default().is_all());
        assert_eq!(format!("{:?}", Selector::all()), "Selector(\"all()\")");
    }

    #[test]
    fn selector_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Selector>();
        check::<ParseError>();
    }
}
