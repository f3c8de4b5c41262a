//! One apply channel: a thread with its own connection to the local
//! database and its own row in `trep_commit_seqno`.
//!
//! [`Work`] enters through the channel's queue from the dispatcher
//! (`dispatch.rs`), in seqno order: transactions, and checkpoints that move
//! the row of an idle channel up to the low-water mark. Transactions come
//! [`Prepared`]: their row changes already row events or SQL, built on
//! the dispatcher's thread while this one waits for the server. The
//! channel applies what is queued in blocks of up to `block_commit`
//! transactions: one database transaction holding the block's row changes
//! and the row update for its last transaction: as row events, `START
//! TRANSACTION`, the block's events joined into one group (`SET
//! @carbide_rows = ?` prepared, then `BINLOG`), and the row update with
//! `COMMIT`; as SQL, one compound statement (one round trip, one answer);
//! see `batch.rs`. A block that fails on a server
//! error is rolled back and replayed statement by statement to name the
//! failing seqno and statement; transactions with statements (DDL) are
//! applied alone, statement by statement. A channel takes its turn at a
//! [`Gate`] shared by the channels before it gathers and applies a block:
//! at most `--active-channels` (default one per CPU core) apply at once,
//! and the others gather bigger blocks meanwhile. A [`Report`] leaves for
//! every block committed and for the failure that stops the channel.

use super::batch::{self, Rows, TxSql};
use super::catalog::{update_row_sql, Mark};
use super::rowevents;
use super::{sql, ApplierConfig, ApplyError, BATCH_BYTES};
use crate::extract::{service_schema, service_tag};
use crate::thl::{Change, ThlEvent};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};

/// What the dispatcher sends a channel.
#[derive(Debug)]
pub enum Work {
    /// A whole transaction to apply.
    Tx(Prepared),
    /// Record this mark in the channel's row (nothing else to apply).
    Checkpoint(Mark),
}

/// A transaction with its row changes already turned into SQL (by the
/// dispatcher's thread, so that this channel only concatenates and waits
/// for the server).
#[derive(Debug)]
pub struct Prepared {
    /// The transaction.
    pub tx: ThlEvent,
    /// Holds statements: applied alone, statement by statement.
    pub alone: bool,
    /// Recorded as applied without applying (own or `-skip-seqno`).
    pub skip: bool,
    /// Its row changes as row events or `;`-prefixed statements (empty
    /// when `alone` or `skip`), or why they cannot be built.
    pub rows: Result<Rows, sql::SqlError>,
}

/// The statement that starts a session's row events.
pub fn format_description_sql(server_id: u32) -> String {
    let fde = rowevents::format_description(server_id);
    let b64 = batch::base64_runs(&fde, &[fde.len()], batch::PIECE).concat();
    format!("BINLOG '{b64}'")
}

/// A transaction's source commit time in whole seconds, for its events'
/// headers (the server sets the session's time from them).
fn event_time(tx: &ThlEvent) -> u32 {
    (tx.source_tstamp / 1_000_000).clamp(0, i64::from(u32::MAX)) as u32
}

impl Prepared {
    /// Its row changes are row events (not SQL).
    pub fn events(&self) -> bool {
        matches!(self.rows, Ok(Rows::Events(_)))
    }

    /// About the memory its row changes take, prepared.
    pub fn bytes(&self) -> usize {
        match &self.rows {
            Ok(Rows::Events(e)) => e.rows.len(),
            Ok(Rows::Sql(t)) => t.text.len(),
            Err(_) => 0,
        }
    }

    /// Prepares `tx` for the channels of `cfg`, its row events (if the
    /// session applies them) naming tables by `ids`.
    pub fn new(cfg: &ApplierConfig, ids: &mut rowevents::TableIds, tx: ThlEvent) -> Prepared {
        let alone = has_statements(&tx);
        let skip = tx.source_id == cfg.member || cfg.skip.contains(&tx.seqno);
        if let (false, false, Some(id)) = (alone, skip, cfg.event_server_id) {
            let rows = tx.changes.iter().filter_map(|c| match c {
                Change::Rows(r) => Some(r),
                _ => None,
            });
            match rowevents::encode_changes(ids, rows, id, event_time(&tx)) {
                Ok(ev) => {
                    return Prepared {
                        tx,
                        alone,
                        skip,
                        rows: Ok(Rows::Events(ev)),
                    }
                }
                Err(why) => {
                    tracing::debug!(seqno = tx.seqno, %why, "applying as SQL, not row events")
                }
            }
        }
        let mut out = TxSql::default();
        out.text.reserve(estimate(&tx));
        let mut sql = Ok(());
        if !alone && !skip {
            for c in &tx.changes {
                if let (Change::Rows(r), Ok(())) = (c, &sql) {
                    let start = out.text.len();
                    sql = sql::append_rows_sql(&mut out.text, r).map(|ins| out.note(start, ins));
                }
            }
        }
        Prepared {
            tx,
            alone,
            skip,
            rows: sql.map(|()| Rows::Sql(out)),
        }
    }
}

