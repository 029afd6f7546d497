//! `quiver-peer-iceoryx2`: the workload of `quiver bench` run on iceoryx2
//! 0.10.0, so that quiver's shared-memory transport can be compared with
//! iceoryx2's zero-copy publish/subscribe on the same machine, cell by cell
//! (`scripts/compare-iceoryx2` runs both and prints a table).
//!
//! The workload is the one `quiver bench` runs. One producer (this process)
//! and `--consumers` consumer processes (this binary again, started with the
//! hidden `consumer` subcommand), and every consumer receives every message.
//! A message is `--batch-bytes` plus `--header-bytes` (192) bytes, which is
//! the `batch_bytes` quiver reports for the same `--batch-bytes` (the Arrow
//! IPC body plus its header). Per message the producer loans a `[u8]` sample
//! from its shared-memory segment, copies a prepared payload into it (the one
//! memcpy, as quiver copies a prepared record batch into the store), writes
//! the sequence number at both ends and a CLOCK_MONOTONIC stamp after the
//! first one, then sends the sample and notifies an event that wakes parked
//! consumers.
//!
//! Back-pressure follows quiver's window: `window = clamp(window_bytes /
//! message_bytes, 8, 512)` messages and `step = window / 4`. The publisher's
//! segment holds exactly `window + 1` samples, and a sample returns to it only
//! when every consumer has released it, so a loan fails when the producer is a
//! window ahead of the slowest consumer. The producer then parks on a second
//! event, which every consumer notifies each `step` messages (quiver's
//! consumers publish a progress object every `step` batches), and tries again.
//! This wait comes before the copy and the stamp, as in quiver. Nothing may be
//! dropped: the service has no safe overflow, the publisher's strategy is
//! `RetryUntilDelivered`, and each consumer counts gaps in the sequence numbers.
//!
//! A consumer receives until its queue is empty, then polls for up to
//! `--spin-us` microseconds and finally parks on the wake-up event. For each
//! message it reads the header bytes and the trailing sequence number (quiver's
//! consumer decodes the IPC header but not the column data), checks the
//! sequence, and records now minus the stamp in a histogram with quiver's
//! buckets. The producer merges the consumers' reports and prints the keys of
//! `quiver bench --json`, plus `lost`, `torn` and `out_of_order` (the exit
//! status is 1 if any of them is not zero) and, as diagnostics, how often the
//! consumers and the producer parked.
//!
//! iceoryx2 keeps its state in files. This program gives each run a root
//! directory `/tmp/quiver-peer-iceoryx2/<pid>/` and a shared-memory prefix
//! `qpi2_<pid>_`, removes them when the run ends, and before a run removes
//! those of runs whose process is gone (`cleanup` does only that).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iceoryx2::port::listener::{Listener, ListenerWaitError};
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::port::LoanError;
use iceoryx2::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The sequence number that tells consumers the run is over.
const END: u64 = u64::MAX;
/// Parent of the runs' iceoryx2 root directories.
const ROOT: &str = "/tmp/quiver-peer-iceoryx2";
/// Start of the runs' shared-memory file names in /dev/shm.
const SHM_PREFIX: &str = "qpi2_";
/// Longest park of a consumer (or of the producer) before it looks again.
const PARK: Duration = Duration::from_millis(10);
/// A consumer, or the producer waiting for one, gives up after this long.
const STALL: Duration = Duration::from_secs(30);

const USAGE: &str = "\
quiver-peer-iceoryx2: the workload of `quiver bench` on iceoryx2 0.10.0

usage: quiver-peer-iceoryx2 [options]    one producer and N consumer processes
       quiver-peer-iceoryx2 cleanup      remove the files of runs that died

  --consumers N       consumer processes, each receives every message   [1]
  --batch-bytes B     as quiver bench's --batch-bytes                   [65536]
  --header-bytes H    added to B: messages are B+H bytes                [192]
  --seconds S         run this long...                                  [5]
  --count C           ...or send exactly C messages
  --window-bytes W    producer lead: clamp(W / (B+H), 8, 512) messages  [4194304]
  --spin-us N         consumers poll N us before parking                [0]
  --rate R            send at most R messages per second (0: no limit)  [0]
  --json              print one JSON line (the keys of quiver bench --json)
";

