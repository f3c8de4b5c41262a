//! The applier: THL transactions in, SQL on the local MariaDB out.
//!
//! [`run_blocking`] runs on its own thread. It connects to the local
//! database (a replica with `read_only=ON`: the applier's user needs
//! `READ_ONLY ADMIN`/`SUPER`), creates `tungsten_<service>.trep_commit_seqno`
//! if missing, reads the last applied seqno from it and tails the local THL
//! (through the live writer's [`DurableWatch`]) from the next one. Whole
//! transactions (fragments reassembled, so they apply atomically) are
//! applied in blocks: every transaction already durable in the THL, up to
//! `block_commit`, goes into one database transaction together with the
//! `trep_commit_seqno` update for the last of them, so a restart resumes
//! exactly once. Transactions with statements (DDL) are applied in a block
//! of their own. Row changes of a block are sent as one multi-statement
//! query (one round trip); a block that fails is rolled back and replayed
//! statement by statement to name the failing seqno and statement. SQL
//! comes from `sql.rs` (pure). Any failure stops the run
//! with an error naming the seqno, the statement and the server's error;
//! nothing is skipped.

pub mod sql;

use crate::extract::{service_schema, SourceOpts, StopRequest};
use crate::thl::{now_us, DurableWatch, Reassembler, ThlError, ThlEvent, ThlReader};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// Applier settings.
#[derive(Debug, Clone)]
pub struct ApplierConfig {
    /// Service name (its schema is `tungsten_<service>`).
    pub service: String,
    /// The local database.
    pub target: SourceOpts,
    /// THL directory.
    pub thl_dir: PathBuf,
    /// Most transactions applied in one database transaction.
    pub block_commit: usize,
    /// This member's name: transactions extracted here (source id equal to
    /// it, e.g. after a role change) are already in the database and are
    /// only recorded as applied.
    pub member: String,
    /// Seqnos to record as applied without applying (`online -skip-seqno`).
    pub skip: Vec<u64>,
}

/// Published after every applied block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyProgress {
    /// Last applied seqno.
    pub applied_seqno: Option<u64>,
    /// Its eventid.
    pub applied_eventid: Option<String>,
    /// Its epoch.
    pub applied_epoch: Option<u64>,
    /// Seconds from its commit on the master to its commit here.
    pub applied_latency: f64,
    /// Its source commit time (µs).
    pub source_tstamp_us: i64,
    /// Transactions applied by this run.
    pub transactions: u64,
    /// Seqno and eventid of the transaction that stopped the applier.
    pub failed: Option<(u64, String)>,
}

/// Why the applier stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The local database could not be reached or set up.
    #[error("applier database {addr}: {error}")]
    Database {
        /// Address.
        addr: String,
        /// Error.
        error: String,
    },
    /// A statement failed.
    #[error("apply failed at seqno {seqno} (eventid {eventid}): statement: {statement}: {error}")]
    Apply {
        /// Seqno of the transaction.
        seqno: u64,
        /// Its eventid.
        eventid: String,
        /// The statement (truncated to 1000 bytes).
        statement: String,
        /// The server's error.
        error: String,
    },
    /// The connection to the local database broke while applying (the
    /// open transaction was rolled back by the server; retried).
    #[error("applier lost its database {addr} at seqno {seqno}: {error}")]
    Lost {
        /// Address.
        addr: String,
        /// Seqno being applied.
        seqno: u64,
        /// Error.
        error: String,
    },
    /// Reading the THL failed.
    #[error("applier THL: {0}")]
    Thl(#[from] ThlError),
}

impl ApplyError {
    /// Eventid of the transaction that failed, if known.
    pub fn eventid(&self) -> Option<&str> {
        match self {
            ApplyError::Apply { eventid, .. } => Some(eventid),
            _ => None,
        }
    }

    /// Seqno of the transaction that failed, if one did.
    pub fn seqno(&self) -> Option<u64> {
        match self {
            ApplyError::Apply { seqno, .. } | ApplyError::Lost { seqno, .. } => Some(*seqno),
            _ => None,
        }
    }
}

/// Where a replica stands, from `trep_commit_seqno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Last applied seqno (-1 = none).
    pub seqno: i64,
    /// Its eventid.
    pub eventid: String,
    /// Its epoch.
    pub epoch: i64,
}

/// Largest multi-statement query the applier sends in one go.
pub const BATCH_BYTES: usize = 4 << 20;

