//! `quiver-harness chaos`: proof under faults. A producer process and worker
//! processes in several shard-managed groups run on one store while this
//! driver SIGKILLs random processes at random moments and restarts them;
//! every few rounds it kills everything, removes the store, restores every
//! group from its last checkpoint into a new store and replays the source.
//! At the end it checks, from an independent record (the producer's log of
//! what it appended, and the workers' logs of what they processed):
//!
//! - every batch the producer logged was processed by every group;
//! - a batch processed twice by a group was held by a killed process at
//!   least once (the only source of duplicates at-least-once allows);
//! - once the stream is drained and removed, no object and no byte is left
//!   allocated (but the schema object);
//! - no process waited past its deadline.
//!
//! How offsets survive a disaster: the driver keeps, per partition, which
//! source sequence number lives at each offset (from the producer's log and
//! its own replays). A replay appends exactly that, with an empty batch
//! where the offset held nothing known (a hole, or an append the producer
//! died before logging; the restarted producer appends those again), so
//! the restored checkpoints' offsets name the same batches.
//!
//! So one table serves every epoch: an epoch ended by a disaster agrees
//! with it below the offset where the replay stopped (its `limit`), and
//! knew nothing at or past it. The driver's memory is this table (8 bytes
//! per batch), the list of logs, and nothing per disaster: the store of
//! an epoch is unmapped when it ends (its observers are dropped; the store
//! is removed right after, so what their drop writes into it is never
//! read). It samples its own resident and shared memory every round and
//! reports the peaks, and how many removed stores it still maps at the end.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use quiver::shm::rand::SplitMix64;
use quiver::{ShardConfig, ShardManager, ShardSize, Store, StoreConfig, Stream, StreamConfig};
use quiver_cli::supervisor::{Spawn, Supervisor};

#[derive(clap::Args, Debug)]
pub(crate) struct ChaosArgs {
    /// Kill rounds.
    #[arg(long, default_value_t = 30)]
    rounds: u32,
    /// Or run kill rounds for this long (seconds) instead.
    #[arg(long)]
    seconds: Option<f64>,
    /// Batches the source holds.
    #[arg(long, default_value_t = 6000)]
    batches: u64,
    /// The producer appends at most this many batches per second, so that
    /// the kills land while it works.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Partitions of the stream.
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Shard-managed groups, each of which must process everything.
    #[arg(long, default_value_t = 2)]
    groups: u32,
    /// Worker processes per group.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Every this many rounds, kill everything and restore from checkpoints.
    #[arg(long, default_value_t = 8)]
    disaster_every: u32,
    /// Of the other rounds, this percentage stops a random process
    /// (SIGSTOP) for a while, possibly inside the store's lock or past its
    /// leases, and resumes it (SIGCONT), instead of killing one.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=100))]
    stop_percent: u64,
    /// Longest pause between rounds, in milliseconds (each is 30 ms plus a
    /// random part of this).
    #[arg(long, default_value_t = 150)]
    pause_ms: u64,
    /// The random seed (printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object at the end.
    #[arg(long)]
    json: bool,
}

const STREAM: &str = "chaos";
/// How long any process may take to get ready, finish, or be reaped.
const DEADLINE: Duration = Duration::from_secs(120);

/// The source's schema: one `seq` column.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("seq", DataType::Int64, false)]))
}

/// Batch `seq` of the source (1 to 4 rows, all holding `seq`), or an empty
/// placeholder.
pub(crate) fn source_batch(seq: Option<u64>) -> Result<RecordBatch> {
    let values: Vec<i64> = match seq {
        Some(seq) => vec![seq as i64; (seq % 4 + 1) as usize],
        None => Vec::new(),
    };
    Ok(RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values)) as ArrayRef])?)
}

