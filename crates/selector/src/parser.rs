//! Recursive-descent parser with the grammar and tree shapes of Calico's selector parser.
//!
//! ```text
//! selector := ε | or
//! or       := and ( "||" and )*
//! and      := op ( "&&" op )*
//! op       := "!"* ( has(LABEL) | all() | global() | "(" or ")"
//!                  | LABEL ( "==" | "!=" | contains | starts with | ends with ) STRING
//!                  | LABEL ( in | not in ) "{" [ STRING ( "," STRING )* [","] ] "}" )
//! ```

use crate::ast::{Expr, LabelOp, ValueSet};
use crate::error::{ParseError, excerpt};
use crate::lexer::{Lexer, Tok, Token, operator_expected};

/// How deeply parentheses may nest. Calico has no limit; this one keeps parsing, matching and
/// dropping a selector within a small, fixed amount of stack. Real selectors nest a few levels.
pub const MAX_NESTING_DEPTH: usize = 256;

const EXPECT_TERM: &str =
    "a selector term (a label test such as app == 'web', has(label), all(), global(), '!' or '(')";
const EXPECT_STRING_OR_CLOSE: &str = "a quoted string or '}'";
const EXPECT_COMMA_OR_CLOSE: &str = "',' or '}' in the set of values";
const EXPECT_MORE_OR_END: &str = "'&&', '||' or end of input";
const EXPECT_MORE_OR_PAREN: &str = "'&&', '||' or ')'";

/// Parses a selector into Calico's tree shape. The empty selector (or only spaces and tabs) is
/// `all()`.
pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        lexer: Lexer::new(src),
        peeked: None,
        open_parens: Vec::new(),
    };
    if parser.peek(EXPECT_TERM)?.kind == Tok::Eof {
        return Ok(Expr::All);
    }
    let expr = parser.parse_or()?;
    let end = parser.next(EXPECT_MORE_OR_END)?;
    if end.kind != Tok::Eof {
        return Err(parser.unexpected(end, EXPECT_MORE_OR_END));
    }
    Ok(expr)
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// Positions of the currently open parentheses.
    open_parens: Vec<usize>,
}