/// `CREATE TABLE` of `trep_commit_seqno` (Tungsten's columns).
pub fn trep_commit_seqno_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{schema}`.trep_commit_seqno (\
         task_id INT NOT NULL, seqno BIGINT, fragno SMALLINT, last_frag CHAR(1), \
         source_id VARCHAR(128), epoch_number BIGINT, eventid VARCHAR(128), \
         applied_latency INT, update_timestamp TIMESTAMP NULL, shard_id VARCHAR(128), \
         extract_timestamp TIMESTAMP NULL, PRIMARY KEY (task_id)) ENGINE=InnoDB"
    )
}

/// Creates the service schema and `trep_commit_seqno` (with the row of
/// task 0 at seqno -1) if missing; returns the stored position.
pub async fn ensure_catalog(conn: &mut Conn, service: &str) -> Result<Position, String> {
    let schema = service_schema(service);
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{schema}`"))
        .await
        .map_err(|e| e.to_string())?;
    conn.query_drop(trep_commit_seqno_ddl(&schema))
        .await
        .map_err(|e| e.to_string())?;
    conn.query_drop(format!(
        "INSERT IGNORE INTO `{schema}`.trep_commit_seqno (task_id, seqno, fragno, last_frag, \
         epoch_number, eventid) VALUES (0, -1, 0, '1', -1, '')"
    ))
    .await
    .map_err(|e| e.to_string())?;
    let row: Option<(Option<i64>, Option<String>, Option<i64>)> = conn
        .query_first(format!(
            "SELECT seqno, eventid, epoch_number FROM `{schema}`.trep_commit_seqno WHERE task_id = 0"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let (s, id, e) = row.unwrap_or((Some(-1), None, Some(-1)));
    Ok(Position {
        seqno: s.unwrap_or(-1),
        eventid: id.unwrap_or_default(),
        epoch: e.unwrap_or(-1),
    })
}

/// Sets the stored position (dsctl set / reset).
pub async fn set_position(
    conn: &mut Conn,
    service: &str,
    p: &Position,
    source_id: &str,
) -> Result<(), String> {
    ensure_catalog(conn, service).await?;
    let schema = service_schema(service);
    conn.exec_drop(
        format!(
            "UPDATE `{schema}`.trep_commit_seqno SET seqno = ?, fragno = 0, last_frag = '1', \
             source_id = ?, epoch_number = ?, eventid = ?, update_timestamp = NOW() WHERE task_id = 0"
        ),
        (p.seqno, source_id, p.epoch, p.eventid.as_str()),
    )
    .await
    .map_err(|e| e.to_string())
}

fn truncate(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(1000)]);
    if b.len() > 1000 {
        format!("{s}…")
    } else {
        s.into_owned()
    }
}

struct Applier<'a> {
    cfg: &'a ApplierConfig,
    conn: Conn,
    schema: String,
}

