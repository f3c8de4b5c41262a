//! Test harness: real MariaDB servers on free loopback ports in temp dirs.
//!
//! `MariaDb::start().await` runs `mariadb-install-db` into a fresh temp dir
//! (about a second), then `mariadbd` with small buffers, binlog on in ROW
//! format with FULL row image and metadata, and a unique `server_id`. The
//! server is started under `setpriv --pdeathsig KILL`, so it dies with the
//! test process even when that is killed; `Drop` kills it and removes the
//! dir, also when a test panics. `Cluster::new(3).start().await` starts
//! several at once. Data enters through `sql()`/`query()` (mysql_async as
//! root) and leaves through `query()` and `checksum_all_tables()`.
#![allow(dead_code)]

pub mod carbide;
pub mod dataservice;
pub mod faultproxy;
pub mod replicator;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_SERVER_ID: AtomicU32 = AtomicU32::new(1);

/// A free TCP port on 127.0.0.1 that no other caller in this test process
/// has been given.
///
/// Ports come from 20000–32767, below Linux's ephemeral range (32768+), so an
/// outgoing connection cannot take one between this check and the server's
/// bind; the start point is spread by pid so concurrent test binaries rarely
/// meet. Asking the kernel for port 0 instead can hand out the same port twice
/// once the probe socket is closed, which gave two members one THL address.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = (std::process::id().wrapping_mul(2_654_435_761)) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + n % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{LOW}-{}", LOW + SPAN - 1);
}

/// Options for one server before it starts.
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    server_id: Option<u32>,
    args: Vec<String>,
    binlog: bool,
}

impl MariaDbBuilder {
    /// Sets the server_id (default: unique per test process, from 1).
    pub fn server_id(mut self, id: u32) -> Self {
        self.server_id = Some(id);
        self
    }

    /// Adds a mariadbd option (`--binlog-format=STATEMENT`); later options
    /// override the harness defaults.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Starts without a binary log.
    pub fn no_binlog(mut self) -> Self {
        self.binlog = false;
        self
    }

    /// Installs and starts the server; panics with the server's error log
    /// when it cannot start.
    pub async fn start(self) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("carbide-mariadb-")
            .tempdir()
            .expect("create temp dir");
        let server_id = self
            .server_id
            .unwrap_or_else(|| NEXT_SERVER_ID.fetch_add(1, Ordering::SeqCst));
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("create server tmpdir");
        let out = tokio::process::Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--skip-name-resolve")
            .args(user_arg())
            .args(INNODB_ARGS)
            .output()
            .await
            .expect(
                "run mariadb-install-db (is mariadb-server installed? scripts/test.sh installs it)",
            );
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb {
            port: 0,
            server_id,
            dir,
            args: self.args,
            binlog: self.binlog,
            child: None,
        };
        db.launch().await;
        db
    }
}

const INNODB_ARGS: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-log-buffer-size=4M",
];

fn user_arg() -> Vec<String> {
    if rustix::process::geteuid().is_root() {
        vec!["--user=root".to_string()]
    } else {
        Vec::new()
    }
}

/// One running (or stopped) MariaDB server owned by a test.
pub struct MariaDb {
    /// Its TCP port on 127.0.0.1 (kept across restarts).
    pub port: u16,
    /// Its `server_id`.
    pub server_id: u32,
    dir: tempfile::TempDir,
    args: Vec<String>,
    binlog: bool,
    child: Option<Child>,
}

