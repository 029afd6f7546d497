//! The store across processes of the real `quiver` binary: a producer and
//! consumers exchanging objects, a blocked `get` woken by a seal, and
//! processes killed with SIGKILL while holding views, unsealed objects, or
//! the lock itself.

use std::time::Duration;

use quiver::shm::rand::SplitMix64;
use quiver::{CreateOptions, ObjectId, Store, StoreConfig, StoreError};

use crate::common::{harness, pattern, run_quiver, TestStore, LONG};

/// Deletes every object and checks that nothing is left allocated: the
/// store's counters are zero and the arena is one free block again.
fn assert_drains_clean(store: &Store) {
    store.recover_dead_clients().unwrap();
    for info in store.list().unwrap() {
        match store.delete(info.id) {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => panic!("delete {}: {e}", info.id),
        }
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.objects, stats.used, stats.payload), (0, 0, 0), "{stats:?}");
    assert_eq!(stats.largest_free, stats.capacity, "the arena merged back into one block: {stats:?}");
    assert_eq!(stats.clients, 1, "only this test's client is left: {stats:?}");
}

#[test]
fn a_producer_and_two_consumers_exchange_objects() {
    let t = TestStore::new("exchange");
    let store = t.create(16 << 20);
    let consumers: Vec<_> =
        (0..2).map(|_| harness(&["get", "--store", &t.name, "--count", "200", "--timeout-ms", "30000"])).collect();
    let mut producer = harness(&["put", "--store", &t.name, "--count", "200", "--size", "10000"]);
    producer.expect_line("put 200", LONG);
    for mut c in consumers {
        c.expect_line("got 200", LONG);
        assert!(c.wait(LONG).success());
    }
    assert!(producer.wait(LONG).success());
    assert_eq!(store.stats().unwrap().objects, 200);
    let view = store.get(ObjectId::sequential(1, 0, 7), Duration::ZERO).unwrap().unwrap();
    assert!(view.data().iter().enumerate().all(|(j, &b)| b == pattern(1, 7, j)));
    drop(view);
    assert_drains_clean(&store);
}

#[test]
fn a_blocked_get_is_woken_by_a_seal_in_another_process() {
    let t = TestStore::new("wake");
    let store = t.create(1 << 20);
    let mut consumer = harness(&["get", "--store", &t.name, "--count", "1", "--timeout-ms", "60000"]);
    // The consumer blocks on the object's cell; it must not have finished.
    let id = ObjectId::sequential(1, 0, 0);
    crate::common::wait_until("the consumer parked", || store.debug_waiters(Some(id)).unwrap() > 0);
    assert!(consumer.child.try_wait().unwrap().is_none(), "get returned before the seal");
    let mut b = store.create_object(id, 64, &0u64.to_le_bytes()).unwrap();
    b.data_mut().iter_mut().enumerate().for_each(|(j, x)| *x = pattern(1, 0, j));
    b.seal().unwrap();
    // Woken by the seal, not by its 60 s timeout (which would print nothing
    // and fail).
    consumer.expect_line("got 1", LONG);
    assert!(consumer.wait(LONG).success());
}

#[test]
fn a_killed_reader_releases_its_views() {
    let t = TestStore::new("killviews");
    let store = t.create(4 << 20);
    let mut producer = harness(&["put", "--store", &t.name, "--count", "5", "--size", "50000"]);
    assert!(producer.wait(LONG).success());
    let mut holder = harness(&["hold", "--store", &t.name, "--count", "5"]);
    holder.expect_line("holding", LONG);
    assert!(store.list().unwrap().iter().all(|o| o.references == 1));
    // Deleting a held object defers it; the holder's death frees it.
    store.delete(ObjectId::sequential(1, 0, 0)).unwrap();
    assert_eq!(store.stats().unwrap().objects, 5);
    holder.kill();
    assert_eq!(store.recover_dead_clients().unwrap(), 1);
    let objects = store.list().unwrap();
    assert_eq!(objects.len(), 4, "the deferred delete completed");
    assert!(objects.iter().all(|o| o.references == 0));
    assert_eq!(store.stats().unwrap().dead_clients, 1);
    assert_drains_clean(&store);
}

#[test]
fn a_killed_creator_has_its_unsealed_objects_aborted() {
    let t = TestStore::new("killunsealed");
    let store = t.create(4 << 20);
    let mut creator = harness(&["create-unsealed", "--store", &t.name, "--count", "3"]);
    creator.expect_line("created", LONG);
    assert_eq!(store.stats().unwrap().objects, 3);
    creator.kill();
    // A full store also recovers the dead on its own: fill it.
    let big = store.stats().unwrap().capacity - 64;
    store.create_object(ObjectId::random(), big, &[]).unwrap().seal().unwrap();
    assert_eq!(store.stats().unwrap().dead_clients, 1);
    assert_drains_clean(&store);
}

