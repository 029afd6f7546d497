//! `quiver bench`: a producer and N consumer processes move Arrow record
//! batches through a fresh store (or, with `--baseline socket`, through Unix
//! sockets as Arrow IPC), and the throughput and the seal-to-read latency
//! are reported, like Kafka's perf-test scripts or redis-benchmark.
//!
//! Shared-memory mode: batch `i` is object `(1, 0, i)`. Every consumer reads
//! every batch; every `step` batches it seals a small progress object
//! `(2, consumer, m)` saying "batches below `m × step` are done", and the
//! producer never runs more than a window of batches ahead of the slowest
//! consumer, deleting what all of them have finished. When the run ends the
//! producer seals an end marker where the next batch would be (metadata
//! `END!`), so a consumer waiting for that batch wakes and stops at once.
//!
//! Socket mode: one connection per consumer; each batch is encoded once and
//! written to every connection as a frame `[length u64][IPC message bytes]
//! [time u64]`, the time taken once the bytes are written (as a seal follows
//! the copy into the store); a length of `u64::MAX` ends the stream.
//!
//! Latency in both modes runs from the hand-off (the seal; the end of the
//! write) to the consumer holding the decoded batch.

use std::ffi::OsStr;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::guard::RemoveOnDrop;
use super::supervisor::{worker, Spawn, Supervisor};
use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_buffer::Buffer;
use quiver::shm::clock::wall_ns;
use quiver::{
    BatchReader, BatchWriter, ConsumerConfig, CreateOptions, ObjectId, OpenConfig, Polled, Store, StoreConfig, Stream,
    StreamConfig,
};

const BATCH_NS: u64 = 1;
const PROGRESS_NS: u64 = 2;
const READY_NS: u64 = 4;
/// The metadata of the end marker.
const END_MARK: &[u8] = b"END!";

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// Consumer processes; each reads every batch.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Approximate bytes per batch (two 8-byte columns: rows = bytes / 16).
    #[arg(long, default_value_t = 64 << 10, conflicts_with = "batch_rows",
          value_parser = clap::value_parser!(u64).range(16..=1 << 32))]
    batch_bytes: u64,
    /// Rows per batch, instead of --batch-bytes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    batch_rows: Option<u64>,
    /// Run for this many seconds…
    #[arg(long, default_value_t = 5.0, value_parser = super::positive_seconds)]
    seconds: f64,
    /// …or for exactly this many batches.
    #[arg(long)]
    count: Option<u64>,
    /// How far (in bytes of batches) the producer may run ahead of the
    /// slowest consumer. Small enough to stay in cache, the memory of
    /// finished batches is reused while it is still warm.
    #[arg(long, default_value_t = 4 << 20)]
    window_bytes: u64,
    /// Consumers spin this many microseconds before parking on a futex
    /// (0: park at once). Worth it when every process has a core of its own.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Run the same workload over another transport instead.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Go through a stream (one partition, one consumer group per
    /// consumer, `Block` back-pressure in a store sized to the window)
    /// instead of raw objects.
    #[arg(long, conflicts_with = "baseline")]
    stream: bool,
    /// Append at most this many batches per second (0: as fast as possible),
    /// to see the consumers' backlog at a steady rate.
    #[arg(long, default_value_t = 0.0, value_parser = super::rate)]
    rate: f64,
    /// Measure the publish path with no copy: two runs, one after the
    /// other, whose producers fill the same column values into every batch,
    /// first into an ordinary batch that is then appended (one copy), then
    /// straight into the store object (`BatchWriter::reserve`,
    /// `Producer::reserve`).
    #[arg(long, conflicts_with = "baseline")]
    no_copy: bool,
    /// Print one JSON object (with --no-copy, one per run).
    #[arg(long)]
    json: bool,
    /// Stream mode: every this many seconds, print (to stderr) the resident
    /// memory of the producer and of each consumer and the store's usage: a
    /// soak run shows whether they stay flat.
    #[arg(long)]
    sample_every: Option<f64>,
}