/// The chaos producer: `quiver-harness chaos-producer`. Appends source batches
/// `from..to` (batch `seq` to partition `seq % partitions`), logging
/// `seq partition offset` after each append; closes the stream at the end.
pub(crate) fn produce(store: &str, from: u64, to: u64, rate: u64, log: &Path) -> Result<()> {
    use std::io::Write;
    let store = Store::open(store)?;
    let stream = Stream::open(&store, STREAM)?;
    let mut producer = stream.producer()?;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let started = Instant::now();
    for seq in from..to {
        if rate > 0 {
            let due = started + Duration::from_secs_f64((seq - from) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let batch = source_batch(Some(seq))?;
        let partition = (seq % stream.partitions() as u64) as u32;
        // A worker stopped inside the lock (chaos stops them) is waited out.
        let appended = super::helpers::stopped_peer_waited_out(|| producer.append_to(partition, &batch))?;
        writeln!(log, "{seq} {} {}", appended.partition, appended.offset)?;
        log.flush()?;
    }
    super::helpers::stopped_peer_waited_out(|| stream.close())?;
    Ok(())
}

/// A process the driver runs, and the log it writes.
struct Proc {
    /// Its index in the driver's supervisor.
    worker: usize,
    log: PathBuf,
    /// `Some(g)` for a worker of group `g`; `None` for the producer.
    group: Option<u32>,
}

/// No known source batch at this offset (a hole, an empty replay batch,
/// or an append whose producer died before logging it).
const UNKNOWN: u64 = u64::MAX;

/// What the driver knows of a run.
#[derive(Default)]
struct Record {
    /// Per partition: offset → the source batch there ([`UNKNOWN`] if none
    /// is known). The same in every epoch, below each epoch's limit.
    table: Vec<Vec<u64>>,
    /// Per epoch, per partition: offsets at or past this were not (yet)
    /// replayed into the next epoch, so they meant something else in this
    /// one (`u64::MAX` for the current epoch).
    limits: Vec<Vec<u64>>,
    /// Per producer log: the bytes of it already read into the table.
    absorbed: HashMap<PathBuf, u64>,
    /// One past the highest source batch logged.
    next_seq: u64,
    /// Logs of processes that were killed or stopped (their work may be
    /// redone: a stopped member's leases run out).
    killed: HashSet<PathBuf>,
    /// Logs written in epochs that ended in a disaster.
    disaster_epochs: HashSet<usize>,
    /// Every worker log: (epoch, group, path).
    worker_logs: Vec<(usize, u32, PathBuf)>,
    /// Every producer log: (epoch, path).
    producer_logs: Vec<(usize, PathBuf)>,
}

struct Driver<'a> {
    args: &'a ChaosArgs,
    workers: Supervisor,
    dir: PathBuf,
    epoch: usize,
    store_name: String,
    incarnation: u64,
    procs: Vec<Proc>,
    record: Record,
    rng: SplitMix64,
    /// Every store made, removed (with the log directory) when the driver
    /// ends, unless a failure asked to keep the evidence.
    stores: Vec<String>,
    /// A run that failed keeps its logs, checkpoints and last store.
    keep: bool,
}

impl Drop for Driver<'_> {
    fn drop(&mut self) {
        // The supervisor kills and reaps the processes when it drops, after this.
        for name in &self.stores {
            if !(self.keep && *name == self.store_name) {
                let _ = Store::remove(name);
            }
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Driver<'_> {
    fn random(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    fn checkpoint_path(&self, g: u32) -> PathBuf {
        self.dir.join(format!("group-{g}.qvck"))
    }

    fn fresh_log(&mut self, what: &str) -> PathBuf {
        self.incarnation += 1;
        self.dir.join(format!("e{}-{what}-{}.log", self.epoch, self.incarnation))
    }

    /// Reads what the current epoch's producer logs say since the last
    /// read into the table.
    fn absorb_producer_logs(&mut self) {
        let epoch = self.epoch;
        let record = &mut self.record;
        for (e, path) in &record.producer_logs {
            if *e != epoch {
                continue;
            }
            let read = record.absorbed.entry(path.clone()).or_default();
            let (lines, end) = complete_lines_from(path, *read);
            *read = end;
            for line in lines {
                let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                if let [seq, p, offset] = f[..] {
                    set(&mut record.table, p, offset, seq);
                    record.next_seq = record.next_seq.max(seq + 1);
                }
            }
        }
    }

    /// The next source batch the producer has not logged yet.
    fn next_seq(&mut self) -> u64 {
        self.absorb_producer_logs();
        self.record.next_seq
    }

    fn spawn_producer(&mut self) -> Result<()> {
        let from = self.next_seq();
        if from >= self.args.batches {
            // Everything was appended (in an earlier epoch, perhaps): the
            // stream only needs its end.
            let store = Store::open(&self.store_name)?;
            Stream::open(&store, STREAM)?.close()?;
            return Ok(());
        }
        let log = self.fresh_log("producer");
        let (from, to, rate) = (from.to_string(), self.args.batches.to_string(), self.args.rate.to_string());
        let args = ["chaos-producer", "--store", &self.store_name, "--from", &from, "--to", &to, "--rate", &rate];
        let spawn = Spawn::new(args.iter().map(OsStr::new).chain([OsStr::new("--log"), log.as_os_str()])).quiet();
        let worker = self.workers.spawn(spawn).context("start the producer")?;
        self.record.producer_logs.push((self.epoch, log.clone()));
        self.procs.push(Proc { worker, log, group: None });
        Ok(())
    }

    fn spawn_worker(&mut self, g: u32) -> Result<()> {
        let log = self.fresh_log(&format!("g{g}"));
        let group = format!("g{g}");
        let args = ["shard-worker", "--store", &self.store_name, "--stream", STREAM, "--group", &group];
        let args = args.into_iter().chain(["--shard-size", "8", "--work-ms", "1"]).map(OsStr::new);
        let spawn = Spawn::new(args.chain([OsStr::new("--log"), log.as_os_str()])).quiet();
        let worker = self.workers.spawn(spawn).context("start a worker")?;
        self.record.worker_logs.push((self.epoch, g, log.clone()));
        self.procs.push(Proc { worker, log, group: Some(g) });
        Ok(())
    }

    /// A new store for this epoch: the stream, its groups restored from the
    /// last checkpoints (if any), the known source replayed at its offsets.
    fn start_epoch(&mut self, restore: bool) -> Result<(Store, Vec<ShardManager>)> {
        self.store_name = format!("chaos-{}-{}", std::process::id(), self.epoch);
        let store = Store::create(StoreConfig::new(&self.store_name).capacity(64 << 20).max_objects(1 << 16))?;
        self.stores.push(self.store_name.clone());
        let mut config = StreamConfig::new(STREAM, schema()).partitions(self.args.partitions);
        for g in 0..self.args.groups {
            config = config.group(format!("g{g}"));
        }
        let stream = Stream::create(&store, config)?;
        let shard_config = ShardConfig::new().shard_size(ShardSize::Batches(8));
        let mut observers = Vec::new();
        for g in 0..self.args.groups {
            let group = format!("g{g}");
            let observer = match restore {
                true => ShardManager::restore(&stream, &group, self.checkpoint_path(g))?,
                false => ShardManager::join(&stream, &group, shard_config)?,
            };
            observer.checkpoint(self.checkpoint_path(g))?;
            observers.push(observer);
        }
        let partitions = self.args.partitions as usize;
        self.record.table.resize(partitions, Vec::new());
        if restore {
            // Up to the last offset any checkpoint cut (an append the
            // producer died before logging may have been cut, even done).
            let mut cut = vec![0u64; self.args.partitions as usize];
            for g in 0..self.args.groups {
                let checkpoint = quiver::Checkpoint::read(&self.checkpoint_path(g))?;
                for (p, &c) in checkpoint.next_cut.iter().enumerate() {
                    cut[p] = cut[p].max(c);
                }
            }
            let mut producer = stream.producer()?;
            let mut limits = Vec::with_capacity(partitions);
            for (p, &cut) in cut.iter().enumerate() {
                let known = &self.record.table[p];
                let last_known = known.iter().rposition(|&seq| seq != UNKNOWN).map_or(0, |o| o as u64 + 1);
                let end = last_known.max(cut);
                limits.push(end);
                for offset in 0..end {
                    let seq = known.get(offset as usize).copied().filter(|&seq| seq != UNKNOWN);
                    let appended = producer.append_to(p as u32, &source_batch(seq)?)?;
                    if offset % 1024 == 1023 {
                        // What the restored groups had done is freed as it is replayed.
                        stream.enforce_retention()?;
                    }
                    if appended.offset != offset {
                        bail!("the replay put partition {p}'s offset {offset} at {}", appended.offset);
                    }
                }
                // Offsets past the replay meant something else in the
                // epoch that ended: forget them (the restarted producer
                // appends there anew).
                self.record.table[p].truncate(end as usize);
            }
            // The epoch that ended agrees with the table below these.
            if let Some(last) = self.record.limits.last_mut() {
                *last = limits;
            }
        }
        self.record.limits.push(vec![u64::MAX; partitions]);
        Ok((store, observers))
    }

    fn kill(&mut self, i: usize) {
        let proc = self.procs.remove(i);
        self.workers.kill(proc.worker);
        self.record.killed.insert(proc.log);
    }

    /// Stops process `i` (SIGSTOP) for `pause`, wherever it is (inside the
    /// store's lock, holding leases), then resumes it (SIGCONT).
    fn stop_for(&mut self, i: usize, pause: Duration) {
        let proc = &self.procs[i];
        let Some(pid) = self.workers.pid(proc.worker).and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
            return;
        };
        self.record.killed.insert(proc.log.clone());
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::STOP);
        std::thread::sleep(pause);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
    }
}

/// Records that source batch `seq` lives at `offset` of partition `p`.
fn set(table: &mut [Vec<u64>], p: u64, offset: u64, seq: u64) {
    let Some(part) = table.get_mut(p as usize) else { return };
    let at = offset as usize;
    if part.len() <= at {
        part.resize(at + 1, UNKNOWN);
    }
    part[at] = seq;
}

/// The complete lines of a log (a killed writer may leave half of one).
fn complete_lines(path: &Path) -> Vec<String> {
    complete_lines_from(path, 0).0
}

/// The complete lines of a log from byte `from` on, and the byte after the
/// last of them.
fn complete_lines_from(path: &Path, from: u64) -> (Vec<String>, u64) {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.seek(std::io::SeekFrom::Start(from)).and_then(|_| f.read_to_string(&mut text)));
    if read.is_err() {
        return (Vec::new(), from);
    }
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    (text[..end].lines().map(str::to_string).collect(), from + end as u64)
}

