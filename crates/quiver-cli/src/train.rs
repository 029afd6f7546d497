//! `quiver train`: SGD regression on a stream's named columns, the model
//! saved to a JSON file; `quiver predict`: a saved model's predictions for
//! a file or a stream, and its score where the target is there.
//!
//! `train` alone is one member of a consumer group: it trains, and at each
//! checkpoint saves the model, then commits (a crash retrains what was not
//! committed: rows are trained at least once, never lost). With
//! `--workers N` it starts N worker processes (`quiver train-worker`) that
//! split the stream through the shard manager and train one shared model
//! in the store; this process shows the progress and saves the model.

use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quiver::{ConsumerConfig, Outcome, Polled};
use quiver::{ShardConfig, ShardManager, Store, Stream};
use quiver_train::{LearningRate, Loss, Scorer};
use quiver_train::{SavedModel, SgdRegressor, SgdSettings, SharedModel};

use super::supervisor::{worker, Spawn, Supervisor};
use super::GroupArgs;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LossArg {
    #[value(name = "squared_error")]
    SquaredError,
    Huber,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ScheduleArg {
    Constant,
    Invscaling,
    Adaptive,
}

/// The model's settings as flags (scikit-learn's names and defaults).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SettingsArgs {
    /// The loss: squared_error, or huber (robust to outliers, see --epsilon).
    #[arg(long, value_enum, default_value_t = LossArg::SquaredError)]
    loss: LossArg,
    /// Huber: where the loss turns linear.
    #[arg(long, default_value_t = 0.1)]
    epsilon: f64,
    /// The learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Invscaling)]
    learning_rate: ScheduleArg,
    /// The initial learning rate.
    #[arg(long, default_value_t = 0.01)]
    eta0: f64,
    /// invscaling's exponent: eta = eta0 / t^power_t.
    #[arg(long, default_value_t = 0.25)]
    power_t: f64,
    /// The L2 penalty.
    #[arg(long, default_value_t = 0.0001)]
    alpha: f64,
    /// Do not fit an intercept.
    #[arg(long)]
    no_intercept: bool,
    /// adaptive: epochs without improvement before eta is divided by 5.
    #[arg(long, default_value_t = 5)]
    n_iter_no_change: u32,
    /// adaptive: the improvement of an epoch's mean loss that counts.
    #[arg(long, default_value_t = 1e-3)]
    tol: f64,
    /// adaptive: rows per epoch.
    #[arg(long, default_value_t = 10_000)]
    epoch_rows: u64,
}

