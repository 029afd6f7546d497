//! Windows over a stream, after omega|ml's minibatch emitters, computed from
//! offsets and append times in the file rather than by polling a database.
//!
//! The rules, one per [`WindowKind`]:
//!
//! - **Count, batches** (`WindowKind::Batches(n)`): each window holds the
//!   next `n` batches in the order the consumer polls them. When the stream
//!   ends, the batches left over (fewer than `n`) form one last window.
//! - **Count, rows** (`WindowKind::Rows(n)`): each window holds exactly `n`
//!   rows; a batch that straddles two windows is sliced (zero-copy) between
//!   them. The rows left at the end form one last, shorter window.
//! - **Fixed time** (`WindowKind::FixedTime(interval)`): window `k` holds
//!   every batch whose append time lies in
//!   `[created + k × interval, created + (k + 1) × interval)`, where
//!   `created` is the stream's creation time. Every batch is in exactly one
//!   window. The first window is the one holding the first batch read; from
//!   there every window is emitted in turn, empty ones included. A window is
//!   complete once the clock has passed its end and every batch appended
//!   before then has been read (append times are taken under the same lock
//!   that assigns offsets, so "appended before then" is exactly "below the
//!   heads seen then"). When the stream ends, windows run up to the one
//!   holding the last batch; there are no trailing empty windows.
//! - **Relaxed time** (`WindowKind::RelaxedTime(interval)`): windows close
//!   `interval` apart, counted from when the loop starts; each holds
//!   everything not yet processed that was appended before its end. A
//!   window cut after its end (the loop fell behind, or `run_once` ran
//!   late) ends when it is cut, so it takes everything appended until then.
//!   Empty windows are not emitted.
//!
//! Delivery: [`Windows::apply`] hands each window to a function and commits
//! the window's offsets for the consumer's group when it returns `Ok`. When
//! it fails, the same window is delivered again (count and fixed windows,
//! with `attempt` raised), or its batches are put back in front of what
//! comes next (relaxed windows). A crash before the commit re-delivers on
//! restart: at least once. [`Windows::run_once`] runs one cycle without
//! blocking; a [`StopHandle`] ends `apply`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::consumer::{Consumer, Polled, StreamBatch};
use super::Result;
use super::StreamError;
use crate::shm::clock::wall_ns;

/// How a stream is cut into windows (the rules are in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Exactly this many batches per window.
    Batches(usize),
    /// Exactly this many rows per window.
    Rows(usize),
    /// Consecutive fixed intervals from the stream's creation.
    FixedTime(Duration),
    /// Everything not yet processed, every interval.
    RelaxedTime(Duration),
}

/// One window, as the function given to [`Windows::apply`] sees it.
#[derive(Clone, Debug)]
pub struct Window {
    /// Count and relaxed windows: the window's number in this loop, from 0.
    /// Fixed time windows: the interval's number since the stream's creation.
    pub index: u64,
    /// Time windows: the window's start (fixed) and end, nanoseconds since
    /// the Unix epoch. Relaxed windows have no start.
    pub start_ns: Option<u64>,
    /// See `start_ns`.
    pub end_ns: Option<u64>,
    /// The batches, in the order they were read (by offset within each
    /// partition). Row windows may hold slices of batches.
    pub batches: Vec<StreamBatch>,
    /// 1 on the first delivery, 2 on the second, ...
    pub attempt: u32,
}

impl Window {
    /// Rows in the window.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.batch.num_rows()).sum()
    }

    /// Whether the window holds no batch (fixed time windows can be empty).
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// What one cycle did.
#[derive(Debug)]
pub enum WindowOutcome<E> {
    /// A window was handed over, processed and committed.
    Applied {
        /// Its index.
        index: u64,
    },
    /// A window was handed over and the function failed; it will be
    /// delivered again.
    Failed {
        /// Its index.
        index: u64,
        /// What the function returned.
        error: E,
    },
    /// No window is complete yet.
    NotReady,
    /// The stream ended and every window has been processed.
    End,
}

