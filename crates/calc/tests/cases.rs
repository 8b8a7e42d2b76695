//! Data-driven verdict tests. Each directory under `tests/cases/` holds resources (`*.yaml`,
//! Calico and Kubernetes objects), `flows.txt` (one flow per line: `FROM -> TO PROTO [PORT]`,
//! `#` comments) and `expected.txt` (each flow line followed by ` => ` and the verdict summary).
//! `UPDATE_EXPECT=1 cargo test -p gingham-calc --test cases` rewrites the expectations (review
//! the diff: expectations are claims about Calico's behaviour). To read the explanation of one
//! flow of a case: `gingham explain -f crates/calc/tests/cases/CASE --from FROM --to TO --port P`.

use std::path::{Path, PathBuf};

use gingham_calc::eval::{Flow, PeerSpec, parse_protocol};
use gingham_calc::explain;

#[path = "support/load_case.rs"]
mod load_case;
use load_case::load_case;

fn parse_flow(line: &str) -> Flow {
    let (from, rest) = line.split_once("->").expect("FROM -> TO PROTO [PORT]");
    let mut words = rest.split_whitespace();
    let to = words.next().expect("destination");
    let proto = parse_protocol(words.next().expect("protocol")).expect("known protocol");
    let port = words.next().map(|p| p.parse::<u16>().expect("port number"));
    Flow {
        src: PeerSpec::parse(from.trim()),
        dst: PeerSpec::parse(to),
        protocol: proto,
        port,
        src_port: None,
        icmp: None,
        ipv6: false,
    }
}

#[test]
fn verdicts_match_expectations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases in {}", root.display());
    let mut failures = Vec::new();
    for dir in dirs {
        let snap = load_case(&dir);
        let flows = std::fs::read_to_string(dir.join("flows.txt")).unwrap();
        let mut got = String::new();
        for line in flows
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let flow = parse_flow(line);
            let v = snap
                .verdict(&flow)
                .unwrap_or_else(|e| panic!("{}: {line}: {e}", dir.display()));
            // Every verdict must also explain itself without panicking.
            let text = explain::render(&snap, &v);
            assert!(!text.is_empty());
            got.push_str(&format!("{line} => {}\n", v.summary()));
        }
        let path = dir.join("expected.txt");
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "case {}:\n--- expected\n{want}--- got\n{got}",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