/// What a channel tells the dispatcher.
#[derive(Debug)]
pub enum Report {
    /// Everything the channel was sent up to `mark.seqno` is committed,
    /// and its row holds `mark`.
    Committed {
        /// Channel.
        channel: usize,
        /// The row's new mark.
        mark: Mark,
        /// Transactions in the block (0 for a checkpoint).
        transactions: u64,
        /// The block, handed back to be freed on the thread that
        /// allocated it (cheaper for the allocator than freeing here).
        done: Vec<Prepared>,
    },
    /// The channel stopped on this error.
    Failed {
        /// Channel.
        channel: usize,
        /// Why.
        error: ApplyError,
    },
}

/// About the length of a transaction's SQL (to allocate it once).
fn estimate(tx: &ThlEvent) -> usize {
    let mut n = 0;
    for c in &tx.changes {
        if let Change::Rows(r) = c {
            let cols = r.columns.len() + r.keys.len();
            n += 64 + r.rows.len() * (24 * cols + 16);
            for row in &r.rows {
                for v in row.after.iter().chain(row.before.iter()).flatten() {
                    if let crate::thl::Value::Bytes { data, .. } = v {
                        n += 2 * data.len();
                    }
                }
            }
        }
    }
    n
}

/// True when a transaction holds a statement (applied alone).
pub fn has_statements(tx: &ThlEvent) -> bool {
    tx.changes.iter().any(sql::is_statement)
}

fn truncate(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(1000)]);
    if b.len() > 1000 {
        format!("{s}…")
    } else {
        s.into_owned()
    }
}

