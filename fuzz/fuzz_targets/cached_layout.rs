//! A batch decoded from the reader's cached layout: same header as a
//! verified message, fuzzed null counts and body.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_harness::fuzz::cached_layout(data));