impl MariaDb {
    /// A builder for a server with non-default options.
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder {
            server_id: None,
            args: Vec::new(),
            binlog: true,
        }
    }

    /// Starts a server with the defaults.
    pub async fn start() -> MariaDb {
        MariaDb::builder().start().await
    }

    /// The temp dir holding `data/`, the socket and `error.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the server's error log.
    pub fn error_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Connection options for root over TCP.
    pub fn opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("root"))
            .prefer_socket(false)
            .into()
    }

    /// A new root connection.
    pub async fn conn(&self) -> Conn {
        Conn::new(self.opts())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr()))
    }

    /// Runs statements (several allowed, `;`-separated), panicking on error.
    pub async fn sql(&self, q: &str) {
        let mut c = self.conn().await;
        c.query_drop(q)
            .await
            .unwrap_or_else(|e| panic!("{q} on {}: {e}", self.addr()));
        let _ = c.disconnect().await;
    }

    /// Runs a query and returns its rows.
    pub async fn query<T: FromRow + Send + 'static>(&self, q: &str) -> Vec<T> {
        let mut c = self.conn().await;
        let rows = c
            .query(q)
            .await
            .unwrap_or_else(|e| panic!("{q} on {}: {e}", self.addr()));
        let _ = c.disconnect().await;
        rows
    }

    /// [`MariaDb::checksum_all_tables`] without the replicator's own
    /// `tungsten_*` schemas (their rows differ by member by design).
    pub async fn user_checksums(&self) -> BTreeMap<String, u64> {
        self.checksum_all_tables()
            .await
            .into_iter()
            .filter(|(k, _)| !k.starts_with("tungsten_"))
            .collect()
    }

    /// `CHECKSUM TABLE` of every base table outside the system schemas,
    /// keyed by `schema.table`.
    pub async fn checksum_all_tables(&self) -> BTreeMap<String, u64> {
        let tables: Vec<(String, String)> = self
            .query(
                "SELECT table_schema, table_name FROM information_schema.tables \
                 WHERE table_type = 'BASE TABLE' AND table_schema NOT IN \
                 ('mysql', 'information_schema', 'performance_schema', 'sys') \
                 ORDER BY 1, 2",
            )
            .await;
        let mut out = BTreeMap::new();
        let mut c = self.conn().await;
        for (schema, table) in tables {
            let q = format!("CHECKSUM TABLE `{schema}`.`{table}`");
            let row: Option<(String, Option<u64>)> = c
                .query_first(&q)
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            let sum = row.and_then(|(_, s)| s).unwrap_or(0);
            out.insert(format!("{schema}.{table}"), sum);
        }
        let _ = c.disconnect().await;
        out
    }

    /// Kills the server with SIGKILL and reaps it.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (a clean shutdown) and waits for it.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server on port {} did not stop within 60 s", self.port);
    }

    /// Starts a stopped or killed server again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.launch().await;
    }

    /// Spawns mariadbd and waits until it accepts root logins. Picks a new
    /// free port when this one turns out to be taken.
    async fn launch(&mut self) {
        for attempt in 0..5 {
            if self.port == 0 || attempt > 0 {
                self.port = free_port();
            }
            let d = self.dir.path();
            let mut cmd = Command::new("setpriv");
            cmd.args(["--pdeathsig", "KILL", "--", "mariadbd", "--no-defaults"])
                .arg(format!("--datadir={}", d.join("data").display()))
                .arg(format!("--tmpdir={}", d.join("tmp").display()))
                .arg(format!("--socket={}", d.join("mysqld.sock").display()))
                .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
                .arg(format!("--log-error={}", d.join("error.log").display()))
                .arg(format!("--port={}", self.port))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--server-id={}", self.server_id))
                .args(user_arg())
                .args(INNODB_ARGS)
                .args([
                    "--skip-name-resolve",
                    "--performance-schema=OFF",
                    "--innodb-flush-log-at-trx-commit=2",
                    "--sync-binlog=0",
                    "--max-connections=1000",
                    "--local-infile=1",
                    "--max-allowed-packet=64M",
                ]);
            if self.binlog {
                cmd.args([
                    "--log-bin=mariadb-bin",
                    "--binlog-format=ROW",
                    "--binlog-row-image=FULL",
                    "--binlog-row-metadata=FULL",
                ]);
            }
            cmd.args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd.spawn().expect("spawn mariadbd via setpriv");
            self.child = Some(child);
            match self.wait_ready().await {
                Ok(()) => return,
                Err(exited) => {
                    let log = self.error_log_tail();
                    self.kill9().await;
                    let port_taken = log.contains("already in use")
                        || log.contains("Do you already have another");
                    if exited && port_taken && attempt < 4 {
                        continue;
                    }
                    panic!("mariadbd on port {} did not start:\n{log}", self.port);
                }
            }
        }
    }

    /// Ok when root can log in; Err(true) when the process exited,
    /// Err(false) on timeout.
    async fn wait_ready(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return Err(true);
                }
            }
            if let Ok(Ok(c)) =
                tokio::time::timeout(Duration::from_secs(2), Conn::new(self.opts())).await
            {
                let _ = c.disconnect().await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(false)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Several servers started together.
pub struct Cluster {
    n: usize,
    builder: MariaDbBuilder,
}

impl Cluster {
    /// A cluster of `n` servers with default options.
    pub fn new(n: usize) -> Cluster {
        Cluster {
            n,
            builder: MariaDb::builder(),
        }
    }

    /// Adds a mariadbd option to every server.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.builder = self.builder.arg(a);
        self
    }

    /// Starts all servers concurrently.
    pub async fn start(self) -> Vec<MariaDb> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.n {
            let b = self.builder.clone();
            set.spawn(async move { (i, b.start().await) });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(v) => out.push(v),
                Err(e) => panic!("starting a cluster member failed: {e}"),
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, db)| db).collect()
    }
}
