//! `quiver stat`: a store's state as a table, or as one JSON object.

use anyhow::Result;

use std::io::Write;

use std::time::Duration;

use quiver::store::CallDeadline;
use quiver::{ShardError, StoreError, Stream, StreamError, StreamStats};
use quiver_kafka::SourceStatus;

use super::StoreArg;

#[derive(clap::Args, Debug)]
pub(crate) struct StatArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also list every object.
    #[arg(long)]
    objects: bool,
}

/// How long `stat` waits for the store's lock before it shows what it can
/// read without it: a stopped or hung holder must not stall it.
const LOCK_WAIT: Duration = Duration::from_millis(30);

pub(crate) fn run(args: StatArgs) -> Result<()> {
    let store = args.store.open()?;
    let _answer_in_time = CallDeadline::enter(LOCK_WAIT);
    let mut stats = match store.stats() {
        Err(StoreError::LockTimeout { .. }) => store.stats_unlocked()?,
        other => other?,
    };
    // Our own handle is a client too; report the others.
    stats.clients = stats.clients.saturating_sub(1);
    let (mut objects, mut streams, mut shards, mut sources) = (None, Vec::new(), Vec::new(), Vec::new());
    if stats.lock_held_by.is_none() {
        // Each of these takes the lock: with the deadline past, a holder
        // that got it meanwhile costs at most the lock's least wait each.
        let read = || -> Result<_> {
            let objects = if args.objects { Some(store.list()?) } else { None };
            let streams = Stream::list(&store)?;
            let shards = quiver::shard::list(&store)?;
            let mut sources = Vec::new();
            for s in &streams {
                // A stream removed since it was listed has no sources to show.
                if let Ok(stream) = Stream::open(&store, &s.name) {
                    sources.extend(quiver_kafka::source_status(&stream)?);
                }
            }
            Ok((objects, streams, shards, sources))
        };
        match read() {
            Ok(read) => (objects, streams, shards, sources) = read,
            Err(e) => match lock_timeout(&e) {
                Some(holder) => stats.lock_held_by = Some(holder.unwrap_or_else(|| "another process".into())),
                None => return Err(e),
            },
        }
    }
    if args.json {
        let mut value = serde_json::json!({
            "path": store.path().display().to_string(),
            "stats": stats,
            "streams": streams,
            "shard_groups": shards,
            "kafka_sources": sources.iter().map(status_json).collect::<Vec<_>>(),
        });
        if let Some(objects) = &objects {
            value["objects"] = serde_json::to_value(objects)?;
        }
        println!("{value}");
        return Ok(());
    }
    println!("store {}", store.path().display());
    if let Some(holder) = &stats.lock_held_by {
        println!("  the store's lock is held by {holder}: these figures were read without it, and");
        println!("  streams, shard groups and objects, which need it, are not shown");
    }
    let pct = |n: u64| {
        if stats.capacity == 0 {
            0.0
        } else {
            100.0 * n as f64 / stats.capacity as f64
        }
    };
    let rows = [
        ("capacity", format!("{} bytes", stats.capacity)),
        ("used", format!("{} bytes ({:.1}%)", stats.used, pct(stats.used))),
        ("payload", format!("{} bytes ({:.1}%)", stats.payload, pct(stats.payload))),
        ("largest free block", format!("{} bytes", stats.largest_free)),
        ("objects", format!("{} of {}", stats.objects, stats.max_objects)),
        ("evictions", stats.evictions.to_string()),
        ("clients", stats.clients.to_string()),
        ("dead clients recovered", stats.dead_clients.to_string()),
        ("repairs", stats.repairs.to_string()),
        ("corrupt entries dropped", stats.dropped_corrupt.to_string()),
        ("file size", format!("{} bytes", stats.file_size)),
    ];
    for (name, value) in rows {
        println!("  {name:<24} {value}");
    }
    for stream in &streams {
        print_stream(stream);
        for status in sources.iter().filter(|s| s.stream == stream.name) {
            print_status(&mut std::io::stdout().lock(), status, Some(stream))?;
        }
    }
    for group in &shards {
        print_shards(group);
    }
    if let Some(objects) = objects {
        println!();
        println!(
            "  {:<50} {:>12} {:>8} {:<9} {:>4} {:>6} {:>10}",
            "id", "data", "meta", "state", "refs", "pinned", "age"
        );
        for o in objects {
            println!(
                "  {:<50} {:>12} {:>8} {:<9} {:>4} {:>6} {:>9.1}s",
                o.id.to_string(),
                o.data_size,
                o.metadata_size,
                format!("{:?}", o.state).to_lowercase(),
                o.references,
                if o.pinned { "yes" } else { "no" },
                o.age.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// The holder named by a lock timeout anywhere in `e`'s layers (`Some(None)`
/// if it was not named), or `None` for any other error.
fn lock_timeout(e: &anyhow::Error) -> Option<Option<String>> {
    let store = e
        .downcast_ref::<StoreError>()
        .or_else(|| match e.downcast_ref::<StreamError>() {
            Some(StreamError::Store(s)) => Some(s),
            _ => None,
        })
        .or_else(|| match e.downcast_ref::<ShardError>() {
            Some(ShardError::Stream(StreamError::Store(s))) => Some(s),
            _ => None,
        });
    match store {
        Some(StoreError::LockTimeout { holder, .. }) => Some(holder.clone()),
        _ => None,
    }
}

fn print_stream(s: &StreamStats) {
    println!();
    let state = if s.closed { "closed" } else { "open" };
    println!("stream {} ({state}, {} partitions, back-pressure {:?})", s.name, s.partitions.len(), s.back_pressure);
    let limits = match (s.max_age, s.max_bytes) {
        (None, None) => "none".to_string(),
        (age, bytes) => format!(
            "{}{}",
            age.map_or(String::new(), |a| format!("max age {:.3} s ", a.as_secs_f64())),
            bytes.map_or(String::new(), |b| format!("max bytes {b}"))
        ),
    };
    let rows = [
        ("retained", format!("{} bytes", s.bytes)),
        ("appended", format!("{} batches", s.appended)),
        ("limits", limits),
        ("dropped (back-pressure)", format!("{} batches, {} bytes", s.dropped, s.dropped_bytes)),
        ("dropped (max age)", format!("{} batches", s.expired)),
        ("dropped (max bytes)", format!("{} batches", s.trimmed)),
        ("skipped (corrupt)", format!("{} batches", s.skipped_total)),
    ];
    for (name, value) in rows {
        println!("  {name:<24} {value}");
    }
    println!("  {:>9} {:>12} {:>12} {:>14} {:>12}", "partition", "tail", "head", "bytes", "rows");
    for p in &s.partitions {
        println!("  {:>9} {:>12} {:>12} {:>14} {:>12}", p.partition, p.tail, p.head, p.bytes, p.rows);
    }
    for g in &s.groups {
        let committed: Vec<String> = g.committed.iter().map(u64::to_string).collect();
        println!(
            "  group {:<20} committed [{}]  lag {} batches, {} rows{}",
            g.name,
            committed.join(", "),
            g.lag_batches,
            g.lag_rows,
            if g.skipped > 0 { format!(", {} skipped", g.skipped) } else { String::new() }
        );
    }
    if s.skipped_total > s.skipped.len() as u64 {
        println!("  (the newest {} of {} skipped batches:)", s.skipped.len(), s.skipped_total);
    }
    for k in &s.skipped {
        println!(
            "  skipped: group {} partition {} offset {}: {}",
            k.group.as_deref().unwrap_or("(removed)"),
            k.partition,
            k.offset,
            k.reason
        );
    }
}

fn print_shards(g: &quiver::ShardStats) {
    println!();
    println!("shard-managed group {} of stream {} ({} {} per shard)", g.group, g.stream, g.shard_size, g.unit);
    let rows = [
        (
            "tasks",
            format!(
                "{} todo, {} doing, {} done, {} failures, {} requeued",
                g.todo, g.doing, g.done, g.failed, g.requeued
            ),
        ),
        ("next cut", format!("{:?}", g.next_cut)),
        ("committed", format!("{:?}", g.committed)),
        ("dead letters", g.dead_letters.len().to_string()),
    ];
    for (name, value) in rows {
        println!("  {name:<24} {value}");
    }
    for t in &g.dead_letters {
        println!(
            "  dead letter: task {} partition {} [{}, {}) after {} failures",
            t.id, t.partition, t.start, t.end, t.retries
        );
    }
    for m in &g.members {
        println!(
            "  member {:>2} (client {:>3}): {} held, {} done, batches {:?}, rows {:?}",
            m.member, m.client, m.tasks_held, m.tasks_done, m.done_batches, m.done_rows
        );
    }
}

/// A source's status as JSON, with each partition's Kafka lag.
pub(crate) fn status_json(status: &SourceStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(partitions) = value.get_mut("partitions").and_then(|v| v.as_array_mut()) {
        for (json, p) in partitions.iter_mut().zip(&status.partitions) {
            json["kafka_lag"] = p.kafka_lag().into();
        }
    }
    value
}

/// A source's status as lines: Kafka's offsets and lag beside the stream's
/// (the furthest-behind group's batches not committed, per partition).
pub(crate) fn print_status(
    out: &mut dyn Write,
    status: &SourceStatus,
    stream: Option<&StreamStats>,
) -> std::io::Result<()> {
    let now_ms = quiver::shm::clock::wall_ns() / 1_000_000;
    let age = now_ms.saturating_sub(status.updated_ms) as f64 / 1000.0;
    let stale = if age > 5.0 { " (stale: the source is gone or stopped)" } else { "" };
    writeln!(
        out,
        "  kafka source pid {} (topic {:?}, group {:?}): {} records in {} batches, updated {age:.1} s ago{stale}",
        status.pid, status.topic, status.kafka_group, status.records, status.batches
    )?;
    if status.errors > 0 {
        writeln!(
            out,
            "    {} errors ridden out, the last: {}",
            status.errors,
            status.last_error.as_deref().unwrap_or("?")
        )?;
    }
    writeln!(
        out,
        "    {:>9} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "partition", "kafka end", "appended", "committed", "kafka lag", "waiting", "stream lag"
    )?;
    let known = |o: i64| if o < 0 { "-".to_string() } else { o.to_string() };
    for p in &status.partitions {
        let stream_lag = stream
            .and_then(|s| {
                let head = s.partitions.get(p.partition as usize)?.head;
                s.groups
                    .iter()
                    .filter_map(|g| g.committed.get(p.partition as usize))
                    .map(|&c| head.saturating_sub(c))
                    .max()
            })
            .map_or("-".to_string(), |lag| format!("{lag} b"));
        writeln!(
            out,
            "    {:>9} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12}",
            p.partition,
            known(p.end),
            known(p.appended),
            known(p.committed),
            p.kafka_lag().map_or("-".to_string(), |l| l.to_string()),
            format!("{} b", p.waiting_batches),
            stream_lag
        )?;
    }
    Ok(())
}
