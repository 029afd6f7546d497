//! `store/wake/*`: the latency from a seal in one process to the return of
//! a `get` blocked on it in another, parking or spinning, on two cores or
//! one, beside `store/wake/futex_raw*`, the same hand-off on a bare futex
//! word. Here rather than beside the core's other store benchmarks because
//! the other process is a `quiver-harness` helper.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use quiver::shm::clock::monotonic_ns;
use quiver::shm::wait;
use quiver::test_hooks::FutexPair;
use quiver::{ObjectId, Store, StoreConfig, WaitStrategy};

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
criterion_group!(benches, wake);
criterion_main!(benches);
