//! Store files that are not what they should be: foreign, empty, not yet
//! initialised, truncated, of another version, with a corrupt layout or
//! garbage in their tables. Each gives a clear error; none panics. And a
//! store on disk outlives its processes.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use quiver::{ObjectId, OpenConfig, Store, StoreConfig, StoreError};

fn open(path: &Path) -> Result<Store, StoreError> {
    Store::open_with(OpenConfig::at_path(path).ready_timeout(Duration::from_millis(20)))
}

fn make_store(path: &Path, objects: u64) {
    let store = Store::create(StoreConfig::at_path(path).capacity(1 << 20).max_objects(64)).unwrap();
    for i in 0..objects {
        let mut b = store.create_object(ObjectId::sequential(1, 0, i), 1000, b"meta").unwrap();
        b.data_mut().fill(i as u8);
        b.seal().unwrap();
    }
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_foreign_file_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign");
    std::fs::write(&path, b"#!/bin/sh\necho this is not a quiver store\n".repeat(100)).unwrap();
    assert!(matches!(open(&path), Err(StoreError::NotAStore(_))));
    std::fs::write(&path, b"abc").unwrap();
    assert!(matches!(open(&path), Err(StoreError::NotAStore(_))));
}

/// Stores are published whole, by a rename: an empty file, zeros, or a
/// file whose ready word is unset at a store's name is not a store, at
/// once (no creator will ever finish it; its temporary has another name).
#[test]
fn an_empty_or_unpublished_file_is_not_a_store_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty");
    let started = std::time::Instant::now();
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(open(&path), Err(StoreError::NotAStore(_))));
    std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
    assert!(matches!(open(&path), Err(StoreError::NotAStore(_))));
    // A store whose ready word was never written.
    let path = dir.path().join("unpublished");
    make_store(&path, 0);
    write_at(&path, 12, &0u32.to_le_bytes());
    assert!(matches!(open(&path), Err(StoreError::NotAStore(_))));
    // Not after waiting a second for a creator each (as before).
    assert!(started.elapsed() < std::time::Duration::from_millis(2500), "{:?}", started.elapsed());
}

#[test]
fn a_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

#[test]
fn a_truncated_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated");
    make_store(&path, 3);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    match open(&path) {
        Err(StoreError::Truncated { expected, actual, .. }) => assert_eq!((expected, actual), (len, len / 2)),
        other => panic!("expected Truncated, got {other:?}"),
    }
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
    assert!(matches!(open(&path), Err(StoreError::Truncated { .. })));
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("version");
    make_store(&path, 1);
    write_at(&path, 8, &99u32.to_le_bytes());
    match open(&path) {
        Err(StoreError::VersionMismatch { found: 99, expected, .. }) => {
            assert_eq!(expected, quiver::store::FORMAT_VERSION)
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

#[test]
fn a_corrupt_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layout");
    make_store(&path, 1);
    // max_objects lies at offset 24 of the header (see docs/format.md).
    write_at(&path, 24, &1_000_000u64.to_le_bytes());
    assert!(matches!(open(&path), Err(StoreError::Corrupted(_))));
}

#[test]
fn store_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private");
    make_store(&path, 0);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_disk_store_recovers_what_its_killed_processes_left() {
    use crate::common::{harness, LONG};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed");
    make_store(&path, 4);
    let spec = path.display().to_string();
    let mut holder = harness(&["hold", "--store", &spec, "--count", "4"]);
    holder.expect_line("holding", LONG);
    let mut creator = harness(&["create-unsealed", "--store", &spec, "--ns", "2", "--count", "2"]);
    creator.expect_line("created", LONG);
    holder.kill();
    creator.kill();
    // Every process that used the store is gone; open it again.
    let store = open(&path).unwrap();
    let objects = store.list().unwrap();
    assert_eq!(objects.len(), 4, "the unsealed objects were aborted: {objects:?}");
    assert!(objects.iter().all(|o| o.references == 0), "the dead holder's references were released");
    for i in 0..4 {
        let view = store.get(ObjectId::sequential(1, 0, i), Duration::ZERO).unwrap().unwrap();
        assert!(view.data().iter().all(|&b| b == i as u8));
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.clients, stats.dead_clients), (1, 2));
}