/// Runs channel `id` until its queue closes, `abort` is set, or it fails
/// (reported before returning).
pub fn run(
    cfg: &ApplierConfig,
    id: usize,
    rx: Receiver<Work>,
    reports: Sender<Report>,
    abort: &AtomicBool,
    gate: &Gate,
) {
    let failed = |error| {
        let _ = reports.send(Report::Failed { channel: id, error });
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return failed(ApplyError::Database {
                addr: cfg.target.addr(),
                error: format!("cannot start a runtime: {e}"),
            })
        }
    };
    let conn = rt.block_on(async {
        let mut conn = cfg.target.connect().await.map_err(|e| e.to_string())?;
        conn.query_drop(sql::SESSION_SETUP)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(id) = cfg.session_server_id {
            super::mark_session(&mut conn, id).await?;
        }
        if let Some(id) = cfg.event_server_id {
            // the annotation would repeat each BINLOG statement's text in
            // the replica's binlog
            conn.query_drop("SET SESSION binlog_annotate_row_events = 0, @carbide_no_rows = ''")
                .await
                .map_err(|e| e.to_string())?;
            conn.query_drop(format_description_sql(id))
                .await
                .map_err(|e| e.to_string())?;
            let set = conn.prep(SET_ROWS).await.map_err(|e| e.to_string())?;
            return Ok((conn, Some(set)));
        }
        Ok::<_, String>((conn, None))
    });
    let (conn, set_rows) = match conn {
        Ok(c) => c,
        Err(error) => {
            return failed(ApplyError::Database {
                addr: cfg.target.addr(),
                error,
            })
        }
    };
    let mut ch = Channel {
        cfg,
        id,
        conn,
        schema: service_schema(&cfg.service),
        set_rows,
        fresh: true,
    };
    let max = cfg.block_commit.max(1);
    let (mut blocks, mut transactions, mut as_events) = (0u64, 0u64, 0u64);
    let mut next: Option<Work> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match rx.recv() {
                Ok(w) => w,
                Err(_) => break,
            },
        };
        if abort.load(Ordering::SeqCst) {
            break;
        }
        let (block, permit) = match first {
            Work::Checkpoint(m) => {
                let q = update_row_sql(&ch.schema, id, &m);
                match rt.block_on(ch.conn.query_drop(q.as_str())) {
                    Ok(()) => {
                        let _ = reports.send(Report::Committed {
                            channel: id,
                            mark: m,
                            transactions: 0,
                            done: Vec::new(),
                        });
                        continue;
                    }
                    Err(e) => {
                        let at = ThlEvent {
                            seqno: m.seqno.max(0) as u64,
                            eventid: m.eventid.clone(),
                            ..ThlEvent::default()
                        };
                        failed(ch.failed(e, &at, q));
                        break;
                    }
                }
            }
            Work::Tx(t) => {
                let alone = t.alone;
                // waiting for a turn lets more transactions queue up
                let permit = gate.enter();
                if abort.load(Ordering::SeqCst) {
                    break;
                }
                let mut block = vec![t];
                while !alone && block.len() < max {
                    match rx.try_recv() {
                        Ok(Work::Tx(t)) if !t.alone => block.push(t),
                        Ok(w) => {
                            next = Some(w);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                (block, permit)
            }
        };
        let r = rt.block_on(ch.apply_block(&block));
        drop(permit);
        ch.fresh = false;
        match r {
            Ok(()) => {
                blocks += 1;
                transactions += block.len() as u64;
                as_events += block.iter().filter(|p| p.events()).count() as u64;
                if let Some(last) = block.last() {
                    let _ = reports.send(Report::Committed {
                        channel: id,
                        mark: Mark::of(&last.tx),
                        transactions: block.len() as u64,
                        done: block,
                    });
                }
            }
            Err(e) => {
                failed(e);
                break;
            }
        }
    }
    tracing::info!(
        service = %cfg.service, channel = id, transactions, blocks, row_events = as_events,
        "apply channel stopped"
    );
    let _ = rt.block_on(ch.conn.disconnect());
}

/// How many channels may apply a block at the same time (the others
/// queue more transactions for their next block meanwhile). Turns are
/// taken in order of arrival, so a busy channel cannot keep the others
/// out.
#[derive(Debug)]
pub struct Gate {
    state: std::sync::Mutex<Turns>,
    turned: std::sync::Condvar,
}

/// Tickets handed out and turns ended: ticket `t` may go once
/// `t < ended + n`.
#[derive(Debug)]
struct Turns {
    n: u64,
    next: u64,
    ended: u64,
}

/// A channel's turn to apply a block; ends when dropped.
pub struct Permit<'a>(&'a Gate);

impl Gate {
    /// A gate letting `n` (at least 1) channels through at once.
    pub fn new(n: usize) -> Gate {
        Gate {
            state: std::sync::Mutex::new(Turns {
                n: n.max(1) as u64,
                next: 0,
                ended: 0,
            }),
            turned: std::sync::Condvar::new(),
        }
    }

    /// Waits for a turn (after those who came first).
    pub fn enter(&self) -> Permit<'_> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = st.next;
        st.next += 1;
        while ticket >= st.ended + st.n {
            st = self.turned.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.ended += 1;
        // the next ticket may be any waiter's
        self.0.turned.notify_all();
    }
}

struct Channel<'a> {
    cfg: &'a ApplierConfig,
    id: usize,
    conn: Conn,
    schema: String,
    /// [`SET_ROWS`], prepared at connect when applying row events.
    set_rows: Option<mysql_async::Statement>,
    /// No block committed yet on this connection: the first may be a DDL
    /// that had committed before the previous run stopped (see
    /// [`ALREADY_DONE`]).
    fresh: bool,
}

/// Server errors that a DDL re-run reports when it had already been
/// applied: database exists / does not exist, table exists / unknown,
/// duplicate column or key, cannot drop a column or key, no such table.
/// A DDL commits on its own, before the channel's row records it, so a
/// crash (or a lost connection) between the two re-runs it at restart;
/// the first block after a (re)connect passes over these errors for its
/// statements, with a warning. Anywhere else they stop the channel.
const ALREADY_DONE: [u16; 8] = [1007, 1008, 1050, 1051, 1060, 1061, 1091, 1146];

/// Sets the events a block's `BINLOG` applies (prepared: the events are a
/// parameter, not text the server lexes).
const SET_ROWS: &str = "SET @carbide_rows = ?";