impl BenchArgs {
    /// Whether a run that has sent `i` batches since `start` is over:
    /// `--count` batches, or `--seconds` elapsed (checked only `at_boundary`).
    fn finished(&self, i: u64, start: Instant, at_boundary: bool) -> bool {
        match self.count {
            Some(count) => i >= count,
            None => at_boundary && start.elapsed() >= Duration::from_secs_f64(self.seconds),
        }
    }
}

/// Resident memory of process `pid` in KiB (`/proc/PID/statm`).
fn resident_kib(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    /// Arrow IPC over Unix sockets.
    Socket,
}

/// A latency histogram: 8 buckets per power of two of nanoseconds (about
/// 9% resolution), mergeable across processes.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    fn new() -> Self {
        Histogram { counts: vec![0; 64 * 8] }
    }
    fn bucket(ns: u64) -> usize {
        let ns = ns.max(1);
        let log = 63 - ns.leading_zeros() as usize;
        let frac = if log >= 3 { ((ns >> (log - 3)) & 7) as usize } else { 0 };
        log * 8 + frac
    }
    fn lower_bound(bucket: usize) -> f64 {
        let (log, frac) = (bucket / 8, bucket % 8);
        (1u64 << log) as f64 * (1.0 + frac as f64 / 8.0)
    }
    fn record(&mut self, ns: u64) {
        let b = Self::bucket(ns).min(self.counts.len() - 1);
        self.counts[b] += 1;
    }
    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
    /// The `q` quantile in microseconds (the middle of its bucket).
    fn quantile_us(&self, q: f64) -> f64 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (Self::lower_bound(b) + Self::lower_bound(b + 1)) / 2.0 / 1000.0;
            }
        }
        0.0
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct ConsumerReport {
    batches: u64,
    bytes: u64,
    rows: u64,
    seconds: f64,
    latency: Histogram,
    /// Stream mode: batches appended but not yet read, at each read.
    #[serde(default)]
    backlog: Option<Histogram>,
}

impl ConsumerReport {
    fn new() -> Self {
        ConsumerReport { batches: 0, bytes: 0, rows: 0, seconds: 0.0, latency: Histogram::new(), backlog: None }
    }
}

/// Sleeps until batch `i` is due at `rate` batches per second from `start`.
fn pace(rate: f64, start: Instant, i: u64) {
    if rate > 0.0 {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// The producer's lead over the slowest consumer, in batches, and how often
/// consumers report progress (a quarter of the window).
#[derive(Clone, Copy, Debug)]
struct Window {
    batches: u64,
    step: u64,
}

impl Window {
    fn for_batches(window_bytes: u64, batch_bytes: u64) -> Self {
        let batches = (window_bytes / batch_bytes.max(1)).clamp(8, 512);
        Window { batches, step: (batches / 4).max(1) }
    }
}

fn make_batch(rows: u64) -> Result<RecordBatch> {
    let rows = rows as usize;
    let seq: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
    let value: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 * 0.5)));
    Ok(RecordBatch::try_from_iter([("seq", seq), ("value", value)])?)
}

/// How the producer makes each batch it publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publish {
    /// Appends the same ready-made batch every time (one copy).
    Same,
    /// Fills batch `i`'s values into a new ordinary batch, then appends it
    /// (one copy).
    FillThenCopy,
    /// Fills batch `i`'s values straight into its store object (no copy).
    FillInPlace,
}

impl Publish {
    fn name(self) -> &'static str {
        match self {
            Publish::Same => "one-copy",
            Publish::FillThenCopy => "fill-then-copy",
            Publish::FillInPlace => "no-copy",
        }
    }
}

/// The values of batch `i`: `seq` counts rows across batches, `value` is
/// half of it.
fn seq_value(rows: usize, i: u64, row: usize) -> (i64, f64) {
    let seq = (i as usize * rows + row) as i64;
    (seq, seq as f64 * 0.5)
}

/// The one fill loop of both paths: batch `i`'s values.
#[inline(never)]
fn fill(seq: &mut [i64], value: &mut [f64], i: u64) {
    let rows = seq.len();
    for (r, (s, v)) in seq.iter_mut().zip(value).enumerate() {
        (*s, *v) = seq_value(rows, i, r);
    }
}

