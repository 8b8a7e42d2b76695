//! The property the `resources_yaml` fuzz target checks, shared with the corpus test.

use crate::load::{LoadedDocument, load};
use crate::resource::{to_json, to_yaml};

/// Loads `data` (if it is UTF-8). Loading must never panic; whatever loads must serialise with
/// [`to_yaml`] and [`to_json`] and load back to equal resources.
///
/// Panics (with the offending text) when the round trip fails, so the fuzzer records it.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = load("fuzz-input", text) else {
        return;
    };
    let resources = LoadedDocument::all_resources(&docs);
    for (what, out) in [("YAML", to_yaml(&resources)), ("JSON", to_json(&resources))] {
        let again = match load("round-trip", &out) {
            Ok(d) => LoadedDocument::all_resources(&d),
            Err(e) => panic!("{what} output does not load back:\n{e}\n--- output ---\n{out}"),
        };
        assert_eq!(
            resources, again,
            "{what} round trip changed the resources\n--- output ---\n{out}"
        );
    }
}
