//! A guard that cleans up however a command ends (an error, Ctrl-C turned
//! into a return): a store file removed. (Child processes: the
//! supervisor's, killed and reaped when it drops.)

use std::path::PathBuf;

/// Removes a file (a store) on drop.
pub(crate) struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
