//! Every command of the CLI with a standard output that fails: closed, a full device (/dev/full),
//! a pipe whose reader has gone, and a pipe whose reader leaves after the first byte. None may
//! panic (exit status 101, "panicked" on stderr). A command that prints when its output works
//! must, on /dev/full, say `writing output: no space left on device` and exit 1, and on a pipe
//! without a reader exit quietly with 141 (as a tool killed by SIGPIPE appears to a shell).
//!
//! The commands are read from `gingham --help` (and the help of each command group), so a new
//! command fails this test until it has an invocation in [`invocation`].

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gingham")
}

/// The subcommands listed under `Commands:` in a help text (without `help` itself).
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// Every leaf command, as its path of words (`["selector", "eval"]`).
fn leaf_commands() -> Vec<Vec<String>> {
    fn walk(path: Vec<String>, out: &mut Vec<Vec<String>>) {
        let o = Command::new(bin())
            .args(&path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(o.status.success(), "gingham {path:?} --help failed");
        let subs = listed_commands(&String::from_utf8_lossy(&o.stdout));
        if subs.is_empty() {
            out.push(path);
            return;
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            walk(p, out);
        }
    }
    let mut out = Vec::new();
    walk(Vec::new(), &mut out);
    out
}

/// A datastore with `policies.yaml` applied, in its own directory.
struct Fixture {
    dir: tempfile::TempDir,
    datastore: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let datastore = format!("sqlite:{}", dir.path().join("g.db").display());
        let f = Fixture { dir, datastore };
        let o = f
            .command(&["apply", "-f", data("policies.yaml").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(
            f.dir.path().join("extra.yaml"),
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: extra\nspec:\n  selector: all()\n",
        )
        .unwrap();
        f
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("GINGHAM_DATASTORE", &self.datastore)
            .env_remove("DATASTORE_TYPE")
            .env_remove("GINGHAM_LOG");
        c
    }
}

/// How one command is run: its arguments, its stdin, whether it prints on stdout when stdout
/// works, and whether it must run in a network namespace of its own (it programs the kernel).
struct Invocation {
    args: Vec<String>,
    stdin: &'static str,
    prints: bool,
    own_netns: bool,
}

/// The invocation of each leaf command. A command missing here fails the test.
fn invocation(path: &[String], f: &Fixture) -> Option<Invocation> {
    let policies = data("policies.yaml").display().to_string();
    let cluster = data("reach").display().to_string();
    let nolab = f.path("no-lab");
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let words: Vec<&str> = path.iter().map(String::as_str).collect();
    let (args, stdin, prints) = match words.as_slice() {
        ["apply"] => (s(&["apply", "-f", &policies]), "", true),
        ["create"] => (s(&["create", "-f", &f.path("extra.yaml")]), "", true),
        ["replace"] => (s(&["replace", "-f", &policies]), "", true),
        ["delete"] => (s(&["delete", "gnp", "deny-ssh-dashboard"]), "", true),
        ["get"] => (s(&["get", "gnp", "-o", "yaml"]), "", true),
        ["label"] => (s(&["label", "gnp", "deny-ssh-dashboard", "a=b"]), "", true),
        ["convert"] => (
            s(&["convert", "-f", data("v1-policy.yaml").to_str().unwrap()]),
            "",
            true,
        ),
        ["selector", "check"] => (s(&["selector", "check", "a == 'b'"]), "", true),
        ["selector", "match"] => (s(&["selector", "match", "a == 'b'", "a=b"]), "", true),
        ["selector", "eval"] => (
            s(&["selector", "eval"]),
            "{\"selector\": \"a == 'b'\", \"labels\": {\"a\": \"b\"}}\n{\"selector\": \"all()\"}\n",
            true,
        ),
        ["agent"] => (
            s(&[
                "agent",
                "--node",
                "n1",
                "--once",
                "--health-port",
                "0",
                "--run-dir",
                &f.path("run"),
            ]),
            "",
            true,
        ),
        // Long-running; here its kubeconfig is missing and the refusal goes to stderr.
        ["kube-controllers"] => (
            s(&[
                "kube-controllers",
                "--kubeconfig",
                &f.path("missing-kubeconfig"),
            ]),
            "",
            false,
        ),
        // Long-running; here its listen address is not one and the refusal goes to stderr.
        ["lab", "apiserver"] => (
            s(&[
                "lab",
                "apiserver",
                "--datastore",
                &format!("sqlite:{}", f.path("apiserver.db")),
                "--listen",
                "not-an-address",
            ]),
            "",
            false,
        ),
        ["manifests", "crds"] => (s(&["manifests", "crds"]), "", true),
        ["ipam", "show"] => (s(&["ipam", "show"]), "", true),
        ["ipam", "check"] => (s(&["ipam", "check"]), "", true),
        // Nothing is allocated: the refusal goes to stderr.
        ["ipam", "release"] => (s(&["ipam", "release", "--ip", "10.0.0.1"]), "", false),
        // The lab's commands need a running lab (root, namespaces, agents); here they meet none
        // and their refusal goes to stderr.
        ["lab", "up" | "apply"] => (
            s(&[
                "lab",
                words[1],
                "-f",
                &f.path("missing.yaml"),
                "--dir",
                &nolab,
            ]),
            "",
            false,
        ),
        ["lab", "probe" | "down" | "wait" | "kubeconfig"] => {
            (s(&["lab", words[1], "--dir", &nolab]), "", false)
        }
        ["lab", "delete"] => (s(&["lab", "delete", "ns/pod", "--dir", &nolab]), "", false),
        ["lab", "try"] => (
            s(&[
                "lab", "try", "ns/a", "ns/b", "--port", "80", "--dir", &nolab,
            ]),
            "",
            false,
        ),
        ["lab", "exec"] => (
            s(&["lab", "exec", "--dir", &nolab, "ns/a", "--", "true"]),
            "",
            false,
        ),
        ["lab", "restart-agent"] => (
            s(&["lab", "restart-agent", "n1", "--dir", &nolab]),
            "",
            false,
        ),
        // Writes files, prints nothing on stdout.
        ["bgp", "render"] => (
            s(&[
                "bgp",
                "render",
                "--node",
                "node-b",
                "-f",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../bgp/tests/data/mesh-3-nodes/input.yaml"
                ),
                "--out",
                &f.path("bird"),
            ]),
            "",
            false,
        ),
        // In a namespace of its own, where no agent runs: the JSON says so (exit 1).
        ["node", "status"] => (
            s(&[
                "node",
                "status",
                "-o",
                "json",
                "--bird-socket",
                &f.path("bird.ctl"),
            ]),
            "",
            true,
        ),
        ["reach"] => (s(&["reach", "-f", &cluster, "--port", "80"]), "", true),
        ["lint"] => (s(&["lint", "-f", &cluster]), "", true),
        // The datastore (policies, no endpoints) against the cluster's files: pairs gained.
        ["diff"] => (s(&["diff", "-f", &cluster, "--port", "80"]), "", true),
        ["explain"] => (
            s(&[
                "explain",
                "-f",
                &cluster,
                "--from",
                "shop/stranger",
                "--to",
                "shop/web",
                "--port",
                "80",
            ]),
            "",
            true,
        ),
        // A run directory without a flow log: the (empty) list is printed.
        ["flows"] => (
            s(&["flows", "--run-dir", &f.path("run-flows"), "-o", "json"]),
            "",
            true,
        ),
        // Long-running; here its listen address is not one and the refusal goes to stderr.
        ["ui"] => (s(&["ui", "--listen", "not-an-address"]), "", false),
        _ => return None,
    };
    Some(Invocation {
        args,
        stdin,
        prints,
        own_netns: words == ["agent"] || words == ["node", "status"],
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stdout {
    /// A pipe read to the end: the command's normal output.
    Works,
    /// File descriptor 1 closed.
    Closed,
    /// /dev/full: every write fails with ENOSPC.
    Full,
    /// A pipe whose reader is gone before the command starts: every write fails with EPIPE.
    NoReader,
    /// A pipe whose reader leaves after the first byte, as `| head -c 1` does.
    ReaderLeaves,
}

fn run(inv: &Invocation, f: &Fixture, stdout: Stdout, netns: Option<&str>) -> Output {
    let mut words: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        words.extend(["ip", "netns", "exec", ns].map(str::to_owned));
    }
    if stdout == Stdout::Closed {
        words.extend(["sh", "-c", "exec \"$@\" >&-", "sh"].map(str::to_owned));
    }
    words.push(bin().to_owned());
    words.extend(inv.args.iter().cloned());
    let mut c = Command::new(&words[0]);
    c.args(&words[1..])
        .env("GINGHAM_DATASTORE", &f.datastore)
        .env_remove("DATASTORE_TYPE")
        .env_remove("GINGHAM_LOG");
    c.stdin(Stdio::piped()).stderr(Stdio::piped());
    let mut reader = None;
    match stdout {
        Stdout::Works | Stdout::Closed => {
            c.stdout(Stdio::piped());
        }
        Stdout::Full => {
            let full = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
            c.stdout(full);
        }
        Stdout::NoReader => {
            let (r, w) = std::io::pipe().unwrap();
            drop(r);
            c.stdout(w);
        }
        Stdout::ReaderLeaves => {
            let (mut r, w) = std::io::pipe().unwrap();
            reader = Some(std::thread::spawn(move || {
                let mut one = [0u8; 1];
                let _ = r.read(&mut one);
            }));
            c.stdout(w);
        }
    }
    let mut child = c.spawn().unwrap();
    // Our copy of the pipe's write end is gone with `c`; only the child's remains.
    drop(c);
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        let _ = pipe.write_all(inv.stdin.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    if let Some(t) = reader {
        t.join().unwrap();
    }
    out
}

#[test]
fn sys_every_command_survives_a_closed_full_or_readerless_stdout() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    gingham_testkit::require_tool("sh");
    let leaves = leaf_commands();
    assert!(leaves.len() >= 20, "too few commands found: {leaves:?}");
    let mut missing = Vec::new();
    let mut checked = 0;
    for path in &leaves {
        let f = Fixture::new();
        let Some(inv) = invocation(path, &f) else {
            missing.push(path.join(" "));
            continue;
        };
        let netns = inv
            .own_netns
            .then(|| gingham_testkit::netns::TestNetns::new("out"));
        let ns = netns.as_ref().map(|n| n.name());
        let normal = run(&inv, &f, Stdout::Works, ns);
        assert_ne!(normal.status.code(), Some(101), "{path:?}");
        assert_eq!(
            !normal.stdout.is_empty(),
            inv.prints,
            "gingham {:?} with a working stdout printed {:?} (stderr {:?}); the invocation is not the one this test expects",
            inv.args,
            String::from_utf8_lossy(&normal.stdout),
            String::from_utf8_lossy(&normal.stderr)
        );
        for mode in [
            Stdout::Closed,
            Stdout::Full,
            Stdout::NoReader,
            Stdout::ReaderLeaves,
        ] {
            // Commands that write start again from the same datastore.
            let f = Fixture::new();
            let inv = invocation(path, &f).unwrap();
            let o = run(&inv, &f, mode, ns);
            let err = String::from_utf8_lossy(&o.stderr);
            let what = format!(
                "gingham {:?} with stdout {mode:?}: {:?}, stderr {err:?}",
                inv.args, o.status
            );
            assert_ne!(o.status.code(), Some(101), "{what}");
            assert!(!err.contains("panicked"), "{what}");
            if inv.prints {
                match mode {
                    Stdout::Full => {
                        assert_eq!(o.status.code(), Some(1), "{what}");
                        assert!(
                            err.contains("error: writing output: no space left on device"),
                            "{what}"
                        );
                    }
                    Stdout::NoReader => {
                        assert_eq!(o.status.code(), Some(141), "{what}");
                        assert!(!err.contains("error"), "{what}");
                    }
                    _ => {}
                }
            }
            checked += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "commands without an invocation in this test (add one): {missing:?}"
    );
    assert!(checked >= 80, "{checked}");
}

#[test]
fn a_committed_write_says_so_when_its_report_cannot_be_printed() {
    for mode in [Stdout::Full, Stdout::NoReader] {
        let f = Fixture::new();
        let inv = Invocation {
            args: vec!["apply".into(), "-f".into(), f.path("extra.yaml")],
            stdin: "",
            prints: true,
            own_netns: false,
        };
        let o = run(&inv, &f, mode, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("the write was committed (1 resource(s))"),
            "{mode:?}: {err}"
        );
        let got = f
            .command(&["get", "gnp", "extra", "-o", "name"])
            .output()
            .unwrap();
        assert!(got.status.success(), "{mode:?}: extra was not written");
    }
}

/// `apply --dry-run` prints the plan and its difference, and writes nothing: on a full device it
/// fails in words, on a pipe without a reader it exits quietly, and never says a write was
/// committed (none was).
#[test]
fn apply_dry_run_survives_a_full_or_readerless_stdout() {
    for mode in [Stdout::Full, Stdout::NoReader, Stdout::ReaderLeaves] {
        let f = Fixture::new();
        let inv = Invocation {
            args: vec![
                "apply".into(),
                "--dry-run".into(),
                "-f".into(),
                f.path("extra.yaml"),
                "--port".into(),
                "80".into(),
            ],
            stdin: "",
            prints: true,
            own_netns: false,
        };
        let o = run(&inv, &f, mode, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(101), "{mode:?}: {err}");
        assert!(!err.contains("panicked"), "{mode:?}: {err}");
        assert!(!err.contains("committed"), "{mode:?}: {err}");
        match mode {
            Stdout::Full => {
                assert_eq!(o.status.code(), Some(1), "{mode:?}: {err}");
                assert!(
                    err.contains("error: writing output: no space left on device"),
                    "{mode:?}: {err}"
                );
            }
            Stdout::NoReader => assert_eq!(o.status.code(), Some(141), "{mode:?}: {err}"),
            _ => {}
        }
        let got = f
            .command(&["get", "gnp", "extra", "-o", "name"])
            .output()
            .unwrap();
        assert!(!got.status.success(), "{mode:?}: the dry run wrote extra");
    }
}

/// A small lab for the lab commands that print: two pods on one node.
const LAB: &str = r#"apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.247.0.0/16}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: default}, spec: {nodeName: node-a, containers: [{name: w, ports: [{containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: default}, spec: {nodeName: node-a}}
"#;

/// The lab's reporting commands against a running lab (the test above meets none): `probe`
/// and `try` print, and must fail in words on a full device and quietly on a pipe without a
/// reader; `exec` passes stdout to the command it runs, and must not panic either.
#[test]
fn sys_lab_commands_survive_a_full_or_readerless_stdout() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    let lab = common::lab_up("o", "{nodes: [node-a]}", LAB);
    let f = Fixture::new();
    let d = lab.dir.as_str();
    let cases: [(&[&str], bool); 5] = [
        (&["lab", "probe", "--dir", d, "--port", "80"], true),
        // Hit counters from the lab's agents.
        (&["get", "gnp", "-o", "wide", "--lab", d], true),
        (&["lab", "wait", "--dir", d], true),
        (
            &[
                "lab",
                "try",
                "--dir",
                d,
                "default/client",
                "default/web",
                "--port",
                "80",
            ],
            true,
        ),
        (
            &[
                "lab",
                "exec",
                "--dir",
                d,
                "default/client",
                "--",
                "echo",
                "hi",
            ],
            false,
        ),
    ];
    for (args, prints) in cases {
        let inv = Invocation {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            stdin: "",
            prints,
            own_netns: false,
        };
        let normal = run(&inv, &f, Stdout::Works, None);
        assert!(
            normal.status.success() && !normal.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&normal.stderr)
        );
        for mode in [
            Stdout::Closed,
            Stdout::Full,
            Stdout::NoReader,
            Stdout::ReaderLeaves,
        ] {
            let o = run(&inv, &f, mode, None);
            let err = String::from_utf8_lossy(&o.stderr);
            let what = format!(
                "{args:?} with stdout {mode:?}: {:?}, stderr {err:?}",
                o.status
            );
            assert_ne!(o.status.code(), Some(101), "{what}");
            assert!(!err.contains("panicked"), "{what}");
            match (prints, mode) {
                (true, Stdout::Full) => {
                    assert_eq!(o.status.code(), Some(1), "{what}");
                    assert!(
                        err.contains("error: writing output: no space left on device"),
                        "{what}"
                    );
                }
                (true, Stdout::NoReader) => assert_eq!(o.status.code(), Some(141), "{what}"),
                _ => {}
            }
        }
    }
}
