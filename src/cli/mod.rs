//! The `quiver` command line: user commands (`stat`) and the hidden helper
//! commands (`debug …`) that tests and benchmarks run as separate processes.

mod bench;
mod chaos;
mod checkpoint;
mod debug;
mod demo;
mod io;
mod signals;
mod stat;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver::{OpenConfig, Store};

/// quiver: a shared-memory producer/consumer runtime for single-host,
/// multi-process online learning.
#[derive(Parser, Debug)]
#[command(name = "quiver", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job: a producer and consumer processes exchanging objects
    /// through a fresh store, with a report of what each consumer read.
    Demo(demo::DemoArgs),
    /// Measure a producer and N consumer processes moving Arrow batches
    /// (or, with --baseline socket, the same over Unix sockets).
    Bench(bench::BenchArgs),
    /// Print a store's state: capacity, usage, clients, objects, streams
    /// and shard-managed groups.
    Stat(stat::StatArgs),
    /// Append the batches of an Arrow IPC or CSV file to a stream
    /// (creating the store and the stream if needed).
    Produce(io::ProduceArgs),
    /// Write what a consumer group reads from a stream to an Arrow IPC file.
    Consume(io::ConsumeArgs),
    /// Proof under faults: processes killed at random, disasters restored
    /// from checkpoints, and a check that nothing was lost or leaked.
    Chaos(chaos::ChaosArgs),
    /// Work with shard-manager checkpoint files.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Helper processes for tests and benchmarks.
    #[command(hide = true, subcommand)]
    Debug(debug::DebugCommand),
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Stat(args) => stat::run(args),
        Command::Checkpoint(command) => checkpoint::run(command),
        Command::Produce(args) => io::produce(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Consume(args) => io::consume(args),
        Command::Debug(command) => debug::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quiver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The wait strategy that `--spin-us N` asks for: park at once for 0, else
/// spin up to N microseconds first.
pub(crate) fn wait_strategy(spin_us: u64) -> quiver::WaitStrategy {
    match spin_us {
        0 => quiver::WaitStrategy::Park,
        us => quiver::WaitStrategy::SpinThenPark { budget: std::time::Duration::from_micros(us) },
    }
}

/// Which store a command works on: a name in /dev/shm, or a path.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StoreArg {
    /// The store's name (its file is /dev/shm/quiver-NAME).
    #[arg(required_unless_present = "path", conflicts_with = "path")]
    name: Option<String>,
    /// The store's file, anywhere (instead of a name).
    #[arg(long)]
    path: Option<std::path::PathBuf>,
    /// Open a store that belongs to another user.
    #[arg(long)]
    allow_other_owner: bool,
}

impl StoreArg {
    pub(crate) fn open(&self) -> anyhow::Result<Store> {
        let config = match &self.path {
            Some(path) => OpenConfig::at_path(path),
            // clap requires the name when no path is given.
            None => OpenConfig::new(self.name.as_deref().unwrap_or_default()),
        };
        Ok(Store::open_with(config.allow_other_owner(self.allow_other_owner))?)
    }
}
