//! IPC bytes inside a batch object, decoded by the zero-copy reader.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_harness::fuzz::ipc_object(data));
