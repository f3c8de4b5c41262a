//! A replica kept in sync by carbide-replicator alone (no native MariaDB
//! replication): THL transfer master → slave and the applier, against real
//! MariaDB servers and real replicator processes. Every column type and
//! DDL arrive intact (checksums equal), a `kill -9` of the slave replicator
//! under load applies nothing twice (a non-idempotent counter), and a
//! replica whose history diverged from the master's is refused by the
//! epoch check and stops in OFFLINE:ERROR; `trepctl setrole` swaps master
//! and slave, and `online -skip-seqno` passes over a failing transaction.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::replicator::{failed_seqno, status, trepctl_ok, wait_status, Replicator};
use support::{free_port, MariaDb};

struct Ports {
    admin: (u16, u16),
    thl: (u16, u16),
}

fn write_config(dir: &Path, master: &MariaDb, replica: &MariaDb) -> (PathBuf, Ports) {
    let admin = (free_port(), free_port());
    let thl = (free_port(), free_port());
    let text = format!(
        "[service]\nname = \"alpha\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n\n\
         [[member]]\nname = \"db1\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"master\"\n\n\
         [[member]]\nname = \"db2\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"slave\"\n",
        dir.join("thl").display(),
        master.port,
        admin.0,
        thl.0,
        free_port(),
        replica.port,
        admin.1,
        thl.1,
        free_port(),
    );
    let text = text + &support::replicator::security(dir);
    let p = dir.join("carbide.toml");
    std::fs::write(&p, text).unwrap();
    (p, Ports { admin, thl })
}

/// Waits until the slave has applied everything the master has stored.
async fn wait_applied(master: u16, slave: u16) -> i64 {
    let target = status(master)["maximumStoredSeqNo"].as_i64().unwrap();
    wait_status(slave, 60, &format!("appliedLastSeqno {target}"), |st| {
        st["appliedLastSeqno"].as_i64().unwrap_or(-1) >= target
    })
    .await;
    target
}

/// Waits until the master has extracted everything in its binlog.
async fn wait_extracted(db: &MariaDb, port: u16) {
    let rows: Vec<(String, u64, String, String)> = db.query("SHOW MASTER STATUS").await;
    let (file, pos) = (rows[0].0.clone(), rows[0].1);
    wait_status(port, 60, &format!("extracted to {file}:{pos}"), |st| {
        let id = st["appliedLastEventId"].as_str().unwrap_or("");
        id.split_once(':').is_some_and(|(f, rest)| {
            let p: u64 = rest.split(';').next().unwrap_or("0").parse().unwrap_or(0);
            (f.to_string(), p) >= (file.clone(), pos)
        })
    })
    .await;
}

async fn start_pair() -> (MariaDb, MariaDb, tempfile::TempDir, PathBuf, Ports) {
    let master = MariaDb::start().await;
    let replica = MariaDb::builder().arg("--read-only=ON").start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, ports) = write_config(dir.path(), &master, &replica);
    (master, replica, dir, cfg, ports)
}

const TYPES_DDL: &str = "CREATE TABLE app.types (
    id INT PRIMARY KEY AUTO_INCREMENT,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, bi BIGINT,
    bu BIGINT UNSIGNED, f FLOAT, d DOUBLE, dec1 DECIMAL(20,6), dec2 DECIMAL(5,0),
    c CHAR(10), vc VARCHAR(100), vl VARCHAR(50) CHARACTER SET latin1,
    bin BINARY(4), vb VARBINARY(20), tx TEXT, bl BLOB, lt LONGTEXT,
    dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP(6) NULL, yr YEAR,
    bt BIT(10), en ENUM('a','b','c'), st SET('x','y','z'), js JSON
)";