#[test]
fn a_store_on_disk_outlives_its_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk-store");
    make_store(&path, 5);
    let store = open(&path).unwrap();
    for i in 0..5 {
        let view = store.get(ObjectId::sequential(1, 0, i), Duration::ZERO).unwrap().unwrap();
        assert!(view.data().iter().all(|&b| b == i as u8));
        assert_eq!(view.metadata(), b"meta");
    }
    assert_eq!(store.stats().unwrap().clients, 1, "the creator's client slot was released");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random bytes written anywhere past the lock (allocator state, client
    /// slots, object table, index, arena) never make an operation panic:
    /// each returns a result or `Corrupted`.
    #[test]
    fn garbage_in_the_tables_never_panics(
        writes in proptest::collection::vec((8192u64..40_000, proptest::collection::vec(any::<u8>(), 1..64)), 1..8),
        ops in proptest::collection::vec(0u8..6, 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage");
        make_store(&path, 8);
        for (offset, bytes) in &writes {
            write_at(&path, *offset, bytes);
        }
        let Ok(store) = open(&path) else { return Ok(()) };
        for (n, op) in ops.into_iter().enumerate() {
            let id = ObjectId::sequential(1, 0, n as u64 % 10);
            let _ = match op {
                0 => store.get(id, Duration::ZERO).map(|v| v.map(|v| v.data().iter().map(|&b| b as u64).sum::<u64>())).map(drop),
                1 => store.create_object(id, 500, b"x").and_then(|b| b.seal()),
                2 => store.delete(id),
                3 => store.list().map(drop),
                4 => store.stats().map(drop),
                _ => store.recover_dead_clients().map(drop),
            };
        }
    }
}

#[test]
fn garbage_bitmap_bits_do_not_name_lists_that_do_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bitmap");
    make_store(&path, 2);
    // Every second-level bitmap (allocator state + 8, 64 × u32) gets its
    // high 16 bits set: there are only 16 lists per row.
    for row in 0..64u64 {
        write_at(&path, 8192 + 8 + row * 4, &0xFFFF_0000u32.to_le_bytes());
    }
    let store = open(&path).unwrap();
    let _ = store.stats();
    let _ = store.create_object(ObjectId::random(), 100, &[]).map(|b| b.seal());
    assert!(store.get(ObjectId::sequential(1, 0, 1), Duration::ZERO).unwrap().is_some());
}

#[test]
fn a_corrupt_lru_list_is_refused_then_repaired_without_freeing_live_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lru");
    make_store(&path, 8);
    // lru_head (header offset 152) names entry 63, which is FREE.
    write_at(&path, 152, &63u32.to_le_bytes());
    let store = open(&path).unwrap();
    let big = store.stats().unwrap().largest_free + 4096; // forces an eviction
    assert!(matches!(store.create_object(ObjectId::random(), big, &[]), Err(StoreError::Corrupted(_))));
    // The next call repairs from the object table; every object is intact.
    let stats = store.stats().unwrap();
    assert_eq!((stats.repairs, stats.objects), (1, 8), "{stats:?}");
    for i in 0..8 {
        let view = store.get(ObjectId::sequential(1, 0, i), Duration::ZERO).unwrap().unwrap();
        assert!(view.data().iter().all(|&b| b == i as u8), "object {i}");
    }
    // And eviction works again.
    store.create_object(ObjectId::random(), big, &[]).unwrap().seal().unwrap();
    assert!(store.stats().unwrap().evictions >= 1);
}

#[test]
fn a_seal_wakes_a_creator_waiting_for_space() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealwake");
    let store = Store::create(StoreConfig::at_path(&path).capacity(1 << 20)).unwrap();
    // Fill the store with unsealed objects: nothing can be evicted.
    let mut builders = Vec::new();
    while let Ok(b) = store.create_object(ObjectId::random(), 100 << 10, &[]) {
        builders.push(b);
    }
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            let options = quiver::CreateOptions::new().timeout(Duration::from_secs(60)).pinned(false);
            store.create_object_with(ObjectId::random(), 100 << 10, &[], options).map(|b| b.seal())
        })
    };
    crate::common::wait_until("a creator parked", || store.debug_waiters(None).unwrap() > 0);
    // Sealing makes one object evictable: the waiter takes its place.
    builders.pop().unwrap().seal().unwrap();
    waiter.join().unwrap().unwrap().unwrap();
    assert_eq!(store.stats().unwrap().evictions, 1);
}

