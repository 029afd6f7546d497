//! `quiver-harness`: the test machinery that does not ship with `quiver`.
//! `chaos` (processes killed at random, disasters restored from
//! checkpoints, and a check that nothing was lost or leaked) and the helper
//! processes that the multi-process tests and benchmarks start (see
//! `helpers.rs`). Never shipped: tests find it beside their own binary
//! (`quiver_harness::procs::binary`).

mod chaos;
mod helpers;

// The same stop flag as `quiver demo`'s.
use quiver_cli::signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// quiver's test harness: chaos runs and helper processes for the tests and
/// benchmarks. Not part of the product.
#[derive(Parser, Debug)]
#[command(name = "quiver-harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Proof under faults: processes killed at random, disasters restored
    /// from checkpoints, and a check that nothing was lost or leaked.
    Chaos(chaos::ChaosArgs),
    #[command(flatten)]
    Helper(helpers::Helper),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Chaos(args) => chaos::run(args),
        Command::Helper(helper) => helpers::run(helper),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quiver-harness: {e:#}");
            ExitCode::FAILURE
        }
    }
}
