//! Kernel settings under `/proc/sys`, read and written in a chosen network namespace.
//!
//! Keys are slash-separated paths below `/proc/sys`, such as `net/ipv4/conf/cali0/proxy_arp`.
//! Slashes (not dots) are used because interface names may contain dots.
//! Network settings resolve against the namespace of the thread that opens the file, so the
//! `*_in` functions switch the calling thread into the namespace for the duration of the call
//! ([`in_netns_same_thread`]).

use std::io;
use std::path::PathBuf;

use crate::error::{NetError, Result, invalid};
use crate::netns::{NetnsRef, in_netns_same_thread};

/// Checks that `key` is a relative path below /proc/sys with no `..` or empty parts.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && !key.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "sysctl key",
            key,
            "use a slash-separated path below /proc/sys, e.g. net/ipv4/ip_forward",
        ))
    }
}

fn path_of(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

/// Reads a setting in the calling thread's namespace; the value is returned trimmed.
pub fn read(key: &str) -> Result<String> {
    validate_key(key)?;
    std::fs::read_to_string(path_of(key))
        .map(|s| s.trim().to_owned())
        .map_err(|source| NetError::Sysctl {
            key: key.to_owned(),
            action: "read",
            source,
        })
}

/// Reads a setting in the calling thread's namespace, or `None` if it does not exist (for
/// example because the interface it belongs to is absent).
pub fn read_opt(key: &str) -> Result<Option<String>> {
    match read(key) {
        Ok(v) => Ok(Some(v)),
        Err(NetError::Sysctl { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Writes a setting in the calling thread's namespace.
pub fn write(key: &str, value: &str) -> Result<()> {
    validate_key(key)?;
    tracing::trace!(key, value, "sysctl write");
    std::fs::write(path_of(key), value).map_err(|source| NetError::Sysctl {
        key: key.to_owned(),
        action: "write",
        source,
    })
}

/// Writes a setting only if its current value differs, and says whether it wrote. Some settings
/// (such as `net/ipv4/ip_forward`) have side effects on every write, so this is the polite way.
pub fn ensure(key: &str, value: &str) -> Result<bool> {
    if read(key)? == value {
        return Ok(false);
    }
    write(key, value)?;
    Ok(true)
}

/// Reads a setting inside `ns`.
pub fn read_in(ns: &NetnsRef, key: &str) -> Result<String> {
    in_netns_same_thread(ns, || read(key))?
}

/// Writes a setting inside `ns`.
pub fn write_in(ns: &NetnsRef, key: &str, value: &str) -> Result<()> {
    in_netns_same_thread(ns, || write(key, value))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for (key, ok) in [
            ("net/ipv4/ip_forward", true),
            ("net/ipv4/conf/eth0.100/proxy_arp", true),
            ("", false),
            ("/net/ipv4/ip_forward", false),
            ("net/../kernel/hostname", false),
            ("net//ipv4", false),
            ("net/ipv4/", false),
        ] {
            assert_eq!(validate_key(key).is_ok(), ok, "{key:?}");
        }
    }

    #[test]
    fn reading_a_missing_key_is_none() {
        assert_eq!(
            read_opt("net/ipv4/conf/gh-no-such-if/proxy_arp").unwrap(),
            None
        );
    }
}