/// Fills ordinary batches, as a careful producer does: into two column
/// buffers it reuses once the last batch made from them is dropped, so the
/// fill writes to warm private memory and the append makes the one copy.
#[derive(Default)]
struct Filler {
    seq: Option<Buffer>,
    value: Option<Buffer>,
}

impl Filler {
    /// Batch `i`; drop it before asking for the next one, or the buffers
    /// are not free to reuse (they are then allocated anew).
    fn batch(&mut self, schema: &arrow_schema::SchemaRef, rows: usize, i: u64) -> Result<RecordBatch> {
        fn reuse(slot: &mut Option<Buffer>, rows: usize) -> arrow_buffer::MutableBuffer {
            let mut buffer = match slot.take().map(Buffer::into_mutable) {
                Some(Ok(buffer)) => buffer,
                _ => arrow_buffer::MutableBuffer::new(rows * 8),
            };
            buffer.resize(rows * 8, 0);
            buffer
        }
        let mut seq = reuse(&mut self.seq, rows);
        let mut value = reuse(&mut self.value, rows);
        fill(seq.typed_data_mut(), value.typed_data_mut(), i);
        let (seq, value): (Buffer, Buffer) = (seq.into(), value.into());
        self.seq = Some(seq.clone());
        self.value = Some(value.clone());
        let seq: ArrayRef = Arc::new(Int64Array::new(seq.into(), None));
        let value: ArrayRef = Arc::new(Float64Array::new(value.into(), None));
        Ok(RecordBatch::try_new(schema.clone(), vec![seq, value])?)
    }
}

/// Batch `i` filled into a slot in the store, in the same loop as
/// [`Filler`]'s.
fn fill_slot(slot: &mut quiver::BatchSlot, i: u64) -> Result<()> {
    let mut columns = slot.columns_mut().into_iter();
    let (Some(seq), Some(value)) = (columns.next(), columns.next()) else { bail!("the bench batch has two columns") };
    fill(
        seq.into_values::<arrow_array::types::Int64Type>()?,
        value.into_values::<arrow_array::types::Float64Type>()?,
        i,
    );
    Ok(())
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    // Its loops do not poll for a stop: a signal kills the workers and
    // removes the store from a thread of its own.
    super::guard::stop_on_signals();
    if args.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    if args.no_copy {
        let copied = run_one(&args, Publish::FillThenCopy)?;
        let in_place = run_one(&args, Publish::FillInPlace)?;
        if !args.json {
            println!("no-copy / fill-then-copy   {:.2}x batches/s", in_place / copied);
        }
        return Ok(());
    }
    run_one(&args, Publish::Same).map(drop)
}

/// One run; prints its report and returns its batches per second.
fn run_one(args: &BenchArgs, publish: Publish) -> Result<f64> {
    let args = args.clone();
    let rows = args.batch_rows.unwrap_or((args.batch_bytes / 16).max(1)).max(1);
    let batch = make_batch(rows)?;
    let batch_bytes = batch.get_array_memory_size() as u64;
    let window = Window::for_batches(args.window_bytes, batch_bytes);
    let exe = std::env::current_exe().context("find the quiver binary")?;
    let (produced, seconds, reports) = match args.baseline {
        None if args.stream => run_stream(&args, window, &exe, &batch, publish)?,
        None => run_store(&args, window, &exe, &batch, publish)?,
        Some(Baseline::Socket) => run_socket(&args, &exe, &batch)?,
    };
    let mut latency = Histogram::new();
    let mut backlog = Histogram::new();
    for r in &reports {
        latency.merge(&r.latency);
        if let Some(b) = &r.backlog {
            backlog.merge(b);
        }
        if r.batches != produced {
            bail!("a consumer read {} of {produced} batches", r.batches);
        }
    }
    let transport = match (args.baseline, args.stream) {
        (Some(Baseline::Socket), _) => "unix-socket",
        (None, true) => "stream",
        (None, false) => "shared-memory",
    };
    // The histogram counts batches from 1 up; a backlog of 0 is recorded as 1.
    let backlog_p = |q: f64| if args.stream { (backlog.quantile_us(q) * 1000.0 - 1.0).max(0.0) } else { 0.0 };
    let (backlog_p50, backlog_p99) = (backlog_p(0.5), backlog_p(0.99));
    let batches_per_s = produced as f64 / seconds;
    let gb_per_s = (produced * batch_bytes) as f64 / seconds / 1e9;
    let (p50, p99, p999) = (latency.quantile_us(0.5), latency.quantile_us(0.99), latency.quantile_us(0.999));
    if args.json {
        let value = serde_json::json!({
            "transport": transport, "publish": publish.name(), "consumers": args.consumers, "batch_bytes": batch_bytes, "batch_rows": rows,
            "batches": produced, "seconds": seconds, "batches_per_s": batches_per_s, "gb_per_s": gb_per_s,
            "latency_us_p50": p50, "latency_us_p99": p99, "latency_us_p999": p999,
            "backlog_p50": backlog_p50, "backlog_p99": backlog_p99,
        });
        println!("{value}");
    } else {
        println!("transport        {transport}");
        if publish != Publish::Same {
            println!("publish          {} (values filled into every batch)", publish.name());
        }
        println!("consumers        {}", args.consumers);
        println!("batch            {rows} rows, {batch_bytes} bytes");
        println!("batches          {produced} in {seconds:.3} s");
        println!("throughput       {batches_per_s:.0} batches/s, {gb_per_s:.3} GB/s (per consumer)");
        println!("seal-to-read     p50 {p50:.1} µs, p99 {p99:.1} µs, p99.9 {p999:.1} µs");
        if args.stream {
            println!("backlog          p50 {backlog_p50:.0} batches, p99 {backlog_p99:.0} batches (at each read)");
        }
    }
    Ok(batches_per_s)
}

