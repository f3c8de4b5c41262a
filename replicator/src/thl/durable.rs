//! The published "last durable transaction" of a writer.
//!
//! The writer [`DurableWatch::publish`]es a [`DurablePos`] after each fsync;
//! tails and other in-process observers `get()` it or block in
//! [`DurableWatch::wait_past`] (a `Condvar`, no polling) until it moves. When
//! the writer is dropped the watch is closed and waiters return.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the durable part of the log ends: a whole transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurablePos {
    /// Seqno of the last durable transaction.
    pub seqno: u64,
    /// Number of the segment file holding its end.
    pub segment: u64,
    /// Offset just past its last record in that file.
    pub offset: u64,
}

#[derive(Debug, Default)]
struct State {
    pos: Option<DurablePos>,
    closed: bool,
}

/// A cloneable handle on a writer's durable position.
#[derive(Debug, Clone, Default)]
pub struct DurableWatch {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl DurableWatch {
    /// A watch starting at `pos`.
    pub fn new(pos: Option<DurablePos>) -> Self {
        let w = DurableWatch::default();
        w.state().pos = pos;
        w
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields; a panic elsewhere cannot leave it torn.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current durable position.
    pub fn get(&self) -> Option<DurablePos> {
        self.state().pos
    }

    /// Seqno of the last durable transaction.
    pub fn seqno(&self) -> Option<u64> {
        self.get().map(|p| p.seqno)
    }

    /// True once the writer is gone.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Publishes a new position and wakes waiters.
    pub fn publish(&self, pos: DurablePos) {
        let mut s = self.state();
        if s.pos != Some(pos) {
            s.pos = Some(pos);
            self.inner.1.notify_all();
        }
    }

    /// Marks the writer gone and wakes waiters.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.1.notify_all();
    }

    /// Blocks until the position differs from `seen`, the watch closes, or
    /// `timeout` passes; returns the position then.
    pub fn wait_past(&self, seen: Option<DurablePos>, timeout: Duration) -> Option<DurablePos> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        while s.pos == seen && !s.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = match self.inner.1.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        s.pos
    }

    /// Blocks until transaction `seqno` is durable (true) or the watch
    /// closes / `timeout` passes (false).
    pub fn wait_for_seqno(&self, seqno: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = self.get();
        loop {
            if seen.is_some_and(|p| p.seqno >= seqno) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.is_closed() {
                return false;
            }
            seen = self.wait_past(seen, deadline - now);
        }
    }
}
