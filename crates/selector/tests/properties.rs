//! Property tests: random selectors, written with random spacing, quoting and operator
//! spellings, parse to something that
//! - gives the same verdicts as an independent evaluator written here from Calico's rules, and
//! - prints a canonical form that parses back to an equal selector with the same unique ID and
//!   the same verdicts.

use std::collections::BTreeMap;

use gingham_selector::{Expr, Selector};
use proptest::prelude::*;

/// A selector as the test understands it.
#[derive(Debug, Clone)]
enum Sel {
    All,
    Global,
    Has(&'static str),
    Cmp(&'static str, Cmp, String),
    Set(&'static str, bool, Vec<String>),
    Not(Box<Sel>),
    And(Vec<Sel>),
    Or(Vec<Sel>),
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Ne,
    Contains,
    StartsWith,
    EndsWith,
}

type Labels = BTreeMap<String, String>;

const KEYS: &[&str] = &[
    "a",
    "b",
    "app",
    "in",
    "has",
    "not",
    "all",
    "global",
    "startswith",
    "contains",
    "x.y/z-1_2",
];

/// Calico's semantics, written independently of the crate.
fn eval(sel: &Sel, labels: &Labels) -> bool {
    match sel {
        Sel::All | Sel::Global => true,
        Sel::Has(k) => labels.contains_key(*k),
        Sel::Cmp(k, cmp, v) => match (cmp, labels.get(*k)) {
            (Cmp::Ne, None) => true,
            (_, None) => false,
            (Cmp::Eq, Some(x)) => x == v,
            (Cmp::Ne, Some(x)) => x != v,
            (Cmp::Contains, Some(x)) => x.contains(v.as_str()),
            (Cmp::StartsWith, Some(x)) => x.starts_with(v.as_str()),
            (Cmp::EndsWith, Some(x)) => x.ends_with(v.as_str()),
        },
        Sel::Set(k, negated, values) => match labels.get(*k) {
            None => *negated,
            Some(x) => values.contains(x) != *negated,
        },
        Sel::Not(inner) => !eval(inner, labels),
        Sel::And(operands) => operands.iter().all(|s| eval(s, labels)),
        Sel::Or(operands) => operands.iter().any(|s| eval(s, labels)),
    }
}

/// Renders `sel` as text, taking formatting decisions from `style`.
struct Writer<'s> {
    style: &'s [u8],
    next: usize,
    out: String,
}

impl Writer<'_> {
    fn choice(&mut self, n: u8) -> u8 {
        let byte = self
            .style
            .get(self.next % self.style.len().max(1))
            .copied()
            .unwrap_or(0);
        self.next += 1;
        byte.wrapping_add(self.next as u8) % n
    }

    fn space(&mut self) {
        let ws = [" ", "", "\t", "  ", " \t"][usize::from(self.choice(5))];
        self.out.push_str(ws);
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[usize::from(self.choice(options.len() as u8))]
    }

    fn quoted(&mut self, value: &str) {
        let quote = if value.contains('"') {
            '\''
        } else if value.contains('\'') || self.choice(2) == 0 {
            '"'
        } else {
            '\''
        };
        self.out.push(quote);
        self.out.push_str(value);
        self.out.push(quote);
    }

    fn write(&mut self, sel: &Sel) {
        self.space();
        // Sometimes wrap a term in redundant parentheses or a double negation.
        match self.choice(8) {
            0 => {
                self.out.push('(');
                self.write_bare(sel);
                self.space();
                self.out.push(')');
            }
            1 => {
                let negations = self.pick(&["!!", "! !", "!\t!"]);
                self.out.push_str(negations);
                self.space();
                self.write_bare(sel);
            }
            _ => self.write_bare(sel),
        }
        self.space();
    }

    fn write_bare(&mut self, sel: &Sel) {
        match sel {
            Sel::All => {
                let text = self.pick(&["all()", "all( )", "all(\t)"]);
                self.out.push_str(text);
            }
            Sel::Global => {
                let text = self.pick(&["global()", "global( )"]);
                self.out.push_str(text);
            }
            Sel::Has(k) => {
                self.out.push_str("has(");
                self.space();
                self.out.push_str(k);
                self.space();
                self.out.push(')');
            }
            Sel::Cmp(k, cmp, v) => {
                self.out.push_str(k);
                let op = match cmp {
                    Cmp::Eq => "==",
                    Cmp::Ne => "!=",
                    Cmp::Contains => "contains",
                    Cmp::StartsWith => self.pick(&["starts with", "startswith", "starts \t with"]),
                    Cmp::EndsWith => self.pick(&["ends with", "endswith", "ends  with"]),
                };
                // Word operators need a space after the label; symbols do not.
                if op.starts_with(char::is_alphabetic) {
                    self.out.push(' ');
                }
                self.space();
                self.out.push_str(op);
                self.space();
                self.quoted(v);
            }
            Sel::Set(k, negated, values) => {
                self.out.push_str(k);
                self.out.push(' ');
                self.space();
                let op = if *negated {
                    self.pick(&["not in", "notin", "not\tin"])
                } else {
                    "in"
                };
                self.out.push_str(op);
                self.space();
                self.out.push('{');
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.quoted(value);
                    self.space();
                }
                if !values.is_empty() && self.choice(4) == 0 {
                    self.out.push(',');
                }
                self.out.push('}');
            }
            Sel::Not(inner) => {
                self.out.push('!');
                self.space();
                self.write_operand(inner);
            }
            Sel::And(operands) => self.write_chain(operands, "&&"),
            Sel::Or(operands) => self.write_chain(operands, "||"),
        }
    }

