//! Monitors: what one manager sees of every datasource.
//!
//! Every `probe-interval` each manager probes every member's MariaDB
//! (connect with the connect timeout, `SELECT @@read_only`) and replicator
//! (`GET /services/{service}/status` on its admin API), and sends the
//! result as one [`Report`] to the leader (the leader keeps its own). A
//! [`Prober`] remembers since when each database has been failing, so a
//! report says "down for N ms" and needs no clock agreement between hosts.
//!
//! The types here are the evidence the policy engine judges; they enter as
//! probe results and leave as JSON to the leader.

use crate::http::Client;
use carbide_config::{Config, RouterState};
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a database probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownKind {
    /// Connection refused: nothing listens (the server process is gone).
    Refused,
    /// No answer within the connect timeout (host or network down, or a
    /// hung server).
    Timeout,
    /// It answered with an error (authentication, SQL, protocol).
    Error,
}

/// A database as one manager saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DbHealth {
    /// It answered `SELECT @@read_only`.
    Up {
        /// Its `read_only`.
        read_only: bool,
    },
    /// It did not.
    Down {
        /// How.
        kind: DownKind,
        /// The client's error.
        message: String,
        /// How long its probes have failed without a success in between.
        for_ms: u64,
    },
}

impl DbHealth {
    /// Whether the probe succeeded.
    pub fn is_up(&self) -> bool {
        matches!(self, DbHealth::Up { .. })
    }

    /// How long it has been down (0 when up).
    pub fn down_for_ms(&self) -> u64 {
        match self {
            DbHealth::Up { .. } => 0,
            DbHealth::Down { for_ms, .. } => *for_ms,
        }
    }
}

/// The replicator status fields the manager uses (the replicator serves
/// many more; the names are Tungsten's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatorStatus {
    /// `master`, `slave`, `relay`.
    pub role: String,
    /// `ONLINE`, `OFFLINE:NORMAL`, `OFFLINE:ERROR`, ...
    pub state: String,
    /// Last seqno applied (on a master: extracted).
    pub applied_last_seqno: i64,
    /// Seconds behind the master of the last applied event.
    pub applied_latency: f64,
    /// Highest seqno in its THL.
    #[serde(default)]
    pub maximum_stored_seq_no: i64,
    /// The master it pulls THL from (`thl://host:port/`), slaves only.
    #[serde(default)]
    pub master_connect_uri: String,
    /// The pending error, when OFFLINE:ERROR.
    #[serde(default)]
    pub pending_error: String,
}

/// One datasource as one manager saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Its database.
    pub db: DbHealth,
    /// Its replicator, or why it could not be asked.
    pub replicator: Result<ReplicatorStatus, String>,
    /// How long the database probe took, ms.
    #[serde(default)]
    pub probe_ms: u64,
}

/// A connector's counters, as its manager reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorStats {
    /// The process id of the carbide process.
    pub pid: u32,
    /// The router state it applies (the committed one, or ONHOLD/OFFLINE
    /// while its manager is cut off from the majority).
    pub router: Option<RouterState>,
    /// Sessions accepted since start.
    pub created: u64,
    /// Sessions open now.
    pub active: u64,
    /// Sessions open now, per datasource.
    pub per_datasource: BTreeMap<String, u64>,
    /// Sessions created since start, per datasource.
    pub created_per_datasource: BTreeMap<String, u64>,
}

/// What one manager sends the leader every probe interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The reporting manager (member or witness name).
    pub observer: String,
    /// Every datasource it probed, by name.
    pub observations: BTreeMap<String, Observation>,
    /// Its connector, when it runs one.
    pub connector: Option<ConnectorStats>,
}

/// Probes every datasource of a dataservice, remembering failure streaks.
pub struct Prober {
    service: String,
    targets: Vec<Target>,
    connect_timeout: Duration,
    client: Client,
}

struct Target {
    name: String,
    opts: mysql_async::Opts,
    replicator: String,
    failing_since: Option<Instant>,
}

impl Prober {
    /// A prober of every member of `config`.
    pub fn new(config: &Config, client: Client) -> Self {
        let c = &config.credentials;
        let targets = config
            .members
            .iter()
            .map(|m| Target {
                name: m.name.clone(),
                opts: mysql_async::OptsBuilder::default()
                    .ip_or_hostname(m.mysql.host.clone())
                    .tcp_port(m.mysql.port)
                    .user(Some(c.user.clone()))
                    .pass(Some(c.password.clone()))
                    .prefer_socket(false)
                    .into(),
                replicator: m.replicator.to_string(),
                failing_since: None,
            })
            .collect();
        Prober {
            service: config.service.name.clone(),
            targets,
            connect_timeout: Duration::from_millis(config.timeouts.connect_ms),
            client,
        }
    }

    /// Probes every datasource concurrently.
    pub async fn probe_all(&mut self) -> BTreeMap<String, Observation> {
        let path = format!("/services/{}/status", self.service);
        let timeout = self.connect_timeout;
        let probes = self.targets.iter().map(|t| {
            let opts = t.opts.clone();
            let client = self.client.clone();
            let addr = t.replicator.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let db = probe_db(opts, timeout).await;
                let took = start.elapsed().as_millis() as u64;
                let repl = client
                    .get::<ReplicatorStatus>(&addr, &path, timeout)
                    .await
                    .map_err(|e| e.to_string());
                (db, repl, took)
            })
        });
        let handles: Vec<_> = probes.collect();
        let mut out = BTreeMap::new();
        let now = Instant::now();
        for (t, h) in self.targets.iter_mut().zip(handles) {
            let (db, replicator, probe_ms) = match h.await {
                Ok(v) => v,
                Err(e) => (
                    Err((DownKind::Error, format!("probe task failed: {e}"))),
                    Err("probe task failed".into()),
                    0,
                ),
            };
            let db = match db {
                Ok(read_only) => {
                    t.failing_since = None;
                    DbHealth::Up { read_only }
                }
                Err((kind, message)) => {
                    let since = *t.failing_since.get_or_insert(now);
                    DbHealth::Down {
                        kind,
                        message,
                        for_ms: now.duration_since(since).as_millis() as u64,
                    }
                }
            };
            out.insert(
                t.name.clone(),
                Observation {
                    db,
                    replicator,
                    probe_ms,
                },
            );
        }
        out
    }
}

/// Connects and asks `@@read_only`; the error says how it failed.
async fn probe_db(opts: mysql_async::Opts, timeout: Duration) -> Result<bool, (DownKind, String)> {
    let work = async {
        let mut conn = mysql_async::Conn::new(opts).await?;
        let ro: Option<u8> = conn.query_first("SELECT @@read_only").await?;
        let _ = conn.disconnect().await;
        Ok::<bool, mysql_async::Error>(ro.unwrap_or(0) != 0)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err((
            DownKind::Timeout,
            format!("no answer within {} ms", timeout.as_millis()),
        )),
        Ok(Ok(ro)) => Ok(ro),
        Ok(Err(e)) => Err(classify(&e)),
    }
}

fn classify(e: &mysql_async::Error) -> (DownKind, String) {
    if let mysql_async::Error::Io(mysql_async::IoError::Io(io)) = e {
        let kind = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => DownKind::Refused,
            std::io::ErrorKind::TimedOut => DownKind::Timeout,
            _ => DownKind::Error,
        };
        return (kind, io.to_string());
    }
    (DownKind::Error, e.to_string())
}
