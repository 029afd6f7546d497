//! Store benchmarks, each beside its baseline in the same run:
//!
//! - `store/cycle/SIZE`: create, fill, seal, get, release, delete in one
//!   process, beside `store/memcpy/SIZE` (copying the same bytes);
//! - `store/resident/N`: a 1 KiB cycle with N other objects in the store
//!   (10 vs 1,000,000: the table's cost must not grow);
//! - `store/wake/*`: the latency from a seal in one process to the return
//!   of a `get` blocked on it in another, parking or spinning, on two cores
//!   or one, beside `store/wake/futex_raw*`, the same hand-off on a bare
//!   futex word.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver::harness::FutexPair;
use quiver::shm::clock::monotonic_ns;
use quiver::shm::wait;
use quiver::{ObjectId, Store, StoreConfig, WaitStrategy};

const SIZES: [(&str, usize); 4] = [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20), ("16MiB", 16 << 20)];

fn unique(tag: &str) -> String {
    format!("bench-{tag}-{}", std::process::id())
}

/// Removes the store file when dropped.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let name = unique("cycle");
    let store = Store::create(StoreConfig::new(&name).capacity(64 << 20)).unwrap();
    let _cleanup = Cleanup(store.path().to_path_buf());
    let id = ObjectId::sequential(1, 0, 0);
    for (label, size) in SIZES {
        let source = vec![0xA5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        // The destination starts 64 bytes into its buffer, as a payload starts
        // after its block header: source and destination at the same offset
        // within a page make copies of some sizes several times slower
        // (4K aliasing), which would flatter the store.
        let mut dest = vec![0u8; size + 4096];
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| {
                dest[64..64 + size].copy_from_slice(black_box(&source));
                black_box(&dest);
            })
        });
        group.bench_function(BenchmarkId::new("cycle", label), |b| {
            b.iter(|| {
                let mut builder = store.create_object(id, size as u64, &[]).unwrap();
                builder.data_mut().copy_from_slice(black_box(&source));
                builder.seal().unwrap();
                let view = store.get(id, Duration::ZERO).unwrap().unwrap();
                black_box(view.data()[size - 1]);
                drop(view);
                store.delete(id).unwrap();
            })
        });
    }
    group.finish();
}

fn resident(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let source = vec![0x5Au8; 1024];
    for resident in [10u64, 1_000_000] {
        let name = unique(&format!("resident{resident}"));
        // Resident objects of 64 bytes (one 128-byte block each) plus room to cycle.
        let config = StoreConfig::new(&name).capacity(resident * 128 + (16 << 20)).max_objects(resident + 1024);
        let store = Store::create(config).unwrap();
        let _cleanup = Cleanup(store.path().to_path_buf());
        for i in 0..resident {
            store.create_object(ObjectId::sequential(2, 0, i), 64, &[]).unwrap().seal().unwrap();
        }
        let pinned = quiver::CreateOptions::new().pinned(true);
        let id = ObjectId::sequential(1, 0, 0);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("resident", resident), |b| {
            b.iter(|| {
                let mut builder = store.create_object_with(id, 1024, &[], pinned).unwrap();
                builder.data_mut().copy_from_slice(&source);
                builder.seal().unwrap();
                drop(store.get(id, Duration::ZERO).unwrap().unwrap());
                store.delete(id).unwrap();
            })
        });
        assert_eq!(store.stats().unwrap().objects, resident);
    }
    group.finish();
}

fn pin(cpus: &[usize]) {
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// A helper process that is killed when dropped.
struct Helper(Child);
impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_helper(args: &[&str]) -> Helper {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver-harness"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a quiver-harness helper");
    // Wait for its "ready" line so that start-up is not measured.
    let mut line = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    Helper(child)
}

/// Wake latency: from the moment the helper seals (its clock, written into
/// the reply) to the moment this process's blocked `get` returns (our
/// clock). The helper waits 10 µs before sealing, so we are always blocked
/// already: the time measured is a hand-off to a waiting process.
fn wake(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/wake");
    group.measurement_time(Duration::from_secs(4));
    let cpus = all_cpus();
    for (same_core, suffix) in [(false, ""), (true, "_same_core")] {
        if !same_core && cpus.len() < 2 {
            continue;
        }
        let helper_cpu = if same_core { 0 } else { 1 }.to_string();
        pin(&[0]);

        // The baseline: the same hand-off on two bare futex words.
        let path = std::path::Path::new(quiver::store::STORE_DIR).join(unique(&format!("futex{suffix}")));
        let pair = FutexPair::create(&path).unwrap();
        let _cleanup = Cleanup(path.clone());
        let file = path.display().to_string();
        let helper = spawn_helper(&["futex-reply", "--file", &file, "--cpu", &helper_cpu]);
        let (request, reply) = (pair.word(0), pair.word(1));
        let mut round = 0u32;
        group.bench_function(format!("futex_raw{suffix}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    // Release pairs with the helper's Acquire load.
                    request.store(round, Ordering::Release);
                    wait::wake_all(request);
                    while reply.load(Ordering::Acquire) != round {
                        wait::wait(reply, round - 1, Some(Duration::from_secs(10)));
                    }
                    let woken = monotonic_ns();
                    total += Duration::from_nanos(woken.saturating_sub(pair.stamp().load(Ordering::Relaxed)));
                }
                total
            })
        });
        drop(helper);

        for (label, spin_us) in [("park", 0u64), ("spin", 20)] {
            let name = unique(&format!("wake-{label}{suffix}"));
            let strategy = if spin_us == 0 {
                WaitStrategy::Park
            } else {
                WaitStrategy::SpinThenPark { budget: Duration::from_micros(spin_us) }
            };
            let store = Store::create(StoreConfig::new(&name).capacity(4 << 20).wait_strategy(strategy)).unwrap();
            let _cleanup = Cleanup(store.path().to_path_buf());
            let spin = spin_us.to_string();
            let _helper = spawn_helper(&["reply", "--store", &name, "--cpu", &helper_cpu, "--spin-us", &spin]);
            let mut i = 0u64;
            group.bench_function(format!("{label}{suffix}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        store.create_object(request_id(i), 8, &[]).unwrap().seal().unwrap();
                        let reply = store.get(reply_id(i), Duration::from_secs(10)).unwrap().expect("a reply");
                        let woken = monotonic_ns();
                        let sealed = u64::from_le_bytes(reply.data().try_into().unwrap());
                        total += Duration::from_nanos(woken.saturating_sub(sealed));
                        drop(reply);
                        store.delete(reply_id(i)).unwrap();
                        i += 1;
                    }
                    total
                })
            });
        }
    }
    pin(&cpus);
    group.finish();
}

fn request_id(i: u64) -> ObjectId {
    ObjectId::sequential(0xB0, 0, i)
}
fn reply_id(i: u64) -> ObjectId {
    ObjectId::sequential(0xB1, 0, i)
}

criterion_group!(benches, cycle, resident, wake);
criterion_main!(benches);
