//! The applier: THL transactions in, SQL on the local MariaDB out.
//!
//! [`run_blocking`] runs on its own thread. It connects to the local
//! database (a replica with `read_only=ON`: the applier's user needs
//! `READ_ONLY ADMIN`/`SUPER`), creates `tungsten_<service>.trep_commit_seqno`
//! if missing and reads its rows, one per apply channel (`catalog.rs`).
//! The dispatcher (`dispatch.rs`) tails the local THL (through the live
//! writer's [`DurableWatch`]) from the lowest row + 1 and sends each whole
//! transaction (fragments reassembled) to one of `channels` channel
//! threads (`channel.rs`) by a stable hash of its shard; transactions of
//! an unknown shard or with statements (DDL) are serialized: applied
//! alone on channel 0 once everything before them is committed. Each
//! channel has its own connection and applies its transactions in blocks
//! of up to `block_commit`, each block one database transaction together
//! with the update of the channel's row, so a restart resumes exactly
//! once: a transaction at seqno `s` of channel `c` is applied iff
//! `s > row[c]`. The decisions (channel, serialization, low-water mark,
//! restart filter, checkpoints, channel-count changes) are pure, in
//! `plan.rs`; SQL comes from `sql.rs` (pure). [`ApplyProgress`] publishes
//! the low-water mark: every transaction at or below it is committed. Any
//! failure stops every channel with an error naming the seqno, the
//! statement and the server's error; nothing is skipped.
//!
//! Row changes are applied as binlog row events (`rowevents.rs`, sent in
//! `BINLOG '…'` statements: the server applies them with its replication
//! code, matching columns by position and rows by primary key, else
//! unique key, else the whole before image, exactly as native replication
//! does; a row it cannot find is an error) when the database accepts them
//! (`BINLOG REPLAY` or `SUPER`; [`RowApply`], probed at start), else as SQL
//! text (`sql.rs`: columns by name). A change with no exact row-event form
//! is applied as SQL either way.
//!
//! Changing the channel count across restarts: when every stored row
//! holds the same seqno (always so after a clean stop), the rows are just
//! re-made; otherwise the applier first catches up with the stored count
//! (the old mapping) to the highest row, which leaves all rows equal.

mod batch;
mod catalog;
mod channel;
mod dispatch;
pub mod plan;
pub mod rowevents;
pub mod sql;

pub use catalog::{
    ensure_catalog, load_rows, set_position, trep_commit_seqno_ddl, update_row_sql, ChannelRow,
    Mark, Position,
};

use crate::extract::{SourceOpts, StopRequest};
use crate::thl::{DurableWatch, ThlError};
use plan::CatalogPlan;
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
    /// Apply channels (parallel apply by shard; 1 = serial).
    pub channels: usize,
    /// Most channels applying a block at the same time (0: one per CPU
    /// core; `--active-channels`).
    pub active_channels: usize,
    /// This member's name: transactions extracted here (source id equal to
    /// it, e.g. after a role change) are already in the database and are
    /// only recorded as applied.
    pub member: String,
    /// Seqnos to record as applied without applying (`online -skip-seqno`).
    pub skip: Vec<u64>,
    /// How row changes reach the database (`--row-apply`).
    pub row_apply: RowApply,
    /// Set by the applier at start, not by callers: the server_id of its
    /// row events (`BINLOG`; its sessions' own, see `session_server_id`),
    /// `None` for SQL.
    pub event_server_id: Option<u32>,
    /// Set by the applier at start, not by callers: the session server_id
    /// its connections take (`extract::applier_server_id`), `None` when
    /// the database refused it.
    pub session_server_id: Option<u32>,
}

/// How the applier applies row changes (`--row-apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RowApply {
    /// Row events (`BINLOG` statements, the server's own row-apply path)
    /// when the database accepts them, else SQL with a warning.
    #[default]
    Auto,
    /// Row events only; a database that refuses them stops the applier.
    Events,
    /// SQL text: INSERT / UPDATE … WHERE key / DELETE … WHERE key.
    Sql,
}

/// Asks the database whether this session may apply row events: reads
/// `@@server_id` and sends the format description. `Err` holds the
/// server's refusal (typically: the user lacks `BINLOG REPLAY`).
pub async fn probe_row_events(conn: &mut mysql_async::Conn) -> Result<u32, String> {
    use mysql_async::prelude::Queryable;
    // the session's: the applier's own when `mark_session` set it
    let id: Option<u32> = conn
        .query_first("SELECT @@session.server_id")
        .await
        .map_err(|e| e.to_string())?;
    let id = id.unwrap_or(0);
    conn.query_drop(channel::format_description_sql(id))
        .await
        .map_err(|e| e.to_string())?;
    Ok(id)
}

