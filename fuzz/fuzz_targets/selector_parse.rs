#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Filled in with the selector crate's fuzz check.
    let _ = data;
});
