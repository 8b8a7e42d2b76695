//! Runs the `selector_parse` fuzz target's checks over every input in its corpus, so the
//! corpus is exercised on stable Rust in every test run.

use std::path::PathBuf;

#[test]
fn fuzz_corpus_keeps_the_invariants() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/selector_parse");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the fuzz corpus {}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| gingham_selector::fuzzing::check(&data));
        assert!(outcome.is_ok(), "fuzz check failed on {}", path.display());
        count += 1;
    }
    assert!(
        count >= 30,
        "expected at least 30 corpus inputs in {}, found {count}",
        dir.display()
    );
}
