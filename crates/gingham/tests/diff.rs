//! `gingham diff` and `gingham apply --dry-run` as users run them: on the agreement test's
//! policy sets, each agrees with two `reach` runs on every pair (gained where only the after
//! matrix allows, lost where only the before one does, nothing else), each loss carries the
//! cause `explain` gives, and `--dry-run` writes nothing (the datastore's revision and every key
//! are unchanged, on SQLite and on etcd).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use common::policy_sets::{SETS, offline_cluster, offline_set};
use gingham_datastore::Datastore;
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    common::gingham_in(args, None)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_ok(args: &[&str]) -> Value {
    let o = run(args);
    assert!(
        o.status.success(),
        "gingham {args:?} failed: {}",
        stderr(&o)
    );
    serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("gingham {args:?}: not JSON ({e}): {}", stdout(&o)))
}

/// A directory per policy set: the cluster and the set's documents.
fn set_dirs(root: &Path) -> Vec<PathBuf> {
    SETS.iter()
        .enumerate()
        .map(|(i, (_, yaml))| {
            let dir = root.join(format!("set{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cluster.yaml"), offline_cluster()).unwrap();
            if !yaml.is_empty() {
                std::fs::write(dir.join("policy.yaml"), offline_set(yaml)).unwrap();
            }
            dir
        })
        .collect()
}

/// One pair's change: (from, to, protocol, port).
type Cell = (String, String, String, Option<u64>);

/// The cells of `reach -o json` (one matrix or an array of them) that are allowed.
fn allowed_cells(reach: &Value) -> BTreeSet<Cell> {
    let matrices = match reach {
        Value::Array(a) => a.clone(),
        m => vec![m.clone()],
    };
    let mut out = BTreeSet::new();
    for m in matrices {
        let proto = m["protocol"].as_str().unwrap().to_owned();
        let port = m["port"].as_u64();
        for (from, row) in m["allowed"].as_object().unwrap() {
            for (to, ok) in row.as_object().unwrap() {
                if ok.as_bool().unwrap() {
                    out.insert((from.clone(), to.clone(), proto.clone(), port));
                }
            }
        }
    }
    out
}

/// The ports of `reach -o json`'s matrices.
fn probed(reach: &Value) -> BTreeSet<(String, Option<u64>)> {
    match reach {
        Value::Array(a) => a.clone(),
        m => vec![m.clone()],
    }
    .iter()
    .map(|m| {
        (
            m["protocol"].as_str().unwrap().to_owned(),
            m["port"].as_u64(),
        )
    })
    .collect()
}

/// Checks the JSON of `diff` / `apply --dry-run -o json` exactly: `{"gained": [...], "lost":
/// [...]}` with the documented fields and nothing else. Returns the gained and lost cells.
fn diff_cells(d: &Value) -> (BTreeSet<Cell>, Vec<(Cell, String)>) {
    let top: BTreeSet<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, BTreeSet::from(["gained", "lost"]), "{d}");
    let cell = |e: &Value| -> Cell {
        (
            e["from"].as_str().unwrap().to_owned(),
            e["to"].as_str().unwrap().to_owned(),
            e["protocol"].as_str().unwrap().to_owned(),
            e["port"].as_u64(),
        )
    };
    let keys = |e: &Value| -> BTreeSet<String> { e.as_object().unwrap().keys().cloned().collect() };
    let mut gained = BTreeSet::new();
    for e in d["gained"].as_array().unwrap() {
        assert_eq!(
            keys(e),
            ["from", "port", "protocol", "to"].map(String::from).into(),
            "{e}"
        );
        assert!(gained.insert(cell(e)), "{e} twice");
    }
    let mut lost = Vec::new();
    for e in d["lost"].as_array().unwrap() {
        assert_eq!(
            keys(e),
            ["cause", "from", "port", "protocol", "to"]
                .map(String::from)
                .into(),
            "{e}"
        );
        let cause = e["cause"].as_str().unwrap().to_owned();
        assert!(!cause.is_empty(), "{e}");
        lost.push((cell(e), cause));
    }
    (gained, lost)
}

/// Compares a difference with the two matrices on every cell: gained exactly where only
/// `after` allows, lost exactly where only `before` does.
fn assert_agrees(what: &str, d: &Value, before: &BTreeSet<Cell>, after: &BTreeSet<Cell>) {
    let (gained, lost) = diff_cells(d);
    let want_gained: BTreeSet<Cell> = after.difference(before).cloned().collect();
    let want_lost: BTreeSet<Cell> = before.difference(after).cloned().collect();
    let lost_cells: BTreeSet<Cell> = lost.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        lost_cells.len(),
        lost.len(),
        "{what}: a lost pair twice: {d}"
    );
    assert_eq!(
        gained, want_gained,
        "{what}: gained pairs differ from two reach runs"
    );
    assert_eq!(
        lost_cells, want_lost,
        "{what}: lost pairs differ from two reach runs"
    );
}

