//! Data in and out, after Scribengin's sources and sinks: `quiver produce`
//! appends the batches of an Arrow IPC file (file or stream format) or a
//! CSV file to a stream; `quiver consume` writes what a group reads to an
//! Arrow IPC file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use quiver::{ConsumerConfig, Polled, StartAt, Store, StoreConfig, Stream, StreamConfig};

#[derive(clap::Args, Debug)]
pub(crate) struct ProduceArgs {
    /// The store's name; it is created if it does not exist.
    #[arg(long)]
    store: String,
    /// The stream; it is created (with the file's schema) if it does not exist.
    #[arg(long)]
    stream: String,
    /// An Arrow IPC file (file or stream format) or a CSV file with a header row.
    #[arg(long)]
    from: PathBuf,
    /// Groups that must each see all of the data (declared on the stream).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Partitions of a new stream.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Capacity in bytes of a new store.
    #[arg(long, default_value_t = 256 << 20)]
    capacity: u64,
    /// Rows per batch when reading CSV.
    #[arg(long, default_value_t = 1024)]
    batch_rows: usize,
    /// Close the stream afterwards (consumers then see its end).
    #[arg(long)]
    close: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ConsumeArgs {
    #[arg(long)]
    store: String,
    #[arg(long)]
    stream: String,
    /// The consumer group to read as (made at the oldest retained batch if new).
    #[arg(long)]
    group: String,
    /// The Arrow IPC file to write.
    #[arg(long)]
    to: PathBuf,
    /// Stop after this many seconds without new data (the end of the stream
    /// always stops it).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

pub(crate) fn produce(args: ProduceArgs) -> Result<()> {
    let batches = read_batches(&args.from, args.batch_rows)?;
    let Some(first) = batches.first() else {
        bail!("{} holds no batch", args.from.display());
    };
    let schema = first.schema();
    let store = match Store::open(&args.store) {
        Ok(store) => store,
        Err(quiver::StoreError::Io { .. }) => Store::create(StoreConfig::new(&args.store).capacity(args.capacity))
            .or_else(|_| Store::open(&args.store))?,
        Err(e) => return Err(e.into()),
    };
    let mut config = StreamConfig::new(&args.stream, schema).partitions(args.partitions);
    for group in &args.groups {
        config = config.group(group);
    }
    let stream = Stream::open_or_create(&store, config)?;
    let mut producer = stream.producer()?;
    let mut rows = 0;
    for batch in &batches {
        producer.append(batch)?;
        rows += batch.num_rows();
    }
    if args.close {
        stream.close()?;
    }
    println!("appended {} batches, {rows} rows to stream {} of store {}", batches.len(), args.stream, args.store);
    Ok(())
}

pub(crate) fn consume(args: ConsumeArgs) -> Result<()> {
    let store = Store::open(&args.store)?;
    let stream = Stream::open(&store, &args.stream)?;
    let mut consumer = stream.consumer(ConsumerConfig::group(&args.group).start(StartAt::Oldest))?;
    let file = File::create(&args.to).with_context(|| format!("create {}", args.to.display()))?;
    let mut writer = arrow_ipc::writer::FileWriter::try_new(file, stream.schema())?;
    let (mut batches, mut rows) = (0, 0);
    let timeout = Duration::from_secs_f64(args.timeout.max(0.0));
    let ended = loop {
        match consumer.poll(timeout)? {
            Polled::Batch(b) => {
                writer.write(&b.batch)?;
                batches += 1;
                rows += b.batch.num_rows();
                if batches % 64 == 0 {
                    consumer.commit()?;
                }
            }
            Polled::EndOfStream => break true,
            Polled::TimedOut => break false,
        }
    };
    writer.finish()?;
    consumer.commit()?;
    let why = if ended { "end of stream" } else { "no new data before the timeout" };
    println!("wrote {batches} batches, {rows} rows to {} ({why})", args.to.display());
    Ok(())
}

/// The batches of an Arrow IPC file (file or stream format) or a CSV file.
pub(crate) fn read_batches(path: &Path, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let mut head = [0u8; 6];
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let n = file.read(&mut head)?;
    let file = File::open(path)?;
    if n == 6 && &head == b"ARROW1" {
        let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)?;
        return Ok(reader.collect::<Result<_, _>>()?);
    }
    if n >= 4 && head[..4] == [0xFF; 4] {
        let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)?;
        return Ok(reader.collect::<Result<_, _>>()?);
    }
    let mut text = String::new();
    BufReader::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("{} is not Arrow IPC or UTF-8 CSV", path.display()))?;
    read_csv(&text, batch_rows.max(1)).with_context(|| format!("read {} as CSV", path.display()))
}

/// Splits one CSV line into fields (RFC 4180 quoting).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut field, mut quoted, mut chars) = (String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    out.push(field);
    out
}

/// CSV with a header row; each column's type is inferred from all its
/// values: Int64, Float64, Boolean (`true`/`false`) or Utf8; an empty field
/// is a null.
fn read_csv(text: &str, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = fields(lines.next().context("no header row")?);
    let rows: Vec<Vec<String>> = lines.map(fields).collect();
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            bail!("row {} has {} fields; the header has {}", i + 2, row.len(), header.len());
        }
    }
    let types: Vec<DataType> = (0..header.len())
        .map(|c| {
            let values = || rows.iter().map(|r| r[c].as_str()).filter(|v| !v.is_empty());
            if values().all(|v| v.parse::<i64>().is_ok()) {
                DataType::Int64
            } else if values().all(|v| v.parse::<f64>().is_ok()) {
                DataType::Float64
            } else if values().all(|v| v == "true" || v == "false") {
                DataType::Boolean
            } else {
                DataType::Utf8
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(
        header.iter().zip(&types).map(|(name, t)| Field::new(name, t.clone(), true)).collect::<Vec<_>>(),
    ));
    let mut batches = Vec::new();
    for chunk in rows.chunks(batch_rows) {
        let columns: Vec<ArrayRef> = types
            .iter()
            .enumerate()
            .map(|(c, t)| {
                let values = chunk.iter().map(|r| Some(r[c].as_str()).filter(|v| !v.is_empty()));
                match t {
                    DataType::Int64 => {
                        Arc::new(values.map(|v| v.and_then(|v| v.parse().ok())).collect::<Int64Array>()) as ArrayRef
                    }
                    DataType::Float64 => {
                        Arc::new(values.map(|v| v.and_then(|v| v.parse().ok())).collect::<Float64Array>())
                    }
                    DataType::Boolean => Arc::new(values.map(|v| v.map(|v| v == "true")).collect::<BooleanArray>()),
                    _ => Arc::new(values.collect::<StringArray>()),
                }
            })
            .collect();
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(batches)
}
