//! What the tests share: `quiver_harness::procs` (unique store names,
//! child processes with deadlines) and the helpers' byte pattern.

#![allow(unused_imports)]

pub use quiver_harness::pattern;
pub use quiver_harness::procs::*;
