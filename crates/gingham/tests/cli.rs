//! The CLI as users run it: a real `gingham` process against a real datastore file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

struct Cli {
    _dir: tempfile::TempDir,
    datastore: String,
}

impl Cli {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let datastore = format!("sqlite:{}", dir.path().join("g.db").display());
        Self {
            _dir: dir,
            datastore,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_bytes(args, stdin.map(str::as_bytes))
    }

    fn run_bytes(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gingham"));
        cmd.args(args)
            .env("GINGHAM_DATASTORE", &self.datastore)
            .env_remove("DATASTORE_TYPE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            // A command that refuses its input early may close its end first.
            let _ = pipe.write_all(s);
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gingham {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn apply_get_delete_round_trip() {
    let cli = Cli::sqlite();
    let f = data("policies.yaml");
    let out = cli.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(
        out,
        "GlobalNetworkPolicy deny-ssh-dashboard created\nNetworkPolicy shop/allow-web created\nIPPool default-ipv4-ippool created\n"
    );
    // Applying the same file again changes nothing.
    let out = cli.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert!(out.contains("deny-ssh-dashboard unchanged"), "{out}");

    let table = cli.ok(&["get", "gnp"]);
    assert_eq!(
        table,
        "NAME                 TIER\ndeny-ssh-dashboard   default\n"
    );
    // Wide: one row per rule with its hit counters; no agent answers here (port 1), so they
    // are `-`, not zeros.
    let wide = cli.ok(&[
        "get",
        "policy",
        "-n",
        "shop",
        "-o",
        "wide",
        "--agent-port",
        "1",
    ]);
    assert!(
        wide.starts_with(
            "NAME        TIER      ORDER   SELECTOR       DIRECTION   RULE   ACTION   PACKETS   BYTES\n"
        ),
        "{wide}"
    );
    assert!(
        wide.contains("ingress     0      Allow    -         -\n"),
        "{wide}"
    );
    assert!(wide.contains("allow-web"), "{wide}");
    let all = cli.ok(&["get", "networkpolicies", "-A"]);
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    let pools = cli.ok(&["get", "ippool", "-o", "wide"]);
    assert!(pools.contains("10.244.0.0/16"), "{pools}");

    // YAML output loads back and carries server fields.
    let yaml = cli.ok(&["get", "gnp", "deny-ssh-dashboard", "-o", "yaml"]);
    assert!(yaml.contains("resourceVersion:"), "{yaml}");
    assert!(yaml.contains("uid:"), "{yaml}");
    assert!(
        yaml.contains("types:\n  - Ingress") || yaml.contains("- Ingress"),
        "{yaml}"
    );
    let json = cli.ok(&["get", "gnp", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "GlobalNetworkPolicyList");
    assert_eq!(
        cli.ok(&["get", "gnp", "-o", "name"]),
        "globalnetworkpolicy/deny-ssh-dashboard\n"
    );

    // create of an existing resource fails and writes nothing.
    let o = cli.run(&["create", "-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

    // A stale resourceVersion is refused.
    let stale = yaml.replace(
        &yaml
            .lines()
            .find(|l| l.contains("resourceVersion"))
            .unwrap()
            .to_string(),
        "  resourceVersion: '1'",
    );
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(&stale));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("was changed by someone else since resourceVersion 1 was read"),
        "{}",
        stderr(&o)
    );

    cli.ok(&["label", "gnp", "deny-ssh-dashboard", "team=ops"]);
    let yaml = cli.ok(&["get", "gnp", "deny-ssh-dashboard", "-o", "yaml"]);
    assert!(yaml.contains("team: ops"), "{yaml}");
    let o = cli.run(&["label", "gnp", "deny-ssh-dashboard", "team=dev"]);
    assert_eq!(o.status.code(), Some(1));
    cli.ok(&[
        "label",
        "gnp",
        "deny-ssh-dashboard",
        "team=dev",
        "--overwrite",
    ]);

    assert_eq!(
        cli.ok(&["delete", "gnp", "deny-ssh-dashboard"]),
        "GlobalNetworkPolicy deny-ssh-dashboard deleted\n"
    );
    let o = cli.run(&["delete", "gnp", "deny-ssh-dashboard"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"));
    cli.ok(&["delete", "gnp", "deny-ssh-dashboard", "--skip-not-exists"]);
    cli.ok(&["delete", "-f", f.to_str().unwrap(), "--skip-not-exists"]);
    assert_eq!(cli.ok(&["get", "ippool"]), "NAME   CIDR   SELECTOR\n");
}

#[test]
fn bad_document_writes_nothing() {
    let cli = Cli::sqlite();
    let f = data("bad-second-doc.yaml");
    let o = cli.run(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let first = err.lines().next().unwrap();
    assert!(first.contains("bad-second-doc.yaml"), "{err}");
    assert!(first.contains("document 2"), "{err}");
    assert!(first.contains("spec.ingress[0].protocol"), "{err}");
    assert!(first.contains("valid"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    // The valid first document was not written either.
    assert_eq!(cli.ok(&["get", "gnp"]), "NAME   TIER\n");
}

#[test]
fn legacy_v1_is_converted() {
    let cli = Cli::sqlite();
    let f = data("v1-policy.yaml");
    let out = cli.ok(&["convert", "-f", f.to_str().unwrap()]);
    assert!(out.contains("kind: GlobalNetworkPolicy"), "{out}");
    assert!(out.contains("projectcalico.org/namespace"), "{out}");
    assert!(out.contains("action: Allow"), "{out}");
    let o = cli.run(&["apply", "-f", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("notice:"), "{}", stderr(&o));
    let table = cli.ok(&["get", "gnp"]);
    assert!(table.contains("lijiaocn-space"), "{table}");
}

#[test]
fn usage_and_kind_errors() {
    let cli = Cli::sqlite();
    let o = cli.run(&["get"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing argument is a usage error"
    );
    let o = cli.run(&["get", "widgets"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown resource kind"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("globalnetworkpolicy"), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["get", "gnp", "--datastore", "mysql://x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown datastore"), "{}", stderr(&o));
}

#[test]
fn unopenable_datastore_is_one_clear_line() {
    let o = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["get", "gnp", "--datastore", "sqlite:/proc/no/such/dir/x.db"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/proc/no/such/dir/x.db"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn selector_commands() {
    let cli = Cli::sqlite();
    assert_eq!(
        cli.ok(&["selector", "check", "k8s-app=='kubernetes-dashboard'"]),
        "k8s-app == \"kubernetes-dashboard\"\n"
    );
    let o = cli.run(&["selector", "check", "a = 'b'"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("position"), "{}", stderr(&o));
    assert_eq!(
        cli.ok(&[
            "selector",
            "match",
            "app == 'web' && !has(canary)",
            "app=web"
        ]),
        "true\n"
    );
    let o = cli.run(&["selector", "match", "a != 'x'"]);
    assert!(o.status.success(), "absent label matches !=");
    let o = cli.run(&["selector", "match", "app == 'web'", "app=db"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "false\n");
    let o = cli.run_stdin(
        &["selector", "eval"],
        Some(
            "{\"selector\": \"a == 'x'\", \"labels\": {\"a\": \"x\"}}\n\
             {\"selector\": \"a ==\", \"labels\": {}}\n\
             {\"selector\": \"has(b)\", \"labels\": {\"a\": \"x\"}}\n",
        ),
    );
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], serde_json::json!({"matches": true}));
    assert!(lines[1]["error"].as_str().unwrap().contains("line 2"));
    assert_eq!(lines[2], serde_json::json!({"matches": false}));
}

/// `label` writes only what `apply` accepts (the same validation), so `get -o yaml | apply -f -`
/// always works after it; its refusals are in words and do not echo huge values.
#[test]
fn label_validates_as_apply_does() {
    let cli = Cli::sqlite();
    let f = data("policies.yaml");
    cli.ok(&["apply", "-f", f.to_str().unwrap()]);
    let before = cli.ok(&["get", "gnp", "deny-ssh-dashboard", "-o", "yaml"]);

    let o = cli.run(&["label", "gnp", "deny-ssh-dashboard", "bad key!=x"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("metadata.labels.bad key!: invalid label key \"bad key!\""),
        "{}",
        stderr(&o)
    );
    let o = cli.run(&["label", "gnp", "deny-ssh-dashboard", "team=-ops-"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid label value"), "{}", stderr(&o));
    let huge = format!("team={}", "x".repeat(100_000));
    let o = cli.run(&["label", "gnp", "deny-ssh-dashboard", &huge]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).len() < 600 && stderr(&o).contains("(100000 bytes)"),
        "the value is echoed whole: {} bytes",
        stderr(&o).len()
    );
    assert_eq!(
        cli.ok(&["get", "gnp", "deny-ssh-dashboard", "-o", "yaml"]),
        before,
        "a refused label changed the resource"
    );

    cli.ok(&["label", "gnp", "deny-ssh-dashboard", "team=ops"]);
    let o = cli.run(&["label", "gnp", "deny-ssh-dashboard", "team=dev"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "GlobalNetworkPolicy deny-ssh-dashboard already has label \"team\" with value \"ops\"; nothing was changed (use --overwrite to replace it)"
        ),
        "{}",
        stderr(&o)
    );
    let yaml = cli.ok(&["get", "gnp", "deny-ssh-dashboard", "-o", "yaml"]);
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// One line of invalid UTF-8 gets an error answer; the lines after it are still answered.
#[test]
fn selector_eval_answers_a_line_of_invalid_utf8_and_goes_on() {
    let cli = Cli::sqlite();
    let o = cli.run_bytes(
        &["selector", "eval"],
        Some(b"{\"selector\": \"all()\"}\n\xff\xfe{}\n{\"selector\": \"has(a)\"}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], serde_json::json!({"matches": true}));
    assert_eq!(
        lines[1]["error"],
        "line 2: not valid UTF-8 (first bad byte at column 1)"
    );
    assert_eq!(lines[2], serde_json::json!({"matches": false}));
}

/// A device that never ends is refused after 64 MiB, naming it and the limit.
#[test]
fn input_is_capped_per_file() {
    let cli = Cli::sqlite();
    let start = std::time::Instant::now();
    let o = cli.run(&["apply", "-f", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/dev/zero: larger than 64 MiB, the limit for one input"),
        "{}",
        stderr(&o)
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
    let o = cli.run_bytes(
        &["apply", "-f", "-"],
        Some(&vec![b'#'; 64 * 1024 * 1024 + 1]),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("<stdin>: larger than 64 MiB"),
        "{}",
        stderr(&o)
    );
}

/// `-R` enters each directory once: a symbolic link back to an ancestor is a loop, not 41
/// copies of the same file.
#[test]
fn recursive_read_stops_at_symlink_loops() {
    let cli = Cli::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(data("policies.yaml"), sub.join("p.yaml")).unwrap();
    std::os::unix::fs::symlink("..", sub.join("up")).unwrap();
    std::os::unix::fs::symlink(&sub, dir.path().join("again")).unwrap();
    let out = cli.ok(&["apply", "-R", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(out.lines().count(), 3, "{out}");
}

const STAGED_K8S: &str = "\
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: web-from-clients, namespace: shop}
spec:
  stagedAction: Delete
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: client-isolated, namespace: shop}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
";

/// Calico's StagedKubernetesNetworkPolicy is stored under its key, shown by `get`, and
/// evaluated in the staged view only: Delete removes the Kubernetes policy of the same name
/// there, Set adds one; the enforced verdict does not change.
#[test]
fn staged_kubernetes_network_policy_is_stored_shown_and_only_staged() {
    let cli = Cli::sqlite();
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(STAGED_K8S));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "StagedKubernetesNetworkPolicy shop/web-from-clients created\nStagedKubernetesNetworkPolicy shop/client-isolated created\n"
    );
    assert_eq!(
        cli.ok(&["get", "sknp", "-n", "shop"]),
        "NAME               ACTION\nclient-isolated    Set\nweb-from-clients   Delete\n"
    );
    let yaml = cli.ok(&[
        "get",
        "stagedkubernetesnetworkpolicy",
        "-n",
        "shop",
        "web-from-clients",
        "-o",
        "yaml",
    ]);
    assert!(
        yaml.contains("kind: StagedKubernetesNetworkPolicy"),
        "{yaml}"
    );
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(o.status.success(), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let staged = dir.path().join("staged.yaml");
    std::fs::write(&staged, STAGED_K8S).unwrap();
    let cluster = data("reach/cluster.yaml");
    let explain = |from: &str| -> serde_json::Value {
        let out = cli.ok(&[
            "explain",
            "-f",
            cluster.to_str().unwrap(),
            "-f",
            staged.to_str().unwrap(),
            "--from",
            from,
            "--to",
            "shop/web",
            "--port",
            "80",
            "-o",
            "json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    // Deleting the Kubernetes policy (staged) would let the stranger in.
    let v = explain("shop/stranger");
    assert_eq!(
        (&v["allowed"], &v["staged_allowed"]),
        (&false.into(), &true.into()),
        "{v}"
    );
    // Isolating the client's egress (staged) would cut it off.
    let v = explain("shop/client");
    assert_eq!(
        (&v["allowed"], &v["staged_allowed"]),
        (&true.into(), &false.into()),
        "{v}"
    );
}

/// Messages in words: long values cut, no YAML-library wording, ports refused where they do
/// not apply, a Kubernetes ipBlock exception outside its block refused as Kubernetes refuses it.
#[test]
fn messages_cut_long_values_and_speak_plainly() {
    let cli = Cli::sqlite();
    let selector = format!("a == '{}'", "x".repeat(20_000));
    let gnp = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: long}}\nspec:\n  selector: \"{selector}\"\n"
    );
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(&gnp));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.len() < 600, "{} bytes: {err}", err.len());
    assert!(err.contains("spec.selector: selector \"a == 'xxx"), "{err}");
    assert!(
        err.contains("(20007 bytes) is 20007 characters long (valid: at most 1024)"),
        "{err}"
    );

    let o = cli.run_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: projectcalico.org/v3\nkind: Tier\nkind: Tier\nmetadata: {name: x}\n"),
    );
    assert_eq!(
        stderr(&o),
        "<stdin>: invalid YAML: duplicate key `kind` in one mapping at line 3, column 1\nnothing was written\n"
    );
    let o = cli.run_stdin(
        &["apply", "-f", "-"],
        Some(r#"{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "x", "name": "y"}}"#),
    );
    assert!(
        stderr(&o).starts_with("<stdin>: invalid JSON: duplicate key \"name\" in one object"),
        "{}",
        stderr(&o)
    );
    let deep = format!("a: {}{}\n", "[".repeat(65), "]".repeat(65));
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(&deep));
    assert!(
        stderr(&o).starts_with("<stdin>: invalid YAML: nesting deeper than 64 levels at line 1"),
        "{}",
        stderr(&o)
    );

    let cluster = data("reach/cluster.yaml");
    let cluster = cluster.to_str().unwrap();
    for args in [
        &[
            "explain",
            "-f",
            cluster,
            "--from",
            "shop/client",
            "--to",
            "shop/web",
            "--protocol",
            "ICMP",
            "--port",
            "80",
        ][..],
        &["reach", "-f", cluster, "--protocol", "icmp", "--port", "80"][..],
        &[
            "reach",
            "-f",
            cluster,
            "--protocol",
            "UDPLite",
            "--port",
            "80",
        ][..],
    ] {
        let o = cli.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("--port does not apply to protocol"),
            "{args:?}: {}",
            stderr(&o)
        );
    }

    let huge = "x".repeat(20_000);
    for args in [
        &[
            "explain", "-f", cluster, "--from", &huge, "--to", "shop/web", "--port", "80",
        ][..],
        &["get", "gnp", &huge][..],
        &["label", "gnp", &huge, "a=b"][..],
        &["delete", "gnp", &huge][..],
        &["selector", "check", &huge][..],
    ] {
        let o = cli.run(args);
        assert_eq!(o.status.code(), Some(1), "{:?}", &args[..2]);
        assert!(
            stderr(&o).len() < 600 && stderr(&o).contains("(20000 bytes)"),
            "{:?}: {} bytes",
            &args[..2],
            stderr(&o).len()
        );
    }

    // Any field, any check or parser: a long value is cut, in the object's name too.
    for doc in [
        format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: h}}\nspec: {{node: n, interfaceName: {huge}}}\n"
        ),
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: 10.0.0.0/8, blockSize: {huge}}}\n"
        ),
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {huge}}}\nspec: {{cidr: 10.0.0.0/8, blockSize: x}}\n"
        ),
    ] {
        let o = cli.run_stdin(&["apply", "-f", "-"], Some(&doc));
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).len() < 600 && stderr(&o).contains("… (200"),
            "{} bytes: {}",
            stderr(&o).len(),
            &stderr(&o)[..stderr(&o).len().min(300)]
        );
    }

    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.128/25, 192.168.0.0/24]}\n";
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(np));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("spec.ingress[0].from[0].ipBlock.except[1]: \"192.168.0.0/24\" must be a strict subset of cidr \"10.0.0.0/24\""),
        "{}",
        stderr(&o)
    );
    let same = np.replace("10.0.0.128/25, 192.168.0.0/24", "10.0.0.0/24");
    let o = cli.run_stdin(&["apply", "-f", "-"], Some(&same));
    assert_eq!(
        o.status.code(),
        Some(1),
        "an exception equal to the block is no strict subset"
    );
}

/// Debug diagnostics of a command that tries an etcd where none listens (port 1).
const DEBUG_ARGS: &[&str] = &[
    "--log",
    "debug",
    "--datastore",
    "etcd:http://127.0.0.1:1",
    "get",
    "gnp",
];

/// Diagnostics on stderr carry no colour codes unless stderr is a terminal.
#[test]
fn no_colours_when_stderr_is_not_a_terminal() {
    let cli = Cli::sqlite();
    let o = cli.run(DEBUG_ARGS);
    assert!(stderr(&o).contains("DEBUG"), "{}", stderr(&o));
    assert!(!stderr(&o).contains('\u{1b}'), "{:?}", stderr(&o));
}

/// At a terminal (a pseudo-terminal made by `script`) diagnostics are coloured, unless NO_COLOR
/// is set (https://no-color.org).
#[test]
fn sys_colours_at_a_terminal_unless_no_color() {
    let script = gingham_testkit::require_tool("script");
    let line = format!(
        "{} {} >/dev/null",
        env!("CARGO_BIN_EXE_gingham"),
        DEBUG_ARGS.join(" ")
    );
    let run = |no_color: Option<&str>| -> String {
        let mut cmd = Command::new(&script);
        cmd.args(["-qc", &line, "/dev/null"])
            .env_remove("NO_COLOR")
            .env_remove("GINGHAM_DATASTORE");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let o = cmd.output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let tty = run(None);
    assert!(tty.contains("DEBUG") && tty.contains('\u{1b}'), "{tty:?}");
    let plain = run(Some("1"));
    assert!(
        plain.contains("DEBUG") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
}

/// The same commands against a real etcd, selected the way Calico users do it:
/// `DATASTORE_TYPE=etcdv3` and `ETCD_ENDPOINTS`. Keys land in Calico's layout.
#[test]
fn sys_etcd_datastore_via_calicos_variables() {
    let server = gingham_testkit::etcd::EtcdServer::start();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gingham"))
            .args(args)
            .env_remove("GINGHAM_DATASTORE")
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", server.endpoint())
            .output()
            .unwrap()
    };
    let policies = data("policies.yaml");
    let out = run(&["apply", "-f", policies.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["get", "gnp", "-o", "name"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("globalnetworkpolicy/deny-ssh-dashboard"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // etcdctl sees Calico's key layout.
    let etcdctl = gingham_testkit::require_tool("etcdctl");
    let keys = Command::new(etcdctl)
        .args([
            "--endpoints",
            &server.endpoint(),
            "get",
            "--prefix",
            "--keys-only",
            "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&keys.stdout).contains(
            "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/deny-ssh-dashboard"
        ),
        "{}",
        String::from_utf8_lossy(&keys.stdout)
    );
    // An unreachable etcd is one clear line, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["get", "gnp"])
        .env_remove("GINGHAM_DATASTORE")
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("127.0.0.1:9"), "{}", stderr(&out));
}

/// BGPFilter is a stored kind: apply, get (by calicoctl's short names too), -o yaml round
/// trip, delete; a bad one is refused naming the file, document and field.
#[test]
fn bgp_filter_apply_get_delete_round_trip() {
    let cli = Cli::sqlite();
    let filter = "apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: tor-export
spec:
  exportV4:
  - action: Accept
    matchOperator: In
    cidr: 10.244.0.0/16
    prefixLength: {min: 26, max: 32}
  - action: Reject
";
    let out = cli.run_stdin(&["apply", "-f", "-"], Some(filter));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "BGPFilter tor-export created\n"
    );
    for name in ["bgpfilters", "bgpfilter", "bgpf", "bfs"] {
        assert!(cli.ok(&["get", name]).contains("tor-export"), "{name}");
    }
    let yaml = cli.ok(&["get", "bgpfilter", "tor-export", "-o", "yaml"]);
    assert!(yaml.contains("kind: BGPFilter"), "{yaml}");
    assert!(yaml.contains("cidr: 10.244.0.0/16"), "{yaml}");
    // What get prints applies back unchanged.
    let out = cli.run_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "BGPFilter tor-export unchanged\n"
    );
    // Stored under Calico's key.
    {
        use gingham_datastore::Datastore;
        let path = cli.datastore.strip_prefix("sqlite:").unwrap();
        let store = gingham_datastore_sqlite::SqliteStore::open(path).unwrap();
        assert!(
            store
                .get("/calico/resources/v3/projectcalico.org/bgpfilters/tor-export")
                .unwrap()
                .is_some()
        );
    }
    // A bad action: named, nothing written.
    let bad = filter
        .replace("name: tor-export", "name: other")
        .replace("action: Reject", "action: Drop");
    let out = cli.run_stdin(&["apply", "-f", "-"], Some(&bad));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("<stdin>: document 1 (BGPFilter other): spec.exportV4[1].action: \"Drop\" is not a valid BGPFilter action (valid: Accept, Reject)"),
        "{err}"
    );
    assert!(!cli.ok(&["get", "bgpfilters"]).contains("other"));
    assert_eq!(
        cli.ok(&["delete", "bgpfilter", "tor-export"]),
        "BGPFilter tor-export deleted\n"
    );
    assert!(!cli.ok(&["get", "bgpfilters"]).contains("tor-export"));
}

/// IPAM's block affinities are shown as BlockAffinity resources, named as Calico names them;
/// they cannot be applied or deleted through the resource commands (IPAM's keys stay the one
/// source of truth).
#[test]
fn block_affinities_are_the_view_of_ipam() {
    let cli = Cli::sqlite();
    {
        let path = cli.datastore.strip_prefix("sqlite:").unwrap();
        let store = gingham_datastore_sqlite::SqliteStore::open(path).unwrap();
        let ipam = gingham_ipam::Ipam::new(&store);
        for (node, handle) in [("node-1", "h1"), ("node-2", "h2")] {
            let req = gingham_ipam::AssignRequest {
                handle_id: handle.into(),
                node: node.into(),
                num_v4: 1,
                pools_v4: vec![gingham_ipam::PoolSpec::new(
                    "p",
                    "10.244.0.0/16".parse().unwrap(),
                )],
                ..Default::default()
            };
            ipam.auto_assign(&req).unwrap();
        }
    }
    let table = cli.ok(&["get", "blockaffinities"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("NODE"),
        "{table}"
    );
    let mut rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    rows.sort();
    assert_eq!(rows[0][1], "node-1");
    assert_eq!(rows[1][1], "node-2");
    for r in &rows {
        // <node>-<cidr with . and / replaced by ->, as libcalico-go names it.
        assert_eq!(r[0], format!("{}-{}", r[1], r[2].replace(['.', '/'], "-")));
        assert_eq!(r[3], "confirmed");
    }
    let name = rows[0][0].to_string();
    let yaml = cli.ok(&["get", "blockaffinity", &name, "-o", "yaml"]);
    assert!(yaml.contains("kind: BlockAffinity"), "{yaml}");
    assert!(yaml.contains("node: node-1"), "{yaml}");
    // Read-only: apply and delete are refused, nothing changes.
    let out = cli.run_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    let out = cli.run(&["delete", "blockaffinity", &name]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    assert_eq!(cli.ok(&["get", "blockaffinities"]), table);
    let out = cli.run(&["get", "blockaffinity", "node-9-10-0-0-0-26"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// An unknown networking backend, on the command line or in `CALICO_NETWORKING_BACKEND`, is
/// refused before the agent starts, naming the valid ones.
#[test]
fn an_unknown_networking_backend_is_refused() {
    for (args, env) in [
        (
            vec!["agent", "--node", "n1", "--networking", "flannel"],
            None,
        ),
        (vec!["agent", "--node", "n1"], Some("calico-ipip")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gingham"));
        cmd.args(&args)
            .args(["--datastore", "sqlite:/nonexistent/never-opened.db"]);
        if let Some(v) = env {
            cmd.env("CALICO_NETWORKING_BACKEND", v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains("is not one of bird, vxlan, none"), "{err}");
    }
}