/// Every consumer's report (its JSON line), once each has exited.
fn collect(workers: &mut Supervisor) -> Result<Vec<ConsumerReport>> {
    let reports = workers.reports("consumer", || Ok(()))?;
    reports.iter().map(|text| serde_json::from_str(text).context("read a consumer's report")).collect()
}

fn run_store(
    args: &BenchArgs,
    window: Window,
    exe: &std::path::Path,
    batch: &RecordBatch,
    publish: Publish,
) -> Result<(u64, f64, Vec<ConsumerReport>)> {
    let name = format!("bench-{}", std::process::id());
    let object = batch.get_array_memory_size() as u64 + 4096;
    let capacity = (object * (window.batches + 2 * window.step) * 2).max(64 << 20);
    let max_objects = (window.batches + 2 * window.step) * 2 + 64 * args.consumers as u64 + 1024;
    let store = Store::create(StoreConfig::new(&name).capacity(capacity).max_objects(max_objects))?;
    let _remove = RemoveOnDrop::new(store.path());
    let mut writer = BatchWriter::new(&store, batch.schema())?;
    let mut workers = start_workers(exe, "store", (&store, &name), args, window, publish)?;
    let wait = CreateOptions::new().timeout(Duration::from_secs(30)).pinned(true);
    let mut filler = Filler::default();
    let start = Instant::now();
    let mut freed = 0u64;
    let mut i = 0u64;
    loop {
        // In timed runs, stop only on a progress-step boundary.
        if args.finished(i, start, i % window.step == 0) {
            break;
        }
        if i >= window.batches && i % window.step == 0 {
            // Every consumer must have finished batch i - window.
            let needed = (i - window.batches + 1).div_ceil(window.step);
            for c in 0..args.consumers {
                let id = ObjectId::sequential(PROGRESS_NS, c, needed);
                if store.get(id, Duration::from_secs(30))?.is_none() {
                    bail!("consumer {c} made no progress for 30 s");
                }
                if needed > 1 {
                    let _ = store.delete(ObjectId::sequential(PROGRESS_NS, c, needed - 1));
                }
            }
            // The consumed batches go in one lock round trip.
            let consumed: Vec<ObjectId> =
                (freed..needed * window.step).map(|b| ObjectId::sequential(BATCH_NS, 0, b)).collect();
            if store.delete_many(&consumed)? != consumed.len() {
                bail!("batches {freed}..{} were not all there to free", needed * window.step);
            }
            freed = freed.max(needed * window.step);
        }
        pace(args.rate, start, i);
        let id = ObjectId::sequential(BATCH_NS, 0, i);
        match publish {
            Publish::Same => writer.put_batch_with(id, batch, wait)?,
            Publish::FillThenCopy => {
                writer.put_batch_with(id, &filler.batch(&batch.schema(), batch.num_rows(), i)?, wait)?
            }
            Publish::FillInPlace => {
                let mut slot = writer.reserve(id, batch.num_rows(), wait)?;
                fill_slot(&mut slot, i)?;
                slot.seal()?;
            }
        }
        i += 1;
    }
    store.create_object_with(ObjectId::sequential(BATCH_NS, 0, i), 0, END_MARK, wait)?.seal()?;
    let reports = collect(&mut workers)?;
    Ok((i, start.elapsed().as_secs_f64(), reports))
}