/// The command line; consumers are started with the producer's own flags.
#[derive(Clone, Debug)]
struct Args {
    consumers: usize,
    batch_bytes: usize,
    header_bytes: usize,
    seconds: f64,
    count: Option<u64>,
    window_bytes: usize,
    spin_us: u64,
    rate: f64,
    json: bool,
}

impl Args {
    fn parse(flags: &[String]) -> Result<Args> {
        let mut a = Args {
            consumers: 1,
            batch_bytes: 64 << 10,
            header_bytes: 192,
            seconds: 5.0,
            count: None,
            window_bytes: 4 << 20,
            spin_us: 0,
            rate: 0.0,
            json: false,
        };
        let mut it = flags.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--consumers" => a.consumers = value()?.parse()?,
                "--batch-bytes" => a.batch_bytes = value()?.parse()?,
                "--header-bytes" => a.header_bytes = value()?.parse()?,
                "--seconds" => a.seconds = value()?.parse()?,
                "--count" => a.count = Some(value()?.parse()?),
                "--window-bytes" => a.window_bytes = value()?.parse()?,
                "--spin-us" => a.spin_us = value()?.parse()?,
                "--rate" => a.rate = value()?.parse()?,
                "--json" => a.json = true,
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}\n\n{USAGE}").into()),
            }
        }
        if a.consumers == 0 || a.message_bytes() < 24 || a.seconds.is_nan() || a.seconds <= 0.0 {
            return Err("need --consumers >= 1, --seconds > 0 and at least 24 bytes per message".into());
        }
        Ok(a)
    }

    /// Bytes per message: quiver's `batch_bytes` for the same `--batch-bytes`.
    fn message_bytes(&self) -> usize {
        self.batch_bytes + self.header_bytes
    }

    /// quiver's `Window::for_batches`: how many messages the producer may be
    /// ahead of the slowest consumer.
    fn window(&self) -> usize {
        (self.window_bytes / self.message_bytes()).clamp(8, 512)
    }

    /// How often consumers report progress: a quarter of the window.
    fn step(&self) -> u64 {
        (self.window() as u64 / 4).max(1)
    }
}

/// A latency histogram with the buckets of `quiver bench`: 8 per power of two
/// of nanoseconds, a quantile being reported as the middle of its bucket.
struct Histogram([u64; 512]);

impl Histogram {
    fn bucket(ns: u64) -> usize {
        let log = 63 - ns.max(1).leading_zeros() as usize;
        let eighth = if log >= 3 { (ns >> (log - 3)) & 7 } else { 0 };
        (log * 8 + eighth as usize).min(511)
    }

    fn lower_bound(bucket: usize) -> f64 {
        (1u64 << (bucket / 8)) as f64 * (1.0 + (bucket % 8) as f64 / 8.0)
    }

    fn quantile_us(&self, q: f64) -> f64 {
        let total: u64 = self.0.iter().sum();
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &count) in self.0.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return (Self::lower_bound(b) + Self::lower_bound(b + 1)) / 2.0 / 1000.0;
            }
        }
        0.0
    }
}

