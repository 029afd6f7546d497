//! Checkpoint files: parsed, and re-encoded if they parse.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_harness::fuzz::checkpoint_bytes(data));
