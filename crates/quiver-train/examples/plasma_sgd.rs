//! The Plasma streaming example, ported: 10,000 rows of `y = 4 + 3x +
//! noise` (x uniform in [0, 10), noise normal with sigma 1, a fixed seed)
//! cut into batches of 1 to 40 rows and appended to a stream; three
//! consumer processes each read every batch (one consumer group each),
//! train their own SGD regressor and report their rows, a checksum of all
//! values and their model. The run checks every checksum against the
//! producer's and every model against the truth (within 0.3).
//!
//! Unlike the original, the end of the stream is explicit (a timeout is
//! never taken for it), and the data is read in place, not copied.
//!
//! Run with `cargo run --release --example plasma_sgd`.

use std::process::{Command, Stdio};
use std::time::Duration;

use quiver::{ConsumerConfig, Polled, Store, StoreConfig, Stream, StreamConfig};
use quiver_train::SgdRegressor;
use quiver_train::{row_checksum, LinearData};

const CONSUMERS: usize = 3;
const ROWS: u64 = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "consumer" {
        return consumer(&args[2], &args[3]);
    }
    let name = format!("plasma-sgd-{}", std::process::id());
    let store = Store::create(StoreConfig::new(&name).capacity(64 << 20))?;
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Store::remove(&self.0);
        }
    }
    let _remove = Remove(name.clone());
    let mut config = StreamConfig::new("plasma", LinearData::new(0).batch(0).schema());
    for c in 0..CONSUMERS {
        config = config.group(format!("consumer-{c}")); // declared up front: each sees every batch
    }
    let stream = Stream::create(&store, config)?;
    let exe = std::env::current_exe()?;
    // Killed if the producer fails part-way.
    struct Children(Vec<std::process::Child>);
    impl Drop for Children {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut children = Children(Vec::new());
    for c in 0..CONSUMERS {
        children.0.push(Command::new(&exe).args(["consumer", &name, &c.to_string()]).stdout(Stdio::piped()).spawn()?);
    }

    let mut data = LinearData::new(42);
    let mut producer = stream.producer()?;
    let (mut rows, mut checksum) = (0, 0u64);
    while rows < ROWS {
        let size = data.between(1, 40).min(ROWS - rows) as usize;
        let batch = data.batch(size);
        checksum = checksum.wrapping_add(row_checksum(&batch));
        rows += batch.num_rows() as u64;
        producer.append(&batch)?;
    }
    producer.close()?;
    println!("producer: {rows} rows, checksum {checksum:016x}");

    let mut ok = true;
    for child in std::mem::take(&mut children.0) {
        let out = child.wait_with_output()?;
        let line = String::from_utf8(out.stdout)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, rows, sum, intercept, slope] = f[..] else {
            return Err(format!("a consumer failed ({}) and said {line:?}", out.status).into());
        };
        let (intercept, slope) = (intercept.parse::<f64>()?, slope.parse::<f64>()?);
        let good = out.status.success()
            && sum == format!("{checksum:016x}")
            && (intercept - 4.0).abs() <= 0.3
            && (slope - 3.0).abs() <= 0.3;
        ok &= good;
        println!(
            "{name}: {rows} rows, checksum {sum}, y = {intercept:.3} + {slope:.3}x {}",
            if good { "ok" } else { "WRONG" }
        );
    }
    if !ok {
        return Err("a consumer's checksum or model is wrong".into());
    }
    Ok(())
}

/// A consumer process: reads every batch as the one member of its group.
fn consumer(store: &str, c: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(store)?;
    let stream = Stream::open(&store, "plasma")?;
    let mut reader = stream.consumer(ConsumerConfig::group(format!("consumer-{c}")))?;
    let mut model = SgdRegressor::new();
    let (mut rows, mut checksum) = (0u64, 0u64);
    loop {
        match reader.poll(Duration::from_secs(30))? {
            Polled::Batch(b) => {
                model.partial_fit(&b.batch, &["x"], "y")?;
                checksum = checksum.wrapping_add(row_checksum(&b.batch));
                rows += b.batch.num_rows() as u64;
                reader.commit()?;
            }
            Polled::EndOfStream => break,
            Polled::TimedOut => return Err("no batch for 30 s".into()),
        }
    }
    let slope = model.coef().first().copied().unwrap_or(0.0);
    println!("consumer-{c} {rows} {checksum:016x} {} {slope}", model.intercept());
    Ok(())
}
