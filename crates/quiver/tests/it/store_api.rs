//! The store's API in one process: lifecycle, waiting, deletion, eviction,
//! pinning, capacity, and a model-based check of the allocator and table.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use quiver::{CreateOptions, ObjectId, ObjectState, Store, StoreConfig, StoreError};

use crate::common::TestStore;

fn put(store: &Store, id: ObjectId, bytes: &[u8]) {
    let mut b = store.create_object(id, bytes.len() as u64, &[]).unwrap();
    b.data_mut().copy_from_slice(bytes);
    b.seal().unwrap();
}

#[test]
fn create_seal_get_delete_round_trip() {
    let t = TestStore::new("roundtrip");
    let store = t.create(1 << 20);
    let id = ObjectId::sequential(9, 1, 2);
    let mut b = store.create_object(id, 100, b"meta!").unwrap();
    assert_eq!(b.data_mut().as_ptr() as usize % 64, 0, "payload is 64-byte aligned");
    assert_eq!(b.metadata(), b"meta!");
    assert!(!store.contains(id).unwrap(), "an unsealed object is not contained");
    assert!(store.get(id, Duration::ZERO).unwrap().is_none(), "an unsealed object is not visible");
    b.data_mut().iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
    b.seal().unwrap();
    assert!(store.contains(id).unwrap());
    let view = store.get(id, Duration::ZERO).unwrap().unwrap();
    assert_eq!(view.len(), 100);
    assert!(view.data().iter().enumerate().all(|(i, &x)| x == i as u8));
    assert_eq!(view.metadata(), b"meta!");
    let info = store.list().unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].id, info[0].state, info[0].references), (id, ObjectState::Sealed, 1));
    drop(view);
    assert_eq!(store.list().unwrap()[0].references, 0);
    store.delete(id).unwrap();
    assert!(!store.contains(id).unwrap());
    let stats = store.stats().unwrap();
    assert_eq!((stats.objects, stats.used, stats.payload), (0, 0, 0));
    assert_eq!(stats.largest_free, stats.capacity, "freed blocks merge back into one");
}

#[test]
fn creating_an_existing_id_is_an_error() {
    let t = TestStore::new("exists");
    let store = t.create(1 << 20);
    let id = ObjectId::random();
    let b = store.create_object(id, 10, &[]).unwrap();
    assert!(matches!(store.create_object(id, 10, &[]), Err(StoreError::AlreadyExists(x)) if x == id));
    b.seal().unwrap();
    assert!(matches!(store.create_object(id, 10, &[]), Err(StoreError::AlreadyExists(_))));
}

#[test]
fn dropping_an_unsealed_builder_aborts_it() {
    let t = TestStore::new("abort");
    let store = t.create(1 << 20);
    let id = ObjectId::random();
    drop(store.create_object(id, 1000, &[]).unwrap());
    assert_eq!(store.stats().unwrap().objects, 0);
    assert!(store.get(id, Duration::ZERO).unwrap().is_none());
    // The ID is free again.
    put(&store, id, b"again");
    store.create_object(ObjectId::random(), 10, &[]).unwrap().abort().unwrap();
    assert_eq!(store.stats().unwrap().objects, 1);
}

#[test]
fn get_waits_for_a_seal_and_times_out_otherwise() {
    let t = TestStore::new("wait");
    let store = t.create(1 << 20);
    let id = ObjectId::random();
    assert!(store.get(id, Duration::from_millis(20)).unwrap().is_none());
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || store.get(id, Duration::from_secs(30)).unwrap().map(|v| v.data().to_vec()))
    };
    crate::common::wait_until("a getter parked", || store.debug_waiters(Some(id)).unwrap() > 0);
    put(&store, id, b"woken");
    assert_eq!(waiter.join().unwrap().as_deref(), Some(&b"woken"[..]));
}

