//! The applier's decisions (pure: no IO, no clocks).
//!
//! Transactions enter [`Scheduler::admit`] in seqno order with their
//! [`Route`] (from [`route`]: the channel by a stable hash of the shard,
//! or serialized on channel 0); out comes what the dispatcher must do:
//! pass over it (already applied before a restart), send it to a channel,
//! or first wait for commits (until every channel has committed everything
//! before a serialized one, or while it is more than a window ahead of the
//! low-water mark).
//! Channels' commits come back through [`Scheduler::committed`]; the
//! scheduler answers with the low-water mark ([`Scheduler::low_water`]:
//! every transaction at or below it is committed) and the checkpoints
//! idle channels should write ([`Scheduler::checkpoints`]). At start,
//! [`plan_catalog`] turns the rows stored in `trep_commit_seqno` into
//! the way to resume (same channel count, reshape, or catch up first).
//!
//! Restart rule: channel `c`'s row holds the seqno of the last transaction
//! of that channel committed (or a checkpoint, see below); the log is
//! re-read from the lowest row + 1, and a transaction at seqno `s` routed
//! to channel `c` is applied iff `s > pos[c]`. Every channel commits its
//! own transactions in seqno order, so this is exactly once. A checkpoint
//! moves an idle channel's row up to the low-water mark `W`: valid because
//! every transaction ≤ `W` is committed, whichever its channel.

use crate::extract::UNKNOWN_SHARD;
use std::collections::VecDeque;

/// Where a transaction is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Channel number (0 for serialized transactions).
    pub channel: usize,
    /// Applied alone, after everything before it and before anything after.
    pub serialized: bool,
}

/// Channel of a shard: crc32c of its name, mixed by murmur3's 64-bit
/// finalizer, modulo `channels` (stable across runs and builds, unlike
/// `RandomState`). The mixing matters: the low bits of a CRC are linear in
/// the input, so names that differ in one character (`sb1`, `sb2`, `sb4`)
/// would share a channel.
pub fn channel_of(shard: &str, channels: usize) -> usize {
    if channels <= 1 {
        return 0;
    }
    (fmix64(u64::from(crc32c::crc32c(shard.as_bytes()))) % channels as u64) as usize
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The route of a transaction: serialized (on channel 0) when its shard is
/// unknown (several schemas, or none) or it holds statements (DDL), else
/// the channel of its shard.
pub fn route(shard: &str, has_statements: bool, channels: usize) -> Route {
    if shard == UNKNOWN_SHARD || shard.is_empty() || has_statements {
        Route {
            channel: 0,
            serialized: true,
        }
    } else {
        Route {
            channel: channel_of(shard, channels),
            serialized: false,
        }
    }
}

/// What to do with the next transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Committed before a restart (`s <= pos[channel]`): pass over it.
    AlreadyApplied,
    /// Send it to this channel now.
    Send(usize),
    /// Wait for commits first: a serialized transaction is in flight, or
    /// this one is serialized and others are in flight, or it is more than
    /// the window ahead of the low-water mark (a stuck channel must not
    /// let the others run arbitrarily far ahead).
    Wait,
}

/// The dispatcher's bookkeeping: what each channel has been sent and has
/// committed.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// Seqno stored in each channel's row (-1 = none).
    pos: Vec<i64>,
    /// Seqnos sent to each channel and not committed yet, in order.
    pending: Vec<VecDeque<u64>>,
    /// A checkpoint sent to the channel and not yet acknowledged.
    checkpoint: Vec<Option<i64>>,
    /// Highest seqno passed over or sent.
    last_seen: i64,
    /// A serialized transaction in flight.
    serialized: Option<u64>,
    /// An idle channel is checkpointed once it lags `W` by this much.
    gap: u64,
    /// Most transactions sent beyond the low-water mark.
    window: u64,
}