impl Applier<'_> {
    fn db_err(&self, e: impl std::fmt::Display) -> ApplyError {
        ApplyError::Database {
            addr: self.cfg.target.addr(),
            error: e.to_string(),
        }
    }

    async fn apply_block(&mut self, block: &[ThlEvent]) -> Result<(), ApplyError> {
        let Some(last) = block.last() else {
            return Ok(());
        };
        // Row changes go as one multi-statement query per block (one round
        // trip); if that fails on a server error, the block is rolled back
        // and applied again statement by statement to name the culprit.
        let batch = !block
            .iter()
            .any(|tx| tx.changes.iter().any(sql::is_statement));
        let mut r = self.try_block(block, last, batch).await;
        if batch && matches!(r, Err(ApplyError::Apply { .. })) {
            let _ = self.conn.query_drop("ROLLBACK").await;
            r = self.try_block(block, last, false).await;
        }
        if r.is_err() {
            let _ = self.conn.query_drop("ROLLBACK").await;
            let _ = self.conn.query_drop(sql::SESSION_SETUP).await;
        }
        r
    }

    /// Row changes of the block as `;`-separated statements, flushed to the
    /// server every `BATCH_BYTES`.
    async fn batch_rows(&mut self, block: &[ThlEvent], last: &ThlEvent) -> Result<(), ApplyError> {
        let mut buf: Vec<u8> = Vec::new();
        for tx in block {
            if tx.source_id == self.cfg.member || self.cfg.skip.contains(&tx.seqno) {
                continue;
            }
            for c in &tx.changes {
                let stmts = sql::change_sql(c).map_err(|e| ApplyError::Apply {
                    seqno: tx.seqno,
                    eventid: tx.eventid.clone(),
                    statement: String::new(),
                    error: e.0,
                })?;
                for q in stmts {
                    if !buf.is_empty() {
                        buf.push(b';');
                    }
                    buf.extend_from_slice(&q);
                    if buf.len() >= BATCH_BYTES {
                        if let Err(e) = self.conn.query_drop(buf.as_slice()).await {
                            return Err(self.failed(e, last, "(batch)".into()));
                        }
                        buf.clear();
                    }
                }
            }
        }
        if !buf.is_empty() {
            if let Err(e) = self.conn.query_drop(buf.as_slice()).await {
                return Err(self.failed(e, last, "(batch)".into()));
            }
        }
        Ok(())
    }

    async fn try_block(
        &mut self,
        block: &[ThlEvent],
        last: &ThlEvent,
        batch: bool,
    ) -> Result<(), ApplyError> {
        if let Err(e) = self.conn.query_drop("BEGIN").await {
            return Err(self.failed(e, last, "BEGIN".into()));
        }
        if batch {
            self.batch_rows(block, last).await?;
        }
        for tx in block.iter().filter(|_| !batch) {
            if tx.source_id == self.cfg.member || self.cfg.skip.contains(&tx.seqno) {
                tracing::info!(seqno = tx.seqno, source = %tx.source_id, "not applying (own or skipped)");
                continue;
            }
            let mut statements = false;
            for c in &tx.changes {
                statements |= sql::is_statement(c);
                let stmts = sql::change_sql(c).map_err(|e| ApplyError::Apply {
                    seqno: tx.seqno,
                    eventid: tx.eventid.clone(),
                    statement: String::new(),
                    error: e.0,
                })?;
                for q in stmts {
                    let r = self.conn.query_drop(q.as_slice()).await;
                    // CREATE/DROP DATABASE are logged with the database they
                    // name as their default schema, which may not exist here.
                    let unknown_db =
                        matches!(&r, Err(mysql_async::Error::Server(se)) if se.code == 1049);
                    if unknown_db && q.starts_with(b"USE ") {
                        continue;
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
        let latency = ((now_us() - last.source_tstamp) / 1_000_000).max(0);
        let q = format!(
            "UPDATE `{}`.trep_commit_seqno SET seqno = ?, fragno = ?, last_frag = ?, \
             source_id = ?, epoch_number = ?, eventid = ?, applied_latency = ?, \
             update_timestamp = NOW(), shard_id = ?, \
             extract_timestamp = FROM_UNIXTIME(?) WHERE task_id = 0",
            self.schema
        );
        let ext = format!(
            "{}.{:06}",
            last.extract_tstamp.div_euclid(1_000_000),
            last.extract_tstamp.rem_euclid(1_000_000)
        );
        let params = mysql_async::Params::Positional(vec![
            last.seqno.into(),
            last.fragno.into(),
            if last.last_frag { "1" } else { "0" }.into(),
            last.source_id.as_str().into(),
            last.epoch.into(),
            last.eventid.as_str().into(),
            latency.into(),
            last.shard.as_str().into(),
            ext.into(),
        ]);
        if let Err(e) = self.conn.exec_drop(q.as_str(), params).await {
            return Err(self.failed(e, last, q));
        }
        match self.conn.query_drop("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e, last, "COMMIT".into())),
        }
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

/// Applies the THL until the writer closes, `stop` asks (now, or once the
/// given seqno is applied), or an error. Returns the last applied seqno.
///
/// A connection lost while applying is retried (reconnect, re-read the
/// position from `trep_commit_seqno`, continue after it) with back-off for
/// up to `LOST_DB_RETRY`; a database that cannot be reached at start or
/// stays away longer ends the run with the error.
pub fn run_blocking(
    cfg: &ApplierConfig,
    durable: DurableWatch,
    stop: watch::Receiver<StopRequest>,
    progress: &watch::Sender<ApplyProgress>,
) -> Result<Option<u64>, ApplyError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApplyError::Database {
            addr: cfg.target.addr(),
            error: format!("cannot start a runtime: {e}"),
        })?;
    let mut lost_since: Option<std::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&rt, cfg, &durable, &stop, progress, &mut lost_since) {
            Err(e @ ApplyError::Lost { .. }) => {
                tracing::warn!(service = %cfg.service, error = %e, "applier lost its database; retrying");
                lost_since.get_or_insert_with(std::time::Instant::now);
            }
            Err(e @ ApplyError::Database { .. })
                if lost_since.is_some_and(|t| t.elapsed() < LOST_DB_RETRY) =>
            {
                tracing::debug!(service = %cfg.service, error = %e, "database still away");
            }
            other => return other,
        }
        if *stop.borrow() == StopRequest::Now || durable.is_closed() {
            return Ok(progress.borrow().applied_seqno);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// How long the applier keeps reconnecting to a database it lost.
pub const LOST_DB_RETRY: Duration = Duration::from_secs(60);

fn session(
    rt: &tokio::runtime::Runtime,
    cfg: &ApplierConfig,
    durable: &DurableWatch,
    stop: &watch::Receiver<StopRequest>,
    progress: &watch::Sender<ApplyProgress>,
    lost_since: &mut Option<std::time::Instant>,
) -> Result<Option<u64>, ApplyError> {
    let db_err = |e: String| ApplyError::Database {
        addr: cfg.target.addr(),
        error: e,
    };
    let (conn, pos) = rt.block_on(async {
        let mut conn = cfg
            .target
            .connect()
            .await
            .map_err(|e| db_err(e.to_string()))?;
        conn.query_drop(sql::SESSION_SETUP)
            .await
            .map_err(|e| db_err(e.to_string()))?;
        let pos = ensure_catalog(&mut conn, &cfg.service)
            .await
            .map_err(db_err)?;
        Ok::<_, ApplyError>((conn, pos))
    })?;
    *lost_since = None;
    let mut applier = Applier {
        cfg,
        conn,
        schema: service_schema(&cfg.service),
    };
    let reader = ThlReader::open(&cfg.thl_dir)?;
    let from = if pos.seqno >= 0 {
        pos.seqno as u64 + 1
    } else {
        reader.first_seqno().unwrap_or(0)
    };
    let mut applied = (pos.seqno >= 0).then_some(pos.seqno as u64);
    progress.send_modify(|p| {
        p.applied_seqno = applied;
        p.applied_eventid = (!pos.eventid.is_empty()).then(|| pos.eventid.clone());
        p.applied_epoch = (pos.epoch >= 0).then_some(pos.epoch as u64);
    });
    tracing::info!(service = %cfg.service, from, "applier starting");
    let mut tail = reader.tail(from, durable.clone());
    let mut asm = Reassembler::default();
    let block_max = cfg.block_commit.max(1);
    let result = loop {
        let limit = match *stop.borrow() {
            StopRequest::Now => break Ok(applied),
            StopRequest::AtSeqno(n) if applied.is_some_and(|a| a >= n) => break Ok(applied),
            StopRequest::AtSeqno(n) => Some(n),
            StopRequest::Run => None,
        };
        let mut block: Vec<ThlEvent> = Vec::new();
        let mut wait = Duration::from_millis(200);
        loop {
            let rec = match tail.next(wait) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(e.into()),
            };
            let Some(tx) = asm.push(rec)? else {
                wait = Duration::from_secs(5);
                continue;
            };
            wait = Duration::ZERO;
            let alone = tx.changes.iter().any(sql::is_statement);
            let at_limit = limit.is_some_and(|n| tx.seqno >= n);
            if alone && !block.is_empty() {
                // apply what we have first, then this one on its own
                rt.block_on(applier.apply_block(&block))?;
                block.clear();
            }
            block.push(tx);
            if alone || at_limit || block.len() >= block_max {
                break;
            }
        }
        if block.is_empty() {
            if durable.is_closed() && !asm.is_pending() {
                break Ok(applied);
            }
            continue;
        }
        rt.block_on(applier.apply_block(&block))?;
        if let Some(last) = block.last() {
            applied = Some(last.seqno);
            let lat = (now_us() - last.source_tstamp) as f64 / 1e6;
            let n = block.len() as u64;
            progress.send_modify(|p| {
                p.applied_seqno = Some(last.seqno);
                p.applied_eventid = Some(last.eventid.clone());
                p.applied_epoch = Some(last.epoch);
                p.applied_latency = lat.max(0.0);
                p.source_tstamp_us = last.source_tstamp;
                p.transactions += n;
            });
        }
    };
    let _ = rt.block_on(applier.conn.disconnect());
    result
}
