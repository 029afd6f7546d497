//! Waiting on words in the shared file: futex waits with timeouts, and the
//! optional spin-then-park strategy.
//!
//! A [`WaitCell`] is a sequence number and a count of waiters. A process
//! that changes state the others may wait for calls [`WaitCell::notify`]
//! after the change; a process that waits for a condition calls
//! [`WaitCell::wait_until`], which re-checks the condition after every wake.
//! No wake-up is lost. A waiter that is about to spin or sleep first
//! counts itself in the cell, then looks at its condition once more; the
//! notifier makes its change, then looks at the counts (a SeqCst fence on
//! each side between the write and the read: a Dekker-style pair), so
//! either the notifier sees the waiter or the waiter sees the change. Only
//! a notifier that sees a waiter bumps the sequence number (which a
//! sleeper's futex wait and a spinner watch) and, for a sleeper, makes the
//! wake-up system call. A notify with nobody waiting is a fence and a load
//! of a line nobody writes: no write that other cores must fetch back.
//!
//! [`WaitCell::ticket`] waits (`wait_changed`) rely on every notify moving
//! the number: their cells are notified with [`WaitCell::notify_always`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::thread::futex;

crate::shm::shared_struct! {
    /// A futex word with its counts of sleepers and spinners, padded to a
    /// cache line.
    pub struct WaitCell {
        seq: AtomicU32,
        /// Waiters parked (or about to park) on `seq`.
        waiters: AtomicU32,
        /// Waiters spinning on `seq` (format 8; zero in older files).
        spinners: AtomicU32,
        _pad: [AtomicU32; 13],
    }
}
const _: () = assert!(size_of::<WaitCell>() == 64);

/// What one attempt of [`WaitCell::wait_for`] found.
#[derive(Debug)]
pub enum Attempt<T> {
    /// What the wait was for.
    Ready(T),
    /// Nothing yet.
    Pending,
    /// Nothing yet, but another process is making it now (writing the
    /// object waited for): worth a short spin before parking.
    InFlight,
}

/// How long a wait spins when the change it waits for is under way (see
/// [`WaitCell::wait_for`]): about a 1 MiB copy into shared memory.
pub const IN_FLIGHT_SPIN: Duration = Duration::from_micros(50);

/// How a blocked call waits for another process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Park on the futex at once (the default). Costs a wake-up through the
    /// kernel (about 20 µs across cores on a small VM, about 1 µs on the same
    /// core) but never burns CPU the other process might need.
    #[default]
    Park,
    /// Spin for at most `budget`, yielding the CPU between checks, then
    /// park. Cuts wake latency when the other process runs on another core;
    /// the yields keep a same-core hand-off from stalling for the whole
    /// budget. Keep the budget small (a few microseconds to tens).
    SpinThenPark {
        /// The longest time to spin before parking.
        budget: Duration,
    },
}

impl WaitCell {
    /// Announces a state change to every waiter. Call after the change is
    /// visible (for example after unlocking the lock that guarded it).
    /// Waiters that count themselves after this call see the change
    /// themselves; only [`wait_for`](Self::wait_for) waits (which look
    /// again once counted) may rely on it, not [`ticket`](Self::ticket)
    /// waits.
    pub fn notify(&self) {
        // Pairs with the fence in `wait_for` after a waiter counts itself:
        // the change (before this fence) or the count (after that one) is
        // seen by the other side.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.notify_fenced();
    }

