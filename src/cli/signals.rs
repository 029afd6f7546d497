//! Stopping cleanly on Ctrl-C, SIGTERM and SIGHUP (the handler lives in
//! `quiver::shm::signals`): the long-running commands (`demo`, `chaos`)
//! call [`interrupted`] in every loop and return, so their guards kill
//! their processes and remove their stores.

use anyhow::{bail, Result};

pub(crate) fn install() {
    quiver::shm::signals::install_stop_handler();
}

/// An error once a stop signal arrived.
pub(crate) fn interrupted() -> Result<()> {
    if quiver::shm::signals::stop_requested() {
        bail!("interrupted: every process stopped and the store removed");
    }
    Ok(())
}
