//! The names IPAM writes into datastore keys: node names (in affinity keys and block
//! affinities) and handle IDs (in handle keys). Checked before anything is written, because a
//! name that does not round-trip through its key (a `/` in a node name) makes stored data that
//! later reads cannot find.

use crate::error::{Error, Result};

/// Longest node name (a Kubernetes/Calico Node name is a DNS-1123 subdomain).
const MAX_NODE_LEN: usize = 253;

/// Checks that `node` is a valid Calico node name: a DNS-1123 subdomain (lower-case
/// alphanumerics, `-` and `.`, each dot-separated label starting and ending alphanumeric, at
/// most 253 characters).
pub fn check_node(node: &str) -> Result<()> {
    if node.is_empty() {
        return Err(Error::Invalid("the node name is empty".into()));
    }
    let labels_ok = node.split('.').all(|l| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    });
    if node.len() > MAX_NODE_LEN || !labels_ok {
        return Err(Error::Invalid(format!(
            "node name {:?} is not valid (valid: a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most {MAX_NODE_LEN} characters)",
            cut(node)
        )));
    }
    Ok(())
}

/// Checks that `handle` can name a handle key: not empty, no `/`, no control characters.
pub fn check_handle(handle: &str) -> Result<()> {
    if handle.is_empty() {
        return Err(Error::Invalid(
            "handle_id is empty; every allocation needs an owner handle".into(),
        ));
    }
    if handle.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Error::Invalid(format!(
            "handle {:?} contains '/' or a control character (it names a datastore key)",
            cut(handle)
        )));
    }
    Ok(())
}

fn cut(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!(
            "{}… ({} bytes)",
            s.chars().take(MAX).collect::<String>(),
            s.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["n1", "node-a", "a.b.c", "x", "0"] {
            assert!(check_node(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a b",
            &"x".repeat(254),
        ] {
            assert!(check_node(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handles() {
        assert!(check_handle("k8s-pod-network.ctr_X.1").is_ok());
        for bad in ["", "a/b", "a\nb"] {
            assert!(check_handle(bad).is_err(), "{bad:?}");
        }
    }
}
