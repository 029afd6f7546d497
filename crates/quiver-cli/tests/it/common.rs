//! What the tests share: `quiver_harness::procs` (unique store names,
//! child processes with deadlines) and the helpers' byte pattern.

#![allow(unused_imports)]

pub use quiver_harness::pattern;
pub use quiver_harness::procs::*;

/// `quiver train` of stream `s`, group `g`, `y` on `x`, from `store` into
/// `model`: the arguments (more may be pushed).
pub fn train_args<'a>(store: &'a str, model: &'a str) -> Vec<&'a str> {
    let mut args = vec!["train", "--store", store, "--stream", "s", "--group", "g"];
    args.extend(["--features", "x", "--target", "y", "--model", model]);
    args
}
