//! Loading one of the engine's data-driven policy cases; shared by calc's `cases` test and the
//! dataplane's tests (included by `#[path]`).

use std::path::{Path, PathBuf};

use gingham_calc::Snapshot;
use gingham_calc::input::prepare_documents;

/// The snapshot of a policy case: every `*.yaml` file of its directory, in name order.
pub fn load_case(dir: &Path) -> Snapshot {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut resources = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut docs = gingham_model::load::parse_documents(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        prepare_documents(&mut docs);
        let json: Vec<String> = docs.iter().map(ToString::to_string).collect();
        let loaded = gingham_model::load(&f.display().to_string(), &json.join("\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        resources.extend(loaded.into_iter().flat_map(|d| d.resources));
    }
    Snapshot::build(&resources)
}