#[test]
fn a_store_owned_by_another_user_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign-owner");
    make_store(&path, 1);
    let me = rustix::process::geteuid().as_raw();
    let other = if me == 4242 { 4243 } else { 4242 };
    // Giving a file away needs privilege; without it there is nothing to test.
    if rustix::fs::chown(&path, Some(rustix::fs::Uid::from_raw(other)), None).is_err() {
        eprintln!("skipped: cannot chown here (not root)");
        return;
    }
    match open(&path) {
        Err(StoreError::OtherOwner { owner, .. }) => assert_eq!(owner, other),
        other => panic!("expected OtherOwner, got {other:?}"),
    }
    let allowed = OpenConfig::at_path(&path).allow_other_owner(true);
    assert!(Store::open_with(allowed).unwrap().contains(ObjectId::sequential(1, 0, 0)).unwrap());
}

#[test]
fn another_users_huge_file_is_refused_before_it_is_mapped() {
    use std::os::unix::fs::MetadataExt;
    // A 1 GiB sparse file of another user in /dev/shm: mapping and
    // pre-faulting it would allocate all of it in the tmpfs.
    let t = crate::common::TestStore::new("foreign-sparse");
    let path = t.path.clone();
    std::fs::File::create(&path).unwrap().set_len(1 << 30).unwrap();
    let me = rustix::process::geteuid().as_raw();
    let other = if me == 4242 { 4243 } else { 4242 };
    if rustix::fs::chown(&path, Some(rustix::fs::Uid::from_raw(other)), None).is_err() {
        eprintln!("skipped: cannot chown here (not root)");
        return;
    }
    let started = std::time::Instant::now();
    match open(&path) {
        Err(StoreError::OtherOwner { owner, .. }) => assert_eq!(owner, other),
        other => panic!("expected OtherOwner, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&path).unwrap().blocks(), 0, "the file was touched before it was refused");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[test]
fn symlinks_devices_and_directories_are_not_stores() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    make_store(&real, 1);
    // A symlink to a real store is refused, not followed into it.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for path in [link.as_path(), Path::new("/dev/null"), dir.path()] {
        match Store::open_with(OpenConfig::at_path(path).ready_timeout(Duration::from_secs(30))) {
            Err(StoreError::NotAStore(p)) => assert_eq!(p, path),
            other => panic!("{}: expected NotAStore, got {other:?}", path.display()),
        }
    }
    // The real store is untouched and opens.
    assert!(open(&real).unwrap().contains(ObjectId::sequential(1, 0, 0)).unwrap());
}

#[test]
fn listing_a_directory_shows_stores_their_clients_and_what_is_not_a_store() {
    use quiver::store::files::{self, FileState};
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("quiver-kept");
    make_store(&store_path, 2);
    let held = open(&store_path).unwrap();
    std::fs::write(dir.path().join("quiver-text"), b"not a store at all").unwrap();
    std::os::unix::fs::symlink(&store_path, dir.path().join("quiver-link")).unwrap();
    std::fs::write(dir.path().join("unrelated"), b"x").unwrap();
    // A creator that died part-way: its temporary, with nobody holding its lock.
    std::fs::write(dir.path().join(".quiver-half.Ab12Cd.creating"), b"").unwrap();
    let list = files::list_in(dir.path()).unwrap();
    let names: Vec<&str> = list.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["half", "kept", "link", "text"], "only quiver's files, by store name");
    let kept = &list[1];
    assert_eq!(kept.state, FileState::Store);
    assert_eq!(kept.owner, Some(rustix::process::geteuid().as_raw()));
    assert_eq!(kept.live_clients, Some(1), "the handle this test holds");
    assert_eq!(kept.creator_pid, Some(std::process::id()));
    assert!(kept.size > 1 << 20 && kept.allocated > 0);
    assert_eq!(list[0].state, FileState::Abandoned);
    assert_eq!(list[2].state, FileState::NotAStore("a symlink".into()));
    assert_eq!(list[3].state, FileState::NotAStore("no quiver magic number".into()));
    drop(held);
    assert_eq!(files::list_in(dir.path()).unwrap()[1].live_clients, Some(0), "the client is gone");
}

