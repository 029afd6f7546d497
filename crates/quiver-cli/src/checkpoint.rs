//! `quiver checkpoint show PATH`: a checkpoint file, checked and printed.

use anyhow::Result;
use quiver::Checkpoint;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum CheckpointCommand {
    /// Print a checkpoint file (after checking its magic, version and checksum).
    Show {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: CheckpointCommand) -> Result<()> {
    match command {
        CheckpointCommand::Show { path, json } => show(&path, json),
    }
}

fn show(path: &std::path::Path, json: bool) -> Result<()> {
    let c = Checkpoint::read(path)?;
    if json {
        println!("{}", serde_json::to_string(&c)?);
        return Ok(());
    }
    println!("checkpoint {}", path.display());
    let rows = [
        ("stream", format!("{} ({} partitions)", c.stream, c.partitions)),
        ("group", c.group.clone()),
        ("shards", format!("{} {:?}", c.shard_size, c.unit).to_lowercase()),
        ("lease", format!("{:.3} s", c.lease_ns as f64 / 1e9)),
        ("linger", format!("{:.3} s", c.linger_ns as f64 / 1e9)),
        ("max retries", c.max_retries.to_string()),
        ("next task id", c.next_task_id.to_string()),
        ("next partition", c.next_partition.to_string()),
        ("next cut", format!("{:?}", c.next_cut)),
        ("committed", format!("{:?}", c.committed)),
        ("todo", c.todo.len().to_string()),
        ("doing", c.doing.len().to_string()),
        ("done, not yet committed", c.done.len().to_string()),
        ("dead letters", c.dead_letters.len().to_string()),
    ];
    for (name, value) in rows {
        println!("  {name:<24} {value}");
    }
    for (what, tasks) in [("doing", &c.doing), ("todo", &c.todo), ("dead letter", &c.dead_letters)] {
        for t in tasks.iter().take(20) {
            println!(
                "  {what:<12} task {:>6}  partition {:>2}  [{}, {})  retries {}",
                t.id, t.partition, t.start, t.end, t.retries
            );
        }
        if tasks.len() > 20 {
            println!("  {what:<12} … {} more", tasks.len() - 20);
        }
    }
    Ok(())
}
