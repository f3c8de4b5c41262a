//! One replicator service at runtime: the state machine plus the tasks
//! that carry out its actions.
//!
//! Commands enter through [`Service::online`], [`Service::offline`] and
//! [`Service::heartbeat`] (called by the admin API); they go through the
//! pure [`Machine`] and its [`Action`]s are executed here: the extractor
//! runs on its own thread (it does blocking THL IO) with a current-thread
//! tokio runtime, and reports back through its [`Progress`] watch and its
//! exit. Status leaves as a [`Status`] snapshot built from the machine and
//! the latest progress.

use super::state::{Action, Input, Machine, State};
use crate::apply::{self, ApplierConfig, ApplyProgress};
use crate::extract::source::{self, Stopped};
use crate::extract::{service_schema, ExtractError, ExtractorConfig, Progress, StopRequest};
use crate::thl::now_us;
use crate::thl::{DurableWatch, ThlWriter};
use crate::transfer::{self, ClientConfig, ClientProgress, ThlHub};
use carbide_config::Role;
use mysql_async::prelude::Queryable;
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the operator sees of a service (field names as in Tungsten's
/// `trepctl status`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub service_name: String,
    pub role: String,
    pub state: String,
    pub applied_last_seqno: i64,
    pub applied_last_event_id: String,
    pub applied_latency: f64,
    pub relative_latency: f64,
    pub minimum_stored_seq_no: i64,
    pub maximum_stored_seq_no: i64,
    pub latest_epoch_number: i64,
    pub master_connect_uri: String,
    pub master_listen_uri: String,
    pub pipeline_source: String,
    pub source_id: String,
    pub current_event_id: String,
    pub pending_error: String,
    pub pending_error_seqno: i64,
    pub pending_error_event_id: String,
    pub pending_exception_message: String,
    pub offline_requests: String,
    pub time_in_state_seconds: f64,
    pub uptime_seconds: f64,
    pub events_extracted: u64,
    pub transactions_extracted: u64,
    pub bytes_extracted: u64,
    pub last_heartbeat: String,
    pub host: String,
    pub data_server_host: String,
    pub version: String,
}

/// Static description of a service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// This member's role.
    pub role: Role,
    /// This member's name.
    pub member: String,
    /// THL server address (`thl://host:port/`).
    pub thl_uri: String,
    /// Extractor settings (master role); its `source` is also the local
    /// database the applier writes to, and its THL directory and writer
    /// settings are the service's.
    pub extractor: ExtractorConfig,
    /// The master's THL server `host:port` (slave and relay roles).
    pub master_thl: Option<String>,
    /// Applier: most transactions per database commit.
    pub block_commit: usize,
    /// Applier: parallel apply channels (by shard).
    pub channels: usize,
    /// Applier: most channels applying at once (0: one per CPU core).
    pub active_channels: usize,
    /// Applier: how row changes are applied.
    pub row_apply: crate::apply::RowApply,
    /// Connect to the master's THL server with TLS, trusting this CA
    /// bundle (PEM).
    pub thl_tls_ca: Option<std::path::PathBuf>,
    /// The dataservice secret: the THL hello proves it to the master, and
    /// the admin API asks for it on this service's mutating routes.
    pub secret: Option<crate::auth::Secret>,
}

struct Inner {
    machine: Machine,
    since: Instant,
    stop: Option<watch::Sender<StopRequest>>,
    progress: watch::Receiver<Progress>,
    client: watch::Receiver<ClientProgress>,
    apply: watch::Receiver<ApplyProgress>,
    /// Master THL server `host:port` (slave, relay); `setrole -uri` sets it.
    master_thl: Option<String>,
    /// Seqnos the applier skips on its next run (`online -skip-seqno`).
    skip: Vec<u64>,
    /// Where the extractor starts on its next run (`online -from-event`).
    from_event: Option<crate::extract::StartPosition>,
}

