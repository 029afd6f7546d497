//! The `quiver` command line: what users run (`demo`, `bench`, `stat`,
//! `produce`, `consume`, `checkpoint`), and two hidden subcommands that are
//! parts of those commands: `demo-worker` (a consumer process of the demo)
//! and `bench-worker` (a consumer process of the benchmark). Test machinery
//! is elsewhere: the `quiver-harness` crate.
//!
//! `quiver kafka` needs the `kafka` feature (librdkafka, built from C):
//! without it the subcommand is there but says how to get it.
//!
//! - `demo.rs`: `quiver demo` and its consumer;
//! - `bench.rs`: `quiver bench`, its consumers and its latency histogram;
//! - `stat.rs`: `quiver stat`;
//! - `io.rs`: `produce` and `consume` (Arrow IPC and CSV in, Arrow IPC out);
//! - `checkpoint.rs`: `quiver checkpoint show`;
//! - `kafka.rs`: `quiver kafka source`;
//! - `files.rs`: `quiver ls` and `quiver rm`;
//! - `signals.rs`: the stop flag that Ctrl-C sets;
//! - `supervisor.rs`: the worker processes of demo, bench, train (and the
//!   harness's chaos): spawn, handshake, lines, kill on drop;
//! - `guard.rs`: store files removed however a command ends.

mod bench;
mod checkpoint;
mod demo;
mod files;
mod guard;
mod io;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
mod kafka_latency;
pub mod signals;
mod stat;
pub mod supervisor;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver::{OpenConfig, Store};

/// What `quiver --help` says about the `kafka` feature.
#[cfg(feature = "kafka")]
const KAFKA_NOTE: &str = "Kafka: this build has `quiver kafka` (the `kafka` feature).";
#[cfg(not(feature = "kafka"))]
const KAFKA_NOTE: &str =
    "Kafka: `quiver kafka` needs the `kafka` feature: cargo build --release -p quiver-cli --features kafka";

