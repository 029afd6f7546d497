//! `quiver demo`: the main job. A producer (this process) and N consumer
//! processes (this binary, hidden subcommand) exchange objects through a
//! fresh store in /dev/shm; every consumer reads every object in place and
//! checks it; a table of what each consumer read, how fast, and whether its
//! checksum matches the producer's is printed; the store is removed.
//!
//! (The online SGD trainer becomes the demo once the stream, shard and
//! train layers exist; see the issues.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quiver::{CreateOptions, ObjectId, Store, StoreConfig};

#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Consumer processes, each reading every object.
    #[arg(long, default_value_t = 3)]
    consumers: usize,
    /// Objects the producer writes.
    #[arg(long, default_value_t = 4096)]
    objects: u64,
    /// Bytes per object.
    #[arg(long, default_value_t = 64 << 10)]
    size: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// A checksum of an object's bytes: fast (a word at a time) and sensitive to
/// order, so a byte read from the wrong place or the wrong object shows.
pub(crate) fn checksum(acc: u64, bytes: &[u8]) -> u64 {
    let mut acc = acc;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        acc = (acc ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    for &b in words.remainder() {
        acc = (acc ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    acc
}

/// The bytes of object `i`: a pattern cheap to make and to check.
pub(crate) fn fill(i: u64, data: &mut [u8]) {
    let mut x = i.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct ConsumerReport {
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub checksum: u64,
}

/// Removes the demo store however the demo ends.
struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    if args.consumers == 0 || args.objects == 0 {
        bail!("--consumers and --objects must be at least 1");
    }
    let name = format!("demo-{}", std::process::id());
    // Room for every object: each consumer must see all of them, and the
    // demo has no retention policy yet (streams bring one).
    let block = args.size.div_ceil(64) * 64 + 64;
    let capacity = block * args.objects + (1 << 20);
    let store = Store::create(StoreConfig::new(&name).capacity(capacity).max_objects(args.objects + 16))
        .with_context(|| format!("create a {capacity}-byte store in /dev/shm"))?;
    let _remove = RemoveOnDrop(store.path().to_path_buf());
    let exe = std::env::current_exe().context("find the quiver binary")?;
    let mut children = Vec::new();
    for _ in 0..args.consumers {
        let child = Command::new(&exe)
            .args(["debug", "consume", "--store", &name, "--count", &args.objects.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("start a consumer process")?;
        children.push(KillOnDrop(Some(child)));
    }
    let start = Instant::now();
    let mut producer_sum = 0u64;
    let options = CreateOptions { timeout: Duration::from_secs(30), pinned: true };
    for i in 0..args.objects {
        let mut builder = store.create_object_with(ObjectId::sequential(1, 0, i), args.size, &[], options)?;
        fill(i, builder.data_mut());
        producer_sum = checksum(producer_sum, builder.data());
        builder.seal()?;
    }
    let produced = start.elapsed().as_secs_f64();
    let mut reports = Vec::new();
    for child in &mut children {
        let output = child.0.take().context("consumer already collected")?.wait_with_output()?;
        if !output.status.success() {
            bail!("a consumer failed ({})", output.status);
        }
        let report: ConsumerReport = serde_json::from_slice(&output.stdout).context("read a consumer's report")?;
        reports.push(report);
    }
    let all_match = reports.iter().all(|r| r.checksum == producer_sum && r.objects == args.objects);
    let gb = |bytes: u64, s: f64| bytes as f64 / s.max(1e-9) / 1e9;
    if args.json {
        let consumers: Vec<_> = reports
            .iter()
            .enumerate()
            .map(|(n, r)| {
                serde_json::json!({
                    "name": format!("consumer-{n}"), "objects": r.objects, "bytes": r.bytes,
                    "seconds": r.seconds, "gb_per_s": gb(r.bytes, r.seconds), "checksum": r.checksum,
                })
            })
            .collect();
        let value = serde_json::json!({
            "objects": args.objects, "object_bytes": args.size, "producer_seconds": produced,
            "producer_checksum": producer_sum, "checksums_match": all_match, "consumers": consumers,
        });
        println!("{value}");
    } else {
        let total = args.objects * args.size;
        println!(
            "producer: {} objects of {} bytes in {produced:.3} s ({:.2} GB/s), checksum {producer_sum:016x}",
            args.objects,
            args.size,
            gb(total, produced)
        );
        println!(
            "{:<12} {:>8} {:>14} {:>9} {:>8} {:>18} {:>6}",
            "consumer", "objects", "bytes", "seconds", "GB/s", "checksum", "match"
        );
        for (n, r) in reports.iter().enumerate() {
            println!(
                "{:<12} {:>8} {:>14} {:>9.3} {:>8.2} {:>18} {:>6}",
                format!("consumer-{n}"),
                r.objects,
                r.bytes,
                r.seconds,
                gb(r.bytes, r.seconds),
                format!("{:016x}", r.checksum),
                if r.checksum == producer_sum { "yes" } else { "NO" }
            );
        }
    }
    if !all_match {
        bail!("a consumer's checksum differs from the producer's");
    }
    Ok(())
}

/// A consumer process: reads objects 0..count in order, each as soon as it
/// is sealed, and prints its report as JSON.
pub(crate) fn consume(store: &str, count: u64) -> Result<()> {
    let store = Store::open(store)?;
    let mut report = ConsumerReport { objects: 0, bytes: 0, seconds: 0.0, checksum: 0 };
    let mut start = None;
    for i in 0..count {
        let id = ObjectId::sequential(1, 0, i);
        let view =
            store.get(id, Duration::from_secs(30))?.with_context(|| format!("object {id} not sealed within 30 s"))?;
        start.get_or_insert_with(Instant::now);
        report.checksum = checksum(report.checksum, view.data());
        report.objects += 1;
        report.bytes += view.len() as u64;
    }
    report.seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

struct KillOnDrop(Option<std::process::Child>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