impl SettingsArgs {
    fn settings(&self) -> Result<SgdSettings> {
        let s = SgdSettings {
            loss: match self.loss {
                LossArg::SquaredError => Loss::SquaredError,
                LossArg::Huber => Loss::Huber { epsilon: self.epsilon },
            },
            learning_rate: match self.learning_rate {
                ScheduleArg::Constant => LearningRate::Constant,
                ScheduleArg::Invscaling => LearningRate::InvScaling,
                ScheduleArg::Adaptive => LearningRate::Adaptive,
            },
            eta0: self.eta0,
            power_t: self.power_t,
            alpha: self.alpha,
            fit_intercept: !self.no_intercept,
            n_iter_no_change: self.n_iter_no_change,
            tol: self.tol,
            epoch_rows: self.epoch_rows,
        };
        s.validate()?;
        Ok(s)
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct TrainArgs {
    /// The stream to train on, and the group to read it as.
    #[command(flatten)]
    from: GroupArgs,
    /// The feature columns, comma-separated (integers and floats).
    #[arg(long, value_delimiter = ',', required = true)]
    features: Vec<String>,
    /// The target column.
    #[arg(long)]
    target: String,
    /// The model file (JSON), written at each checkpoint and at the end.
    #[arg(long)]
    model: PathBuf,
    /// Go on from the model in --model (its settings; the flags' are ignored).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start afresh even though --model exists (it is replaced at the
    /// first checkpoint). Without it, an existing file is refused: the
    /// rows behind it may be committed, and would be in no model.
    #[arg(long)]
    overwrite: bool,
    /// With --workers: remove the shared model the store keeps for this
    /// stream and group (from an earlier run) instead of going on from it.
    #[arg(long)]
    fresh: bool,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Worker processes sharing one model (shard-managed); without it, this
    /// process trains alone as a member of the group.
    #[arg(long)]
    workers: Option<u32>,
    /// With --workers: batches a worker trains between exchanges with the
    /// shared model.
    #[arg(long, default_value_t = 1)]
    sync_every: u32,
    /// Seconds between checkpoints (the model saved, then the group's commit).
    #[arg(long, default_value_t = 10.0, value_parser = super::positive_seconds)]
    checkpoint_secs: f64,
    /// Stop after this many seconds (default: at the end of the stream, or Ctrl-C).
    #[arg(long, value_parser = super::positive_seconds)]
    seconds: Option<f64>,
}

/// `quiver train-worker`: one process of `quiver train --workers`.
#[derive(clap::Args, Debug)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    from: GroupArgs,
    /// The shared model's name in the store.
    #[arg(long)]
    shared: String,
    #[arg(long, default_value_t = 1)]
    sync_every: u32,
}

/// The name of the shared model of `group` on `stream`.
fn shared_name(stream: &str, group: &str) -> String {
    format!("train/{stream}/{group}")
}

/// The model to start from: the file's (`--resume`) or a new one.
fn start_model(args: &TrainArgs) -> Result<SavedModel> {
    if args.resume {
        let saved = SavedModel::load(&args.model)?;
        if saved.features != args.features || saved.target != args.target {
            bail!(
                "{} is a model of {:?} -> {:?}, not {:?} -> {:?}",
                args.model.display(),
                saved.features,
                saved.target,
                args.features,
                args.target
            );
        }
        return Ok(saved);
    }
    // Before any training: a model that cannot be saved is refused now.
    quiver::store::files::check_replaceable(&args.model)?;
    if args.model.exists() && !args.overwrite {
        bail!(
            "{} exists: --resume to go on from it, --overwrite to start afresh (the rows it was trained on \
             may be committed, and would then be in no model)",
            args.model.display()
        );
    }
    let model = SgdRegressor::with_settings(args.settings.settings()?)?;
    Ok(SavedModel::new(model, args.features.clone(), args.target.clone()))
}

/// The progress line: rows, rows/s, the loss since the last line.
struct Progress {
    bar: ProgressBar,
    started: Instant,
    last: (Instant, u64, f64),
}

impl Progress {
    fn new(rows: u64, loss: f64) -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos:>10} rows  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(rows);
        Progress { bar, started: Instant::now(), last: (Instant::now(), rows, loss) }
    }

    /// Every 200 ms: rows, rows/s and the mean loss of the rows since.
    fn update(&mut self, rows: u64, loss: f64) {
        let (at, last_rows, last_loss) = self.last;
        if at.elapsed() < Duration::from_millis(200) {
            return;
        }
        let new_rows = rows.saturating_sub(last_rows);
        let rate = new_rows as f64 / at.elapsed().as_secs_f64();
        let mean = if new_rows == 0 { f64::NAN } else { (loss - last_loss) / new_rows as f64 };
        self.bar.set_position(rows);
        self.bar.set_message(format!("{rate:>10.0} rows/s  loss {mean:.4}"));
        self.last = (Instant::now(), rows, loss);
    }

    fn finish(&self, rows: u64, trained: u64, loss: f64, model: &Path) {
        self.bar.finish_and_clear();
        let seconds = self.started.elapsed().as_secs_f64();
        let mean = if rows == 0 { f64::NAN } else { loss / rows as f64 };
        println!(
            "trained {trained} rows in {seconds:.2} s ({:.0} rows/s), mean loss {mean:.4}; {rows} rows in the model, saved to {}",
            trained as f64 / seconds.max(1e-9),
            model.display()
        );
    }
}