/// Starts the consumer processes (`bench-worker KIND`) of a run on
/// `store` and waits until every one has attached, so the clock can start.
fn start_workers(
    exe: &std::path::Path,
    kind: &str,
    (store, name): (&Store, &str),
    args: &BenchArgs,
    window: Window,
    publish: Publish,
) -> Result<Supervisor> {
    let mut workers = Supervisor::of(exe).with_run_store(store.path());
    for c in 0..args.consumers {
        let (c, step, spin) = (c.to_string(), window.step.to_string(), args.spin_us.to_string());
        let mut a = ["bench-worker", kind, "--store", name, "--consumer", &c, "--step", &step, "--spin-us", &spin]
            .map(String::from)
            .to_vec();
        if publish != Publish::Same {
            a.push("--check-values".into());
        }
        workers.spawn(Spawn::new(&a))?;
    }
    for c in 0..args.consumers {
        if store.get(ObjectId::sequential(READY_NS, c, 0), Duration::from_secs(30))?.is_none() {
            bail!("consumer {c} did not start within 30 s");
        }
    }
    Ok(workers)
}

/// The stream name used by `--stream`.
const STREAM: &str = "bench";

/// Stream mode: the same workload through a stream. Each consumer is the
/// one member of its own group (declared at creation, so it misses
/// nothing) and commits every `step` batches; retention frees what every
/// group committed; the producer's appends block (`Block`) when the store,
/// sized to the window, is full.
fn run_stream(
    args: &BenchArgs,
    window: Window,
    exe: &std::path::Path,
    batch: &RecordBatch,
    publish: Publish,
) -> Result<(u64, f64, Vec<ConsumerReport>)> {
    let name = format!("bench-stream-{}", std::process::id());
    let object = batch.get_array_memory_size() as u64 + 4096;
    let capacity = object * (window.batches + window.step) + (1 << 20);
    let store = Store::create(StoreConfig::new(&name).capacity(capacity).max_objects(4096))?;
    let _remove = RemoveOnDrop::new(store.path());
    let mut config = StreamConfig::new(STREAM, batch.schema());
    for c in 0..args.consumers {
        config = config.group(format!("c{c}"));
    }
    let stream = Stream::create(&store, config)?;
    let mut producer = stream.producer()?.with_timeout(Duration::from_secs(30));
    let mut workers = start_workers(exe, "stream", (&store, &name), args, window, publish)?;
    let mut filler = Filler::default();
    let start = Instant::now();
    let mut next_sample = args.sample_every.map(|s| (Duration::from_secs_f64(s.max(0.1)), start));
    let mut i = 0u64;
    loop {
        if args.finished(i, start, true) {
            break;
        }
        pace(args.rate, start, i);
        match publish {
            Publish::Same => drop(producer.append(batch)?),
            Publish::FillThenCopy => drop(producer.append(&filler.batch(&batch.schema(), batch.num_rows(), i)?)?),
            Publish::FillInPlace => {
                let mut reservation = producer.reserve(batch.num_rows())?;
                fill_slot(&mut reservation, i)?;
                reservation.commit()?;
            }
        }
        i += 1;
        if let Some((every, at)) = &mut next_sample {
            if i % 64 == 0 && at.elapsed() >= *every {
                *at = Instant::now();
                let stats = store.stats()?;
                let consumers: Vec<u64> = (0..workers.len()).filter_map(|c| workers.pid(c)).map(resident_kib).collect();
                eprintln!(
                    "sample t={:.0}s batches={i} producer_rss_kib={} consumer_rss_kib={consumers:?} store_used={} objects={}",
                    start.elapsed().as_secs_f64(),
                    resident_kib(std::process::id()),
                    stats.used,
                    stats.objects
                );
            }
        }
    }
    stream.close()?;
    let reports = collect(&mut workers)?;
    Ok((i, start.elapsed().as_secs_f64(), reports))
}

