//! Helpers shared by the dataplane's integration tests.

use std::path::{Path, PathBuf};

use gingham_calc::program::NodeProgram;
use gingham_dataplane::Settings;

#[path = "../../../calc/tests/support/load_case.rs"]
mod load_case;
pub use load_case::load_case;

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
