//! The robust, process-shared mutex that guards the store's metadata.
//!
//! It is a glibc `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED` and
//! `PTHREAD_MUTEX_ROBUST`, placed in the file. When a process dies while
//! holding it, the kernel marks it, and the next process to lock it gets
//! `EOWNERDEAD`: [`LockGuard::owner_died`] tells the caller to repair the
//! metadata (the object table is the truth; everything derived is rebuilt)
//! before the guard marks the mutex consistent again.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use super::clock;
use super::error::{Result, ShmError};
use super::Region;

/// Bytes reserved for the mutex in the file. `pthread_mutex_t` is 40 bytes
/// on x86-64 and aarch64 glibc; the check below keeps that honest.
pub(crate) const MUTEX_BYTES: u64 = 64;
const _: () = assert!(size_of::<libc::pthread_mutex_t>() as u64 <= MUTEX_BYTES);

/// How many times `lock` retries `trylock` before it blocks.
const LOCK_SPINS: u32 = 400;

/// Where glibc keeps a mutex's kind (its type and robust, shared and
/// elision flags) in a `pthread_mutex_t`, on x86-64 and aarch64 alike.
const KIND_OFFSET: u64 = 16;

/// The kind word of a mutex made by [`init`]: computed once, on a local mutex.
fn expected_kind() -> Result<u32> {
    static KIND: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let kind = KIND.get_or_init(|| {
        let mut local = std::mem::MaybeUninit::<libc::pthread_mutex_t>::zeroed();
        let rc = init_at(local.as_mut_ptr());
        let at = local.as_ptr().cast::<u8>().wrapping_add(KIND_OFFSET as usize).cast::<u32>();
        // SAFETY: `at` is four bytes inside a zeroed, initialised local mutex (40 bytes); no alignment needed.
        let kind = unsafe { std::ptr::read_unaligned(at) };
        // SAFETY: the mutex was initialised (rc == 0) and is not locked.
        (rc == 0).then(|| unsafe { libc::pthread_mutex_destroy(local.as_mut_ptr()) }).map(|_| kind)
    });
    kind.ok_or_else(|| ShmError::io("initialise a reference mutex", std::io::Error::other("pthread_mutex_init failed")))
}

/// Checks that the mutex at `offset` of a file being opened is of the kind
/// [`init`] makes. Its bytes are glibc's: garbage there (a corrupt or
/// foreign file) could send `pthread_mutex_trylock` down a path that
/// crashes (lock elision), so such a file is refused before it is locked.
pub(crate) fn check(region: &Region, offset: u64) -> Result<()> {
    let found: &std::sync::atomic::AtomicU32 = region.get(offset + KIND_OFFSET)?;
    let found = found.load(std::sync::atomic::Ordering::Relaxed);
    let expected = expected_kind()?;
    if found != expected {
        return Err(ShmError::ForeignLock { found, expected });
    }
    Ok(())
}

