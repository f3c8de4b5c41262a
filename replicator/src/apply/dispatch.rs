//! The dispatcher: local THL in, work for the apply channels out.
//!
//! [`run`] starts one thread per channel (`channel.rs`), tails the THL
//! from the lowest stored row + 1, reassembles fragments and hands every
//! whole transaction to the pure [`Scheduler`] (`plan.rs`), which says
//! whether to pass over it (applied before a restart), send it to its
//! channel's queue (bounded in transactions and in bytes), or first wait
//! until every channel has committed what it was sent (serialized
//! transactions). Transactions leave [`Prepared`] (row events with table
//! ids from one [`TableIds`] for every channel, or SQL), and the channels
//! share one [`channel::Gate`] (`--active-channels`). Channels'
//! [`Report`]s come back on one queue; from them the scheduler keeps the
//! low-water mark, which is published as [`ApplyProgress`], and the
//! checkpoints sent to idle channels. On a stop request (now, at a seqno,
//! or the catch-up limit) it stops reading, waits until every channel has
//! committed, checkpoints every row to the low-water mark (so a clean stop
//! leaves all rows equal) and returns it. A channel's failure aborts the
//! others and is returned.

use super::catalog::Mark;
use super::channel::{self, Prepared, Report, Work};
use super::plan::{route, Admit, Scheduler};
use super::rowevents::TableIds;
use super::{ApplierConfig, ApplyError, ApplyProgress};
use crate::extract::StopRequest;
use crate::thl::{now_us, DurableWatch, Reassembler, Tail, ThlEvent, ThlReader};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long the dispatcher waits for the THL when every channel is idle.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long it waits for a report when channels are busy and the THL has
/// nothing new.
const BUSY_WAIT: Duration = Duration::from_millis(2);
/// Idle channels lagging the low-water mark are checkpointed at least this
/// often when the THL is quiet.
const QUIET_CHECKPOINT: Duration = Duration::from_secs(1);
/// Bytes of row changes (row events or SQL; the decoded transactions take
/// about as much again) a channel may hold, queued or being applied,
/// before the dispatcher waits for it to commit some: the queues are
/// bounded in transactions too, but a backlog of large transactions must
/// not fill memory. A channel with nothing queued always takes one.
const CHANNEL_BYTES: usize = 32 << 20;

/// How many of `n` channels may apply at once for the setting `active`
/// (0: one per CPU core of this host).
pub fn active_channels(active: usize, n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    match active {
        0 => cores,
        a => a,
    }
    .clamp(1, n.max(1))
}

/// One run of the channels.
pub struct Run<'a> {
    /// Settings.
    pub cfg: &'a ApplierConfig,
    /// Stored row seqno per channel (their count is the channel count).
    pub pos: Vec<i64>,
    /// The mark of the lowest row (where reading resumes).
    pub base: Mark,
    /// Stop once the low-water mark reaches this (catch-up before a
    /// channel-count change), whatever `stop` says.
    pub until: Option<i64>,
}

/// Applies until stopped, the writer closes, `until` is reached, or a
/// channel fails. Returns the low-water mark.
pub fn run(
    r: Run<'_>,
    durable: &DurableWatch,
    stop: &watch::Receiver<StopRequest>,
    progress: &watch::Sender<ApplyProgress>,
) -> Result<i64, ApplyError> {
    let n = r.pos.len().max(1);
    let cap = 5 * r.cfg.block_commit.max(1);
    let abort = AtomicBool::new(false);
    let gate = channel::Gate::new(active_channels(r.cfg.active_channels, n));
    std::thread::scope(|scope| {
        let (rep_tx, rep_rx) = mpsc::channel();
        let mut queues = Vec::with_capacity(n);
        for id in 0..n {
            let (tx, rx) = mpsc::sync_channel(cap);
            let reports = rep_tx.clone();
            let (cfg, abort, gate) = (r.cfg, &abort, &gate);
            let spawned = std::thread::Builder::new()
                .name(format!("apply-{}-{id}", r.cfg.service))
                .spawn_scoped(scope, move || {
                    channel::run(cfg, id, rx, reports, abort, gate)
                });
            if let Err(e) = spawned {
                abort.store(true, Ordering::SeqCst);
                return Err(ApplyError::Database {
                    addr: r.cfg.target.addr(),
                    error: format!("cannot start apply channel {id}: {e}"),
                });
            }
            queues.push(tx);
        }
        drop(rep_tx);
        let mut d = Dispatcher {
            sched: Scheduler::new(
                r.pos.clone(),
                r.cfg.block_commit.max(1) as u64,
                (10 * r.cfg.block_commit.max(1) * n).max(1000) as u64,
            ),
            marks: VecDeque::from([r.base.clone()]),
            queues,
            reports: rep_rx,
            progress,
            published: None,
            last_quiet_checkpoint: Instant::now(),
            table_ids: TableIds::default(),
            held: vec![0; n],
        };
        let out = d.run(r.cfg, r.until, durable, stop);
        if out.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        // closing the queues ends the channel threads; the scope joins them
        drop(d);
        out
    })
}