/// Applies the events in `@carbide_rows` (the syntax takes two variables,
/// concatenated; the second, `@carbide_no_rows`, is set empty at connect).
const BINLOG_ROWS: &str = "BINLOG @carbide_rows, @carbide_no_rows";

impl Channel<'_> {
    fn db_err(&self, e: impl std::fmt::Display) -> ApplyError {
        ApplyError::Database {
            addr: self.cfg.target.addr(),
            error: e.to_string(),
        }
    }

    async fn apply_block(&mut self, block: &[Prepared]) -> Result<(), ApplyError> {
        let Some(last) = block.last() else {
            return Ok(());
        };
        let last = &last.tx;
        let batch = !block.iter().any(|p| p.alone);
        let mut r = if batch {
            self.batch(block, last).await
        } else {
            self.one_by_one(block, last).await
        };
        if batch && matches!(r, Err(ApplyError::Apply { .. })) {
            let _ = self.conn.query_drop("ROLLBACK").await;
            r = self.one_by_one(block, last).await;
        }
        if r.is_err() {
            let _ = self.conn.query_drop("ROLLBACK").await;
            let _ = self.conn.query_drop(sql::SESSION_SETUP).await;
        }
        r
    }

    fn sql_err(tx: &ThlEvent, e: sql::SqlError) -> ApplyError {
        ApplyError::Apply {
            seqno: tx.seqno,
            eventid: tx.eventid.clone(),
            statement: String::new(),
            error: e.0,
        }
    }

    /// The block as compound statements (see `batch.rs`): usually one
    /// query, one round trip, one answer.
    async fn batch(&mut self, block: &[Prepared], last: &ThlEvent) -> Result<(), ApplyError> {
        let mut parts = Vec::with_capacity(block.len());
        for p in block {
            parts.push(
                p.rows
                    .as_ref()
                    .map_err(|e| Self::sql_err(&p.tx, e.clone()))?,
            );
        }
        let tail = update_row_sql(&self.schema, self.id, &Mark::of(last));
        // BINLOG statements cost the server more inside a compound
        // statement (it keeps a copy of their text): plain queries instead
        if !block.iter().any(Prepared::events) {
            let sql = parts.into_iter().filter_map(|r| match r {
                Rows::Sql(t) => Some(t),
                Rows::Events(_) => None,
            });
            for q in batch::compose(sql, &tail, BATCH_BYTES) {
                if let Err(e) = self.conn.query_drop(q.as_str()).await {
                    return Err(self.failed(e, last, "(batch)".into()));
                }
            }
            return Ok(());
        }
        let Some(set) = self.set_rows.clone() else {
            return Err(self.db_err("row events on a session set up for SQL"));
        };
        for step in batch::compose_events(parts, &tail, BATCH_BYTES) {
            let r = match step {
                batch::Step::Sql(q) => self.conn.query_drop(q.as_str()).await,
                batch::Step::Events(b64) => self.events(&set, b64).await,
            };
            if let Err(e) = r {
                return Err(self.failed(e, last, "(batch)".into()));
            }
        }
        Ok(())
    }

    /// Applies base64 row events through the session's `@carbide_rows`
    /// (set by a prepared statement: sent as a parameter, not lexed).
    async fn events(
        &mut self,
        set: &mysql_async::Statement,
        b64: String,
    ) -> Result<(), mysql_async::Error> {
        self.conn.exec_drop(set, (b64,)).await?;
        self.conn.query_drop(BINLOG_ROWS).await
    }

    /// The block statement by statement (names the failing one).
    async fn one_by_one(&mut self, block: &[Prepared], last: &ThlEvent) -> Result<(), ApplyError> {
        if let Err(e) = self.conn.query_drop("BEGIN").await {
            return Err(self.failed(e, last, "BEGIN".into()));
        }
        for p in block {
            let tx = &p.tx;
            if p.skip {
                tracing::info!(seqno = tx.seqno, source = %tx.source_id, "not applying (own or skipped)");
                continue;
            }
            let mut statements = false;
            for c in &tx.changes {
                statements |= sql::is_statement(c);
                if let (true, Change::Rows(r), Some(id)) = (p.events(), c, self.cfg.event_server_id)
                {
                    self.change_events(tx, r, id).await?;
                    continue;
                }
                let mut stmts = sql::change_sql(c).map_err(|e| Self::sql_err(tx, e))?;
                if let (Change::Statement(_), Some(last)) = (c, stmts.last_mut()) {
                    // tells another service's extractor on this database
                    // that the statement is ours (see extract::applied_by_other)
                    last.splice(0..0, service_tag(&self.cfg.service).into_bytes());
                }
                for q in stmts {
                    let r = self.conn.query_drop(q.as_slice()).await;
                    // CREATE/DROP DATABASE are logged with the database they
                    // name as their default schema, which may not exist here.
                    let unknown_db =
                        matches!(&r, Err(mysql_async::Error::Server(se)) if se.code == 1049);
                    if unknown_db && q.starts_with(b"USE ") {
                        continue;
                    }
                    if let (true, Change::Statement(_), Err(mysql_async::Error::Server(se))) =
                        (self.fresh, c, &r)
                    {
                        if ALREADY_DONE.contains(&se.code) {
                            tracing::warn!(
                                service = %self.cfg.service, seqno = tx.seqno, error = %se.message,
                                statement = %truncate(&q),
                                "statement already applied before the restart (it commits before \
                                 the channel's row records it); recording it as applied"
                            );
                            continue;
                        }
                    }
                    if let Err(e) = r {
                        return Err(self.failed(e, tx, truncate(&q)));
                    }
                }
            }
            if statements {
                self.conn
                    .query_drop(sql::SESSION_SETUP)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
        }
        let q = update_row_sql(&self.schema, self.id, &Mark::of(last));
        if let Err(e) = self.conn.query_drop(q.as_str()).await {
            return Err(self.failed(e, last, q));
        }
        match self.conn.query_drop("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e, last, "COMMIT".into())),
        }
    }

    /// One change as row events; a failure names the change as the SQL
    /// it stands for.
    async fn change_events(
        &mut self,
        tx: &ThlEvent,
        r: &crate::thl::RowsChange,
        server_id: u32,
    ) -> Result<(), ApplyError> {
        let mut raw = Vec::new();
        let when = event_time(tx);
        let ends = rowevents::append_change(&mut raw, r, server_id, when)
            .map_err(|why| Self::sql_err(tx, sql::SqlError(format!("row events: {why}"))))?;
        for b64 in batch::base64_runs(&raw, &ends, batch::PIECE) {
            let q = format!("BINLOG '{b64}'");
            if let Err(e) = self.conn.query_drop(q.as_str()).await {
                let what = match sql::rows_sql(r) {
                    Ok(stmts) => stmts
                        .first()
                        .map(|q| truncate(q.as_bytes()))
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                return Err(self.failed(
                    e,
                    tx,
                    format!(
                        "row events ({} of {}.{}) for: {what}",
                        r.action.as_str(),
                        r.schema,
                        r.table
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A server error is the transaction's fault; anything else (IO,
    /// driver) means the connection is gone.
    fn failed(&self, e: mysql_async::Error, tx: &ThlEvent, statement: String) -> ApplyError {
        match e {
            mysql_async::Error::Server(_) => ApplyError::Apply {
                seqno: tx.seqno,
                eventid: tx.eventid.clone(),
                statement,
                error: e.to_string(),
            },
            other => ApplyError::Lost {
                addr: self.cfg.target.addr(),
                seqno: tx.seqno,
                error: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_gate_lets_at_most_n_through() {
        for n in [1, 2] {
            let gate = Gate::new(n);
            let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..50 {
                            let _p = gate.enter();
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                }
            });
            let most = most.load(Ordering::SeqCst);
            assert!(
                (1..=n).contains(&most),
                "gate of {n}: {most} inside at once"
            );
        }
        // 0 is taken as 1, not as a gate nobody passes
        drop(Gate::new(0).enter());
        // turns go in order of arrival: a waiter goes before the holder's
        // next turn
        let gate = Gate::new(1);
        let order = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let first = gate.enter();
            let waiter = s.spawn(|| {
                let _p = gate.enter();
                order.lock().unwrap().push("waiter");
            });
            // until the waiter holds its ticket
            while gate.state.lock().unwrap().next < 2 {
                std::thread::yield_now();
            }
            drop(first);
            let _again = gate.enter();
            order.lock().unwrap().push("holder again");
            drop(_again);
            waiter.join().unwrap();
        });
        assert_eq!(*order.lock().unwrap(), vec!["waiter", "holder again"]);
    }
}