/// Initialises a robust process-shared mutex at `offset` in a fresh region.
pub(crate) fn init(region: &Region, offset: u64) -> Result<()> {
    let ptr = mutex_ptr(region, offset)?;
    let rc = init_at(ptr);
    if rc != 0 {
        return Err(ShmError::io("initialise the store lock", std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}

/// `pthread_mutex_init` with quiver's attributes at `ptr`; the return code.
fn init_at(ptr: *mut libc::pthread_mutex_t) -> i32 {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is a local attribute object initialised by
    // pthread_mutexattr_init before any other use, and destroyed after;
    // `ptr` points at a mutex nobody else uses yet: MUTEX_BYTES bytes in the
    // mapping (checked by the caller) before the header is published, or a
    // local reference mutex.
    unsafe {
        let mut rc = libc::pthread_mutexattr_init(attr.as_mut_ptr());
        if rc == 0 {
            rc = libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        }
        if rc == 0 {
            rc = libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        }
        if rc == 0 {
            rc = libc::pthread_mutex_init(ptr, attr.as_ptr());
        }
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        rc
    }
}

fn mutex_ptr(region: &Region, offset: u64) -> Result<*mut libc::pthread_mutex_t> {
    let align = align_of::<libc::pthread_mutex_t>() as u64;
    Ok(region.raw_ptr(offset, MUTEX_BYTES, align)?.cast())
}

/// A held lock. Unlocks on drop. It borrows the region the mutex lives in,
/// so it cannot outlive the mapping.
pub(crate) struct LockGuard<'r> {
    mutex: *mut libc::pthread_mutex_t,
    owner_died: bool,
    region: PhantomData<&'r Region>,
}

impl LockGuard<'_> {
    /// Whether the previous holder died while holding the lock, so the
    /// state it guards may be half-changed and must be repaired.
    ///
    /// When it is true, the caller must record in the guarded state that a
    /// repair is due (the store's `repair_pending`) before it attempts the
    /// repair and before the guard drops: dropping the guard marks the
    /// mutex consistent whether or not the repair succeeded.
    pub(crate) fn owner_died(&self) -> bool {
        self.owner_died
    }
}

/// The least a call with a deadline waits for the lock, so that a call
/// whose own time is up (a poll with a zero timeout) still gets this long.
/// The lock is held for microseconds, but with both cores busy a waiter
/// that sleeps may not run again for milliseconds, and finds the lock
/// taken again when it does: waits of 1 to 8 ms were measured under
/// `quiver bench` on 2 cores, and 5 ms made a consumer's zero-timeout call
/// fail now and then. It was 100 ms while a consumer's every look took the
/// lock; now 15 ms keeps a call with a timeout within that timeout plus
/// 20 ms when the holder is stopped, while a running holder is waited for
/// up to [`BUSY_LOCK_WAIT`] in all.
const MIN_LOCK_WAIT: Duration = Duration::from_millis(15);

/// Locks the mutex at `offset`, waiting at most `timeout`, and no longer
/// than until `deadline_ns` (`monotonic_coarse_ns`, the caller's own
/// deadline, if it has one) plus a few milliseconds. On a timeout the error
/// names the holder, as far as /proc tells.
pub(crate) fn lock(region: &Region, offset: u64, timeout: Duration) -> Result<LockGuard<'_>> {
    lock_until(region, offset, timeout, None)
}

/// [`lock`] within the caller's deadline; see there.
pub(crate) fn lock_until(
    region: &Region,
    offset: u64,
    timeout: Duration,
    deadline_ns: Option<u64>,
) -> Result<LockGuard<'_>> {
    let mutex = mutex_ptr(region, offset)?;
    let mut rc = spin_for(mutex);
    // Only a lock that must be waited for reads a clock.
    let timeout = match deadline_ns {
        Some(d) if rc == libc::EBUSY => {
            timeout.min(Duration::from_nanos(d.saturating_sub(clock::monotonic_coarse_ns())).max(MIN_LOCK_WAIT))
        }
        _ => timeout,
    };
    if rc == libc::EBUSY {
        let deadline = realtime_deadline(timeout);
        // SAFETY: as in `spin_for`; `deadline` is a valid timespec on the stack.
        rc = unsafe { libc::pthread_mutex_timedlock(mutex, &deadline) };
    }
    // A call whose own time ran out while a running holder had the lock:
    // on busy cores a waiter that slept may not run again for milliseconds,
    // so it is given up to `BUSY_LOCK_WAIT` in all. A stopped holder is not
    // waited for past the call's time (its plus `MIN_LOCK_WAIT`).
    let mut waited = timeout;
    if rc == libc::ETIMEDOUT && deadline_ns.is_some() && timeout < BUSY_LOCK_WAIT && !holder_stopped(region, offset) {
        let more = BUSY_LOCK_WAIT - timeout;
        let deadline = realtime_deadline(more);
        // SAFETY: as above.
        rc = unsafe { libc::pthread_mutex_timedlock(mutex, &deadline) };
        waited += more;
    }
    guard(region, offset, mutex, rc, waited)
}