/// Gives the session the applier's server_id `id`
/// ([`crate::extract::applier_server_id`]): what it writes into the
/// binlog then carries it. Needs `BINLOG REPLAY` (MariaDB) or `SUPER`,
/// as row events do.
pub async fn mark_session(conn: &mut mysql_async::Conn, id: u32) -> Result<u32, String> {
    use mysql_async::prelude::Queryable;
    conn.query_drop(format!("SET SESSION server_id = {id}"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(id)
}

/// Published whenever the low-water mark moves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyProgress {
    /// The low-water mark: every transaction at or below it is applied.
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

/// Size at which the applier splits a block into several queries.
pub const BATCH_BYTES: usize = 4 << 20;

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
    let n = cfg.channels.max(1);
    loop {
        let rows = rt.block_on(async {
            let mut conn = cfg
                .target
                .connect()
                .await
                .map_err(|e| db_err(e.to_string()))?;
            let marked =
                mark_session(&mut conn, crate::extract::applier_server_id(&cfg.service)).await;
            let events = match cfg.row_apply {
                RowApply::Sql => Ok(None),
                _ => probe_row_events(&mut conn).await.map(Some),
            };
            let rows = async {
                ensure_catalog(&mut conn, &cfg.service).await?;
                let rows = load_rows(&mut conn, &cfg.service).await?;
                if let CatalogPlan::Reshape { like, seqno } =
                    plan::plan_catalog(&catalog::stored(&rows), n)
                {
                    let like = rows
                        .iter()
                        .find(|r| r.task_id == like)
                        .map(|r| r.mark.clone())
                        .unwrap_or_default();
                    tracing::info!(service = %cfg.service, seqno, channels = n, "setting up the channel rows");
                    catalog::reshape(&mut conn, &cfg.service, n, &like).await?;
                    return load_rows(&mut conn, &cfg.service).await;
                }
                Ok(rows)
            }
            .await
            .map_err(db_err);
            let _ = conn.disconnect().await;
            rows.map(|r| (r, events, marked))
        })?;
        let (rows, events, marked) = rows;
        let marked = match marked {
            Ok(id) => Some(id),
            Err(e) => {
                if lost_since.is_none() {
                    tracing::warn!(
                        service = %cfg.service, error = %e,
                        "cannot give the applier's sessions their own server_id (needs BINLOG \
                         REPLAY or SUPER): \
                         a service replicating back from this database (active/active) still \
                         recognises applied rows and statements by their marks, but not DDL the \
                         server logs in its own words (DROP TABLE) or non-transactional tables"
                    );
                }
                None
            }
        };
        let events = match (events, cfg.row_apply) {
            (Ok(id), _) => id,
            (Err(e), RowApply::Events) => {
                return Err(db_err(format!(
                    "--row-apply events: the database refuses row events ({e}); \
                     grant the applier's user BINLOG REPLAY, or use --row-apply auto|sql"
                )))
            }
            (Err(e), _) => {
                tracing::warn!(
                    service = %cfg.service, error = %e,
                    "the database refuses row events (BINLOG); applying rows as SQL \
                     (grant BINLOG REPLAY to the applier's user for the faster path)"
                );
                None
            }
        };
        if lost_since.is_none() {
            match events {
                Some(_) => {
                    tracing::info!(service = %cfg.service, "applying row changes as row events (BINLOG)")
                }
                None => tracing::info!(service = %cfg.service, "applying row changes as SQL"),
            }
        }
        *lost_since = None;
        let resolved = ApplierConfig {
            event_server_id: events,
            session_server_id: marked,
            ..cfg.clone()
        };
        let cfg = &resolved;
        let base = rows
            .iter()
            .min_by_key(|r| r.mark.seqno)
            .map(|r| r.mark.clone())
            .unwrap_or(Mark {
                seqno: -1,
                epoch: -1,
                ..Mark::default()
            });
        let run = |pos: Vec<i64>, until: Option<i64>| {
            let r = dispatch::Run {
                cfg,
                pos,
                base: base.clone(),
                until,
            };
            dispatch::run(r, durable, stop, progress)
        };
        match plan::plan_catalog(&catalog::stored(&rows), n) {
            CatalogPlan::Resume(pos) => {
                let w = run(pos, None)?;
                return Ok((w >= 0).then_some(w as u64));
            }
            CatalogPlan::CatchUp { old, pos, until } => {
                tracing::info!(
                    service = %cfg.service, from = old, to = n, until,
                    "channel count changed: catching up with the stored channel count first"
                );
                let w = run(pos, Some(until))?;
                if w < until {
                    return Ok((w >= 0).then_some(w as u64));
                }
            }
            CatalogPlan::Reshape { .. } => {}
            CatalogPlan::Invalid(msg) => return Err(db_err(msg)),
        }
        if *stop.borrow() == StopRequest::Now {
            return Ok(progress.borrow().applied_seqno);
        }
    }
}
