//! Kafka in and out, against a real Kafka-protocol broker (tansu on
//! loopback, which `scripts/test` starts and names in
//! `QUIVER_KAFKA_BROKERS`). Every test here is `#[ignore]`d, so a plain
//! `cargo test` lists them as ignored, never as passed; `scripts/test` runs
//! them with `--ignored` once its broker is up, and then a broker that is
//! missing or gone is a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::Array;
use quiver::{ConsumerConfig, Polled};
use quiver_kafka::{Format, Source, SourceConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::common::TestStore;

/// The broker `scripts/test` started; a failure without one (these tests
/// run only when asked for with `--ignored`).
fn broker() -> String {
    match std::env::var("QUIVER_KAFKA_BROKERS") {
        Ok(brokers) if !brokers.is_empty() => brokers,
        _ => panic!("no Kafka broker: set QUIVER_KAFKA_BROKERS (scripts/test starts tansu and sets it)"),
    }
}

/// A new topic of `partitions` partitions, named uniquely.
fn topic(brokers: &str, tag: &str, partitions: i32) -> String {
    let name = format!("quiver-{tag}-{}-{}", std::process::id(), quiver::ObjectId::random());
    quiver_kafka::create_topic(brokers, &name, partitions, Duration::from_secs(30)).expect("the topic is created");
    name
}

/// Queues `record`, waiting while the producer's queue is full.
fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(producer: &BaseProducer, mut record: BaseRecord<'_, K, P>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
        }
    }
}

/// Produces records `from..to` to every partition: key `p-i`, value `i`.
fn produce(brokers: &str, topic: &str, partitions: i32, range: std::ops::Range<u32>) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("a producer");
    for p in 0..partitions {
        for i in range.clone() {
            let key = format!("{p}-{i}");
            let value = i.to_le_bytes();
            send(&producer, BaseRecord::to(topic).partition(p).key(&key).payload(&value[..]));
        }
    }
    producer.flush(Duration::from_secs(30)).expect("every record delivered");
}

