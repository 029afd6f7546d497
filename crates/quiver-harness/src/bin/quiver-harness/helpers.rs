//! The helper processes of the multi-process tests and benchmarks (and of
//! `chaos`): each is a subcommand of `quiver-harness`, prints one line per
//! milestone on stdout (so a test can wait for "ready" or "holding") and
//! exits non-zero on any failure.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use quiver::shm::clock::monotonic_ns;
use quiver::shm::rand::SplitMix64;
use quiver::shm::wait;
use quiver::test_hooks::FutexPair;
use quiver::{CreateOptions, ObjectId, OpenConfig, Store, WaitStrategy};
use quiver_harness::pattern;

/// Sequential objects `(ns, 0, 0..count)` of a store given by name or path.
#[derive(clap::Args, Debug)]
pub(crate) struct Objects {
    #[arg(long)]
    store: String,
    #[arg(long, default_value_t = 1)]
    ns: u64,
    #[arg(long)]
    count: u64,
}

impl Objects {
    fn ids(&self) -> impl Iterator<Item = (u64, ObjectId)> + '_ {
        (0..self.count).map(|i| (i, ObjectId::sequential(self.ns, 0, i)))
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Helper {
    /// Create, fill and seal `count` sequential objects.
    Put {
        #[command(flatten)]
        objects: Objects,
        #[arg(long, default_value_t = 1024)]
        size: u64,
        /// How long each create may wait for space.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Wait for `count` sequential objects, check their bytes, delete them if asked.
    Get {
        #[command(flatten)]
        objects: Objects,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        #[arg(long)]
        delete: bool,
    },
    /// Decode record batches `(ns, 0, 0..count)` from the store and write
    /// them to an Arrow IPC stream file.
    ReadBatches {
        #[command(flatten)]
        objects: Objects,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Append `count` batches (columns producer, seq, value) to an existing
    /// stream, round-robin over its partitions.
    StreamProduce {
        #[arg(long)]
        store: String,
        #[arg(long)]
        stream: String,
        #[arg(long)]
        producer: i64,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 16)]
        rows: usize,
    },
    /// Start an append to `partition` of a stream, never seal it, and wait
    /// to be killed (a producer dying mid-append).
    StreamAppendAndHold {
        #[arg(long)]
        store: String,
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 0)]
        partition: u32,
    },
    /// A member of a shard-managed group: takes tasks, reads their batches,
    /// logs `task ID PARTITION START END` before reporting each done, until
    /// the end of the stream. With `--hold`, takes one task, says
    /// `holding ID`, and waits to be killed.
    ShardWorker(ShardWorkerArgs),
    /// A hostile peer: for `seconds`, writes random bytes at random places
    /// of the store file's metadata (header counters, wait cells, allocator,
    /// client slots, registry, object table, index), through the file (no
    /// mapping), as fast as it can. Spares the magic, version and ready
    /// word, the robust mutex (glibc follows pointers stored in it) and the
    /// data arena (payload a live peer is trusted not to rewrite).
    Scribble {
        #[arg(long)]
        path: std::path::PathBuf,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A victim of the hostile peer: opens the store, says `ready`, then
    /// runs every layer's operations on it for `seconds`, ignoring errors.
    HostileVictim {
        #[arg(long)]
        path: std::path::PathBuf,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// `chaos`'s producer: appends source batches `from..to`, logging each.
    ChaosProducer {
        #[arg(long)]
        store: String,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long)]
        log: std::path::PathBuf,
    },
    /// Get `count` sequential objects and hold the views until killed.
    Hold {
        #[command(flatten)]
        objects: Objects,
    },
    /// Create `count` objects without sealing them, then wait to be killed.
    CreateUnsealed {
        #[command(flatten)]
        objects: Objects,
        #[arg(long, default_value_t = 4096)]
        size: u64,
    },
    /// Random creates, seals, gets, releases and deletes on a small ID space,
    /// forever: a victim for SIGKILL at random instants.
    Hammer {
        #[arg(long)]
        store: String,
        #[arg(long, default_value_t = 1)]
        ns: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Start creating a store and wait to be killed before it is published
    /// (a creator killed part-way).
    CreateAndHang {
        #[arg(long)]
        store: String,
        #[arg(long, default_value_t = 1 << 20)]
        capacity: u64,
    },
    /// Take the store's lock, say "locked", and hold it until killed.
    HoldLock {
        #[arg(long)]
        store: String,
    },
    /// The crash-point workload: every kind of change to a store (objects
    /// created, sealed, read, deleted and evicted; a stream's appends,
    /// commits and retention; a shard group's tasks taken and reported; a
    /// checkpoint written), aborting at crash point `abort-at` (0: never).
    /// Says `points N` (how many it reached) if it ends.
    CrashRun {
        #[arg(long)]
        store: String,
        #[arg(long, default_value_t = 0)]
        abort_at: u64,
        #[arg(long)]
        checkpoint: std::path::PathBuf,
    },
    /// Take the store's lock, leave a change half-done, and abort.
    AbortInLock {
        #[arg(long)]
        store: String,
        #[arg(long, default_value_t = 0)]
        stage: u32,
    },
    /// For the wake benchmark: for each request object, busy-wait `delay-us`
    /// (so the requester is already blocked in `get`), then seal a reply
    /// holding the CLOCK_MONOTONIC time of the seal.
    Reply {
        #[arg(long)]
        store: String,
        /// Pin to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
        /// Spin this many microseconds before parking (0: park at once).
        #[arg(long, default_value_t = 0)]
        spin_us: u64,
        #[arg(long, default_value_t = 10)]
        delay_us: u64,
    },
    /// The same on two bare futex words (the wake baseline).
    FutexReply {
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long)]
        cpu: Option<usize>,
        #[arg(long, default_value_t = 10)]
        delay_us: u64,
    },
}

