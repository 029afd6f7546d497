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
    let store = match Store::create(StoreConfig::new(&args.store).capacity(args.capacity)) {
        Ok(store) => store,
        // It exists (maybe made by another process just now): open it.
        Err(quiver::StoreError::StoreExists(_)) => Store::open(&args.store)?,
        Err(e) => return Err(e.into()),
    };
    let mut config = StreamConfig::new(&args.stream, schema).partitions(args.partitions);
    for group in &args.groups {
        config = config.group(group);
    }
    let stream = Stream::open_or_create(&store, config)?;
    let mut producer = stream.producer()?;
    let mut rows = 0;
    for (i, batch) in batches.iter().enumerate() {
        producer
            .append(batch)
            .with_context(|| format!("append batch {i} of {} (the {i} before it are in the stream)", batches.len()))?;
        rows += batch.num_rows();
    }
    if args.close {
        stream.close()?;
    }
    println!("appended {} batches, {rows} rows to stream {} of store {}", batches.len(), args.stream, args.store);
    Ok(())
}

pub(crate) fn consume(args: ConsumeArgs) -> Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout).context("--timeout must be a number of seconds >= 0")?;
    let store = Store::open(&args.store)?;
    let stream = Stream::open(&store, &args.stream)?;
    let mut consumer = stream.consumer(ConsumerConfig::group(&args.group).start(StartAt::Oldest))?;
    // Written beside the target and renamed over it once complete; the
    // group commits only then, so a crash before loses nothing (the
    // batches are read again) and an earlier file is never emptied. The
    // temporary is created exclusively, with a random name and mode 0600:
    // nobody can plant a file or a symlink where it will be written.
    let dir = match args.to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = args.to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    let file = tmp.reopen().with_context(|| format!("open {}", tmp.path().display()))?;
    let write = || -> Result<(usize, usize, bool)> {
        let mut writer = arrow_ipc::writer::FileWriter::try_new(file, stream.schema())?;
        let (mut batches, mut rows) = (0, 0);
        let ended = loop {
            match consumer.poll(timeout)? {
                Polled::Batch(b) => {
                    writer.write(&b.batch)?;
                    batches += 1;
                    rows += b.batch.num_rows();
                }
                Polled::EndOfStream => break true,
                Polled::TimedOut => break false,
            }
        };
        writer.finish()?;
        writer.get_ref().sync_all()?;
        Ok((batches, rows, ended))
    };
    // On an error the temporary is removed when `tmp` drops.
    let (batches, rows, ended) = write()?;
    // rename(2) replaces the target (a symlink there is replaced, not followed).
    tmp.persist(&args.to).with_context(|| format!("rename onto {}", args.to.display()))?;
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

/// One CSV field, and whether it was quoted (a quoted field is text).
struct CsvField {
    text: String,
    quoted: bool,
}

/// Splits CSV text into records (RFC 4180: quoted fields may hold commas,
/// doubled quotes and line breaks; CRLF or LF line ends). An unclosed quote
/// is an error. Blank lines at the end are ignored; elsewhere a blank line is
/// a record of one empty field.
fn records(text: &str) -> Result<Vec<Vec<CsvField>>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut records, mut record, mut field) =
        (Vec::new(), Vec::new(), CsvField { text: String::new(), quoted: false });
    let (mut in_quotes, mut line) = (false, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.text.push('"');
                    chars.next();
                }
                '"' => in_quotes = false,
                c => {
                    line += usize::from(c == '\n');
                    field.text.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.text.is_empty() && !field.quoted => {
                in_quotes = true;
                field.quoted = true;
            }
            '"' => bail!("line {line}: a quote inside an unquoted field"),
            ',' => record.push(std::mem::replace(&mut field, CsvField { text: String::new(), quoted: false })),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::replace(&mut field, CsvField { text: String::new(), quoted: false }));
                records.push(std::mem::take(&mut record));
                line += 1;
            }
            c => field.text.push(c),
        }
    }
    if in_quotes {
        bail!("line {line}: a quoted field is never closed");
    }
    if !field.text.is_empty() || field.quoted || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    // Trailing blank lines are not records.
    while records.last().is_some_and(|r| r.len() == 1 && r[0].text.is_empty() && !r[0].quoted) {
        records.pop();
    }
    Ok(records)
}