/// `quiver bench-worker`: the consumer processes `quiver bench` starts, one
/// per `--consumers`; each prints a JSON report at the end.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum Worker {
    /// Reads every batch from the store.
    Store(WorkerArgs),
    /// Reads every batch through a stream (`quiver bench --stream`).
    Stream(WorkerArgs),
    /// Reads every batch from a Unix socket (`quiver bench --baseline socket`).
    Socket {
        #[arg(long)]
        socket: std::path::PathBuf,
    },
}

/// A store or stream consumer's arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    store: String,
    #[arg(long)]
    consumer: u32,
    /// Report progress every this many batches.
    #[arg(long)]
    step: u64,
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Check that batch `i` holds the values `--no-copy` runs fill in.
    #[arg(long)]
    check_values: bool,
}

pub(crate) fn work(worker: Worker) -> Result<()> {
    worker::stop_with_parent()?;
    match worker {
        Worker::Store(a) => consume_store(&a),
        Worker::Stream(a) => consume_stream(&a),
        Worker::Socket { socket } => consume_socket(&socket),
    }
}

/// The stream consumer: `quiver bench-worker stream`.
fn consume_stream(args: &WorkerArgs) -> Result<()> {
    let (store, consumer, step, spin_us) = (&args.store, args.consumer, args.step, args.spin_us);
    let store = Store::open_with(OpenConfig::new(store).wait_strategy(super::wait_strategy(spin_us)))?;
    let stream = Stream::open(&store, STREAM)?;
    let mut consumer_ = stream.consumer(ConsumerConfig::group(format!("c{consumer}")))?;
    store.create_object(ObjectId::sequential(READY_NS, consumer, 0), 0, &[])?.seal()?;
    let mut report = ConsumerReport::new();
    let mut backlog = Histogram::new();
    let mut start = None;
    loop {
        let got = match consumer_.poll(Duration::from_secs(30))? {
            Polled::Batch(got) => got,
            Polled::EndOfStream => break,
            Polled::TimedOut => bail!("no batch within 30 s"),
        };
        report.latency.record(wall_ns().saturating_sub(got.append_ns));
        if args.check_values {
            check_values(&got.batch, report.batches)?;
        }
        if report.batches % 16 == 0 {
            // Sampled: reading the heads costs a cache miss on a line the producer writes.
            backlog.record(consumer_.backlog()? + 1);
        }
        start.get_or_insert_with(Instant::now);
        report.rows += got.batch.num_rows() as u64;
        report.bytes += got.batch.get_array_memory_size() as u64;
        report.batches += 1;
        drop(got);
        if report.batches % step == 0 {
            consumer_.commit()?;
        }
    }
    consumer_.commit()?;
    report.seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    report.backlog = Some(backlog);
    worker::report(&report)?;
    Ok(())
}

/// The shared-memory consumer: `quiver bench-worker store`.
fn consume_store(args: &WorkerArgs) -> Result<()> {
    let (store, consumer, step, spin_us) = (&args.store, args.consumer, args.step, args.spin_us);
    let store = Store::open_with(OpenConfig::new(store).wait_strategy(super::wait_strategy(spin_us)))?;
    let mut reader = BatchReader::new(&store);
    store.create_object(ObjectId::sequential(READY_NS, consumer, 0), 0, &[])?.seal()?;
    let mut report = ConsumerReport::new();
    let mut start = None;
    let mut i = 0u64;
    loop {
        let Some(view) = store.get(ObjectId::sequential(BATCH_NS, 0, i), Duration::from_secs(30))? else {
            bail!("batch {i} did not arrive within 30 s");
        };
        if view.metadata() == END_MARK {
            break;
        }
        let (batch, meta) = reader.decode(view)?;
        report.latency.record(wall_ns().saturating_sub(meta.append_ns));
        if args.check_values {
            check_values(&batch, i)?;
        }
        start.get_or_insert_with(Instant::now);
        report.rows += batch.num_rows() as u64;
        report.bytes += batch.get_array_memory_size() as u64;
        report.batches += 1;
        drop(batch);
        i += 1;
        if i % step == 0 {
            store.create_object(ObjectId::sequential(PROGRESS_NS, consumer, i / step), 0, &[])?.seal()?;
        }
    }
    report.seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    worker::report(&report)?;
    Ok(())
}

