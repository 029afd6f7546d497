//! Guards that clean up however a command ends (an error, Ctrl-C turned
//! into a return): child processes killed and reaped, store files removed.

use std::path::PathBuf;
use std::process::Child;

use anyhow::{bail, Result};

/// Child processes, killed and reaped on drop.
#[derive(Default)]
pub(crate) struct Children(pub Vec<Child>);

impl Children {
    /// Fails if child `c` has exited before `reported[c]` was set, or
    /// failed: the command must not wait for a process that is gone.
    pub(crate) fn check(&mut self, what: &str, reported: &[bool]) -> Result<()> {
        for (c, child) in self.0.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                if !reported.get(c).copied().unwrap_or(false) || !status.success() {
                    bail!("{what}-{c} exited early ({status})");
                }
            }
        }
        Ok(())
    }
}

impl Children {
    /// Kills every child still running (they are reaped by `try_wait`, or
    /// on drop).
    pub(crate) fn kill_all(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes a file (a store) on drop.
pub(crate) struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