/// The most a call whose time ran out waits for a lock whose holder runs
/// (see [`lock_until`]).
const BUSY_LOCK_WAIT: Duration = Duration::from_millis(100);

/// [`lock_until`], except that a lock whose holder is stopped (SIGSTOP,
/// Ctrl-Z, a debugger: its state in /proc) is `LockTimeout` at once, after
/// the short spin: for work that can as well be left to the next holder
/// (freeing what a commit released, a close's release), which a stopped
/// holder must not stall while a running one is waited for as usual.
pub(crate) fn lock_unless_stopped(
    region: &Region,
    offset: u64,
    timeout: Duration,
    deadline_ns: Option<u64>,
) -> Result<LockGuard<'_>> {
    let stopped = || ShmError::LockTimeout { waited: Duration::ZERO, holder: None };
    // A holder found stopped a moment ago, still holding it: no spin, no
    // /proc (a consumer commits per batch while a holder stays stopped).
    let tid = holder_tid(region, offset);
    if tid.is_some() && tid == STOPPED_HOLDER.seen_recently() {
        return Err(stopped());
    }
    // A running holder lets go within microseconds: wait a little as any
    // locker does, and ask /proc only if it has not (under contention, a
    // /proc read per busy lock would cost more than the wait).
    match lock_until(region, offset, timeout.min(PATIENCE), deadline_ns) {
        Err(ShmError::LockTimeout { .. }) if timeout > PATIENCE => {}
        other => return other,
    }
    if holder_stopped(region, offset) {
        if let Some(tid) = holder_tid(region, offset) {
            STOPPED_HOLDER.saw(tid);
        }
        return Err(stopped());
    }
    lock_until(region, offset, timeout - PATIENCE, deadline_ns)
}

/// How long [`lock_unless_stopped`] waits before it asks whether the
/// holder is stopped.
const PATIENCE: Duration = Duration::from_millis(2);

/// The guard for what a lock attempt returned.
fn guard(
    region: &Region,
    offset: u64,
    mutex: *mut libc::pthread_mutex_t,
    rc: i32,
    waited: Duration,
) -> Result<LockGuard<'_>> {
    match rc {
        0 => Ok(LockGuard { mutex, owner_died: false, region: PhantomData }),
        libc::EOWNERDEAD => Ok(LockGuard { mutex, owner_died: true, region: PhantomData }),
        libc::ETIMEDOUT => Err(ShmError::LockTimeout { waited, holder: holder(region, offset) }),
        libc::ENOTRECOVERABLE => Err(ShmError::LockNotRecoverable),
        other => Err(ShmError::io("lock the store", std::io::Error::from_raw_os_error(other))),
    }
}

/// `pthread_mutex_trylock`, retried for a short spin while the lock is
/// held; the last return code.
fn spin_for(mutex: *mut libc::pthread_mutex_t) -> i32 {
    // SAFETY: `mutex` points at the initialised process-shared mutex inside
    // the mapping, which outlives the guard: the guard borrows the region.
    let mut rc = unsafe { libc::pthread_mutex_trylock(mutex) };
    // Critical sections last about a hundred nanoseconds, while sleeping in
    // the kernel and being woken costs tens of microseconds across cores: try
    // again for a short while before blocking. On a shared core the holder
    // is not running, so the spin ends quickly with a yield.
    //
    // The spin reads glibc's lock word (the holder's thread ID, at offset 0
    // on x86-64 and aarch64) and tries the lock only once it reads free: a
    // failed trylock is a locked write that takes the line from the holder,
    // slowing the critical section it waits for. Correctness does not rest
    // on that offset: a word that never reads free ends the spin in the
    // blocking wait below, and a trylock that fails is only retried.
    // SAFETY: `mutex` is 8-aligned (`mutex_ptr`) and inside the mapping;
    // glibc changes the word with atomic instructions.
    let word = unsafe { AtomicI32::from_ptr(mutex.cast::<i32>()) };
    let mut spins = 0;
    while rc == libc::EBUSY && spins < LOCK_SPINS {
        spins += 1;
        if spins % 64 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        if word.load(Ordering::Relaxed) == 0 {
            // SAFETY: as above.
            rc = unsafe { libc::pthread_mutex_trylock(mutex) };
        }
    }
    rc
}