#[test]
fn a_lock_holder_that_dies_mid_change_is_repaired() {
    for stage in 0..4 {
        let t = TestStore::new("abortlock");
        let store = t.create(4 << 20);
        for i in 0..6 {
            let mut b = store.create_object(ObjectId::sequential(1, 0, i), 10_000 + i * 100, &[]).unwrap();
            b.data_mut().fill(i as u8);
            b.seal().unwrap();
        }
        let mut victim = harness(&["abort-in-lock", "--store", &t.name, "--stage", &stage.to_string()]);
        assert!(!victim.wait(LONG).success());
        // The next lock finds the owner dead and repairs before going on.
        let stats = store.stats().unwrap();
        assert_eq!(stats.repairs, 1, "stage {stage}: {stats:?}");
        let expected = if stage >= 2 { 5 } else { 6 };
        assert_eq!(stats.objects, expected, "stage {stage}: {stats:?}");
        for info in store.list().unwrap() {
            let (_, _, i) = info.id.sequential_parts().unwrap();
            let view = store.get(info.id, Duration::ZERO).unwrap().unwrap();
            assert!(view.data().iter().all(|&b| b == i as u8), "stage {stage}: object {i} intact");
        }
        assert_drains_clean(&store);
    }
}

#[test]
fn processes_killed_at_random_instants_never_wedge_or_leak() {
    let t = TestStore::new("hammer");
    let store = Store::create(StoreConfig::new(&t.name).capacity(512 << 10).max_objects(256)).unwrap();
    let mut rng = SplitMix64::new(0x5eed);
    let mut next = move || rng.next_u64();
    let spawn = |n: u64| harness(&["hammer", "--store", &t.name, "--ns", "1", "--seed", &n.to_string()]);
    let mut procs: Vec<_> = (0..3).map(|n| spawn(n + 1)).collect();
    for p in &mut procs {
        p.expect_line("hammering", LONG);
    }
    let rounds = 150;
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(2 + next() % 25));
        let victim = (next() % procs.len() as u64) as usize;
        procs[victim].kill();
        procs[victim] = spawn(100 + round);
        // The survivors and this process go on: every call completes.
        let id = ObjectId::sequential(2, 0, round);
        let mut b =
            store.create_object_with(id, 100, &[], quiver::CreateOptions::new().timeout(LONG).pinned(true)).unwrap();
        b.data_mut().fill(round as u8);
        b.seal().unwrap();
        let view = store.get(id, Duration::ZERO).unwrap().unwrap();
        assert!(view.data().iter().all(|&b| b == round as u8));
    }
    for p in &mut procs {
        assert!(p.child.try_wait().unwrap().is_none(), "a hammer process failed on its own");
        p.kill();
    }
    // This process's pinned objects all survived.
    for round in 0..rounds {
        assert!(store.contains(ObjectId::sequential(2, 0, round)).unwrap());
    }
    let stats = store.stats().unwrap();
    eprintln!("after {rounds} kills: {stats:?}");
    assert_drains_clean(&store);
}

#[test]
fn quiver_stat_prints_the_store_as_a_table_and_as_json() {
    let t = TestStore::new("stat");
    let store = t.create(4 << 20);
    let mut b = store.create_object(ObjectId::sequential(4, 0, 0), 1000, b"m").unwrap();
    b.data_mut().fill(1);
    b.seal().unwrap();
    let _unsealed = store.create_object(ObjectId::sequential(4, 0, 1), 10, &[]).unwrap();
    let _view = store.get(ObjectId::sequential(4, 0, 0), Duration::ZERO).unwrap().unwrap();

    let out = run_quiver(&["stat", &t.name, "--json", "--objects"], LONG);
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["stats"]["objects"], 2);
    assert_eq!(value["stats"]["clients"], 1, "the stat process does not count itself");
    assert_eq!(value["stats"]["payload"], 1011);
    let objects = value["objects"].as_array().unwrap();
    let sealed = objects.iter().find(|o| o["id"] == "seq:4:0:0").unwrap();
    assert_eq!((sealed["state"].as_str(), sealed["references"].as_u64()), (Some("sealed"), Some(1)));
    let creating = objects.iter().find(|o| o["id"] == "seq:4:0:1").unwrap();
    assert_eq!(creating["state"], "creating");

    let table = run_quiver(&["stat", &t.name], LONG);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("objects") && text.contains("2 of"), "{text}");

    let missing = run_quiver(&["stat", "no-such-store-for-quiver-tests"], LONG);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-store"));
}

/// The temporaries beside `t`'s store file that creators left.
fn creations(t: &TestStore) -> Vec<std::path::PathBuf> {
    let prefix = format!(".{}.", t.path.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(t.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".creating")
        })
        .collect()
}

/// Sets `path`'s modification time a minute back: past the sweep's grace
/// period for files just made.
fn age(path: &std::path::Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(past).unwrap();
}