/// The driver's own memory, from /proc/self/status: resident and shared
/// (mapped store files) KiB.
fn own_memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("RssShmem:"))
}

/// Mappings this process still holds of files that were removed: a store
/// of an ended epoch that something failed to unmap.
fn removed_mappings() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut files: Vec<&str> =
        maps.lines().filter(|l| l.ends_with(" (deleted)") && l.contains("quiver-chaos-")).collect();
    files.sort_unstable();
    files.dedup();
    files.len()
}

pub(crate) fn run(args: ChaosArgs) -> Result<()> {
    if args.partitions == 0 || args.groups == 0 || args.workers == 0 || args.batches == 0 {
        bail!("--partitions, --groups, --workers and --batches must be at least 1");
    }
    if let Some(seconds) = args.seconds {
        if !(seconds.is_finite() && seconds > 0.0) {
            bail!("--seconds must be a number of seconds above zero, not {seconds}");
        }
    }
    let seed = args.seed.unwrap_or_else(quiver::shm::clock::wall_ns);
    super::signals::install();
    // Exclusive, random, 0700: a directory planted at a predictable name
    // (or a symlink there) is never reused. Removed by the driver's drop.
    let dir = tempfile::Builder::new().prefix("quiver-chaos-").tempdir()?.keep();
    let mut d = Driver {
        args: &args,
        workers: Supervisor::new()?,
        dir,
        epoch: 0,
        store_name: String::new(),
        incarnation: 0,
        procs: Vec::new(),
        record: Record::default(),
        rng: SplitMix64::new(seed),
        stores: Vec::new(),
        keep: false,
    };
    let outcome = drive(&mut d, &args, seed);
    if let Err(e) = &outcome {
        // Keep what explains the failure: the logs, the checkpoints, the
        // store as it was (and its state, in a file beside the logs).
        d.keep = true;
        if let Ok(store) = Store::open(&d.store_name) {
            let mut state = format!("{e:#}\n\n");
            if let Ok(stats) = Stream::open(&store, STREAM).and_then(|s| s.stats()) {
                state += &format!("{stats:#?}\n");
            }
            if let Ok(groups) = quiver::shard::list(&store) {
                state += &format!("{groups:#?}\n");
            }
            let _ = std::fs::write(d.dir.join("failure-state.txt"), state);
        }
        eprintln!(
            "chaos: kept the evidence: logs and checkpoints in {}, the last store as {} (remove both by hand)",
            d.dir.display(),
            d.store_name
        );
    }
    outcome
}