/// `timeout` from now on `CLOCK_REALTIME`, the clock POSIX's
/// `pthread_mutex_timedlock` measures (glibc's `pthread_mutex_clocklock`
/// would take `CLOCK_MONOTONIC`, but the libc crate does not bind it).
fn realtime_deadline(timeout: Duration) -> libc::timespec {
    let deadline = u128::from(clock::wall_ns()).saturating_add(timeout.as_nanos());
    let secs = (deadline / 1_000_000_000).min(i64::MAX as u128);
    libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: (deadline % 1_000_000_000) as _ }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard owns the lock on this mutex (it was returned by a
        // successful lock), and the mutex lives in the region the guard
        // borrows. Marking it consistent after EOWNERDEAD is sound even when
        // the repair failed or never ran: the caller stores `repair_pending`
        // in the guarded header before it starts repairing (see
        // `owner_died`) and clears it only once the repair is complete, so
        // the next holder finds the flag and repairs before using anything.
        // Not marking it would make the mutex unusable for every process
        // (ENOTRECOVERABLE) instead.
        unsafe {
            if self.owner_died {
                libc::pthread_mutex_consistent(self.mutex);
            }
            libc::pthread_mutex_unlock(self.mutex);
        }
    }
}

/// The last lock holder this process found stopped, and when (process
/// memory): [`lock_unless_stopped`] trusts it for [`STOPPED_FRESH`].
static STOPPED_HOLDER: StoppedHolder = StoppedHolder(std::sync::atomic::AtomicU64::new(0));

/// How long a holder found stopped is taken to be still stopped.
const STOPPED_FRESH: Duration = Duration::from_millis(20);

/// A thread ID (high 32 bits) and the coarse monotonic time in ms (low 32).
struct StoppedHolder(std::sync::atomic::AtomicU64);

impl StoppedHolder {
    fn now_ms() -> u64 {
        (clock::monotonic_coarse_ns() / 1_000_000) & 0xffff_ffff
    }

    fn saw(&self, tid: u32) {
        self.0.store(u64::from(tid) << 32 | Self::now_ms(), Ordering::Relaxed);
    }

    fn seen_recently(&self) -> Option<u32> {
        let word = self.0.load(Ordering::Relaxed);
        let age = Self::now_ms().wrapping_sub(word & 0xffff_ffff) & 0xffff_ffff;
        (word != 0 && age <= STOPPED_FRESH.as_millis() as u64).then_some((word >> 32) as u32)
    }
}

/// Whether the holder of the mutex at `offset` is stopped (state `T` or
/// `t` in /proc), as far as /proc tells.
fn holder_stopped(region: &Region, offset: u64) -> bool {
    holder_tid(region, offset).is_some_and(super::liveness::process_stopped)
}

/// The thread ID glibc keeps in the robust mutex's futex word (its low 30
/// bits, FUTEX_TID_MASK), if it is held. Read atomically: another process
/// may change it.
fn holder_tid(region: &Region, offset: u64) -> Option<u32> {
    let word: &std::sync::atomic::AtomicU32 = region.get(offset).ok()?;
    Some(word.load(std::sync::atomic::Ordering::Relaxed) & 0x3fff_ffff).filter(|&tid| tid != 0)
}

/// Who holds the mutex at `offset`: the thread ID glibc keeps in the robust
/// mutex's futex word, and what /proc says of its process.
pub(crate) fn holder(region: &Region, offset: u64) -> Option<String> {
    let tid = holder_tid(region, offset)?;
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return Some(format!("thread {tid} (not visible in /proc here)"));
    };
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    let (pid, state) = (field("Tgid:"), field("State:"));
    let stopped = state.starts_with('T') || state.starts_with('t');
    Some(format!("process {pid} (thread {tid}, {})", if stopped { "stopped" } else { state.as_str() }))
}