/// An object found being written: the getter spins a moment (the seal is a
/// write away), then parks like any other, and the seal wakes it; one never
/// sealed times the get out.
#[test]
fn get_of_an_object_being_written_waits_for_its_seal_and_times_out_otherwise() {
    let t = TestStore::new("inflight");
    let store = t.create(1 << 20);
    let (id, never) = (ObjectId::random(), ObjectId::random());
    let pinned = CreateOptions::new().pinned(true);
    let _unsealed = store.create_object_with(never, 8, &[], pinned).unwrap();
    let started = std::time::Instant::now();
    assert!(store.get(never, Duration::from_millis(30)).unwrap().is_none());
    assert!(started.elapsed() >= Duration::from_millis(30));
    let mut builder = store.create_object_with(id, 5, &[], pinned).unwrap();
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || store.get(id, Duration::from_secs(30)).unwrap().map(|v| v.data().to_vec()))
    };
    crate::common::wait_until("a getter parked", || store.debug_waiters(Some(id)).unwrap() > 0);
    builder.data_mut().copy_from_slice(b"ready");
    builder.seal().unwrap();
    assert_eq!(waiter.join().unwrap().as_deref(), Some(&b"ready"[..]));
}

#[test]
fn get_many_returns_what_was_sealed_in_time() {
    let t = TestStore::new("many");
    let store = t.create(1 << 20);
    let ids: Vec<_> = (0..4).map(|i| ObjectId::sequential(1, 0, i)).collect();
    put(&store, ids[0], b"a");
    put(&store, ids[2], b"c");
    let views = store.get_many(&ids, Duration::from_millis(10)).unwrap();
    let got: Vec<_> = views.iter().map(|v| v.as_ref().map(|v| v.data().to_vec())).collect();
    assert_eq!(got, vec![Some(b"a".to_vec()), None, Some(b"c".to_vec()), None]);
    let waiter = {
        let (store, ids) = (store.clone(), ids.clone());
        std::thread::spawn(move || store.get_many(&ids, Duration::from_secs(30)).unwrap().iter().all(Option::is_some))
    };
    put(&store, ids[1], b"b");
    put(&store, ids[3], b"d");
    assert!(waiter.join().unwrap());
}

#[test]
fn a_deleted_object_lives_until_its_last_view_is_dropped() {
    let t = TestStore::new("deferred");
    let store = t.create(1 << 20);
    let id = ObjectId::random();
    put(&store, id, &[7u8; 5000]);
    let view = store.get(id, Duration::ZERO).unwrap().unwrap();
    let second = view.clone();
    store.delete(id).unwrap();
    assert!(!store.contains(id).unwrap());
    assert!(store.get(id, Duration::ZERO).unwrap().is_none());
    assert_eq!(store.list().unwrap()[0].state, ObjectState::Deleted);
    // The ID can be reused while the old bytes are still held.
    put(&store, id, &[9u8; 10]);
    assert!(view.data().iter().all(|&b| b == 7));
    drop(view);
    assert!(second.data().iter().all(|&b| b == 7));
    drop(second);
    let stats = store.stats().unwrap();
    assert_eq!(stats.objects, 1, "only the new object remains");
    assert_eq!(store.get(id, Duration::ZERO).unwrap().unwrap().data(), &[9u8; 10]);
}

#[test]
fn delete_needs_a_sealed_object() {
    let t = TestStore::new("delete");
    let store = t.create(1 << 20);
    let id = ObjectId::random();
    assert!(matches!(store.delete(id), Err(StoreError::NotFound(_))));
    let b = store.create_object(id, 1, &[]).unwrap();
    assert!(matches!(store.delete(id), Err(StoreError::NotSealed(_))));
    drop(b);
}

#[test]
fn eviction_takes_the_least_recently_used_and_spares_pinned_and_held() {
    let t = TestStore::new("evict");
    // 16 objects of 64 KiB fill a 1 MiB + a little arena.
    let store = t.create((1 << 20) + 16 * 64);
    let size = 64 << 10;
    let ids: Vec<_> = (0..16).map(|i| ObjectId::sequential(1, 0, i)).collect();
    for (i, &id) in ids.iter().enumerate() {
        let options = CreateOptions::new().pinned(i == 0);
        store.create_object_with(id, size, &[], options).unwrap().seal().unwrap();
    }
    let held = store.get(ids[1], Duration::ZERO).unwrap().unwrap();
    // Touch 2 so that 3 becomes the least recently used evictable object.
    drop(store.get(ids[2], Duration::ZERO).unwrap().unwrap());
    put(&store, ObjectId::sequential(2, 0, 0), &vec![1u8; size as usize]);
    assert!(store.contains(ids[0]).unwrap(), "pinned objects are never evicted");
    assert!(store.contains(ids[1]).unwrap(), "held objects are never evicted");
    assert!(store.contains(ids[2]).unwrap(), "recently used objects go last");
    assert!(!store.contains(ids[3]).unwrap(), "the least recently used object went first");
    assert_eq!(store.stats().unwrap().evictions, 1);
    drop(held);
}

