//! `quiver kafka source`: a Kafka topic appended to a stream, Kafka offsets
//! committed once the stream's groups have committed past them; `quiver
//! kafka sink`: a stream group's batches to a topic.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quiver::{Store, StoreConfig};
use quiver_kafka::{Format, Sink, SinkConfig, SinkFormat, Source, SourceConfig};

use super::GroupArgs;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum KafkaCommand {
    /// Consume a topic as a member of a Kafka consumer group and append its
    /// records to a stream (Kafka partition p into stream partition p),
    /// committing Kafka offsets only after the stream's groups commit.
    Source(SourceArgs),
    /// Produce what a stream consumer group reads to a Kafka topic (an
    /// idempotent producer; the group commits once Kafka acknowledged).
    Sink(SinkArgs),
    /// Measure the source's records per second beside a bare rdkafka
    /// consumer reading the same topic, in one run (a new topic is made).
    Bench(KafkaBenchArgs),
    /// Create a topic (the sink produces only to one that exists).
    Topic(TopicArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct TopicArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// The topic to create.
    #[arg(long)]
    topic: String,
    /// Its partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1024))]
    partitions: i32,
}

#[derive(clap::Args, Debug)]
pub(crate) struct KafkaBenchArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Records to produce and read.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// json (100-byte objects) or arrow (64 KiB Arrow IPC records).
    #[arg(long, value_enum, default_value_t = BenchFormat::Json)]
    format: BenchFormat,
    /// Rounds of both readers, alternating (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Measure the latency from a Kafka produce to a quiver poll instead,
    /// at a steady rate (see --rate, --seconds, --linger-ms).
    #[arg(long)]
    latency: bool,
    /// Latency: records produced per second.
    #[arg(long, default_value_t = 1000, requires = "latency")]
    rate: u64,
    /// Latency: seconds to produce for.
    #[arg(long, default_value_t = 10.0, requires = "latency", value_parser = super::positive_seconds)]
    seconds: f64,
    /// Latency: the source's linger (a partition's records wait at most
    /// this long for their batch).
    #[arg(long, default_value_t = 10, requires = "latency")]
    linger_ms: u64,
    /// A librdkafka property for the consumers, key=value (repeat).
    #[arg(long = "property", value_parser = key_value)]
    properties: Vec<(String, String)>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum BenchFormat {
    Json,
    Arrow,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SinkArgs {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long)]
    brokers: String,
    /// The topic to write (it must exist).
    #[arg(long)]
    topic: String,
    /// The stream consumer group that reads for the sink.
    #[command(flatten)]
    from: super::GroupArgs,
    /// arrow (one Arrow IPC record per batch) or json (one object per row).
    #[arg(long, value_enum, default_value_t = SinkFormatArg::Arrow)]
    format: SinkFormatArg,
    /// A librdkafka property, key=value (repeat).
    #[arg(long = "property", value_parser = key_value)]
    properties: Vec<(String, String)>,
    /// Stop after this many seconds (default: at the end of the stream, or Ctrl-C).
    #[arg(long, value_parser = super::positive_seconds)]
    seconds: Option<f64>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum SinkFormatArg {
    Arrow,
    Json,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SourceArgs {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long)]
    brokers: String,
    /// The topic to read.
    #[arg(long)]
    topic: String,
    /// The Kafka consumer group this source joins.
    #[arg(long)]
    group: String,
    /// The store (created if missing).
    #[arg(long)]
    store: String,
    /// The stream (created if missing, with the topic's partition count).
    #[arg(long)]
    stream: String,
    /// A stream consumer group that must commit a batch before its Kafka
    /// offsets are committed (repeat; default: every group of the stream).
    /// Groups named here are declared when the stream is created.
    #[arg(long = "require-group")]
    require_groups: Vec<String>,
    /// How records become rows: raw (key, value, timestamp), json (one
    /// object per record) or arrow (an Arrow IPC stream per record).
    #[arg(long, value_enum, default_value_t = FormatArg::Raw)]
    format: FormatArg,
    /// JSON: take the columns from this Arrow IPC or CSV file's schema
    /// (default: inferred from the first record).
    #[arg(long, requires = "format")]
    schema_from: Option<std::path::PathBuf>,
    /// Records per batch, at most.
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// Milliseconds a partition's records wait for their batch to fill.
    #[arg(long, default_value_t = 10)]
    linger_ms: u64,
    /// A librdkafka property, key=value (repeat): security settings,
    /// `session.timeout.ms`, ...
    #[arg(long = "property", value_parser = key_value)]
    properties: Vec<(String, String)>,
    /// Store capacity in bytes, when the store is created.
    #[arg(long, default_value_t = 256 << 20)]
    capacity: u64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = super::positive_seconds)]
    seconds: Option<f64>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum FormatArg {
    Raw,
    Json,
    Arrow,
}

/// A `key=value` pair.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

