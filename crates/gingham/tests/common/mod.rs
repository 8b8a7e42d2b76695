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
    /// The lab's name (`metadata.name`: its namespaces are `gl-NAME-...`).
    pub name: String,
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
        name,
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

/// Waits until every agent of the lab in `dir` has programmed everything written to the
/// datastore so far (`gingham lab wait`: their `gingham_agent_datastore_revision` metric has
/// reached the write). Call it after a write and before asserting what packets do, once.
pub fn wait_programmed(dir: &str) {
    ok_in(&["lab", "wait", "--dir", dir], None);
}

/// What one connection with real packets does (`gingham lab try -o json`): `connected`,
/// `refused` or `no-answer`. Checks that the exit code goes with the outcome.
pub fn try_outcome(dir: &str, from: &str, to: &str, proto: &str, port: u16) -> String {
    try_json(dir, from, to, proto, port)["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `gingham lab try -o json` for one connection: `{from, to, address, port, protocol, outcome,
/// peer}`. Checks that the exit code goes with the outcome.
pub fn try_json(dir: &str, from: &str, to: &str, proto: &str, port: u16) -> serde_json::Value {
    let out = gingham_in(
        &[
            "lab",
            "try",
            "--dir",
            dir,
            from,
            to,
            "--protocol",
            proto,
            "--port",
            &port.to_string(),
            "--timeout-ms",
            "500",
            "-o",
            "json",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "lab try {from} {to} {proto}/{port}: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let code = match v["outcome"].as_str().unwrap_or_default() {
        "connected" => 0,
        "refused" => 3,
        "no-answer" => 4,
        other => panic!("lab try {from} {to} {proto}/{port}: outcome {other:?}: {v}"),
    };
    assert_eq!(out.status.code(), Some(code), "exit code of {v}");
    v
}

/// Asserts that a `lab probe -o json` matrix has exactly `endpoints`, and on every cell the
/// outcome `expected(from, to)` and `allowed` true for connected and refused.
pub fn assert_probe(
    what: &str,
    m: &serde_json::Value,
    endpoints: &[&str],
    expected: &dyn Fn(&str, &str) -> &'static str,
) {
    let mut outcomes = serde_json::Map::new();
    let mut allowed = serde_json::Map::new();
    for from in endpoints {
        let mut o = serde_json::Map::new();
        let mut a = serde_json::Map::new();
        for to in endpoints {
            let e = expected(from, to);
            o.insert((*to).to_owned(), e.into());
            a.insert((*to).to_owned(), (e != "no-answer").into());
        }
        outcomes.insert((*from).to_owned(), o.into());
        allowed.insert((*from).to_owned(), a.into());
    }
    assert_eq!(m["endpoints"], serde_json::json!(endpoints), "{what}: {m}");
    assert_eq!(
        m["outcomes"],
        serde_json::Value::Object(outcomes),
        "{what}: outcomes"
    );
    assert_eq!(
        m["allowed"],
        serde_json::Value::Object(allowed),
        "{what}: allowed"
    );
}

/// `gingham lab probe -o json` for one protocol and port.
pub fn probe(dir: &str, proto: &str, port: u16) -> serde_json::Value {
    let json = ok_in(
        &[
            "lab",
            "probe",
            "--dir",
            dir,
            "--protocol",
            proto,
            "--port",
            &port.to_string(),
            "--timeout-ms",
            "500",
            "-o",
            "json",
        ],
        None,
    );
    serde_json::from_str(&json).unwrap()
}

/// Namespaces, processes and files that belong to lab `name` in `dir`: empty once it is down.
/// Processes: the pods' and nodes' servers (named after the lab), and anything whose command
/// line names the directory the lab's directory is in (agents with their run directories, the
/// router's BIRD).
pub fn leftovers(name: &str, dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        if line.starts_with(&format!("gl-{name}-")) {
            found.push(format!("netns {line}"));
        }
    }
    let parent = dir.parent().unwrap().display().to_string();
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    for line in String::from_utf8_lossy(&ps.stdout).lines() {
        if line.contains(&format!("lab serve --name {name}/")) || line.contains(&parent) {
            found.push(format!("process {line}"));
        }
    }
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    found
}
