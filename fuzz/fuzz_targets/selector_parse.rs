//! Fuzzes the selector parser: any input must either fail with a well-formed error or parse to
//! a selector whose canonical form round-trips and whose matching does not panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gingham_selector::fuzzing::check(data);
});