impl Scheduler {
    /// A scheduler resuming from the stored rows (one per channel); the
    /// log is read again from `min(pos) + 1`. Idle channels are
    /// checkpointed when `gap` behind; nothing is sent more than `window`
    /// ahead of the low-water mark.
    pub fn new(pos: Vec<i64>, gap: u64, window: u64) -> Self {
        let n = pos.len().max(1);
        let mut pos = pos;
        pos.resize(n, -1);
        let last_seen = pos.iter().copied().min().unwrap_or(-1);
        Scheduler {
            pos,
            pending: vec![VecDeque::new(); n],
            checkpoint: vec![None; n],
            last_seen,
            serialized: None,
            gap: gap.max(1),
            window: window.max(1),
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.pos.len()
    }

    /// The first seqno to read from the log.
    pub fn restart_seqno(&self) -> i64 {
        self.pos.iter().copied().min().unwrap_or(-1) + 1
    }

    /// Highest seqno passed over or sent so far.
    pub fn last_seen(&self) -> i64 {
        self.last_seen
    }

    /// Stored row seqno of each channel as far as the scheduler knows.
    pub fn positions(&self) -> &[i64] {
        &self.pos
    }

    /// True when nothing sent is uncommitted (checkpoints aside).
    pub fn idle(&self) -> bool {
        self.pending.iter().all(VecDeque::is_empty)
    }

    /// True when nothing sent, checkpoints included, is unacknowledged.
    pub fn quiet(&self) -> bool {
        self.idle() && self.checkpoint.iter().all(Option::is_none)
    }

    /// Decides about the transaction at `seqno` (the next in the log).
    pub fn admit(&self, seqno: u64, r: Route) -> Admit {
        let channel = r.channel.min(self.pos.len() - 1);
        if (seqno as i64) <= self.pos[channel] {
            return Admit::AlreadyApplied;
        }
        if self.serialized.is_some()
            || (r.serialized && !self.idle())
            || seqno as i64 - self.low_water() > self.window as i64
        {
            return Admit::Wait;
        }
        Admit::Send(channel)
    }

    /// Records that the transaction at `seqno` was passed over.
    pub fn passed(&mut self, seqno: u64) {
        self.last_seen = self.last_seen.max(seqno as i64);
    }

    /// Records that the transaction at `seqno` was sent to `channel`.
    pub fn sent(&mut self, seqno: u64, channel: usize, serialized: bool) {
        self.pending[channel].push_back(seqno);
        if serialized {
            self.serialized = Some(seqno);
        }
        self.last_seen = self.last_seen.max(seqno as i64);
    }

    /// Records that `channel` committed everything it was sent up to
    /// `seqno` (its row now holds `seqno`), a block or a checkpoint.
    pub fn committed(&mut self, channel: usize, seqno: i64) {
        let Some(q) = self.pending.get_mut(channel) else {
            return;
        };
        while q.front().is_some_and(|&s| s as i64 <= seqno) {
            q.pop_front();
        }
        if self.checkpoint[channel].is_some_and(|c| c <= seqno) {
            self.checkpoint[channel] = None;
        }
        self.pos[channel] = self.pos[channel].max(seqno);
        if self.serialized.is_some_and(|s| s as i64 <= seqno) {
            self.serialized = None;
        }
    }

    /// The low-water mark: every transaction at or below it is committed.
    pub fn low_water(&self) -> i64 {
        self.pending
            .iter()
            .filter_map(|q| q.front())
            .map(|&s| s as i64 - 1)
            .min()
            .unwrap_or(self.last_seen)
    }

    /// Checkpoints to send now, `(channel, W)`: to every idle channel with
    /// no checkpoint in flight whose row lags the low-water mark `W` by at
    /// least the gap (by anything when `force`). Marks them in flight.
    pub fn checkpoints(&mut self, force: bool) -> Vec<(usize, i64)> {
        let w = self.low_water();
        let mut out = Vec::new();
        for c in 0..self.pos.len() {
            let lag = w - self.pos[c];
            let due = if force {
                lag > 0
            } else {
                lag >= self.gap as i64
            };
            if due && self.pending[c].is_empty() && self.checkpoint[c].is_none() {
                self.checkpoint[c] = Some(w);
                out.push((c, w));
            }
        }
        out
    }
}

/// One row of `trep_commit_seqno` as far as planning goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Channel number.
    pub task_id: u32,
    /// Last applied seqno of the channel (-1 = none).
    pub seqno: i64,
}

/// How to resume from the stored rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogPlan {
    /// One row per channel already: resume with these positions.
    Resume(Vec<i64>),
    /// Every row holds the same seqno (or there are none): make it exactly
    /// `channels` rows copying the row `like`, then resume from it.
    Reshape {
        /// task_id of the row to copy.
        like: u32,
        /// Its seqno.
        seqno: i64,
    },
    /// The rows differ and their count is not the channel count: apply
    /// with the old count (and so the old mapping) up to `until` (the
    /// highest row), which leaves every row at `until`; then reshape.
    CatchUp {
        /// The stored channel count.
        old: usize,
        /// Positions per old channel.
        pos: Vec<i64>,
        /// Highest stored seqno.
        until: i64,
    },
    /// The rows cannot be read as channels.
    Invalid(String),
}

