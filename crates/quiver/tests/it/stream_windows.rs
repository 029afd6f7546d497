//! Windows over streams: each rule with its exact windows, re-delivery after
//! a failing function, the stop handle and the non-blocking cycle.

use std::time::Duration;

use quiver::stream::{ConsumerConfig, Stream, StreamConfig, Window, WindowKind, WindowOutcome, Windows};

use crate::common::TestStore;
use crate::streams::{batch, schema, seqs};

/// What a test keeps of a window: its index, and each batch's (partition, offset, seqs).
type Seen = (u64, Vec<(u32, u64, Vec<i64>)>);

fn seen(w: &Window) -> Seen {
    (w.index, w.batches.iter().map(|b| (b.partition, b.offset, seqs(&b.batch))).collect())
}

fn stream_with(t: &TestStore, partitions: u32, batches: &[(i64, usize)], close: bool) -> Stream {
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(partitions).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for &(first, rows) in batches {
        producer.append(&batch(0, first, rows)).unwrap();
    }
    if close {
        stream.close().unwrap();
    }
    stream
}

fn windows(stream: &Stream, kind: WindowKind) -> Windows {
    Windows::new(stream.consumer(ConsumerConfig::group("g")).unwrap(), kind).unwrap()
}

fn collect(w: &mut Windows) -> Vec<Seen> {
    let mut out = Vec::new();
    let stats = w
        .apply(|window| {
            out.push(seen(window));
            Ok::<_, String>(())
        })
        .unwrap();
    assert_eq!(stats.windows, out.len() as u64);
    assert_eq!(stats.failures, 0);
    out
}

#[test]
fn count_windows_hold_exactly_n_batches_and_the_rest_at_the_end() {
    let t = TestStore::new("win-count");
    let stream = stream_with(&t, 1, &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)], true);
    let got = collect(&mut windows(&stream, WindowKind::Batches(3)));
    let offsets: Vec<(u64, Vec<u64>)> = got.iter().map(|(i, b)| (*i, b.iter().map(|b| b.1).collect())).collect();
    assert_eq!(offsets, [(0, vec![0, 1, 2]), (1, vec![3, 4, 5]), (2, vec![6])]);
    // Every window was committed: the group is at the head, the data freed.
    let stats = stream.stats().unwrap();
    assert_eq!((stats.groups[0].committed[0], stats.partitions[0].tail), (7, 7));
}

