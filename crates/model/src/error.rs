//! Error types: per-field validation problems and one-line load errors.

use std::fmt;

/// How many characters of a value an error message shows (see [`quote`]).
pub const QUOTE_MAX_CHARS: usize = 80;

/// A value for an error message: quoted as `{:?}` does, and, when longer than
/// [`QUOTE_MAX_CHARS`] characters, cut to them and followed by its size, e.g.
/// `"aaaa…"… (5000000 bytes)`, so a 5 MB label value does not flood the terminal.
pub fn quote(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(QUOTE_MAX_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// Cuts every quoted value (as `{:?}` writes strings) longer than [`QUOTE_MAX_CHARS`] characters
/// in a finished message, as [`quote`] would have (the size given is that of the quoted form):
/// the safety net for messages that quote a value without [`quote`].
pub fn cut_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let body = &rest[open + 1..];
        // The closing quote: the first one not escaped by a backslash.
        let mut escaped = false;
        let close = body.char_indices().find_map(|(i, c)| {
            let end = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            end.then_some(i)
        });
        let Some(close) = close else {
            out.push_str(body);
            return out;
        };
        let inner = &body[..close];
        match inner.char_indices().nth(QUOTE_MAX_CHARS) {
            None => out.push_str(inner),
            Some((cut, _)) => {
                out.push_str(&inner[..cut]);
                out.push_str(&format!("\"… ({} bytes)", inner.len()));
                rest = &body[close + 1..];
                continue;
            }
        }
        out.push('"');
        rest = &body[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Unquoted text for a message (an object's `Kind namespace/name`, a field path), cut after
/// twice [`QUOTE_MAX_CHARS`] characters as [`quote`] cuts values.
pub fn cut_plain(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(2 * QUOTE_MAX_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()).into(),
    }
}

/// A field path for an error message whose last part is a user's key (a label key): cut as
/// [`quote`] cuts values, so the path stays short.
pub fn path_with_key(path: &str, key: &str) -> String {
    if key.chars().count() <= QUOTE_MAX_CHARS {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", quote(key))
    }
}

/// One problem with one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where, e.g. `spec.ingress[0].destination.ports[1]`; empty for the whole resource.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl ValidationError {
    /// A problem at `path`. A long quoted value in the message is cut ([`cut_quoted`]): no
    /// message echoes a long value whole, whichever check or parser wrote it.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError {
            path: path.into(),
            message: cut_quoted(&message.into()),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ValidationError {}

/// One problem found while loading a file, rendered on one line:
/// `file.yaml: document 2 (GlobalNetworkPolicy deny-ssh): spec.ingress[0].protocol: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The source name given to `load` (usually the file name).
    pub source_name: String,
    /// The 1-based document number, when the problem is inside a document.
    pub document: Option<usize>,
    /// The 1-based item number inside a list document.
    pub item: Option<usize>,
    /// `Kind name` (or `Kind namespace/name`) of the object, when known.
    pub object: Option<String>,
    /// The field path, empty for the whole document.
    pub path: String,
    /// What is wrong and what would be valid (single line).
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source_name)?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
            if let Some(i) = self.item {
                write!(f, " item {i}")?;
            }
            if let Some(o) = &self.object {
                write!(f, " ({})", cut_plain(o))?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", cut_plain(&self.path))?;
        }
        write!(f, ": {}", one_line(&self.message))
    }
}

impl std::error::Error for LoadError {}

/// Every problem found in one `load` call (never empty). Displays one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl LoadErrors {
    /// The individual problems.
    pub fn errors(&self) -> &[LoadError] {
        &self.0
    }
}

impl std::ops::Deref for LoadErrors {
    type Target = [LoadError];
    fn deref(&self) -> &[LoadError] {
        &self.0
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_in_messages() {
        assert_eq!(quote("web"), "\"web\"");
        let long = "x".repeat(5_000_000);
        let q = quote(&long);
        assert!(q.len() < 120, "{q}");
        assert!(q.ends_with("… (5000000 bytes)"), "{q}");
        let msg = format!("{long:?} is not a valid interface name; \"eth0\" is");
        let cut = cut_quoted(&msg);
        assert!(cut.len() < 160, "{cut}");
        assert!(
            cut.ends_with("… (5000000 bytes) is not a valid interface name; \"eth0\" is"),
            "{cut}"
        );
        assert_eq!(cut_quoted("a \"b\\\"c\" d"), "a \"b\\\"c\" d");
        // Cut on a character boundary.
        let wide = "é".repeat(100);
        assert!(quote(&wide).ends_with("… (200 bytes)"));
    }
}

/// Collapses whitespace runs containing newlines so that every message stays on one line.
pub(crate) fn one_line(s: &str) -> String {
    if !s.contains('\n') {
        return s.to_string();
    }
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error converting a legacy v1 or Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", ValidationError { path: path.clone(), message: message.clone() })]
pub struct ConvertError {
    /// The field of the input object at fault (may be empty).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConvertError {
    /// A conversion problem at `path` (long quoted values cut, as in [`ValidationError::new`]).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConvertError {
        ConvertError {
            path: path.into(),
            message: cut_quoted(&message.into()),
        }
    }
}
