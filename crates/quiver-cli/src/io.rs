//! Data in and out, after Scribengin's sources and sinks: `quiver produce`
//! appends the batches of an Arrow IPC file (file or stream format) or a
//! CSV file to a stream (read by [`quiver::arrow::import`]); `quiver consume` writes what a group reads to an
//! Arrow IPC file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
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
    /// Capacity in bytes of a new store [default: 268435456]; a store that
    /// exists keeps its own (which is said).
    #[arg(long)]
    capacity: Option<u64>,
    /// Rows per batch when reading CSV.
    #[arg(long, default_value_t = 1024)]
    batch_rows: usize,
    /// Close the stream afterwards (consumers then see its end).
    #[arg(long)]
    close: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// The group is made at the oldest retained batch if new.
    #[command(flatten)]
    from: super::GroupArgs,
    /// The Arrow IPC file to write.
    #[arg(long)]
    to: PathBuf,
    /// Stop after this many seconds without new data (the end of the stream
    /// always stops it).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Pass batches that cannot be decoded instead of stopping at the first
    /// one; each is counted and listed (offset, reason) in `quiver stat`.
    #[arg(long)]
    skip_corrupt: bool,
}

pub(crate) fn produce(args: ProduceArgs) -> Result<()> {
    let quiver::arrow::import::Imported { schema, batches } =
        quiver::arrow::import::read_path(&args.from, args.batch_rows)
            .with_context(|| format!("read {}", args.from.display()))?;
    if batches.is_empty() {
        bail!("{} holds no batch", args.from.display());
    }
    let capacity = args.capacity.unwrap_or(256 << 20);
    let store = match Store::create(StoreConfig::new(&args.store).capacity(capacity)) {
        Ok(store) => store,
        // It exists (maybe made by another process just now): open it.
        Err(quiver::StoreError::StoreExists(_)) => {
            let store = Store::open(&args.store)?;
            if let Some(asked) = args.capacity {
                let has = store.stats_unlocked()?.capacity;
                eprintln!(
                    "quiver: store {} exists with a capacity of {has} bytes: --capacity {asked} applies to a new \
                     store only (remove the store first to change it)",
                    args.store
                );
            }
            store
        }
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

/// A temporary file beside `to` (same directory, so a rename replaces `to`
/// atomically), created exclusively with a random name and mode 0600:
/// nobody can plant a file or a symlink where it will be written. Removed
/// when dropped unless persisted. Refused if what is at `to` is not a
/// regular file (a device, a FIFO, a symlink, a store): see
/// [`quiver::store::files::check_replaceable`].
pub(crate) fn temp_beside(to: &Path) -> Result<tempfile::NamedTempFile> {
    quiver::store::files::check_replaceable(to)?;
    let dir = match to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))
}

/// Renames the finished temporary `temp` over `to`, with the mode a plain
/// file gets under the umask, after checking again what is at `to` (it
/// may have changed while the output was written).
pub(crate) fn persist(temp: tempfile::TempPath, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(quiver::store::files::output_mode());
    std::fs::set_permissions(&temp, mode).with_context(|| format!("set the mode of {}", temp.display()))?;
    quiver::store::files::check_replaceable(to)?;
    temp.persist(to).with_context(|| format!("rename onto {}", to.display()))?;
    Ok(())
}

pub(crate) fn consume(args: ConsumeArgs) -> Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout).context("--timeout must be a number of seconds >= 0")?;
    let store = Store::open(&args.from.store)?;
    let stream = Stream::open(&store, &args.from.stream)?;
    let config = ConsumerConfig::group(&args.from.group).start(StartAt::Oldest).skip_corrupt(args.skip_corrupt);
    // Making a new group takes the store's lock: no longer than --timeout.
    let mut consumer = {
        let _within = quiver::store::CallDeadline::enter(timeout);
        stream.consumer(config)?
    };
    // Written beside the target and renamed over it once complete; the
    // group commits only then, so a crash before loses nothing (the
    // batches are read again) and an earlier file is never emptied. The
    // temporary is created exclusively, with a random name and mode 0600:
    // nobody can plant a file or a symlink where it will be written.
    let tmp = temp_beside(&args.to)?;
    let file = tmp.reopen().with_context(|| format!("open {}", tmp.path().display()))?;
    let write = || -> Result<(usize, usize, bool)> {
        let mut writer = arrow_ipc::writer::FileWriter::try_new(file, stream.schema())?;
        let (mut batches, mut rows) = (0, 0);
        let ended = loop {
            let polled = consumer.poll(timeout).map_err(|e| match e {
                quiver::StreamError::CorruptBatch { .. } => anyhow::anyhow!(
                    "{e}\nthe group stops at this batch until it is skipped: --skip-corrupt passes it \
                     (counted, and listed with its reason in `quiver stat`)"
                ),
                e => e.into(),
            })?;
            match polled {
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
    persist(tmp.into_temp_path(), &args.to)?;
    consumer.commit()?;
    let why = if ended { "end of stream" } else { "no new data before the timeout" };
    let skipped = match consumer.skipped() {
        0 => String::new(),
        n => format!(", skipped {n} corrupt batches (see `quiver stat`)"),
    };
    println!("wrote {batches} batches, {rows} rows to {}{skipped} ({why})", args.to.display());
    Ok(())
}
