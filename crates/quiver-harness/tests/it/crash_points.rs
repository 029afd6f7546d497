//! Issue 25's crash-point enumeration: the `crash-run` helper makes every
//! kind of change a store sees (objects created, sealed, read, deleted,
//! evicted; a stream's appends, commits and retention; a shard group's
//! tasks taken and reported; a checkpoint written). Each change calls a
//! numbered crash point between its steps, most under the store's lock.
//! Run once to count the points; then, for every point, a fresh store, the
//! workload aborted at that point (lock held), and the next opener must
//! find every invariant whole (`Store::debug_audit`), go on working, and
//! read a checkpoint that is the old one or the new one, never a torn one.

use std::time::Duration;

use quiver::stream::{ConsumerConfig, Polled, Stream};
use quiver::{ObjectId, Store, StoreConfig};

use crate::common::{run_harness, TestStore};

/// A store small enough that the workload's objects evict each other.
fn fresh(t: &TestStore) {
    let _ = std::fs::remove_file(&t.path);
    drop(Store::create(StoreConfig::new(&t.name).capacity(512 << 10).max_objects(64)).unwrap());
}

#[test]
fn every_crash_point_leaves_a_store_the_next_opener_repairs_whole() {
    let t = TestStore::new("crash-points");
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("w.qvck");
    let ck = checkpoint.to_str().unwrap();
    let run = |abort_at: u64| {
        run_harness(
            &["crash-run", "--store", &t.name, "--abort-at", &abort_at.to_string(), "--checkpoint", ck],
            Duration::from_secs(60),
        )
    };
    fresh(&t);
    let out = run(0);
    assert!(out.status.success(), "the workload itself failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let points: u64 = text.trim().strip_prefix("points ").and_then(|n| n.parse().ok()).expect("points N");
    assert!(points >= 100, "only {points} crash points reached: the workload misses changes");
    quiver::shard::Checkpoint::read(&checkpoint).expect("the whole run wrote a checkpoint");
    let mut crashed = 0;
    for n in 1..=points {
        fresh(&t);
        let before = std::fs::read(&checkpoint).unwrap();
        let out = run(n);
        let aborted = std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(libc::SIGABRT);
        assert!(
            aborted,
            "point {n} of {points} was not reached (the workload is not deterministic?): {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        crashed += 1;
        // The next opener: repaired, whole, and working.
        let store = Store::open(&t.name).unwrap_or_else(|e| panic!("point {n}: the store does not open: {e}"));
        store.debug_audit().unwrap_or_else(|e| panic!("point {n}: {e}"));
        let id = ObjectId::sequential(9, 9, n);
        let mut b = store.create_object(id, 1024, b"after").unwrap_or_else(|e| panic!("point {n}: create: {e}"));
        b.data_mut().fill(9);
        b.seal().unwrap();
        assert!(store.get(id, Duration::ZERO).unwrap().is_some_and(|v| v.data().iter().all(|&x| x == 9)));
        // A stream the workload made, if it got that far, reads on.
        if let Ok(stream) = Stream::open(&store, "s") {
            let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
            while let Polled::Batch(_) =
                consumer.poll(Duration::ZERO).unwrap_or_else(|e| panic!("point {n}: poll: {e}"))
            {}
            consumer.commit().unwrap();
        }
        store.debug_audit().unwrap_or_else(|e| panic!("point {n}, after more work: {e}"));
        // The checkpoint is the last whole one, or the new whole one.
        let after = std::fs::read(&checkpoint).unwrap();
        assert!(
            after == before || quiver::shard::Checkpoint::read(&checkpoint).is_ok(),
            "point {n}: a torn checkpoint"
        );
    }
    assert_eq!(crashed, points, "every point was hit");
    eprintln!("{points} crash points, each hit once, each repaired");
}
