//! The network side of the extractor: a replication client of the local
//! MariaDB, feeding the [`Pipeline`] and appending to the THL.
//!
//! [`run`] owns the [`ThlWriter`] for its whole life. It reads where the
//! THL ends (`position.rs`), connects as a replica (setting
//! `@master_binlog_checksum`, `@mariadb_slave_capability=4`,
//! `@master_heartbeat_period` and, for a GTID start, `@slave_connect_state`),
//! and appends every transaction. Appends are group-committed: the writer
//! commits (fsync) whenever the stream has nothing more ready, or after
//! `max_batch` transactions / `max_batch_delay`. Progress leaves on a
//! `watch` channel ([`Progress`]); stop requests arrive on another
//! ([`StopRequest`]). Lost connections (server restart, network) are retried
//! from the last appended transaction with back-off; a purged binlog or
//! undecodable data ends the run with an error.

use super::{
    choose_unique_key, resume_from_thl, BinlogPos, ExtractError, Identity, InfoColumn, Pipeline,
    Result, StartPosition, Step, HEARTBEAT_META, INFO_COLUMNS_SQL, UNIQUE_KEYS_SQL,
};
use crate::thl::{now_us, ThlReader, ThlWriter, WriterConfig};
use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, OptsBuilder};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How to reach the source database.
#[derive(Debug, Clone)]
pub struct SourceOpts {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User (needs REPLICATION SLAVE and SELECT on information_schema).
    pub user: String,
    /// Password.
    pub password: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl SourceOpts {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// mysql_async options.
    pub fn opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass((!self.password.is_empty()).then(|| self.password.clone()))
            .prefer_socket(false)
            .into()
    }

    /// A plain connection, with the connect timeout.
    pub async fn connect(&self) -> Result<Conn> {
        match tokio::time::timeout(self.connect_timeout, Conn::new(self.opts())).await {
            Ok(r) => r.map_err(|source| self.err(source)),
            Err(_) => Err(ExtractError::Source {
                addr: self.addr(),
                source: mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", self.connect_timeout),
                ))),
            }),
        }
    }

    fn err(&self, source: mysql_async::Error) -> ExtractError {
        ExtractError::Source {
            addr: self.addr(),
            source,
        }
    }
}

/// Extractor settings.
#[derive(Debug, Clone)]
pub struct ExtractorConfig {
    /// The source database.
    pub source: SourceOpts,
    /// server_id this client registers with (must differ from every server's).
    pub replica_server_id: u32,
    /// Service name.
    pub service: String,
    /// Source id stamped on events (member name).
    pub source_id: String,
    /// THL directory.
    pub thl_dir: PathBuf,
    /// THL writer settings.
    pub writer: WriterConfig,
    /// Where to start when the THL is empty.
    pub start: StartPosition,
    /// Heartbeat period asked of the server; the stream is considered dead
    /// after three periods of silence.
    pub heartbeat_period: Duration,
    /// Commit (fsync) at least every this many transactions.
    pub max_batch: usize,
    /// … and at least this often while transactions keep arriving.
    pub max_batch_delay: Duration,
    /// Services whose appliers' transactions in this binlog are not
    /// extracted (they came from a database this service replicates to;
    /// see `Pipeline::leaving_out`).
    pub leave_out: Vec<String>,
}

/// Published after every commit and state change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Connected to the source and streaming.
    pub connected: bool,
    /// Lowest seqno in the THL.
    pub min_seqno: Option<u64>,
    /// Last durable seqno.
    pub last_seqno: Option<u64>,
    /// Its eventid.
    pub last_eventid: Option<String>,
    /// Epoch of this extraction run.
    pub epoch: u64,
    /// Source commit time of the last durable transaction (µs).
    pub last_source_tstamp_us: i64,
    /// Extraction time of the last durable transaction (µs).
    pub last_extract_tstamp_us: i64,
    /// Binlog events read.
    pub events: u64,
    /// Transactions stored.
    pub transactions: u64,
    /// Binlog bytes read.
    pub bytes: u64,
    /// Current binlog position of the reader.
    pub position: Option<String>,
    /// Last transient error (cleared on reconnect).
    pub last_error: Option<String>,
    /// Last heartbeat seen: name, seqno, source and extract timestamps (µs).
    pub last_heartbeat: Option<(String, u64, i64, i64)>,
}

/// What the daemon asks of a running extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopRequest {
    /// Keep going.
    #[default]
    Run,
    /// Stop at the next transaction boundary.
    Now,
    /// Stop once this seqno is stored.
    AtSeqno(u64),
}

/// Why [`run`] returned normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Last stored seqno.
    pub last_seqno: Option<u64>,
}

