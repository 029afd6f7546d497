//! `quiver ls` and `quiver rm`: the store files in /dev/shm, listed and
//! removed without joining them as a client (see `quiver::store::files`).

use anyhow::Result;
use quiver::store::files::{self, FileState};

#[derive(clap::Args, Debug)]
pub(crate) struct LsArgs {
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RmArgs {
    /// The stores' names (their files are /dev/shm/quiver-NAME).
    #[arg(required = true)]
    names: Vec<String>,
    /// Remove a store even if processes have it open (they keep their
    /// mapping until they close it) or it belongs to another user.
    #[arg(long)]
    force: bool,
}

pub(crate) fn ls(args: LsArgs) -> Result<()> {
    let list = files::list()?;
    if args.json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no stores in {}", quiver::store::STORE_DIR);
        return Ok(());
    }
    let me = rustix::process::geteuid().as_raw();
    println!("{:<32} {:>8} {:>12} {:>12} {:>8}  state", "name", "owner", "size", "in memory", "clients");
    for f in &list {
        let state = match &f.state {
            FileState::Store => "store".to_string(),
            FileState::OtherVersion(v) => {
                format!("store of format version {v} (this build reads {})", quiver::store::FORMAT_VERSION)
            }
            FileState::BeingCreated => "being created".to_string(),
            FileState::Abandoned if f.owner == Some(me) => {
                "abandoned by a dead creator (`quiver rm` removes it)".to_string()
            }
            FileState::Abandoned => {
                "abandoned by a dead creator of another user (only they, or root, can remove it)".to_string()
            }
            FileState::NotAStore(why) => format!("not a quiver store: {why}"),
            FileState::Unreadable(why) => format!("cannot be read: {why}"),
            _ => format!("{:?}", f.state),
        };
        let owner = f.owner.map_or("?".to_string(), |uid| uid.to_string());
        let clients = f.live_clients.map_or("-".to_string(), |n| n.to_string());
        println!("{:<32} {owner:>8} {:>12} {:>12} {clients:>8}  {state}", f.name, human(f.size), human(f.allocated));
    }
    Ok(())
}

pub(crate) fn rm(args: RmArgs) -> Result<()> {
    let mut failed = 0;
    for name in &args.names {
        match files::remove(name, args.force) {
            Ok(removed) => {
                let mut also = String::new();
                if removed.live_clients > 0 {
                    also += &format!(" ({} processes still have it open)", removed.live_clients);
                }
                if removed.abandoned > 0 {
                    also += &format!(" and {} abandoned temporaries", removed.abandoned);
                }
                println!("removed {}{also}", removed.path.display());
            }
            Err(e) => {
                // With its sources: the OS's reason, where there is one.
                eprintln!("quiver: {:#}", anyhow::Error::from(e));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} stores not removed", args.names.len());
    }
    Ok(())
}

/// Bytes as B, KiB, MiB or GiB.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