/// The run itself: epochs, kills, disasters, then the drain and the checks.
fn drive(d: &mut Driver<'_>, args: &ChaosArgs, seed: u64) -> Result<()> {
    let started = Instant::now();
    let (mut store, mut observers) = d.start_epoch(false)?;
    let (mut peak_rss, mut peak_shared) = own_memory();
    d.spawn_producer()?;
    for g in 0..args.groups {
        for _ in 0..args.workers {
            d.spawn_worker(g)?;
        }
    }
    let (mut kills, mut stops, mut restores, mut round) = (0u64, 0u64, 0u64, 0u32);
    let more = |round: u32| match args.seconds {
        Some(s) => started.elapsed().as_secs_f64() < s,
        None => round < args.rounds,
    };
    while more(round) {
        super::signals::interrupted()?;
        round += 1;
        let pause = Duration::from_millis(30 + d.random(args.pause_ms.max(1)));
        // A stop round stops a process for the pause instead of sleeping.
        let disaster = args.disaster_every > 0 && round % args.disaster_every == 0;
        let stopping = !d.procs.is_empty() && !disaster && d.random(100) < args.stop_percent;
        if stopping {
            let victim = d.random(d.procs.len() as u64) as usize;
            // Up to four pauses: long enough that the others meet its lock.
            let pause = pause + Duration::from_millis(d.random(3 * args.pause_ms.max(1)));
            d.stop_for(victim, pause);
            stops += 1;
        } else {
            std::thread::sleep(pause);
        }
        let (rss, shared) = own_memory();
        (peak_rss, peak_shared) = (peak_rss.max(rss), peak_shared.max(shared));
        for (g, observer) in observers.iter().enumerate() {
            observer.checkpoint(d.checkpoint_path(g as u32))?;
        }
        if args.disaster_every > 0 && round % args.disaster_every == 0 {
            // Everything dies; the store goes; the checkpoints remain.
            while !d.procs.is_empty() {
                d.kill(0);
            }
            kills += 1;
            d.absorb_producer_logs();
            d.record.disaster_epochs.insert(d.epoch);
            // The observers go with their store: what their drop writes
            // (leaving their groups) lands in a store removed next, so it
            // is as if they were killed, and the mapping is released.
            observers.clear();
            drop(store);
            let _ = Store::remove(&d.store_name);
            d.epoch += 1;
            (store, observers) = d.start_epoch(true)?;
            restores += 1;
            d.spawn_producer()?;
            for g in 0..args.groups {
                for _ in 0..args.workers {
                    d.spawn_worker(g)?;
                }
            }
            continue;
        }
        // One random process dies and comes back.
        if d.procs.is_empty() || stopping {
            continue;
        }
        let victim = d.random(d.procs.len() as u64) as usize;
        let group = d.procs[victim].group;
        d.kill(victim);
        kills += 1;
        match group {
            None => d.spawn_producer()?,
            Some(g) => d.spawn_worker(g)?,
        }
    }
    // Let everything finish: the producer appends the rest and closes the
    // stream; the workers drain their groups and stop at the end.
    if !d.procs.iter().any(|p| p.group.is_none()) {
        d.spawn_producer()?;
    }
    // The producer still has the rest of the source to append, at its rate.
    let left = args.batches.saturating_sub(d.next_seq());
    let appending = Duration::from_secs_f64(if args.rate > 0 { left as f64 / args.rate as f64 } else { 0.0 });
    let deadline = Instant::now() + appending + DEADLINE;
    for p in 0..d.procs.len() {
        let proc = &d.procs[p];
        loop {
            if let Some(status) = d.workers.exited(proc.worker)? {
                if !status.success() {
                    bail!("a process failed ({status}); its log is {} (seed {seed})", proc.log.display());
                }
                break;
            }
            if Instant::now() > deadline {
                bail!("a process did not finish within {DEADLINE:?} (seed {seed})");
            }
            super::signals::interrupted()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    d.absorb_producer_logs();
    let removed_still_mapped = removed_mappings();
    let report = verify(d, &store, observers, args, seed)?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "seed": seed, "rounds": round, "kills": kills, "stops": stops, "restores": restores,
                "batches": args.batches,
                "duplicates": report.duplicates, "leaked_bytes": report.leaked_bytes,
                "leaked_objects": report.leaked_objects, "seconds": seconds, "ok": true,
                "peak_rss_kib": peak_rss, "peak_shared_kib": peak_shared,
                "removed_stores_still_mapped": removed_still_mapped,
            })
        );
    } else {
        println!(
            "chaos: {round} rounds, {kills} kills, {stops} stops, {restores} restores, {} batches, {} duplicates, {} leaked bytes in {seconds:.1} s, \
             driver peak {} MiB resident, {} MiB shared, {removed_still_mapped} removed stores still mapped (seed {seed}): ok",
            args.batches,
            report.duplicates,
            report.leaked_bytes,
            peak_rss / 1024,
            peak_shared / 1024
        );
    }
    Ok(())
}