/// A running service.
pub struct Service {
    spec: ServiceSpec,
    started: Instant,
    inner: Mutex<Inner>,
    /// Bumped on every state change (tests and `trepctl wait` poll it).
    changes: watch::Sender<u64>,
    /// The durable position of the open THL writer (for the THL server).
    hub: ThlHub,
}

/// Errors of service commands.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command does not apply in this state or role.
    #[error("{0}")]
    Rejected(String),
    /// Talking to the database failed.
    #[error("{0}")]
    Database(String),
    /// Waiting for the outcome took too long.
    #[error("{0}")]
    Timeout(String),
}

impl Service {
    /// A service in OFFLINE:NORMAL.
    pub fn new(spec: ServiceSpec) -> Arc<Service> {
        let (_tx, progress) = watch::channel(Progress::default());
        Arc::new(Service {
            inner: Mutex::new(Inner {
                machine: Machine::new(spec.role),
                since: Instant::now(),
                stop: None,
                progress,
                client: watch::channel(ClientProgress::default()).1,
                apply: watch::channel(ApplyProgress::default()).1,
                master_thl: spec.master_thl.clone(),
                skip: Vec::new(),
                from_event: None,
            }),
            spec,
            started: Instant::now(),
            changes: watch::channel(0).0,
            hub: watch::channel(None).0,
        })
    }

    /// Service name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The durable position of the service's open THL writer, if any.
    pub fn thl_watch(&self) -> watch::Receiver<Option<DurableWatch>> {
        self.hub.subscribe()
    }

    /// This member's name.
    pub fn member(&self) -> &str {
        &self.spec.member
    }

    /// The dataservice secret, if configured.
    pub fn secret(&self) -> Option<&crate::auth::Secret> {
        self.spec.secret.as_ref()
    }

    /// The THL directory.
    pub fn thl_dir(&self) -> &std::path::Path {
        &self.spec.extractor.thl_dir
    }