/// `quiver-harness shard-worker`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct ShardWorkerArgs {
    #[arg(long)]
    store: String,
    #[arg(long)]
    stream: String,
    #[arg(long)]
    group: String,
    #[arg(long, default_value_t = 8)]
    shard_size: u64,
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Append one line per task to this file.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
    #[arg(long)]
    hold: bool,
    /// Also log the Kafka partition and offset of every row read
    /// (`row P O`, from the columns a Kafka source adds).
    #[arg(long, requires = "log")]
    log_kafka: bool,
    /// Do not read the batches (for the get/report benchmark).
    #[arg(long)]
    no_read: bool,
    /// Work this long on each task, after logging it and before
    /// reporting it (so a kill can land in between).
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
}

pub(crate) fn run(helper: Helper) -> Result<()> {
    match helper {
        Helper::Put { objects, size, timeout_ms } => put(&objects, size, timeout_ms),
        Helper::Get { objects, timeout_ms, delete } => get(&objects, timeout_ms, delete),
        Helper::Scribble { path, seconds, seed } => scribble(&path, seconds, seed),
        Helper::HostileVictim { path, seconds } => {
            let config = OpenConfig::at_path(&path).lock_timeout(Duration::from_millis(200));
            let store = Store::open_with(config)?;
            say("ready")?;
            let (deadline, mut rounds) = (Instant::now() + Duration::from_secs_f64(seconds), 0u64);
            while Instant::now() < deadline {
                quiver_harness::exercise_store(&store);
                rounds += 1;
            }
            say(&format!("survived {rounds} rounds"))
        }
        Helper::ChaosProducer { store, from, to, rate, log } => {
            quiver_cli::supervisor::worker::stop_with_parent()?;
            super::chaos::produce(&store, from, to, rate, &log)
        }
        Helper::Hold { objects } => hold(&objects),
        Helper::StreamProduce { store, stream, producer, count, rows } => {
            stream_produce(&store, &stream, producer, count, rows)
        }
        Helper::ShardWorker(args) => {
            quiver_cli::supervisor::worker::stop_with_parent()?;
            shard_worker(&args)
        }
        Helper::StreamAppendAndHold { store, stream, partition } => stream_append_and_hold(&store, &stream, partition),
        Helper::ReadBatches { objects, out } => read_batches(&objects, &out),
        Helper::CreateUnsealed { objects, size } => create_unsealed(&objects, size),
        Helper::Hammer { store, ns, seed } => hammer(&store, ns, seed),
        Helper::CreateAndHang { store, capacity } => {
            let _held = quiver::test_hooks::begin_store_creation(&store, capacity)?;
            say("creating")?;
            wait_to_be_killed()
        }
        Helper::HoldLock { store } => {
            Store::open(&store)?.debug_hold_lock(|| {
                let _ = say("locked");
            })?;
            Ok(())
        }
        Helper::CrashRun { store, abort_at, checkpoint } => crash_run(&store, abort_at, &checkpoint),
        Helper::AbortInLock { store, stage } => {
            // No core file: the abort is the point.
            let no_core = rustix::process::Rlimit { current: Some(0), maximum: Some(0) };
            let _ = rustix::process::setrlimit(rustix::process::Resource::Core, no_core);
            Store::open(&store)?.debug_abort_while_locked(stage)?;
            Ok(())
        }
        Helper::Reply { store, cpu, spin_us, delay_us } => reply(&store, cpu, spin_us, delay_us),
        Helper::FutexReply { file, cpu, delay_us } => futex_reply(&file, cpu, delay_us),
    }
}

