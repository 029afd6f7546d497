//! Damaged bytes never hide a loss: every bit of a small store's index,
//! and of its stream's slot and partition record, is flipped in turn, and
//! a consumer then either returns every batch, or reports each one it did
//! not return (an error, a skip, a batch counted as missed).

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use quiver::store::Store;
use quiver::stream::{ConsumerConfig, Polled, StartAt, Stream, StreamConfig};
use quiver::{OpenConfig, StoreConfig};

use crate::common::TestStore;
use crate::streams::{batch, first_seq, schema};

const BATCHES: u64 = 40;
const ROWS: usize = 4;
/// Where the registry starts, and the first stream record's partition slot
/// 0 in it (docs/format.md).
const REGISTRY: u64 = 28_672;
const STREAM_SLOT: u64 = REGISTRY + 64;
const PARTITION_0: u64 = STREAM_SLOT + 256;

/// A closed one-partition stream of [`BATCHES`] batches in a store of 64
/// objects, left on disk with no client attached; returns its bytes.
fn template(t: &TestStore) -> Vec<u8> {
    let store = Store::create(StoreConfig::new(&t.name).capacity(256 << 10).max_objects(64)).unwrap();
    let stream = Stream::create(&store, StreamConfig::new("s", schema())).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..BATCHES {
        producer.append(&batch(0, (i as usize * ROWS) as i64, ROWS)).unwrap();
    }
    stream.close().unwrap();
    drop((producer, stream, store));
    std::fs::read(&t.path).unwrap()
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// What a consumer made of the store: `None` if it failed (the damage was
/// reported), else the offsets it returned and how many it reported.
fn consume(t: &TestStore) -> Option<(BTreeSet<u64>, u64)> {
    let store = Store::open_with(OpenConfig::new(&t.name).prefault(false)).ok()?;
    let stream = Stream::open(&store, "s").ok()?;
    let config = ConsumerConfig::group("damage").start(StartAt::Oldest).skip_corrupt(true);
    let mut consumer = stream.consumer(config).ok()?;
    let mut returned = BTreeSet::new();
    // Bounded: a damaged head may claim billions of offsets (holes).
    for _ in 0..10 * BATCHES {
        match consumer.poll(Duration::from_millis(1)).ok()? {
            Polled::Batch(b) => {
                // Whatever is returned is the batch at its offset.
                assert_eq!(first_seq(&b), (b.offset as usize * ROWS) as i64, "batch at {} is another's", b.offset);
                assert!(b.partition == 0 && returned.insert(b.offset), "offset {} returned twice", b.offset);
            }
            Polled::EndOfStream | Polled::TimedOut => break,
        }
    }
    Some((returned, consumer.skipped() + consumer.missed()))
}

#[test]
fn no_flipped_bit_of_the_index_or_the_stream_record_hides_a_batch() {
    let t = TestStore::new("damage-flips");
    let clean = template(&t);
    let (index_offset, index_slots) = (u64_at(&clean, 48), u64_at(&clean, 32));
    let ranges = [
        ("index", index_offset, index_slots * 8),
        ("stream slot", STREAM_SLOT, 256),
        ("partition 0", PARTITION_0, 128),
    ];
    // What a consumer can change: the header, clients and allocator before
    // the registry, the first stream record and its skip log, and the
    // table, index and arena after it (restoring only these keeps the
    // thousands of rounds cheap).
    let entries_offset = u64_at(&clean, 40);
    let skip_log = REGISTRY + 299_072;
    let restore =
        [(0, PARTITION_0 + 64 * 128 + 16 * 640), (skip_log, skip_log + 4160), (entries_offset, clean.len() as u64)];
    let file = std::fs::OpenOptions::new().write(true).open(&t.path).unwrap();
    let (mut flips, mut reported) = (0u64, 0u64);
    for (what, start, len) in ranges {
        for bit in 0..len * 8 {
            for (from, to) in restore {
                file.write_all_at(&clean[from as usize..to as usize], from).unwrap();
            }
            let at = start + bit / 8;
            file.write_all_at(&[clean[at as usize] ^ (1 << (bit % 8))], at).unwrap();
            flips += 1;
            match consume(&t) {
                None => reported += 1,
                Some((returned, counted)) => {
                    let lost = BATCHES - returned.len() as u64;
                    assert!(
                        counted >= lost,
                        "bit {} of byte {} of the {what}: {lost} batches neither returned nor reported \
                         (returned {returned:?}, {counted} counted)",
                        bit % 8,
                        at - start,
                    );
                }
            }
        }
    }
    // The property was tried over the whole of each range.
    assert_eq!(flips, (index_slots * 8 + 256 + 128) * 8);
    eprintln!("{flips} bits flipped, {reported} reported as errors");
}
