//! Arbitrary `engine::Log` operations with reopens and crashes, against a model
//! (`sluice_fuzz::log_model`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::log_model::run(data);
});