pub(crate) fn run(command: KafkaCommand) -> Result<()> {
    match command {
        KafkaCommand::Source(args) => source(args),
        KafkaCommand::Sink(args) => sink(args),
        KafkaCommand::Bench(args) => bench(args),
        KafkaCommand::Topic(args) => {
            quiver_kafka::create_topic(&args.brokers, &args.topic, args.partitions, Duration::from_secs(30))?;
            eprintln!("topic {:?} created with {} partitions", args.topic, args.partitions);
            Ok(())
        }
    }
}

fn source(args: SourceArgs) -> Result<()> {
    super::signals::install();
    let store = match Store::create(StoreConfig::new(&args.store).capacity(args.capacity)) {
        Ok(store) => store,
        Err(quiver::StoreError::StoreExists(_)) => Store::open(&args.store)?,
        Err(e) => return Err(e.into()),
    };
    let format = match (args.format, &args.schema_from) {
        (FormatArg::Raw, None) => Format::Raw,
        (FormatArg::Arrow, None) => Format::Arrow,
        (FormatArg::Json, None) => Format::Json(None),
        (FormatArg::Json, Some(path)) => {
            let imported = quiver::arrow::import::read_path(path, 1)
                .with_context(|| format!("read the schema of {}", path.display()))?;
            Format::Json(Some(imported.schema))
        }
        (_, Some(_)) => anyhow::bail!("--schema-from goes with --format json"),
    };
    let mut config = SourceConfig::new(&args.brokers, &args.topic, &args.group)
        .format(format)
        .batch_records(args.batch_records)
        .linger(Duration::from_millis(args.linger_ms));
    for group in &args.require_groups {
        config = config.required_group(group);
    }
    for (key, value) in &args.properties {
        config = config.property(key, value);
    }
    let mut source = Source::new(&store, &args.stream, config)
        .with_context(|| format!("join group {:?} on topic {:?} at {}", args.group, args.topic, args.brokers))?;
    eprintln!("kafka source: topic {:?} -> stream {:?} ({} partitions)", args.topic, args.stream, source.partitions());
    let start = Instant::now();
    let mut reported = (Instant::now(), 0u64);
    // On a terminal, the whole table every second; in a log, a line every 10 s.
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 10 });
    loop {
        source.step(Duration::from_millis(100))?;
        if reported.0.elapsed() >= every {
            let records = source.stats().records;
            let rate = (records - reported.1) as f64 / reported.0.elapsed().as_secs_f64();
            reported = (Instant::now(), records);
            if let Some(status) = source.status() {
                let mut err = std::io::stderr().lock();
                if terminal {
                    let stream = source.stream().and_then(|s| s.stats().ok());
                    let _ = writeln!(err, "kafka source: {rate:.0} records/s");
                    let _ = crate::stat::print_status(&mut err, &status, stream.as_ref());
                } else {
                    let lag: i64 = status.partitions.iter().filter_map(|p| p.kafka_lag()).sum();
                    let _ = writeln!(
                        err,
                        "kafka source: {} records, {rate:.0}/s, Kafka lag {lag}, {} errors ridden out",
                        status.records, status.errors
                    );
                }
            }
        }
        let due = args.seconds.is_some_and(|s| start.elapsed().as_secs_f64() >= s);
        if due || super::signals::interrupted().is_err() {
            source.flush_all()?;
            let stats = source.stats();
            println!(
                "kafka source: {} records in {} batches; committed to Kafka {:?}",
                stats.records, stats.batches, stats.committed
            );
            return Ok(());
        }
    }
}

fn sink(args: SinkArgs) -> Result<()> {
    super::signals::install();
    let GroupArgs { store, stream, group } = &args.from;
    let store = Store::open(store)?;
    let format = match args.format {
        SinkFormatArg::Arrow => SinkFormat::Arrow,
        SinkFormatArg::Json => SinkFormat::Json,
    };
    let mut config = SinkConfig::new(&args.brokers, &args.topic).format(format);
    for (key, value) in &args.properties {
        config = config.property(key, value);
    }
    let mut sink = Sink::new(&store, stream, group, config)
        .with_context(|| format!("write group {group:?} of stream {stream:?} to topic {:?}", args.topic))?;
    let start = Instant::now();
    loop {
        sink.step(Duration::from_millis(100))?;
        let due = args.seconds.is_some_and(|s| start.elapsed().as_secs_f64() >= s);
        if sink.ended() || due || super::signals::interrupted().is_err() {
            println!("kafka sink: {} records acknowledged by Kafka", sink.sent);
            return Ok(());
        }
    }
}