/// `explain`'s text for one cell of `dir`'s cluster.
fn explain(source: &[&str], c: &Cell) -> String {
    let port = c.3.map(|p| p.to_string());
    let mut args = vec!["explain"];
    args.extend_from_slice(source);
    args.extend(["--from", &c.0, "--to", &c.1, "--protocol", &c.2]);
    if let Some(p) = &port {
        args.extend(["--port", p]);
    }
    let o = run(&args);
    assert!(o.status.success(), "explain {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Every lost pair's cause is a line `explain` prints for that flow in the after state.
fn assert_causes_are_explains(what: &str, d: &Value, after: &[&str]) {
    let (_, lost) = diff_cells(d);
    // One flow per distinct cause keeps the test quick and still checks every wording met.
    let mut seen = BTreeSet::new();
    for (cell, cause) in lost {
        if !seen.insert(cause.clone()) {
            continue;
        }
        let text = explain(after, &cell);
        // The first `=>` line; or, when explain gives none, the deciding stage and step.
        let first_advice = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("=> "))
            .map(str::to_owned);
        let stage_and_step = cause.split_once(": ").is_some_and(|(stage, step)| {
            text.lines().any(|l| l.contains(&format!(". {stage}: ")))
                && text.lines().any(|l| l.trim() == step)
        });
        assert!(
            first_advice.as_deref() == Some(cause.as_str())
                || (first_advice.is_none() && stage_and_step),
            "{what}: the cause of {cell:?} ({cause:?}) is not what explain says:\n{text}"
        );
    }
}

#[test]
fn diff_agrees_with_two_reach_runs_on_every_policy_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = set_dirs(tmp.path());
    let ds = format!("sqlite:{}", tmp.path().join("unused.db").display());
    let reach: Vec<Value> = dirs
        .iter()
        .map(|d| {
            json_ok(&[
                "reach",
                "-f",
                d.to_str().unwrap(),
                "-o",
                "json",
                "--datastore",
                &ds,
            ])
        })
        .collect();
    let cells: Vec<BTreeSet<Cell>> = reach.iter().map(allowed_cells).collect();
    // From no policy to each set and back, and from each set to the next.
    let mut pairs = Vec::new();
    for i in 1..SETS.len() {
        pairs.push((0, i));
        pairs.push((i, 0));
        if i + 1 < SETS.len() {
            pairs.push((i, i + 1));
        }
    }
    let mut changed = 0;
    for (b, a) in pairs {
        let what = format!("{:?} -> {:?}", SETS[b].0, SETS[a].0);
        let (before, after) = (dirs[b].to_str().unwrap(), dirs[a].to_str().unwrap());
        let d = json_ok(&[
            "diff",
            "--before",
            before,
            "--after",
            after,
            "-o",
            "json",
            "--datastore",
            &ds,
        ]);
        // The ports compared are reach's: the ports the pods declare.
        assert_eq!(probed(&reach[b]), probed(&reach[a]));
        assert_agrees(&what, &d, &cells[b], &cells[a]);
        assert_causes_are_explains(&what, &d, &["-f", after, "--datastore", &ds]);
        if d != serde_json::json!({"gained": [], "lost": []}) {
            changed += 1;
        }
    }
    assert!(
        changed > 30,
        "only {changed} of the comparisons changed anything"
    );
}