impl<'a> Parser<'a> {
    fn next(&mut self, expected: &str) -> Result<Token<'a>, ParseError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(expected),
        }
    }

    fn peek(&mut self, expected: &str) -> Result<Token<'a>, ParseError> {
        let token = self.next(expected)?;
        self.peeked = Some(token);
        Ok(token)
    }

    fn continuation(&self) -> &'static str {
        if self.open_parens.is_empty() {
            EXPECT_MORE_OR_END
        } else {
            EXPECT_MORE_OR_PAREN
        }
    }

    fn describe(&self, token: Token<'a>) -> String {
        match token.kind {
            Tok::Eof => "end of input".to_owned(),
            Tok::Str(_) => format!(
                "the string {}",
                excerpt(&self.lexer.src()[token.start..token.end])
            ),
            _ => format!("'{}'", excerpt(&self.lexer.src()[token.start..token.end])),
        }
    }

    fn unexpected(&self, token: Token<'a>, expected: impl Into<String>) -> ParseError {
        ParseError::new(token.start, expected, self.describe(token))
    }

    fn parse_or(&mut self) -> Result<Expr, ParseError> {
        let first = self.parse_and()?;
        if self.peek(self.continuation())?.kind != Tok::Or {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.peek(self.continuation())?.kind == Tok::Or {
            self.peeked = None;
            operands.push(self.parse_and()?);
        }
        Ok(Expr::Or(operands.into_boxed_slice()))
    }

    fn parse_and(&mut self) -> Result<Expr, ParseError> {
        let first = self.parse_op()?;
        if self.peek(self.continuation())?.kind != Tok::And {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.peek(self.continuation())?.kind == Tok::And {
            self.peeked = None;
            operands.push(self.parse_op()?);
        }
        Ok(Expr::And(operands.into_boxed_slice()))
    }

    /// One term, with any leading `!`s collapsed by parity.
    fn parse_op(&mut self) -> Result<Expr, ParseError> {
        let mut negated = false;
        let mut token = self.next(EXPECT_TERM)?;
        while token.kind == Tok::Not {
            negated = !negated;
            token = self.next(EXPECT_TERM)?;
        }
        let expr = match token.kind {
            Tok::Has(key) => Expr::Label {
                key: key.into(),
                op: LabelOp::Has,
            },
            Tok::All => Expr::All,
            Tok::Global => Expr::Global,
            Tok::Label(key) => Expr::Label {
                key: key.into(),
                op: self.parse_label_op(key)?,
            },
            Tok::LParen => self.parse_parenthesized(token.start)?,
            _ => return Err(self.unexpected(token, EXPECT_TERM)),
        };
        Ok(if negated {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }

    fn parse_parenthesized(&mut self, open: usize) -> Result<Expr, ParseError> {
        if self.open_parens.len() >= MAX_NESTING_DEPTH {
            return Err(ParseError::new(
                open,
                format!("at most {MAX_NESTING_DEPTH} levels of nested parentheses"),
                "a deeper level",
            ));
        }
        self.open_parens.push(open);
        let expr = self.parse_or()?;
        let close = self.next(EXPECT_MORE_OR_PAREN)?;
        if close.kind != Tok::RParen {
            return Err(self.unexpected(
                close,
                format!("'&&', '||' or ')' to close the '(' at position {open}"),
            ));
        }
        self.open_parens.pop();
        Ok(expr)
    }

    /// The operator and literal after label `key`.
    fn parse_label_op(&mut self, key: &str) -> Result<LabelOp, ParseError> {
        // The lexer reports unknown operator words itself; this only sees tokens.
        let op = self.next("an operator")?;
        let (make, expected): (fn(Box<str>) -> LabelOp, &str) = match op.kind {
            Tok::Eq => (LabelOp::Eq, "a quoted string after '=='"),
            Tok::Ne => (LabelOp::Ne, "a quoted string after '!='"),
            Tok::Contains => (LabelOp::Contains, "a quoted string after 'contains'"),
            Tok::StartsWith => (LabelOp::StartsWith, "a quoted string after 'starts with'"),
            Tok::EndsWith => (LabelOp::EndsWith, "a quoted string after 'ends with'"),
            Tok::In => {
                return self
                    .parse_set("'{' to start the set of values after 'in'")
                    .map(LabelOp::In);
            }
            Tok::NotIn => {
                return self
                    .parse_set("'{' to start the set of values after 'not in'")
                    .map(LabelOp::NotIn);
            }
            _ => return Err(self.unexpected(op, operator_expected(key))),
        };
        let value = self.next(expected)?;
        match value.kind {
            Tok::Str(text) => Ok(make(text.into())),
            _ => Err(self.unexpected(value, expected)),
        }
    }

    /// `{ "a", 'b', }`: strings separated by commas, an optional trailing comma, maybe empty.
    fn parse_set(&mut self, expected_open: &str) -> Result<ValueSet, ParseError> {
        let open = self.next(expected_open)?;
        if open.kind != Tok::LBrace {
            return Err(self.unexpected(open, expected_open));
        }
        let mut values = Vec::new();
        loop {
            let token = self.next(EXPECT_STRING_OR_CLOSE)?;
            match token.kind {
                Tok::RBrace => break,
                Tok::Str(value) => values.push(value),
                _ => return Err(self.unexpected(token, EXPECT_STRING_OR_CLOSE)),
            }
            let separator = self.next(EXPECT_COMMA_OR_CLOSE)?;
            match separator.kind {
                Tok::Comma => {}
                Tok::RBrace => break,
                _ => return Err(self.unexpected(separator, EXPECT_COMMA_OR_CLOSE)),
            }
        }
        Ok(ValueSet::from_values(values))
    }
}
