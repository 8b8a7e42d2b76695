//! Fuzzes resource loading: any input must load or fail with errors, never panic, and whatever
//! loads must serialise to YAML and JSON and load back to equal resources.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gingham_model::fuzzing::check(data);
});
