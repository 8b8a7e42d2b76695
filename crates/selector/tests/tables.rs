//! Data-driven tests: canonical forms, rejections, verdicts, IDs, rewrites and the Kubernetes
//! conversion. Many rows are re-expressed from libcalico-go's selector parser and tokenizer
//! tests and from the tricky cases in calico-facts.md §3.

use std::collections::BTreeMap;

use gingham_selector::{
    Expr, LabelOp, Labels, LayeredLabels, MAX_NESTING_DEPTH, Selector, is_valid_label_key,
    k8s_label_selector, normalise,
};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

// ===== canonical forms =====

/// (input, canonical form).
const CANONICAL: &[(&str, &str)] = &[
    // Empty and all().
    ("", "all()"),
    (" ", "all()"),
    ("\t \t", "all()"),
    ("all()", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("all( )", "all()"),
    ("all(\t)", "all()"),
    ("((all()))", "all()"),
    ("global()", "global()"),
    (" global( ) ", "global()"),
    ("!all()", "!all()"),
    ("!global()", "!global()"),
    ("has(a) && all()", "(has(a) && all())"),
    ("global() || all()", "(global() || all())"),
    // Calico's canonicalisation table.
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
    (r#"a == "'""#, r#"a == "'""#),
    (r#"a == '"'"#, r#"a == '"'"#),
    (r#"a contains '"'"#, r#"a contains '"'"#),
    (r#"a contains "'""#, r#"a contains "'""#),
    (r#"a startswith '"'"#, r#"a starts with '"'"#),
    (r#"a endswith "'""#, r#"a ends with "'""#),
    (r#"a!='"'"#, r#"a != '"'"#),
    (r#"a in {"d"}"#, r#"a in {"d"}"#),
    (r#"a in {"a", "b"}"#, r#"a in {"a", "b"}"#),
    (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
    (
        r#"a in {"z", "x", "y", "a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
    ),
    (
        r#"a in {"z", "z", "x", "y", "x", "a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
    ),
    // Quotes: single-quoted input becomes double-quoted unless the value holds a '"'.
    ("a == 'b'", r#"a == "b""#),
    ("a == ''", r#"a == """#),
    (r#"a == """#, r#"a == """#),
    ("a != 'x\"y'", r#"a != 'x"y'"#),
    (r#"a in {"'", '"', "c"}"#, r#"a in {'"', "'", "c"}"#),
    (r#"a not in {"'", '"', "c"}"#, r#"a not in {'"', "'", "c"}"#),
    // Sets: empty, trailing comma, byte order, spacing.
    ("a in {}", "a in {}"),
    ("a not in {}", "a not in {}"),
    ("a in { }", "a in {}"),
    ("a in {'x',}", r#"a in {"x"}"#),
    ("a in {'x' , 'y' , }", r#"a in {"x", "y"}"#),
    (
        "a in{'b','B','a','_','1'}",
        r#"a in {"1", "B", "_", "a", "b"}"#,
    ),
    ("a in {'', 'x', ''}", r#"a in {"", "x"}"#),
    ("a in {'é', 'z', 'e'}", r#"a in {"e", "z", "é"}"#),
    // Operators with all kinds of spacing.
    (r#"a=="b""#, r#"a == "b""#),
    ("a\t==\t'b'", r#"a == "b""#),
    ("a !='b'", r#"a != "b""#),
    ("a contains'b'", r#"a contains "b""#),
    ("a contains ''", r#"a contains """#),
    ("a starts with 'b'", r#"a starts with "b""#),
    ("a starts  \t with 'b'", r#"a starts with "b""#),
    ("a startswith'b'", r#"a starts with "b""#),
    ("a ends with 'b'", r#"a ends with "b""#),
    ("a endswith 'b'", r#"a ends with "b""#),
    ("a ends\twith 'b'", r#"a ends with "b""#),
    ("a notin {'b'}", r#"a not in {"b"}"#),
    ("a not  in{'b'}", r#"a not in {"b"}"#),
    ("a not\tin {}", "a not in {}"),
    ("a in{'b'}", r#"a in {"b"}"#),
    // Labels that look like keywords.
    ("in in {'x'}", r#"in in {"x"}"#),
    ("not in {}", "not in {}"),
    ("not not in {}", "not not in {}"),
    ("notin notin {}", "notin not in {}"),
    ("has == 'x'", r#"has == "x""#),
    ("all == 'x'", r#"all == "x""#),
    ("global != 'x'", r#"global != "x""#),
    (
        "contains contains 'contains'",
        r#"contains contains "contains""#,
    ),
    ("startswith startswith 'x'", r#"startswith starts with "x""#),
    ("endswith ends with 'x'", r#"endswith ends with "x""#),
    ("starts starts with 'x'", r#"starts starts with "x""#),
    ("with == 'x'", r#"with == "x""#),
    ("has(in)", "has(in)"),
    ("has(has)", "has(has)"),
    ("hasx == 'y'", r#"hasx == "y""#),
    ("all1 == 'y'", r#"all1 == "y""#),
    ("has(all)", "has(all)"),
    // Label characters.
    (
        "calico/k8s_ns == 'kube-system'",
        r#"calico/k8s_ns == "kube-system""#,
    ),
    ("has(calico/k8s_NS-.1/role)", "has(calico/k8s_NS-.1/role)"),
    (
        "projectcalico.org/namespace == 'default'",
        r#"projectcalico.org/namespace == "default""#,
    ),
    ("123 == '4'", r#"123 == "4""#),
    ("-a == 'b'", r#"-a == "b""#),
    ("./- == 'x'", r#"./- == "x""#),
    ("A_Z == 'x'", r#"A_Z == "x""#),
    ("has( a )", "has(a)"),
    ("has(\ta\t)", "has(a)"),
    // Values are taken verbatim: spaces, Unicode, newlines, operators.
    ("a == 'héllo wörld'", r#"a == "héllo wörld""#),
    ("a == 'x\ny'", "a == \"x\ny\""),
    ("a == 'tab\there'", "a == \"tab\there\""),
    ("a == '&& || ! ( ) { } ,'", r#"a == "&& || ! ( ) { } ,""#),
    ("a == '\\'", r#"a == "\""#),
    // && binds tighter than ||; parentheses make no node of their own.
    ("a == 'b' && c == 'd'", r#"(a == "b" && c == "d")"#),
    (
        "a == 'b'&&c == 'd'&&e == 'f'",
        r#"(a == "b" && c == "d" && e == "f")"#,
    ),
    (
        "a == 'b' || c == 'd' || e == 'f'",
        r#"(a == "b" || c == "d" || e == "f")"#,
    ),
    (
        "a == 'b' || c == 'd' && e == 'f'",
        r#"(a == "b" || (c == "d" && e == "f"))"#,
    ),
    (
        "a == 'b' && c == 'd' || e == 'f'",
        r#"((a == "b" && c == "d") || e == "f")"#,
    ),
    (
        "(a == 'b' || c == 'd') && e == 'f'",
        r#"((a == "b" || c == "d") && e == "f")"#,
    ),
    (
        "(a == 'b' && c == 'd') && e == 'f'",
        r#"((a == "b" && c == "d") && e == "f")"#,
    ),
    (
        "a == 'b' && (c == 'd' && e == 'f')",
        r#"(a == "b" && (c == "d" && e == "f"))"#,
    ),
    ("((a == 'b'))", r#"a == "b""#),
    ("( ( a == 'b' ) )", r#"a == "b""#),
    ("(has(a)) && (has(b))", "(has(a) && has(b))"),
    (
        "(has(a)) && (has(b)) && (has(c))",
        "(has(a) && has(b) && has(c))",
    ),
    // Negation: leading !s collapse by parity and bind to the next term only.
    ("!has(a)", "!has(a)"),
    ("! has(a)", "!has(a)"),
    ("!!has(a)", "has(a)"),
    ("!!!has(a)", "!has(a)"),
    ("!! ! has(a)", "!has(a)"),
    ("! !!has(a)", "!has(a)"),
    ("!!!!has(a)", "has(a)"),
    ("!a == 'x'", r#"!a == "x""#),
    ("!(a == 'x')", r#"!a == "x""#),
    ("!a in {'a'}", r#"!a in {"a"}"#),
    ("!a not in {'a'}", r#"!a not in {"a"}"#),
    ("!a == 'x' && b == 'y'", r#"(!a == "x" && b == "y")"#),
    ("!(a == 'x' && b == 'y')", r#"!(a == "x" && b == "y")"#),
    ("!(a == 'x' || b == 'y')", r#"!(a == "x" || b == "y")"#),
    (
        "! a == 'a1' || ! b == 'b1'",
        r#"(!a == "a1" || !b == "b1")"#,
    ),
    ("!!(a == 'x' || b == 'y')", r#"(a == "x" || b == "y")"#),
    // Calico's printer writes !(!x) as !!x (which re-parses as x).
    ("!(!has(a))", "!!has(a)"),
    ("!((!has(a)))", "!!has(a)"),
    ("!(!(!has(a)))", "!!!has(a)"),
    // Calico's visitor test selector, unprefixed.
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        r#"!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})"#,
    ),
    // Realistic selectors.
    (
        "app == 'web' && tier in {'a','b','c'} && has(env) && version != 'v1' && !has(canary)",
        r#"(app == "web" && tier in {"a", "b", "c"} && has(env) && version != "v1" && !has(canary))"#,
    ),
    (
        "projectcalico.org/orchestrator == 'k8s' && k in { 'v1', 'v2' }",
        r#"(projectcalico.org/orchestrator == "k8s" && k in {"v1", "v2"})"#,
    ),
    (
        "k8s-app == 'kubernetes-dashboard'",
        r#"k8s-app == "kubernetes-dashboard""#,
    ),
    (
        "role == 'db' || role == 'cache'",
        r#"(role == "db" || role == "cache")"#,
    ),
];

#[test]
fn canonical_forms_match_calico() {
    for (input, expected) in CANONICAL {
        let selector = parse(input);
        assert_eq!(
            selector.canonical(),
            *expected,
            "canonical form of {input:?}"
        );
        assert_eq!(selector.to_string(), *expected, "Display of {input:?}");
        assert_eq!(selector.canonical_str(), *expected);
        assert_eq!(normalise(input), *expected, "normalise({input:?})");
        // Canonical forms re-parse to themselves, except Calico's `!!x` quirk.
        let reparsed = parse(expected);
        if expected.starts_with("!!") {
            assert_ne!(
                reparsed, selector,
                "{expected} re-parses without the double negation"
            );
        } else {
            assert_eq!(reparsed, selector, "round trip of {input:?}");
            assert_eq!(reparsed.unique_id(), selector.unique_id());
            assert_eq!(reparsed.canonical(), *expected);
        }
        let from_str: Selector = input.parse().unwrap();
        assert_eq!(from_str, selector);
    }
}

#[test]
fn label_keys_up_to_512_characters() {
    let longest = "a".repeat(512);
    let selector = parse(&format!("{longest} == 'x' || has({longest})"));
    assert_eq!(
        selector.canonical(),
        format!("({longest} == \"x\" || has({longest}))")
    );
    assert_eq!(
        selector.label_keys().collect::<Vec<_>>(),
        [longest.as_str()]
    );
    for too_long in [
        format!("{}a == 'x'", longest),
        format!("has({longest}a)"),
        format!("has(x) && {longest}b in {{}}"),
    ] {
        let error = Selector::parse(&too_long).unwrap_err();
        assert!(error.to_string().contains("at most 512"), "{error}");
    }
}

// ===== rejections =====

/// (input, byte position of the reported problem).
const BAD: &[(&str, usize)] = &[
    // Calico's badSelectors.
    ("b == b", 5),
    ("b contains b", 11),
    ("b starts with b", 14),
    ("b ends with b", 12),
    ("'b1' == b", 0),
    ("b", 1),
    ("a b", 2),
    ("!", 1),
    (r#"foo == "bar" &"#, 13),
    (r#"foo == "bar" |"#, 13),
    ("foo != ||", 7),
    (r#"foo in {"", ||"#, 12),
    (r#"foo in """#, 7),
    (r#""FOO"#, 0),
    (r#""FOO'"#, 0),
    ("'FOO", 0),
    ("(", 1),
    (r#"(a == "foo""#, 11),
    (")", 0),
    ("()", 1),
    ("%", 0),
    (r#"a == "b" && %"#, 12),
    (r#"a == "b" || %"#, 12),
    ("a ", 2),
    ("has(foo) &&", 11),
    // Calico's tokenizer rejections.
    (r#"label == "value"#, 9),
    ("label == 'value", 9),
    (r#"label = "value""#, 6),
    ("all(", 4),
    ("global(", 7),
    ("has()", 4),
    ("has(foo", 7),
    ("has( foo ", 9),
    (r#"a == "b" & has(foo)"#, 9),
    (r#"a == "b" | has(foo)"#, 9),
    (r#"label starts foo "value""#, 6),
    (r#"label inf "value""#, 6),
    (r#"label ends foo "value""#, 6),
    (r#"label ends withs "value""#, 6),
    (r#"label squiggles "value""#, 6),
    // Whitespace is only space and tab.
    ("a\n== 'b'", 1),
    ("a ==\n'b'", 4),
    ("\na == 'b'", 0),
    ("a == 'b'\n", 8),
    ("a == 'b'\r\n", 8),
    ("has(a)\u{a0}", 6),
    ("\u{feff}has(a)", 0),
    // Keyword forms need their exact spelling.
    ("has (a)", 4),
    ("all ()", 4),
    ("global ()", 7),
    ("all(x)", 4),
    ("global(x)", 7),
    ("has(a b)", 6),
    ("has(a,b)", 5),
    ("has('a')", 4),
    ("HAS(a)", 3),
    ("a has(b)", 2),
    ("a == 'b' has(c)", 9),
    // Operators.
    ("a", 1),
    ("a ==", 4),
    ("a == ", 5),
    ("a !=", 4),
    ("a !", 2),
    ("a ! = 'b'", 2),
    ("a === 'b'", 4),
    ("a =! 'b'", 2),
    ("a contains", 10),
    ("a contains x", 11),
    ("a containsx 'y'", 2),
    ("a startswith", 12),
    ("a starts", 2),
    ("a starts\nwith 'x'", 2),
    ("a ends", 2),
    ("a not", 2),
    ("a not 'x'", 2),
    ("a notin", 7),
    ("a in", 4),
    ("a inn {}", 2),
    ("a IN {}", 2),
    ("a == 'b' == 'c'", 9),
    ("'a' == 'b'", 0),
    ("a == b == 'c'", 5),
    ("a == ('b')", 5),
    ("a == {'b'}", 5),
    // Sets.
    ("a in 'x'", 5),
    ("a in ('x')", 5),
    ("a in {", 6),
    ("a in {'x'", 9),
    ("a in {'x',", 10),
    ("a in {,}", 6),
    ("a in {'a' 'b'}", 10),
    ("a in {'a',,}", 10),
    ("a in {'a'; 'b'}", 9),
    ("a in {b}", 6),
    ("a in {} in {}", 8),
    ("a in {'x'} c", 11),
    ("a in {'x'}}", 10),
    // Boolean structure.
    ("&& a == 'b'", 0),
    ("|| a == 'b'", 0),
    ("a == 'b' && || c == 'd'", 12),
    ("a == 'b' &&& c == 'd'", 11),
    ("a == 'b' ||| c == 'd'", 11),
    ("a == 'b' & & c == 'd'", 9),
    ("a == 'b' !", 9),
    ("a == 'b' c", 9),
    ("a == 'b')", 8),
    ("(a == 'b'))", 10),
    ("a == 'b' && (c == 'd'", 21),
    ("((a == 'b')", 11),
    ("!!", 2),
    ("! ( )", 4),
    ("{}", 0),
    (",", 0),
    ("}", 0),
    ("'a'", 0),
    ("a == 'b' 'c'", 9),
    ("all() all()", 6),
    ("all() has(a)", 6),
    ("has(a) b == 'c'", 7),
    // Characters that start no token.
    ("é == 'x'", 0),
    ("a == “b”", 5),
    ("a.b:c == 'x'", 3),
    ("a == 'b' && #", 12),
    ("a@b == 'c'", 1),
    ("a\0 == 'b'", 1),
];

#[test]
fn bad_selectors_are_rejected_at_the_right_place() {
    let mut wrong = Vec::new();
    for (input, position) in BAD {
        if let Err(e) = Selector::parse(input)
            && e.position() != *position
        {
            wrong.push(format!("{input:?} {position} -> {e}"));
        }
    }
    assert!(wrong.is_empty(), "wrong positions:\n{}", wrong.join("\n"));
    for (input, position) in BAD {
        let error = match Selector::parse(input) {
            Ok(selector) => panic!("{input:?} should not parse, got {selector}"),
            Err(error) => error,
        };
        let message = error.to_string();
        assert_eq!(error.position(), *position, "{input:?}: {message}");
        assert!(
            !message.contains('\n'),
            "{input:?}: multi-line message {message:?}"
        );
        assert!(message.starts_with(&format!("at position {position}: expected ")));
        assert!(message.contains(", found "), "{message}");
        // Calico's Normalise trims all surrounding whitespace (newlines too) before parsing.
        if Selector::parse(input.trim()).is_err() {
            assert_eq!(
                normalise(input),
                input.trim(),
                "normalise of a bad selector"
            );
        } else {
            assert_eq!(normalise(input), parse(input.trim()).canonical());
        }
    }
}

/// (input, exact message).
const MESSAGES: &[(&str, &str)] = &[
    (
        "app == b",
        "at position 7: expected a quoted string after '==', found 'b'",
    ),
    (
        "app != ",
        "at position 7: expected a quoted string after '!=', found end of input",
    ),
    (
        "app",
        "at position 3: expected an operator after label 'app' (==, !=, in, not in, contains, starts with, ends with), found end of input",
    ),
    (
        "a squiggles 'v'",
        "at position 2: expected an operator after label 'a' (==, !=, in, not in, contains, starts with, ends with), found 'squiggles'",
    ),
    (
        "a ends withs 'v'",
        "at position 2: expected an operator after label 'a' (==, !=, in, not in, contains, starts with, ends with), found 'ends withs'",
    ),
    (
        "a (",
        "at position 2: expected an operator after label 'a' (==, !=, in, not in, contains, starts with, ends with), found '('",
    ),
    (
        "a = 'v'",
        "at position 2: expected '==' (a single '=' is not an operator), found '='",
    ),
    (
        "a == 'v' & b == 'c'",
        "at position 9: expected '&&' (a single '&' is not an operator), found '&'",
    ),
    (
        "a == 'v",
        "at position 5: expected a closing ' for the string that starts here (strings cannot contain their own quote character), found end of input",
    ),
    (
        "a in 'x'",
        "at position 5: expected '{' to start the set of values after 'in', found the string 'x'",
    ),
    (
        "a not in x",
        "at position 9: expected '{' to start the set of values after 'not in', found 'x'",
    ),
    (
        "a in {'x' 'y'}",
        "at position 10: expected ',' or '}' in the set of values, found the string 'y'",
    ),
    (
        "a in {,}",
        "at position 6: expected a quoted string or '}', found ','",
    ),
    (
        "has()",
        "at position 4: expected a label inside 'has(...)', found ')'",
    ),
    (
        "has(a",
        "at position 5: expected ')' to close 'has(', found end of input",
    ),
    (
        "all(x)",
        "at position 4: expected ')' after 'all(' (all() takes no argument), found 'x'",
    ),
    ("", ""),
    (
        "a == 'b' && ",
        "at position 12: expected a selector term (a label test such as app == 'web', has(label), all(), global(), '!' or '('), found end of input",
    ),
    (
        "a == 'b' c",
        "at position 9: expected '&&', '||' or end of input, found 'c'",
    ),
    (
        "(a == 'b' c",
        "at position 10: expected '&&', '||' or ')' to close the '(' at position 0, found 'c'",
    ),
    (
        "(a == 'b' %",
        "at position 10: expected '&&', '||' or ')', found '%'",
    ),
    (
        "a == 'b'\n",
        "at position 8: expected '&&', '||' or end of input, found '\\n'",
    ),
    (
        "é",
        "at position 0: expected a selector term (a label test such as app == 'web', has(label), all(), global(), '!' or '('), found 'é'",
    ),
];

#[test]
fn error_messages_are_exact() {
    for (input, expected) in MESSAGES {
        match Selector::parse(input) {
            Ok(_) if expected.is_empty() => {}
            Ok(selector) => panic!("{input:?} parsed as {selector}"),
            Err(error) => assert_eq!(error.to_string(), *expected, "{input:?}"),
        }
    }
    let long = format!("a == 'b' && {}", "x".repeat(600));
    let message = Selector::parse(&long).unwrap_err().to_string();
    assert_eq!(
        message,
        "at position 12: expected a label of at most 512 characters, found a label of 600 characters"
    );
    let long_value = format!("a == 'b' {}", "y".repeat(100));
    let message = Selector::parse(&long_value).unwrap_err().to_string();
    assert!(
        message.ends_with(&format!("found '{}…'", "y".repeat(32))),
        "{message}"
    );
}

#[test]
fn nesting_depth_is_limited() {
    let ok = format!(
        "{}has(a){}",
        "(".repeat(MAX_NESTING_DEPTH),
        ")".repeat(MAX_NESTING_DEPTH)
    );
    assert_eq!(parse(&ok).canonical(), "has(a)");
    let negated = format!(
        "{}has(a){}",
        "!(".repeat(MAX_NESTING_DEPTH),
        ")".repeat(MAX_NESTING_DEPTH)
    );
    assert!(parse(&negated).matches(&labels(&[("a", "")])));
    let too_deep = format!(
        "{}has(a){}",
        "(".repeat(MAX_NESTING_DEPTH + 1),
        ")".repeat(MAX_NESTING_DEPTH + 1)
    );
    let error = Selector::parse(&too_deep).unwrap_err();
    assert_eq!(error.position(), MAX_NESTING_DEPTH);
    assert!(error.to_string().contains("at most 256 levels"), "{error}");
    // Very long flat chains are fine: they are not nested.
    let chain = vec!["has(a)"; 10_000].join(" && ");
    assert!(parse(&chain).matches(&labels(&[("a", "x")])));
}

// ===== verdicts =====

struct MatchCase {
    selector: &'static str,
    matches: &'static [&'static [(&'static str, &'static str)]],
    non_matches: &'static [&'static [(&'static str, &'static str)]],
}

const fn case(
    selector: &'static str,
    matches: &'static [&'static [(&'static str, &'static str)]],
    non_matches: &'static [&'static [(&'static str, &'static str)]],
) -> MatchCase {
    MatchCase {
        selector,
        matches,
        non_matches,
    }
}

const MATCHES: &[MatchCase] = &[
    // Calico's selectorTests.
    case(
        r#"a == "b""#,
        &[&[("a", "b")], &[("a", "b"), ("c", "d")]],
        &[&[], &[("a", "c")], &[("c", "d")]],
    ),
    case(
        r#"a == "b" && c == "d""#,
        &[&[("a", "b"), ("c", "d")]],
        &[
            &[],
            &[("a", "b"), ("c", "e")],
            &[("a", "c"), ("c", "d")],
            &[("c", "d")],
            &[("a", "b")],
        ],
    ),
    case(
        r#"a == "b" || c == "d""#,
        &[&[("a", "b"), ("c", "d")], &[("a", "b")], &[("c", "d")]],
        &[&[], &[("a", "e"), ("c", "e")], &[("c", "e")], &[("a", "e")]],
    ),
    case(
        r#"a in {"'", '"', "c"}"#,
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
        &[&[], &[("a", "e")]],
    ),
    case(
        r#"a not in {"'", '"', "c"}"#,
        &[&[], &[("a", "e")]],
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
    ),
    case("a == 'a'", &[&[("a", "a")]], &[&[("a", "b")], &[]]),
    case(r#"a == "a""#, &[&[("a", "a")]], &[]),
    case(r#"a != "b""#, &[&[("a", "a")]], &[]),
    case(r#"a != "a""#, &[&[]], &[&[("a", "a")]]),
    case("a != 'a'", &[&[], &[("b", "a")]], &[&[("a", "a")]]),
    case(
        r#"a contains "a""#,
        &[&[("a", "a")], &[("a", "bab")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("b", "aaa")]],
    ),
    case(
        r#"a starts with "a""#,
        &[&[("a", "a")], &[("a", "abb")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "baa")], &[("b", "aaa")]],
    ),
    case(
        r#"a ends with "a""#,
        &[&[("a", "a")], &[("a", "bba")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "aab")], &[("b", "aaa")]],
    ),
    case(r#"a in {"a"}"#, &[&[("a", "a")]], &[&[("a", "b")], &[]]),
    case(r#"!a in {"a"}"#, &[&[("a", "b")], &[]], &[&[("a", "a")]]),
    case(
        r#"a in {"a", "b"}"#,
        &[&[("a", "a")], &[("a", "b")]],
        &[&[("a", "c")]],
    ),
    case(
        r#"a not in {"d", "e"}"#,
        &[&[("a", "a")]],
        &[&[("a", "d")], &[("a", "e")]],
    ),
    case(r#"a not in {"a"}"#, &[], &[&[("a", "a")]]),
    case(
        "has(a)",
        &[&[("a", "b")], &[("a", "")]],
        &[&[], &[("b", "a")]],
    ),
    case(
        "!has(a)",
        &[&[("b", "b")], &[]],
        &[&[("a", "b")], &[("a", "")]],
    ),
    case("", &[&[], &[("a", "b")]], &[]),
    case(" ", &[&[]], &[]),
    case("all()", &[&[]], &[]),
    case(" all()", &[&[], &[("a", "b")]], &[]),
    case("global()", &[&[]], &[]),
    case(" global()", &[&[], &[("a", "b")]], &[]),
    case("has(b)", &[], &[&[("a", "b")]]),
    case("!!has(b)", &[&[("b", "")]], &[&[("a", "b")]]),
    case("! has(a)", &[], &[&[("a", "b")]]),
    case("!!! has(a)", &[&[]], &[&[("a", "b")]]),
    case("!!!has(a)", &[], &[&[("a", "b")]]),
    case("!! ! has(a)", &[], &[&[("a", "b")]]),
    case("! !!has(a)", &[], &[&[("a", "b")]]),
    case(
        "a == 'a1' && b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    case(
        "a == 'a1' && b != 'b1'",
        &[&[("a", "a1")]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    case(
        "a != 'a1' && b == 'b1'",
        &[&[("b", "b1")]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    case(
        "a != 'a1' && b != 'b1'",
        &[&[]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    case(
        "a != 'a1' && !b == 'b1'",
        &[&[]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    case(
        "!a == 'a1' && b == 'b1'",
        &[&[("b", "b1")]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    case(
        "has(a) && !has(b)",
        &[&[("a", "a")]],
        &[&[("a", "a"), ("b", "b")]],
    ),
    case("!has(b) && has(a)", &[&[("a", "a")]], &[&[]]),
    case(
        "!(!has(a) || has(b))",
        &[&[("a", "a")]],
        &[&[("a", "a"), ("b", "")]],
    ),
    case("!(has(b) || !has(a))", &[&[("a", "a")]], &[&[]]),
    case(
        "a == 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[&[]],
    ),
    case(
        "a == 'a1' || b != 'b1'",
        &[&[("a", "a1"), ("b", "b1")], &[]],
        &[&[("b", "b1")]],
    ),
    case(
        "a != 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")], &[]],
        &[&[("a", "a1")]],
    ),
    case(
        "a != 'a1' || b != 'b1'",
        &[&[("a", "a1")]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    case(
        "! a == 'a1' || ! b == 'b1'",
        &[&[("b", "b1")]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    // Empty values and empty literals.
    case("a == ''", &[&[("a", "")]], &[&[], &[("a", "x")]]),
    case("a != ''", &[&[], &[("a", "x")]], &[&[("a", "")]]),
    case("a contains ''", &[&[("a", "")], &[("a", "x")]], &[&[]]),
    case("a starts with ''", &[&[("a", "x")]], &[&[]]),
    case("a ends with ''", &[&[("a", "")]], &[&[("b", "")]]),
    case("a in {}", &[], &[&[], &[("a", "")], &[("a", "x")]]),
    case("a not in {}", &[&[], &[("a", "")], &[("a", "x")]], &[]),
    case("a in {''}", &[&[("a", "")]], &[&[], &[("a", "x")]]),
    case("a not in {''}", &[&[], &[("a", "x")]], &[&[("a", "")]]),
    // Exact, case-sensitive, byte-wise comparisons.
    case(
        "a == 'B'",
        &[&[("a", "B")]],
        &[&[("a", "b")], &[("A", "B")], &[("a", "B ")]],
    ),
    case(
        "a in {'B', 'a'}",
        &[&[("a", "B")], &[("a", "a")]],
        &[&[("a", "b")], &[("a", "A")]],
    ),
    case(
        "a == 'é'",
        &[&[("a", "é")]],
        &[&[("a", "e")], &[("a", "e\u{301}")]],
    ),
    case(
        "a contains 'll'",
        &[&[("a", "hello")], &[("a", "ll")]],
        &[&[("a", "hel lo")], &[("a", "l")]],
    ),
    case(
        "a starts with 'ab'",
        &[&[("a", "abc")]],
        &[&[("a", "a")], &[("a", "cab")]],
    ),
    case(
        "a ends with 'bc'",
        &[&[("a", "abc")]],
        &[&[("a", "c")], &[("a", "bca")]],
    ),
    // Precedence and grouping.
    case(
        "a == '1' || b == '1' && c == '1'",
        &[&[("a", "1")], &[("b", "1"), ("c", "1")]],
        &[&[("b", "1")]],
    ),
    case(
        "(a == '1' || b == '1') && c == '1'",
        &[&[("a", "1"), ("c", "1")]],
        &[&[("a", "1")], &[("c", "1")]],
    ),
    case(
        "!a == '1' || b == '1'",
        &[&[], &[("a", "1"), ("b", "1")]],
        &[&[("a", "1")]],
    ),
    case(
        "!(a == '1' || b == '1')",
        &[&[]],
        &[&[("a", "1")], &[("b", "1")]],
    ),
    case("!(!has(a))", &[&[("a", "")]], &[&[]]),
    // Negations of all() and global().
    case("!all()", &[], &[&[], &[("a", "b")]]),
    case("!global()", &[], &[&[]]),
    case("global() && has(a)", &[&[("a", "")]], &[&[]]),
    // Keyword-named labels.
    case("in in {'x'}", &[&[("in", "x")]], &[&[("x", "in")]]),
    case("has(has)", &[&[("has", "")]], &[&[]]),
    case(
        "not not in {'x'}",
        &[&[], &[("not", "y")]],
        &[&[("not", "x")]],
    ),
    // The benchmark selector.
    case(
        "app == 'web' && tier in {'a','b','c'} && has(env) && version != 'v1' && !has(canary)",
        &[
            &[("app", "web"), ("tier", "b"), ("env", "prod")],
            &[
                ("app", "web"),
                ("tier", "c"),
                ("env", ""),
                ("version", "v2"),
            ],
        ],
        &[
            &[("app", "web"), ("tier", "b")],
            &[("app", "web"), ("tier", "d"), ("env", "prod")],
            &[
                ("app", "web"),
                ("tier", "a"),
                ("env", "prod"),
                ("version", "v1"),
            ],
            &[
                ("app", "web"),
                ("tier", "a"),
                ("env", "prod"),
                ("canary", ""),
            ],
            &[("app", "db"), ("tier", "a"), ("env", "prod")],
        ],
    ),
];

#[test]
fn verdicts_match_calico() {
    for case in MATCHES {
        let selector = parse(case.selector);
        let reparsed = parse(selector.canonical_str());
        for (set, expected) in case
            .matches
            .iter()
            .map(|s| (s, true))
            .chain(case.non_matches.iter().map(|s| (s, false)))
        {
            let map = labels(set);
            assert_eq!(
                selector.matches(&map),
                expected,
                "{:?} on {map:?}",
                case.selector
            );
            assert_eq!(reparsed.matches(&map), expected, "{selector} on {map:?}");
            let hash: std::collections::HashMap<String, String> = map.clone().into_iter().collect();
            assert_eq!(
                selector.matches(&hash),
                expected,
                "{:?} on HashMap {hash:?}",
                case.selector
            );
            let empty = labels(&[]);
            let layered = LayeredLabels::new(&empty).parent(&map);
            assert_eq!(
                selector.matches(&layered),
                expected,
                "{:?} via a profile",
                case.selector
            );
        }
    }
}

#[test]
fn profile_labels_sit_under_endpoint_labels() {
    let own = labels(&[("app", "web")]);
    let profile = labels(&[("app", "db"), ("team", "a")]);
    let namespace = labels(&[("team", "b"), ("env", "prod")]);
    let layered = LayeredLabels::new(&own).parent(&profile).parent(&namespace);
    let cases: &[(&str, bool)] = &[
        ("app == 'web'", true),
        ("app == 'db'", false),
        ("team == 'a'", true),
        ("team == 'b'", false),
        ("env == 'prod'", true),
        ("has(missing)", false),
        ("app == 'web' && team == 'a' && env == 'prod'", true),
        ("missing != 'x'", true),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text).matches(&layered), *expected, "{text}");
    }
    assert_eq!(layered.get_label("team"), Some("a"));
}

// ===== unique IDs =====

#[test]
fn unique_ids_match_calico() {
    let cases: &[(&str, &str)] = &[
        ("", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (" all() ", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (" (all() )", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (
            "! (has( b)||! has(a ))",
            "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q",
        ),
        (
            r#"! (a == "b"&&! c != "d")"#,
            "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w",
        ),
    ];
    for (input, id) in cases {
        let selector = parse(input);
        assert_eq!(selector.unique_id(), *id, "{input:?}");
        assert_eq!(parse(selector.canonical_str()).unique_id(), *id);
    }
    assert_eq!(Selector::all().unique_id(), cases[0].1);
    // IDs are 2 + 38 characters of base64url, and differ for different selectors.
    let a = parse("a == 'b'").unique_id();
    let b = parse("a == 'c'").unique_id();
    assert_eq!(a.len(), 40);
    assert!(
        a.starts_with("s:")
            && a[2..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_ne!(a, b);
}

// ===== rewrites and combinations =====

#[test]
fn key_prefix_rewrite_matches_calicos_visitor() {
    let cases: &[(&str, &str)] = &[
        ("k == 'v'", r#"visited/k == "v""#),
        ("k != 'v'", r#"visited/k != "v""#),
        ("k contains 'v'", r#"visited/k contains "v""#),
        ("k starts with 'v'", r#"visited/k starts with "v""#),
        ("k ends with 'v'", r#"visited/k ends with "v""#),
        (
            "k == 'v' && x == 'y'",
            r#"(visited/k == "v" && visited/x == "y")"#,
        ),
        (
            "k == 'v' || has(x)",
            r#"(visited/k == "v" || has(visited/x))"#,
        ),
        ("!(k == 'v')", r#"!visited/k == "v""#),
        ("k in {'v'}", r#"visited/k in {"v"}"#),
        ("k not in {'v'}", r#"visited/k not in {"v"}"#),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            r#"!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})"#,
        ),
        ("all()", "all()"),
        ("global()", "global()"),
        ("global() || has(a)", "(global() || has(visited/a))"),
    ];
    for (input, expected) in cases {
        let rewritten = parse(input).with_key_prefix("visited/");
        assert_eq!(rewritten.canonical(), *expected, "{input}");
        assert_eq!(parse(expected), rewritten);
    }
    let ns = parse("name == 'dev' || has(team)").with_key_prefix("pcns.");
    assert_eq!(ns.canonical(), r#"(pcns.name == "dev" || has(pcns.team))"#);
    assert!(ns.matches(&labels(&[("pcns.name", "dev")])));
    assert!(!ns.matches(&labels(&[("name", "dev")])));
    assert!(Selector::all().with_key_prefix("pcns.").is_all());
    let unchanged = parse("has(a)");
    assert_eq!(unchanged.with_key_prefix(""), unchanged);
}

#[test]
fn conjunctions_are_shaped_like_calicos_textual_and() {
    let a = parse("a == 'x' && b == 'y'");
    let c = parse("has(c)");
    let d = parse("d in {'1'} || !has(e)");
    let all = Selector::all();
    // Calico combines selector strings as "(s1) && (s2)"; and() builds the same tree.
    assert_eq!(a.and(&c), parse(&format!("({a}) && ({c})")));
    assert_eq!(
        a.and(&c).canonical(),
        r#"((a == "x" && b == "y") && has(c))"#
    );
    assert_eq!(
        Selector::and_all([&a, &c, &d]),
        parse(&format!("({a}) && ({c}) && ({d})"))
    );
    assert_eq!(a.and(&all), a);
    assert_eq!(all.and(&a), a);
    assert!(all.and(&all).is_all());
    assert_eq!(Selector::and_all([&all, &c, &all]), c);
    assert!(Selector::and_all([]).is_all());
    assert!(Selector::and_all([&all]).is_all());
    let both = a.and(&c);
    for set in [
        labels(&[("a", "x"), ("b", "y"), ("c", "")]),
        labels(&[("a", "x"), ("b", "y")]),
        labels(&[("c", "")]),
        labels(&[]),
    ] {
        assert_eq!(
            both.matches(&set),
            a.matches(&set) && c.matches(&set),
            "{set:?}"
        );
    }
}

#[test]
fn label_keys_and_global_queries() {
    let cases: &[(&str, &[&str], bool, bool)] = &[
        ("", &[], false, false),
        ("global()", &[], true, true),
        ("!global()", &[], false, true),
        (
            "has(b) && a == 'x' || b in {} || !has(c) && global()",
            &["a", "b", "c"],
            false,
            true,
        ),
        (
            "z == 'a' && y != 'b' && x contains 'c' && w starts with 'd' && v ends with 'e' && u not in {}",
            &["u", "v", "w", "x", "y", "z"],
            false,
            false,
        ),
    ];
    for (text, keys, is_global, contains_global) in cases {
        let selector = parse(text);
        assert_eq!(selector.label_keys().collect::<Vec<_>>(), *keys, "{text}");
        assert_eq!(selector.is_global(), *is_global, "{text}");
        assert_eq!(selector.contains_global(), *contains_global, "{text}");
    }
    assert!(parse("").is_all());
    assert!(parse("(all())").is_all());
    assert!(!parse("!all()").is_all());
    assert!(!parse("all() && all()").is_all());
}

#[test]
fn the_tree_is_visible() {
    let selector = parse("!(a in {'y', 'x'})");
    let Expr::Not(inner) = selector.expr() else {
        panic!("expected a negation, got {:?}", selector.expr());
    };
    let Expr::Label {
        key,
        op: LabelOp::In(set),
    } = &**inner
    else {
        panic!("expected an in test, got {inner:?}");
    };
    assert_eq!(&**key, "a");
    assert_eq!(set.iter().collect::<Vec<_>>(), ["x", "y"]);
    assert!(set.contains("x") && !set.contains("z"));
}

#[test]
fn equality_hashing_and_ordering_follow_the_canonical_form() {
    use std::collections::{BTreeSet, HashSet};
    let texts = [
        "a == 'b'",
        "a==\"b\"",
        "(a == 'b')",
        "has(a)",
        "has( a )",
        "",
    ];
    let hashed: HashSet<Selector> = texts.iter().map(|t| parse(t)).collect();
    assert_eq!(hashed.len(), 3);
    let ordered: BTreeSet<Selector> = texts.iter().map(|t| parse(t)).collect();
    let canonical: Vec<String> = ordered.iter().map(Selector::canonical).collect();
    assert_eq!(canonical, [r#"a == "b""#, "all()", "has(a)"]);
    assert_eq!(
        format!("{:?}", parse("a == 'b'")),
        r#"Selector("a == \"b\"")"#
    );
}

#[test]
fn valid_label_keys() {
    for key in ["a", "A-Z_0.9/x", "-", &"k".repeat(512)] {
        assert!(is_valid_label_key(key), "{key}");
    }
    for key in ["", "a b", "a:b", "é", "a\n", &"k".repeat(513)] {
        assert!(!is_valid_label_key(key), "{key}");
    }
}

// ===== Kubernetes LabelSelector conversion =====

type Expression = (String, String, Vec<String>);

fn expr(key: &str, operator: &str, values: &[&str]) -> Expression {
    (
        key.to_owned(),
        operator.to_owned(),
        values.iter().map(|v| (*v).to_owned()).collect(),
    )
}

#[test]
fn kubernetes_label_selectors_convert_like_calico() {
    let cases: Vec<(BTreeMap<String, String>, Vec<Expression>, &str)> = vec![
        (labels(&[]), vec![], ""),
        (labels(&[("label", "value")]), vec![], "label == 'value'"),
        (
            labels(&[("label2", "value2"), ("label", "value")]),
            vec![],
            "label == 'value' && label2 == 'value2'",
        ),
        (
            labels(&[("b", "1"), ("B", "2"), ("a", "")]),
            vec![],
            "B == '2' && a == '' && b == '1'",
        ),
        (
            labels(&[]),
            vec![expr("toast", "DoesNotExist", &[])],
            "! has(toast)",
        ),
        (
            labels(&[]),
            vec![expr("toast", "Exists", &[])],
            "has(toast)",
        ),
        (
            labels(&[]),
            vec![expr("toast", "In", &["butter", "jam"])],
            "toast in { 'butter', 'jam' }",
        ),
        (
            labels(&[]),
            vec![expr("toast", "NotIn", &["marmite", "milk"])],
            "toast not in { 'marmite', 'milk' }",
        ),
        (
            labels(&[]),
            vec![expr("k", "In", &["v2", "v1", "v2"])],
            "k in { 'v2', 'v1', 'v2' }",
        ),
        (
            labels(&[("k2", "v2"), ("k", "v")]),
            vec![
                expr("z", "Exists", &[]),
                expr("a", "NotIn", &["x"]),
                expr("app.kubernetes.io/name", "In", &["web"]),
            ],
            "k == 'v' && k2 == 'v2' && has(z) && a not in { 'x' } && app.kubernetes.io/name in { 'web' }",
        ),
    ];
    for (match_labels, expressions, expected) in cases {
        let text = k8s_label_selector(&match_labels, &expressions)
            .unwrap_or_else(|e| panic!("{match_labels:?} {expressions:?}: {e}"));
        assert_eq!(text, expected);
        // Every result is a valid selector with the expected meaning.
        let selector = parse(&text);
        assert!(
            selector.matches(&match_labels) || !expressions.is_empty(),
            "{text}"
        );
    }
    let selector = parse(
        &k8s_label_selector(
            &labels(&[("app", "web")]),
            &[expr("tier", "In", &["a", "b"])],
        )
        .unwrap(),
    );
    assert!(selector.matches(&labels(&[("app", "web"), ("tier", "b")])));
    assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "c")])));
    assert!(parse("").is_all());
}

#[test]
fn kubernetes_label_selectors_reject_invalid_input() {
    let cases: Vec<(BTreeMap<String, String>, Vec<Expression>, &str)> = vec![
        (
            labels(&[]),
            vec![expr("k", "Equals", &["v"])],
            "unknown operator \"Equals\"",
        ),
        (
            labels(&[]),
            vec![expr("k", "in", &["v"])],
            "valid operators are In, NotIn, Exists and DoesNotExist",
        ),
        (
            labels(&[]),
            vec![expr("k", "In", &[])],
            "needs at least one value",
        ),
        (
            labels(&[]),
            vec![expr("k", "NotIn", &[])],
            "needs at least one value",
        ),
        (
            labels(&[]),
            vec![expr("k", "Exists", &["v"])],
            "takes no values",
        ),
        (
            labels(&[]),
            vec![expr("k", "DoesNotExist", &["v"])],
            "takes no values",
        ),
        (labels(&[("bad key", "v")]), vec![], "not a valid label key"),
        (
            labels(&[]),
            vec![expr("", "Exists", &[])],
            "matchExpressions[0]: \"\" is not a valid label key",
        ),
        (labels(&[("k", "it's")]), vec![], "contains a single quote"),
        (
            labels(&[]),
            vec![expr("k", "exists", &[]), expr("k", "In", &["'"])],
            "matchExpressions[0]",
        ),
        (
            labels(&[]),
            vec![expr("k", "Exists", &[]), expr("k", "In", &["'"])],
            "matchExpressions[1]",
        ),
    ];
    for (match_labels, expressions, fragment) in cases {
        let error =
            k8s_label_selector(&match_labels, &expressions).expect_err("should be rejected");
        assert!(
            error.contains(fragment),
            "{error:?} should contain {fragment:?}"
        );
        assert!(!error.contains('\n'));
    }
}
