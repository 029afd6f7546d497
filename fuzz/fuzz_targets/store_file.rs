//! The store file's header and tables: a small store, mutated by the input,
//! then opened and used through every layer.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_harness::fuzz::store_patches(data));