#[test]
fn a_creator_killed_part_way_never_blocks_the_name() {
    let t = TestStore::new("killed-creator");
    let mut creator = harness(&["create-and-hang", "--store", &t.name]);
    creator.expect_line("creating", LONG);
    // Nothing appears under the name before the store is ready.
    assert!(!t.path.exists());
    assert!(matches!(Store::open(&t.name), Err(StoreError::Io { .. })), "no store, not a store being made");
    let live = creations(&t);
    assert_eq!(live.len(), 1);
    age(&live[0]);
    // Another creator takes the name; the sweep leaves a live creator's
    // temporary alone, however old.
    drop(t.create(1 << 20));
    assert_eq!(creations(&t), live);
    Store::remove(&t.name).unwrap();
    // Killed: its temporary is abandoned, and the next creator removes it.
    creator.kill();
    let store = t.create(1 << 20);
    assert!(store.stats().unwrap().capacity >= 1 << 20);
    let left = creations(&t);
    for stale in &left {
        let _ = std::fs::remove_file(stale);
    }
    assert!(left.is_empty(), "stale temporaries left: {left:?}");
}

#[test]
fn calls_keep_their_own_timeout_while_a_stopped_process_holds_the_lock() {
    let t = TestStore::new("stopped-holder");
    // A lock timeout far beyond the calls' own, as a user would leave it.
    let config = StoreConfig::new(&t.name).capacity(1 << 20).lock_timeout(Duration::from_secs(600));
    let store = Store::create(config).unwrap();
    let mut holder = harness(&["hold-lock", "--store", &t.name]);
    holder.expect_line("locked", LONG);
    let pid = holder.child.id() as i32;
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), rustix::process::Signal::STOP).unwrap();
    // The wait for the lock counts against the call's own 200 ms, and the
    // error says who holds the lock and that it is stopped.
    match store.get(ObjectId::sequential(1, 0, 0), Duration::from_millis(200)) {
        Err(StoreError::LockTimeout { waited, holder: Some(who) }) => {
            assert!(waited <= Duration::from_millis(250), "waited {waited:?}, the call's timeout is 200 ms");
            assert!(who.contains(&format!("process {pid}")) && who.contains("stopped"), "{who}");
        }
        other => panic!("expected a lock timeout naming the holder, got {other:?}"),
    }
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), rustix::process::Signal::CONT);
    holder.kill();
}

#[test]
fn pinned_objects_are_read_and_released_without_the_lock() {
    let t = TestStore::new("lockfree");
    let config = StoreConfig::new(&t.name).capacity(1 << 20).lock_timeout(Duration::from_secs(600));
    let store = Store::create(config).unwrap();
    let (pinned, unpinned) = (ObjectId::sequential(1, 0, 0), ObjectId::sequential(1, 0, 1));
    for (id, pin) in [(pinned, true), (unpinned, false)] {
        let mut b = store.create_object_with(id, 5, b"m", CreateOptions::new().pinned(pin)).unwrap();
        b.data_mut().copy_from_slice(b"hello");
        b.seal().unwrap();
    }
    let other = Store::open(&t.name).unwrap();
    let mut holder = harness(&["hold-lock", "--store", &t.name]);
    holder.expect_line("locked", LONG);
    let pid = holder.child.id() as i32;
    let stop = |signal| {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), signal);
    };
    stop(rustix::process::Signal::STOP);
    // Sealed and pinned (as every stream batch is): read, cloned and
    // released while a stopped process holds the lock.
    let view = store.get(pinned, Duration::from_millis(200)).unwrap().unwrap();
    assert_eq!((view.data(), view.metadata()), (&b"hello"[..], &b"m"[..]));
    let again = view.clone();
    let third = store.get(pinned, Duration::ZERO).unwrap().unwrap();
    drop((view, again, third));
    // Another client of the store, likewise.
    assert_eq!(other.get(pinned, Duration::from_millis(200)).unwrap().unwrap().data(), b"hello");
    // An unpinned object too (issue 25): it stays on the eviction list while
    // viewed, and the evictor skips held objects.
    assert_eq!(store.get(unpinned, Duration::from_millis(200)).unwrap().unwrap().data(), b"hello");
    // A change still needs the lock, and says who holds it.
    let created = store.create_object_with(
        ObjectId::sequential(1, 0, 2),
        5,
        b"",
        CreateOptions::new().timeout(Duration::from_millis(200)),
    );
    assert!(matches!(created, Err(StoreError::LockTimeout { .. })), "{created:?}");
    stop(rustix::process::Signal::CONT);
    holder.kill();
    drop(other); // closing takes the lock
                 // Nothing was left held: both are freed as they are deleted.
    store.delete(pinned).unwrap();
    store.delete(unpinned).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!((stats.objects, stats.used), (0, 0));
}