pub(crate) fn run(args: TrainArgs) -> Result<()> {
    super::signals::install();
    if args.features.iter().any(String::is_empty) {
        bail!("--features: a column name is empty");
    }
    let start = start_model(&args)?;
    let store = Store::open(&args.from.store)?;
    let stream = Stream::open(&store, &args.from.stream)?;
    start.check_schema(stream.schema(), true).with_context(|| format!("stream {:?}", args.from.stream))?;
    match args.workers {
        None => train_alone(&args, &stream, start),
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) if n as usize > quiver::shard::MAX_MEMBERS => {
            bail!("--workers {n}: a shard-managed group has at most {} members", quiver::shard::MAX_MEMBERS)
        }
        Some(n) => train_shared(&args, &store, &stream, start, n, None),
    }
}

fn due(started: Instant, seconds: Option<f64>) -> bool {
    seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s)
}

/// One member of the group: train, and at each checkpoint save the model,
/// then commit.
fn train_alone(args: &TrainArgs, stream: &Stream, mut saved: SavedModel) -> Result<()> {
    let mut consumer = stream.consumer(ConsumerConfig::group(&args.from.group))?;
    let names: Vec<String> = saved.features.clone();
    let features: Vec<&str> = names.iter().map(String::as_str).collect();
    let (started, every) = (Instant::now(), Duration::from_secs_f64(args.checkpoint_secs));
    let mut last_checkpoint = Instant::now();
    let (mut trained, mut loss) = (0u64, 0.0);
    let mut progress = Progress::new(saved.model.rows_seen(), 0.0);
    // Commit at least every quarter of the store, so a stream of big
    // batches never waits on this group.
    let commit_bytes = stream.store().stats()?.capacity / 4;
    let mut pending = 0u64;
    let checkpoint = |saved: &SavedModel, consumer: &mut quiver::Consumer| -> Result<()> {
        saved.save(&args.model)?;
        consumer.commit()?;
        Ok(())
    };
    loop {
        if super::signals::interrupted().is_err() || due(started, args.seconds) {
            break;
        }
        match consumer.poll(Duration::from_millis(100))? {
            Polled::Batch(b) => {
                let fitted = saved.model.partial_fit(&b.batch, &features, &saved.target).with_context(|| {
                    format!(
                        "the batch at offset {} of partition {} (nothing after it is committed)",
                        b.offset, b.partition
                    )
                })?;
                (trained, loss) = (trained + fitted.rows as u64, loss + fitted.loss);
                pending += b.batch.get_array_memory_size() as u64;
            }
            Polled::EndOfStream => break,
            Polled::TimedOut => {}
        }
        if last_checkpoint.elapsed() >= every || pending >= commit_bytes {
            checkpoint(&saved, &mut consumer)?;
            (last_checkpoint, pending) = (Instant::now(), 0);
        }
        progress.update(saved.model.rows_seen(), loss);
    }
    checkpoint(&saved, &mut consumer)?;
    progress.finish(saved.model.rows_seen(), trained, loss, &args.model);
    Ok(())
}

