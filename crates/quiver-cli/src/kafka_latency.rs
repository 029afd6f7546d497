//! `quiver kafka bench --latency`: the time from a Kafka produce to a
//! quiver poll, at a steady rate, beside the time to a bare rdkafka
//! consumer's poll of the same records in the same run.
//!
//! A producer thread first sends warm-up records until both paths have
//! read one (their groups joined), then a JSON record `{"sent_ns": ...,
//! "seq": ...}` every 1/rate seconds (librdkafka's own linger off). A bare consumer
//! thread notes each record's age when it polls it; the source, in this
//! thread, appends the same records to a stream that a quiver consumer
//! thread polls, noting each row's age. Ages are wall-clock differences on
//! one host.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::{DataType, Field, Schema};
use quiver::{ConsumerConfig, Polled, Store, StoreConfig, Stream};
use quiver_kafka::{Format, Source, SourceConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Whether `n` records read are all of them (the producer has finished).
fn all_read(n: u64, produced: &AtomicU64, producing: &AtomicBool) -> bool {
    !producing.load(Ordering::SeqCst) && n >= produced.load(Ordering::SeqCst)
}

/// The wall clock the records carry (the one the store stamps appends with).
fn wall_ns() -> i64 {
    quiver::shm::clock::wall_ns() as i64
}

/// Ages in µs, sorted on demand.
#[derive(Default)]
struct Ages(Vec<f64>);

impl Ages {
    fn note(&mut self, sent_ns: i64) {
        self.0.push((wall_ns() - sent_ns) as f64 / 1000.0);
    }

    fn line(&mut self, what: &str) -> String {
        self.0.sort_by(f64::total_cmp);
        let q = |q: f64| self.0.get(((self.0.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
        format!(
            "{what:<16} p50 {:>8.0} µs, p90 {:>8.0} µs, p99 {:>8.0} µs, max {:>8.0} µs ({} records)",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            self.0.len()
        )
    }
}

pub(crate) fn run(
    brokers: &str,
    rate: u64,
    seconds: Duration,
    linger: Duration,
    properties: &[(String, String)],
) -> Result<()> {
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    let topic = format!("quiver-latency-{}-{}", std::process::id(), quiver::ObjectId::random());
    quiver_kafka::create_topic(brokers, &topic, 1, Duration::from_secs(30))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("sent_ns", DataType::Int64, true),
        Field::new("seq", DataType::Int64, true),
    ]));
    let name = format!("kafka-latency-{}", std::process::id());
    let store = Store::create(StoreConfig::new(&name).capacity(256 << 20))?;
    let _remove = super::guard::RemoveOnDrop::new(store.path());
    let mut config = SourceConfig::new(brokers, &topic, format!("{topic}-source"))
        .format(Format::Json(Some(schema)))
        .linger(linger)
        .required_group("g");
    let mut bare_config = rdkafka::ClientConfig::new();
    bare_config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-bare"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (key, value) in properties {
        config = config.property(key, value);
        bare_config.set(key, value);
    }
    let mut source = Source::new(&store, "s", config)?;
    let bare: BaseConsumer = bare_config.create()?;
    bare.subscribe(&[&topic])?;

    let produced = Arc::new(AtomicU64::new(0));
    let producing = Arc::new(AtomicBool::new(true));
    // Both paths have joined their groups and read a warm-up record before
    // the timed records start: joining is not latency.
    let (bare_warm, quiver_warm, abort) = (AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false));
    let deadline = Instant::now() + seconds + Duration::from_secs(90);
    let going = |n: usize| {
        !all_read(n as u64, &produced, &producing) && Instant::now() < deadline && !abort.load(Ordering::SeqCst)
    };
    std::thread::scope(|scope| -> Result<()> {
        let producer = scope.spawn({
            let (produced, producing) = (Arc::clone(&produced), Arc::clone(&producing));
            let topic = topic.clone();
            let (bare_warm, quiver_warm, abort) = (&bare_warm, &quiver_warm, &abort);
            move || -> Result<()> {
                let mut config = rdkafka::ClientConfig::new();
                config.set("bootstrap.servers", brokers).set("linger.ms", "0");
                for (key, value) in properties {
                    config.set(key, value);
                }
                let producer: ThreadedProducer<DefaultProducerContext> = config.create()?;
                let send =
                    |value: &str| match producer.send(BaseRecord::<(), str>::to(&topic).partition(0).payload(value)) {
                        Ok(()) => Ok(()),
                        Err((e, _)) => Err(anyhow::anyhow!("produce: {e}")),
                    };
                while !(bare_warm.load(Ordering::SeqCst) && quiver_warm.load(Ordering::SeqCst)) {
                    if abort.load(Ordering::SeqCst) || Instant::now() >= deadline {
                        bail!("the consumers did not read a warm-up record");
                    }
                    send(&format!(r#"{{"sent_ns": {}, "seq": -1}}"#, wall_ns()))?;
                    std::thread::sleep(Duration::from_millis(100));
                }
                let (start, every) = (Instant::now(), Duration::from_secs_f64(1.0 / rate as f64));
                let mut seq = 0u64;
                while start.elapsed() < seconds && !abort.load(Ordering::SeqCst) {
                    let due = start + every * seq as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    send(&format!(r#"{{"sent_ns": {}, "seq": {seq}}}"#, wall_ns()))?;
                    seq += 1;
                }
                producer.flush(Duration::from_secs(30))?;
                produced.store(seq, Ordering::SeqCst);
                producing.store(false, Ordering::SeqCst);
                Ok(())
            }
        });
        let bare_thread = scope.spawn(|| -> Result<Ages> {
            let mut ages = Ages::default();
            while going(ages.0.len()) {
                if let Some(message) = bare.poll(Duration::from_millis(50)) {
                    let message = message?;
                    let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default())?;
                    if value["seq"].as_i64().unwrap_or(-1) < 0 {
                        bare_warm.store(true, Ordering::SeqCst);
                    } else {
                        ages.note(value["sent_ns"].as_i64().unwrap_or_default());
                    }
                }
            }
            Ok(ages)
        });
        let quiver_thread = scope.spawn(|| -> Result<Ages> {
            let store = Store::open(&name)?;
            let stream = Stream::open(&store, "s")?;
            let mut consumer = stream.consumer(ConsumerConfig::group("g"))?;
            let mut ages = Ages::default();
            while going(ages.0.len()) {
                if let Polled::Batch(got) = consumer.poll(Duration::from_millis(50))? {
                    let (sent, seq) = (
                        got.batch.column(0).as_primitive::<Int64Type>(),
                        got.batch.column(1).as_primitive::<Int64Type>(),
                    );
                    for (sent, seq) in sent.iter().zip(seq.iter()) {
                        match (sent, seq) {
                            (Some(sent), Some(seq)) if seq >= 0 => ages.note(sent),
                            _ => quiver_warm.store(true, Ordering::SeqCst),
                        }
                    }
                    drop(got);
                    consumer.commit()?;
                }
            }
            Ok(ages)
        });
        while !(quiver_thread.is_finished() && bare_thread.is_finished()) {
            if let Err(e) = source.step(Duration::from_millis(20)) {
                abort.store(true, Ordering::SeqCst);
                return Err(e.into());
            }
        }
        let join = |r: std::thread::Result<Result<Ages>>| r.unwrap_or_else(|_| bail!("a thread panicked"));
        join(producer.join().map(|r| r.map(|()| Ages::default())))?;
        let (mut bare_ages, mut quiver_ages) = (join(bare_thread.join())?, join(quiver_thread.join())?);
        let n = produced.load(Ordering::SeqCst);
        if bare_ages.0.len() as u64 != n || quiver_ages.0.len() as u64 != n {
            bail!("{n} records produced; the bare consumer read {}, quiver {}", bare_ages.0.len(), quiver_ages.0.len());
        }
        println!(
            "records          {n} at {rate}/s for {:.0} s; source linger {} ms",
            seconds.as_secs_f64(),
            linger.as_millis()
        );
        println!("{}", bare_ages.line("bare consumer"));
        println!("{}", quiver_ages.line("quiver poll"));
        Ok(())
    })
}
