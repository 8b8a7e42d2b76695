//! Shared helpers for the model tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gingham_model::{LoadedDocument, Resource, load};

/// The fixtures directory.
pub fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

/// Every file in a fixtures sub-directory with the given extension(s), sorted.
pub fn files(sub: &str, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures(sub))
        .unwrap_or_else(|e| panic!("reading fixtures/{sub}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            exts.iter().any(|e| name.ends_with(e)) && !name.contains(".expected.")
        })
        .collect();
    v.sort();
    v
}

/// Loads a file; panics with the load errors.
pub fn load_file(path: &Path) -> Vec<LoadedDocument> {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    load(name, &text).unwrap_or_else(|e| panic!("{name} failed to load:\n{e}"))
}

/// Loads a file and flattens its resources.
pub fn load_resources(path: &Path) -> Vec<Resource> {
    LoadedDocument::all_resources(&load_file(path))
}

/// Loads YAML text; panics with the errors.
pub fn load_text(text: &str) -> Vec<Resource> {
    match load("test.yaml", text) {
        Ok(d) => LoadedDocument::all_resources(&d),
        Err(e) => panic!("load failed:\n{e}\n--- input ---\n{text}"),
    }
}

/// Compares `actual` with the snapshot file `expected`; with `UPDATE_EXPECTED=1` rewrites it.
pub fn assert_snapshot(expected: &Path, actual: &str) {
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(expected, actual).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(expected).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_EXPECTED=1 to create it)",
            expected.display()
        )
    });
    assert_eq!(want, actual, "snapshot {} differs", expected.display());
}
