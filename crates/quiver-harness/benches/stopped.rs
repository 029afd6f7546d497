//! `stopped/*`: what a reader gets while another process is stopped inside
//! the store's lock (SIGSTOP, Ctrl-Z, a debugger), beside the same work
//! with the lock free. The targets (docs/reliability.md): a consumer drains
//! sealed batches at no less than half its normal rate, `stat` answers
//! within 100 ms, and a call with a timeout returns within it plus 20 ms.
//!
//! - `stopped/drain/{free,stopped}`: one poll of a sealed batch and the
//!   commit of the offset past it (a consumer draining 1,000 batches of 64
//!   rows; a second group that never commits keeps them all);
//! - `stopped/commit/{free,stopped}`: one commit of a group's offset alone;
//! - `stopped/stat`: what `quiver stat` does: the store's figures within
//!   30 ms, else read without the lock, with the holder named;
//! - `stopped/create_200ms`: creating an object (a change: it needs the
//!   lock) with a 200 ms timeout, until it returns `LockTimeout`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use quiver::store::CallDeadline;
use quiver::stream::{Consumer, ConsumerConfig, Polled, Stream, StreamConfig};
use quiver::{CreateOptions, ObjectId, Store, StoreConfig, StoreError};
use quiver_harness::{seq_batch, seq_schema};

const BATCHES: i64 = 1000;

/// Removes the store file when dropped.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A `hold-lock` helper, stopped; resumed and killed when dropped.
struct StoppedHolder(Child);
impl StoppedHolder {
    fn start(store: &str) -> StoppedHolder {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quiver-harness"))
            .args(["hold-lock", "--store", store])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a quiver-harness helper");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        Self::signal(&child, rustix::process::Signal::STOP);
        StoppedHolder(child)
    }

    fn signal(child: &Child, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, signal);
    }
}
impl Drop for StoppedHolder {
    fn drop(&mut self) {
        Self::signal(&self.0, rustix::process::Signal::CONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `n` batches from a new reader of `stream`, committing past each
/// for `committer`'s group, and starting over at the oldest each time the
/// stream is drained; the time they took.
fn drain(stream: &Stream, committer: &mut Consumer, n: u64) -> Duration {
    let mut consumer = stream.consumer(ConsumerConfig::reader()).unwrap();
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        match consumer.poll(Duration::from_millis(100)).unwrap() {
            Polled::Batch(b) => {
                std::hint::black_box(b.batch.num_rows());
                committer.commit_offsets(&[(b.partition, b.offset + 1)]).unwrap();
                got += 1;
            }
            _ => consumer = stream.consumer(ConsumerConfig::reader()).unwrap(),
        }
    }
    started.elapsed()
}

fn stopped(c: &mut Criterion) {
    let name = format!("bench-stopped-{}", std::process::id());
    let store =
        Store::create(StoreConfig::new(&name).capacity(64 << 20).lock_timeout(Duration::from_secs(600))).unwrap();
    let _cleanup = Cleanup(store.path().to_path_buf());
    let stream = Stream::create(&store, StreamConfig::new("s", seq_schema()).group("g").group("keeps-all")).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..BATCHES {
        producer.append(&seq_batch(0, i * 64, 64)).unwrap();
    }
    let unpinned = ObjectId::sequential(1, 0, 0);
    store.create_object(unpinned, 8, b"").unwrap().seal().unwrap();
    let mut committer = stream.consumer(ConsumerConfig::group("g")).unwrap();

    let mut group = c.benchmark_group("stopped");
    group.measurement_time(Duration::from_secs(3));
    let mut holder = None;
    for case in ["free", "stopped"] {
        if case == "stopped" {
            holder = Some(StoppedHolder::start(&name));
        }
        group.bench_function(format!("drain/{case}"), |b| b.iter_custom(|iters| drain(&stream, &mut committer, iters)));
        // Offset 0: nothing is freed, so every round commits the same work.
        group.bench_function(format!("commit/{case}"), |b| b.iter(|| committer.commit_offsets(&[(0, 0)]).unwrap()));
    }
    group.bench_function("stat", |b| {
        b.iter(|| {
            let _in_time = CallDeadline::enter(Duration::from_millis(30));
            let stats = match store.stats() {
                Err(StoreError::LockTimeout { .. }) => store.stats_unlocked().unwrap(),
                other => other.unwrap(),
            };
            assert!(stats.lock_held_by.is_some_and(|who| who.contains("stopped")));
        })
    });
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    group.bench_function("create_200ms", |b| {
        let options = CreateOptions::new().timeout(Duration::from_millis(200));
        b.iter(|| {
            let created = store.create_object_with(ObjectId::sequential(1, 0, 1), 8, b"", options);
            assert!(matches!(created, Err(StoreError::LockTimeout { .. })), "{created:?}");
        })
    });
    // Views of unpinned objects are taken without the lock too.
    group.bench_function("get_unpinned/stopped", |b| {
        b.iter(|| std::hint::black_box(store.get(unpinned, Duration::ZERO).unwrap().unwrap().data().len()))
    });
    group.finish();
    drop(holder);
}

criterion_group!(benches, stopped);
criterion_main!(benches);
