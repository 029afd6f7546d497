//! Model files (`quiver train`'s JSON): parsed; what parses saves, loads
//! back equal, and trains or refuses a batch without changing.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_harness::fuzz::model_file(data));
