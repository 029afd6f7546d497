//! The consumer loop of a shard-managed group: a producer appends batches
//! to a stream; two members of group "trainer" take shards as tasks, read
//! their batches zero-copy, and report them done. The manager cuts the
//! shards, hands each out once, takes back the tasks of a member that dies
//! or whose lease expires, and commits the group's offsets so retention can
//! free what is done.
//!
//! Run with `cargo run --release --example shard_worker`.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use quiver::{Outcome, ShardConfig, ShardManager, ShardSize, Store, StoreConfig, Stream, StreamConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("example-shards-{}", std::process::id());
    let store = Store::create(StoreConfig::new(&name).capacity(64 << 20))?;
    let values: ArrayRef = Arc::new(Float64Array::from_iter_values((0..1000).map(f64::from)));
    let batch = RecordBatch::try_from_iter([("x", values)])?;
    let stream = Stream::create(&store, StreamConfig::new("samples", batch.schema()).partitions(4).group("trainer"))?;

    let members: Vec<_> = (0..2)
        .map(|member| {
            // In a real job each member is its own process: Store::open(name), Stream::open(.., "samples").
            let stream = Stream::open(&Store::open(&name)?, "samples")?;
            Ok::<_, quiver::StreamError>(std::thread::spawn(move || -> Result<u64, quiver::ShardError> {
                let config = ShardConfig::new().shard_size(ShardSize::Batches(8));
                let mut manager = ShardManager::join(&stream, "trainer", config)?;
                let mut rows = 0;
                // The whole loop a user writes: what to do with a task's batches.
                manager.run(Duration::from_secs(10), |_task, batches| {
                    rows += batches.iter().map(|b| b.batch.num_rows() as u64).sum::<u64>();
                    Ok::<_, quiver::ShardError>(Outcome::Done)
                })?;
                println!("member {member} processed {rows} rows");
                Ok(rows)
            }))
        })
        .collect::<Result<_, _>>()?;

    let mut producer = stream.producer()?;
    for _ in 0..200 {
        producer.append(&batch)?;
    }
    producer.close()?;
    let mut total = 0;
    for member in members {
        total += member.join().expect("a member panicked")?;
    }
    println!("{total} rows processed; the group committed {:?}", stream.stats()?.groups[0].committed);
    Store::remove(&name)?;
    Ok(())
}