/// quiver: a shared-memory producer/consumer runtime for single-host,
/// multi-process online learning.
#[derive(Parser, Debug)]
#[command(name = "quiver", version, about, after_help = KAFKA_NOTE)]
pub struct Cli {
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
    /// List the stores in /dev/shm: name, owner, size, live clients.
    Ls(files::LsArgs),
    /// Remove stores (refusing what is not a store, and stores in use
    /// unless --force).
    Rm(files::RmArgs),
    /// Append the batches of an Arrow IPC or CSV file to a stream
    /// (creating the store and the stream if needed).
    Produce(io::ProduceArgs),
    /// Write what a consumer group reads from a stream to an Arrow IPC file.
    Consume(io::ConsumeArgs),
    /// Work with shard-manager checkpoint files.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Kafka in: a topic appended to a stream, with end-to-end
    /// at-least-once offsets.
    #[cfg(feature = "kafka")]
    #[command(subcommand)]
    Kafka(kafka::KafkaCommand),
    /// Kafka in and out (not in this build: rebuild with `--features kafka`).
    #[cfg(not(feature = "kafka"))]
    Kafka(NoKafka),
    /// Train SGD regression on a stream's columns (alone as a group member,
    /// or N worker processes on one shared model); the model to a file.
    Train(train::TrainArgs),
    /// A saved model's predictions for an Arrow IPC or CSV file or a
    /// stream, and its score (R², MSE) where the target column is there.
    Predict(train::PredictArgs),
    /// Measure `quiver train`'s rows per second on the demo's data, alone
    /// and with 1, 2, 4 workers sharing one model.
    BenchTrain(train::BenchTrainArgs),
    /// A worker process of `quiver train --workers` (train starts these).
    #[command(hide = true)]
    TrainWorker(train::WorkerArgs),
    /// A consumer process of `quiver demo` (the demo starts these).
    #[command(hide = true)]
    DemoWorker(demo::WorkerArgs),
    /// A consumer process of `quiver bench` (the benchmark starts these).
    #[command(hide = true, subcommand)]
    BenchWorker(bench::Worker),
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    // Like any Unix tool, output to a closed pipe (`quiver bench | head`)
    // ends the command quietly: the panic of a print to a closed stdout is
    // not reported, and unwinding it runs the guards (workers killed, a
    // run's store removed) before the command exits.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !closed_stdout(info.payload()) {
            report(info);
        }
    }));
    let cli = Cli::parse();
    let run = || match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Stat(args) => stat::run(args),
        Command::Ls(args) => files::ls(args),
        Command::Rm(args) => files::rm(args),
        Command::Checkpoint(command) => checkpoint::run(command),
        #[cfg(feature = "kafka")]
        Command::Kafka(command) => kafka::run(command),
        #[cfg(not(feature = "kafka"))]
        Command::Kafka(args) => args.run(),
        Command::Train(args) => train::run(args),
        Command::BenchTrain(args) => train::bench(args),
        Command::Predict(args) => train::predict(args),
        Command::TrainWorker(args) => train::work(args),
        Command::Produce(args) => io::produce(args),
        Command::Consume(args) => io::consume(args),
        Command::DemoWorker(args) => demo::consume(args),
        Command::BenchWorker(worker) => bench::work(worker),
    };
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(result) => result,
        // 128 + SIGPIPE, as a shell reports a command a closed pipe ended.
        Err(payload) if closed_stdout(payload.as_ref()) => return ExitCode::from(141),
        Err(payload) => std::panic::resume_unwind(payload),
    };
    if supervisor::worker::is_worker() {
        guard::worker_exits();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quiver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `quiver kafka ...` in a build without the `kafka` feature: takes any
/// arguments and says how to get a build with it.
#[cfg(not(feature = "kafka"))]
#[derive(clap::Args, Debug)]
pub struct NoKafka {
    /// What was given after `kafka`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[cfg(not(feature = "kafka"))]
impl NoKafka {
    fn run(self) -> anyhow::Result<()> {
        anyhow::bail!(
            "this quiver was built without Kafka support (it needs librdkafka, built from C); \
             rebuild with `cargo build --release -p quiver-cli --features kafka` \
             (or run `cargo run --release --features kafka -- kafka ...`)"
        )
    }
}

/// A stream consumer group of a store: the arguments of the commands that
/// read as one (`consume`, `kafka sink`).
#[derive(clap::Args, Debug)]
pub(crate) struct GroupArgs {
    /// The store.
    #[arg(long)]
    pub(crate) store: String,
    /// The stream.
    #[arg(long)]
    pub(crate) stream: String,
    /// The consumer group to read as.
    #[arg(long)]
    pub(crate) group: String,
}

/// A number of seconds that is finite and above zero (clap's value parser
/// for durations given as floats).
pub(crate) fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 1e9 => Ok(s),
        Ok(_) => Err(format!("{text} is not a number of seconds above zero")),
        Err(e) => Err(format!("{text}: {e}")),
    }
}

/// Whether a panic is a print to a stdout whose reader is gone.
fn closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
    text.is_some_and(|t| t.starts_with("failed printing to stdout") && t.contains("Broken pipe"))
}

/// A rate in batches per second: finite, 0 (as fast as possible) or above.
pub(crate) fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        Ok(_) => Err(format!("{text} is not a rate: a finite number of batches per second, 0 or more")),
        Err(e) => Err(format!("{text}: {e}")),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn help_says_how_kafka_is_had() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Kafka:") && help.contains("kafka"), "{help}");
    }

    /// Without the feature, `quiver kafka ...` takes any arguments and
    /// fails saying how to get a build with Kafka.
    #[cfg(not(feature = "kafka"))]
    #[test]
    fn kafka_without_the_feature_says_how_to_get_it() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["quiver", "kafka", "source", "--brokers", "x:1"]).expect("any arguments parse");
        let super::Command::Kafka(args) = cli.command else { panic!("not the kafka command") };
        let error = args.run().expect_err("no Kafka in this build").to_string();
        assert!(error.contains("--features kafka"), "{error}");
    }
}