#[test]
fn diff_with_a_port_compares_that_port_only_and_prints_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = set_dirs(tmp.path());
    let ds = format!("sqlite:{}", tmp.path().join("unused.db").display());
    // "x/a TCP 80 only": x/a loses TCP 81 from every other pod, keeps TCP 80.
    let i = SETS
        .iter()
        .position(|(n, _)| *n == "x/a TCP 80 only")
        .unwrap();
    let (before, after) = (dirs[0].to_str().unwrap(), dirs[i].to_str().unwrap());
    let d = json_ok(&[
        "diff",
        "--before",
        before,
        "-f",
        after,
        "--port",
        "81",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]);
    let (gained, lost) = diff_cells(&d);
    assert!(gained.is_empty(), "{d}");
    let froms: BTreeSet<&str> = lost.iter().map(|(c, _)| c.0.as_str()).collect();
    assert_eq!(froms.len(), 8, "every other pod loses x/a's TCP 81: {d}");
    for (c, cause) in &lost {
        assert_eq!(
            (c.1.as_str(), c.2.as_str(), c.3),
            ("x/a", "TCP", Some(81)),
            "{d}"
        );
        assert!(cause.contains("knp.default.tcp80"), "{cause}");
    }
    let d80 = json_ok(&[
        "diff",
        "--before",
        before,
        "-f",
        after,
        "--port",
        "80",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]);
    assert_eq!(d80, serde_json::json!({"gained": [], "lost": []}));

    // The table: one line per pair, the cause on lost ones, a count; exit 0.
    let o = run(&[
        "diff",
        "--before",
        before,
        "-f",
        after,
        "--port",
        "81",
        "--datastore",
        &ds,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("- lost")).collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("TCP/81") && l.contains("x/a")),
        "{text}"
    );
    assert!(text.contains("0 gained, 8 lost"), "{text}");
    // No difference says so.
    let o = run(&["diff", "--before", before, "-f", before, "--datastore", &ds]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "no pair gains or loses access\n");
}

#[test]
fn diff_against_the_datastore() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = set_dirs(tmp.path());
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let i = SETS
        .iter()
        .position(|(n, _)| *n == "deny all ingress in x")
        .unwrap();
    let base = dirs[0].to_str().unwrap();
    let after = dirs[i].to_str().unwrap();
    let o = run(&["apply", "-f", base, "--datastore", &ds]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The datastore (before) against files (after), and the files against the datastore.
    let d = json_ok(&[
        "diff",
        "-f",
        after,
        "--port",
        "80",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]);
    let back = json_ok(&[
        "diff",
        "--before",
        after,
        "--port",
        "80",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]);
    let before_cells = allowed_cells(&json_ok(&[
        "reach",
        "--port",
        "80",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]));
    let after_cells = allowed_cells(&json_ok(&[
        "reach",
        "-f",
        after,
        "--port",
        "80",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]));
    assert_agrees("datastore -> files", &d, &before_cells, &after_cells);
    assert_agrees("files -> datastore", &back, &after_cells, &before_cells);
    let (_, lost) = diff_cells(&d);
    assert_eq!(lost.len(), 24, "the 8 other pods lose each pod of x: {d}");
}