/// N worker processes on one shared model; this process watches and saves.
/// `n` worker processes training one shared model; `run_store`: the store
/// was made for this run (`bench-train`), and a worker removes it if this
/// process dies first.
fn train_shared(
    args: &TrainArgs,
    store: &Store,
    stream: &Stream,
    start: SavedModel,
    n: u32,
    run_store: Option<&std::path::Path>,
) -> Result<()> {
    let name = shared_name(stream.name(), &args.from.group);
    if args.fresh {
        SharedModel::remove(store, &name)?;
    }
    // A shared model the store kept (this command stopped, the workers or
    // the store did not) is newer than any file: go on from it.
    let shared = Arc::new(SharedModel::open_or_create(store, &name, &start, Duration::from_secs(1))?);
    if shared.rows_seen() != start.model.rows_seen() {
        eprintln!(
            "going on from the shared model {name:?} the store kept ({} rows; --fresh starts afresh)",
            shared.rows_seen()
        );
    }
    // Their own process group: Ctrl-C reaches this process, which stops
    // them (a worker killed mid-shard gives its shard back).
    let mut args_of_worker = vec!["train-worker".to_string(), "--store".into(), args.from.store.clone()];
    args_of_worker.extend(["--stream".into(), args.from.stream.clone(), "--group".into(), args.from.group.clone()]);
    args_of_worker.extend(["--shared".into(), name.clone(), format!("--sync-every={}", args.sync_every)]);
    let mut workers = Supervisor::new()?;
    if let Some(store) = run_store {
        workers = workers.with_run_store(store);
    }
    for _ in 0..n {
        workers.spawn(Spawn::new(&args_of_worker).quiet().own_process_group())?;
    }
    let (started, every) = (Instant::now(), Duration::from_secs_f64(args.checkpoint_secs));
    let first_rows = shared.rows_seen();
    let mut progress = Progress::new(first_rows, shared.loss_sum());
    let mut last_checkpoint = Instant::now();
    let mut stop = false;
    let mut exited = vec![false; n as usize];
    // A worker found stopped (SIGSTOP, Ctrl-Z on its own group) once every
    // other has ended: when, by worker. Its shard went to the others when
    // its lease ran out; waiting for it would be waiting for ever.
    let mut stopped_since: Vec<Option<Instant>> = vec![None; n as usize];
    // A worker killed by a signal (the OOM killer, an operator) is replaced:
    // its shard went back to the group, and what it had added stays.
    let mut replaced = 0u32;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        progress.update(shared.rows_seen(), shared.loss_sum());
        if !stop && (super::signals::interrupted().is_err() || due(started, args.seconds)) {
            stop = true;
            workers.kill_all();
        }
        let running = exited.iter().filter(|&&d| !d).count();
        for (w, done) in exited.iter_mut().enumerate() {
            if *done {
                continue;
            }
            let Some(status) = workers.exited(w)? else {
                let stopped = running == 1 && workers.pid(w).is_some_and(quiver::shm::process_stopped);
                match (stopped, stopped_since[w]) {
                    (false, _) => stopped_since[w] = None,
                    (true, None) => stopped_since[w] = Some(Instant::now()),
                    (true, Some(at)) if at.elapsed() >= STOPPED_WORKER_WAIT => {
                        eprintln!(
                            "a worker has been stopped for {} s after every other ended: killed (its shards \
                             went to the others when its leases ran out)",
                            STOPPED_WORKER_WAIT.as_secs()
                        );
                        workers.kill(w);
                        *done = true;
                    }
                    (true, Some(_)) => {}
                }
                continue;
            };
            match (status.success(), status.signal(), stop) {
                (true, _, _) | (_, _, true) => *done = true,
                (false, Some(signal), false) if replaced < 3 * n => {
                    replaced += 1;
                    eprintln!("a worker was killed (signal {signal}): its shard goes back, a new worker starts");
                    workers.respawn(w)?;
                }
                (false, _, false) => {
                    *done = true;
                    shared.snapshot().save(&args.model)?;
                    bail!("a worker failed ({status}); the model so far is saved");
                }
            }
        }
        if last_checkpoint.elapsed() >= every {
            shared.snapshot().save(&args.model)?;
            last_checkpoint = Instant::now();
        }
        if exited.iter().all(|&d| d) {
            break;
        }
    }
    let snapshot = shared.snapshot();
    snapshot.save(&args.model)?;
    let rows = shared.rows_seen();
    progress.finish(rows, rows.saturating_sub(first_rows), shared.loss_sum(), &args.model);
    Ok(())
}