#[test]
fn row_windows_slice_batches_to_exactly_n_rows_and_commit_only_whole_batches() {
    let t = TestStore::new("win-rows");
    let stream = stream_with(&t, 1, &[(0, 5), (5, 5), (10, 5), (15, 5)], true);
    let mut w = windows(&stream, WindowKind::Rows(7));
    let mut rows = Vec::new();
    let mut committed = Vec::new();
    loop {
        let outcome = w
            .run_once(|window| {
                rows.push(window.batches.iter().flat_map(|b| seqs(&b.batch)).collect::<Vec<_>>());
                Ok::<_, String>(())
            })
            .unwrap();
        match outcome {
            WindowOutcome::Applied { .. } => committed.push(w.consumer().committed(0).unwrap()),
            WindowOutcome::End => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rows, [(0..7).collect::<Vec<i64>>(), (7..14).collect(), (14..20).collect()]);
    // Batch 1 is split over windows 0 and 1, batch 2 over 1 and 2.
    assert_eq!(committed, [1, 2, 4]);
}

#[test]
fn a_failing_function_gets_the_same_window_again_and_nothing_is_committed_meanwhile() {
    let t = TestStore::new("win-retry");
    let stream = stream_with(&t, 2, &[(0, 1), (1, 1), (2, 1), (3, 1)], true);
    let mut w = windows(&stream, WindowKind::Batches(2));
    let mut deliveries: Vec<(u32, Seen)> = Vec::new();
    let mut fail_next = true;
    loop {
        let outcome = w
            .run_once(|window| {
                deliveries.push((window.attempt, seen(window)));
                if window.index == 1 && std::mem::take(&mut fail_next) {
                    return Err("model diverged");
                }
                Ok(())
            })
            .unwrap();
        match outcome {
            WindowOutcome::Failed { index, error } => {
                assert_eq!((index, error), (1, "model diverged"));
                let stats = stream.stats().unwrap();
                assert_eq!(stats.groups[0].lag_batches, 2, "the failed window is not committed");
            }
            WindowOutcome::End => break,
            WindowOutcome::Applied { .. } => {}
            WindowOutcome::NotReady => panic!("a closed stream's windows are always ready"),
        }
    }
    assert_eq!(deliveries.len(), 3);
    assert_eq!((deliveries[1].0, deliveries[2].0), (1, 2));
    assert_eq!(deliveries[1].1, deliveries[2].1, "the same batches again");
    assert_eq!(stream.stats().unwrap().groups[0].lag_batches, 0);
}

#[test]
fn fixed_time_windows_cover_consecutive_intervals_including_empty_ones() {
    let t = TestStore::new("win-fixed");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let interval = Duration::from_millis(40);
    let mut producer = stream.producer().unwrap();
    let a = producer.append(&batch(0, 0, 1)).unwrap();
    let b = producer.append(&batch(0, 1, 1)).unwrap();
    std::thread::sleep(interval * 4);
    let c = producer.append(&batch(0, 2, 1)).unwrap();
    stream.close().unwrap();
    let mut got: Vec<Window> = Vec::new();
    windows(&stream, WindowKind::FixedTime(interval))
        .apply(|w| {
            got.push(w.clone());
            Ok::<_, String>(())
        })
        .unwrap();
    // The expected windows, from the append times and the stream's start.
    let k = |ns: u64| (ns - stream.created_ns()) / interval.as_nanos() as u64;
    let (first, last) = (k(a.append_ns), k(c.append_ns));
    assert!(last >= first + 4 - 1, "{first}..{last}: the sleep spans at least three boundaries");
    let indices: Vec<u64> = got.iter().map(|w| w.index).collect();
    assert_eq!(indices, (first..=last).collect::<Vec<_>>());
    for w in &got {
        let start = stream.created_ns() + w.index * interval.as_nanos() as u64;
        assert_eq!((w.start_ns, w.end_ns), (Some(start), Some(start + interval.as_nanos() as u64)));
        let expected: Vec<u64> = [a, b, c].iter().filter(|x| k(x.append_ns) == w.index).map(|x| x.offset).collect();
        let offsets: Vec<u64> = w.batches.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, expected, "window {}", w.index);
    }
    assert!(got.iter().filter(|w| w.is_empty()).count() >= 2, "the windows between are emitted, empty");
}

#[test]
fn a_fixed_time_window_is_not_complete_before_its_end() {
    let t = TestStore::new("win-fixed-open");
    let stream = stream_with(&t, 1, &[(0, 1)], false);
    let interval = Duration::from_secs(10);
    let mut w = windows(&stream, WindowKind::FixedTime(interval));
    let appended = stream.stats().unwrap();
    assert_eq!(appended.appended, 1);
    let window_end = {
        let since = quiver::arrow::BatchMeta::parse(
            stream.object_id(0, 0),
            stream.store().get(stream.object_id(0, 0), Duration::ZERO).unwrap().unwrap().metadata(),
        )
        .unwrap()
        .append_ns
            - stream.created_ns();
        stream.created_ns() + (since / interval.as_nanos() as u64 + 1) * interval.as_nanos() as u64
    };
    let outcome = w.run_once(|_| Ok::<_, String>(())).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    if now + 1_000_000_000 < window_end {
        assert!(matches!(outcome, WindowOutcome::NotReady), "{outcome:?}");
    }
}