/// Opens a store given by name, or by path when `spec` contains a '/'.
fn open(spec: &str) -> Result<Store> {
    let config = if spec.contains('/') { OpenConfig::at_path(spec) } else { OpenConfig::new(spec) };
    Ok(Store::open_with(config)?)
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Waits until killed (the helper's views or builders stay held).
fn wait_to_be_killed() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn put(objects: &Objects, size: u64, timeout_ms: u64) -> Result<()> {
    let store = open(&objects.store)?;
    let options = CreateOptions::new().timeout(Duration::from_millis(timeout_ms)).pinned(false);
    for (i, id) in objects.ids() {
        let mut builder = store.create_object_with(id, size, &i.to_le_bytes(), options)?;
        for (j, byte) in builder.data_mut().iter_mut().enumerate() {
            *byte = pattern(objects.ns, i, j);
        }
        builder.seal()?;
    }
    say(&format!("put {}", objects.count))
}

fn get(objects: &Objects, timeout_ms: u64, delete: bool) -> Result<()> {
    let store = open(&objects.store)?;
    for (i, id) in objects.ids() {
        let view = store
            .get(id, Duration::from_millis(timeout_ms))?
            .with_context(|| format!("object {id} was not sealed within {timeout_ms} ms"))?;
        if view.metadata() != i.to_le_bytes() {
            bail!("object {id}: wrong metadata");
        }
        if let Some(j) = view.data().iter().enumerate().position(|(j, &b)| b != pattern(objects.ns, i, j)) {
            bail!("object {id}: wrong byte at {j}");
        }
        drop(view);
        if delete {
            store.delete(id)?;
        }
    }
    say(&format!("got {}", objects.count))
}

fn read_batches(objects: &Objects, out: &std::path::Path) -> Result<()> {
    let store = open(&objects.store)?;
    let mut reader = quiver::BatchReader::new(&store);
    let mut writer = None;
    for (_, id) in objects.ids() {
        let batch = reader.get_batch(id, Duration::from_secs(10))?.with_context(|| format!("batch {id} missing"))?;
        if writer.is_none() {
            let file = std::fs::File::create(out)?;
            writer = Some(arrow_ipc::writer::StreamWriter::try_new(file, &batch.schema())?);
        }
        writer.as_mut().context("no writer")?.write(&batch)?;
    }
    if let Some(mut w) = writer {
        w.finish()?;
    }
    say(&format!("read {}", objects.count))
}

fn hold(objects: &Objects) -> Result<()> {
    let store = open(&objects.store)?;
    let mut views = Vec::new();
    for (_, id) in objects.ids() {
        views.push(store.get(id, Duration::from_secs(10))?.with_context(|| format!("object {id} missing"))?);
    }
    say("holding")?;
    wait_to_be_killed()
}

fn create_unsealed(objects: &Objects, size: u64) -> Result<()> {
    let store = open(&objects.store)?;
    let mut builders = Vec::new();
    for (_, id) in objects.ids() {
        builders.push(store.create_object(id, size, &[])?);
    }
    say("created")?;
    wait_to_be_killed()
}

fn hammer(store: &str, ns: u64, seed: u64) -> Result<()> {
    let store = open(store)?;
    let mut rng = SplitMix64::new(seed);
    let mut views = Vec::new();
    say("hammering")?;
    loop {
        let id = ObjectId::sequential(ns, 0, rng.below(64));
        match rng.below(4) {
            0 => {
                let size = 64 + rng.below(16 << 10);
                match store.create_object(id, size, b"h") {
                    Ok(mut b) => {
                        b.data_mut().fill(id.as_bytes()[16]);
                        if rng.below(8) != 0 {
                            b.seal()?;
                        }
                    }
                    Err(quiver::StoreError::AlreadyExists(_) | quiver::StoreError::StoreFull { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            1 => {
                if let Some(v) = store.get(id, Duration::ZERO)? {
                    if v.data().iter().any(|&b| b != id.as_bytes()[16]) {
                        bail!("object {id} has bytes that were never written to it");
                    }
                    views.push(v);
                }
            }
            2 => {
                if !views.is_empty() {
                    views.swap_remove(rng.below(views.len() as u64) as usize);
                }
            }
            _ => match store.delete(id) {
                Ok(()) | Err(quiver::StoreError::NotFound(_) | quiver::StoreError::NotSealed(_)) => {}
                Err(e) => return Err(e.into()),
            },
        }
    }
}

fn pin_to(cpu: Option<usize>) -> Result<()> {
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).context("pin to a CPU")?;
    }
    Ok(())
}

/// The request and reply IDs of the wake benchmark's round `i`.
fn request_id(i: u64) -> ObjectId {
    ObjectId::sequential(0xB0, 0, i)
}
fn reply_id(i: u64) -> ObjectId {
    ObjectId::sequential(0xB1, 0, i)
}

fn busy_wait(micros: u64) {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn reply(store: &str, cpu: Option<usize>, spin_us: u64, delay_us: u64) -> Result<()> {
    pin_to(cpu)?;
    let strategy = match spin_us {
        0 => WaitStrategy::Park,
        us => WaitStrategy::SpinThenPark { budget: Duration::from_micros(us) },
    };
    let store = Store::open_with(OpenConfig::new(store).wait_strategy(strategy))?;
    say("ready")?;
    for i in 0.. {
        let request = store.get(request_id(i), Duration::from_secs(30))?.context("no request within 30 s")?;
        drop(request);
        store.delete(request_id(i))?;
        busy_wait(delay_us);
        let mut reply = store.create_object(reply_id(i), 8, &[])?;
        reply.data_mut().copy_from_slice(&monotonic_ns().to_le_bytes());
        reply.seal()?;
    }
    Ok(())
}

fn futex_reply(file: &std::path::Path, cpu: Option<usize>, delay_us: u64) -> Result<()> {
    pin_to(cpu)?;
    let pair = FutexPair::open(file)?;
    let (request, reply) = (pair.word(0), pair.word(1));
    say("ready")?;
    for round in 1u32.. {
        let deadline = Instant::now() + Duration::from_secs(30);
        // Acquire pairs with the requester's Release store.
        while request.load(Ordering::Acquire) != round {
            if Instant::now() > deadline {
                bail!("no request within 30 s");
            }
            wait::wait(request, round - 1, Some(Duration::from_millis(100)));
        }
        busy_wait(delay_us);
        pair.stamp().store(monotonic_ns(), Ordering::Relaxed);
        // Release: the requester that sees `round` also sees the stamp.
        reply.store(round, Ordering::Release);
        wait::wake_all(reply);
    }
    Ok(())
}

/// A batch of the stream test schema: `rows` rows of (producer, seq, value),
/// seq counting from `first`.
fn producer_batch(producer: i64, first: i64, rows: usize) -> Result<arrow_array::RecordBatch> {
    use arrow_array::{ArrayRef, Float64Array, Int64Array};
    use std::sync::Arc;
    let seq: Vec<i64> = (first..first + rows as i64).collect();
    let columns: [(&str, ArrayRef); 3] = [
        ("producer", Arc::new(Int64Array::from(vec![producer; rows]))),
        ("seq", Arc::new(Int64Array::from(seq.clone()))),
        ("value", Arc::new(Float64Array::from_iter_values(seq.iter().map(|&s| s as f64 * 0.5)))),
    ];
    Ok(arrow_array::RecordBatch::try_from_iter(columns)?)
}

fn stream_produce(store: &str, stream: &str, producer: i64, count: u64, rows: usize) -> Result<()> {
    let store = open(store)?;
    let stream = quiver::Stream::open(&store, stream)?;
    let mut writer = stream.producer()?;
    say("ready")?;
    for i in 0..count {
        writer.append(&producer_batch(producer, (i * rows as u64) as i64, rows)?)?;
    }
    say(&format!("appended {count}"))
}

fn stream_append_and_hold(store: &str, stream: &str, partition: u32) -> Result<()> {
    let store = open(store)?;
    let stream = quiver::Stream::open(&store, stream)?;
    let mut producer = stream.producer()?;
    let (_builder, appended) = producer.debug_begin_append(partition, &producer_batch(-1, 0, 4)?)?;
    say(&format!("holding {}", appended.offset))?;
    wait_to_be_killed()
}

fn shard_worker(args: &ShardWorkerArgs) -> Result<()> {
    let config = quiver::ShardConfig::new()
        .shard_size(quiver::ShardSize::Batches(args.shard_size))
        .lease(Duration::from_millis(args.lease_ms));
    let (hold, no_read, work) = (args.hold, args.no_read, Duration::from_millis(args.work_ms));
    let store = open(&args.store)?;
    let stream = quiver::Stream::open(&store, &args.stream)?;
    let mut manager = quiver::ShardManager::join(&stream, &args.group, config)?;
    let mut log = match &args.log {
        Some(path) => Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    say("ready")?;
    let (mut tasks, started) = (0u64, Instant::now());
    loop {
        // A peer stopped inside the store's lock (chaos stops them) makes a
        // change wait: its `LockTimeout` is waited out, as a user would.
        let task = match stopped_peer_waited_out(|| manager.next_task(Duration::from_secs(30)))? {
            quiver::Next::Task(task) => task,
            quiver::Next::End => break,
            quiver::Next::TimedOut => bail!("no task within 30 s"),
        };
        if hold {
            say(&format!("holding {}", task.id))?;
            wait_to_be_killed();
        }
        let mut rows = String::new();
        if !no_read {
            let Some(batches) = stopped_peer_waited_out(|| manager.read_task(&task, Duration::from_secs(30)))? else {
                bail!("the batches of task {} did not arrive within 30 s", task.id);
            };
            let expected = task.end - task.start;
            if batches.len() as u64 > expected {
                bail!("task {} read {} batches for {expected} offsets", task.id, batches.len());
            }
            if args.log_kafka {
                for got in &batches {
                    kafka_rows(&got.batch, &mut rows)?;
                }
            }
        }
        if let Some(log) = &mut log {
            writeln!(log, "{rows}task {} {} {} {}", task.id, task.partition, task.start, task.end)?;
            log.flush()?;
        }
        if !work.is_zero() {
            std::thread::sleep(work);
        }
        stopped_peer_waited_out(|| manager.report(task, quiver::Outcome::Done))?;
        tasks += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    say(&format!("{{\"tasks\":{tasks},\"seconds\":{seconds}}}"))
}

/// Runs `f` again while it fails because another process holds the
/// store's lock stopped (`LockTimeout`), for up to ten minutes: what a
/// worker that outlives a stopped peer does.
pub(crate) fn stopped_peer_waited_out<T, E: LockTimedOut>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match f() {
            Err(e) if e.lock_timed_out() && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            other => return other,
        }
    }
}

/// Errors that can be a lock timeout.
pub(crate) trait LockTimedOut {
    fn lock_timed_out(&self) -> bool;
}

impl LockTimedOut for quiver::StreamError {
    fn lock_timed_out(&self) -> bool {
        matches!(self, quiver::StreamError::Store(quiver::StoreError::LockTimeout { .. }))
    }
}

impl LockTimedOut for quiver::ShardError {
    fn lock_timed_out(&self) -> bool {
        matches!(self, quiver::ShardError::Stream(e) if e.lock_timed_out())
    }
}

/// Appends `row P O` for each row's `kafka_partition` and `kafka_offset`.
fn kafka_rows(batch: &arrow_array::RecordBatch, out: &mut String) -> Result<()> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use std::fmt::Write as _;
    let (Some(partitions), Some(offsets)) =
        (batch.column_by_name("kafka_partition"), batch.column_by_name("kafka_offset"))
    else {
        bail!("--log-kafka: the batch has no kafka_partition and kafka_offset columns");
    };
    let (Some(partitions), Some(offsets)) =
        (partitions.as_primitive_opt::<Int32Type>(), offsets.as_primitive_opt::<Int64Type>())
    else {
        bail!("--log-kafka: kafka_partition is not Int32 or kafka_offset not Int64");
    };
    for r in 0..batch.num_rows() {
        writeln!(out, "row {} {}", partitions.value(r), offsets.value(r))?;
    }
    Ok(())
}

fn scribble(path: &std::path::Path, seconds: f64, seed: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, 56)?; // the header's arena offset
    let arena = u64::from_le_bytes(word).min(file.metadata()?.len());
    // Spared: magic, version and ready word (0..16), the mutex (1024..1088).
    let spans = [(16u64, 1024u64), (1088, arena)];
    let total: u64 = spans.iter().map(|(a, b)| b.saturating_sub(*a)).sum();
    if total == 0 {
        bail!("no metadata to scribble on");
    }
    let mut rng = SplitMix64::new(seed);
    let mut next = move || rng.next_u64();
    say("scribbling")?;
    let (deadline, mut writes) = (Instant::now() + Duration::from_secs_f64(seconds), 0u64);
    while Instant::now() < deadline {
        let mut at = next() % total;
        let offset = spans
            .iter()
            .find_map(|&(a, b)| {
                let len = b.saturating_sub(a);
                if at < len {
                    Some(a + at)
                } else {
                    at -= len;
                    None
                }
            })
            .unwrap_or(16);
        let len = (next() % 8 + 1) as usize;
        let bytes = next().to_le_bytes();
        file.write_at(&bytes[..len], offset)?;
        writes += 1;
    }
    say(&format!("scribbled {writes} times"))
}

/// The crash-point workload (see `Helper::CrashRun`). Deterministic: the
/// same points are reached in the same order on every run.
fn crash_run(store: &str, abort_at: u64, checkpoint: &std::path::Path) -> Result<()> {
    use quiver::stream::{ConsumerConfig, Polled, Stream, StreamConfig};
    use quiver::{Next, Outcome, ShardConfig, ShardManager, ShardSize};
    // No core file: the abort is the point.
    let no_core = rustix::process::Rlimit { current: Some(0), maximum: Some(0) };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Core, no_core);
    let store = Store::open(store)?;
    quiver::test_hooks::crash_at(abort_at);
    // Objects: more than the store holds, so that the oldest are evicted.
    for i in 0..12u64 {
        let id = ObjectId::sequential(3, 0, i);
        let mut b = store.create_object(id, 48 << 10, b"meta")?;
        b.data_mut().fill(i as u8);
        b.seal()?;
        if i % 3 == 0 {
            let view = store.get(id, Duration::ZERO)?;
            drop(view);
        }
        if i % 4 == 1 {
            store.delete(id)?;
        }
    }
    let pinned = ObjectId::sequential(3, 1, 0);
    store.create_object_with(pinned, 1024, b"", CreateOptions::new().pinned(true))?.seal()?;
    store.unpin(pinned)?;
    // A stream: appends, a consumer's commits, retention.
    let stream = Stream::create(&store, StreamConfig::new("s", quiver_harness::seq_schema()).partitions(2).group("g"))?;
    let mut producer = stream.producer()?;
    for i in 0..8 {
        producer.append(&quiver_harness::seq_batch(0, i * 4, 4))?;
    }
    let mut consumer = stream.consumer(ConsumerConfig::group("g"))?;
    for _ in 0..4 {
        if let Polled::Batch(_) = consumer.poll(Duration::ZERO)? {
            consumer.commit()?;
        }
    }
    // A shard group of another stream: tasks taken, done, failed; a checkpoint.
    let shards = Stream::create(&store, StreamConfig::new("t", quiver_harness::seq_schema()).group("w"))?;
    let mut appender = shards.producer()?;
    for i in 0..6 {
        appender.append(&quiver_harness::seq_batch(1, i * 4, 4))?;
    }
    shards.close()?;
    let mut manager = ShardManager::join(&shards, "w", ShardConfig::new().shard_size(ShardSize::Batches(2)))?;
    let mut failed_once = false;
    loop {
        match manager.get_task()? {
            Next::Task(task) if !failed_once => {
                failed_once = true;
                manager.report(task, Outcome::Failed)?;
            }
            Next::Task(task) => manager.report(task, Outcome::Done)?,
            Next::End => break,
            Next::TimedOut => bail!("a closed stream's shard group had no task and no end"),
        }
    }
    manager.checkpoint(checkpoint)?;
    println!("points {}", quiver::test_hooks::crash_points_reached());
    Ok(())
}