/// CLOCK_MONOTONIC in nanoseconds, comparable across processes.
fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The little-endian word at byte `at` of a message.
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Parks on `listener` until it is notified or [`PARK`] has passed; true if it
/// was notified. Stopping and continuing the process (SIGSTOP, a debugger)
/// interrupts the wait, which counts as a spurious wake-up.
fn park(listener: &Listener<ipc::Service>) -> Result<bool> {
    match listener.timed_wait(|_| {}, PARK) {
        Ok(notifications) => Ok(notifications > 0),
        Err(ListenerWaitError::InterruptSignal) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An iceoryx2 node whose files all belong to run `run` (a producer's pid).
/// Signal handling is off, so SIGINT and SIGTERM end the process as usual;
/// what a killed run leaves behind is removed by the next run's cleanup.
fn node(run: u32) -> Result<Node<ipc::Service>> {
    let mut config = Config::default();
    config.global.prefix = FileName::new(format!("{SHM_PREFIX}{run}_").as_bytes())?;
    config.global.set_root_path(&Path::new(format!("{ROOT}/{run}/").as_bytes())?);
    let node = NodeBuilder::new()
        .config(&config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()?;
    Ok(node)
}

/// The name of one of run `run`'s three services: `data` (publish/subscribe),
/// `wake` (producer to consumers) and `ack` (consumers to producer).
fn service(run: u32, what: &str) -> Result<ServiceName> {
    Ok(ServiceName::new(&format!("quiver-peer/{run}/{what}"))?)
}

/// Removes run `run`'s files: its root directory and its shared memory.
fn remove_run(run: u32) {
    let _ = std::fs::remove_dir_all(format!("{ROOT}/{run}"));
    let prefix = format!("{SHM_PREFIX}{run}_");
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the files of every run whose producer is no longer alive, found
/// by their directory under [`ROOT`] or their names in /dev/shm.
fn remove_dead_runs() {
    let names = |dir| std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name());
    let dirs = names(ROOT).filter_map(|name| name.to_str()?.parse::<u32>().ok());
    let shm = names("/dev/shm").filter_map(|name| {
        let rest = name.to_str()?.strip_prefix(SHM_PREFIX)?;
        rest.split('_').next()?.parse::<u32>().ok()
    });
    let mut runs: Vec<u32> = dirs.chain(shm).collect();
    runs.sort_unstable();
    runs.dedup();
    for run in runs {
        // Signal 0 sends nothing; it only asks whether the process exists.
        let gone = rustix::process::Pid::from_raw(run as i32)
            .is_some_and(|pid| rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH));
        if gone {
            remove_run(run);
        }
    }
    let _ = std::fs::remove_dir(ROOT); // only if empty
}

/// The consumer processes; any still running when this is dropped are killed.
struct Consumers(Vec<Child>);

impl Drop for Consumers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a consumer found; sent to the producer as one line of numbers.
#[derive(Default)]
struct Report {
    received: u64,
    gaps: u64,
    out_of_order: u64,
    torn: u64,
    /// How often the consumer parked (a diagnostic).
    parks: u64,
    latency: Vec<u64>,
}

fn main() {
    set_log_level(LogLevel::Error);
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("quiver-peer-iceoryx2: {e}");
            std::process::exit(2);
        }
    }
}

/// Dispatches on the subcommand and returns the exit status.
fn run(argv: &[String]) -> Result<i32> {
    match argv.first().map(String::as_str) {
        Some("cleanup") => remove_dead_runs(),
        Some("consumer") => {
            let run = argv.get(1).ok_or("consumer: run id missing")?.parse()?;
            consume(run, &Args::parse(&argv[2..])?)?;
        }
        _ => {
            let args = Args::parse(argv)?;
            remove_dead_runs();
            let run = std::process::id();
            let outcome = produce(run, argv, &args);
            remove_run(run); // every iceoryx2 handle of the run is gone by now
            let _ = std::fs::remove_dir(ROOT);
            return outcome;
        }
    }
    Ok(0)
}

/// The producer: sets up the services, starts the consumers, runs, reports.
/// Returns the exit status: 0, or 1 if a message was lost or damaged.
fn produce(run: u32, flags: &[String], args: &Args) -> Result<i32> {
    let (n, len, window) = (args.consumers, args.message_bytes(), args.window());
    let node = node(run)?;
    let data = node
        .service_builder(&service(run, "data")?)
        .publish_subscribe::<[u8]>()
        .payload_alignment(Alignment::new(64).ok_or("alignment")?)
        .enable_safe_overflow(false)
        .history_size(0)
        .subscriber_max_buffer_size(window)
        .subscriber_max_borrowed_samples(1)
        .max_publishers(1)
        .max_subscribers(n)
        .max_nodes(n + 1)
        .create()?;
    // `wake` has one notifier and n listeners, `ack` the reverse.
    let event = |what| -> Result<_> {
        let builder = node.service_builder(&service(run, what)?).event().max_nodes(n + 1);
        Ok(builder.max_notifiers(n).max_listeners(n).create()?)
    };
    let (wake, ack) = (event("wake")?, event("ack")?);
    let publisher = data
        .publisher_builder()
        .initial_max_slice_len(len)
        .allocation_strategy(AllocationStrategy::Static)
        .max_loaned_samples(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        // The window: `window` samples in the consumers' hands, one loaned.
        .override_sample_preallocation(move |_| window + 1)
        .create()?;
    let wake_consumers = wake.notifier_builder().create()?;
    let progress = ack.listener_builder().create()?;

    let exe = std::env::current_exe()?;
    let mut consumers = Consumers(Vec::new());
    for _ in 0..n {
        let mut command = Command::new(&exe);
        command.arg("consumer").arg(run.to_string()).args(flags).stdout(Stdio::piped());
        consumers.0.push(command.spawn()?);
    }
    // The clock starts once every consumer has all three of its ports.
    let attached = Instant::now();
    while data.dynamic_config().number_of_subscribers() < n
        || wake.dynamic_config().number_of_listeners() < n
        || ack.dynamic_config().number_of_notifiers() < n
    {
        for child in &mut consumers.0 {
            if let Some(status) = child.try_wait()? {
                return Err(format!("a consumer exited before the start ({status})").into());
            }
        }
        if attached.elapsed() > STALL {
            return Err("the consumers did not attach".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    publisher.update_connections()?;

    // Loans a sample; while the producer is a window ahead, waits for progress.
    // A consumer's notification may predate the failed loan; then the park
    // returns at once and the loan is tried again, as it is after a timeout.
    let producer_parks = std::cell::Cell::new(0u64);
    let loan = || -> Result<_> {
        let mut since = None; // read the clock only once the producer must wait
        loop {
            match publisher.loan_slice_uninit(len) {
                Ok(sample) => return Ok(sample),
                Err(LoanError::OutOfMemory) if since.get_or_insert_with(Instant::now).elapsed() < STALL => {
                    producer_parks.set(producer_parks.get() + 1);
                    park(&progress)?;
                }
                Err(LoanError::OutOfMemory) => return Err("the slowest consumer made no progress".into()),
                Err(e) => return Err(e.into()),
            }
        }
    };

    // The prepared message the producer copies from, made once.
    let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ 0x5a).collect();
    let (step, run_for) = (args.step(), Duration::from_secs_f64(args.seconds));
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        // As quiver's, timed runs stop only on a progress-step boundary.
        let over = match args.count {
            Some(count) => sent >= count,
            None => sent.is_multiple_of(step) && start.elapsed() >= run_for,
        };
        if over {
            break;
        }
        if args.rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / args.rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let mut sample = loan()?.write_from_slice(&payload); // the one copy
        let bytes = sample.payload_mut();
        bytes[..8].copy_from_slice(&sent.to_le_bytes());
        bytes[len - 8..].copy_from_slice(&sent.to_le_bytes());
        bytes[8..16].copy_from_slice(&now_ns().to_le_bytes());
        sample.send()?;
        wake_consumers.notify()?;
        sent += 1;
    }
    let mut end = loan()?.write_from_slice(&payload);
    end.payload_mut()[..8].copy_from_slice(&END.to_le_bytes());
    end.send()?;
    wake_consumers.notify()?;

    let mut reports = Vec::new();
    for mut child in std::mem::take(&mut consumers.0) {
        let out = child.stdout.take().ok_or("no consumer output")?;
        let line = BufReader::new(out).lines().next().transpose()?.unwrap_or_default();
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a consumer failed ({status})").into());
        }
        let mut numbers = line.split_whitespace().map(str::parse::<u64>);
        let mut next = || -> Result<u64> { Ok(numbers.next().ok_or("short consumer report")??) };
        let (received, gaps, out_of_order, torn, parks) = (next()?, next()?, next()?, next()?, next()?);
        let latency = (0..512).map(|_| next()).collect::<Result<Vec<_>>>()?;
        reports.push(Report { received, gaps, out_of_order, torn, parks, latency });
    }
    let seconds = start.elapsed().as_secs_f64();

    let mut latency = Histogram([0; 512]);
    let (mut lost, mut torn, mut out_of_order, mut parks) = (0, 0, 0, 0);
    for r in &reports {
        latency.0.iter_mut().zip(&r.latency).for_each(|(a, b)| *a += b);
        lost += r.gaps.max(sent.saturating_sub(r.received));
        torn += r.torn;
        parks += r.parks;
        out_of_order += r.out_of_order;
    }
    let batches_per_s = sent as f64 / seconds;
    let gb_per_s = (sent * len as u64) as f64 / seconds / 1e9;
    let (p50, p99, p999) = (latency.quantile_us(0.5), latency.quantile_us(0.99), latency.quantile_us(0.999));
    if args.json {
        println!(
            "{{\"transport\":\"iceoryx2\",\"consumers\":{n},\"batch_bytes\":{len},\"batches\":{sent},\
             \"seconds\":{seconds},\"batches_per_s\":{batches_per_s},\"gb_per_s\":{gb_per_s},\
             \"latency_us_p50\":{p50},\"latency_us_p99\":{p99},\"latency_us_p999\":{p999},\
             \"lost\":{lost},\"torn\":{torn},\"out_of_order\":{out_of_order},\"window\":{window},\
             \"spin_us\":{},\"consumer_parks\":{parks},\"producer_parks\":{}}}",
            args.spin_us,
            producer_parks.get()
        );
    } else {
        println!("transport        iceoryx2 0.10.0");
        println!("consumers        {n}");
        println!("message          {len} bytes, window {window} messages");
        println!("batches          {sent} in {seconds:.3} s");
        println!("throughput       {batches_per_s:.0} batches/s, {gb_per_s:.3} GB/s (per consumer)");
        println!("send-to-read     p50 {p50:.1} µs, p99 {p99:.1} µs, p99.9 {p999:.1} µs");
        println!("lost             {lost} (torn {torn}, out of order {out_of_order})");
        println!("parks            consumers {parks}, producer {}", producer_parks.get());
    }
    Ok(if lost + torn + out_of_order == 0 { 0 } else { 1 })
}

/// A consumer process: receives every message of run `run` until the end
/// marker, then prints its report on stdout.
fn consume(run: u32, args: &Args) -> Result<()> {
    let (len, step) = (args.message_bytes(), args.step());
    let node = node(run)?;
    let data = node.service_builder(&service(run, "data")?).publish_subscribe::<[u8]>().open()?;
    let wake = node.service_builder(&service(run, "wake")?).event().open()?;
    let ack = node.service_builder(&service(run, "ack")?).event().open()?;
    let subscriber = data.subscriber_builder().buffer_size(args.window()).create()?;
    let woken = wake.listener_builder().create()?;
    let progress = ack.notifier_builder().create()?;

    let mut report = Report::default();
    let mut latency = Histogram([0; 512]);
    let (mut expected, mut checksum) = (0u64, 0u64);
    let mut last = Instant::now(); // when a message last came
    'run: loop {
        let before = report.received;
        while let Some(sample) = subscriber.receive()? {
            let bytes = sample.payload();
            let seq = word(bytes, 0);
            if seq == END {
                break 'run;
            }
            if bytes.len() != len {
                return Err(format!("a message of {} bytes, expected {len}", bytes.len()).into());
            }
            // Read what quiver's decoder reads: the header, then the tail.
            let header = (8..args.header_bytes.min(len - 8)).step_by(8).map(|at| word(bytes, at));
            checksum = header.fold(checksum, u64::wrapping_add);
            let (stamp, tail) = (word(bytes, 8), word(bytes, len - 8));
            latency.0[Histogram::bucket(now_ns().saturating_sub(stamp))] += 1;
            drop(sample); // released: the producer may reuse it once all have

            report.torn += u64::from(tail != seq);
            if seq > expected {
                report.gaps += seq - expected;
            } else if seq < expected {
                report.out_of_order += 1;
            }
            expected = seq + 1;
            report.received += 1;
            if report.received.is_multiple_of(step) {
                progress.notify()?;
            }
        }
        if report.received > before {
            last = Instant::now();
        }
        // Nothing to receive: poll for --spin-us, then park until woken.
        let polling = Instant::now();
        while args.spin_us > 0 && polling.elapsed() < Duration::from_micros(args.spin_us) {
            if subscriber.has_samples()? {
                continue 'run;
            }
            std::hint::spin_loop();
        }
        report.parks += 1;
        if !park(&woken)? && last.elapsed() > STALL {
            return Err(format!("no message for {STALL:?}").into());
        }
    }
    let r = &report;
    let counts: Vec<String> = latency.0.iter().map(u64::to_string).collect();
    println!("{} {} {} {} {} {}", r.received, r.gaps, r.out_of_order, r.torn, r.parks, counts.join(" "));
    std::hint::black_box(checksum);
    Ok(())
}