#[test]
fn relaxed_windows_take_everything_unprocessed_and_put_failures_back_in_front() {
    let t = TestStore::new("win-relaxed");
    let stream = stream_with(&t, 1, &[], false);
    let interval = Duration::from_millis(30);
    let mut w = windows(&stream, WindowKind::RelaxedTime(interval));
    let mut producer = stream.producer().unwrap();
    let offsets = |w: &Window| w.batches.iter().map(|b| b.offset).collect::<Vec<_>>();
    // Until data arrives, nothing is emitted (no empty relaxed windows).
    assert!(matches!(w.run_once(|_| Ok::<_, String>(())).unwrap(), WindowOutcome::NotReady));
    std::thread::sleep(interval * 2);
    assert!(matches!(w.run_once(|_| Ok::<_, String>(())).unwrap(), WindowOutcome::NotReady));
    for i in 0..3 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    std::thread::sleep(interval * 2);
    let mut first = Vec::new();
    let outcome = w.run_once(|w| {
        first = offsets(w);
        Ok::<_, String>(())
    });
    assert!(matches!(outcome.unwrap(), WindowOutcome::Applied { .. }));
    assert_eq!(first, [0, 1, 2], "everything appended before the window's end");
    for i in 3..5 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    std::thread::sleep(interval * 2);
    let outcome = w.run_once(|w| Err(offsets(w))).unwrap();
    let WindowOutcome::Failed { error: failed, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(failed, [3, 4]);
    producer.append(&batch(0, 5, 1)).unwrap();
    stream.close().unwrap();
    let mut rest = Vec::new();
    w.apply(|w| {
        rest.extend(offsets(w));
        Ok::<_, String>(())
    })
    .unwrap();
    assert_eq!(rest, [3, 4, 5], "the failed batches first, then the new one");
    assert_eq!(stream.stats().unwrap().groups[0].lag_batches, 0);
}

#[test]
fn the_stop_handle_ends_apply_and_run_once_never_blocks() {
    let t = TestStore::new("win-stop");
    let stream = stream_with(&t, 1, &[], false);
    let mut w = windows(&stream, WindowKind::Batches(1));
    assert!(matches!(w.run_once(|_| Ok::<_, String>(())).unwrap(), WindowOutcome::NotReady));
    let stop = w.stop_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        stop.stop();
    });
    let stats = w.apply(|_| Ok::<_, String>(())).unwrap();
    stopper.join().unwrap();
    assert_eq!(stats.windows, 0);
    stream.close().unwrap();
    let mut w = windows(&stream, WindowKind::Batches(1));
    assert!(matches!(w.run_once(|_| Ok::<_, String>(())).unwrap(), WindowOutcome::End));
    assert!(Windows::new(stream.consumer(ConsumerConfig::reader()).unwrap(), WindowKind::Rows(0)).is_err());
}

#[test]
fn row_windows_end_even_when_the_last_batches_have_no_rows() {
    let t = TestStore::new("win-empty-rows");
    let stream = stream_with(&t, 1, &[(0, 3), (3, 0), (3, 0)], true);
    let got = collect(&mut windows(&stream, WindowKind::Rows(2)));
    let rows: Vec<usize> = got.iter().map(|(_, b)| b.iter().map(|x| x.2.len()).sum()).collect();
    assert_eq!(rows, [2, 1]);
    assert_eq!(stream.stats().unwrap().groups[0].lag_batches, 0);
}

#[test]
fn the_first_fixed_window_is_the_earliest_batch_of_any_partition() {
    let t = TestStore::new("win-fixed-first");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2).group("g")).unwrap();
    let interval = Duration::from_millis(30);
    let mut producer = stream.producer().unwrap();
    let early = producer.append_to(1, &batch(0, 0, 1)).unwrap();
    std::thread::sleep(interval * 3);
    let late = producer.append_to(0, &batch(0, 1, 1)).unwrap();
    stream.close().unwrap();
    let mut got: Vec<Window> = Vec::new();
    windows(&stream, WindowKind::FixedTime(interval))
        .apply(|w| {
            got.push(w.clone());
            Ok::<_, String>(())
        })
        .unwrap();
    let k = |ns: u64| (ns - stream.created_ns()) / interval.as_nanos() as u64;
    assert_eq!(got.first().unwrap().index, k(early.append_ns));
    assert_eq!(got.last().unwrap().index, k(late.append_ns));
    for w in &got {
        for b in &w.batches {
            assert!(w.start_ns.unwrap() <= b.append_ns && b.append_ns < w.end_ns.unwrap(), "batch outside its window");
        }
    }
}
