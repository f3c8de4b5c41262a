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
//! of their own. SQL comes from `sql.rs` (pure). Any failure stops the run
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
    /// Reading the THL failed.
    #[error("applier THL: {0}")]
    Thl(#[from] ThlError),
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
        let r = self.try_block(block, last).await;
        if r.is_err() {
            let _ = self.conn.query_drop("ROLLBACK").await;
            let _ = self.conn.query_drop(sql::SESSION_SETUP).await;
        }
        r
    }

    async fn try_block(&mut self, block: &[ThlEvent], last: &ThlEvent) -> Result<(), ApplyError> {
        self.conn
            .query_drop("BEGIN")
            .await
            .map_err(|e| self.db_err(e))?;
        for tx in block {
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
                    if let Err(e) = self.conn.query_drop(q.as_slice()).await {
                        return Err(ApplyError::Apply {
                            seqno: tx.seqno,
                            eventid: tx.eventid.clone(),
                            statement: truncate(&q),
                            error: e.to_string(),
                        });
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
            return Err(ApplyError::Apply {
                seqno: last.seqno,
                eventid: last.eventid.clone(),
                statement: q,
                error: e.to_string(),
            });
        }
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(|e| ApplyError::Apply {
                seqno: last.seqno,
                eventid: last.eventid.clone(),
                statement: "COMMIT".into(),
                error: e.to_string(),
            })
    }
}

/// Applies the THL until the writer closes, `stop` asks (now, or once the
/// given seqno is applied), or an error. Returns the last applied seqno.
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
