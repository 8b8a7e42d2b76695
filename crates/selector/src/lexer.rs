//! The selector tokenizer, behaving like Calico's (libcalico-go `selector/tokenizer`).
//!
//! Tokens are produced on demand, one at a time, so the first problem from the left is the one
//! reported. Like Calico's tokenizer it is slightly context sensitive: right after a label it
//! looks for an operator word (`in`, `not in`, `contains`, `starts with`, `ends with`), and
//! anywhere else such words are plain labels.

use crate::error::{ParseError, quote_excerpt};

/// The longest label key Calico accepts, in bytes (label keys are ASCII).
pub const MAX_LABEL_LEN: usize = 512;

/// A token kind; labels, strings and `has(...)` borrow their text from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    Label(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Not,
    All,
    Has(&'a str),
    Global,
    LParen,
    RParen,
    And,
    Or,
    Eof,
}

/// A token with its byte span in the input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub(crate) kind: Tok<'a>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Whether a byte may appear in a label key: `[a-zA-Z0-9_./-]`.
pub(crate) fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// Whether `key` is a label key Calico's selector syntax can express.
pub fn is_valid_label_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_LABEL_LEN && key.bytes().all(is_label_byte)
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// The label just produced, if the previous token was a label: an operator must follow.
    last_label: Option<&'a str>,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            last_label: None,
        }
    }

    pub(crate) fn src(&self) -> &'a str {
        self.src
    }

    /// Produces the next token. `expected` describes, for the error message, what the parser
    /// can accept here; it is used when the input holds a character that starts no token.
    pub(crate) fn next_token(&mut self, expected: &str) -> Result<Token<'a>, ParseError> {
        let token = self.lex(expected)?;
        self.last_label = match token.kind {
            Tok::Label(label) => Some(label),
            _ => None,
        };
        self.pos = token.end;
        Ok(token)
    }

    fn lex(&self, expected: &str) -> Result<Token<'a>, ParseError> {
        let start = self.skip_ws(self.pos);
        let bytes = self.src.as_bytes();
        let Some(&first) = bytes.get(start) else {
            return Ok(self.token(Tok::Eof, start, start));
        };
        let simple = |kind, len| Ok(self.token(kind, start, start + len));
        match first {
            b'(' => simple(Tok::LParen, 1),
            b')' => simple(Tok::RParen, 1),
            b'{' => simple(Tok::LBrace, 1),
            b'}' => simple(Tok::RBrace, 1),
            b',' => simple(Tok::Comma, 1),
            b'"' | b'\'' => self.string(start, first),
            b'=' => self.doubled(
                start,
                "==",
                Tok::Eq,
                "'==' (a single '=' is not an operator)",
            ),
            b'&' => self.doubled(
                start,
                "&&",
                Tok::And,
                "'&&' (a single '&' is not an operator)",
            ),
            b'|' => self.doubled(
                start,
                "||",
                Tok::Or,
                "'||' (a single '|' is not an operator)",
            ),
            b'!' if bytes.get(start + 1) == Some(&b'=') => simple(Tok::Ne, 2),
            b'!' => simple(Tok::Not, 1),
            _ => match self.last_label {
                Some(label) => self.operator(start, label),
                None => self.word(start, expected),
            },
        }
    }

    fn token(&self, kind: Tok<'a>, start: usize, end: usize) -> Token<'a> {
        Token { kind, start, end }
    }

    fn skip_ws(&self, mut pos: usize) -> usize {
        let bytes = self.src.as_bytes();
        while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        pos
    }

    fn label_len(&self, pos: usize) -> usize {
        self.src.as_bytes()[pos..]
            .iter()
            .take_while(|&&b| is_label_byte(b))
            .count()
    }

    /// A quoted string: everything up to the next quote of the same kind (no escapes).
    fn string(&self, start: usize, quote: u8) -> Result<Token<'a>, ParseError> {
        let body_start = start + 1;
        match self.src.as_bytes()[body_start..]
            .iter()
            .position(|&b| b == quote)
        {
            Some(len) => Ok(self.token(
                Tok::Str(&self.src[body_start..body_start + len]),
                start,
                body_start + len + 1,
            )),
            None => {
                let quote = char::from(quote);
                Err(ParseError::new(
                    start,
                    format!(
                        "a closing {quote} for the string that starts here (strings cannot contain their own quote character)"
                    ),
                    "end of input",
                ))
            }
        }
    }

    fn doubled(
        &self,
        start: usize,
        op: &str,
        kind: Tok<'a>,
        expected: &str,
    ) -> Result<Token<'a>, ParseError> {
        if self.src[start..].starts_with(op) {
            Ok(self.token(kind, start, start + op.len()))
        } else {
            Err(ParseError::new(start, expected, self.excerpt_at(start)))
        }
    }

    /// After a label: one of the word operators, or an error.
    fn operator(&self, start: usize, label: &str) -> Result<Token<'a>, ParseError> {
        const WORD_OPS: &[(&[&str], Tok<'static>)] = &[
            (&["contains"], Tok::Contains),
            (&["starts", "with"], Tok::StartsWith),
            (&["ends", "with"], Tok::EndsWith),
            (&["not", "in"], Tok::NotIn),
            (&["in"], Tok::In),
        ];
        for (words, kind) in WORD_OPS {
            if let Some(end) = self.match_words(start, words) {
                return Ok(self.token(*kind, start, end));
            }
        }
        Err(self.operator_error(start, label))
    }

    /// Matches `words` separated by any spaces/tabs (including none: `notin`, `startswith`),
    /// followed by a word boundary; returns the end of the last word.
    fn match_words(&self, start: usize, words: &[&str]) -> Option<usize> {
        let mut pos = start;
        let mut end = start;
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                pos = self.skip_ws(pos);
            }
            if !self.src[pos..].starts_with(word) {
                return None;
            }
            pos += word.len();
            end = pos;
        }
        // Calico skips trailing whitespace after a multi-word operator before checking for the
        // boundary; a label character after the whitespace is a parse error either way, so
        // checking straight after the last word accepts exactly the same inputs.
        match self.src.as_bytes().get(end) {
            Some(&b) if is_label_byte(b) => None,
            _ => Some(end),
        }
    }

    fn operator_error(&self, start: usize, label: &str) -> ParseError {
        // Quote a partial multi-word operator whole ("starts foo", "ends withs").
        let mut end = start + self.label_len(start);
        if matches!(&self.src[start..end], "starts" | "ends" | "not") {
            let next = self.skip_ws(end);
            let next_len = self.label_len(next);
            if next_len > 0 {
                end = next + next_len;
            }
        }
        let found = if end > start {
            quote_excerpt(&self.src[start..end])
        } else {
            self.excerpt_at(start)
        };
        ParseError::new(start, operator_expected(label), found)
    }

    /// Outside operator position: `has(label)`, `all()`, `global()` or a label.
    fn word(&self, start: usize, expected: &str) -> Result<Token<'a>, ParseError> {
        let rest = &self.src[start..];
        if rest.starts_with("has(") {
            let key_start = self.skip_ws(start + 4);
            let key = self.label_at(key_start, "a label inside 'has(...)'")?;
            let close = self.skip_ws(key_start + key.len());
            return self
                .expect_close(close, "')' to close 'has('")
                .map(|end| self.token(Tok::Has(key), start, end));
        }
        for (word, kind) in [("all(", Tok::All), ("global(", Tok::Global)] {
            if rest.starts_with(word) {
                let close = self.skip_ws(start + word.len());
                let expected = if kind == Tok::All {
                    "')' after 'all(' (all() takes no argument)"
                } else {
                    "')' after 'global(' (global() takes no argument)"
                };
                return self
                    .expect_close(close, expected)
                    .map(|end| self.token(kind, start, end));
            }
        }
        let label = self.label_at(start, expected)?;
        Ok(self.token(Tok::Label(label), start, start + label.len()))
    }

    /// A label at `pos`: non-empty and at most [`MAX_LABEL_LEN`] bytes.
    fn label_at(&self, pos: usize, expected_if_missing: &str) -> Result<&'a str, ParseError> {
        let len = self.label_len(pos);
        if len == 0 {
            return Err(ParseError::new(
                pos,
                expected_if_missing,
                self.excerpt_at(pos),
            ));
        }
        if len > MAX_LABEL_LEN {
            return Err(ParseError::new(
                pos,
                format!("a label of at most {MAX_LABEL_LEN} characters"),
                format!("a label of {len} characters"),
            ));
        }
        Ok(&self.src[pos..pos + len])
    }

    fn expect_close(&self, pos: usize, expected: &str) -> Result<usize, ParseError> {
        if self.src.as_bytes().get(pos) == Some(&b')') {
            Ok(pos + 1)
        } else {
            Err(ParseError::new(pos, expected, self.excerpt_at(pos)))
        }
    }

    /// Describes what is at `pos`: a run of label characters, one other character, or the end.
    pub(crate) fn excerpt_at(&self, pos: usize) -> String {
        let len = self.label_len(pos);
        if len > 0 {
            return quote_excerpt(&self.src[pos..pos + len]);
        }
        match self.src[pos..].chars().next() {
            Some(c) => quote_excerpt(c.encode_utf8(&mut [0; 4])),
            None => "end of input".to_owned(),
        }
    }
}