#[test]
fn a_full_store_with_nothing_to_evict_waits_then_says_so() {
    let t = TestStore::new("full");
    let store = t.create(1 << 20);
    let pinned = CreateOptions::new().pinned(true);
    let mut n = 0;
    loop {
        match store.create_object_with(ObjectId::sequential(1, 0, n), 100 << 10, &[], pinned) {
            Ok(b) => b.seal().unwrap(),
            Err(StoreError::StoreFull { requested, .. }) => {
                assert!(requested > 100 << 10);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        n += 1;
    }
    assert_eq!(n, 10);
    // With a timeout, a delete by someone else lets the create through.
    let deleter = {
        let store = store.clone();
        std::thread::spawn(move || {
            crate::common::wait_until("a creator parked", || store.debug_waiters(None).unwrap() > 0);
            store.delete(ObjectId::sequential(1, 0, 0)).unwrap();
        })
    };
    let waited = CreateOptions::new().timeout(Duration::from_secs(30)).pinned(true);
    store.create_object_with(ObjectId::random(), 100 << 10, &[], waited).unwrap().seal().unwrap();
    deleter.join().unwrap();
    // Unpinning makes objects evictable again.
    store.unpin(ObjectId::sequential(1, 0, 1)).unwrap();
    put(&store, ObjectId::random(), &vec![0u8; 100 << 10]);
    assert!(!store.contains(ObjectId::sequential(1, 0, 1)).unwrap());
    assert!(matches!(store.create_object(ObjectId::random(), 2 << 20, &[]), Err(StoreError::TooLarge { .. })));
}

#[test]
fn at_least_95_percent_of_the_capacity_holds_payload_at_64_kib() {
    let t = TestStore::new("capacity");
    // The file also holds a fixed 6 MiB registry (streams, shard manager),
    // which a store of a few hundred MiB amortises.
    let store = Store::create(StoreConfig::new(&t.name).capacity(256 << 20).max_objects(8192)).unwrap();
    let pinned = CreateOptions::new().pinned(true);
    let mut i = 0;
    while let Ok(b) = store.create_object_with(ObjectId::sequential(1, 0, i), 64 << 10, &[], pinned) {
        b.seal().unwrap();
        i += 1;
    }
    let stats = store.stats().unwrap();
    let of_arena = stats.payload as f64 / stats.capacity as f64;
    let of_file = stats.payload as f64 / stats.file_size as f64;
    assert!(of_arena >= 0.95, "payload is {of_arena:.4} of the arena");
    assert!(of_file >= 0.95, "payload is {of_file:.4} of the whole file");
}

#[test]
fn stats_count_clients() {
    let t = TestStore::new("clients");
    let a = t.create(1 << 20);
    let b = Store::open(&t.name).unwrap();
    assert_ne!(a.client_id(), b.client_id());
    assert_eq!(a.stats().unwrap().clients, 2);
    drop(b);
    assert_eq!(a.stats().unwrap().clients, 1);
}

#[test]
fn views_from_two_clients_are_counted_per_client() {
    let t = TestStore::new("perclient");
    let a = t.create(1 << 20);
    let b = Store::open(&t.name).unwrap();
    let id = ObjectId::random();
    put(&a, id, b"shared");
    let va = a.get(id, Duration::ZERO).unwrap().unwrap();
    let vb1 = b.get(id, Duration::ZERO).unwrap().unwrap();
    let vb2 = b.get(id, Duration::ZERO).unwrap().unwrap();
    assert_eq!(a.list().unwrap()[0].references, 2);
    drop(vb1);
    assert_eq!(a.list().unwrap()[0].references, 2);
    drop(b); // the handle; vb2 keeps the client alive
    drop(vb2);
    assert_eq!(a.list().unwrap()[0].references, 1);
    drop(va);
    assert_eq!(a.list().unwrap()[0].references, 0);
}

#[derive(Debug, Clone)]
enum Op {
    Create { key: u8, size: u32, seal: bool },
    Get { key: u8 },
    DropView { pick: u8 },
    Delete { key: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..24, 0u32..40_000, any::<bool>()).prop_map(|(key, size, seal)| Op::Create { key, size, seal }),
        (0u8..24).prop_map(|key| Op::Get { key }),
        any::<u8>().prop_map(|pick| Op::DropView { pick }),
        (0u8..24).prop_map(|key| Op::Delete { key }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random operations against a model: what the store returns matches the
    /// model, its counters match, and once everything is released and deleted
    /// the arena is one free block again.
    #[test]
    fn store_matches_a_model(ops in proptest::collection::vec(op(), 1..120)) {
        let t = TestStore::new("model");
        let store = Store::create(StoreConfig::new(&t.name).capacity(256 << 10).max_objects(16)).unwrap();
        let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
        let mut views = Vec::new();
        for op in ops {
            match op {
                Op::Create { key, size, seal } => {
                    let id = ObjectId::sequential(3, 0, key as u64);
                    match store.create_object(id, size as u64, &[key]) {
                        Ok(mut b) => {
                            // The key is free again only if the store evicted it.
                            if model.contains_key(&key) {
                                prop_assert!(store.stats().unwrap().evictions > 0);
                                prop_assert!(views.iter().all(|(k, _)| *k != key), "a held object was evicted");
                            }
                            let bytes: Vec<u8> = (0..size).map(|j| (j as u8) ^ key).collect();
                            b.data_mut().copy_from_slice(&bytes);
                            if seal {
                                b.seal().unwrap();
                                model.insert(key, bytes);
                            }
                        }
                        Err(StoreError::AlreadyExists(_)) => prop_assert!(model.contains_key(&key)),
                        Err(StoreError::StoreFull { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                Op::Get { key } => {
                    let id = ObjectId::sequential(3, 0, key as u64);
                    match store.get(id, Duration::ZERO).unwrap() {
                        Some(v) => {
                            prop_assert_eq!(Some(v.data()), model.get(&key).map(Vec::as_slice));
                            prop_assert_eq!(v.metadata(), &[key]);
                            views.push((key, v));
                        }
                        // Absent: never created, deleted, or evicted.
                        None => { model.remove(&key); }
                    }
                }
                Op::DropView { pick } => {
                    if !views.is_empty() {
                        views.swap_remove(pick as usize % views.len());
                    }
                }
                Op::Delete { key } => {
                    let id = ObjectId::sequential(3, 0, key as u64);
                    match store.delete(id) {
                        // A sealed object the store deleted is one the model knows.
                        Ok(()) => { prop_assert!(model.remove(&key).is_some()); }
                        Err(StoreError::NotFound(_)) => { model.remove(&key); }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
            }
            // Views stay valid and unchanged whatever happens to their object.
            for (key, v) in &views {
                let expected: Vec<u8> = (0..v.len()).map(|j| (j as u8) ^ key).collect();
                prop_assert_eq!(v.data(), &expected[..]);
            }
            let stats = store.stats().unwrap();
            let listed = store.list().unwrap();
            prop_assert_eq!(stats.objects, listed.len() as u64);
            let payload: u64 = listed.iter().map(|o| o.data_size + o.metadata_size).sum();
            prop_assert_eq!(stats.payload, payload);
            prop_assert!(stats.used <= stats.capacity);
        }
        views.clear();
        for info in store.list().unwrap() {
            store.delete(info.id).unwrap();
        }
        let stats = store.stats().unwrap();
        prop_assert_eq!((stats.objects, stats.used, stats.payload), (0, 0, 0));
        prop_assert_eq!(stats.largest_free, stats.capacity);
    }
}

#[test]
fn capacity_is_the_arena_and_the_largest_object_is_64_bytes_less() {
    let t = TestStore::new("capacity");
    let store = t.create(1 << 20);
    let capacity = store.stats().unwrap().capacity;
    assert_eq!(capacity, 1 << 20);
    // One byte more than the documented largest object can never fit.
    let too_large = store.create_object(ObjectId::random(), capacity - 64 + 1, &[]);
    assert!(matches!(too_large, Err(StoreError::TooLarge { .. })), "{too_large:?}");
    // The documented largest object fits in the empty store.
    store.create_object(ObjectId::random(), capacity - 64, &[]).unwrap().seal().unwrap();
}

#[test]
fn evict_frees_least_recently_used_objects_and_a_sealed_view_keeps_its_object() {
    let t = crate::common::TestStore::new("evict");
    let store = t.create(1 << 20);
    let put = |i: u64, size: usize| {
        let mut b = store.create_object(ObjectId::sequential(1, 0, i), size as u64, b"m").unwrap();
        b.data_mut().fill(1);
        b.seal().unwrap();
    };
    put(0, 1000);
    put(1, 900);
    // Sealed with a view taken in the same critical section: not evictable.
    let mut b = store.create_object(ObjectId::sequential(1, 0, 2), 800, b"").unwrap();
    b.data_mut().fill(2);
    let view = b.seal_and_view().unwrap();
    assert_eq!(store.evict(1).unwrap(), 1001, "the oldest first: data and metadata");
    assert_eq!(store.evict(u64::MAX).unwrap(), 901, "only what no view holds");
    assert!(store.contains(ObjectId::sequential(1, 0, 2)).unwrap());
    assert_eq!(view.data()[0], 2);
    drop(view);
    assert_eq!(store.evict(1).unwrap(), 800);
    assert_eq!(store.evict(1).unwrap(), 0, "nothing left");
    assert_eq!(store.stats().unwrap().evictions, 3);
}

#[test]
fn delete_many_deletes_what_is_sealed_in_one_go_and_passes_over_the_rest() {
    let t = crate::common::TestStore::new("delete-many");
    let store = t.create(1 << 20);
    let id = |i| ObjectId::sequential(3, 0, i);
    for i in 0..4 {
        store.create_object(id(i), 10, b"").unwrap().seal().unwrap();
    }
    let unsealed = store.create_object(id(4), 10, b"").unwrap();
    let held = store.get(id(1), Duration::ZERO).unwrap().unwrap();
    assert_eq!(store.delete_many(&[id(0), id(1), id(4), id(9), id(2)]).unwrap(), 3);
    for i in [0, 1, 2] {
        assert!(!store.contains(id(i)).unwrap(), "{i} is gone");
    }
    assert!(store.contains(id(3)).unwrap());
    assert_eq!(held.data().len(), 10, "a held object stays readable until its view goes");
    drop(held);
    unsealed.seal().unwrap();
    assert!(store.contains(id(4)).unwrap(), "an object being created was passed over");
    assert_eq!(store.stats().unwrap().objects, 2);
}

/// Readers on two clients (three threads) take views without the lock while
/// a writer on a third creates, deletes, pins, unpins and re-creates the same
/// objects and a small arena evicts. Every view must show its object's own bytes (a view
/// of memory freed and reused would not), and once all is deleted and
/// dropped nothing may be left: no object, no byte, no repair.
#[test]
fn views_taken_without_the_lock_race_deletes_pins_and_evictions_safely() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let t = TestStore::new("lockfree-race");
    let writer = Store::create(StoreConfig::new(&t.name).capacity(256 << 10).max_objects(512)).unwrap();
    let readers = [Store::open(&t.name).unwrap(), Store::open(&t.name).unwrap()];
    const N: u64 = 20_000;
    let id = |i: u64| ObjectId::sequential(3, 0, i);
    let size = |i: u64| 64 + (i * 37) % 900;
    let latest = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let (hits, checked) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for (r, store) in [0, 0, 1].into_iter().map(|r| (r, &readers[r])) {
            let (latest, done, hits, checked) = (&latest, &done, &hits, &checked);
            s.spawn(move || {
                let mut held = Vec::new();
                let mut rng = quiver::shm::rand::SplitMix64::new(r as u64 + 7);
                while !done.load(Relaxed) {
                    let j = latest.load(Relaxed).saturating_sub(rng.next_u64() % 12);
                    if let Some(view) = store.get(id(j), Duration::ZERO).unwrap() {
                        hits.fetch_add(1, Relaxed);
                        held.push(view);
                    }
                    if held.len() > 3 || (!held.is_empty() && rng.next_u64() % 3 == 0) {
                        let view = held.remove(0);
                        let i = u64::from_le_bytes(view.metadata().try_into().unwrap());
                        assert_eq!(view.id(), id(i));
                        assert_eq!(view.len() as u64, size(i));
                        assert!(view.data().iter().all(|&b| b == i as u8), "object {i} changed under its view");
                        if rng.next_u64() % 2 == 0 {
                            drop(view.clone());
                        }
                        checked.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        for i in 0..N {
            let options = CreateOptions::new().pinned(i % 3 != 0);
            let mut b = loop {
                match writer.create_object_with(id(i), size(i), &i.to_le_bytes(), options) {
                    Ok(b) => break b,
                    Err(StoreError::StoreFull { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("create {i}: {e}"),
                }
            };
            b.data_mut().fill(i as u8);
            b.seal().unwrap();
            latest.store(i, Relaxed);
            let ok = |r: Result<(), StoreError>| {
                assert!(matches!(r, Ok(()) | Err(StoreError::NotFound(_))), "{r:?}");
            };
            match i % 5 {
                0 if i >= 4 => ok(writer.unpin(id(i - 4))),
                1 if i >= 4 => ok(writer.pin(id(i - 4))),
                _ => {}
            }
            if i >= 8 {
                ok(writer.delete(id(i - 8)));
            }
            // An ID deleted or evicted comes back in a new object (often in
            // the same entry): a reader that pinned the old one must not end
            // up with a view of the new one half-written.
            if i % 3 == 0 && i >= 12 && !writer.contains(id(i - 12)).unwrap() {
                let j = i - 12;
                if let Ok(mut b) = writer.create_object_with(id(j), size(j), &j.to_le_bytes(), options) {
                    b.data_mut().fill(j as u8);
                    b.seal().unwrap();
                }
            }
        }
        done.store(true, Relaxed);
    });
    for i in 0..N {
        let _ = writer.delete(id(i));
    }
    drop(readers);
    let stats = writer.stats().unwrap();
    assert!(hits.load(Relaxed) > 0 && checked.load(Relaxed) > 0);
    assert_eq!((stats.objects, stats.used, stats.payload), (0, 0, 0), "{stats:?}");
    assert_eq!((stats.repairs, stats.dropped_corrupt), (0, 0), "{stats:?}");
}

#[test]
fn shared_cells_are_changed_in_place_by_every_handle_and_never_read_as_bytes() {
    use std::sync::atomic::Ordering::SeqCst;
    let t = TestStore::new("store-cells");
    let store = t.create(8 << 20);
    let id = ObjectId::random();
    let cells = store.create_cells(id, 3, b"what they hold").unwrap();
    assert_eq!(cells.cells().len(), 3);
    assert!(cells.cells().iter().all(|c| c.load(SeqCst) == 0), "zeroed");
    cells.cells()[1].store(7, SeqCst);
    // Another client (another process would do the same) sees and changes them.
    let other = quiver::Store::open(&t.name).unwrap();
    let theirs = other.get_cells(id).unwrap().expect("sealed at once");
    assert_eq!(theirs.cells()[1].fetch_add(1, SeqCst), 7);
    assert_eq!(cells.cells()[1].load(SeqCst), 8);
    assert_eq!(theirs.metadata(), b"what they hold");
    // Never bytes, whichever path a get takes (and whatever this client holds).
    for s in [&store, &other] {
        assert!(matches!(s.get(id, Duration::ZERO), Err(StoreError::CellsObject(_))));
    }
    assert!(matches!(store.unpin(id), Err(StoreError::InvalidArgument(_))));
    assert!(matches!(store.evict(u64::MAX), Ok(0)), "pinned: never evicted");
    // And an ordinary object is not cells.
    let plain = ObjectId::random();
    store.create_object(plain, 8, b"").unwrap().seal().unwrap();
    assert!(matches!(store.get_cells(plain), Err(StoreError::NotCells(_))));
    assert!(matches!(store.create_cells(id, 3, b""), Err(StoreError::AlreadyExists(_))));
    // Deleted once no handle holds it.
    store.delete(id).unwrap();
    drop((cells, theirs));
    assert!(store.get_cells(id).unwrap().is_none());
}