fn bench(args: KafkaBenchArgs) -> Result<()> {
    if args.latency {
        return super::kafka_latency::run(
            &args.brokers,
            args.rate,
            Duration::from_secs_f64(args.seconds),
            Duration::from_millis(args.linger_ms),
            &args.properties,
        );
    }
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let topic = format!("quiver-bench-{}-{}", std::process::id(), quiver::ObjectId::random());
    quiver_kafka::create_topic(&args.brokers, &topic, 1, Duration::from_secs(30))?;
    // The records: 100-byte JSON objects, or 64 KiB Arrow IPC streams.
    let payload = |i: u64| -> Result<Vec<u8>> {
        Ok(match args.format {
            BenchFormat::Json => {
                let mut text = format!(r#"{{"id": {i}, "x": {}, "name": ""#, i as f64 * 0.25);
                text.push_str(&"n".repeat(100usize.saturating_sub(text.len() + 2)));
                text.push_str(r#""}"#);
                text.into_bytes()
            }
            BenchFormat::Arrow => {
                let rows = 4096;
                let batch = arrow_array::RecordBatch::try_from_iter([
                    (
                        "id",
                        std::sync::Arc::new(arrow_array::Int64Array::from_iter_values(0..rows))
                            as arrow_array::ArrayRef,
                    ),
                    (
                        "x",
                        std::sync::Arc::new(arrow_array::Float64Array::from_iter_values(
                            (0..rows).map(|r| (r as u64 + i) as f64),
                        )) as _,
                    ),
                ])?;
                let mut bytes = Vec::new();
                let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())?;
                writer.write(&batch)?;
                writer.finish()?;
                drop(writer);
                bytes
            }
        })
    };
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", &args.brokers).create()?;
    let mut bytes = 0u64;
    for i in 0..args.records {
        let value = payload(i)?;
        bytes += value.len() as u64;
        let mut record = BaseRecord::<(), [u8]>::to(&topic).partition(0).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    eprintln!("produced {} records ({bytes} bytes) to {topic}", args.records);
    // The source writes into a fresh store, a stream per round.
    let name = format!("kafka-bench-{}", std::process::id());
    let store = Store::create(StoreConfig::new(&name).capacity(1 << 30))?;
    let _remove = super::guard::RemoveOnDrop::new(store.path());
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut bare_rates, mut source_rates) = (Vec::new(), Vec::new());
    // Rounds alternate the two readers over the same records, so that the
    // broker's own drift does not fall on one side.
    for round in 0..args.rounds {
        bare_rates.push(args.records as f64 / bare_read(&args, &topic, round, deadline)?);
        source_rates.push(args.records as f64 / source_read(&args, &topic, &store, round, deadline)?);
        println!(
            "round {round}: bare consumer {:.0} records/s, quiver source {:.0} records/s ({:.2}x)",
            bare_rates[round as usize],
            source_rates[round as usize],
            source_rates[round as usize] / bare_rates[round as usize]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (bare_rate, source_rate) = (median(&mut bare_rates), median(&mut source_rates));
    println!(
        "records          {} of {} bytes on average, {} rounds",
        args.records,
        bytes / args.records.max(1),
        args.rounds
    );
    println!("bare consumer    {bare_rate:.0} records/s (median)");
    println!("quiver source    {source_rate:.0} records/s (median, {:.2}x the bare consumer)", source_rate / bare_rate);
    Ok(())
}

/// Seconds a bare rdkafka consumer takes to receive every record, from the
/// first (nothing is done with them).
fn bare_read(args: &KafkaBenchArgs, topic: &str, round: u32, deadline: Instant) -> Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", format!("{topic}-bare-{round}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (key, value) in &args.properties {
        config.set(key, value);
    }
    let bare: BaseConsumer = config.create()?;
    bare.subscribe(&[topic])?;
    let (mut received, mut start) = (0, None);
    while received < args.records {
        anyhow::ensure!(Instant::now() < deadline, "the bare consumer read {received} records in 10 minutes");
        if let Some(message) = bare.poll(Duration::from_millis(100)) {
            message?;
            start.get_or_insert_with(Instant::now);
            received += 1;
        }
    }
    Ok(start.map_or(0.0, |s| s.elapsed().as_secs_f64()))
}

/// Seconds the source takes to append every record to a new stream, from
/// its first batch.
fn source_read(args: &KafkaBenchArgs, topic: &str, store: &Store, round: u32, deadline: Instant) -> Result<f64> {
    let format = match args.format {
        BenchFormat::Json => Format::Json(None),
        BenchFormat::Arrow => Format::Arrow,
    };
    let mut config = SourceConfig::new(&args.brokers, topic, format!("{topic}-source-{round}")).format(format);
    for (key, value) in &args.properties {
        config = config.property(key, value);
    }
    let stream = format!("s{round}");
    let mut source = Source::new(store, &stream, config)?;
    let mut start = None;
    while source.stats().records < args.records {
        anyhow::ensure!(Instant::now() < deadline, "the source read {} records in 10 minutes", source.stats().records);
        // Short steps: a step runs its whole time, and the last one would
        // round the measure up to it.
        source.step(Duration::from_millis(2))?;
        if source.stats().records > 0 {
            start.get_or_insert_with(Instant::now);
        }
    }
    let seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    drop(source);
    quiver::Stream::remove(store, &stream)?;
    Ok(seconds)
}
