//! The rendered tables are accepted by the real `nft` (in a test-made namespace) for every
//! policy case of the engine's data-driven tests, and applying twice replaces atomically.
//! System tests: root and nftables.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gingham_calc::Snapshot;
use gingham_calc::input::prepare_documents;
use gingham_dataplane::{Settings, render};
use gingham_testkit::netns::TestNetns;

fn load_case(dir: &Path) -> Snapshot {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut resources = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut docs = gingham_model::load::parse_documents(&text).unwrap();
        prepare_documents(&mut docs);
        let json: Vec<String> = docs.iter().map(ToString::to_string).collect();
        let loaded = gingham_model::load(&f.display().to_string(), &json.join("\n")).unwrap();
        resources.extend(loaded.into_iter().flat_map(|d| d.resources));
    }
    Snapshot::build(&resources)
}

fn nft_in(ns: &TestNetns, script: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn sys_every_case_renders_to_a_table_nft_accepts() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../calc/tests/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10);
    let ns = TestNetns::new("nft");
    for dir in dirs {
        let snap = load_case(&dir);
        let program = snap.node_program(None);
        let rendered = render(&program, &Settings::default());
        for _ in 0..2 {
            let out = nft_in(&ns, &rendered.script);
            assert!(
                out.status.success(),
                "{}: {}\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr),
                rendered.script
            );
        }
        let listed = ns.exec_ok(&["nft", "list", "table", "inet", "gingham"]);
        assert!(listed.contains("chain forward"), "{listed}");
    }
}