struct State<'a> {
    cfg: &'a ExtractorConfig,
    writer: ThlWriter,
    pipeline: Pipeline,
    start: StartPosition,
    progress: &'a watch::Sender<Progress>,
    pending: usize,
    batch_start: Option<Instant>,
    last_appended: Option<(u64, String, i64, i64)>,
    heartbeat: Option<(String, u64, i64, i64)>,
}

/// Runs the extractor until stopped or a non-transient error.
pub async fn run(
    cfg: ExtractorConfig,
    stop: watch::Receiver<StopRequest>,
    progress: watch::Sender<Progress>,
) -> Result<Stopped> {
    run_published(cfg, stop, progress, None, None).await
}

/// [`run`], publishing the writer's durable position on `hub` while it is
/// open (for the THL server), and reading from `from_event` instead of
/// where the THL ends when given (`trepctl online -from-event`).
pub async fn run_published(
    cfg: ExtractorConfig,
    mut stop: watch::Receiver<StopRequest>,
    progress: watch::Sender<Progress>,
    hub: Option<&crate::transfer::ThlHub>,
    from_event: Option<StartPosition>,
) -> Result<Stopped> {
    let writer = ThlWriter::open(&cfg.thl_dir, cfg.writer.clone())?;
    if let Some(h) = hub {
        h.send_replace(Some(writer.durable_watch()));
    }
    let r = run_open(&cfg, writer, &mut stop, &progress, from_event).await;
    if let Some(h) = hub {
        h.send_replace(None);
    }
    r
}