const TYPES_ROWS: &str = "INSERT INTO app.types (ti, tu, si, mi, bi, bu, f, d, dec1, dec2,
    c, vc, vl, bin, vb, tx, bl, lt, dt, tm, dtm, ts, yr, bt, en, st, js) VALUES
    (-128, 255, -32768, -8388608, -9223372036854775808, 18446744073709551615, 1.1, 2.5e300,
     -12345678901234.123456, 99999, 'abc', 'héllo wörld ☃ 🎉', 'café', X'00FF0102', X'DEADBEEF',
     REPEAT('t', 300), X'00010203', REPEAT('long', 1000), '2024-02-29', '-838:59:59.123',
     '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.5', 2155, b'1010101010', 'b', 'x,z',
     '{\"k\": [1, 2, {\"n\": null}]}'),
    (127, 0, 32767, 8388607, 9223372036854775807, 0, -0.5, -1e-300, 0.000001, -1,
     '', '', '', X'00000000', X'', '', X'', '', '1000-01-01', '00:00:00', '1000-01-01 00:00:00',
     '1970-01-01 00:00:01', 1901, b'0', 'a', '', '[]'),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_applies_every_type_and_ddl_and_survives_kill9() {
    let (master, replica, dir, cfg, ports) = start_pair().await;
    let (pm, ps) = ports.admin;
    let d1 = Replicator::start(&cfg, "db1", pm, &dir.path().join("db1.log"), &[]);
    support::replicator::trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let mut d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), &[]);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    let st = status(ps);
    assert_eq!(st["role"], "slave");
    assert!(st["masterConnectUri"]
        .as_str()
        .unwrap()
        .starts_with("thl://127.0.0.1:"));

    master
        .sql("CREATE DATABASE app CHARACTER SET utf8mb4")
        .await;
    master.sql(TYPES_DDL).await;
    master.sql(TYPES_ROWS).await;
    master
        .sql("UPDATE app.types SET vc = CONCAT(vc, '!'), f = f * 2, ts = '2001-02-03 04:05:06' WHERE id <= 2")
        .await;
    master.sql("DELETE FROM app.types WHERE id = 3").await;
    // no primary key: whole before image
    master
        .sql("CREATE TABLE app.nokey (a INT, b VARCHAR(10), f FLOAT)")
        .await;
    master
        .sql("INSERT INTO app.nokey VALUES (1, 'x', 1.5), (1, 'x', 1.5), (2, NULL, 0.1)")
        .await;
    master.sql("UPDATE app.nokey SET b = 'y' WHERE a = 2").await;
    master
        .sql("DELETE FROM app.nokey WHERE a = 1 LIMIT 1")
        .await;
    // DDL, multi-statement transaction
    master
        .sql("ALTER TABLE app.nokey ADD COLUMN c INT DEFAULT 7")
        .await;
    master
        .sql("BEGIN; INSERT INTO app.nokey VALUES (3, 'z', 2, 8); UPDATE app.types SET ti = 1; COMMIT")
        .await;
    // one transaction of ~20 MB of SQL: applied as several queries
    master
        .sql(
            "CREATE TABLE app.big (id INT PRIMARY KEY, pad VARCHAR(1000)); \
             INSERT INTO app.big SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000) FROM app.seq_1_to_10000",
        )
        .await;
    wait_extracted(&master, pm).await;
    let last = wait_applied(pm, ps).await;
    assert!(last >= 10, "{last}");
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
    let st = status(ps);
    assert_eq!(st["state"], "ONLINE", "{st}");
    assert_eq!(st["maximumStoredSeqNo"].as_i64().unwrap(), last);
    assert!(st["appliedLatency"].as_f64().unwrap() >= 0.0, "{st}");
    let pos: Vec<(i64, i64, String)> = replica
        .query("SELECT seqno, epoch_number, source_id FROM tungsten_alpha.trep_commit_seqno")
        .await;
    assert_eq!(pos, vec![(last, 0, "db1".to_string())]);

    // kill -9 the slave replicator while a non-idempotent counter moves
    master
        .sql("CREATE TABLE app.counter (id INT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO app.counter VALUES (1, 0)")
        .await;
    // the writer runs until told to stop, so every kill lands under load
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut c = master.conn().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            let mut i: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                c.query_drop(format!(
                    "UPDATE app.counter SET n = n + 1 WHERE id = 1; INSERT INTO app.nokey VALUES ({i}, 'k', 0, 0)"
                ))
                .await
                .unwrap();
                i += 1;
            }
            i
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        d2.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        d2.spawn();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n_written = writer.await.unwrap();
    assert!(n_written > 100, "{n_written}");
    wait_status(ps, 30, "slave ONLINE after restarts", |st| {
        st["state"] == "ONLINE"
    })
    .await;
    wait_extracted(&master, pm).await;
    wait_applied(pm, ps).await;
    let n: Vec<i64> = replica.query("SELECT n FROM app.counter").await;
    assert_eq!(
        n,
        vec![n_written],
        "counter applied exactly once per transaction"
    );
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
    drop(d1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_replica_is_refused_by_the_epoch_check() {
    let (master, replica, dir, cfg, ports) = start_pair().await;
    let (pm, ps) = ports.admin;
    let mut d1 = Replicator::start(&cfg, "db1", pm, &dir.path().join("db1.log"), &[]);
    support::replicator::trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), &[]);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    master
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    for i in 0..10 {
        master.sql(&format!("INSERT INTO app.t VALUES ({i})")).await;
    }
    wait_extracted(&master, pm).await;
    let last = wait_applied(pm, ps).await;
    // The master loses the tail of its log and re-extracts it under a new
    // epoch: its seqno `last` now has another epoch than the replica's.
    drop(d2);
    d1.kill9();
    let thl = dir.path().join("thl").join("db1").join("alpha");
    carbide_replicator::thl::truncate_from(&thl, (last - 3) as u64).unwrap();
    d1.spawn();
    support::replicator::trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    wait_extracted(&master, pm).await;
    assert_eq!(status(pm)["maximumStoredSeqNo"].as_i64().unwrap(), last);
    let d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), &[]);
    let st = wait_status(ps, 30, "slave OFFLINE:ERROR", |st| {
        st["state"] == "OFFLINE:ERROR"
    })
    .await;
    let err = st["pendingError"].as_str().unwrap();
    assert!(err.contains("log epoch numbers do not match"), "{st}");
    assert!(err.contains(&format!("seqno {last}")), "{st}");
    assert_eq!(st["appliedLastSeqno"].as_i64().unwrap(), last, "{st}");
    // reset: only offline, only with -y; removes the THL and the catalog
    let out = support::replicator::trepctl(pm, &["reset", "-thl", "-y"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reset needs the service offline"));
    let out = support::replicator::trepctl(ps, &["reset", "-all"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("confirm with -y"));
    let done = trepctl_ok(ps, &["reset", "-all", "-y"]);
    assert!(done.contains("removed 1 THL segment(s)"), "{done}");
    assert!(done.contains("dropped schema tungsten_alpha"), "{done}");
    let left: Vec<String> = replica
        .query("SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'tungsten_alpha'")
        .await;
    assert!(left.is_empty());
    let thl2 = dir.path().join("thl").join("db2").join("alpha");
    assert!(carbide_replicator::thl::ThlReader::open(&thl2)
        .unwrap()
        .last_seqno()
        .is_none());
    drop(d2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setrole_swaps_master_and_slave() {
    let (db1, db2, dir, cfg, ports) = start_pair().await;
    let (p1, p2) = ports.admin;
    let d1 = Replicator::start(&cfg, "db1", p1, &dir.path().join("db1.log"), &[]);
    trepctl_ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let d2 = Replicator::start(&cfg, "db2", p2, &dir.path().join("db2.log"), &[]);
    wait_status(p2, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    db1.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
        .await;
    for i in 0..20 {
        db1.sql(&format!("INSERT INTO app.t VALUES ({i}, {i})"))
            .await;
    }
    wait_extracted(&db1, p1).await;
    // switch: purge app sessions, master offline, slave catches up and goes
    // offline, swap roles
    let mut app = db1.conn().await;
    let killed = trepctl_ok(p1, &["purge", "-y"]);
    assert!(killed.starts_with("killed "), "{killed}");
    {
        use mysql_async::prelude::Queryable;
        assert!(
            app.query_drop("SELECT 1").await.is_err(),
            "purged session still works"
        );
    }
    trepctl_ok(p1, &["offline"]);
    trepctl_ok(p1, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "30"]);
    let last = wait_applied(p1, p2).await;
    trepctl_ok(p2, &["offline"]);
    trepctl_ok(p2, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "30"]);
    let uri = format!("thl://127.0.0.1:{}/", ports.thl.1);
    trepctl_ok(p1, &["setrole", "-role", "slave", "-uri", &uri]);
    trepctl_ok(p2, &["setrole", "-role", "master"]);
    db1.sql("SET GLOBAL read_only = ON").await;
    db2.sql("SET GLOBAL read_only = OFF").await;
    trepctl_ok(p2, &["online"]);
    trepctl_ok(p2, &["wait", "-state", "ONLINE", "-limit", "30"]);
    trepctl_ok(p1, &["online"]);
    wait_status(p1, 30, "old master ONLINE as slave", |st| {
        st["state"] == "ONLINE"
    })
    .await;
    let st = status(p1);
    assert_eq!(st["role"], "slave");
    assert_eq!(st["masterConnectUri"], uri.as_str());
    // writes on the new master reach the old one, nothing applied twice
    for i in 20..40 {
        db2.sql(&format!("INSERT INTO app.t VALUES ({i}, {i})"))
            .await;
    }
    db2.sql("UPDATE app.t SET v = v + 1").await;
    wait_extracted(&db2, p2).await;
    let st2 = status(p2);
    assert_eq!(st2["role"], "master");
    assert_eq!(
        st2["latestEpochNumber"].as_i64().unwrap(),
        last + 1,
        "{st2}"
    );
    wait_applied(p2, p1).await;
    assert_eq!(db1.user_checksums().await, db2.user_checksums().await);
    let sum: Vec<i64> = db1.query("SELECT CAST(SUM(v) AS SIGNED) FROM app.t").await;
    assert_eq!(sum, vec![(0..40).sum::<i64>() + 40]);
    // setrole while online is refused
    let out = support::replicator::trepctl(p1, &["setrole", "-role", "master"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("setrole needs the service offline"));
    drop((d1, d2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_error_stops_the_slave_and_skip_seqno_passes_it() {
    let (db1, db2, dir, cfg, ports) = start_pair().await;
    let (p1, p2) = ports.admin;
    let _d1 = Replicator::start(&cfg, "db1", p1, &dir.path().join("db1.log"), &[]);
    trepctl_ok(p1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let _d2 = Replicator::start(&cfg, "db2", p2, &dir.path().join("db2.log"), &[]);
    wait_status(p2, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    db1.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    wait_extracted(&db1, p1).await;
    wait_applied(p1, p2).await;
    // a row that exists only on the replica makes the master's insert fail
    db2.sql("INSERT INTO app.t VALUES (7)").await;
    db1.sql("INSERT INTO app.t VALUES (7)").await;
    db1.sql("INSERT INTO app.t VALUES (8)").await;
    wait_extracted(&db1, p1).await;
    let st = wait_status(p2, 30, "OFFLINE:ERROR", |st| st["state"] == "OFFLINE:ERROR").await;
    let err = st["pendingError"].as_str().unwrap().to_string();
    assert!(err.contains("apply failed at seqno"), "{st}");
    assert!(err.contains("INSERT INTO `app`.`t`"), "{st}");
    assert!(err.contains("Duplicate entry '7'"), "{st}");
    let bad = failed_seqno(&err) as u64;
    assert_eq!(st["appliedLastSeqno"].as_i64().unwrap(), bad as i64 - 1);
    assert_eq!(
        st["pendingErrorSeqno"].as_i64().unwrap(),
        bad as i64,
        "{st}"
    );
    trepctl_ok(p2, &["online", "-skip-seqno", &bad.to_string()]);
    wait_status(p2, 30, "ONLINE", |st| st["state"] == "ONLINE").await;
    wait_applied(p1, p2).await;
    let ids: Vec<i64> = db2.query("SELECT id FROM app.t ORDER BY id").await;
    assert_eq!(ids, vec![7, 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_database_kill9_resumes_exactly_once() {
    let (master, mut replica, dir, cfg, ports) = start_pair().await;
    let (pm, ps) = ports.admin;
    let _d1 = Replicator::start(&cfg, "db1", pm, &dir.path().join("db1.log"), &[]);
    trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), &[]);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    master
        .sql("CREATE DATABASE app; CREATE TABLE app.counter (id INT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO app.counter VALUES (1, 0)")
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut c = master.conn().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            let mut n: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                c.query_drop("UPDATE app.counter SET n = n + 1 WHERE id = 1")
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    replica.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    replica.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n_written = writer.await.unwrap();
    wait_extracted(&master, pm).await;
    wait_applied(pm, ps).await;
    let st = status(ps);
    assert_eq!(st["state"], "ONLINE", "{st}");
    let n: Vec<i64> = replica.query("SELECT n FROM app.counter").await;
    assert_eq!(
        n,
        vec![n_written],
        "counter applied exactly once per transaction"
    );
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
    assert!(
        d2.log_text().contains("applier lost its database"),
        "{}",
        d2.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_not_null_key_identifies_rows_without_a_primary_key_as_sql() {
    unique_not_null_key_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_not_null_key_identifies_rows_without_a_primary_key_as_row_events() {
    unique_not_null_key_case(false).await;
}

/// As SQL, an UPDATE sets only the columns the master changed and a row
/// matched by a before image that drifted is silently not found; as row
/// events (the default), the server writes the whole after image, as
/// native replication does, and a row it cannot find stops the applier.
async fn unique_not_null_key_case(as_sql: bool) {
    let (master, replica, dir, cfg, ports) = start_pair().await;
    let (pm, ps) = ports.admin;
    let _d1 = Replicator::start(&cfg, "db1", pm, &dir.path().join("db1.log"), &[]);
    trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let args: &[&str] = if as_sql { &["--row-apply", "sql"] } else { &[] };
    let d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), args);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    // u: no primary key, a unique key over NOT NULL columns; v: its only
    // unique key allows NULL, so rows are matched by their whole image
    master
        .sql(
            "CREATE DATABASE app; \
             CREATE TABLE app.u (a INT NOT NULL, b VARCHAR(10), c INT, x INT NULL, \
               UNIQUE KEY ux (x), UNIQUE KEY ua (a)); \
             CREATE TABLE app.v (a INT NULL, b VARCHAR(10), c INT, UNIQUE KEY (a)); \
             INSERT INTO app.u (a, b, c) VALUES (1, 'x', 0), (2, 'x', 0), (3, 'x', 0); \
             INSERT INTO app.v VALUES (1, 'x', 0), (2, 'x', 0)",
        )
        .await;
    wait_extracted(&master, pm).await;
    wait_applied(pm, ps).await;
    // the replica's copy drifts in a column the master does not touch
    replica
        .sql("UPDATE app.u SET c = 99 WHERE a IN (1, 2); UPDATE app.v SET c = 99 WHERE a = 1")
        .await;
    master
        .sql(
            "UPDATE app.u SET b = 'new' WHERE a = 1; DELETE FROM app.u WHERE a = 2; \
             UPDATE app.v SET b = 'new' WHERE a = 1",
        )
        .await;
    wait_extracted(&master, pm).await;
    if !as_sql {
        wait_applied(pm, ps).await;
        assert!(d2.log_text().contains("applying row changes as row events"));
        // rows found by their unique key (u's NOT NULL one; v's, holding no
        // NULL here) and written whole, drifted column included
        let u: Vec<(i64, String, i64)> =
            replica.query("SELECT a, b, c FROM app.u ORDER BY a").await;
        assert_eq!(u, vec![(1, "new".to_string(), 0), (3, "x".to_string(), 0)]);
        let v: Vec<(i64, String, i64)> =
            replica.query("SELECT a, b, c FROM app.v WHERE a = 1").await;
        assert_eq!(v, vec![(1, "new".to_string(), 0)]);
        // a row the replica lacks is an error, not a silent no-op
        replica.sql("DELETE FROM app.u WHERE a = 3").await;
        master.sql("UPDATE app.u SET b = 'z' WHERE a = 3").await;
        let st = wait_status(ps, 30, "slave OFFLINE:ERROR", |st| {
            st["state"] == "OFFLINE:ERROR"
        })
        .await;
        let err = st["pendingError"].as_str().unwrap_or_default().to_string();
        assert!(
            err.contains("app.u") && err.contains("Can't find record"),
            "names the table and the server's error: {err}"
        );
        replica
            .sql("INSERT INTO app.u (a, b, c) VALUES (3, 'x', 0)")
            .await;
        trepctl_ok(ps, &["online"]);
        wait_applied(pm, ps).await;
        let u: Vec<(i64, String, i64)> =
            replica.query("SELECT a, b, c FROM app.u ORDER BY a").await;
        assert_eq!(u, vec![(1, "new".to_string(), 0), (3, "z".to_string(), 0)]);
        assert_eq!(status(ps)["state"], "ONLINE");
        return;
    }
    wait_applied(pm, ps).await;
    assert!(d2.log_text().contains("applying row changes as SQL"));
    let u: Vec<(i64, String, i64)> = replica.query("SELECT a, b, c FROM app.u ORDER BY a").await;
    assert_eq!(
        u,
        vec![(1, "new".to_string(), 99), (3, "x".to_string(), 0)],
        "rows of u found by their unique NOT NULL key"
    );
    let v: Vec<(i64, String, i64)> = replica.query("SELECT a, b, c FROM app.v WHERE a = 1").await;
    assert_eq!(
        v,
        vec![(1, "x".to_string(), 99)],
        "v's row is matched by its whole before image, which the drift changed"
    );
    assert_eq!(status(ps)["state"], "ONLINE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_binlog_replay_the_applier_refuses_events_or_falls_back_to_sql() {
    let (master, replica, dir, cfg, ports) = start_pair().await;
    // a user with everything but SUPER and BINLOG REPLAY (it keeps
    // READ_ONLY ADMIN, so it may write to the read-only replica)
    for db in [&master, &replica] {
        db.sql(
            "CREATE USER limited@'%'; GRANT ALL PRIVILEGES ON *.* TO limited@'%'; \
             REVOKE SUPER, BINLOG REPLAY ON *.* FROM limited@'%'",
        )
        .await;
    }
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("user = \"root\"", "user = \"limited\"");
    std::fs::write(&cfg, text).unwrap();
    let (pm, ps) = ports.admin;
    let _d1 = Replicator::start(&cfg, "db1", pm, &dir.path().join("db1.log"), &[]);
    trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let log2 = dir.path().join("db2.log");
    let mut d2 = Replicator::start(&cfg, "db2", ps, &log2, &["--row-apply", "events"]);
    let st = wait_status(ps, 30, "slave OFFLINE:ERROR", |st| {
        st["state"] == "OFFLINE:ERROR"
    })
    .await;
    let err = st["pendingError"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains("--row-apply events") && err.contains("BINLOG REPLAY"),
        "names the flag and the grant: {err}"
    );
    d2.kill9();
    drop(d2);
    let d2 = Replicator::start(&cfg, "db2", ps, &log2, &[]);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    master
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT); INSERT INTO app.t VALUES (1, 1)")
        .await;
    wait_extracted(&master, pm).await;
    wait_applied(pm, ps).await;
    let rows: Vec<(i64, i64)> = replica.query("SELECT id, v FROM app.t").await;
    assert_eq!(rows, vec![(1, 1)]);
    let log = d2.log_text();
    assert!(
        log.contains("refuses row events (BINLOG); applying rows as SQL"),
        "{log}"
    );
    assert!(log.contains("applying row changes as SQL"), "{log}");
    assert!(
        log.contains("cannot give the applier's sessions their own server_id"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_already_applied_before_a_restart_is_recorded_once() {
    let support::replicator::MasterSlave {
        master,
        replica,
        dir,
        cfg,
        pm,
        ps,
        d1: _d1,
    } = support::replicator::master_slave_online().await;
    let d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), &[]);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    master
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)")
        .await;
    wait_extracted(&master, pm).await;
    wait_applied(pm, ps).await;
    // the DDL commits before the channel's row records it: a crash in
    // between leaves it applied but not recorded, as done here by hand
    trepctl_ok(ps, &["offline"]);
    trepctl_ok(ps, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "30"]);
    replica
        .sql("ALTER TABLE app.t ADD COLUMN c INT NOT NULL DEFAULT 0")
        .await;
    master
        .sql("ALTER TABLE app.t ADD COLUMN c INT NOT NULL DEFAULT 0; INSERT INTO app.t VALUES (2, 5)")
        .await;
    wait_extracted(&master, pm).await;
    trepctl_ok(ps, &["online"]);
    wait_applied(pm, ps).await;
    assert_eq!(status(ps)["state"], "ONLINE");
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
    assert!(
        d2.log_text()
            .contains("statement already applied before the restart"),
        "{}",
        d2.log_text()
    );
    // only the first block after a (re)connect: later, the same error stops
    replica.sql("CREATE TABLE app.u (id INT PRIMARY KEY)").await;
    master.sql("CREATE TABLE app.u (id INT PRIMARY KEY)").await;
    let st = wait_status(ps, 30, "apply error", |st| st["state"] == "OFFLINE:ERROR").await;
    let err = st["pendingError"].as_str().unwrap_or_default();
    assert!(err.contains("already exists"), "{st}");
    drop(d2);
}