/// Totals of an [`apply`](Windows::apply) loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Windows processed and committed.
    pub windows: u64,
    /// Deliveries whose function failed.
    pub failures: u64,
    /// Batches in the processed windows (a sliced batch counts each time).
    pub batches: u64,
    /// Rows in the processed windows.
    pub rows: u64,
}

/// Ends an [`apply`](Windows::apply) loop from another thread.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the loop to return after the window in hand (within about 50 ms
    /// if it is waiting).
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A batch read but not yet in a processed window, or the rest of one.
struct Piece {
    batch: StreamBatch,
    /// Whether this piece holds the batch's last row.
    last: bool,
}

/// A window ready for delivery, with the offsets to commit once processed.
struct Ready {
    window: Window,
    pieces: Vec<Piece>,
    commits: Vec<(u32, u64)>,
}

/// How long `apply` waits at a time before it looks at its stop handle.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Cuts a consumer's batches into windows and hands them to a function.
pub struct Windows {
    consumer: Consumer,
    kind: WindowKind,
    pending: VecDeque<Piece>,
    retry: Option<Ready>,
    ended: bool,
    /// Fixed time: the next window's number. Count and relaxed: windows made.
    next_index: Option<u64>,
    /// Relaxed time: the end of the next window.
    relaxed_end: Option<u64>,
    stop: StopHandle,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows").field("kind", &self.kind).field("pending", &self.pending.len()).finish()
    }
}

impl Windows {
    /// Windows of `kind` over what `consumer` reads.
    pub fn new(consumer: Consumer, kind: WindowKind) -> Result<Self> {
        let bad = match kind {
            WindowKind::Batches(n) | WindowKind::Rows(n) => n == 0,
            WindowKind::FixedTime(d) | WindowKind::RelaxedTime(d) => d.is_zero() || d.as_nanos() > u64::MAX as u128,
        };
        if bad {
            return Err(StreamError::InvalidConfig(format!("{kind:?}: a window needs a size above zero")));
        }
        Ok(Windows {
            consumer,
            kind,
            pending: VecDeque::new(),
            retry: None,
            ended: false,
            next_index: None,
            relaxed_end: None,
            stop: StopHandle(Arc::new(AtomicBool::new(false))),
        })
    }

    /// A handle that ends [`apply`](Self::apply) from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The consumer underneath.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Hands each window to `f` until the stream ends or the stop handle is
    /// used; commits each window `f` accepts. A failing window is delivered
    /// again after a pause that grows from 10 ms to 1 s.
    pub fn apply<E>(&mut self, mut f: impl FnMut(&Window) -> Result<(), E>) -> Result<WindowStats> {
        let mut stats = WindowStats::default();
        let mut pause = Duration::from_millis(10);
        while !self.stop.is_stopped() {
            match self.cycle(&mut f, STOP_CHECK, &mut stats)? {
                WindowOutcome::End => break,
                WindowOutcome::Failed { .. } => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                WindowOutcome::Applied { .. } => pause = Duration::from_millis(10),
                WindowOutcome::NotReady => {}
            }
        }
        Ok(stats)
    }

    /// Runs one cycle without blocking: reads what is there, and if a window
    /// is complete hands it to `f` (committing it if `f` accepts it).
    pub fn run_once<E>(&mut self, mut f: impl FnMut(&Window) -> Result<(), E>) -> Result<WindowOutcome<E>> {
        self.cycle(&mut f, Duration::ZERO, &mut WindowStats::default())
    }

    fn cycle<E>(
        &mut self,
        f: &mut impl FnMut(&Window) -> Result<(), E>,
        wait: Duration,
        stats: &mut WindowStats,
    ) -> Result<WindowOutcome<E>> {
        let ready = match self.retry.take() {
            Some(ready) => ready,
            None => match self.next_window(Instant::now() + wait)? {
                Some(ready) => ready,
                None if self.ended && self.pending.is_empty() => return Ok(WindowOutcome::End),
                None => return Ok(WindowOutcome::NotReady),
            },
        };
        let index = ready.window.index;
        match f(&ready.window) {
            Ok(()) => {
                if self.consumer.group().is_some() && !ready.commits.is_empty() {
                    self.consumer.commit_offsets(&ready.commits)?;
                }
                stats.windows += 1;
                stats.batches += ready.window.batches.len() as u64;
                stats.rows += ready.window.rows() as u64;
                Ok(WindowOutcome::Applied { index })
            }
            Err(error) => {
                stats.failures += 1;
                if let WindowKind::RelaxedTime(_) = self.kind {
                    for piece in ready.pieces.into_iter().rev() {
                        self.pending.push_front(piece);
                    }
                } else {
                    let mut ready = ready;
                    ready.window.attempt += 1;
                    self.retry = Some(ready);
                }
                Ok(WindowOutcome::Failed { index, error })
            }
        }
    }

