//! Kafka in, against a real Kafka-protocol broker (tansu on loopback, which
//! `scripts/test` starts and names in `QUIVER_KAFKA_BROKERS`). Without that
//! variable these tests say so and pass; with it, a broker that is gone is a
//! failure.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use quiver::kafka::{Source, SourceConfig};
use quiver::{ConsumerConfig, Polled};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::common::TestStore;

/// The broker `scripts/test` started, or `None` (and a note) without one.
fn broker() -> Option<String> {
    match std::env::var("QUIVER_KAFKA_BROKERS") {
        Ok(brokers) if !brokers.is_empty() => Some(brokers),
        _ => {
            eprintln!("no Kafka broker (QUIVER_KAFKA_BROKERS is unset; scripts/test starts one): not tested");
            None
        }
    }
}

/// Runs a future to completion on this thread.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// A new topic of `partitions` partitions, named uniquely.
fn topic(brokers: &str, tag: &str, partitions: i32) -> String {
    let name = format!("quiver-{tag}-{}-{}", std::process::id(), quiver::ObjectId::random());
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("an admin client");
    let new = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    let results = block_on(admin.create_topics([&new], &AdminOptions::new())).expect("create the topic");
    for result in results {
        result.expect("the topic is created");
    }
    name
}

/// Produces records `from..to` to every partition: key `p-i`, value `i`.
fn produce(brokers: &str, topic: &str, partitions: i32, range: std::ops::Range<u32>) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("a producer");
    for p in 0..partitions {
        for i in range.clone() {
            let key = format!("{p}-{i}");
            let value = i.to_le_bytes();
            let mut record = BaseRecord::to(topic).partition(p).key(&key).payload(&value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("every record delivered");
}

/// What Kafka holds as committed for `group` on each partition of `topic`.
fn kafka_committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().expect("a consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).expect("committed offsets");
    (0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Steps `source` until `done` or 60 s pass.
fn step_until(source: &mut Source, what: &str, mut done: impl FnMut(&Source) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(source) {
        assert!(Instant::now() < deadline, "{what}: not within 60 s ({:?})", source.stats());
        source.step(Duration::from_millis(50)).expect("a step of the source");
    }
}

/// Reads every batch the group `g` can get now, committing after each, and
/// returns (Kafka partition, Kafka offset, value) per row.
fn read_all(consumer: &mut quiver::Consumer) -> Vec<(i32, i64, u32)> {
    let mut rows = Vec::new();
    while let Polled::Batch(got) = consumer.poll(Duration::from_millis(300)).expect("a poll") {
        let b = &got.batch;
        let (partitions, offsets) = (b.column(3).as_primitive::<Int32Type>(), b.column(4).as_primitive::<Int64Type>());
        let values = b.column(1).as_binary::<i32>();
        for r in 0..b.num_rows() {
            assert_eq!(partitions.value(r) as u32, got.partition, "Kafka partition p goes to stream partition p");
            let value = u32::from_le_bytes(values.value(r).try_into().expect("4-byte values"));
            rows.push((partitions.value(r), offsets.value(r), value));
        }
        drop(got);
        consumer.commit().expect("a commit");
    }
    rows
}

#[test]
fn a_topic_reaches_the_stream_in_order_and_kafka_offsets_follow_the_groups_commits() {
    let Some(brokers) = broker() else { return };
    let topic = topic(&brokers, "order", 2);
    produce(&brokers, &topic, 2, 0..200);
    let t = TestStore::new("kafka-order");
    let store = t.create(64 << 20);
    let kafka_group = format!("{topic}-source");
    let config = SourceConfig::new(&brokers, &topic, &kafka_group)
        .required_group("g")
        .batch_records(50)
        .linger(Duration::from_millis(5));
    let mut source = Source::new(&store, "s", config).expect("a source");
    assert_eq!(source.stream().partitions(), 2);
    step_until(&mut source, "400 records appended", |s| s.stats().records == 400);
    // Nothing read by the stream's group yet: nothing committed to Kafka.
    source.step(Duration::from_millis(200)).unwrap();
    assert_eq!(source.stats().committed, [-1, -1]);
    assert_eq!(kafka_committed(&brokers, &kafka_group, &topic, 2), [-1, -1]);

    let mut consumer = source.stream().consumer(ConsumerConfig::group("g")).unwrap();
    let rows = read_all(&mut consumer);
    for p in 0..2 {
        let mine: Vec<(i64, u32)> = rows.iter().filter(|r| r.0 == p).map(|r| (r.1, r.2)).collect();
        let expected: Vec<(i64, u32)> = (0..200).map(|i| (i as i64, i)).collect();
        assert_eq!(mine, expected, "partition {p}: every record, in order");
    }
    step_until(&mut source, "Kafka offsets committed", |s| s.stats().committed == [200, 200]);
    assert_eq!(kafka_committed(&brokers, &kafka_group, &topic, 2), [200, 200]);
}

#[test]
fn a_source_started_again_on_a_new_store_resumes_from_kafka_and_loses_nothing() {
    let Some(brokers) = broker() else { return };
    let topic = topic(&brokers, "resume", 1);
    produce(&brokers, &topic, 1, 0..300);
    let kafka_group = format!("{topic}-source");
    let config = || {
        SourceConfig::new(&brokers, &topic, &kafka_group)
            .required_group("g")
            .batch_records(100)
            .linger(Duration::from_millis(5))
    };
    let mut seen = Vec::new();
    {
        let t = TestStore::new("kafka-before");
        let store = t.create(64 << 20);
        let mut source = Source::new(&store, "s", config()).expect("a source");
        step_until(&mut source, "300 records appended", |s| s.stats().records == 300);
        // The group reads (and commits) only the first batch, then the host
        // is lost: the store, the source and the group's position with it.
        let mut consumer = source.stream().consumer(ConsumerConfig::group("g")).unwrap();
        let Polled::Batch(first) = consumer.poll(Duration::from_secs(5)).unwrap() else { panic!("a batch") };
        seen.extend(first.batch.column(4).as_primitive::<Int64Type>().values().iter().copied());
        drop(first);
        consumer.commit().unwrap();
        step_until(&mut source, "the first batch committed to Kafka", |s| s.stats().committed == [100]);
    }
    produce(&brokers, &topic, 1, 300..350);
    let t = TestStore::new("kafka-after");
    let store = t.create(64 << 20);
    let mut source = Source::new(&store, "s", config()).expect("a source, again");
    step_until(&mut source, "the rest appended", |s| s.stats().records == 250);
    let mut consumer = source.stream().consumer(ConsumerConfig::group("g")).unwrap();
    seen.extend(read_all(&mut consumer).into_iter().map(|r| r.1));
    seen.sort_unstable();
    assert_eq!(seen, (0..350).collect::<Vec<i64>>(), "every record once: resumed at Kafka's committed offset");
}

#[test]
fn quiver_kafka_source_appends_a_topic_and_reports_what_it_committed() {
    let Some(brokers) = broker() else { return };
    let topic = topic(&brokers, "cli", 2);
    produce(&brokers, &topic, 2, 0..100);
    let t = TestStore::new("kafka-cli");
    let kafka_group = format!("{topic}-cli");
    let args = [
        "kafka",
        "source",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--group",
        &kafka_group,
        "--store",
        &t.name,
        "--stream",
        "s",
        "--require-group",
        "g",
        "--seconds",
        "3",
    ];
    let out = crate::common::run_quiver(&args, crate::common::LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("200 records"), "{report}");
    // Nobody read the stream while it ran: nothing was committed to Kafka.
    assert_eq!(kafka_committed(&brokers, &kafka_group, &topic, 2), [-1, -1]);
    let store = quiver::Store::open(&t.name).unwrap();
    let stream = quiver::Stream::open(&store, "s").unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    assert_eq!(read_all(&mut consumer).len(), 200);
}
