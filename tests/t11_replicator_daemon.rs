//! The `carbide-replicator` daemon and `trepctl` against real MariaDB:
//! states, status fields, online/offline/wait, heartbeats, clear errors,
//! and exactly-once extraction across `kill -9` of the daemon under load
//! (checked against the server's binlog read with `mariadb-binlog`); the
//! dataservice secret on the admin API (every POST refused without it or
//! with a wrong one, GETs open, `trepctl` reading it from `-conf`,
//! `$CARBIDE_SECRET` or `$CARBIDE_CONFIG`) and the daemon refusing to start
//! without one unless `--insecure-no-secret`.
#![allow(clippy::unwrap_used)]

mod support;

use carbide_replicator::thl::ThlReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, MariaDb};

/// Path of a `carbide-replicator` package binary, built on first use (a
/// root-package test does not get other packages' `CARGO_BIN_EXE_*`).
fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "carbide-replicator", "--bins"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "building carbide-replicator binaries failed");
        dir
    });
    dir.join(name)
}

struct Daemon {
    child: Option<Child>,
    config: PathBuf,
    member: String,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, member: &str, port: u16, log: &Path) -> Daemon {
        let mut d = Daemon {
            child: None,
            config: config.to_path_buf(),
            member: member.into(),
            port,
            log: log.to_path_buf(),
        };
        support::replicator::register(port, config);
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(bin("carbide-replicator"))
            .arg("--config")
            .arg(&self.config)
            .args([
                "--member",
                &self.member,
                "--start",
                "earliest",
                "--heartbeat-period-ms",
                "500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // wait for the admin port
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "daemon did not listen: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `trepctl -conf CONFIG -port PORT ARGS…`, with the config the daemon on
/// the port runs with (it holds the secret).
fn trepctl(port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("trepctl"));
    if let Some(c) = support::replicator::config_of(port) {
        cmd.arg("-conf").arg(c);
    }
    cmd.env_remove("CARBIDE_SECRET")
        .env_remove("CARBIDE_CONFIG")
        .args(["-host", "127.0.0.1", "-port", &port.to_string()])
        .args(args)
        .output()
        .unwrap()
}

fn ok(port: u16, args: &[&str]) -> String {
    let out = trepctl(port, args);
    assert!(
        out.status.success(),
        "trepctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(port: u16) -> serde_json::Value {
    serde_json::from_str(&ok(port, &["status", "-json"])).unwrap()
}

fn write_config(dir: &Path, db: &MariaDb, repl_ports: (u16, u16)) -> PathBuf {
    let text = format!(
        "[service]\nname = \"alpha\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n\n\
         [[member]]\nname = \"db1\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"master\"\n\n\
         [[member]]\nname = \"db2\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\n",
        dir.join("thl").display(),
        db.port,
        repl_ports.0,
        free_port(),
        free_port(),
        free_port(),
        repl_ports.1,
        free_port(),
        free_port(),
    );
    let text = text + &support::replicator::security(dir);
    let p = dir.join("carbide.toml");
    std::fs::write(&p, text).unwrap();
    p
}

async fn master_eventid_pos(db: &MariaDb) -> (String, u64) {
    let rows: Vec<(String, u64, String, String)> = db.query("SHOW MASTER STATUS").await;
    (rows[0].0.clone(), rows[0].1)
}

async fn wait_caught_up(db: &MariaDb, port: u16) {
    let (file, pos) = master_eventid_pos(db).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(port);
        let id = st["appliedLastEventId"].as_str().unwrap_or("").to_string();
        if let Some((f, rest)) = id.split_once(':') {
            let p: u64 = rest.split(';').next().unwrap_or("0").parse().unwrap_or(0);
            if (f.to_string(), p) >= (file.clone(), pos) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not caught up to {file}:{pos}: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trepctl_drives_the_daemon() {
    let db = MariaDb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let cfg = write_config(dir.path(), &db, (p1, p2));
    let d = Daemon::start(&cfg, "db1", p1, &dir.path().join("db1.log"));
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    for i in 0..20 {
        db.sql(&format!("INSERT INTO app.t VALUES ({i}, 'v{i}')"))
            .await;
    }
    wait_caught_up(&db, p1).await;
    let st = status(p1);
    assert_eq!(st["state"], "ONLINE");
    assert_eq!(st["role"], "master");
    assert_eq!(st["serviceName"], "alpha");
    assert_eq!(st["pendingError"], "NONE");
    assert_eq!(st["minimumStoredSeqNo"], 0);
    let last = st["appliedLastSeqno"].as_i64().unwrap();
    assert!(last >= 21, "{st}");
    assert_eq!(st["maximumStoredSeqNo"].as_i64().unwrap(), last);
    assert_eq!(st["latestEpochNumber"], 0);
    assert!(st["appliedLastEventId"]
        .as_str()
        .unwrap()
        .starts_with("mariadb-bin.000001:"));
    assert!(st["appliedLastEventId"].as_str().unwrap().ends_with(";-1"));
    assert!(st["appliedLatency"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        st["pipelineSource"],
        format!("jdbc:mysql:thin://127.0.0.1:{}/", db.port)
    );
    assert!(st["masterListenUri"]
        .as_str()
        .unwrap()
        .starts_with("thl://127.0.0.1:"));
    // text output, qs, services, version
    let text = ok(p1, &["status"]);
    assert!(
        text.contains("appliedLastSeqno") && text.contains("ONLINE"),
        "{text}"
    );
    let qs = ok(p1, &["qs"]);
    assert!(
        qs.starts_with("alpha: ONLINE (master), applied seqno"),
        "{qs}"
    );
    let services: serde_json::Value =
        serde_json::from_str(&ok(p1, &["services", "-json"])).unwrap();
    assert_eq!(services[0]["serviceName"], "alpha");
    assert!(ok(p1, &["version"]).starts_with("carbide-replicator "));
    // heartbeat goes through the binlog into the THL
    let hb = ok(p1, &["heartbeat", "-name", "probe1"]);
    assert!(hb.starts_with("heartbeat probe1 stored as seqno"), "{hb}");
    let st = status(p1);
    assert_eq!(
        st["lastHeartbeat"].as_str().unwrap().split('#').next(),
        Some("probe1")
    );
    // offline / online / wait
    ok(p1, &["offline"]);
    ok(p1, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "20"]);
    db.sql("INSERT INTO app.t VALUES (100, 'while offline')")
        .await;
    ok(p1, &["online"]);
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "20"]);
    wait_caught_up(&db, p1).await;
    let applied = status(p1)["appliedLastSeqno"].as_i64().unwrap();
    assert_eq!(status(p1)["latestEpochNumber"].as_i64().unwrap(), applied);
    ok(
        p1,
        &["wait", "-applied", &applied.to_string(), "-limit", "5"],
    );
    // deferred offline at a future seqno
    ok(p1, &["offline", "-at-seqno", &(applied + 2).to_string()]);
    assert!(status(p1)["offlineRequests"]
        .as_str()
        .unwrap()
        .contains(&(applied + 2).to_string()));
    db.sql("INSERT INTO app.t VALUES (101, 'a')").await;
    db.sql("INSERT INTO app.t VALUES (102, 'b')").await;
    db.sql("INSERT INTO app.t VALUES (103, 'c')").await;
    ok(p1, &["wait", "-state", "OFFLINE", "-limit", "20"]);
    assert_eq!(
        status(p1)["appliedLastSeqno"].as_i64().unwrap(),
        applied + 2
    );
    // metrics
    let (code, body) = {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{p1}/metrics")])
            .output();
        match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            ),
            Err(_) => (false, String::new()),
        }
    };
    if code {
        assert!(
            body.contains("carbide_replicator_stored_seqno{service=\"alpha\"}"),
            "{body}"
        );
    }
    // errors are clear
    let bad = trepctl(p1, &["wait", "-limit", "3"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("exactly one of -state S or -applied N"));
    let bad = trepctl(p1, &["frobnicate"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown command 'frobnicate'"));
    let bad = trepctl(p1, &["-service", "nope", "status"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no service 'nope'"));
    let bad = trepctl(p1, &["offline", "-at-seqno", "x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'x' is not a number"));
    let bad = trepctl(p1, &["wait", "-state", "ONLINE", "-limit", "1"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wait timed out after 1s"));
    let dead = trepctl(free_port(), &["status"]);
    assert!(String::from_utf8_lossy(&dead.stderr).contains("cannot connect to the replicator"));
    // a slave member whose database is down stops in OFFLINE:ERROR naming it
    // (replica apply itself is tested in t12)
    let d2 = Daemon::start(&cfg, "db2", p2, &dir.path().join("db2.log"));
    ok(p2, &["wait", "-state", "OFFLINE:ERROR", "-limit", "30"]);
    let st2 = status(p2);
    assert_eq!(st2["role"], "slave");
    assert!(
        st2["pendingError"]
            .as_str()
            .unwrap()
            .contains("applier database 127.0.0.1:"),
        "{st2}"
    );
    drop(d2);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlog_gives_offline_error() {
    let db = MariaDb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let cfg = write_config(dir.path(), &db, (p1, p2));
    let mut d = Daemon::start(&cfg, "db1", p1, &dir.path().join("db1.log"));
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    db.sql("CREATE DATABASE p; CREATE TABLE p.t (id INT PRIMARY KEY); INSERT INTO p.t VALUES (1)")
        .await;
    wait_caught_up(&db, p1).await;
    d.kill9();
    db.sql("INSERT INTO p.t VALUES (2)").await;
    db.sql("FLUSH BINARY LOGS").await;
    let (newest, _) = master_eventid_pos(&db).await;
    for _ in 0..100 {
        db.sql(&format!("PURGE BINARY LOGS TO '{newest}'")).await;
        let logs: Vec<(String, u64)> = db.query("SHOW BINARY LOGS").await;
        if logs[0].0 == newest {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.spawn();
    ok(p1, &["wait", "-state", "OFFLINE:ERROR", "-limit", "30"]);
    let st = status(p1);
    let err = st["pendingError"].as_str().unwrap();
    assert!(err.contains("no longer available"), "{err}");
    assert!(st["pendingErrorSeqno"].as_i64().unwrap() >= 2, "{st}");
    assert!(st["pendingErrorEventId"]
        .as_str()
        .unwrap()
        .starts_with("mariadb-bin.000001:"));
    let w = trepctl(p1, &["wait", "-state", "ONLINE", "-limit", "5"]);
    assert!(String::from_utf8_lossy(&w.stderr).contains("OFFLINE:ERROR"));
}

/// GTIDs in binlog order, from `mariadb-binlog` on the server's files.
fn binlog_gtids(datadir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(datadir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("mariadb-bin.") && !n.ends_with(".index") && !n.ends_with(".state")
        })
        .collect();
    files.sort();
    let out = Command::new("mariadb-binlog")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let i = l.find("GTID ")?;
            let g = l[i + 5..].split_whitespace().next()?;
            (g.split('-').count() == 3).then(|| g.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_keeps_every_transaction_exactly_once() {
    let db = MariaDb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let cfg = write_config(dir.path(), &db, (p1, p2));
    db.sql("CREATE DATABASE ld; CREATE TABLE ld.t (id INT PRIMARY KEY, w INT, pad VARCHAR(100))")
        .await;
    let mut d = Daemon::start(&cfg, "db1", p1, &dir.path().join("db1.log"));
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let mut writers = Vec::new();
    for w in 0..8 {
        let opts = db.opts();
        writers.push(tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            for i in 0..300 {
                let id = w * 100_000 + i;
                c.query_drop(format!(
                    "BEGIN; INSERT INTO ld.t VALUES ({id}, {w}, REPEAT('x', 80)); \
                     UPDATE ld.t SET pad = 'y' WHERE id = {id}; COMMIT"
                ))
                .await
                .unwrap();
            }
        }));
    }
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(400 + round * 200)).await;
        d.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        d.spawn();
    }
    for w in writers {
        w.await.unwrap();
    }
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    wait_caught_up(&db, p1).await;
    ok(p1, &["offline"]);
    ok(p1, &["wait", "-state", "OFFLINE", "-limit", "20"]);
    let thl_dir = dir.path().join("thl/db1/alpha");
    let rd = ThlReader::open(&thl_dir).unwrap();
    let txs: Vec<_> = rd.transactions(0).unwrap().map(|t| t.unwrap()).collect();
    for (i, t) in txs.iter().enumerate() {
        assert_eq!(t.seqno, i as u64, "seqnos are dense");
    }
    let thl_gtids: Vec<String> = txs
        .iter()
        .filter_map(|t| t.meta("gtid").map(String::from))
        .collect();
    let server_gtids = binlog_gtids(&db.datadir());
    assert_eq!(thl_gtids.len(), txs.len(), "every transaction has a GTID");
    assert_eq!(
        thl_gtids.len(),
        server_gtids.len(),
        "same number of transactions"
    );
    assert_eq!(thl_gtids, server_gtids, "same transactions in binlog order");
    let epochs: std::collections::BTreeSet<u64> = txs.iter().map(|t| t.epoch).collect();
    assert!(epochs.len() >= 2, "restarts begin new epochs: {epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_from_event_starts_extraction_there() {
    let db = MariaDb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let cfg = write_config(dir.path(), &db, (p1, p2));
    let _d = Daemon::start(&cfg, "db1", p1, &dir.path().join("db1.log"));
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    db.sql("CREATE DATABASE f; CREATE TABLE f.t (id INT PRIMARY KEY)")
        .await;
    for i in 0..5 {
        db.sql(&format!("INSERT INTO f.t VALUES ({i})")).await;
    }
    wait_caught_up(&db, p1).await;
    ok(p1, &["offline"]);
    ok(p1, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "30"]);
    let (file, pos) = master_eventid_pos(&db).await;
    ok(p1, &["reset", "-thl", "-y"]);
    for i in 5..8 {
        db.sql(&format!("INSERT INTO f.t VALUES ({i})")).await;
    }
    let bad = trepctl(p1, &["online", "-from-event", "nonsense"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected FILE:OFFSET"));
    ok(p1, &["online", "-from-event", &format!("{file}:{pos}")]);
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    wait_caught_up(&db, p1).await;
    let thl = dir.path().join("thl").join("db1").join("alpha");
    let r = ThlReader::open(&thl).unwrap();
    assert_eq!((r.first_seqno(), r.last_seqno()), (Some(0), Some(2)));
    let first = r.get(0).unwrap().unwrap();
    let shown = format!("{:?}", first.changes);
    assert!(shown.contains("Int(5)"), "{shown}");
}

/// One raw HTTP/1.1 request (no client library: exactly these headers);
/// returns (status, headers, body).
fn http(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_secret_and_tools_read_it() {
    let db = MariaDb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let cfg = write_config(dir.path(), &db, (p1, p2));
    let secret = support::replicator::secret_of(dir.path());
    let _d = Daemon::start(&cfg, "db1", p1, &dir.path().join("db1.log"));
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);

    // reads stay open
    for path in [
        "/version",
        "/services",
        "/services/alpha/status",
        "/metrics",
    ] {
        let (code, _, body) = http(p1, "GET", path, &[]);
        assert_eq!(code, 200, "GET {path}: {body}");
    }
    // every mutating route: refused without the secret and with a wrong one
    let routes = [
        "/services/alpha/online",
        "/services/alpha/online?skip-seqno=1",
        "/services/alpha/setrole?role=slave",
        "/services/alpha/reset?thl=1&db=1",
        "/services/alpha/purge",
        "/services/alpha/offline",
        "/services/alpha/offline?at-seqno=99",
        "/services/alpha/heartbeat",
        "/services/nope/offline",
    ];
    let bearer = format!("Authorization: Bearer {secret}");
    for path in routes {
        let (code, _, body) = http(p1, "POST", path, &[]);
        assert_eq!(code, 401, "POST {path} without the secret: {body}");
        assert!(
            body.contains("needs the dataservice secret") && body.contains("security.token-file"),
            "{path}: {body}"
        );
        let (code, _, body) = http(
            p1,
            "POST",
            path,
            &["Authorization: Bearer not-the-secret-0123456789"],
        );
        assert_eq!(code, 401, "POST {path} with a wrong secret: {body}");
        assert!(
            body.contains("wrong dataservice secret") && body.contains("security.token-file"),
            "{path}: {body}"
        );
        // a cross-site form post: no Authorization header, an Origin
        let (code, _, _) = http(
            p1,
            "POST",
            path,
            &[
                "Origin: https://evil.example",
                "Content-Type: application/x-www-form-urlencoded",
            ],
        );
        assert_eq!(code, 401, "cross-site POST {path}");
    }
    // the preflight a cross-site script needs for the header is not granted
    let (code, head, _) = http(
        p1,
        "OPTIONS",
        "/services/alpha/offline",
        &[
            "Origin: https://evil.example",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: authorization",
        ],
    );
    assert_ne!(code / 100, 2, "preflight refused");
    assert!(!head.contains("access-control-allow"), "{head}");
    // nothing of the above changed anything
    let st = status(p1);
    assert_eq!(st["state"], "ONLINE", "{st}");
    assert_eq!(st["role"], "master", "{st}");
    let thl_files = std::fs::read_dir(dir.path().join("thl")).unwrap().count();
    assert!(thl_files > 0, "THL still there");

    // with the secret the same routes work
    let (code, _, body) = http(
        p1,
        "POST",
        "/services/alpha/heartbeat?name=auth",
        &[&bearer],
    );
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = http(p1, "POST", "/services/alpha/offline", &[&bearer]);
    assert_eq!(code, 200, "{body}");
    ok(p1, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "30"]);
    let (code, _, body) = http(
        p1,
        "POST",
        "/services/alpha/setrole?role=master",
        &[&bearer],
    );
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = http(p1, "POST", "/services/alpha/reset?thl=1", &[&bearer]);
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = http(p1, "POST", "/services/alpha/online", &[&bearer]);
    assert_eq!(code, 200, "{body}");
    ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let (code, _, body) = http(p1, "POST", "/services/nope/offline", &[&bearer]);
    assert_eq!(code, 404, "{body}");

    // trepctl: -conf (the helper), then without any secret, a wrong one,
    // $CARBIDE_SECRET, $CARBIDE_CONFIG and -conf -member (no port)
    let tool = || {
        let mut c = Command::new(bin("trepctl"));
        c.env_remove("CARBIDE_SECRET").env_remove("CARBIDE_CONFIG");
        c
    };
    let out = tool()
        .args(["-port", &p1.to_string(), "heartbeat"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the replicator refused: wrong or missing dataservice secret")
            && err.contains("$CARBIDE_SECRET"),
        "{err}"
    );
    // reads need nothing
    let out = tool()
        .args(["-port", &p1.to_string(), "qs"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong_dir = tempfile::tempdir().unwrap();
    std::fs::write(wrong_dir.path().join("secret"), "another-secret-0123456789").unwrap();
    let wrong_cfg = wrong_dir.path().join("carbide.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&wrong_cfg, text).unwrap();
    let out = tool()
        .arg("-conf")
        .arg(&wrong_cfg)
        .args(["-port", &p1.to_string(), "offline"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "the replicator refused: wrong or missing dataservice secret (security.token-file in "
        ) && err.contains(&wrong_cfg.display().to_string())
            && err.contains("wrong dataservice secret"),
        "{err}"
    );
    assert_eq!(status(p1)["state"], "ONLINE");
    let out = tool()
        .env("CARBIDE_SECRET", &secret)
        .args(["-port", &p1.to_string(), "heartbeat", "-name", "env"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tool()
        .env("CARBIDE_CONFIG", &cfg)
        .args(["-port", &p1.to_string(), "heartbeat", "-name", "envconf"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tool()
        .arg("-conf")
        .arg(&cfg)
        .args(["-member", "db1", "heartbeat", "-name", "member"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // trepctl purge -y with the secret kills other sessions (last: it may
    // take the test's own connections)
    let purged = ok(p1, &["purge", "-y"]);
    assert!(!purged.is_empty());
}

#[test]
fn the_daemon_refuses_to_run_without_a_secret_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    // no database needed: the config is refused before any connection
    let text = format!(
        "[service]\nname = \"alpha\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n\n\
         [[member]]\nname = \"db1\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{p1}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"master\"\n\n\
         [[member]]\nname = \"db2\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{p2}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\n",
        dir.path().join("thl").display(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let cfg = dir.path().join("carbide.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(bin("carbide-replicator"))
        .arg("--config")
        .arg(&cfg)
        .args(["--member", "db1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no dataservice secret")
            && err.contains("security.token-file")
            && err.contains("--insecure-no-secret"),
        "{err}"
    );
    // a token-file that is missing is named
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap() + "\n[security]\ntoken-file = \"nothere\"\n",
    )
    .unwrap();
    let out = Command::new(bin("carbide-replicator"))
        .arg("--config")
        .arg(&cfg)
        .args(["--member", "db1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothere"), "{err}");
    // --insecure-no-secret: it runs, and POSTs need nothing (said in its log)
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("\n[security]\ntoken-file = \"nothere\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("insecure.log");
    let mut d = Daemon {
        child: None,
        config: cfg.clone(),
        member: "db1".into(),
        port: p1,
        log: log.clone(),
    };
    let child = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(bin("carbide-replicator"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "--member",
            "db1",
            "--no-auto-online",
            "--insecure-no-secret",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    d.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", p1)).is_err() {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, body) = http(p1, "POST", "/services/alpha/offline", &[]);
    assert_ne!(code, 401, "{body}");
    assert!(
        d.log_text().contains("WITHOUT authentication"),
        "{}",
        d.log_text()
    );
}