    /// A receiver bumped at every state change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn input(self: &Arc<Self>, input: Input) -> Result<(), CommandError> {
        let mut g = self.lock();
        let before = g.machine.state();
        let actions = g.machine.handle(input);
        if g.machine.state() != before {
            g.since = Instant::now();
            tracing::info!(service = %self.spec.name, from = before.as_str(), to = g.machine.state().as_str(), "state change");
        }
        let mut result = Ok(());
        for a in actions {
            match a {
                Action::Reject(msg) => result = Err(CommandError::Rejected(msg)),
                Action::Stop(req) => {
                    if let Some(s) = &g.stop {
                        let _ = s.send(req);
                    }
                }
                Action::StartExtractor => {
                    let (stop_tx, stop_rx) = watch::channel(StopRequest::Run);
                    let (ptx, prx) = watch::channel(Progress::default());
                    g.stop = Some(stop_tx);
                    g.progress = prx.clone();
                    let from = g.from_event.take();
                    self.spawn_extractor(stop_rx, ptx, prx, from);
                }
                Action::StartSlave => {
                    let (stop_tx, stop_rx) = watch::channel(StopRequest::Run);
                    let (ctx, crx) = watch::channel(ClientProgress::default());
                    let (atx, arx) = watch::channel(ApplyProgress::default());
                    g.stop = Some(stop_tx);
                    g.client = crx.clone();
                    g.apply = arx;
                    let master = g.master_thl.clone();
                    let skip = std::mem::take(&mut g.skip);
                    self.spawn_slave(stop_rx, ctx, crx, atx, master, skip);
                }
            }
        }
        drop(g);
        self.changes.send_modify(|n| *n += 1);
        result
    }

    fn spawn_extractor(
        self: &Arc<Self>,
        stop: watch::Receiver<StopRequest>,
        ptx: watch::Sender<Progress>,
        prx: watch::Receiver<Progress>,
        from_event: Option<crate::extract::StartPosition>,
    ) {
        let cfg = self.spec.extractor.clone();
        let me = Arc::clone(self);
        // connected/disconnected reports
        self.watch_connected(prx, |p: &Progress| p.connected);
        let spawned = std::thread::Builder::new()
            .name(format!("extract-{}", self.spec.name))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let res: Result<Stopped, ExtractError> = match rt {
                    Ok(rt) => {
                        let last = ptx.subscribe();
                        let r = rt.block_on(source::run_published(
                            cfg,
                            stop,
                            ptx,
                            Some(&me.hub),
                            from_event,
                        ));
                        drop(last);
                        r
                    }
                    Err(e) => Err(ExtractError::Config(format!("cannot start a runtime: {e}"))),
                };
                let p = me.lock().progress.borrow().clone();
                let input = match res {
                    Ok(_) => Input::Stopped,
                    Err(e) => {
                        tracing::error!(service = %me.spec.name, error = %e, "extractor failed");
                        Input::Failed {
                            error: e.to_string(),
                            seqno: p.last_seqno,
                            eventid: p.last_eventid,
                        }
                    }
                };
                let _ = me.input(input);
            });
        if let Err(e) = spawned {
            let _ = self.input(Input::Failed {
                error: format!("cannot start the extractor thread: {e}"),
                seqno: None,
                eventid: None,
            });
        }
    }

    /// Turns a pipeline's progress channel into Connected/Disconnected
    /// inputs (and wakes status watchers on every progress change).
    fn watch_connected<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        mut rx: watch::Receiver<T>,
        connected: fn(&T) -> bool,
    ) {
        let watcher = Arc::clone(self);
        tokio::spawn(async move {
            let mut was = false;
            loop {
                let now = connected(&rx.borrow_and_update());
                if now != was {
                    was = now;
                    let _ = watcher.input(if now {
                        Input::Connected
                    } else {
                        Input::Disconnected
                    });
                }
                watcher.changes.send_modify(|n| *n += 1);
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    fn spawn_slave(
        self: &Arc<Self>,
        stop: watch::Receiver<StopRequest>,
        ctx: watch::Sender<ClientProgress>,
        crx: watch::Receiver<ClientProgress>,
        atx: watch::Sender<ApplyProgress>,
        master: Option<String>,
        skip: Vec<u64>,
    ) {
        self.watch_connected(crx, |p: &ClientProgress| p.connected);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("slave-{}", self.spec.name))
            .spawn(move || {
                let input = match me.run_slave(stop, ctx, atx, master, skip) {
                    Ok(()) => Input::Stopped,
                    Err(error) => {
                        tracing::error!(service = %me.spec.name, %error, "replica pipeline failed");
                        let a = me.lock().apply.borrow().clone();
                        let (seqno, eventid) = match a.failed {
                            Some((s, id)) => (Some(s), Some(id)),
                            None => (a.applied_seqno, a.applied_eventid),
                        };
                        Input::Failed {
                            error,
                            seqno,
                            eventid,
                        }
                    }
                };
                let _ = me.input(input);
            });
        if let Err(e) = spawned {
            let _ = self.input(Input::Failed {
                error: format!("cannot start the replica thread: {e}"),
                seqno: None,
                eventid: None,
            });
        }
    }

    /// The replica pipeline: THL client → THL → applier → local database.
    /// Runs on its own thread until stopped or failed.
    fn run_slave(
        self: &Arc<Self>,
        stop: watch::Receiver<StopRequest>,
        ctx: watch::Sender<ClientProgress>,
        atx: watch::Sender<ApplyProgress>,
        master: Option<String>,
        skip: Vec<u64>,
    ) -> Result<(), String> {
        let ex = &self.spec.extractor;
        let master = master.ok_or_else(|| {
            "no master THL address: give one with setrole -uri thl://host:port/ \
             or name a master member in the config"
                .to_string()
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let mut writer =
            ThlWriter::open(&ex.thl_dir, ex.writer.clone()).map_err(|e| e.to_string())?;
        // An empty log continues after the database's applied position.
        let start_after = if writer.last_seqno().is_none() {
            rt.block_on(async {
                let mut c = ex.source.connect().await.map_err(|e| e.to_string())?;
                let p = apply::ensure_catalog(&mut c, &self.spec.name).await;
                let _ = c.disconnect().await;
                p
            })
            .map_err(|e| format!("applier database {}: {e}", ex.source.addr()))
            .map(|p| (p.seqno >= 0 && p.epoch >= 0).then_some((p.seqno as u64, p.epoch as u64)))?
        } else {
            None
        };
        let durable = writer.durable_watch();
        self.hub.send_replace(Some(durable.clone()));
        let (kill_tx, kill_rx) = watch::channel(false);
        let kill_tx = Arc::new(kill_tx);
        let acfg = ApplierConfig {
            service: self.spec.name.clone(),
            target: ex.source.clone(),
            thl_dir: ex.thl_dir.clone(),
            block_commit: self.spec.block_commit,
            channels: self.spec.channels,
            active_channels: self.spec.active_channels,
            member: self.spec.member.clone(),
            skip,
            row_apply: self.spec.row_apply,
            event_server_id: None,
            session_server_id: None,
        };
        let astop = stop.clone();
        let akill = Arc::clone(&kill_tx);
        let applier = std::thread::Builder::new()
            .name(format!("apply-{}", self.spec.name))
            .spawn(move || {
                let r = apply::run_blocking(&acfg, durable, astop, &atx);
                if let Err(e) = &r {
                    if let Some(seqno) = e.seqno() {
                        let id = e.eventid().unwrap_or("NONE").to_string();
                        atx.send_modify(|p| p.failed = Some((seqno, id)));
                    }
                }
                akill.send_replace(true);
                r
            })
            .map_err(|e| format!("cannot start the applier thread: {e}"))?;
        let tls = match &self.spec.thl_tls_ca {
            Some(ca) => Some(transfer::tls::connector(ca)?),
            None => None,
        };
        let ccfg = ClientConfig {
            tls,
            secret: self.spec.secret.clone(),
            service: self.spec.name.clone(),
            member: self.spec.member.clone(),
            master: master.clone(),
            read_timeout: ex.heartbeat_period.max(Duration::from_millis(500)) * 6,
            connect_timeout: ex.source.connect_timeout,
            start_after,
        };
        let client = rt.block_on(async {
            let fwd_kill = Arc::clone(&kill_tx);
            let mut fwd_stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    if *fwd_stop.borrow_and_update() == StopRequest::Now {
                        fwd_kill.send_replace(true);
                    }
                    if fwd_stop.changed().await.is_err() {
                        return;
                    }
                }
            });
            transfer::client::run(&ccfg, &mut writer, kill_rx, &ctx).await
        });
        ctx.send_modify(|p| p.connected = false);
        let close = writer.close();
        self.hub.send_replace(None);
        let applied = applier
            .join()
            .map_err(|_| "the applier thread panicked".to_string())?;
        applied.map_err(|e| e.to_string())?;
        client.map_err(|e| format!("THL from {master}: {e}"))?;
        close.map_err(|e| e.to_string())
    }

    /// `trepctl online`.
    pub fn online(self: &Arc<Self>) -> Result<(), CommandError> {
        self.input(Input::Online)
    }

    /// `trepctl online [-skip-seqno N,M] [-until-seqno N] [-from-event ID]`:
    /// a slave's applier skips the listed seqnos (recording them as
    /// applied); the service goes offline once `until` is applied (stored,
    /// on a master); a master extracts from binlog position `ID`.
    pub fn online_with(
        self: &Arc<Self>,
        skip: Vec<u64>,
        until: Option<u64>,
        from_event: Option<&str>,
    ) -> Result<(), CommandError> {
        {
            let mut g = self.lock();
            let from = match from_event {
                None => None,
                Some(_) if g.machine.role() != Role::Master => {
                    return Err(CommandError::Rejected(
                        "online -from-event applies to a master (extraction)".into(),
                    ))
                }
                Some(e) => Some(
                    crate::extract::BinlogPos::parse_eventid(e)
                        .map(crate::extract::StartPosition::At)
                        .ok_or_else(|| {
                            CommandError::Rejected(format!(
                                "-from-event '{e}': expected FILE:OFFSET[;session]"
                            ))
                        })?,
                ),
            };
            if !skip.is_empty() && !matches!(g.machine.role(), Role::Slave | Role::Relay) {
                return Err(CommandError::Rejected(
                    "online -skip-seqno applies to slaves and relays".into(),
                ));
            }
            if !matches!(
                g.machine.state(),
                State::OfflineNormal | State::OfflineError
            ) {
                return Err(CommandError::Rejected(format!(
                    "the service is already {}",
                    g.machine.state().as_str()
                )));
            }
            g.skip = skip;
            g.from_event = from;
        }
        self.input(Input::Online)?;
        if let Some(n) = until {
            self.input(Input::OfflineAtSeqno(n))?;
        }
        Ok(())
    }

    /// `trepctl setrole -role R [-uri thl://host:port/]` (offline only).
    pub fn setrole(self: &Arc<Self>, role: Role, uri: Option<&str>) -> Result<(), CommandError> {
        if !matches!(role, Role::Master | Role::Slave | Role::Relay) {
            return Err(CommandError::Rejected(format!(
                "setrole: role must be master, slave or relay, not {}",
                role.as_str()
            )));
        }
        let master = match uri {
            Some(u) => Some(transfer::parse_thl_uri(u).ok_or_else(|| {
                CommandError::Rejected(format!(
                    "setrole: bad -uri '{u}' (expected thl://host:port/)"
                ))
            })?),
            None => None,
        };
        self.input(Input::SetRole(role))?;
        if master.is_some() {
            self.lock().master_thl = master;
        }
        Ok(())
    }

    /// `trepctl offline` (now, at a transaction boundary) or
    /// `offline -at-seqno N`.
    pub fn offline(self: &Arc<Self>, at_seqno: Option<u64>) -> Result<(), CommandError> {
        match at_seqno {
            Some(n) => self.input(Input::OfflineAtSeqno(n)),
            None => self.input(Input::Offline),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.lock().machine.state()
    }

    /// Latest extractor progress.
    pub fn progress(&self) -> Progress {
        self.lock().progress.borrow().clone()
    }

    /// Status snapshot.
    pub fn status(&self) -> Status {
        let mut st = self.base_status();
        let g = self.lock();
        if matches!(g.machine.role(), Role::Slave | Role::Relay) {
            let c = g.client.borrow().clone();
            let a = g.apply.borrow().clone();
            let uri = g
                .master_thl
                .as_ref()
                .map_or(String::new(), |m| format!("thl://{m}/"));
            st.applied_last_seqno = a.applied_seqno.map_or(-1, |s| s as i64);
            st.applied_last_event_id = a.applied_eventid.unwrap_or_else(|| "NONE".into());
            st.applied_latency = if a.source_tstamp_us > 0 {
                a.applied_latency
            } else {
                -1.0
            };
            st.relative_latency = if a.source_tstamp_us > 0 {
                ((now_us() - a.source_tstamp_us) as f64 / 1e6).max(0.0)
            } else {
                -1.0
            };
            st.minimum_stored_seq_no = c.min_seqno.map_or(-1, |s| s as i64);
            st.maximum_stored_seq_no = c.last_seqno.map_or(-1, |s| s as i64);
            st.latest_epoch_number = c.last_epoch.map_or(-1, |s| s as i64);
            st.pipeline_source = uri.clone();
            st.master_connect_uri = uri;
            st.current_event_id = "NONE".into();
            st.pending_exception_message = c.last_error.unwrap_or_else(|| "NONE".into());
            st.events_extracted = 0;
            st.transactions_extracted = c.transactions;
            st.bytes_extracted = c.bytes;
            st.last_heartbeat = "NONE".into();
        }
        st
    }

    fn base_status(&self) -> Status {
        let g = self.lock();
        let p = g.progress.borrow().clone();
        let m = &g.machine;
        let now = now_us();
        let secs = |us: i64| us as f64 / 1e6;
        let pend = m.pending_error();
        let src = &self.spec.extractor.source;
        Status {
            service_name: self.spec.name.clone(),
            role: m.role().as_str().to_string(),
            state: m.state().as_str().to_string(),
            applied_last_seqno: p.last_seqno.map_or(-1, |s| s as i64),
            applied_last_event_id: p.last_eventid.clone().unwrap_or_else(|| "NONE".into()),
            applied_latency: if p.last_source_tstamp_us > 0 {
                secs(p.last_extract_tstamp_us - p.last_source_tstamp_us).max(0.0)
            } else {
                -1.0
            },
            relative_latency: if p.last_source_tstamp_us > 0 {
                secs(now - p.last_source_tstamp_us).max(0.0)
            } else {
                -1.0
            },
            minimum_stored_seq_no: p.min_seqno.map_or(-1, |s| s as i64),
            maximum_stored_seq_no: p.last_seqno.map_or(-1, |s| s as i64),
            latest_epoch_number: if m.role() == Role::Master {
                p.epoch as i64
            } else {
                -1
            },
            master_connect_uri: String::new(),
            master_listen_uri: self.spec.thl_uri.clone(),
            pipeline_source: format!("jdbc:mysql:thin://{}:{}/", src.host, src.port),
            source_id: self.spec.member.clone(),
            current_event_id: p.position.clone().unwrap_or_else(|| "NONE".into()),
            pending_error: pend.map_or("NONE".into(), |e| e.message.clone()),
            pending_error_seqno: pend.and_then(|e| e.seqno).map_or(-1, |s| s as i64),
            pending_error_event_id: pend
                .and_then(|e| e.eventid.clone())
                .unwrap_or_else(|| "NONE".into()),
            pending_exception_message: p.last_error.clone().unwrap_or_else(|| "NONE".into()),
            offline_requests: m.offline_at().map_or("NONE".into(), |n| {
                format!("Offline at sequence number: {n}")
            }),
            time_in_state_seconds: g.since.elapsed().as_secs_f64(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            events_extracted: p.events,
            transactions_extracted: p.transactions,
            bytes_extracted: p.bytes,
            last_heartbeat: p
                .last_heartbeat
                .as_ref()
                .map_or("NONE".into(), |h| h.0.clone()),
            host: self.spec.member.clone(),
            data_server_host: src.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// `trepctl reset [-thl] [-db]` (offline only): removes the THL
    /// segments and/or drops `tungsten_<service>` (not binlogged) so the
    /// service starts from scratch.
    pub async fn reset(&self, thl: bool, db: bool) -> Result<Vec<String>, CommandError> {
        let state = self.state();
        if !matches!(state, State::OfflineNormal | State::OfflineError)
            || self.hub.borrow().is_some()
        {
            return Err(CommandError::Rejected(format!(
                "reset needs the service offline; it is {}",
                state.as_str()
            )));
        }
        let mut done = Vec::new();
        if thl {
            let dir = &self.spec.extractor.thl_dir;
            let mut n = 0;
            if dir.exists() {
                let entries = std::fs::read_dir(dir)
                    .map_err(|e| CommandError::Rejected(format!("{}: {e}", dir.display())))?;
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with("thl.data.") {
                        std::fs::remove_file(e.path()).map_err(|err| {
                            CommandError::Rejected(format!("{}: {err}", e.path().display()))
                        })?;
                        n += 1;
                    }
                }
            }
            done.push(format!("removed {n} THL segment(s) from {}", dir.display()));
        }
        if db {
            let schema = service_schema(&self.spec.name);
            let mut conn = self
                .spec
                .extractor
                .source
                .connect()
                .await
                .map_err(|e| CommandError::Database(e.to_string()))?;
            let q = format!("SET SESSION sql_log_bin = 0; DROP DATABASE IF EXISTS `{schema}`");
            conn.query_drop(q)
                .await
                .map_err(|e| CommandError::Database(e.to_string()))?;
            let _ = conn.disconnect().await;
            done.push(format!("dropped schema {schema}"));
        }
        let mut g = self.lock();
        g.progress = watch::channel(Progress::default()).1;
        g.client = watch::channel(ClientProgress::default()).1;
        g.apply = watch::channel(ApplyProgress::default()).1;
        Ok(done)
    }

    /// `trepctl purge`: kills every other client session on the local
    /// database (used before a switch so no write lands on the old
    /// master). Returns how many were killed.
    pub async fn purge(&self) -> Result<usize, CommandError> {
        let mut conn = self
            .spec
            .extractor
            .source
            .connect()
            .await
            .map_err(|e| CommandError::Database(e.to_string()))?;
        let ids: Vec<u64> = conn
            .query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
                 AND COMMAND NOT IN ('Binlog Dump', 'Daemon') \
                 AND USER NOT IN ('system user', 'event_scheduler')",
            )
            .await
            .map_err(|e| CommandError::Database(e.to_string()))?;
        let mut killed = 0;
        for id in ids {
            // a session may end on its own in between
            if conn
                .query_drop(format!("KILL CONNECTION {id}"))
                .await
                .is_ok()
            {
                killed += 1;
            }
        }
        let _ = conn.disconnect().await;
        Ok(killed)
    }

    /// `trepctl heartbeat`: writes a heartbeat row on the source and waits
    /// until the extractor has stored it. Returns (seqno, latency seconds
    /// from the source commit to the THL).
    pub async fn heartbeat(&self, name: &str) -> Result<(u64, f64), CommandError> {
        if self.lock().machine.role() != Role::Master {
            return Err(CommandError::Rejected(
                "heartbeat is inserted on the master; run it there".into(),
            ));
        }
        if self.state() != State::Online {
            return Err(CommandError::Rejected(format!(
                "heartbeat needs the service ONLINE; it is {}",
                self.state().as_str()
            )));
        }
        if name.is_empty() || name.len() > 128 {
            return Err(CommandError::Rejected(
                "heartbeat name must be 1-128 characters".into(),
            ));
        }
        let salt = now_us();
        let tag = format!("{name}#{salt}");
        let schema = service_schema(&self.spec.name);
        let mut conn = self
            .spec
            .extractor
            .source
            .connect()
            .await
            .map_err(|e| CommandError::Database(e.to_string()))?;
        let sql = [
            format!("CREATE DATABASE IF NOT EXISTS `{schema}`"),
            format!(
                "CREATE TABLE IF NOT EXISTS `{schema}`.heartbeat (id BIGINT PRIMARY KEY, \
                 seqno BIGINT, eventid VARCHAR(128), source_tstamp TIMESTAMP(6) NULL, \
                 target_tstamp TIMESTAMP(6) NULL, lag_millis BIGINT, salt BIGINT, name VARCHAR(256))"
            ),
        ];
        for q in &sql {
            conn.query_drop(q)
                .await
                .map_err(|e| CommandError::Database(e.to_string()))?;
        }
        conn.exec_drop(
            format!(
                "REPLACE INTO `{schema}`.heartbeat (id, source_tstamp, salt, name) \
                 VALUES (1, NOW(6), ?, ?)"
            ),
            (salt, tag.as_str()),
        )
        .await
        .map_err(|e| CommandError::Database(e.to_string()))?;
        let _ = conn.disconnect().await;
        let mut rx = self.lock().progress.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((n, seqno, src, ext)) = rx.borrow_and_update().last_heartbeat.clone() {
                if n == tag {
                    let _ = src;
                    return Ok((seqno, ((ext - salt) as f64 / 1e6).max(0.0)));
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(CommandError::Timeout(format!(
                    "heartbeat {name} was not extracted within 30 s"
                )));
            }
        }
    }
}
