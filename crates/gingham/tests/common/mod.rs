//! Helpers shared by the CLI and lab tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the `gingham` binary (not reading GINGHAM_DATASTORE from the test's environment).
pub fn gingham_in(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(args)
        .env_remove("GINGHAM_DATASTORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// Like [`gingham_in`], but fails the test (showing both streams) unless it succeeds.
pub fn ok_in(args: &[&str], stdin: Option<&str>) -> String {
    let out = gingham_in(args, stdin);
    assert!(
        out.status.success(),
        "gingham {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `gingham lab down` when dropped, so a failing test leaves nothing behind either.
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        if Path::new(&self.0).join("state.json").exists() {
            let _ = gingham_in(&["lab", "down", "--dir", &self.0], None);
        }
    }
}

/// A lab made by `gingham lab up` on SQLite in a temporary directory; `lab down` when dropped.
pub struct TestLab {
    /// The lab's state directory.
    pub dir: String,
    /// Its datastore URL.
    pub ds: String,
    /// What `lab up` printed (the pods and their addresses).
    pub up: String,
    // Dropped in this order: the lab, then its directory.
    _down: Down,
    _tmp: tempfile::TempDir,
}

/// Brings a lab up: a Lab document named `prefix` + this process's id, with `spec` (flow YAML,
/// e.g. `{nodes: [node-a, node-b]}`), followed by `docs`.
pub fn lab_up(prefix: &str, spec: &str, docs: &str) -> TestLab {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("{prefix}{}", std::process::id() % 100_000);
    let dir = tmp.path().join("lab").display().to_string();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let file = tmp.path().join("cluster.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n{docs}"),
    )
    .unwrap();
    let up = ok_in(
        &[
            "lab",
            "up",
            "-f",
            file.to_str().unwrap(),
            "--dir",
            &dir,
            "--datastore",
            &ds,
        ],
        None,
    );
    TestLab {
        _down: Down(dir.clone()),
        dir,
        ds,
        up,
        _tmp: tmp,
    }
}

/// `gingham explain` for one TCP flow on a datastore: the verdict and why.
pub fn explain(ds: &str, from: &str, to: &str, port: u16) -> String {
    ok_in(
        &[
            "explain",
            "--datastore",
            ds,
            "--from",
            from,
            "--to",
            to,
            "--port",
            &port.to_string(),
        ],
        None,
    )
}