/// Whether `v` is written as a number (digits, a sign, a point, an
/// exponent), not one of the words Rust's float parser also takes (`nan`, `inf`).
/// An optional sign, then only digits: the text of an integer. (`2024-01-31`
/// and `555-1234` are not: they are text.)
fn integer(v: &str) -> bool {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn numeric(v: &str) -> bool {
    v.bytes().any(|b| b.is_ascii_digit()) && v.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
}

/// CSV with a header row. A column's type comes from all its values: Int64
/// if every value is an integer (one out of the i64 range is an error, not a
/// silent change to floating point), Float64 if every value is a number,
/// Boolean if every value is `true` or `false`, and Utf8 otherwise (and for
/// a column with a quoted value, or with no value at all). An empty
/// unquoted field is a null.
fn read_csv(text: &str, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let mut all = records(text)?.into_iter();
    let header: Vec<String> = all.next().context("no header row")?.into_iter().map(|f| f.text).collect();
    let rows: Vec<Vec<CsvField>> = all.collect();
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            bail!("record {} has {} fields; the header has {}", i + 1, row.len(), header.len());
        }
    }
    let mut types = Vec::with_capacity(header.len());
    for (c, name) in header.iter().enumerate() {
        let values: Vec<&CsvField> = rows.iter().map(|r| &r[c]).filter(|f| f.quoted || !f.text.is_empty()).collect();
        let all = |ok: &dyn Fn(&str) -> bool| !values.is_empty() && values.iter().all(|f| !f.quoted && ok(&f.text));
        let t = if all(&integer) {
            if let Some(bad) = values.iter().find(|f| f.text.parse::<i64>().is_err()) {
                bail!("column {name:?}: {} is an integer outside the range of Int64", bad.text);
            }
            DataType::Int64
        } else if all(&|v| numeric(v) && v.parse::<f64>().is_ok()) {
            DataType::Float64
        } else if all(&|v| v == "true" || v == "false") {
            DataType::Boolean
        } else {
            DataType::Utf8
        };
        types.push(t);
    }
    let schema = Arc::new(Schema::new(
        header.iter().zip(&types).map(|(name, t)| Field::new(name, t.clone(), true)).collect::<Vec<_>>(),
    ));
    let mut batches = Vec::new();
    for chunk in rows.chunks(batch_rows) {
        let columns: Vec<ArrayRef> = types
            .iter()
            .enumerate()
            .map(|(c, t)| {
                let values = chunk.iter().map(|r| Some(r[c].text.as_str()).filter(|v| r[c].quoted || !v.is_empty()));
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

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::Array;

    use super::read_csv;
    use arrow_schema::DataType;

    #[test]
    fn csv_quoting_types_and_errors() {
        let b = &read_csv("\u{feff}id,note,v\r\n007,\"a,\nb\",1e5\r\n-2,\"\",NaN\n", 10).unwrap()[0];
        assert_eq!(b.schema().field(0).name(), "id", "the byte-order mark is dropped");
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values().to_vec(), [7, -2]);
        let notes = b.column(1).as_string::<i32>();
        assert_eq!((notes.value(0), notes.is_null(1), notes.value(1)), ("a,\nb", false, ""));
        assert_eq!(b.column(2).data_type(), &arrow_schema::DataType::Utf8, "NaN is text, not a number");
        let b = &read_csv("x\n1.5\n\n-0\n\n\n", 10).unwrap()[0];
        assert_eq!(b.num_rows(), 3, "a blank line inside is a null row; trailing ones are not rows");
        assert_eq!(b.column(0).as_primitive::<Float64Type>().null_count(), 1);
        let b = &read_csv("q\n\"007\"\n", 10).unwrap()[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "007", "a quoted value stays text");
        assert!(read_csv("a\n9223372036854775808\n", 10).is_err(), "out of the Int64 range");
        // Digits with dashes inside are text (dates, phone numbers), not
        // integers out of range.
        let b = &read_csv("day,phone\n2024-01-31,555-1234\n2024-02-01,-7\n", 10).unwrap()[0];
        assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Utf8);
        assert_eq!(b.column(0).as_string::<i32>().value(0), "2024-01-31");
        assert_eq!(b.column(1).as_string::<i32>().value(1), "-7");
        assert!(read_csv("a,b\n\"open,1\n", 10).is_err(), "an unclosed quote");
        assert!(read_csv("a,b\n1\n", 10).is_err(), "a short record");
        assert!(read_csv("a\nx\"y\n", 10).is_err(), "a stray quote");
    }
}