    /// An operand of `!`, `&&` or `||`: compound expressions need parentheses.
    fn write_operand(&mut self, sel: &Sel) {
        if matches!(sel, Sel::And(_) | Sel::Or(_)) {
            self.out.push('(');
            self.write(sel);
            self.out.push(')');
        } else {
            self.write(sel);
        }
    }

    fn write_chain(&mut self, operands: &[Sel], op: &str) {
        for (i, operand) in operands.iter().enumerate() {
            if i > 0 {
                self.out.push_str(op);
            }
            self.write_operand(operand);
        }
    }
}

fn render(sel: &Sel, style: &[u8]) -> String {
    let mut writer = Writer {
        style,
        next: 0,
        out: String::new(),
    };
    writer.write(sel);
    writer.out
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[ab]{1,2}", "[ab'\" &|!(){},=é]{0,4}",]
        .prop_filter("a literal cannot hold both quote characters", |v| {
            !(v.contains('"') && v.contains('\''))
        })
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(KEYS)
}

fn cmp() -> impl Strategy<Value = Cmp> {
    prop::sample::select(
        &[
            Cmp::Eq,
            Cmp::Ne,
            Cmp::Contains,
            Cmp::StartsWith,
            Cmp::EndsWith,
        ][..],
    )
}

fn selector() -> impl Strategy<Value = Sel> {
    let leaf = prop_oneof![
        1 => Just(Sel::All),
        1 => Just(Sel::Global),
        3 => key().prop_map(Sel::Has),
        6 => (key(), cmp(), value()).prop_map(|(k, c, v)| Sel::Cmp(k, c, v)),
        4 => (key(), any::<bool>(), prop::collection::vec(value(), 0..4))
            .prop_map(|(k, n, vs)| Sel::Set(k, n, vs)),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Sel::Not(Box::new(s))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Sel::And),
            prop::collection::vec(inner, 2..4).prop_map(Sel::Or),
        ]
    })
}

fn label_set() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(key().prop_map(str::to_owned), value(), 0..5)
}

fn has_double_negation(expr: &Expr) -> bool {
    match expr {
        Expr::Not(inner) => matches!(**inner, Expr::Not(_)) || has_double_negation(inner),
        Expr::And(operands) | Expr::Or(operands) => operands.iter().any(has_double_negation),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsed_selectors_match_like_calico(
        sel in selector(),
        style in prop::collection::vec(any::<u8>(), 1..16),
        sets in prop::collection::vec(label_set(), 1..8),
    ) {
        let text = render(&sel, &style);
        let parsed = Selector::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?} did not parse: {e}")))?;
        for labels in &sets {
            prop_assert_eq!(parsed.matches(labels), eval(&sel, labels), "{:?} on {:?}", text, labels);
        }
    }

    #[test]
    fn canonical_form_round_trips(
        sel in selector(),
        style in prop::collection::vec(any::<u8>(), 1..16),
        sets in prop::collection::vec(label_set(), 1..8),
    ) {
        let text = render(&sel, &style);
        let parsed = Selector::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?} did not parse: {e}")))?;
        let canonical = parsed.canonical();
        let reparsed = Selector::parse(&canonical)
            .map_err(|e| TestCaseError::fail(format!("canonical {canonical:?} did not parse: {e}")))?;
        if has_double_negation(parsed.expr()) {
            // Calico prints !(!x) as !!x, which re-parses as x: stable from the second round.
            let again = Selector::parse(reparsed.canonical_str()).unwrap();
            prop_assert_eq!(&again, &reparsed);
        } else {
            prop_assert_eq!(&reparsed, &parsed);
            prop_assert_eq!(reparsed.expr(), parsed.expr());
            prop_assert_eq!(reparsed.unique_id(), parsed.unique_id());
            prop_assert_eq!(reparsed.canonical(), canonical.clone());
        }
        for labels in &sets {
            prop_assert_eq!(reparsed.matches(labels), parsed.matches(labels), "{} on {:?}", canonical, labels);
        }
    }

    /// Token soup, mostly invalid: the fuzz invariants hold (no panics, one-line errors with
    /// in-range positions, round trips for whatever parses).
    #[test]
    fn token_soup_keeps_the_fuzz_invariants(tokens in prop::collection::vec(prop::sample::select(&[
        "a", "b", "in", "not", "has", "has(", "has(a)", "all()", "all(", "global()", ")", "(",
        "{", "}", ",", "==", "=", "!=", "!", "&&", "&", "||", "|", "'x'", "\"y\"", "'", "\"",
        " ", "\t", "\n", "contains", "starts", "with", "startswith", "ends", "notin", "é", "%",
    ][..]), 0..12)) {
        gingham_selector::fuzzing::check(tokens.concat().as_bytes());
    }
}
