//! `gingham ui`, the web view: its JSON endpoints give what `reach`, `explain`, `lint` and
//! `flows --denied` print (fast tests on SQLite with the examples), and, in a lab, the page in
//! headless Chromium shows every cell of `reach`'s matrices, `explain`'s words for a clicked
//! cell, `lint`'s findings, a denied flow shortly after a blocked `lab try`, and a policy
//! change without a reload (`sys_web_view_in_headless_chromium_shows_the_lab`: root,
//! iproute2, nftables, chromium).
//! Screenshots of the page are kept in `target/test-artifacts/ui/`.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Fabric;
use serde_json::{Value, json};

/// A file of the examples (`examples/PATH`) or, for `data/PATH`, of this crate's test data.
fn example(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match path.strip_prefix("data/") {
        Some(p) => root.join("tests/data").join(p),
        None => root.join("../../examples").join(path),
    }
    .display()
    .to_string()
}

/// A `gingham ui` process on a free port of 127.0.0.1, killed when dropped.
struct UiServer {
    child: Child,
    /// `http://127.0.0.1:PORT/`
    url: String,
    addr: String,
}

impl UiServer {
    fn start(ds: &str, extra: &[&str]) -> UiServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
            .args(["ui", "--listen", "127.0.0.1:0", "--datastore", ds])
            .args(extra)
            .env_remove("GINGHAM_DATASTORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let read = BufReader::new(stdout).read_line(&mut line);
        let mut server = UiServer {
            child,
            url: String::new(),
            addr: String::new(),
        };
        assert!(
            read.is_ok_and(|n| n > 0),
            "gingham ui printed no address (exit: {:?})",
            server.child.try_wait()
        );
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("gingham ui printed {line:?}, not its URL"))
            .to_owned();
        server.addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        server.url = url;
        server
    }

    /// GET `path`: the status and the body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {response:?}"));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
        (status, body.to_owned())
    }

    /// GET `path`, which must answer 200 with JSON.
    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gingham reach -o json` on `ds` as a list of matrices (it prints one object for one port).
fn reach(ds: &str, port: Option<u16>) -> Vec<Value> {
    let mut args = vec!["reach", "-o", "json", "--datastore", ds];
    let port = port.map(|p| p.to_string());
    if let Some(p) = &port {
        args.extend(["--port", p]);
    }
    match serde_json::from_str(&common::ok_in(&args, None)).unwrap() {
        Value::Array(list) => list,
        one => vec![one],
    }
}

fn query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn explain_path(from: &str, to: &str, protocol: &str, port: Option<u64>) -> String {
    let mut p = format!(
        "/api/explain?from={}&to={}&protocol={}",
        query(from),
        query(to),
        query(protocol)
    );
    if let Some(port) = port {
        p.push_str(&format!("&port={port}"));
    }
    p
}

/// Every matrix of `/api/matrix` equals `reach`'s, and every cell's `/api/explain` equals
/// `gingham explain` (text and JSON), for a datastore holding `files`.
fn endpoints_agree_with_the_cli(files: &[&str], port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    for f in files {
        common::ok_in(&["apply", "-f", &example(f), "--datastore", &ds], None);
    }
    let run = dir.path().join("run");
    let ui = UiServer::start(&ds, &["--run-dir", run.to_str().unwrap()]);

    let api = ui.json(&format!("/api/matrix?protocol=TCP&port={port}"));
    let cli = reach(&ds, Some(port));
    assert_eq!(api["matrices"], Value::Array(cli.clone()), "{files:?}");
    let matrix = &cli[0];
    let endpoints: Vec<&str> = matrix["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(endpoints.len() >= 2, "{matrix}");

    let mut denied = 0;
    for from in &endpoints {
        for to in &endpoints {
            let api = ui.json(&explain_path(from, to, "TCP", Some(port.into())));
            let p = port.to_string();
            let args = [
                "explain",
                "--datastore",
                &ds,
                "--from",
                from,
                "--to",
                to,
                "--port",
                &p,
            ];
            let text = common::ok_in(&args, None);
            assert_eq!(api["text"], text.as_str(), "{from} -> {to}");
            let verdict: Value =
                serde_json::from_str(&common::ok_in(&[&args[..], &["-o", "json"]].concat(), None))
                    .unwrap();
            assert_eq!(api["verdict"], verdict, "{from} -> {to}");
            assert_eq!(
                api["allowed"], matrix["allowed"][from][to],
                "{from} -> {to}"
            );
            let cause = api["cause"].as_str().unwrap();
            assert!(
                text.contains(cause),
                "{from} -> {to}: the cause {cause:?} is not in explain's text:\n{text}"
            );
            if api["allowed"] == false {
                denied += 1;
            }
        }
    }
    assert!(denied > 0, "{files:?}: no denied cell to explain");

    let lint = common::gingham_in(&["lint", "-o", "json", "--datastore", &ds], None);
    let lint: Value = serde_json::from_slice(&lint.stdout).unwrap();
    assert_eq!(ui.json("/api/lint"), lint, "{files:?}");
}

#[test]
fn matrix_explain_and_lint_endpoints_answer_as_the_cli_on_seed_000() {
    endpoints_agree_with_the_cli(&["reach/nodes-without-host-endpoints.yaml"], 80);
}

#[test]
fn matrix_explain_and_lint_endpoints_answer_as_the_cli_on_seed_004() {
    endpoints_agree_with_the_cli(&["reach/missing-profile.yaml"], 80);
}

/// Lint's warnings too (selector-matches-nothing, shadowed-rule) and an error.
#[test]
fn matrix_explain_and_lint_endpoints_answer_as_the_cli_on_lint_warnings() {
    endpoints_agree_with_the_cli(
        &[
            "data/lint/pods.yaml",
            "data/lint/shadowed-rule.yaml",
            "data/lint/selector-matches-nothing.yaml",
            "data/lint/deny-only-isolates.yaml",
        ],
        80,
    );
}

#[test]
fn matrix_explain_and_lint_endpoints_answer_as_the_cli_on_the_dashboard() {
    endpoints_agree_with_the_cli(&["reach/dashboard.yaml"], 22);
}

/// Without a port the matrices are those of every declared port, as `reach` prints them; a
/// namespace keeps that namespace's endpoints with the same cells; bad parameters are 400s
/// with a message; the page and its assets are served.
#[test]
fn matrix_endpoint_ports_namespaces_bad_parameters_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    common::ok_in(
        &[
            "apply",
            "-f",
            &example("reach/dashboard.yaml"),
            "--datastore",
            &ds,
        ],
        None,
    );
    let ui = UiServer::start(&ds, &["--run-dir", dir.path().to_str().unwrap()]);

    // Declared ports, or the same refusal as reach's.
    let api = ui.get("/api/matrix");
    let cli = common::gingham_in(&["reach", "-o", "json", "--datastore", &ds], None);
    if cli.status.success() {
        assert_eq!(api.0, 200, "{}", api.1);
        let all: Value = serde_json::from_str(&api.1).unwrap();
        assert_eq!(all["matrices"], Value::Array(reach(&ds, None)));
    } else {
        assert_eq!(api.0, 422, "{}", api.1);
        let msg: Value = serde_json::from_str(&api.1).unwrap();
        let err = String::from_utf8_lossy(&cli.stderr);
        assert!(
            err.contains(msg["error"].as_str().unwrap()),
            "{api:?} vs {err}"
        );
    }

    let all = ui.json("/api/matrix?port=22");
    let full = &reach(&ds, Some(22))[0];
    let namespaces = all["namespaces"].as_array().unwrap().clone();
    assert!(!namespaces.is_empty(), "{all}");
    let mut seen = 0;
    for ns in &namespaces {
        let ns = ns.as_str().unwrap();
        let one = ui.json(&format!("/api/matrix?port=22&namespace={}", query(ns)));
        let m = &one["matrices"][0];
        let eps = m["endpoints"].as_array().unwrap();
        assert!(!eps.is_empty(), "{ns}: {one}");
        for from in eps {
            let from = from.as_str().unwrap();
            if !ns.starts_with('(') {
                assert!(from.starts_with(&format!("{ns}/")), "{ns}: {from}");
            }
            for to in eps {
                let to = to.as_str().unwrap();
                assert_eq!(
                    m["allowed"][from][to], full["allowed"][from][to],
                    "{ns}: {from} -> {to}"
                );
                seen += 1;
            }
        }
    }
    assert!(seen > 0);

    for (path, words) in [
        ("/api/matrix?protocol=XTP", "not a protocol"),
        ("/api/matrix?port=70000", "not a port"),
        ("/api/matrix?protocol=ICMP&port=80", "ports exist only for"),
        ("/api/explain?to=a/b&port=80", "from is missing"),
        ("/api/explain?from=a/b&to=c/d", "--port is needed for TCP"),
    ] {
        let (status, body) = ui.get(path);
        assert_eq!(status, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(words)),
            "{path}: {body}"
        );
    }

    let (status, page) = ui.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("<table id=\"matrix\">"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    for asset in ["/ui.js", "/ui.css"] {
        let (status, body) = ui.get(asset);
        assert_eq!(status, 200, "{asset}");
        assert!(
            !body.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
    }
    assert_eq!(ui.get("/nothing-here").0, 404);
}

/// `big` pods in namespace `big` (three kinds of labels) and `small` in `small` (two), with a
/// policy in `small` that lets only one kind in to the other.
fn namespaces_of(big: usize, small: usize) -> String {
    let mut docs = String::from(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: big}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: small}}\n",
    );
    for i in 0..big + small {
        let (ns, app) = if i < big {
            ("big", i % 3)
        } else {
            ("small", i % 2)
        };
        docs.push_str(&format!(
            "- {{apiVersion: v1, kind: Pod, metadata: {{name: p{i}, namespace: {ns}, labels: {{app: a{app}}}}}, spec: {{nodeName: node-1}}, status: {{podIP: 10.244.{}.{}}}}}\n",
            i / 200,
            i % 200 + 1
        ));
    }
    docs.push_str("---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: only-a0, namespace: small}\nspec:\n  selector: app == 'a1'\n  ingress: [{action: Allow, source: {selector: app == 'a0'}}]\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: only-a1, namespace: big}\nspec:\n  selector: app == 'a2'\n  ingress: [{action: Allow, source: {selector: app == 'a1'}}]\n");
    docs
}

/// A cluster larger than one matrix on the page: the page is told to choose a namespace (not
/// left to hang), and a namespace's matrix is reach's cells, in good time.
#[test]
fn a_matrix_beyond_the_cap_asks_for_a_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let (big, small) = (250, 60);
    let docs = namespaces_of(big, small);
    common::ok_in(&["apply", "-f", "-", "--datastore", &ds], Some(&docs));
    let ui = UiServer::start(&ds, &["--run-dir", dir.path().to_str().unwrap()]);

    let (status, body) = ui.get("/api/matrix?port=80");
    assert_eq!(status, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"],
        format!(
            "{} endpoints: the page shows at most 300 in one matrix; choose a namespace (or use gingham reach)",
            big + small
        )
        .as_str()
    );

    let t = Instant::now();
    let one = ui.json("/api/matrix?port=80&namespace=small");
    eprintln!(
        "a matrix of {small} endpoints of {}: {:?}",
        big + small,
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(one["endpoints"], big + small);
    let m = &one["matrices"][0];
    let full = &reach(&ds, Some(80))[0];
    let eps = m["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), small);
    let mut denied = 0;
    for from in eps {
        for to in eps {
            let (from, to) = (from.as_str().unwrap(), to.as_str().unwrap());
            assert_eq!(
                m["allowed"][from][to], full["allowed"][from][to],
                "{from} -> {to}"
            );
            denied += usize::from(m["allowed"][from][to] == false);
        }
    }
    assert!(denied > 0);
}

/// `/api/flows` is `gingham flows --denied -o json` of the same run directory: allowed flows
/// left out, records oldest first, the rotated file included.
#[test]
fn flows_endpoint_answers_as_flows_denied() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let record = |time: &str, verdict: &str, port: u16| {
        json!({
            "time": time, "node": "node-a", "verdict": verdict,
            "src": "default/client", "dst": "default/web",
            "src_ip": "10.244.0.2", "dst_ip": "10.244.0.3", "protocol": "TCP", "port": port,
            "cause": "NetworkPolicy default/deny-web: rule 0 (Deny) matched",
        })
        .to_string()
    };
    let [old, current] = gingham_agent::flows::files(&run);
    std::fs::write(
        &old,
        format!("{}\n", record("2026-01-01T00:00:01Z", "denied", 80)),
    )
    .unwrap();
    std::fs::write(
        &current,
        format!(
            "{}\n{}\n{}\nnot a record\n",
            record("2026-01-01T00:00:03Z", "denied", 81),
            record("2026-01-01T00:00:02Z", "allowed", 82),
            record("2026-01-01T00:00:04Z", "denied", 83),
        ),
    )
    .unwrap();
    let ui = UiServer::start(&ds, &["--run-dir", run.to_str().unwrap()]);
    let cli: Value = serde_json::from_str(&common::ok_in(
        &[
            "flows",
            "--run-dir",
            run.to_str().unwrap(),
            "--denied",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let api = ui.json("/api/flows");
    assert_eq!(api, cli);
    let ports: Vec<&Value> = api["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["port"])
        .collect();
    assert_eq!(ports, [80, 81, 83]);
}

/// A datastore that cannot be opened or read is an answer (503 with the reason), not the end of
/// the server: every endpoint that reads it says so, and the page and flows still work.
#[test]
fn a_dead_datastore_is_a_503_with_its_reason_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    // A SQLite file under a plain file, and an etcd where nothing listens.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    for (ds, named) in [
        (
            format!("sqlite:{}", plain.join("g.db").display()),
            plain.display().to_string(),
        ),
        (format!("etcd:http://{closed}"), closed.to_string()),
    ] {
        let ui = UiServer::start(&ds, &["--run-dir", dir.path().to_str().unwrap()]);
        for path in [
            "/api/matrix?port=80",
            "/api/lint",
            "/api/explain?from=a/b&to=c/d&port=80",
        ] {
            let (status, body) = ui.get(path);
            assert_eq!(status, 503, "{ds}: {path}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            let e = v["error"].as_str().unwrap_or_default();
            assert!(
                e.starts_with("cannot read the datastore") && e.contains(&named),
                "{ds}: {path}: {body}"
            );
        }
        assert_eq!(ui.get("/").0, 200);
        assert_eq!(ui.json("/api/flows"), json!({"flows": []}));
    }
}

// ---------------------------------------------------------------------------------------------
// The page in headless Chromium, in a lab.

const CLUSTER: &str = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: default}, spec: {nodeName: node-a}}
- {apiVersion: v1, kind: Pod, metadata: {name: friend, namespace: default, labels: {app: friend}}, spec: {nodeName: node-b}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: default, labels: {app: web}}, spec: {nodeName: node-b, containers: [{name: w, ports: [{name: http, containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: db, namespace: shop, labels: {app: db}}, spec: {nodeName: node-a, containers: [{name: d, ports: [{name: pg, containerPort: 5432}]}]}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-friends, namespace: default}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'friend'}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: retired}
spec:
  selector: app == 'retired'
  ingress: [{action: Allow}]
"#;

/// Where screenshots go: `target/test-artifacts/ui/` (next to this test's binary).
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/ui-HASH
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("test-artifacts/ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The matrix the page shows: its title cell, column headers and rows, as text; the options of
/// the matrix chooser.
const READ_MATRIX: &str = r#"() => {
  const t = document.getElementById('matrix');
  if (!t.tHead || t.tBodies.length === 0) return null;
  return {
    title: t.tHead.rows[0].cells[0].textContent,
    columns: Array.from(t.tHead.rows[0].cells).slice(1).map(c => c.textContent),
    rows: Array.from(t.tBodies[0].rows).map(r => ({
      from: r.cells[0].textContent,
      cells: Array.from(r.cells).slice(1).map(c => c.textContent),
    })),
    options: Array.from(document.getElementById('which').options).map(o => o.textContent),
    error: document.getElementById('matrix-error').hidden ? null : document.getElementById('matrix-error').textContent,
  };
}"#;

/// Compares every cell the page shows with `reach`'s matrix; returns the cells compared.
fn same_cells(shown: &Value, m: &Value) -> Result<usize, String> {
    let columns: Vec<&str> = shown["columns"]
        .as_array()
        .ok_or("no columns")?
        .iter()
        .map(|c| c.as_str().unwrap_or_default())
        .collect();
    let rows = shown["rows"].as_array().ok_or("no rows")?;
    let mut n = 0;
    for r in rows {
        let from = r["from"].as_str().unwrap_or_default();
        let cells = r["cells"].as_array().ok_or("no cells")?;
        if cells.len() != columns.len() {
            return Err(format!(
                "row {from}: {} cells, {} columns",
                cells.len(),
                columns.len()
            ));
        }
        for (to, cell) in columns.iter().zip(cells) {
            let shown = match cell.as_str() {
                Some("✓") => true,
                Some("✗") => false,
                other => return Err(format!("{from} -> {to}: the cell shows {other:?}")),
            };
            let want = m["allowed"][from][*to]
                .as_bool()
                .ok_or_else(|| format!("{from} -> {to} is not in reach's matrix"))?;
            if shown != want {
                return Err(format!(
                    "{from} -> {to}: the page shows {}, reach says {}",
                    if shown { "allowed" } else { "denied" },
                    if want { "allowed" } else { "denied" }
                ));
            }
            n += 1;
        }
    }
    Ok(n)
}

/// Polls `js` (a function) in the page until it returns a value `check` accepts, for at most
/// `seconds`.
async fn wait_page<T>(
    page: &chromiumoxide::Page,
    what: &str,
    seconds: u64,
    js: &str,
    check: impl Fn(&Value) -> Result<T, String>,
) -> T {
    let end = Instant::now() + Duration::from_secs(seconds);
    loop {
        let v: Value = match page.evaluate_function(js).await {
            Ok(r) => r.into_value().unwrap_or(Value::Null),
            Err(e) => Value::String(format!("evaluation failed: {e}")),
        };
        match check(&v) {
            Ok(t) => return t,
            Err(e) if Instant::now() >= end => panic!("{what}: not after {seconds} s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn screenshot(page: &chromiumoxide::Page, name: &str) {
    use chromiumoxide::page::ScreenshotParams;
    let path = artifacts().join(name);
    match page
        .save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
        .await
    {
        Ok(_) => eprintln!("screenshot: {}", path.display()),
        Err(e) => eprintln!("screenshot {} failed: {e}", path.display()),
    }
}

/// Clicks the matrix cell of row `row` and column `col` (0-based, headers not counted).
async fn click_cell(page: &chromiumoxide::Page, row: usize, col: usize) {
    let selector = format!(
        "#matrix tbody tr:nth-child({}) td:nth-child({})",
        row + 1,
        col + 2
    );
    page.find_element(selector.as_str())
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Selects option `value` of the select `id` as a user does (a change event follows).
async fn choose(page: &chromiumoxide::Page, id: &str, value: &str) {
    let js = format!(
        "() => {{ const s = document.getElementById({id:?}); s.value = {value:?}; s.dispatchEvent(new Event('change')); return s.value; }}"
    );
    let got: Value = page
        .evaluate_function(js.as_str())
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(got, value, "{id} has no option {value:?}");
}

/// What the page must show for the lab: checked step by step (see the module documentation).
fn check_page(lab_dir: String, ds: String) -> impl FnOnce(chromiumoxide::Page) -> Checks {
    move |page| Box::pin(check_lab_page(page, lab_dir, ds))
}

async fn check_lab_page(page: chromiumoxide::Page, lab_dir: String, ds: String) {
    // 1. Every matrix the page offers, every cell, against reach (one matrix per declared port).
    let cli = reach(&ds, None);
    assert!(cli.len() >= 2, "the lab declares two ports: {cli:#?}");
    let titles: Vec<String> = cli
        .iter()
        .map(|m| format!("{}/{}", m["protocol"].as_str().unwrap(), m["port"]))
        .collect();
    wait_page(&page, "the matrix on the page", 20, READ_MATRIX, |v| {
        if v.is_null() {
            return Err("no table yet".into());
        }
        if v["options"] != json!(titles) {
            return Err(format!(
                "the matrices offered are {} (want {titles:?})",
                v["options"]
            ));
        }
        Ok(())
    })
    .await;
    screenshot(&page, "lab-matrix.png").await;
    for (i, m) in cli.iter().enumerate() {
        choose(&page, "which", &i.to_string()).await;
        let want_title = format!("from \\ to {}", titles[i]);
        let n = wait_page(&page, "the chosen matrix", 10, READ_MATRIX, |v| {
            if v["title"] != want_title.as_str() {
                return Err(format!("the table is {}", v["title"]));
            }
            let want_eps = &m["endpoints"];
            if v["columns"] != *want_eps
                || v["rows"]
                    .as_array()
                    .map(|r| r.iter().map(|r| r["from"].clone()).collect::<Vec<_>>())
                    != want_eps.as_array().cloned()
            {
                return Err(format!("rows/columns {v} are not reach's {want_eps}"));
            }
            same_cells(v, m)
        })
        .await;
        let eps = m["endpoints"].as_array().unwrap().len();
        assert_eq!(n, eps * eps, "{}: cells compared", titles[i]);
        eprintln!("{}: all {n} cells on the page are reach's", titles[i]);
    }

    // 2. The namespace filter: shop's endpoints only, with reach's cells.
    choose(&page, "namespace", "shop").await;
    wait_page(&page, "the shop namespace's matrix", 10, READ_MATRIX, |v| {
        let cols = v["columns"].as_array().ok_or("no table")?;
        if cols.is_empty()
            || !cols
                .iter()
                .all(|c| c.as_str().is_some_and(|c| c.starts_with("shop/")))
        {
            return Err(format!("columns {cols:?}"));
        }
        let i = cli
            .iter()
            .position(|m| {
                v["title"]
                    == format!(
                        "from \\ to {}/{}",
                        m["protocol"].as_str().unwrap(),
                        m["port"]
                    )
                    .as_str()
            })
            .ok_or("title")?;
        same_cells(v, &cli[i])
    })
    .await;
    screenshot(&page, "lab-namespace.png").await;
    choose(&page, "namespace", "").await;

    // 3. Click the denied cell client -> web on port 80: explain's text for that flow.
    let i80 = titles
        .iter()
        .position(|t| t == "TCP/80")
        .expect("a TCP/80 matrix");
    choose(&page, "which", &i80.to_string()).await;
    let (from, to) = ("default/client", "default/web");
    assert_eq!(
        cli[i80]["allowed"][from][to], false,
        "{from} -> {to} must be denied"
    );
    let shown = wait_page(&page, "the port 80 matrix", 10, READ_MATRIX, |v| {
        if v["title"] == "from \\ to TCP/80" && v["columns"].as_array().is_some_and(|c| c.len() > 2)
        {
            Ok(v.clone())
        } else {
            Err(format!("{v}"))
        }
    })
    .await;
    let col = shown["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c == to)
        .unwrap();
    let row = shown["rows"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["from"] == from)
        .unwrap();
    click_cell(&page, row, col).await;
    let explained = common::explain(&ds, from, to, 80);
    let cause = common::explain_cause(&explained);
    let read_explain = r#"() => ({
        title: document.getElementById('explain-title').textContent,
        cause: document.getElementById('explain-cause').textContent,
        text: document.getElementById('explain-text').textContent,
        error: document.getElementById('explain-error').hidden ? null : document.getElementById('explain-error').textContent,
    })"#;
    let got = wait_page(
        &page,
        "the explanation of the clicked cell",
        10,
        read_explain,
        |v| {
            if v["text"].as_str().is_some_and(|t| !t.is_empty()) {
                Ok(v.clone())
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;
    screenshot(&page, "lab-explain.png").await;
    assert_eq!(got["title"], format!("TCP/80 from {from} to {to}").as_str());
    assert_eq!(
        got["text"],
        explained.as_str(),
        "the page's explanation is not explain's"
    );
    assert!(
        got["text"].as_str().unwrap().contains(&cause)
            && got["cause"].as_str().unwrap().starts_with("DENIED: "),
        "{got}"
    );

    // 4. The lint findings: each of `gingham lint -o json`'s, by code and resource.
    let lint = common::gingham_in(&["lint", "-o", "json", "--datastore", &ds], None);
    let lint: Value = serde_json::from_slice(&lint.stdout).unwrap();
    let findings: Vec<(String, String)> = lint["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        findings
            .iter()
            .any(|(c, _)| c == "selector-matches-nothing"),
        "{lint:#}"
    );
    let read_lint = r#"() => Array.from(document.querySelectorAll('#lint tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))"#;
    wait_page(&page, "the lint findings", 15, read_lint, |v| {
        let rows: Vec<(String, String)> = v
            .as_array()
            .ok_or("no rows")?
            .iter()
            .map(|r| {
                (
                    r[1].as_str().unwrap_or_default().to_owned(),
                    r[2].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if rows == findings {
            Ok(())
        } else {
            Err(format!("the page lists {rows:?}, lint {findings:?}"))
        }
    })
    .await;

    // 5. A blocked try appears in the denied flows, with the flow log's (and explain's) cause.
    let since = jiff::Timestamp::now();
    assert_eq!(
        common::try_outcome(&lab_dir, from, to, "TCP", 80),
        "no-answer",
        "{from} -> {to}:80 must be dropped"
    );
    let read_flows = r#"() => Array.from(document.querySelectorAll('#flows tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))"#;
    let row = wait_page(
        &page,
        "the blocked try in the denied flows",
        10,
        read_flows,
        |v| {
            v.as_array()
                .ok_or("no rows")?
                .iter()
                .find(|r| {
                    r[2].as_str()
                        .is_some_and(|s| s.starts_with(&format!("{from} (")))
                        && r[3]
                            .as_str()
                            .is_some_and(|s| s.starts_with(&format!("{to} (")))
                        && r[4] == "TCP/80"
                        && r[0]
                            .as_str()
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .is_some_and(|t| t >= since)
                })
                .cloned()
                .ok_or_else(|| format!("rows: {v}"))
        },
    )
    .await;
    screenshot(&page, "lab-flows.png").await;
    let record = common::flows(&lab_dir, true)
        .into_iter()
        .find(|r| common::flow_is(r, from, to, 80, since))
        .expect("the try's record in gingham flows --denied");
    assert_eq!(
        row[5], record["cause"],
        "the page's cause is not the flow log's"
    );
    assert_eq!(row[5], cause.as_str(), "the page's cause is not explain's");

    // 6. A policy change shows without a reload: every cell of the matrix is reach's again, and
    // the clicked cell's explanation is explain's new one.
    common::ok_in(
        &["apply", "-f", "-", "--datastore", &ds],
        Some(ALLOW_CLIENT),
    );
    let after = reach(&ds, None);
    let m80 = &after[i80];
    assert_eq!(m80["allowed"][from][to], true, "{ALLOW_CLIENT}");
    let n = wait_page(
        &page,
        "the matrix after a policy change",
        15,
        READ_MATRIX,
        |v| {
            if v["title"] != "from \\ to TCP/80" {
                return Err(format!("the table is {}", v["title"]));
            }
            same_cells(v, m80)
        },
    )
    .await;
    let explained = common::explain(&ds, from, to, 80);
    let got = wait_page(
        &page,
        "the clicked cell's explanation after a policy change",
        10,
        read_explain,
        |v| {
            if v["text"] == explained.as_str() {
                Ok(v.clone())
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;
    screenshot(&page, "lab-after-change.png").await;
    assert!(
        got["cause"].as_str().unwrap().starts_with("ALLOWED: "),
        "{got}"
    );
    eprintln!("after the policy change: all {n} cells on the page are reach's");
}

/// The fix of step 6: the client (no app label) may reach web on port 80.
const ALLOW_CLIENT: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-client, namespace: default}\nspec:\n  selector: app == 'web'\n  ingress: [{action: Allow, protocol: TCP, source: {selector: '!has(app)'}, destination: {ports: [80]}}]\n";

/// The checks run on a page.
type Checks = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Opens `url` in headless Chromium and runs `checks` on the page; takes a screenshot
/// (`TAG-failure.png`) if they fail, and closes Chromium in any case before failing the test.
fn in_chromium(
    chromium: &Path,
    url: &str,
    tag: &str,
    checks: impl FnOnce(chromiumoxide::Page) -> Checks,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let outcome = runtime.block_on(async {
        use chromiumoxide::browser::{Browser, BrowserConfig};
        use futures::StreamExt as _;
        let config = BrowserConfig::builder()
            .chrome_executable(chromium)
            .no_sandbox()
            .arg("--disable-gpu")
            .window_size(1400, 1000)
            // The page as large as the window (not the client's default 800 x 600).
            .viewport(None)
            .user_data_dir(profile.path())
            // A busy CI machine runs many tests beside this one.
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (mut browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
        // The connection's events; a message this client does not know is skipped.
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page(url).await.expect("the page opens");
        let outcome = tokio::spawn(checks(page.clone())).await;
        if outcome.is_err() {
            screenshot(&page, &format!("{tag}-failure.png")).await;
        }
        let _ = browser.close().await;
        let _ = browser.wait().await;
        events.abort();
        outcome
    });
    drop(runtime);
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("the checks did not finish: {e}"),
        }
    }
}

#[test]
fn sys_web_view_in_headless_chromium_shows_the_lab() {
    gingham_testkit::require_root();
    let chromium = gingham_testkit::require_tool("chromium");
    Fabric::Flat.require();
    let lab = common::flat_lab("w", "{nodes: [node-a, node-b]}", CLUSTER);
    common::wait_programmed(&lab.dir);
    let ui = UiServer::start(&lab.ds, &["--lab", &lab.dir]);
    eprintln!(
        "web view: {} (screenshots in {})",
        ui.url,
        artifacts().display()
    );

    in_chromium(
        &chromium,
        &ui.url,
        "lab",
        check_page(lab.dir.clone(), lab.ds.clone()),
    );
    drop(ui);
    common::down_leaves_nothing(&lab);
}

/// At the cap (300 endpoints in one namespace) the page shows the whole matrix in good time,
/// every one of its 90,000 cells reach's, and a click still explains a cell.
#[test]
fn sys_web_view_shows_a_matrix_at_the_cap_in_headless_chromium() {
    let chromium = gingham_testkit::require_tool("chromium");
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    common::ok_in(
        &["apply", "-f", "-", "--datastore", &ds],
        Some(&namespaces_of(300, 20)),
    );
    let ui = UiServer::start(&ds, &["--run-dir", dir.path().to_str().unwrap()]);
    let full = reach(&ds, Some(80)).remove(0);
    let started = Instant::now();
    let url = format!("{}?port=80&namespace=big", ui.url);
    in_chromium(&chromium, &url, "cap", move |page| {
        Box::pin(async move {
            let (n, shown) =
                wait_page(&page, "the matrix of 300 endpoints", 60, READ_MATRIX, |v| {
                    match v["columns"].as_array() {
                        Some(c) if c.len() == 300 => same_cells(v, &full).map(|n| (n, v.clone())),
                        _ => Err(format!(
                            "{} columns",
                            v["columns"].as_array().map_or(0, Vec::len)
                        )),
                    }
                })
                .await;
            assert_eq!(n, 300 * 300);
            let took = started.elapsed();
            eprintln!("the page showed a matrix of 300 endpoints {took:?} after it was opened");
            assert!(took < Duration::from_secs(60), "{took:?}");
            screenshot(&page, "cap-matrix.png").await;
            // A denied cell far down and right: its explanation.
            let columns = shown["columns"].as_array().unwrap();
            let (row, col) = (0..300)
                .rev()
                .flat_map(|r| (0..300).rev().map(move |c| (r, c)))
                .find(|&(r, c)| shown["rows"][r]["cells"][c] == "✗")
                .expect("a denied cell");
            let (from, to) = (
                shown["rows"][row]["from"].as_str().unwrap(),
                columns[col].as_str().unwrap(),
            );
            click_cell(&page, row, col).await;
            let explained = common::explain(&ds, from, to, 80);
            let text = wait_page(
                &page,
                "the explanation",
                20,
                r#"() => document.getElementById('explain-text').textContent"#,
                |v| {
                    v.as_str()
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{v}"))
                },
            )
            .await;
            assert_eq!(text, explained);
        })
    });
}

/// A datastore that cannot be read is shown on the page, in words, where the matrix and the
/// findings would be, and the denied flows (read from files) are still shown; once the
/// datastore answers, the page shows the matrix and the findings without a reload.
#[test]
fn sys_web_view_shows_a_dead_datastore_and_its_return_in_headless_chromium() {
    let chromium = gingham_testkit::require_tool("chromium");
    let dir = tempfile::tempdir().unwrap();
    // The datastore's directory is a plain file: SQLite cannot open it.
    let blocker = dir.path().join("store");
    std::fs::write(&blocker, "").unwrap();
    let ds = format!("sqlite:{}", blocker.join("g.db").display());
    let ui = UiServer::start(&ds, &["--run-dir", dir.path().to_str().unwrap()]);
    let read = r#"() => ({
        matrix: document.getElementById('matrix-error').hidden ? null : document.getElementById('matrix-error').textContent,
        lint: document.getElementById('lint-error').hidden ? null : document.getElementById('lint-error').textContent,
        flows: document.getElementById('flows-none').hidden ? null : document.getElementById('flows-none').textContent,
        cells: document.querySelectorAll('#matrix td').length,
        findings: document.querySelectorAll('#lint tbody tr').length,
    })"#;
    let want = format!("cannot read the datastore: cannot open the datastore {ds}");
    in_chromium(
        &chromium,
        &format!("{}?port=80", ui.url),
        "dead",
        move |page| {
            Box::pin(async move {
                wait_page(&page, "the datastore's error on the page", 20, read, |v| {
                    let shown = |k: &str| v[k].as_str().is_some_and(|t| t.starts_with(&want));
                    if shown("matrix")
                        && shown("lint")
                        && v["flows"] == "No denied flows logged."
                        && v["cells"] == 0
                    {
                        Ok(())
                    } else {
                        Err(format!("{v}"))
                    }
                })
                .await;
                screenshot(&page, "dead-datastore.png").await;

                // The datastore comes back, with seed 000's cluster (one error finding).
                std::fs::remove_file(&blocker).unwrap();
                common::ok_in(
                    &[
                        "apply",
                        "-f",
                        &example("reach/nodes-without-host-endpoints.yaml"),
                        "--datastore",
                        &ds,
                    ],
                    None,
                );
                let full = reach(&ds, Some(80));
                let eps = full[0]["endpoints"].as_array().unwrap().len();
                wait_page(
                    &page,
                    "the matrix once the datastore answers",
                    20,
                    read,
                    |v| {
                        if v["matrix"].is_null()
                            && v["lint"].is_null()
                            && v["cells"] == eps * eps
                            && v["findings"] == 1
                        {
                            Ok(())
                        } else {
                            Err(format!("{v}"))
                        }
                    },
                )
                .await;
                let shown = wait_page(&page, "the matrix", 5, READ_MATRIX, |v| {
                    same_cells(v, &full[0])
                })
                .await;
                assert_eq!(shown, eps * eps);
                screenshot(&page, "datastore-back.png").await;
            })
        },
    );
}