struct Dispatcher<'a> {
    sched: Scheduler,
    /// Marks of the transactions from the low-water mark on, in order.
    marks: VecDeque<Mark>,
    queues: Vec<SyncSender<Work>>,
    reports: Receiver<Report>,
    progress: &'a watch::Sender<ApplyProgress>,
    published: Option<i64>,
    last_quiet_checkpoint: Instant,
    /// Table ids of the row events built for the channels.
    table_ids: TableIds,
    /// Bytes of row changes each channel holds (see [`CHANNEL_BYTES`]).
    held: Vec<usize>,
}

impl Dispatcher<'_> {
    fn run(
        &mut self,
        cfg: &ApplierConfig,
        until: Option<i64>,
        durable: &DurableWatch,
        stop: &watch::Receiver<StopRequest>,
    ) -> Result<i64, ApplyError> {
        let reader = ThlReader::open(&cfg.thl_dir)?;
        let from = match self.sched.restart_seqno() {
            0 => reader.first_seqno().unwrap_or(0),
            s => s as u64,
        };
        let n = self.sched.channels();
        tracing::info!(
            service = %cfg.service, from, channels = n,
            active_channels = active_channels(cfg.active_channels, n), "applier starting"
        );
        self.publish(true);
        let mut tail = reader.tail(from, durable.clone());
        let mut asm = Reassembler::default();
        loop {
            self.drain(Duration::ZERO)?;
            let last = self.sched.last_seen();
            let stop_at = match *stop.borrow() {
                StopRequest::Now => break,
                StopRequest::AtSeqno(s) => Some(s as i64),
                StopRequest::Run => None,
            };
            let limit = match (stop_at, until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if limit.is_some_and(|l| last >= l) {
                break;
            }
            let wait = if self.sched.idle() {
                IDLE_WAIT
            } else {
                Duration::ZERO
            };
            let Some(tx) = next_tx(&mut tail, &mut asm, wait)? else {
                if durable.is_closed() && !asm.is_pending() {
                    // everything durable has been read
                    break;
                }
                if !self.sched.idle() {
                    self.drain(BUSY_WAIT)?;
                }
                let force = self.last_quiet_checkpoint.elapsed() >= QUIET_CHECKPOINT;
                self.checkpoint(force)?;
                continue;
            };
            let rt = route(&tx.shard, channel::has_statements(&tx), n);
            loop {
                match self.sched.admit(tx.seqno, rt) {
                    Admit::Wait => self.drain(BUSY_WAIT)?,
                    Admit::AlreadyApplied => {
                        self.sched.passed(tx.seqno);
                        self.marks.push_back(Mark::of(&tx));
                        break;
                    }
                    Admit::Send(c) => {
                        let (seqno, mark) = (tx.seqno, Mark::of(&tx));
                        let work = Work::Tx(Prepared::new(cfg, &mut self.table_ids, tx));
                        self.send(c, work)?;
                        self.sched.sent(seqno, c, rt.serialized);
                        self.marks.push_back(mark);
                        break;
                    }
                }
            }
            self.checkpoint(false)?;
        }
        self.finish()
    }

    /// Waits until every channel has committed, then checkpoints every
    /// row to the low-water mark.
    fn finish(&mut self) -> Result<i64, ApplyError> {
        while !self.sched.idle() {
            self.drain(Duration::from_millis(50))?;
        }
        self.checkpoint(true)?;
        while !self.sched.quiet() {
            self.drain(Duration::from_millis(50))?;
        }
        self.publish(false);
        Ok(self.sched.low_water())
    }

    /// Sends the checkpoints the scheduler asks for.
    fn checkpoint(&mut self, force: bool) -> Result<(), ApplyError> {
        self.prune();
        if force {
            self.last_quiet_checkpoint = Instant::now();
        }
        for (c, w) in self.sched.checkpoints(force) {
            let mark = match self.marks.front() {
                Some(m) if m.seqno == w => m.clone(),
                _ => Mark {
                    seqno: w,
                    epoch: -1,
                    ..Mark::default()
                },
            };
            self.send(c, Work::Checkpoint(mark))?;
        }
        Ok(())
    }

    /// Drops the marks below the low-water mark.
    fn prune(&mut self) {
        let w = self.sched.low_water();
        while self.marks.len() > 1 && self.marks.get(1).is_some_and(|m| m.seqno <= w) {
            self.marks.pop_front();
        }
    }

    /// Queues work for a channel, handling reports while its queue is full.
    fn send(&mut self, c: usize, mut w: Work) -> Result<(), ApplyError> {
        let bytes = match &w {
            Work::Tx(p) => p.bytes(),
            Work::Checkpoint(_) => 0,
        };
        loop {
            if self.held[c] > 0 && self.held[c] + bytes > CHANNEL_BYTES {
                self.drain(BUSY_WAIT)?;
                continue;
            }
            match self.queues[c].try_send(w) {
                Ok(()) => {
                    self.held[c] += bytes;
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => {
                    w = back;
                    self.drain(BUSY_WAIT)?;
                }
                Err(TrySendError::Disconnected(_)) => {
                    // its failure report is on the way
                    self.drain(Duration::from_secs(5))?;
                    return Err(ApplyError::Database {
                        addr: String::new(),
                        error: format!("apply channel {c} stopped"),
                    });
                }
            }
        }
    }

    /// Handles the reports that arrive within `wait` (at least those
    /// already queued); publishes progress when the low-water mark moved.
    fn drain(&mut self, wait: Duration) -> Result<(), ApplyError> {
        let mut committed = 0;
        let mut first = true;
        loop {
            let rep = if first && !wait.is_zero() {
                match self.reports.recv_timeout(wait) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(ApplyError::Database {
                            addr: String::new(),
                            error: "every apply channel stopped".into(),
                        })
                    }
                }
            } else {
                match self.reports.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            first = false;
            match rep {
                Report::Committed {
                    channel,
                    mark,
                    transactions,
                    done,
                } => {
                    self.sched.committed(channel, mark.seqno);
                    committed += transactions;
                    let freed: usize = done.iter().map(Prepared::bytes).sum();
                    if let Some(h) = self.held.get_mut(channel) {
                        *h = h.saturating_sub(freed);
                    }
                    drop(done);
                }
                Report::Failed { channel, error } => {
                    tracing::error!(channel, %error, "apply channel failed");
                    return Err(error);
                }
            }
        }
        if committed > 0 {
            self.progress.send_modify(|p| p.transactions += committed);
        }
        self.publish(false);
        Ok(())
    }

    /// Publishes the low-water mark when it moved (or always).
    fn publish(&mut self, always: bool) {
        let w = self.sched.low_water();
        if !always && self.published == Some(w) {
            return;
        }
        self.published = Some(w);
        self.prune();
        let Some(m) = self.marks.front().filter(|m| m.seqno == w && w >= 0) else {
            if always {
                self.progress.send_modify(|p| p.applied_seqno = None);
            }
            return;
        };
        let lat = if m.source_tstamp > 0 {
            ((now_us() - m.source_tstamp) as f64 / 1e6).max(0.0)
        } else {
            0.0
        };
        let m = m.clone();
        self.progress.send_modify(|p| {
            p.applied_seqno = Some(m.seqno as u64);
            p.applied_eventid = (!m.eventid.is_empty()).then(|| m.eventid.clone());
            p.applied_epoch = (m.epoch >= 0).then_some(m.epoch as u64);
            if m.source_tstamp > 0 {
                p.applied_latency = lat;
                p.source_tstamp_us = m.source_tstamp;
            }
        });
    }
}

/// The next whole transaction, waiting up to `wait` for its first record
/// (and up to 5 s for each further fragment). `None`: nothing yet.
fn next_tx(
    tail: &mut Tail,
    asm: &mut Reassembler,
    wait: Duration,
) -> Result<Option<ThlEvent>, ApplyError> {
    let mut wait = wait;
    loop {
        let Some(rec) = tail.next(wait)? else {
            return Ok(None);
        };
        if let Some(tx) = asm.push(rec)? {
            return Ok(Some(tx));
        }
        wait = Duration::from_secs(5);
    }
}
