//! Test support shared by the workspace's crates (a dev-dependency only).
//!
//! System tests (those that need root or an external tool) follow two rules:
//! their function names start with `sys_`, so `.ci/run` can count how many ran and fail when
//! none did; and they call [`require_root`] / [`require_tool`] first, which panic with a clear
//! message when the requirement is missing. A system test never passes silently.

pub mod etcd;
pub mod netns;

use std::path::PathBuf;

/// Panics unless the test runs as root.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "this system test needs root (network namespaces, nftables); run the suite with `sudo scripts/test`"
    );
}

/// Finds `tool` on PATH (or in /usr/sbin and /sbin) and panics with an install hint if missing.
pub fn require_tool(tool: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| {
        panic!(
            "this system test needs `{tool}`, which is not installed; `scripts/setup` installs it (apt-get install ...)"
        )
    })
}

/// Finds `tool` on PATH (or in /usr/sbin and /sbin).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| PathBuf::from(d).join(tool))
        .find(|p| p.is_file())
}
