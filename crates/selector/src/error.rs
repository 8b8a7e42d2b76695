//! The error type returned when a selector does not parse.

use std::fmt::Write as _;

/// A selector that could not be parsed.
///
/// It names the byte position (0-based) where the problem starts, what would have been valid
/// there, and what was found instead.
/// Its `Display` is always a single line, for example
/// `at position 7: expected a quoted string after '==', found 'b'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: expected {expected}, found {found}")]
pub struct ParseError {
    position: usize,
    expected: String,
    found: String,
}

impl ParseError {
    pub(crate) fn new(
        position: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        ParseError {
            position,
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// The byte offset in the input where the problem starts.
    pub fn position(&self) -> usize {
        self.position
    }

    /// What would have been valid at that position, in words.
    pub fn expected(&self) -> &str {
        &self.expected
    }

    /// What was found at that position, in words (`end of input`, or a quoted excerpt).
    pub fn found(&self) -> &str {
        &self.found
    }
}

/// The longest excerpt of the input quoted in an error, in characters.
const MAX_EXCERPT_CHARS: usize = 32;

/// Quotes an excerpt of the input for an error message, in single quotes (see [`excerpt`]).
pub(crate) fn quote_excerpt(text: &str) -> String {
    format!("'{}'", excerpt(text))
}

/// An excerpt of the input for an error message: control characters escaped (so the message
/// stays on one line) and long excerpts shortened with an ellipsis.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_EXCERPT_CHARS) + 3);
    for (i, c) in text.chars().enumerate() {
        if i == MAX_EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_line_and_short() {
        assert_eq!(quote_excerpt("b"), "'b'");
        assert_eq!(quote_excerpt("\n"), "'\\n'");
        assert_eq!(quote_excerpt("\t\r"), "'\\t\\r'");
        let long = "x".repeat(100);
        let quoted = quote_excerpt(&long);
        assert_eq!(quoted.chars().count(), MAX_EXCERPT_CHARS + 3);
        assert!(quoted.ends_with("…'"));
    }

    #[test]
    fn display_is_the_documented_shape() {
        let e = ParseError::new(7, "a quoted string after '=='", "'b'");
        assert_eq!(
            e.to_string(),
            "at position 7: expected a quoted string after '==', found 'b'"
        );
        assert_eq!(e.position(), 7);
        assert_eq!(e.expected(), "a quoted string after '=='");
        assert_eq!(e.found(), "'b'");
    }
}
