//! Client liveness that the OS clears when a process dies.
//!
//! Each client holds an open-file-description (OFD) write lock on one byte
//! of the store file, at `LIVENESS_BASE + slot`, far beyond the file's
//! end (locks may cover bytes past EOF, and they do not touch the mapping).
//! The kernel drops the lock when the last descriptor of that open file
//! closes, which death by any signal does. A pid can be reused; a lock
//! cannot outlive its process.
//!
//! OFD locks conflict between different opens of the file even inside one
//! process, so two handles in one process are two distinct clients.

use std::io;
use std::os::fd::AsRawFd;

use super::Region;

const LIVENESS_BASE: i64 = 1 << 40;

fn slot_lock(kind: i32, slot: u32) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a
    // valid value; the fields that matter are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = LIVENESS_BASE + slot as i64;
    fl.l_len = 1;
    fl.l_pid = 0; // required by OFD locks
    fl
}

fn fcntl_lock(region: &Region, cmd: i32, fl: &mut libc::flock) -> io::Result<()> {
    fcntl_file(region.file(), cmd, fl)
}

fn fcntl_file(file: &std::fs::File, cmd: i32, fl: &mut libc::flock) -> io::Result<()> {
    // SAFETY: the descriptor is open for the borrow of `file` and `fl` is a
    // valid, initialised flock that outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Tries to take the liveness lock of `slot` for this region's open file.
/// `Ok(false)` means another live client holds it.
pub(crate) fn try_claim(region: &Region, slot: u32) -> io::Result<bool> {
    let mut fl = slot_lock(libc::F_WRLCK, slot);
    match fcntl_lock(region, libc::F_OFD_SETLK, &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives up the liveness lock of `slot`.
pub(crate) fn release(region: &Region, slot: u32) -> io::Result<()> {
    let mut fl = slot_lock(libc::F_UNLCK, slot);
    fcntl_lock(region, libc::F_OFD_SETLK, &mut fl)
}

/// Whether some other open of the file holds the liveness lock of `slot`.
/// Must not be asked about a slot this region itself holds: a lock never
/// conflicts with its own holder, so the answer would be "dead".
pub(crate) fn is_held_by_other(region: &Region, slot: u32) -> io::Result<bool> {
    let mut fl = slot_lock(libc::F_WRLCK, slot);
    fcntl_lock(region, libc::F_OFD_GETLK, &mut fl)?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// How many of the liveness locks of slots `0..slots` some open of `file`
/// holds (`file` opened anew, so none of them is its own): the live
/// clients, found without mapping the file.
pub(crate) fn live_slots(file: &std::fs::File, slots: u32) -> io::Result<u32> {
    let mut live = 0;
    for slot in 0..slots {
        let mut fl = slot_lock(libc::F_WRLCK, slot);
        fcntl_file(file, libc::F_OFD_GETLK, &mut fl)?;
        live += u32::from(i32::from(fl.l_type) != libc::F_UNLCK);
    }
    Ok(live)
}

/// Whether process (or thread) `pid` is stopped, by SIGSTOP, Ctrl-Z or a
/// debugger: its state in /proc is `T` or `t`. `false` if /proc cannot
/// tell (no such process, another PID namespace).
pub fn process_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|s| s == "T" || s == "t")
    })
}

/// The lock a creator holds on a store file it has not published yet (a
/// byte past every client slot's).
const CREATOR_SLOT: u32 = u32::MAX;

/// Takes the creator lock on a file being created (see `Region::create`).
pub(crate) fn claim_creator(file: &std::fs::File) -> io::Result<()> {
    let mut fl = slot_lock(libc::F_WRLCK, CREATOR_SLOT);
    fcntl_file(file, libc::F_OFD_SETLK, &mut fl)
}

/// Gives up the creator lock once the file is published.
pub(crate) fn release_creator(file: &std::fs::File) -> io::Result<()> {
    let mut fl = slot_lock(libc::F_UNLCK, CREATOR_SLOT);
    fcntl_file(file, libc::F_OFD_SETLK, &mut fl)
}

/// Whether a live creator still holds the creator lock on `file` (opened
/// anew, so its own locks are not the creator's).
pub(crate) fn creator_alive(file: &std::fs::File) -> io::Result<bool> {
    let mut fl = slot_lock(libc::F_WRLCK, CREATOR_SLOT);
    fcntl_file(file, libc::F_OFD_GETLK, &mut fl)?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}