/// Produces `payloads` to partition 0, in order.
fn produce_payloads(brokers: &str, topic: &str, payloads: &[Vec<u8>]) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("a producer");
    for payload in payloads {
        send(&producer, BaseRecord::<(), [u8]>::to(topic).partition(0).payload(payload.as_slice()));
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
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_topic_reaches_the_stream_in_order_and_kafka_offsets_follow_the_groups_commits() {
    let brokers = broker();
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
    assert_eq!(source.partitions(), 2);
    step_until(&mut source, "400 records appended", |s| s.stats().records == 400);
    // Nothing read by the stream's group yet: nothing committed to Kafka.
    source.step(Duration::from_millis(200)).unwrap();
    assert_eq!(source.stats().committed, [-1, -1]);
    assert_eq!(kafka_committed(&brokers, &kafka_group, &topic, 2), [-1, -1]);

    let mut consumer =
        source.stream().expect("the raw stream is open at once").consumer(ConsumerConfig::group("g")).unwrap();
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
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_source_started_again_on_a_new_store_resumes_from_kafka_and_loses_nothing() {
    let brokers = broker();
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
        let mut consumer =
            source.stream().expect("the raw stream is open at once").consumer(ConsumerConfig::group("g")).unwrap();
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
    let mut consumer =
        source.stream().expect("the raw stream is open at once").consumer(ConsumerConfig::group("g")).unwrap();
    seen.extend(read_all(&mut consumer).into_iter().map(|r| r.1));
    seen.sort_unstable();
    assert_eq!(seen, (0..350).collect::<Vec<i64>>(), "every record once: resumed at Kafka's committed offset");
}

/// `quiver kafka source` into stream `s` of `store`, group `g` required.
fn source_args(brokers: &str, topic: &str, kafka_group: &str, store: &str, extra: &[&str]) -> Vec<String> {
    let args = ["kafka", "source", "--brokers", brokers, "--topic", topic, "--group", kafka_group, "--store", store];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--stream", "s", "--require-group", "g"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn quiver_kafka_source_appends_a_topic_and_reports_what_it_committed() {
    let brokers = broker();
    let topic = topic(&brokers, "cli", 2);
    produce(&brokers, &topic, 2, 0..100);
    let t = TestStore::new("kafka-cli");
    let kafka_group = format!("{topic}-cli");
    let args = source_args(&brokers, &topic, &kafka_group, &t.name, &["--seconds", "3"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
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

/// Every batch a new group `g` reads from `stream`, committed.
fn all_batches(stream: &quiver::Stream) -> Vec<arrow_array::RecordBatch> {
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let mut out = Vec::new();
    while let Polled::Batch(got) = consumer.poll(Duration::from_millis(300)).expect("a poll") {
        out.push(got.batch.clone());
        consumer.commit().unwrap();
    }
    out
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn json_records_fill_an_inferred_schema_and_what_does_not_fit_is_kept_as_text() {
    let brokers = broker();
    let topic = topic(&brokers, "json", 1);
    let payloads: Vec<Vec<u8>> = (0..50)
        .map(|i| format!(r#"{{"x": {i}, "y": {}, "name": "n{i}", "extra": [1]}}"#, i as f64 * 0.5).into_bytes())
        .collect();
    produce_payloads(&brokers, &topic, &payloads);
    let t = TestStore::new("kafka-json");
    let store = t.create(64 << 20);
    let config = SourceConfig::new(&brokers, &topic, format!("{topic}-source"))
        .format(Format::Json(None))
        .required_group("g")
        .linger(Duration::from_millis(5));
    let mut source = Source::new(&store, "s", config).expect("a source");
    assert!(source.stream().is_none(), "the schema comes with the first records");
    step_until(&mut source, "50 records appended", |s| s.stats().records == 50);
    // Once the schema is set, records that do not fit keep their text.
    let bad: [&[u8]; 2] = [b"not json at all", br#"{"x": "text where a number goes", "y": 1.5}"#];
    produce_payloads(&brokers, &topic, &bad.map(<[u8]>::to_vec));
    step_until(&mut source, "52 records appended", |s| s.stats().records == 52);
    let stream = source.stream().expect("open now");
    let names: Vec<&str> = stream.schema().fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["x", "y", "name", "extra", "kafka_partition", "kafka_offset", "_unparsed"]);
    let batches = all_batches(stream);
    let batch = arrow_select::concat::concat_batches(stream.schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 52);
    let x = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!((x.value(7), x.is_null(50), x.is_null(51)), (7, true, true));
    assert_eq!(batch.column(2).as_string::<i32>().value(3), "n3");
    assert_eq!(batch.column(3).as_string::<i32>().value(0), "[1]", "other JSON kept as its text");
    let unparsed = batch.column(6).as_string::<i32>();
    assert_eq!(unparsed.null_count(), 50);
    assert_eq!(unparsed.value(50), "not json at all");
    assert!(unparsed.value(51).contains("text where a number goes"));
    assert_eq!(batch.column(5).as_primitive::<Int64Type>().value(51), 51);
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn arrow_records_are_appended_as_they_are_with_their_kafka_offsets() {
    let brokers = broker();
    let topic = topic(&brokers, "arrow", 1);
    let batch = |i: i64| {
        arrow_array::RecordBatch::try_from_iter([(
            "v",
            Arc::new(arrow_array::Int64Array::from(vec![i, i + 1])) as arrow_array::ArrayRef,
        )])
        .unwrap()
    };
    let payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let mut bytes = Vec::new();
            let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &batch(0).schema()).unwrap();
            writer.write(&batch(i * 2)).unwrap();
            writer.finish().unwrap();
            drop(writer);
            bytes
        })
        .collect();
    produce_payloads(&brokers, &topic, &payloads);
    let t = TestStore::new("kafka-arrow");
    let store = t.create(64 << 20);
    let config =
        SourceConfig::new(&brokers, &topic, format!("{topic}-source")).format(Format::Arrow).required_group("g");
    let mut source = Source::new(&store, "s", config).expect("a source");
    step_until(&mut source, "20 records appended", |s| s.stats().records == 20);
    let stream = source.stream().expect("open");
    let batches = all_batches(stream);
    assert_eq!(batches.len(), 20, "one batch per record");
    for (i, b) in batches.iter().enumerate() {
        let v = b.column(0).as_primitive::<Int64Type>();
        assert_eq!((v.value(0), v.value(1)), (i as i64 * 2, i as i64 * 2 + 1));
        assert_eq!(b.column(2).as_primitive::<Int64Type>().value(1), i as i64, "the record's Kafka offset");
    }
}

/// One "host": a store, a source in the shared Kafka group, and a stream
/// group that reads and commits everything, noting each Kafka record seen.
fn host(
    brokers: String,
    topic: String,
    kafka_group: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<std::sync::Mutex<std::collections::HashSet<(i32, i64)>>>,
    appended: Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let t = TestStore::new("kafka-host");
        let store = t.create(64 << 20);
        let config =
            SourceConfig::new(&brokers, &topic, &kafka_group).required_group("g").linger(Duration::from_millis(5));
        let mut source = Source::new(&store, "s", config).expect("a source");
        let mut consumer = source.stream().expect("raw: open").consumer(ConsumerConfig::group("g")).unwrap();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            source.step(Duration::from_millis(20)).expect("a step");
            appended.store(source.stats().records, std::sync::atomic::Ordering::SeqCst);
            while let Polled::Batch(got) = consumer.poll(Duration::ZERO).expect("a poll") {
                let (p, o) =
                    (got.batch.column(3).as_primitive::<Int32Type>(), got.batch.column(4).as_primitive::<Int64Type>());
                let mut seen = seen.lock().unwrap();
                for r in 0..got.batch.num_rows() {
                    seen.insert((p.value(r), o.value(r)));
                }
                drop(got);
                consumer.commit().unwrap();
            }
        }
        source.flush_all().expect("a last commit");
        source.stats().revoked
    })
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn two_hosts_share_a_topic_and_one_leaving_loses_nothing() {
    let brokers = broker();
    let topic = topic(&brokers, "hosts", 2);
    let kafka_group = format!("{topic}-hosts");
    produce(&brokers, &topic, 2, 0..200);
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let (stop_a, stop_b) =
        (Arc::new(std::sync::atomic::AtomicBool::new(false)), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let count = |seen: &Arc<std::sync::Mutex<std::collections::HashSet<(i32, i64)>>>| seen.lock().unwrap().len();
    let wait_for = |what: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while count(&seen) < n {
            assert!(Instant::now() < deadline, "{what}: {} of {n} records seen within 90 s", count(&seen));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let appended_b = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let a = host(brokers.clone(), topic.clone(), kafka_group.clone(), stop_a.clone(), seen.clone(), Arc::default());
    wait_for("host A alone", 400);
    // Host B joins: the group coordinator splits the partitions, and B
    // appends what it is given.
    let b = host(brokers.clone(), topic.clone(), kafka_group.clone(), stop_b.clone(), seen.clone(), appended_b.clone());
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut next = 200;
    while appended_b.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "host B was given no partition within 90 s");
        produce(&brokers, &topic, 2, next..next + 10);
        next += 10;
        std::thread::sleep(Duration::from_millis(200));
    }
    produce(&brokers, &topic, 2, next..400);
    wait_for("both hosts", 800);
    // Host A leaves: B takes its partitions over from the committed offsets.
    stop_a.store(true, std::sync::atomic::Ordering::SeqCst);
    let revoked_a = a.join().expect("host A");
    produce(&brokers, &topic, 2, 400..500);
    wait_for("host B after A left", 1000);
    stop_b.store(true, std::sync::atomic::Ordering::SeqCst);
    b.join().expect("host B");
    let seen = seen.lock().unwrap();
    for p in 0..2 {
        for o in 0..500 {
            assert!(seen.contains(&(p, o)), "record {o} of partition {p} lost");
        }
    }
    assert!(revoked_a > 0, "host A gave partitions up when B joined");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_source_process_killed_at_random_moments_loses_no_record() {
    let brokers = broker();
    let topic = topic(&brokers, "kill", 1);
    let t = TestStore::new("kafka-kill");
    let kafka_group = format!("{topic}-kill");
    // A short session, so the killed member's partition is handed on soon.
    let extra = ["--batch-records", "100", "--property", "session.timeout.ms=6000"];
    let args = source_args(&brokers, &topic, &kafka_group, &t.name, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut rng = quiver::shm::rand::SplitMix64::new(16);
    let mut consumer: Option<quiver::Consumer> = None;
    type Seen = std::collections::BTreeMap<i64, u32>;
    fn read(consumer: &mut Option<quiver::Consumer>, store: &Option<quiver::Store>, seen: &mut Seen) {
        if consumer.is_none() {
            let stream = store.as_ref().and_then(|s| quiver::Stream::open(s, "s").ok());
            *consumer = stream.map(|s| s.consumer(ConsumerConfig::group("g")).unwrap());
        }
        if let Some(c) = consumer.as_mut() {
            for (_, offset, _) in read_all(c) {
                *seen.entry(offset).or_default() += 1;
            }
        }
    }
    let mut seen = Seen::new();
    let mut store = None;
    for kill in 0..3 {
        let mut source = crate::common::quiver(&args);
        // Records arrive while this source runs; it is killed once it has
        // appended some of them (its predecessor's session must end first),
        // at a random moment after, before or after its Kafka commit.
        produce(&brokers, &topic, 1, kill * 1000..(kill + 1) * 1000);
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.range(kill as i64 * 1000..).next().is_none() {
            assert!(Instant::now() < deadline, "source {kill} appended nothing within 60 s");
            store = store.or_else(|| quiver::Store::open(&t.name).ok());
            read(&mut consumer, &store, &mut seen);
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 50));
        source.kill();
        eprintln!(
            "kill {kill}: {} distinct records read, {} read twice",
            seen.len(),
            seen.values().filter(|&&n| n > 1).count()
        );
    }
    // A last source runs until every record is read.
    let mut source = crate::common::quiver(&args);
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 3000 {
        assert!(Instant::now() < deadline, "{} of 3000 records read within 120 s", seen.len());
        store = store.or_else(|| quiver::Store::open(&t.name).ok());
        read(&mut consumer, &store, &mut seen);
        std::thread::sleep(Duration::from_millis(20));
    }
    source.kill();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (0..3000).collect::<Vec<i64>>(), "every record read");
}

/// Every record of partition `p` of `topic`, from the start.
fn topic_records(brokers: &str, topic: &str, p: i32, count: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .create()
        .expect("a consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < count {
        assert!(Instant::now() < deadline, "{} of {count} records within 60 s", out.len());
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            out.push(rdkafka::message::Message::payload(&message.expect("a record")).unwrap_or_default().to_vec());
        }
    }
    out
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_group_sinks_its_batches_to_a_topic_and_commits_after_kafka_acknowledged() {
    let brokers = broker();
    let (arrow_topic, json_topic) = (topic(&brokers, "sink-arrow", 1), topic(&brokers, "sink-json", 1));
    let t = TestStore::new("kafka-sink");
    let store = t.create(64 << 20);
    let batch = |i: i64| {
        arrow_array::RecordBatch::try_from_iter([
            ("x", Arc::new(arrow_array::Int64Array::from_iter_values(i * 10..i * 10 + 10)) as arrow_array::ArrayRef),
            (
                "name",
                Arc::new(arrow_array::StringArray::from_iter_values((0..10).map(|r| format!("r{}", i * 10 + r)))) as _,
            ),
        ])
        .unwrap()
    };
    let config = quiver::StreamConfig::new("s", batch(0).schema()).group("arrow").group("json");
    let stream = quiver::Stream::create(&store, config).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..5 {
        producer.append(&batch(i)).unwrap();
    }
    stream.close().unwrap();
    // Arrow: one record per batch, through the library.
    let mut sink = quiver_kafka::Sink::new(&store, "s", "arrow", quiver_kafka::SinkConfig::new(&brokers, &arrow_topic))
        .expect("a sink");
    while !sink.ended() {
        sink.step(Duration::from_millis(200)).expect("a step");
    }
    assert_eq!(sink.sent, 5);
    let group = |name: &str| stream.stats().unwrap().groups.into_iter().find(|g| g.name == name).unwrap();
    assert_eq!(group("arrow").committed, [5], "committed once Kafka acknowledged");
    for (i, bytes) in topic_records(&brokers, &arrow_topic, 0, 5).iter().enumerate() {
        let mut reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        assert_eq!(reader.next().unwrap().unwrap(), batch(i as i64));
    }
    // JSON: one record per row, through the CLI.
    let args = ["kafka", "sink", "--brokers", &brokers, "--topic", &json_topic, "--store", &t.name, "--stream", "s"];
    let out =
        crate::common::run_quiver(&[&args[..], &["--group", "json", "--format", "json"]].concat(), crate::common::LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("50 records"));
    assert_eq!(group("json").committed, [5]);
    for (i, bytes) in topic_records(&brokers, &json_topic, 0, 50).iter().enumerate() {
        let row: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(row, serde_json::json!({"x": i, "name": format!("r{i}")}));
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_broker_that_is_not_there_is_a_clear_error_at_start() {
    // Port 1 on loopback: nothing listens there.
    let t = TestStore::new("kafka-nobroker");
    let store = t.create(1 << 20);
    let started = Instant::now();
    let config = SourceConfig::new("127.0.0.1:1", "events", "g").property("socket.connection.setup.timeout.ms", "1000");
    let err = Source::new(&store, "s", config).expect_err("no broker");
    assert!(started.elapsed() < Duration::from_secs(30), "it gave up in {:?}", started.elapsed());
    assert!(matches!(err, quiver_kafka::KafkaError::Client(_)), "{err}");
    let out = crate::common::run_quiver(
        &[
            "kafka",
            "source",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "events",
            "--group",
            "g",
            "--store",
            &t.name,
            "--stream",
            "s",
        ],
        crate::common::LONG,
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("127.0.0.1:1") && said.contains("events"), "{said}");
    assert!(quiver::Stream::open(&store, "s").is_err(), "no stream is made for a source that could not start");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn quiver_kafka_bench_reports_the_source_beside_a_bare_consumer() {
    let brokers = broker();
    for format in ["json", "arrow"] {
        let out = crate::common::run_quiver(
            &["kafka", "bench", "--brokers", &brokers, "--records", "200", "--format", format],
            crate::common::LONG,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(report.contains("bare consumer") && report.contains("x the bare consumer"), "{report}");
    }
}

/// A `quiver-harness shard-worker` of group `g` of stream `s`, logging the
/// Kafka partition and offset of every row it reads to `log`.
fn kafka_worker(t: &TestStore, log: &std::path::Path, work_ms: u64) -> crate::common::Proc {
    let (log, work_ms) = (log.display().to_string(), work_ms.to_string());
    crate::common::harness(&[
        "shard-worker",
        "--store",
        &t.name,
        "--stream",
        "s",
        "--group",
        "g",
        "--shard-size",
        "4",
        "--log",
        &log,
        "--log-kafka",
        "--work-ms",
        &work_ms,
    ])
}

/// How often each Kafka (partition, offset) was processed, over every
/// worker log in `dir`.
fn logged_rows(dir: &std::path::Path) -> std::collections::BTreeMap<(i32, i64), u32> {
    let mut rows = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().map_or(true, |e| e != "log") {
            continue;
        }
        for line in std::fs::read_to_string(path).unwrap().lines() {
            if let ["row", p, o] = line.split(' ').collect::<Vec<_>>()[..] {
                *rows.entry((p.parse().unwrap(), o.parse().unwrap())).or_default() += 1;
            }
        }
    }
    rows
}

/// Every (partition, offset) of `partitions` partitions of `records` each.
fn every_record(partitions: i32, records: i64) -> Vec<(i32, i64)> {
    (0..partitions).flat_map(|p| (0..records).map(move |o| (p, o))).collect()
}

/// Steps `source` until the workers' logs show `lines` task lines.
fn step_until_tasks(source: &mut Source, log: &std::path::Path, tasks: usize) {
    step_until(source, "the worker logs its tasks", |_| {
        std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.starts_with("task")).count() >= tasks
    });
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_worker_killed_mid_shard_with_a_source_in_the_loop_loses_no_record() {
    let brokers = broker();
    let topic = topic(&brokers, "worker-kill", 2);
    produce(&brokers, &topic, 2, 0..300);
    let t = TestStore::new("kafka-worker-kill");
    let store = t.create(64 << 20);
    let logs = tempfile::tempdir().unwrap();
    let config = SourceConfig::new(&brokers, &topic, format!("{topic}-source"))
        .required_group("g")
        .batch_records(20)
        .linger(Duration::from_millis(5));
    let mut source = Source::new(&store, "s", config).expect("a source");
    // A slow worker, killed while it works on a shard it has read and not
    // reported; a fast one, and a replacement.
    let (slow_log, fast_log) = (logs.path().join("slow.log"), logs.path().join("fast.log"));
    let mut slow = kafka_worker(&t, &slow_log, 2_000);
    let mut fast = kafka_worker(&t, &fast_log, 5);
    step_until_tasks(&mut source, &slow_log, 1);
    slow.kill();
    let mut replacement = kafka_worker(&t, &logs.path().join("replacement.log"), 5);
    step_until(&mut source, "600 records appended", |s| s.stats().records == 600);
    source.stream().unwrap().close().unwrap();
    step_until(&mut source, "Kafka offsets committed", |s| s.stats().committed == [300, 300]);
    for worker in [&mut fast, &mut replacement] {
        assert!(worker.wait(crate::common::LONG).success(), "a worker failed");
    }
    let shards = quiver::shard::list(&store).unwrap();
    assert!(shards[0].requeued >= 1, "the killed worker's shard was handed out again: {shards:?}");
    let rows = logged_rows(logs.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), every_record(2, 300), "every record processed");
    assert_eq!(kafka_committed(&brokers, &format!("{topic}-source"), &topic, 2), [300, 300]);
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_host_disaster_restored_from_a_checkpoint_with_a_source_loses_no_record() {
    use quiver::{ShardConfig, ShardManager, ShardSize, Stream, StreamConfig};
    let brokers = broker();
    let topic = topic(&brokers, "disaster", 2);
    produce(&brokers, &topic, 2, 0..200);
    let t = TestStore::new("kafka-disaster");
    let logs = tempfile::tempdir().unwrap();
    let checkpoint = logs.path().join("group.qvck");
    let kafka_group = format!("{topic}-source");
    // The new host batches differently (as lingering can): its offsets are
    // not the old ones.
    let config = |batch_records| {
        SourceConfig::new(&brokers, &topic, &kafka_group)
            .required_group("g")
            .batch_records(batch_records)
            .linger(Duration::from_millis(5))
    };
    let schema = {
        let store = t.create(64 << 20);
        let mut source = Source::new(&store, "s", config(10)).expect("a source");
        let stream = source.stream().unwrap().clone();
        let observer = ShardManager::join(&stream, "g", ShardConfig::new().shard_size(ShardSize::Batches(4))).unwrap();
        let log = logs.path().join("before.log");
        let mut worker = kafka_worker(&t, &log, 100);
        step_until_tasks(&mut source, &log, 3);
        observer.checkpoint(&checkpoint).unwrap();
        // Work and Kafka commits go on past the checkpoint, then the host
        // dies halfway through.
        step_until(&mut source, "a Kafka commit", |s| s.stats().committed.iter().any(|&c| c >= 40));
        worker.kill();
        assert!(source.stats().committed.iter().all(|&c| c < 200), "the host died before the end");
        std::mem::forget(observer);
        eprintln!("before the disaster: {:?}", source.stats());
        stream.schema().clone()
    };
    std::fs::remove_file(&t.path).unwrap();
    produce(&brokers, &topic, 2, 200..400);
    // The new host: a new store, the group restored, the source and workers
    // started again.
    let store = t.create(64 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema).partitions(2)).unwrap();
    drop(ShardManager::restore(&stream, "g", &checkpoint).unwrap());
    let mut source = Source::new(&store, "s", config(25)).expect("a source");
    let mut workers: Vec<_> =
        (0..2).map(|w| kafka_worker(&t, &logs.path().join(format!("after-{w}.log")), 1)).collect();
    step_until(&mut source, "every record appended", |s| s.stats().appended == [400, 400]);
    stream.close().unwrap();
    step_until(&mut source, "Kafka offsets committed", |s| s.stats().committed == [400, 400]);
    for worker in &mut workers {
        assert!(worker.wait(crate::common::LONG).success(), "a worker failed");
    }
    let rows = logged_rows(logs.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), every_record(2, 400), "every record processed");
}

/// A broker of the test's own (tansu, through `scripts/kafka-broker`),
/// stopped and its data removed on drop.
struct OwnBroker {
    brokers: String,
    pid: String,
    dir: String,
}

impl OwnBroker {
    fn start(again: Option<&OwnBroker>) -> OwnBroker {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka-broker");
        let mut command = std::process::Command::new(script);
        command.arg("start");
        if let Some(before) = again {
            let port = before.brokers.rsplit(':').next().unwrap();
            command.args([port, &before.dir]);
        }
        let out = crate::common::run_command(command, crate::common::LONG);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let value = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {text}")).to_string()
        };
        OwnBroker { brokers: value("BROKERS="), pid: value("PID="), dir: value("DIR=") }
    }

    /// SIGKILL: the broker is gone at once, its data kept.
    fn kill(&mut self) {
        let _ = std::process::Command::new("kill").args(["-9", &self.pid]).status();
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_broker_that_goes_away_mid_run_is_ridden_out_and_loses_nothing() {
    // Its own broker, started and killed here; the shared one must exist
    // all the same (it says tansu is installed).
    broker();
    let mut own = OwnBroker::start(None);
    let brokers = own.brokers.clone();
    let topic = topic(&brokers, "away", 1);
    produce(&brokers, &topic, 1, 0..100);
    let t = TestStore::new("kafka-away");
    let store = t.create(64 << 20);
    let kafka_group = format!("{topic}-source");
    let config = SourceConfig::new(&brokers, &topic, &kafka_group)
        .required_group("g")
        .batch_records(25)
        .linger(Duration::from_millis(5))
        .property("reconnect.backoff.max.ms", "500");
    let mut source = Source::new(&store, "s", config).expect("a source");
    let mut consumer = source.stream().unwrap().consumer(ConsumerConfig::group("g")).unwrap();
    let mut seen = Vec::new();
    step_until(&mut source, "100 records appended", |s| s.stats().records == 100);
    seen.extend(read_all(&mut consumer).into_iter().map(|r| r.2));
    step_until(&mut source, "the first commit", |s| s.stats().committed == [100]);

    own.kill();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        source.step(Duration::from_millis(100)).expect("a broker gone is ridden out, not an error");
    }
    assert!(source.stats().errors > 0, "the broker's absence was seen: {:?}", source.stats());
    eprintln!("while the broker was away: {:?}", source.stats().last_error);

    let again = OwnBroker::start(Some(&own));
    std::mem::forget(std::mem::replace(&mut own, again));
    produce(&brokers, &topic, 1, 100..200);
    step_until(&mut source, "200 records appended", |s| s.stats().appended == [200]);
    seen.extend(read_all(&mut consumer).into_iter().map(|r| r.2));
    step_until(&mut source, "the commit after the broker came back", |s| s.stats().committed == [200]);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..200).collect::<Vec<u32>>(), "every record read");
    assert_eq!(kafka_committed(&brokers, &kafka_group, &topic, 1), [200]);
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn quiver_stat_shows_a_running_sources_kafka_offsets_and_lag() {
    let brokers = broker();
    let topic = topic(&brokers, "stat", 2);
    produce(&brokers, &topic, 2, 0..50);
    let t = TestStore::new("kafka-stat");
    let kafka_group = format!("{topic}-stat");
    let args = source_args(&brokers, &topic, &kafka_group, &t.name, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut source = crate::common::quiver(&args);
    let stat = || {
        let out = crate::common::run_quiver(&["stat", &t.name, "--json"], crate::common::LONG);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    // Nobody reads the stream: everything appended, nothing committed (no
    // Kafka lag to show yet: the group has no committed offset).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let value = stat();
        let status = &value["kafka_sources"][0];
        let p = &status["partitions"];
        if p[0]["appended"] == 50 && p[1]["appended"] == 50 && p[0]["end"] == 50 && p[1]["end"] == 50 {
            break status.clone();
        }
        assert!(Instant::now() < deadline, "no status with every record appended within 60 s: {value}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["topic"], topic.as_str());
    assert_eq!(status["stream"], "s");
    assert_eq!(status["pid"], source.child.id());
    for p in 0..2 {
        assert_eq!(status["partitions"][p]["committed"], -1);
        assert_eq!(status["partitions"][p]["kafka_lag"], serde_json::Value::Null);
        assert_eq!(status["partitions"][p]["waiting_batches"], 1);
    }
    let text = crate::common::run_quiver(&["stat", &t.name], crate::common::LONG);
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("{text}");
    assert!(text.contains(&format!("kafka source pid {}", source.child.id())), "{text}");
    assert!(text.contains("kafka lag"), "{text}");
    source.kill();
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn quiver_kafka_bench_latency_reports_both_paths_for_every_record() {
    let brokers = broker();
    let args = ["kafka", "bench", "--brokers", &brokers, "--latency", "--rate", "200", "--seconds", "1"];
    let args: Vec<&str> = args.into_iter().chain(["--linger-ms", "1", "--property", "fetch.wait.max.ms=10"]).collect();
    let out = crate::common::run_quiver(&args, crate::common::LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    // The command fails unless both read every record; each line says how many.
    let records = report.lines().next().and_then(|l| l.split_whitespace().nth(1)).expect("a first line");
    for path in ["bare consumer", "quiver poll"] {
        let line = report.lines().find(|l| l.starts_with(path)).unwrap_or_else(|| panic!("no {path} line: {report}"));
        assert!(line.contains("p99") && line.contains(&format!("({records} records)")), "{report}");
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs these with --ignored"]
fn a_group_restored_past_the_head_after_the_source_started_stops_it_before_any_commit() {
    use quiver::{Outcome, ShardConfig, ShardManager, ShardSize, Stream, StreamConfig};
    let brokers = broker();
    let topic = topic(&brokers, "late-restore", 2);
    produce(&brokers, &topic, 2, 0..30);
    let t = TestStore::new("kafka-late-restore");
    let store = t.create(64 << 20);
    let kafka_group = format!("{topic}-source");
    let config = SourceConfig::new(&brokers, &topic, &kafka_group).required_group("g").batch_records(10);
    let mut source = Source::new(&store, "s", config).expect("a source");
    step_until(&mut source, "60 records appended", |s| s.stats().records == 60);
    // A checkpoint of group g from elsewhere, committed past this head (3).
    let other = TestStore::new("kafka-late-restore-other");
    let checkpoint = other.path.with_extension("qvck");
    {
        let old = other.create(16 << 20);
        let schema = source.stream().unwrap().schema().clone();
        let stream = Stream::create(&old, StreamConfig::new("s", schema).partitions(2).group("g")).unwrap();
        let mut producer = stream.producer().unwrap();
        let batch = first_batch_of(&source);
        for _ in 0..10 {
            for p in 0..2 {
                producer.append_to(p, &batch).unwrap();
            }
        }
        let mut m = ShardManager::join(&stream, "g", ShardConfig::new().shard_size(ShardSize::Batches(8))).unwrap();
        for _ in 0..2 {
            let task = m.get_task().unwrap().task().unwrap();
            m.report(task, Outcome::Done).unwrap();
        }
        m.checkpoint(&checkpoint).unwrap();
    }
    drop(ShardManager::restore(source.stream().unwrap(), "g", &checkpoint).unwrap());
    let _ = std::fs::remove_file(&checkpoint);
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match source.step(Duration::from_millis(50)) {
            Err(e) => break e.to_string(),
            Ok(_) => assert!(Instant::now() < deadline, "the source went on ({:?})", source.stats()),
        }
    };
    assert!(err.contains("past its head"), "{err}");
    assert_eq!(kafka_committed(&brokers, &kafka_group, &topic, 2), [-1, -1], "nothing committed to Kafka");
}

/// The first batch of the source's stream, to fill another stream of its
/// schema.
fn first_batch_of(source: &Source) -> arrow_array::RecordBatch {
    let stream = source.stream().unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("peek").start(quiver::StartAt::Oldest)).unwrap();
    match consumer.poll(Duration::from_secs(10)).expect("a poll") {
        Polled::Batch(got) => got.batch.clone(),
        other => panic!("no batch: {other:?}"),
    }
}
