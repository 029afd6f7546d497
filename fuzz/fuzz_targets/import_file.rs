//! Files given to `quiver produce --from`: Arrow IPC (file or stream format) or CSV.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_harness::fuzz::import_file(data));