/// What may follow label `label`.
pub(crate) fn operator_expected(label: &str) -> String {
    format!(
        "an operator after label {} (==, !=, in, not in, contains, starts with, ends with)",
        quote_excerpt(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Result<Vec<Tok<'_>>, ParseError> {
        let mut lexer = Lexer::new(input);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token("anything")?;
            out.push(token.kind);
            if token.kind == Tok::Eof {
                return Ok(out);
            }
        }
    }

    #[test]
    fn tokenizes_like_calico() {
        use Tok::*;
        let long = "a".repeat(512);
        let long_eq = format!("{long} == \"value\"");
        let cases: Vec<(&str, Vec<Tok<'_>>)> = vec![
            (r#"a=="b""#, vec![Label("a"), Eq, Str("b"), Eof]),
            (r#"a!="b""#, vec![Label("a"), Ne, Str("b"), Eof]),
            (
                r#"(a=="b")"#,
                vec![LParen, Label("a"), Eq, Str("b"), RParen, Eof],
            ),
            (
                r#"contains contains 'contains'"#,
                vec![Label("contains"), Contains, Str("contains"), Eof],
            ),
            (
                r#"label contains"value""#,
                vec![Label("label"), Contains, Str("value"), Eof],
            ),
            (
                r#"startswith starts with "v""#,
                vec![Label("startswith"), StartsWith, Str("v"), Eof],
            ),
            (
                r#"endswith ends  with "v""#,
                vec![Label("endswith"), EndsWith, Str("v"), Eof],
            ),
            (
                r#"l startswith "v""#,
                vec![Label("l"), StartsWith, Str("v"), Eof],
            ),
            (
                r#"l endswith "v""#,
                vec![Label("l"), EndsWith, Str("v"), Eof],
            ),
            (&long_eq, vec![Label(&long), Eq, Str("value"), Eof]),
            (
                r#"a not in "bar" && !has(foo) || b in c"#,
                vec![
                    Label("a"),
                    NotIn,
                    Str("bar"),
                    And,
                    Not,
                    Has("foo"),
                    Or,
                    Label("b"),
                    In,
                    Label("c"),
                    Eof,
                ],
            ),
            (
                "a  not  in  \"bar\"  &&  ! has( foo )  ||  b  in  c ",
                vec![
                    Label("a"),
                    NotIn,
                    Str("bar"),
                    And,
                    Not,
                    Has("foo"),
                    Or,
                    Label("b"),
                    In,
                    Label("c"),
                    Eof,
                ],
            ),
            (
                r#"a notin"bar"&&!has(foo)||b in"c""#,
                vec![
                    Label("a"),
                    NotIn,
                    Str("bar"),
                    And,
                    Not,
                    Has("foo"),
                    Or,
                    Label("b"),
                    In,
                    Str("c"),
                    Eof,
                ],
            ),
            (
                r#"a not in {"a","B"}"#,
                vec![
                    Label("a"),
                    NotIn,
                    LBrace,
                    Str("a"),
                    Comma,
                    Str("B"),
                    RBrace,
                    Eof,
                ],
            ),
            (
                "has(calico/k8s_NS-.1/role)",
                vec![Has("calico/k8s_NS-.1/role"), Eof],
            ),
            ("global( )", vec![Global, Eof]),
            ("all(\t)", vec![All, Eof]),
            ("in in {}", vec![Label("in"), In, LBrace, RBrace, Eof]),
            ("has == 'x'", vec![Label("has"), Eq, Str("x"), Eof]),
            ("'a\nb'", vec![Str("a\nb"), Eof]),
            (" \t ", vec![Eof]),
        ];
        for (input, expected) in cases {
            assert_eq!(kinds(input).unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn rejects_like_calico() {
        let too_long = format!("{} == \"value\"", "a".repeat(513));
        for input in [
            too_long.as_str(),
            r#"label == "value"#,
            "label == 'value",
            r#"label = "value""#,
            "all(",
            "global(",
            "has()",
            "has(foo",
            "has( foo ",
            r#"a == "b" & has(foo)"#,
            r#"a == "b" | has(foo)"#,
            r#"label starts foo "value""#,
            r#"label inf "value""#,
            r#"label ends foo "value""#,
            r#"label ends withs "value""#,
            r#"label squiggles "value""#,
            "a\n",
            "%",
        ] {
            assert!(kinds(input).is_err(), "{input:?} should not tokenize");
        }
    }

    #[test]
    fn label_keys() {
        assert!(is_valid_label_key("a"));
        assert!(is_valid_label_key("projectcalico.org/name"));
        assert!(is_valid_label_key(&"a".repeat(512)));
        assert!(!is_valid_label_key(&"a".repeat(513)));
        assert!(!is_valid_label_key(""));
        assert!(!is_valid_label_key("a b"));
        assert!(!is_valid_label_key("é"));
    }
}