/// Checks the first and last row of batch `i` of a run that fills values.
fn check_values(batch: &RecordBatch, i: u64) -> Result<()> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    let rows = batch.num_rows();
    let (seq, value) = (batch.column(0).as_primitive::<Int64Type>(), batch.column(1).as_primitive::<Float64Type>());
    for r in [0, rows - 1] {
        if (seq.value(r), value.value(r)) != seq_value(rows, i, r) {
            bail!("batch {i} row {r} holds ({}, {}), not the values filled in", seq.value(r), value.value(r));
        }
    }
    Ok(())
}

fn run_socket(args: &BenchArgs, exe: &std::path::Path, batch: &RecordBatch) -> Result<(u64, f64, Vec<ConsumerReport>)> {
    // Exclusive, random and 0700: nobody else can plant the socket's path.
    let dir = tempfile::Builder::new().prefix("quiver-bench-").tempdir()?;
    let path = dir.path().join("socket");
    let listener = UnixListener::bind(&path)?;
    let mut workers = Supervisor::of(exe);
    let mut streams = Vec::new();
    for _ in 0..args.consumers {
        workers.spawn(Spawn::new([
            OsStr::new("bench-worker"),
            "socket".as_ref(),
            "--socket".as_ref(),
            path.as_os_str(),
        ]))?;
        streams.push(listener.accept()?.0);
    }
    let mut encoder = arrow_ipc::writer::StreamEncoder::try_new(&batch.schema())?;
    let start = Instant::now();
    let mut i = 0u64;
    let mut send = |buffers: &[Buffer]| -> Result<()> {
        let len: u64 = buffers.iter().map(|b| b.len() as u64).sum();
        for s in &mut streams {
            s.write_all(&len.to_le_bytes())?;
            for b in buffers {
                s.write_all(b.as_slice())?;
            }
            s.write_all(&wall_ns().to_le_bytes())?;
        }
        Ok(())
    };
    loop {
        if args.finished(i, start, true) {
            break;
        }
        pace(args.rate, start, i);
        let buffers = encoder.encode(batch)?;
        send(&buffers)?;
        i += 1;
    }
    for s in &mut streams {
        s.write_all(&u64::MAX.to_le_bytes())?;
    }
    drop(streams);
    let reports = collect(&mut workers)?;
    Ok((i, start.elapsed().as_secs_f64(), reports))
}

/// The socket consumer: `quiver bench-worker socket`.
fn consume_socket(socket: &std::path::Path) -> Result<()> {
    let mut stream = BufReader::with_capacity(1 << 20, UnixStream::connect(socket)?);
    let mut decoder = arrow_ipc::reader::StreamDecoder::new();
    let mut report = ConsumerReport::new();
    let mut start = None;
    let mut word = [0u8; 8];
    loop {
        stream.read_exact(&mut word)?;
        let len = u64::from_le_bytes(word);
        if len == u64::MAX {
            break;
        }
        let mut bytes = vec![0u8; len as usize];
        stream.read_exact(&mut bytes)?;
        stream.read_exact(&mut word)?;
        let stamp = u64::from_le_bytes(word);
        let mut buffer = Buffer::from_vec(bytes);
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer)? {
                report.latency.record(wall_ns().saturating_sub(stamp));
                start.get_or_insert_with(Instant::now);
                report.rows += batch.num_rows() as u64;
                report.bytes += batch.get_array_memory_size() as u64;
                report.batches += 1;
            }
        }
    }
    report.seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    worker::report(&report)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::new();
        for ns in 1..=100_000u64 {
            h.record(ns * 10); // 10 ns .. 1 ms, uniform
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((450.0..560.0).contains(&p50), "{p50}");
        assert!((900.0..1100.0).contains(&p99), "{p99}");
    }
}