struct Report {
    duplicates: u64,
    leaked_bytes: u64,
    leaked_objects: u64,
}

fn verify(d: &Driver<'_>, store: &Store, observers: Vec<ShardManager>, args: &ChaosArgs, seed: u64) -> Result<Report> {
    let fail = |why: String| anyhow::anyhow!("{why} (seed {seed})");
    // What was produced: every logged source batch.
    let mut produced = HashSet::new();
    for (_, path) in &d.record.producer_logs {
        for line in complete_lines(path) {
            if let Some(seq) = line.split_whitespace().next().and_then(|s| s.parse::<u64>().ok()) {
                produced.insert(seq);
            }
        }
    }
    if produced.len() as u64 != args.batches {
        return Err(fail(format!("the producer logged {} of {} batches", produced.len(), args.batches)));
    }
    // What each group processed, and by whom.
    let mut duplicates = 0;
    for g in 0..args.groups {
        let mut seen: HashMap<u64, Vec<bool>> = HashMap::new();
        for (epoch, group, path) in &d.record.worker_logs {
            if *group != g {
                continue;
            }
            let excused = d.record.killed.contains(path) || d.record.disaster_epochs.contains(epoch);
            let limits = &d.record.limits[*epoch];
            for line in complete_lines(path) {
                let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                let [_, p, start, end] = f[..] else { continue };
                let (Some(part), Some(&limit)) = (d.record.table.get(p as usize), limits.get(p as usize)) else {
                    continue;
                };
                for offset in start..end.min(limit) {
                    match part.get(offset as usize) {
                        Some(&seq) if seq != UNKNOWN => seen.entry(seq).or_default().push(excused),
                        _ => {}
                    }
                }
            }
        }
        for seq in &produced {
            let Some(by) = seen.get(seq) else {
                return Err(fail(format!("group g{g} never processed source batch {seq}")));
            };
            if by.len() > 1 {
                duplicates += by.len() as u64 - 1;
                if !by.iter().any(|&excused| excused) {
                    return Err(fail(format!("group g{g} processed batch {seq} twice with no process killed")));
                }
            }
        }
    }
    // Drained: every group committed everything; then nothing is left.
    let stream = Stream::open(store, STREAM)?;
    let stats = stream.stats()?;
    for group in &stats.groups {
        let heads: Vec<u64> = stats.partitions.iter().map(|p| p.head).collect();
        if group.committed != heads {
            return Err(fail(format!("group {} committed {:?} of {heads:?}", group.name, group.committed)));
        }
    }
    drop(observers);
    drop(stream);
    Stream::remove(store, STREAM)?;
    let after = store.stats()?;
    let schema_objects = store.list()?.into_iter().filter(|o| o.id.as_bytes()[0] == b'F').collect::<Vec<_>>();
    let schema_payload: u64 = schema_objects.iter().map(|o| o.data_size + o.metadata_size).sum();
    let leaked_objects = after.objects - schema_objects.len() as u64;
    let leaked_bytes = after.payload - schema_payload;
    if leaked_objects != 0 || leaked_bytes != 0 {
        return Err(fail(format!("{leaked_objects} objects and {leaked_bytes} bytes left after the drain")));
    }
    Ok(Report { duplicates, leaked_bytes, leaked_objects })
}