#[test]
fn diff_refuses_bad_input_naming_file_document_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = set_dirs(tmp.path());
    let ds = format!("sqlite:{}", tmp.path().join("unused.db").display());
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: fine}\nspec: {selector: all()}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: broken}\nspec:\n  selector: all()\n  ingress: [{action: Sometimes}]\n",
    )
    .unwrap();
    let base = dirs[0].to_str().unwrap();
    let bad_s = bad.to_str().unwrap();
    for args in [
        vec!["diff", "--before", base, "--after", base, "--after", bad_s],
        vec!["diff", "--before", bad_s, "--after", base],
        vec!["apply", "--dry-run", "-f", bad_s],
    ] {
        let mut args = args.clone();
        args.extend(["--datastore", &ds]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(bad_s), "{args:?}: no file name: {err}");
        assert!(err.contains("document 2"), "{args:?}: no document: {err}");
        assert!(err.contains("action"), "{args:?}: no field: {err}");
        assert!(err.contains("Allow"), "{args:?}: no valid values: {err}");
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
    }
    // Nothing to compare, a port on ICMP, a missing file, no declared port: exit 1, in words.
    let missing = tmp.path().join("missing.yaml");
    let portless = tmp.path().join("portless.yaml");
    std::fs::write(
        &portless,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {nodeName: n, containers: [{name: c}]}\nstatus: {podIP: 10.0.0.1}\n",
    )
    .unwrap();
    for (args, says) in [
        (vec!["diff"], "nothing to compare"),
        (
            vec![
                "diff",
                "--before",
                base,
                "-f",
                base,
                "--protocol",
                "ICMP",
                "--port",
                "1",
            ],
            "--port does not apply",
        ),
        (
            vec!["diff", "--before", base, "-f", missing.to_str().unwrap()],
            "missing.yaml",
        ),
        (
            vec![
                "diff",
                "--before",
                portless.to_str().unwrap(),
                "-f",
                portless.to_str().unwrap(),
            ],
            "declare no ports",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--datastore", &ds]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    // --port without --dry-run is a usage error (apply writes; it compares nothing).
    let o = run(&["apply", "-f", base, "--port", "80", "--datastore", &ds]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Every key, value and revision of a store, and its revision.
fn dump(store: &dyn Datastore) -> (i64, Vec<(String, Vec<u8>, i64)>) {
    let listing = store.list("/").unwrap();
    (
        store.revision().unwrap(),
        listing
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect(),
    )
}

/// On each policy set in turn (the previous one still applied): `apply --dry-run` of the set
/// prints what the real apply then changes, by two `reach` runs, and writes nothing.
fn dry_run_agrees_and_writes_nothing(ds: &str, store: &dyn Datastore, sets: &[usize]) {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("cluster.yaml");
    std::fs::write(&cluster, offline_cluster()).unwrap();
    let o = run(&["apply", "-f", cluster.to_str().unwrap(), "--datastore", ds]);
    assert!(o.status.success(), "{}", stderr(&o));
    let probes = [("TCP", "80"), ("TCP", "81"), ("UDP", "81")];
    let reach_all = || -> Vec<BTreeSet<Cell>> {
        probes
            .iter()
            .map(|(proto, port)| {
                allowed_cells(&json_ok(&[
                    "reach",
                    "--protocol",
                    proto,
                    "--port",
                    port,
                    "-o",
                    "json",
                    "--datastore",
                    ds,
                ]))
            })
            .collect()
    };
    let mut previous: Option<PathBuf> = None;
    let mut changed = 0;
    for &i in sets {
        let (what, yaml) = SETS[i];
        let file = tmp.path().join(format!("set{i}.yaml"));
        std::fs::write(&file, offline_set(yaml)).unwrap();
        let f = file.to_str().unwrap();
        let before = reach_all();
        let stored = dump(store);
        let dry: Vec<Value> = probes
            .iter()
            .map(|(proto, port)| {
                json_ok(&[
                    "apply",
                    "--dry-run",
                    "-f",
                    f,
                    "--protocol",
                    proto,
                    "--port",
                    port,
                    "-o",
                    "json",
                    "--datastore",
                    ds,
                ])
            })
            .collect();
        // The table form prints the plan, then the difference.
        let o = run(&[
            "apply",
            "--dry-run",
            "-f",
            f,
            "--port",
            "80",
            "--datastore",
            ds,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("(dry run)"), "{}", stdout(&o));
        assert_eq!(
            dump(store),
            stored,
            "{what}: apply --dry-run wrote to the datastore"
        );
        let o = run(&["apply", "-f", f, "--datastore", ds]);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        let after = reach_all();
        for (k, d) in dry.iter().enumerate() {
            let what = format!("{what}, {:?}", probes[k]);
            assert_agrees(&what, d, &before[k], &after[k]);
            assert_causes_are_explains(&what, d, &["--datastore", ds]);
            if d["gained"] != serde_json::json!([]) || d["lost"] != serde_json::json!([]) {
                changed += 1;
            }
        }
        if let Some(p) = previous.take() {
            let o = run(&["delete", "-f", p.to_str().unwrap(), "--datastore", ds]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        previous = Some(file);
    }
    assert!(
        changed > sets.len(),
        "only {changed} dry runs changed anything"
    );
}

#[test]
fn apply_dry_run_agrees_with_two_reach_runs_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("g.db");
    let ds = format!("sqlite:{}", db.display());
    // Create the datastore, then watch it from this process.
    let o = run(&["get", "gnp", "--datastore", &ds]);
    assert!(o.status.success(), "{}", stderr(&o));
    let store = gingham_datastore_sqlite::SqliteStore::open(&db).unwrap();
    let sets: Vec<usize> = (1..SETS.len()).collect();
    dry_run_agrees_and_writes_nothing(&ds, &store, &sets);
}

#[test]
fn sys_apply_dry_run_writes_nothing_on_etcd() {
    let server = gingham_testkit::etcd::EtcdServer::start();
    let ds = format!("etcd:{}", server.endpoint());
    let store: Arc<dyn Datastore> = Arc::new(
        gingham_datastore_etcd::EtcdStore::connect(gingham_datastore_etcd::EtcdConfig {
            endpoints: vec![server.endpoint()],
            ..Default::default()
        })
        .unwrap(),
    );
    let sets: Vec<usize> = [
        "deny all ingress in x",
        "x/a TCP 80 only",
        "Calico: a tier passing x, dropping the rest",
    ]
    .iter()
    .map(|n| SETS.iter().position(|(s, _)| s == n).unwrap())
    .collect();
    dry_run_agrees_and_writes_nothing(&ds, store.as_ref(), &sets);
}

/// A pod only one side has: every pair with it is gained (it appears) or lost (it is gone, the
/// cause being explain's refusal of an unknown pod), as two `reach` runs say.
#[test]
fn diff_covers_pods_only_one_side_has() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("unused.db").display());
    let all = tmp.path().join("all.yaml");
    std::fs::write(&all, offline_cluster()).unwrap();
    // The same cluster without z/c (the last document).
    let without = tmp.path().join("without-zc.yaml");
    let docs = offline_cluster();
    let cut = docs.rfind("---\n").unwrap();
    assert!(
        docs[cut..].contains("name: c, namespace: z"),
        "{}",
        &docs[cut..]
    );
    std::fs::write(&without, &docs[..cut]).unwrap();
    let (all, without) = (all.to_str().unwrap(), without.to_str().unwrap());
    let reach = |f: &str| {
        allowed_cells(&json_ok(&[
            "reach",
            "-f",
            f,
            "--port",
            "80",
            "-o",
            "json",
            "--datastore",
            &ds,
        ]))
    };
    let (with_zc, without_zc) = (reach(all), reach(without));
    let appears = json_ok(&[
        "diff",
        "--before",
        without,
        "-f",
        all,
        "--port",
        "80",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]);
    assert_agrees("z/c appears", &appears, &without_zc, &with_zc);
    let (gained, _) = diff_cells(&appears);
    assert_eq!(
        gained.len(),
        17,
        "z/c to and from the 8 others, and to itself: {appears}"
    );
    let goes = json_ok(&[
        "diff",
        "--before",
        all,
        "-f",
        without,
        "--port",
        "80",
        "-o",
        "json",
        "--datastore",
        &ds,
    ]);
    assert_agrees("z/c goes", &goes, &with_zc, &without_zc);
    let (_, lost) = diff_cells(&goes);
    assert_eq!(lost.len(), 17, "{goes}");
    // explain refuses the flow in the after state with the same words.
    let o = run(&[
        "explain",
        "-f",
        without,
        "--from",
        "x/a",
        "--to",
        "z/c",
        "--port",
        "80",
        "--datastore",
        &ds,
    ]);
    assert_eq!(o.status.code(), Some(1));
    for (_, cause) in &lost {
        assert!(cause.contains("\"z/c\" is not a known pod"), "{cause}");
        assert!(
            stderr(&o).contains("\"z/c\" is not a known pod"),
            "{}",
            stderr(&o)
        );
    }
}

/// A dry run that replaces a stored policy (here: a NetworkPolicy's port moves from 80 to 81)
/// shows the replacement's effect, as the real apply then has it.
#[test]
fn apply_dry_run_of_a_changed_policy_shows_its_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("g.db");
    let ds = format!("sqlite:{}", db.display());
    let cluster = tmp.path().join("cluster.yaml");
    std::fs::write(&cluster, offline_cluster()).unwrap();
    let (_, tcp80) = SETS.iter().find(|(n, _)| *n == "x/a TCP 80 only").unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, offline_set(tcp80)).unwrap();
    for f in [&cluster, &policy] {
        let o = run(&["apply", "-f", f.to_str().unwrap(), "--datastore", &ds]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let changed = tmp.path().join("changed.yaml");
    std::fs::write(&changed, offline_set(tcp80).replace("port: 80", "port: 81")).unwrap();
    let changed = changed.to_str().unwrap();
    let reach = |port: &str| {
        allowed_cells(&json_ok(&[
            "reach",
            "--port",
            port,
            "-o",
            "json",
            "--datastore",
            &ds,
        ]))
    };
    let before = [reach("80"), reach("81")];
    let store = gingham_datastore_sqlite::SqliteStore::open(&db).unwrap();
    let stored = dump(&store);
    let dry: Vec<Value> = ["80", "81"]
        .iter()
        .map(|port| {
            json_ok(&[
                "apply",
                "--dry-run",
                "-f",
                changed,
                "--port",
                port,
                "-o",
                "json",
                "--datastore",
                &ds,
            ])
        })
        .collect();
    let o = run(&[
        "apply",
        "--dry-run",
        "-f",
        changed,
        "--port",
        "80",
        "--datastore",
        &ds,
    ]);
    assert!(
        stdout(&o).contains("NetworkPolicy x/knp.default.tcp80 configured (dry run)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        dump(&store),
        stored,
        "apply --dry-run wrote to the datastore"
    );
    let o = run(&["apply", "-f", changed, "--datastore", &ds]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = [reach("80"), reach("81")];
    for k in 0..2 {
        assert_agrees(
            &format!("port {}", [80, 81][k]),
            &dry[k],
            &before[k],
            &after[k],
        );
    }
    // x/a loses TCP 80 and gains TCP 81 from the 8 other pods.
    assert_eq!(diff_cells(&dry[0]).1.len(), 8, "{}", dry[0]);
    assert_eq!(diff_cells(&dry[1]).0.len(), 8, "{}", dry[1]);
}