/// Plans the start of a run with `channels` channels from the stored rows.
pub fn plan_catalog(rows: &[StoredRow], channels: usize) -> CatalogPlan {
    let mut rows: Vec<&StoredRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.task_id);
    if rows.is_empty() {
        return CatalogPlan::Invalid("trep_commit_seqno has no row".into());
    }
    if rows
        .iter()
        .enumerate()
        .any(|(i, r)| r.task_id as usize != i)
    {
        let ids: Vec<String> = rows.iter().map(|r| r.task_id.to_string()).collect();
        return CatalogPlan::Invalid(format!(
            "trep_commit_seqno has rows for task_id {} (expected 0..{}): \
             set every row to one position with dsctl set, or forget it with dsctl reset",
            ids.join(","),
            rows.len() - 1
        ));
    }
    let pos: Vec<i64> = rows.iter().map(|r| r.seqno).collect();
    let min = pos.iter().copied().min().unwrap_or(-1);
    let max = pos.iter().copied().max().unwrap_or(-1);
    if pos.len() == channels {
        CatalogPlan::Resume(pos)
    } else if min == max {
        CatalogPlan::Reshape {
            like: 0,
            seqno: max,
        }
    } else {
        CatalogPlan::CatchUp {
            old: pos.len(),
            pos,
            until: max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(c: usize) -> Route {
        Route {
            channel: c,
            serialized: false,
        }
    }

    const SER: Route = Route {
        channel: 0,
        serialized: true,
    };

    #[test]
    fn channel_is_a_stable_hash() {
        // fixed values, whatever the process or build: a changed hash
        // would break the restart rule of existing replicas
        assert_eq!(channel_of("anything", 1), 0);
        assert_eq!(
            fmix64(u64::from(crc32c::crc32c(b"app"))),
            0x172a_8bbe_9e2f_7d47
        );
        let c: Vec<usize> = ["sb1", "sb2", "sb3", "sb4", "sb7"]
            .iter()
            .map(|s| channel_of(s, 4))
            .collect();
        assert_eq!(c, vec![1, 2, 3, 3, 0]);
        // raw crc32c mod 4 would put sb1, sb2 and sb4 together
        let raw: Vec<u32> = ["sb1", "sb2", "sb4"]
            .iter()
            .map(|s| crc32c::crc32c(s.as_bytes()) % 4)
            .collect();
        assert!(raw.iter().all(|&x| x == raw[0]));
        let spread = (0..1000)
            .map(|i| channel_of(&format!("tenant{i}"), 8))
            .fold([0u32; 8], |mut a, c| {
                a[c] += 1;
                a
            });
        assert!(spread.iter().all(|&n| n > 90), "{spread:?}");
    }

    #[test]
    fn unknown_shards_and_statements_are_serialized() {
        assert_eq!(route(UNKNOWN_SHARD, false, 4), SER);
        assert_eq!(route("", false, 4), SER);
        assert_eq!(route("app", true, 4), SER);
        let a = route("app", false, 4);
        assert!(!a.serialized);
        assert_eq!(a.channel, channel_of("app", 4));
    }

    #[test]
    fn low_water_is_the_first_uncommitted_minus_one() {
        let mut s = Scheduler::new(vec![9, 9], 100, 1000);
        assert_eq!(s.low_water(), 9);
        assert_eq!(s.restart_seqno(), 10);
        s.sent(10, 0, false);
        s.sent(11, 1, false);
        s.sent(12, 0, false);
        assert_eq!(s.low_water(), 9);
        s.committed(1, 11);
        assert_eq!(s.low_water(), 9, "10 is still open on channel 0");
        s.committed(0, 10);
        assert_eq!(s.low_water(), 11);
        s.committed(0, 12);
        assert_eq!(s.low_water(), 12);
        assert!(s.idle());
        s.passed(13);
        assert_eq!(s.low_water(), 13);
    }

    #[test]
    fn serialized_waits_for_everything_before_and_blocks_what_follows() {
        let mut s = Scheduler::new(vec![-1, -1], 100, 1000);
        assert_eq!(s.admit(0, r(1)), Admit::Send(1));
        s.sent(0, 1, false);
        assert_eq!(s.admit(1, SER), Admit::Wait);
        s.committed(1, 0);
        assert_eq!(s.admit(1, SER), Admit::Send(0));
        s.sent(1, 0, true);
        assert_eq!(s.admit(2, r(1)), Admit::Wait, "after the DDL commits");
        s.committed(0, 1);
        assert_eq!(s.admit(2, r(1)), Admit::Send(1));
    }

    #[test]
    fn nothing_is_sent_beyond_the_window() {
        let mut s = Scheduler::new(vec![-1, -1], 100, 4);
        s.sent(0, 0, false);
        for q in 1..=3 {
            assert_eq!(s.admit(q, r(1)), Admit::Send(1));
            s.sent(q, 1, false);
            s.committed(1, q as i64);
        }
        assert_eq!(s.low_water(), -1, "seqno 0 is stuck on channel 0");
        assert_eq!(s.admit(4, r(1)), Admit::Wait);
        s.committed(0, 0);
        assert_eq!(s.admit(4, r(1)), Admit::Send(1));
    }

    #[test]
    fn restart_filter_uses_the_channel_row() {
        // channel 0 committed up to 20, channel 1 up to 15: read from 16
        let s = Scheduler::new(vec![20, 15], 100, 1000);
        assert_eq!(s.restart_seqno(), 16);
        assert_eq!(s.admit(16, r(0)), Admit::AlreadyApplied);
        assert_eq!(s.admit(16, r(1)), Admit::Send(1));
        assert_eq!(s.admit(18, SER), Admit::AlreadyApplied);
        assert_eq!(s.admit(21, r(0)), Admit::Send(0));
        // a channel number beyond the rows is clamped (never panics)
        assert_eq!(s.admit(21, r(7)), Admit::Send(1));
    }

    #[test]
    fn idle_channels_are_checkpointed_to_the_low_water_mark() {
        let mut s = Scheduler::new(vec![-1, -1, -1], 3, 1000);
        for q in 0..10 {
            s.sent(q, 0, false);
        }
        s.committed(0, 9);
        assert_eq!(s.low_water(), 9);
        let c = s.checkpoints(false);
        assert_eq!(c, vec![(1, 9), (2, 9)]);
        assert!(s.checkpoints(true).is_empty(), "already in flight");
        assert!(!s.quiet());
        s.committed(1, 9);
        s.committed(2, 9);
        assert!(s.quiet());
        assert_eq!(s.positions(), &[9, 9, 9]);
        // small lags only when forced; a busy channel is never checkpointed
        s.sent(10, 0, false);
        s.sent(11, 1, false);
        s.committed(0, 10);
        assert_eq!(s.low_water(), 10);
        assert!(s.checkpoints(false).is_empty());
        assert_eq!(s.checkpoints(true), vec![(2, 10)]);
    }

    fn rows(seqnos: &[i64]) -> Vec<StoredRow> {
        seqnos
            .iter()
            .enumerate()
            .map(|(i, &seqno)| StoredRow {
                task_id: i as u32,
                seqno,
            })
            .collect()
    }

    #[test]
    fn catalog_plans() {
        assert_eq!(
            plan_catalog(&rows(&[5, 3]), 2),
            CatalogPlan::Resume(vec![5, 3])
        );
        assert_eq!(
            plan_catalog(&rows(&[-1]), 4),
            CatalogPlan::Reshape { like: 0, seqno: -1 }
        );
        assert_eq!(
            plan_catalog(&rows(&[7, 7, 7, 7]), 2),
            CatalogPlan::Reshape { like: 0, seqno: 7 }
        );
        assert_eq!(
            plan_catalog(&rows(&[7, 9, 8, 7]), 2),
            CatalogPlan::CatchUp {
                old: 4,
                pos: vec![7, 9, 8, 7],
                until: 9
            }
        );
        let gap = [
            StoredRow {
                task_id: 0,
                seqno: 1,
            },
            StoredRow {
                task_id: 2,
                seqno: 1,
            },
        ];
        assert!(matches!(plan_catalog(&gap, 2), CatalogPlan::Invalid(m) if m.contains("0,2")));
        assert!(matches!(plan_catalog(&[], 2), CatalogPlan::Invalid(_)));
    }
}
