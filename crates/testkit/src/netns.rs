//! A throwaway network namespace for system tests, deleted when the guard is dropped (also when
//! the test fails and unwinds).
//!
//! Names are `gh-t-<tag>-<pid>-<n>`, unique within the process and across concurrent test
//! processes, so tests can run in parallel. The namespace is made and removed with iproute2's
//! `ip netns add/del`, so this helper does not depend on the crates it helps to test.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace named `gh-t-<tag>-<pid>-<n>` under /run/netns, deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Creates a fresh namespace; panics with the `ip` error if that fails. Its loopback is
    /// brought up, as most tests want.
    pub fn new(tag: &str) -> TestNetns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("gh-t-{tag}-{}-{n}", std::process::id());
        let ip = crate::require_tool("ip");
        let out = Command::new(&ip)
            .args(["netns", "add", &name])
            .output()
            .expect("run `ip netns add`");
        assert!(
            out.status.success(),
            "ip netns add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = TestNetns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `args[0]` with the remaining arguments inside the namespace (`ip netns exec`) and
    /// returns its output, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        assert!(!args.is_empty(), "TestNetns::exec needs a command");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run {args:?} in {}: {e}", self.name))
    }

    /// Like [`TestNetns::exec`], but panics (showing stderr) unless the command succeeds, and
    /// returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in netns {} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: could not run ip netns del {}: {e}", self.name),
        }
    }
}