async fn run_open(
    cfg: &ExtractorConfig,
    writer: ThlWriter,
    stop: &mut watch::Receiver<StopRequest>,
    progress: &watch::Sender<Progress>,
    from_event: Option<StartPosition>,
) -> Result<Stopped> {
    let resume = resume_from_thl(&writer)?;
    let min_seqno = ThlReader::open(&cfg.thl_dir)?.first_seqno();
    let ident = Identity {
        service: cfg.service.clone(),
        source_id: cfg.source_id.clone(),
        epoch: resume.next_seqno,
    };
    progress.send_modify(|p| {
        p.epoch = resume.next_seqno;
        p.min_seqno = min_seqno;
        p.last_seqno = resume.last.as_ref().map(|l| l.0);
        p.last_eventid = resume.last.as_ref().map(|l| l.1.clone());
    });
    // A log whose last transaction came from another member (this member
    // was a slave until a role change) holds no position in our binlog:
    // start at its current end, with a new epoch.
    let foreign = match &resume.last {
        Some((seqno, _, _)) => ThlReader::open(&cfg.thl_dir)?
            .get(*seqno)?
            .is_some_and(|ev| ev.source_id != cfg.source_id),
        None => false,
    };
    let start = if let Some(p) = from_event {
        p
    } else if foreign {
        StartPosition::Current
    } else {
        resume.start.clone().unwrap_or_else(|| cfg.start.clone())
    };
    tracing::info!(service = %cfg.service, next_seqno = resume.next_seqno, start = ?start, "extractor starting");
    let mut st = State {
        cfg,
        pipeline: Pipeline::new(ident, resume.next_seqno, BinlogPos::new("", 4), false)
            .leaving_out(&cfg.leave_out),
        writer,
        start,
        progress,
        pending: 0,
        batch_start: None,
        last_appended: None,
        heartbeat: None,
    };
    let mut backoff = Duration::from_millis(100);
    let result = loop {
        if *stop.borrow() == StopRequest::Now {
            break Ok(());
        }
        match st.session(stop).await {
            Ok(()) => break Ok(()),
            Err(e) if e.is_transient() => {
                tracing::warn!(service = %cfg.service, error = %e, "source connection lost; retrying");
                if let Err(e) = st.commit() {
                    break Err(e);
                }
                progress.send_modify(|p| {
                    p.connected = false;
                    p.last_error = Some(e.to_string());
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => break Err(e),
        }
    };
    let commit = st.commit();
    let last = st.writer.last_seqno();
    let close = st.writer.close();
    progress.send_modify(|p| p.connected = false);
    result?;
    commit?;
    close?;
    Ok(Stopped { last_seqno: last })
}

impl State<'_> {
    /// Commits appended transactions and publishes progress.
    fn commit(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let durable = self.writer.commit()?;
        let n = self.pending;
        self.pending = 0;
        self.batch_start = None;
        let last = self.last_appended.clone();
        let hb = self.heartbeat.take();
        self.progress.send_modify(|p| {
            p.last_seqno = durable.or(p.last_seqno);
            p.transactions += n as u64;
            if let Some((_, eventid, src, ext)) = last {
                p.last_eventid = Some(eventid);
                p.last_source_tstamp_us = src;
                p.last_extract_tstamp_us = ext;
            }
            if hb.is_some() {
                p.last_heartbeat = hb;
            }
            if p.min_seqno.is_none() {
                p.min_seqno = p
                    .last_seqno
                    .map(|_| self.writer.index().first_seqno().unwrap_or(0));
            }
        });
        Ok(())
    }

    async fn resolve_start(&self, conn: &mut Conn) -> Result<(BinlogPos, Option<String>)> {
        let src = &self.cfg.source;
        Ok(match &self.start {
            StartPosition::At(p) => (p.clone(), None),
            StartPosition::Gtid(g) => (BinlogPos::new("", 4), Some(g.clone())),
            StartPosition::Current => {
                let rows: Vec<mysql_async::Row> = conn
                    .query("SHOW MASTER STATUS")
                    .await
                    .map_err(|e| src.err(e))?;
                let r = rows.into_iter().next().ok_or_else(|| {
                    ExtractError::Config("SHOW MASTER STATUS is empty: is log_bin ON?".into())
                })?;
                let file: Option<String> = r.get(0);
                let pos: Option<u64> = r.get(1);
                (
                    BinlogPos::new(file.unwrap_or_default(), pos.unwrap_or(4)),
                    None,
                )
            }
            StartPosition::Earliest => {
                let rows: Vec<mysql_async::Row> = conn
                    .query("SHOW BINARY LOGS")
                    .await
                    .map_err(|e| src.err(e))?;
                let file: Option<String> = rows.first().and_then(|r| r.get(0));
                let file = file.ok_or_else(|| {
                    ExtractError::Config("SHOW BINARY LOGS is empty: is log_bin ON?".into())
                })?;
                (BinlogPos::new(file, 4), None)
            }
        })
    }

    /// One connection's worth of streaming. Ok when asked to stop.
    async fn session(&mut self, stop: &mut watch::Receiver<StopRequest>) -> Result<()> {
        let src = self.cfg.source.clone();
        let mut conn = src.connect().await?;
        let (pos, gtid) = self.resolve_start(&mut conn).await?;
        let checksum: Option<String> = conn
            .query_first("SELECT @@global.binlog_checksum")
            .await
            .map_err(|e| src.err(e))?;
        let crc = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        if !self.cfg.leave_out.is_empty() {
            // what the database writes itself would be taken for an
            // applier's and left out
            let own: Option<u32> = conn
                .query_first("SELECT @@global.server_id")
                .await
                .map_err(|e| src.err(e))?;
            if let Some(other) = self
                .cfg
                .leave_out
                .iter()
                .find(|s| own == Some(super::applier_server_id(s)))
            {
                return Err(ExtractError::Config(format!(
                    "the database's server_id {} is the one service '{other}'s applier gives its \
                     sessions (its own writes would be left out as that service's): give the \
                     database another server_id",
                    own.unwrap_or_default()
                )));
            }
        }
        let hb_ns = self.cfg.heartbeat_period.as_nanos().max(1_000_000);
        conn.query_drop(format!(
            "SET @master_binlog_checksum = @@global.binlog_checksum, \
             @mariadb_slave_capability = 4, @master_heartbeat_period = {hb_ns}"
        ))
        .await
        .map_err(|e| src.err(e))?;
        if let Some(g) = &gtid {
            if !g
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
            {
                return Err(ExtractError::Config(format!("bad GTID position '{g}'")));
            }
            conn.query_drop(format!(
                "SET @slave_connect_state = '{g}', @slave_gtid_strict_mode = 1"
            ))
            .await
            .map_err(|e| src.err(e))?;
        }
        let asked = match &gtid {
            Some(g) => format!("GTID {g}"),
            None => pos.to_string(),
        };
        tracing::info!(service = %self.cfg.service, position = %asked, "requesting binlog");
        let req = BinlogStreamRequest::new(self.cfg.replica_server_id)
            .with_filename(pos.file.as_bytes())
            .with_pos(pos.pos);
        let mut stream = conn
            .get_binlog_stream(req)
            .await
            .map_err(|e| map_stream_err(&src, &asked, e))?;
        self.pipeline.restart(pos, crc);
        let r = self.stream_loop(&mut stream, stop, &asked).await;
        if r.is_ok() {
            // tell the server this dump is over, so its thread lets go of the binlog
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
        }
        r
    }

    async fn stream_loop(
        &mut self,
        stream: &mut mysql_async::BinlogStream,
        stop: &mut watch::Receiver<StopRequest>,
        asked: &str,
    ) -> Result<()> {
        let src = self.cfg.source.clone();
        let mut meta: Option<Conn> = None;
        let dead_after = self.cfg.heartbeat_period * 3 + Duration::from_secs(1);
        let mut first = true;
        loop {
            let item = match stream.next().now_or_never() {
                Some(item) => item,
                None => {
                    self.commit()?;
                    if *stop.borrow() == StopRequest::Now {
                        return Ok(());
                    }
                    tokio::select! {
                        r = tokio::time::timeout(dead_after, stream.next()) => match r {
                            Ok(item) => item,
                            Err(_) => return Err(ExtractError::Source {
                                addr: src.addr(),
                                source: mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    format!("no binlog event or heartbeat for {dead_after:?}"),
                                ))),
                            }),
                        },
                        _ = stop.changed() => continue,
                    }
                }
            };
            let ev = match item {
                None => {
                    return Err(ExtractError::Source {
                        addr: src.addr(),
                        source: mysql_async::Error::Io(mysql_async::IoError::Io(
                            std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the source closed the binlog stream",
                            ),
                        )),
                    })
                }
                Some(Err(e)) => return Err(map_stream_err(&src, asked, e)),
                Some(Ok(ev)) => ev,
            };
            if first {
                first = false;
                self.progress.send_modify(|p| {
                    p.connected = true;
                    p.last_error = None;
                });
            }
            let size = ev.header().event_size() as u64;
            match self.pipeline.on_event(&ev)? {
                Step::Transaction(tx) => {
                    self.writer.append(&tx)?;
                    self.pending += 1;
                    self.batch_start.get_or_insert_with(Instant::now);
                    self.start = StartPosition::At(
                        BinlogPos::parse_eventid(&tx.eventid)
                            .unwrap_or_else(|| self.pipeline.position().clone()),
                    );
                    if let Some(name) = tx.meta(HEARTBEAT_META) {
                        self.heartbeat = Some((
                            name.to_string(),
                            tx.seqno,
                            tx.source_tstamp,
                            tx.extract_tstamp,
                        ));
                    }
                    self.last_appended = Some((
                        tx.seqno,
                        tx.eventid.clone(),
                        tx.source_tstamp,
                        tx.extract_tstamp,
                    ));
                    if let StopRequest::AtSeqno(n) = *stop.borrow() {
                        if tx.seqno >= n {
                            self.commit()?;
                            return Ok(());
                        }
                    }
                }
                Step::NeedColumns {
                    table_id,
                    schema,
                    table,
                } => {
                    let info = self.info_columns(&mut meta, &schema, &table).await?;
                    self.pipeline.resolve_columns(table_id, Some(info))?;
                }
                Step::Nothing | Step::Heartbeat => {}
            }
            let pos = self.pipeline.position().to_string();
            self.progress.send_if_modified(|p| {
                p.events += 1;
                p.bytes += size;
                if p.events % 256 == 1 {
                    p.position = Some(pos);
                    true
                } else {
                    false
                }
            });
            if self.pending >= self.cfg.max_batch
                || self
                    .batch_start
                    .is_some_and(|t| t.elapsed() >= self.cfg.max_batch_delay)
            {
                self.commit()?;
            }
            if *stop.borrow() == StopRequest::Now && !self.pipeline.in_transaction() {
                self.commit()?;
                return Ok(());
            }
        }
    }

    async fn info_columns(
        &self,
        meta: &mut Option<Conn>,
        schema: &str,
        table: &str,
    ) -> Result<Vec<InfoColumn>> {
        let src = &self.cfg.source;
        if meta.is_none() {
            *meta = Some(src.connect().await?);
        }
        let Some(conn) = meta.as_mut() else {
            return Ok(Vec::new());
        };
        type Row = (String, String, String, Option<u16>, String);
        let rows: Vec<Row> = conn
            .exec(INFO_COLUMNS_SQL, (schema, table))
            .await
            .map_err(|e| src.err(e))?;
        let keys: Vec<(String, String, String)> = conn
            .exec(UNIQUE_KEYS_SQL, (schema, table))
            .await
            .map_err(|e| src.err(e))?;
        let key = choose_unique_key(&keys).unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|(name, ctype, key_kind, coll, dtype)| InfoColumn {
                unique_key: key.contains(&name),
                name,
                unsigned: ctype.to_ascii_lowercase().contains("unsigned"),
                primary_key: key_kind == "PRI",
                collation: coll,
                data_type: dtype.to_ascii_lowercase(),
            })
            .collect())
    }
}

fn map_stream_err(src: &SourceOpts, asked: &str, e: mysql_async::Error) -> ExtractError {
    match &e {
        mysql_async::Error::Server(se) if se.code == 1236 => ExtractError::BinlogPurged {
            position: asked.to_string(),
            detail: se.message.clone(),
        },
        _ => src.err(e),
    }
}

/// Now in µs (re-exported for status math).
pub fn now() -> i64 {
    now_us()
}