    /// Reads one batch into `pending`, waiting until `deadline` at most.
    /// Returns `false` if nothing came.
    fn read_one(&mut self, deadline: Instant) -> Result<bool> {
        if self.ended {
            return Ok(false);
        }
        match self.consumer.poll(deadline.saturating_duration_since(Instant::now()))? {
            Polled::Batch(batch) => {
                self.pending.push_back(Piece { batch, last: true });
                Ok(true)
            }
            Polled::TimedOut => Ok(false),
            Polled::EndOfStream => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    /// Builds the next complete window, reading until `deadline` at most.
    fn next_window(&mut self, deadline: Instant) -> Result<Option<Ready>> {
        match self.kind {
            WindowKind::Batches(n) | WindowKind::Rows(n) => self.count_window(deadline, n),
            WindowKind::FixedTime(interval) => self.fixed_window(deadline, interval.as_nanos() as u64),
            WindowKind::RelaxedTime(interval) => self.relaxed_window(deadline, interval.as_nanos() as u64),
        }
    }

    /// A window of `n` units (batches or rows) of the pending pieces.
    fn count_window(&mut self, deadline: Instant, n: usize) -> Result<Option<Ready>> {
        let by_rows = matches!(self.kind, WindowKind::Rows(_));
        loop {
            let have: usize =
                if by_rows { self.pending.iter().map(|p| p.batch.batch.num_rows()).sum() } else { self.pending.len() };
            if have >= n || (self.ended && !self.pending.is_empty()) {
                break;
            }
            if !self.read_one(deadline)? && (!self.ended || self.pending.is_empty()) {
                return Ok(None);
            }
        }
        let mut pieces = Vec::new();
        let mut need = n;
        while need > 0 {
            let Some(mut piece) = self.pending.pop_front() else { break };
            if !by_rows {
                pieces.push(piece);
                need -= 1;
                continue;
            }
            let rows = piece.batch.batch.num_rows();
            if rows <= need {
                need -= rows;
                pieces.push(piece);
            } else {
                // Split the batch: the first `need` rows now, the rest later.
                let mut head = piece.batch.clone();
                head.batch = piece.batch.batch.slice(0, need);
                piece.batch.batch = piece.batch.batch.slice(need, rows - need);
                self.pending.push_front(piece);
                pieces.push(Piece { batch: head, last: false });
                need = 0;
            }
        }
        let index = self.take_index();
        Ok(Some(self.ready(index, None, None, pieces)))
    }

    /// The fixed time window after the last one, once it is complete.
    fn fixed_window(&mut self, deadline: Instant, interval: u64) -> Result<Option<Ready>> {
        let start = self.consumer.stream().created_ns();
        let index_of = |t: u64| t.saturating_sub(start) / interval;
        let k = loop {
            if let Some(k) = self.next_index {
                break k;
            }
            if self.pending.is_empty() {
                if !self.read_one(deadline)? {
                    return Ok(None);
                }
                continue;
            }
            // The first window is the earliest pending batch's, once every
            // batch appended before now has been read (on any partition).
            if !self.read_to_snapshot(deadline)? {
                return Ok(None);
            }
            if let Some(first) = self.pending.iter().map(|p| p.batch.append_ns).min() {
                self.next_index = Some(index_of(first));
            }
        };
        if self.ended && self.pending.is_empty() {
            return Ok(None);
        }
        let window_start = start.saturating_add(k.saturating_mul(interval));
        let end = window_start.saturating_add(interval);
        if !self.complete_until(deadline, end)? {
            return Ok(None);
        }
        if self.ended && self.pending.is_empty() {
            // The stream ended with the last window: no trailing empty ones.
            return Ok(None);
        }
        let pieces = self.take_before(end);
        self.next_index = Some(k + 1);
        Ok(Some(self.ready(k, Some(window_start), Some(end), pieces)))
    }

    /// The next relaxed time window, once its end has passed; empty ones are
    /// skipped.
    fn relaxed_window(&mut self, deadline: Instant, interval: u64) -> Result<Option<Ready>> {
        loop {
            // A window whose end has passed ends now instead: it takes
            // everything appended up to the moment it is cut.
            let scheduled = *self.relaxed_end.get_or_insert_with(|| wall_ns().saturating_add(interval));
            let end = scheduled.max(wall_ns());
            if self.ended {
                if self.pending.is_empty() {
                    return Ok(None);
                }
            } else if !self.complete_until(deadline, end)? {
                return Ok(None);
            }
            let pieces = if self.ended { self.pending.drain(..).collect() } else { self.take_before(end) };
            self.relaxed_end = Some(end.saturating_add(interval));
            if !pieces.is_empty() {
                let index = self.take_index();
                return Ok(Some(self.ready(index, None, Some(end), pieces)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Reads until every batch appended before `end` is pending: waits for
    /// the clock to pass `end`, then reads up to the heads seen then.
    /// Returns `false` if `deadline` came first. A closed stream is read to
    /// its end instead.
    fn complete_until(&mut self, deadline: Instant, end: u64) -> Result<bool> {
        loop {
            if self.ended {
                return Ok(true);
            }
            let snapshot = self.consumer.snapshot()?;
            let (now, heads, closed) = (snapshot.now_ns, snapshot.heads, snapshot.closed);
            if now >= end || closed {
                while !self.consumer.reached(&heads) && !self.ended {
                    if !self.read_one(deadline)? && !self.ended {
                        return Ok(false);
                    }
                }
                if now >= end {
                    return Ok(true);
                }
                // Closed before the window's end: read to the end of stream.
                if !self.read_one(deadline)? && !self.ended {
                    return Ok(false);
                }
                continue;
            }
            // Read what arrives until the window's end (or the deadline).
            let until = deadline.min(Instant::now() + Duration::from_nanos(end - now));
            if !self.read_one(until)? && Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Reads every batch appended before now (up to the heads a snapshot
    /// sees). Returns `false` if `deadline` came first.
    fn read_to_snapshot(&mut self, deadline: Instant) -> Result<bool> {
        let heads = self.consumer.snapshot()?.heads;
        while !self.consumer.reached(&heads) && !self.ended {
            if !self.read_one(deadline)? && !self.ended {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes the pending pieces appended before `end`, in order.
    fn take_before(&mut self, end: u64) -> Vec<Piece> {
        let (taken, kept): (Vec<Piece>, Vec<Piece>) = self.pending.drain(..).partition(|p| p.batch.append_ns < end);
        self.pending = kept.into();
        taken
    }

    fn take_index(&mut self) -> u64 {
        let index = self.next_index.unwrap_or(0);
        self.next_index = Some(index + 1);
        index
    }

    /// A window of `pieces`, with the offsets to commit once it is processed:
    /// per partition, one past the last batch whose last row is in it.
    fn ready(&self, index: u64, start_ns: Option<u64>, end_ns: Option<u64>, pieces: Vec<Piece>) -> Ready {
        let mut commits: Vec<(u32, u64)> = Vec::new();
        for piece in pieces.iter().filter(|p| p.last) {
            let (p, next) = (piece.batch.partition, piece.batch.offset + 1);
            match commits.iter_mut().find(|(q, _)| *q == p) {
                Some((_, at)) => *at = (*at).max(next),
                None => commits.push((p, next)),
            }
        }
        let batches = pieces.iter().map(|p| p.batch.clone()).collect();
        Ready { window: Window { index, start_ns, end_ns, batches, attempt: 1 }, pieces, commits }
    }
}