/// A `train --workers` worker's lease on a shard, renewed while it trains.
const WORKER_LEASE: Duration = Duration::from_secs(3);

/// How long `train --workers` waits for its last worker while that worker
/// is stopped, before it kills it.
const STOPPED_WORKER_WAIT: Duration = Duration::from_secs(10);

/// A worker of `quiver train --workers`: takes shards, trains the shared
/// model on them, reports them done; ends at the end of the stream.
pub(crate) fn work(args: WorkerArgs) -> Result<()> {
    worker::stop_with_parent()?;
    // A worker reads its shards only: mapping all of a large store up front
    // would cost each worker more than its share of the pages.
    let store = Store::open_with(quiver::OpenConfig::new(&args.from.store).prefault(false))?;
    let stream = Stream::open(&store, &args.from.stream)?;
    let shared = Arc::new(SharedModel::open(&store, &args.shared, Duration::from_secs(10))?);
    let mut trainer = shared.trainer(args.sync_every);
    // Short leases, renewed while a shard trains (a heartbeat): a stopped
    // or dead worker's shard goes to the others within seconds.
    let config = ShardConfig::new().shard_size(quiver::ShardSize::Batches(128)).lease(WORKER_LEASE);
    let mut manager = ShardManager::join(&stream, &args.from.group, config)?;
    loop {
        let task = match manager.next_task(Duration::from_secs(1))? {
            quiver::Next::Task(task) => task,
            quiver::Next::TimedOut => continue,
            quiver::Next::End => return Ok(()),
        };
        let Some(read) = manager.read_task(&task, Duration::from_secs(30))? else {
            // Its batches did not all come: handed out again later.
            manager.report(task, Outcome::Failed)?;
            continue;
        };
        let beat = manager.keep_lease(&task);
        let trained = read.iter().try_for_each(|b| trainer.partial_fit(&b.batch).map(drop));
        if let Err(e) = trained {
            let _ = manager.release(task);
            return Err(e.into());
        }
        // What a shard trained is in the shared model before it is done.
        trainer.sync();
        drop(beat);
        match manager.report(task, Outcome::Done) {
            // Its lease ran out and another member has it: it trains it again.
            Ok(()) | Err(quiver::ShardError::TaskNotHeld(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct PredictArgs {
    /// The model file `quiver train` wrote.
    #[arg(long)]
    model: PathBuf,
    /// An Arrow IPC or CSV file to predict for.
    #[arg(long, conflicts_with_all = ["store", "stream", "group"])]
    from: Option<PathBuf>,
    /// Or a stream, read as a consumer group (to its end, or --timeout).
    #[arg(long, requires_all = ["stream", "group"])]
    store: Option<String>,
    #[arg(long)]
    stream: Option<String>,
    #[arg(long)]
    group: Option<String>,
    /// Stream: stop after this many seconds without a batch.
    #[arg(long, default_value_t = 1.0, value_parser = super::positive_seconds)]
    timeout: f64,
    /// Write the rows with a `prediction` column to this Arrow IPC file.
    #[arg(long)]
    to: Option<PathBuf>,
}

/// The batches of a `predict` input.
enum Input {
    File(std::vec::IntoIter<RecordBatch>),
    Stream(Box<quiver::Consumer>, Duration),
}

impl Input {
    fn next(&mut self) -> Result<Option<RecordBatch>> {
        match self {
            Input::File(batches) => Ok(batches.next()),
            Input::Stream(consumer, timeout) => match consumer.poll(*timeout)? {
                Polled::Batch(b) => Ok(Some(b.batch.clone())),
                Polled::EndOfStream | Polled::TimedOut => Ok(None),
            },
        }
    }
}

pub(crate) fn predict(args: PredictArgs) -> Result<()> {
    super::signals::install();
    if let Some(to) = &args.to {
        // Before anything is read: nothing of a group is consumed for an
        // output that cannot be written.
        quiver::store::files::check_replaceable(to)?;
    }
    let saved = SavedModel::load(&args.model)?;
    if saved.model.coef().is_empty() {
        bail!("{} has not been trained: it has no weights", args.model.display());
    }
    let features = saved.feature_names();
    let mut input = match (&args.from, &args.store, &args.stream, &args.group) {
        (Some(path), ..) => {
            let imported =
                quiver::arrow::import::read_path(path, 65_536).with_context(|| format!("read {}", path.display()))?;
            Input::File(imported.batches.into_iter())
        }
        (None, Some(store), Some(stream), Some(group)) => {
            let store = Store::open(store)?;
            let stream = Stream::open(&store, stream)?;
            saved.check_schema(stream.schema(), false).with_context(|| format!("stream {:?}", stream.name()))?;
            let consumer = Box::new(stream.consumer(ConsumerConfig::group(group))?);
            Input::Stream(consumer, Duration::from_secs_f64(args.timeout))
        }
        _ => bail!("say what to predict for: --from FILE, or --store S --stream S --group G"),
    };
    let mut out: Option<(arrow_ipc::writer::FileWriter<std::fs::File>, tempfile::TempPath)> = None;
    let mut scorer = Scorer::default();
    let (mut rows, mut labelled) = (0u64, true);
    while let Some(batch) = input.next()? {
        // On Ctrl-C the temporary output is removed, the target untouched.
        super::signals::interrupted()?;
        let predicted = saved.model.predict(&batch, &features)?;
        rows += batch.num_rows() as u64;
        labelled &= batch.column_by_name(&saved.target).is_some();
        if labelled {
            scorer.add(&saved.model, &batch, &features, &saved.target)?;
        }
        if let Some(to) = &args.to {
            let with = with_prediction(&batch, predicted)?;
            if out.is_none() {
                out = Some(open_output(to, &with.schema())?);
            }
            if let Some((writer, _)) = out.as_mut() {
                writer.write(&with)?;
            }
        }
    }
    if let (Some(to), Some((mut writer, temp))) = (&args.to, out) {
        writer.finish()?;
        writer.get_ref().sync_all()?;
        super::io::persist(temp, to)?;
        println!("wrote {rows} predictions to {}", to.display());
    } else if args.to.is_some() {
        println!("no rows: nothing written");
    } else {
        println!("{rows} rows predicted");
    }
    if labelled && rows > 0 {
        let score = scorer.score();
        println!("score on {} rows: R² {:.6}, MSE {:.6}", score.rows, score.r2, score.mse);
    }
    Ok(())
}

/// `batch` with a Float64 `prediction` column after its own.
fn with_prediction(batch: &RecordBatch, predicted: Vec<f64>) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    if fields.iter().any(|f| f.name() == "prediction") {
        bail!("the input already has a column named prediction");
    }
    fields.push(Field::new("prediction", DataType::Float64, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Float64Array::from(predicted)) as ArrayRef);
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// An Arrow IPC file writer on a temporary file beside `to` (renamed over
/// it once complete).
fn open_output(
    to: &Path,
    schema: &arrow_schema::SchemaRef,
) -> Result<(arrow_ipc::writer::FileWriter<std::fs::File>, tempfile::TempPath)> {
    let temp = super::io::temp_beside(to)?;
    let (file, path) = temp.into_parts();
    Ok((arrow_ipc::writer::FileWriter::try_new(file, schema)?, path))
}

#[derive(clap::Args, Debug)]
pub(crate) struct BenchTrainArgs {
    /// Rows of the demo's data (y = 4 + 3x + noise, batches of 1 to 40 rows).
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    rows: u64,
    /// Worker counts to run, comma-separated (0: one process alone, no
    /// shared model).
    #[arg(long, value_delimiter = ',', default_values_t = [0, 1, 2, 4],
          value_parser = clap::value_parser!(u32).range(0..=quiver::shard::MAX_MEMBERS as i64))]
    workers: Vec<u32>,
    /// Batches a worker trains between exchanges with the shared model.
    #[arg(long, default_value_t = 1)]
    sync_every: u32,
    /// Rounds per worker count (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// `quiver bench-train`: `quiver train`'s rows per second on the demo's
/// data, alone and with 1, 2, 4 workers on one shared model, in one sitting.
pub(crate) fn bench(args: BenchTrainArgs) -> Result<()> {
    use quiver::{StoreConfig, StreamConfig};
    use quiver_train::LinearData;
    // Its runs do not poll for a stop: a signal kills the workers and
    // removes the store from a thread of its own.
    super::guard::stop_on_signals();
    let name = format!("bench-train-{}", std::process::id());
    // Room for a run's stream (batches of 20 rows on average, each under 2 KiB) and no more:
    // every worker maps the whole store when it opens it.
    let batches = args.rows / 10 + 1024;
    let config = StoreConfig::new(&name).capacity((batches * 2048).max(64 << 20)).max_objects(batches);
    let store = Store::create(config)?;
    let _remove = super::guard::RemoveOnDrop::new(store.path());
    // A stream per run (the store holds few shard-managed groups), removed after it.
    let fill = |stream: &str| -> Result<(Stream, u64)> {
        let config = StreamConfig::new(stream, LinearData::new(0).batch(0).schema()).partitions(4).group("g");
        let stream = Stream::create(&store, config)?;
        let mut producer = stream.producer()?;
        let mut data = LinearData::new(42);
        let mut rows = 0;
        while rows < args.rows {
            let size = data.between(1, 40).min(args.rows - rows) as usize;
            let batch = data.batch(size);
            rows += batch.num_rows() as u64;
            producer.append(&batch)?;
        }
        stream.close()?;
        Ok((stream, rows))
    };
    let dir = tempfile::tempdir()?;
    println!("{:<10} {:>14} {:>10} {:>10}", "workers", "rows/s", "intercept", "slope");
    for &w in &args.workers {
        let mut runs = Vec::new();
        let mut last = None;
        for r in 0..args.rounds {
            let stream_name = format!("data-w{w}-r{r}");
            let (stream, rows) = fill(&stream_name)?;
            let train = TrainArgs {
                from: GroupArgs { store: name.clone(), stream: stream_name.clone(), group: "g".into() },
                features: vec!["x".into()],
                target: "y".into(),
                model: dir.path().join(format!("w{w}-r{r}.json")),
                resume: false,
                overwrite: true,
                fresh: true,
                settings: SettingsArgs {
                    loss: LossArg::SquaredError,
                    epsilon: 0.1,
                    learning_rate: ScheduleArg::Invscaling,
                    eta0: 0.01,
                    power_t: 0.25,
                    alpha: 0.0001,
                    no_intercept: false,
                    n_iter_no_change: 5,
                    tol: 1e-3,
                    epoch_rows: 10_000,
                },
                workers: (w > 0).then_some(w),
                sync_every: args.sync_every,
                checkpoint_secs: 3600.0,
                seconds: None,
            };
            let started = Instant::now();
            let start = start_model(&train)?;
            match train.workers {
                None => train_alone(&train, &stream, start)?,
                Some(n) => train_shared(&train, &store, &stream, start, n, Some(store.path()))?,
            }
            runs.push(rows as f64 / started.elapsed().as_secs_f64());
            last = Some(SavedModel::load(&train.model)?);
            drop(stream);
            Stream::remove(&store, &stream_name)?;
        }
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let (i, s) = last.map_or((f64::NAN, f64::NAN), |m| {
            (m.model.intercept(), m.model.coef().first().copied().unwrap_or(f64::NAN))
        });
        let label = if w == 0 { "alone".to_string() } else { w.to_string() };
        println!("{label:<10} {median:>14.0} {i:>10.3} {s:>10.3}");
    }
    Ok(())
}
