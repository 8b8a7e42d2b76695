//! `gingham reach` and `gingham explain` as users run them, from files and from the datastore.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn gingham(args: &[&str], datastore: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(args)
        .env("GINGHAM_DATASTORE", datastore)
        .env_remove("DATASTORE_TYPE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn reach_prints_the_matrix_in_the_stable_schema() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let cluster = data("reach");
    let o = gingham(
        &[
            "reach",
            "-f",
            cluster.to_str().unwrap(),
            "--port",
            "80",
            "-o",
            "json",
        ],
        &ds,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["port"], 80);
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(
        v["endpoints"],
        serde_json::json!(["shop/client", "shop/stranger", "shop/web"])
    );
    assert_eq!(v["allowed"]["shop/client"]["shop/web"], true);
    assert_eq!(v["allowed"]["shop/stranger"]["shop/web"], false);
    assert_eq!(
        v["allowed"]["shop/web"]["shop/client"], true,
        "client is not isolated"
    );
    assert!(stderr(&o).contains("names no node"), "{}", stderr(&o));

    // Without --port: one matrix per declared port, as a JSON array.
    let o = gingham(
        &["reach", "-f", cluster.to_str().unwrap(), "-o", "json"],
        &ds,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ports: Vec<(String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["protocol"].as_str().unwrap().to_owned(),
                m["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("TCP".to_owned(), 80), ("UDP".to_owned(), 53)]);
    // UDP 53 is not allowed by the policy (it names TCP 80 only).
    assert_eq!(v[1]["allowed"]["shop/client"]["shop/web"], false);

    // The table.
    let o = gingham(
        &["reach", "-f", cluster.to_str().unwrap(), "--port", "80"],
        &ds,
    );
    let table = stdout(&o);
    assert!(table.starts_with("TCP/80"), "{table}");
    assert!(
        table.contains("columns: 1 shop/client, 2 shop/stranger, 3 shop/web"),
        "{table}"
    );
}

#[test]
fn explain_names_the_policy_and_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let cluster = data("reach");
    let f = cluster.to_str().unwrap();
    let o = gingham(
        &[
            "explain",
            "-f",
            f,
            "--from",
            "shop/stranger",
            "--to",
            "shop/web",
            "--port",
            "80",
        ],
        &ds,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("DENIED"), "{text}");
    assert!(
        text.contains("Kubernetes NetworkPolicy shop/knp.default.web-from-clients"),
        "{text}"
    );
    assert!(text.contains("end of tier default"), "{text}");

    let o = gingham(
        &[
            "explain",
            "-f",
            f,
            "--from",
            "shop/client",
            "--to",
            "shop/web",
            "--port",
            "80",
            "-o",
            "json",
        ],
        &ds,
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(
        v["stages"].as_array().unwrap().last().unwrap()["kind"],
        "workload-ingress"
    );

    // Mistakes are one clear line.
    let o = gingham(
        &[
            "explain",
            "-f",
            f,
            "--from",
            "shop/nobody",
            "--to",
            "shop/web",
            "--port",
            "80",
        ],
        &ds,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("\"shop/nobody\" is not a known pod"),
        "{}",
        stderr(&o)
    );
    let o = gingham(
        &[
            "explain",
            "-f",
            f,
            "--from",
            "shop/client",
            "--to",
            "shop/web",
            "--port",
            "80",
            "--protocol",
            "tcpp",
        ],
        &ds,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("valid: TCP"), "{}", stderr(&o));
}

#[test]
fn reach_reads_the_datastore_without_files() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let cluster = data("reach");
    let o = gingham(&["apply", "-f", cluster.to_str().unwrap()], &ds);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gingham(&["reach", "--port", "80", "-o", "json"], &ds);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["allowed"]["shop/client"]["shop/web"], true);
    // A pod on no node has no workload endpoint in the datastore (as with Calico).
    assert_eq!(
        v["endpoints"],
        serde_json::json!(["shop/client", "shop/web"])
    );
}

#[test]
fn bad_input_is_refused_with_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let bad = data("bad-second-doc.yaml");
    let o = gingham(&["reach", "-f", bad.to_str().unwrap(), "--port", "80"], &ds);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad-second-doc.yaml: document 2"), "{err}");
    assert!(err.contains("spec.ingress[0].protocol"), "{err}");
    assert!(err.contains("valid: TCP"), "{err}");
    assert!(stdout(&o).is_empty(), "no matrix from bad input");
}
