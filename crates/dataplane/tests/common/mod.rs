//! Helpers shared by the dataplane's integration tests.

use std::path::{Path, PathBuf};

use gingham_calc::Snapshot;
use gingham_calc::input::prepare_documents;
use gingham_calc::program::NodeProgram;
use gingham_dataplane::Settings;

/// The snapshot of one of the engine's data-driven policy cases (a directory of YAML files).
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
        let mut docs = gingham_model::load::parse_documents(&text).unwrap();
        prepare_documents(&mut docs);
        let json: Vec<String> = docs.iter().map(ToString::to_string).collect();
        let loaded = gingham_model::load(&f.display().to_string(), &json.join("\n")).unwrap();
        resources.extend(loaded.into_iter().flat_map(|d| d.resources));
    }
    Snapshot::build(&resources)
}

/// Every policy case of the engine's data-driven tests: its directory, the programs of all its
/// endpoints, and the settings its FelixConfiguration gives.
pub fn case_programs() -> Vec<(PathBuf, NodeProgram, Settings)> {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../calc/tests/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10);
    dirs.into_iter()
        .map(|dir| {
            let snap = load_case(&dir);
            let program = snap.node_program(None);
            let settings = Settings {
                felix: snap.felix.clone(),
                ..Settings::default()
            };
            (dir, program, settings)
        })
        .collect()
}