#[test]
fn quiver_rm_removes_stores_but_not_what_is_not_one_nor_one_in_use_unless_forced() {
    use crate::common::{run_quiver, TestStore, LONG};
    let (unused, used, link, text) =
        (TestStore::new("rm-unused"), TestStore::new("rm-used"), TestStore::new("rm-link"), TestStore::new("rm-text"));
    make_store(&unused.path, 1);
    make_store(&used.path, 1);
    let held = open(&used.path).unwrap();
    std::os::unix::fs::symlink(&unused.path, &link.path).unwrap();
    std::fs::write(&text.path, b"somebody's notes").unwrap();

    // `ls` shows them, with the live client.
    let out = run_quiver(&["ls", "--json"], LONG);
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = |name: &str| listed.as_array().unwrap().iter().find(|f| f["name"] == name).cloned().unwrap();
    assert_eq!(entry(&used.name)["live_clients"], 1);
    assert_eq!(entry(&unused.name)["live_clients"], 0);
    assert_eq!(entry(&link.name)["state"]["NotAStore"], "a symlink");

    let rm = |args: &[&str]| run_quiver(&[&["rm"], args].concat(), LONG);
    let out = rm(&[&link.name, &text.name, &used.name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not a quiver store (a symlink)"), "{stderr}");
    assert!(stderr.contains("not a quiver store (no quiver magic number)"), "{stderr}");
    assert!(stderr.contains("1 processes have it open"), "{stderr}");
    for path in [&link.path, &text.path, &used.path] {
        assert!(std::fs::symlink_metadata(path).is_ok(), "{} was removed", path.display());
    }
    assert!(std::fs::metadata(&unused.path).is_ok(), "the symlink's target was not touched");

    let out = rm(&[&unused.name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::symlink_metadata(&unused.path).is_err());
    let out = rm(&["--force", &used.name]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 processes still have it open)"));
    assert!(std::fs::symlink_metadata(&used.path).is_err());
    // The handle keeps working on its mapping, and knows the file is gone.
    assert!(held.contains(ObjectId::sequential(1, 0, 0)).unwrap());
    assert!(matches!(held.check_present(), Err(StoreError::Removed(_))));
    let out = rm(&[&unused.name]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no store named"));
}

/// A second local user (uid 4242, run as a real process when the tests run
/// as root; skipped, saying why, otherwise) attacks a user's stores through
/// /dev/shm, which both can write: it cannot read them, and nothing it
/// plants there (its own store, a symlink to the victim's store) is opened,
/// written or removed by the victim's `quiver` without being told to.
#[test]
fn a_second_local_user_cannot_read_hijack_or_plant_stores() {
    use std::os::unix::process::CommandExt;

    use crate::common::{run_command, run_quiver, TestStore, LONG};
    const OTHER: u32 = 4242;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running processes as a second user needs root");
        return;
    }
    let quiver = crate::common::binary("quiver");
    let as_other = |args: &[&str]| {
        let mut command = std::process::Command::new(&quiver);
        command.args(args).uid(OTHER).gid(OTHER).current_dir("/");
        command
    };
    match as_other(&["--version"]).output() {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!("skipped: uid {OTHER} cannot run {} here ({other:?})", quiver.display());
            return;
        }
    }
    let (victim, theirs, planted) = (TestStore::new("victim"), TestStore::new("theirs"), TestStore::new("planted"));
    make_store(&victim.path, 3);
    let input = tempfile::tempdir().unwrap();
    std::fs::set_permissions(input.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let csv = input.path().join("in.csv");
    std::fs::write(&csv, "x\n1\n2\n").unwrap();
    let csv = csv.to_str().unwrap();

    // It cannot read the victim's store (mode 0600).
    let out = run_command(as_other(&["stat", &victim.name]), LONG);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ermission denied"), "{out:?}");

    // Its own store, at a name the victim then uses, is refused, not joined.
    let out = run_command(as_other(&["produce", "--store", &theirs.name, "--stream", "s", "--from", csv]), LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_quiver(&["produce", "--store", &theirs.name, "--stream", "s", "--from", csv], LONG);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&format!("owned by uid {OTHER}")), "{stderr}");

    // A symlink it plants at a name the victim uses, pointing at the
    // victim's own store, is not followed into it.
    std::os::unix::fs::symlink(&victim.path, &planted.path).unwrap();
    rustix::fs::chownat(
        rustix::fs::CWD,
        &planted.path,
        Some(rustix::fs::Uid::from_raw(OTHER)),
        Some(rustix::fs::Gid::from_raw(OTHER)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let out = run_quiver(&["produce", "--store", &planted.name, "--stream", "s", "--from", csv], LONG);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not a quiver store"), "{stderr}");
    let store = open(&victim.path).unwrap();
    assert_eq!(store.stats().unwrap().objects, 3, "the victim's store was written through the symlink");
    drop(store);

    // `ls` shows whose is what; `rm` removes neither without --force.
    let out = run_quiver(&["ls", "--json"], LONG);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = |name: &str| listed.as_array().unwrap().iter().find(|f| f["name"] == name).cloned().unwrap();
    assert_eq!(entry(&theirs.name)["owner"], OTHER);
    assert_eq!(entry(&planted.name)["state"]["NotAStore"], "a symlink");
    let out = run_quiver(&["rm", &theirs.name, &planted.name], LONG);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("belongs to uid {OTHER}")) && stderr.contains("a symlink"), "{stderr}");
    assert!(theirs.path.exists() && std::fs::symlink_metadata(&planted.path).is_ok());
}

/// Issue 12, case 7 (the truncation half): a store file cut short under its
/// clients is reported as `Shrunk` where a wait runs out, not as "nothing
/// arrived". (A client that touched the cut-off bytes would get SIGBUS; the
/// README says never to truncate a store in use.)
#[test]
fn a_store_cut_short_under_a_waiting_client_says_so() {
    let t = crate::common::TestStore::new("shrunk");
    let store = Store::create(StoreConfig::new(&t.name).capacity(1 << 20).max_objects(64)).unwrap();
    let len = std::fs::metadata(&t.path).unwrap().len();
    // Only the arena's last page goes: nothing a lookup touches.
    std::fs::OpenOptions::new().write(true).open(&t.path).unwrap().set_len(len - 4096).unwrap();
    match store.get(ObjectId::sequential(1, 0, 0), Duration::from_millis(10)) {
        Err(StoreError::Shrunk { len: now, .. }) => assert_eq!(now, len - 4096),
        other => panic!("expected Shrunk, got {other:?}"),
    }
    assert!(matches!(store.check_present(), Err(StoreError::Shrunk { .. })));
}

/// Issue 25: truncating a live store used to kill its clients with SIGBUS
/// (rc 135) before any check ran. Now a page past the new end reads zeros
/// where it is touched, and every call of the store fails with `Shrunk`:
/// views held across the cut, lookups, stats, streams, and a producer
/// writing into a batch whose pages were cut. In this process: had a
/// SIGBUS killed it, every test of this binary would fail.
#[test]
fn a_store_truncated_under_its_clients_is_an_error_not_a_crash() {
    use quiver::stream::{ConsumerConfig, Polled, Stream, StreamConfig};
    let t = crate::common::TestStore::new("truncated");
    let store = Store::create(StoreConfig::new(&t.name).capacity(4 << 20).max_objects(256)).unwrap();
    let other = Store::open(&t.name).unwrap();
    let stream = Stream::create(&store, StreamConfig::new("s", quiver_harness::seq_schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..20 {
        producer.append(&quiver_harness::seq_batch(0, i * 64, 64)).unwrap();
    }
    let id = ObjectId::sequential(7, 0, 0);
    let mut b = store.create_object(id, 64 << 10, b"m").unwrap();
    b.data_mut().fill(7);
    b.seal().unwrap();
    let view = other.get(id, Duration::ZERO).unwrap().unwrap();
    let mut writing = store.create_object(ObjectId::sequential(7, 0, 1), 512 << 10, b"").unwrap();
    // Cut everything but the first page: header, tables, registry, arena.
    std::fs::OpenOptions::new().write(true).open(&t.path).unwrap().set_len(4096).unwrap();
    // Held across the cut: its bytes are gone, and read as zeros, not a crash.
    assert!(view.data().iter().all(|&b| b == 0 || b == 7));
    writing.data_mut().fill(1);
    let shrunk = |what: &str, e: StoreError| assert!(matches!(e, StoreError::Shrunk { .. }), "{what}: {e:?}");
    shrunk("seal", writing.seal().unwrap_err());
    shrunk("get", store.get(id, Duration::ZERO).unwrap_err());
    shrunk("get by the other handle", other.get(ObjectId::sequential(7, 0, 2), Duration::ZERO).unwrap_err());
    shrunk("stats", store.stats().unwrap_err());
    shrunk("list", other.list().unwrap_err());
    match producer.append(&quiver_harness::seq_batch(0, 0, 64)) {
        Err(quiver::StreamError::Store(e)) => shrunk("append", e),
        other => panic!("append: {other:?}"),
    }
    let mut consumer = match stream.consumer(ConsumerConfig::group("g")) {
        Ok(consumer) => consumer,
        Err(quiver::StreamError::Store(e)) => return shrunk("consumer", e),
        Err(e) => panic!("consumer: {e:?}"),
    };
    match consumer.poll(Duration::from_millis(50)) {
        Err(quiver::StreamError::Store(e)) => shrunk("poll", e),
        Ok(Polled::Batch(_)) => panic!("a batch from a store cut to one page"),
        other => panic!("poll: {other:?}"),
    }
    drop((view, consumer));
}