    /// [`notify`](Self::notify) for a caller that issued
    /// `fence(SeqCst)` itself after its change (one fence for the several
    /// cells a change concerns).
    pub fn notify_fenced(&self) {
        let sleeping = self.waiters.load(Ordering::Relaxed) != 0;
        if sleeping || self.spinners.load(Ordering::Relaxed) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            if sleeping {
                wake_all(&self.seq);
            }
        }
    }

    /// [`notify`](Self::notify) that always moves the sequence number, for
    /// cells whose waiters hold a [`ticket`](Self::ticket).
    pub fn notify_always(&self) {
        // SeqCst pairs with the waiter's `waiters.fetch_add` and `seq.load`
        // in `wait_for`: of the two stores, one is first in the total
        // order, and the other side's load then sees it.
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            wake_all(&self.seq);
        }
    }

    /// How many waiters are parked (or about to park) on the cell now: a
    /// test waits for this to be sure a waiter is in place, instead of
    /// sleeping and hoping.
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::SeqCst)
    }

    /// The cell's sequence number now: a ticket for
    /// [`wait_changed`](Self::wait_changed). Take it before checking the
    /// condition the wait is for.
    pub fn ticket(&self) -> u32 {
        // SeqCst: the same Dekker pair as the load in `wait_until`.
        self.seq.load(Ordering::SeqCst)
    }

    /// Waits until a [`notify`](Self::notify) has happened since `ticket`
    /// was taken (true) or `timeout` passes (false). Nothing notified after
    /// the ticket is missed, even if it came before this call.
    pub fn wait_changed(&self, ticket: u32, timeout: Duration, strategy: WaitStrategy) -> bool {
        let changed = self.wait_until(timeout, strategy, || {
            Ok::<_, std::convert::Infallible>((self.seq.load(Ordering::SeqCst) != ticket).then_some(()))
        });
        matches!(changed, Ok(Some(())))
    }

    /// Calls `attempt` until it returns `Some`, an error, or `timeout` passes
    /// (`Ok(None)`); between attempts waits for a [`notify`]. A zero timeout
    /// makes exactly one attempt; a timeout too large for the clock means no
    /// limit. The clock is read only once the first attempt has failed, so a
    /// hit costs no clock read at all.
    ///
    /// [`notify`]: WaitCell::notify
    pub fn wait_until<T, E>(
        &self,
        timeout: Duration,
        strategy: WaitStrategy,
        mut attempt: impl FnMut() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        self.wait_for(timeout, strategy, || Ok(attempt()?.map_or(Attempt::Pending, Attempt::Ready)))
    }

    /// [`wait_until`](Self::wait_until) for an attempt that can also say
    /// the change it waits for is under way ([`Attempt::InFlight`]: another
    /// process is writing the object now). Then the wait spins for up to
    /// [`IN_FLIGHT_SPIN`] before it parks, whatever the strategy: the
    /// notify is at most the rest of a write away, and a park would cost
    /// a wake-up through the kernel (tens of microseconds across cores).
    pub fn wait_for<T, E>(
        &self,
        timeout: Duration,
        strategy: WaitStrategy,
        mut attempt: impl FnMut() -> Result<Attempt<T>, E>,
    ) -> Result<Option<T>, E> {
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            // Read before the attempt: a notify after this load changes it.
            let seq = self.seq.load(Ordering::SeqCst);
            let in_flight = match attempt()? {
                Attempt::Ready(value) => return Ok(Some(value)),
                Attempt::Pending => false,
                Attempt::InFlight => true,
            };
            if timeout.is_zero() {
                return Ok(None);
            }
            let now = Instant::now();
            let remaining = match *deadline.get_or_insert_with(|| now.checked_add(timeout)) {
                Some(deadline) => match deadline.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
                None => None,
            };
            let budget = match strategy {
                WaitStrategy::SpinThenPark { budget } => budget,
                WaitStrategy::Park => Duration::ZERO,
            };
            let budget = if in_flight { budget.max(IN_FLIGHT_SPIN) } else { budget };
            if !budget.is_zero() {
                let budget = remaining.map_or(budget, |left| left.min(budget));
                self.spinners.fetch_add(1, Ordering::SeqCst);
                let spun = self.counted(&mut attempt).map(|ready| match ready {
                    Some(value) => Some(Some(value)),
                    None => spin_while_unchanged(&self.seq, seq, budget).then_some(None),
                });
                self.spinners.fetch_sub(1, Ordering::SeqCst);
                match spun? {
                    Some(Some(value)) => return Ok(Some(value)),
                    Some(None) => continue,
                    None => {}
                }
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let ready = self.counted(&mut attempt).inspect(|ready| {
                if ready.is_none() && self.seq.load(Ordering::SeqCst) == seq {
                    wait(&self.seq, seq, remaining);
                }
            });
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if let Some(value) = ready? {
                return Ok(Some(value));
            }
        }
    }

    /// The look a waiter takes once it is counted in the cell: a change made
    /// before a notifier could see the count was not announced to it.
    fn counted<T, E>(&self, attempt: &mut impl FnMut() -> Result<Attempt<T>, E>) -> Result<Option<T>, E> {
        // Pairs with the fence in `notify` (see there).
        std::sync::atomic::fence(Ordering::SeqCst);
        Ok(match attempt()? {
            Attempt::Ready(value) => Some(value),
            Attempt::Pending | Attempt::InFlight => None,
        })
    }
}

/// Spins until `word` differs from `seen` (true) or `budget` passes (false).
fn spin_while_unchanged(word: &AtomicU32, seen: u32, budget: Duration) -> bool {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        // Acquire is enough to observe the change; the caller re-checks the
        // real condition under the store's lock anyway.
        if word.load(Ordering::Acquire) != seen {
            return true;
        }
        spins += 1;
        if spins % 16 == 0 {
            if start.elapsed() >= budget {
                return false;
            }
            // Give the CPU away: on a shared core the notifier may be the
            // very process we would otherwise keep from running.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Sleeps while `word == expected`, for at most `timeout` (`None`: no limit).
/// Returns on a wake, a timeout, a signal or a changed word alike; callers
/// re-check their condition.
#[doc(hidden)]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout
        .map(|t| futex::Timespec { tv_sec: t.as_secs().min(i64::MAX as u64) as i64, tv_nsec: t.subsec_nanos() as _ });
    // Flags::empty(), not PRIVATE: the word is shared between processes.
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wakes every process sleeping on `word`.
#[doc(hidden)]
pub fn wake_all(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}
