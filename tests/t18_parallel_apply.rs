//! Parallel apply: a replica kept by `carbide-replicator --channels 4`
//! under concurrent writes on four schemas, with cross-schema transactions
//! (serialized) and DDL in between. The data ends identical; `kill -9` of
//! the slave replicator under that load and a restart with another channel
//! count (4 → 2, with the rows left unequal by the kill: the applier
//! catches up with the old mapping first) apply nothing twice
//! (non-idempotent counters); `trep_commit_seqno` has one row per channel,
//! and a clean stop leaves every row at the same seqno. An apply error on
//! one channel stops the whole replica OFFLINE:ERROR naming the seqno,
//! statement and server error; `-skip-seqno` passes it and
//! `online -until-seqno N` stops every channel exactly at N.
#![allow(clippy::unwrap_used)]

mod support;

use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::replicator::{
    failed_seqno, master_slave_online, status, trepctl_ok, wait_status, MasterSlave, Replicator,
};
use support::MariaDb;

const SCHEMAS: [&str; 4] = ["s1", "s2", "s3", "s4"];

/// Waits until the master has extracted its whole binlog, then until the
/// slave has applied it; returns the last seqno.
async fn wait_synced(master: &MariaDb, pm: u16, ps: u16) -> i64 {
    let rows: Vec<(String, u64, String, String)> = master.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    wait_status(pm, 60, "extracted", |st| {
        st["appliedLastEventId"] == want.as_str()
    })
    .await;
    let target = status(pm)["maximumStoredSeqNo"].as_i64().unwrap();
    wait_status(ps, 60, &format!("applied {target}"), |st| {
        st["appliedLastSeqno"].as_i64().unwrap_or(-1) >= target || st["state"] == "OFFLINE:ERROR"
    })
    .await;
    let st = status(ps);
    assert_eq!(st["state"], "ONLINE", "{st}");
    target
}

async fn channel_rows(db: &MariaDb) -> Vec<(i64, i64)> {
    db.query("SELECT task_id, seqno FROM tungsten_alpha.trep_commit_seqno ORDER BY task_id")
        .await
}

/// Counts of committed transactions by the writers.
#[derive(Default, Debug)]
struct Written {
    per_schema: [i64; 4],
    cross: i64,
}

/// Four writers (one per schema: counter + insert per transaction), one
/// cross-schema writer (two schemas' counters in one transaction) and one
/// DDL writer, until `stop`.
fn start_load(
    master: &MariaDb,
    stop: Arc<AtomicBool>,
    ddl_from: usize,
) -> tokio::task::JoinHandle<Written> {
    let opts = master.opts();
    tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for (i, s) in SCHEMAS.iter().enumerate() {
            let (opts, stop, s) = (opts.clone(), stop.clone(), s.to_string());
            set.spawn(async move {
                let mut c = mysql_async::Conn::new(opts).await.unwrap();
                let mut n = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    c.query_drop(format!(
                        "BEGIN; UPDATE {s}.counter SET n = n + 1 WHERE id = 1; \
                         INSERT INTO {s}.t (v, pad) VALUES ({n}, REPEAT('x', {n} % 50)); COMMIT"
                    ))
                    .await
                    .unwrap();
                    n += 1;
                }
                (Some(i), n)
            });
        }
        {
            let (opts, stop) = (opts.clone(), stop.clone());
            set.spawn(async move {
                let mut c = mysql_async::Conn::new(opts).await.unwrap();
                let mut n = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    let (a, b) = (SCHEMAS[n as usize % 4], SCHEMAS[(n as usize + 1) % 4]);
                    c.query_drop(format!(
                        "BEGIN; UPDATE {a}.counter SET n = n + 1 WHERE id = 2; \
                         UPDATE {b}.counter SET n = n + 1 WHERE id = 2; COMMIT"
                    ))
                    .await
                    .unwrap();
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                (None, n)
            });
        }
        {
            let (opts, stop) = (opts.clone(), stop.clone());
            set.spawn(async move {
                let mut c = mysql_async::Conn::new(opts).await.unwrap();
                let mut k = ddl_from;
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let s = SCHEMAS[k % 4];
                    c.query_drop(format!(
                        "ALTER TABLE {s}.t ADD COLUMN c{k} INT NOT NULL DEFAULT {k}"
                    ))
                    .await
                    .unwrap();
                    k += 1;
                }
                (None, -1)
            });
        }
        let mut w = Written::default();
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                (Some(i), n) => w.per_schema[i] = n,
                (None, n) if n >= 0 => w.cross = n,
                _ => {}
            }
        }
        w
    })
}

async fn setup_schemas(master: &MariaDb) {
    for s in SCHEMAS {
        master
            .sql(&format!(
                "CREATE DATABASE {s}; \
                 CREATE TABLE {s}.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT, pad VARCHAR(64)); \
                 CREATE TABLE {s}.counter (id INT PRIMARY KEY, n BIGINT NOT NULL); \
                 INSERT INTO {s}.counter VALUES (1, 0), (2, 0)"
            ))
            .await;
    }
}

/// Counter values on `db`: (per-schema row 1, sum of row 2 over schemas).
async fn counters(db: &MariaDb) -> ([i64; 4], i64) {
    let mut one = [0i64; 4];
    let mut two = 0;
    for (i, s) in SCHEMAS.iter().enumerate() {
        let r: Vec<(i64, i64)> = db
            .query(&format!("SELECT id, n FROM {s}.counter ORDER BY id"))
            .await;
        one[i] = r[0].1;
        two += r[1].1;
    }
    (one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_channels_under_load_kill9_and_channel_count_change() {
    let MasterSlave {
        master,
        replica,
        dir,
        cfg,
        pm,
        ps,
        d1: _d1,
    } = master_slave_online().await;
    let log = dir.path().join("db2.log");
    let mut d2 = Replicator::start(&cfg, "db2", ps, &log, &["--channels", "4"]);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    setup_schemas(&master).await;

    // load with two kill -9 of the slave replicator
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&master, stop.clone(), 0);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        d2.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        d2.spawn();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    let w1 = load.await.unwrap();
    assert!(w1.per_schema.iter().all(|&n| n > 50), "{w1:?}");
    assert!(w1.cross > 10, "{w1:?}");
    wait_synced(&master, pm, ps).await;
    assert_eq!(counters(&replica).await, (w1.per_schema, 2 * w1.cross));
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
    let rows = channel_rows(&replica).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "one row per channel"
    );

    // kill -9 under load, then restart with 2 channels: the rows the kill
    // left unequal make the applier catch up with the 4-channel mapping
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&master, stop.clone(), 100);
    let mut unequal = false;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        d2.kill9();
        let rows = channel_rows(&replica).await;
        unequal = rows.iter().any(|r| r.1 != rows[0].1);
        if unequal {
            break;
        }
        d2.spawn();
    }
    assert!(unequal, "the kill always found equal rows");
    drop(d2);
    // two channels taking turns (one applies at a time)
    let d2 = Replicator::start(
        &cfg,
        "db2",
        ps,
        &log,
        &["--channels", "2", "--active-channels", "1"],
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let w2 = load.await.unwrap();
    wait_synced(&master, pm, ps).await;
    let want: [i64; 4] = std::array::from_fn(|i| w1.per_schema[i] + w2.per_schema[i]);
    assert_eq!(counters(&replica).await, (want, 2 * (w1.cross + w2.cross)));
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
    assert!(
        d2.log_text()
            .contains("channel count changed: catching up with the stored channel count first"),
        "{}",
        d2.log_text()
    );
    let plain = d2.log_plain();
    assert!(plain.contains("channels=2 active_channels=1"), "{plain}");
    // a clean stop leaves one row per channel, all at the same seqno
    trepctl_ok(ps, &["offline"]);
    trepctl_ok(ps, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "30"]);
    let rows = channel_rows(&replica).await;
    let last = status(pm)["maximumStoredSeqNo"].as_i64().unwrap();
    assert_eq!(rows, vec![(0, last), (1, last)]);
    drop(d2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_stops_all_and_until_seqno_stops_every_channel() {
    let MasterSlave {
        master,
        replica,
        dir,
        cfg,
        pm,
        ps,
        d1: _d1,
    } = master_slave_online().await;
    let _d2 = Replicator::start(
        &cfg,
        "db2",
        ps,
        &dir.path().join("db2.log"),
        &["--channels", "4"],
    );
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    setup_schemas(&master).await;
    wait_synced(&master, pm, ps).await;

    // a row only the replica has makes the master's insert in s3 fail
    replica
        .sql("INSERT INTO s3.t (id, v) VALUES (1000, 0)")
        .await;
    let mut c = master.conn().await;
    for i in 0..20 {
        let s = SCHEMAS[i % 4];
        c.query_drop(format!("INSERT INTO {s}.t (v) VALUES ({i})"))
            .await
            .unwrap();
    }
    c.query_drop("INSERT INTO s3.t (id, v) VALUES (1000, 1)")
        .await
        .unwrap();
    for i in 0..20 {
        let s = SCHEMAS[i % 4];
        c.query_drop(format!("INSERT INTO {s}.t (v) VALUES ({i})"))
            .await
            .unwrap();
    }
    let st = wait_status(ps, 30, "OFFLINE:ERROR", |st| st["state"] == "OFFLINE:ERROR").await;
    let err = st["pendingError"].as_str().unwrap().to_string();
    assert!(err.contains("apply failed at seqno"), "{st}");
    assert!(err.contains("INSERT INTO `s3`.`t`"), "{st}");
    assert!(err.contains("Duplicate entry '1000'"), "{st}");
    let bad = failed_seqno(&err);
    assert_eq!(st["pendingErrorSeqno"].as_i64().unwrap(), bad, "{st}");
    assert!(
        st["appliedLastSeqno"].as_i64().unwrap() < bad,
        "the low-water mark stays below the failed seqno: {st}"
    );
    trepctl_ok(ps, &["online", "-skip-seqno", &bad.to_string()]);
    let last = wait_synced(&master, pm, ps).await;
    assert!(last > bad);
    let v: Vec<i64> = replica.query("SELECT v FROM s3.t WHERE id = 1000").await;
    assert_eq!(v, vec![0], "the skipped insert was not applied");
    c.query_drop("UPDATE s3.t SET v = 0 WHERE id = 1000")
        .await
        .unwrap();

    // until-seqno: every channel stops at N, nothing beyond is applied
    trepctl_ok(ps, &["offline"]);
    trepctl_ok(ps, &["wait", "-state", "OFFLINE:NORMAL", "-limit", "30"]);
    for i in 0..40 {
        let s = SCHEMAS[i % 4];
        c.query_drop(format!("INSERT INTO {s}.t (v) VALUES ({})", 5000 + i))
            .await
            .unwrap();
    }
    let rows: Vec<(String, u64, String, String)> = master.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    wait_status(pm, 60, "extracted", |st| {
        st["appliedLastEventId"] == want.as_str()
    })
    .await;
    let end = status(pm)["maximumStoredSeqNo"].as_i64().unwrap();
    assert_eq!(end, last + 41);
    let until = last + 1 + 23;
    trepctl_ok(ps, &["online", "-until-seqno", &until.to_string()]);
    let st = wait_status(ps, 60, "OFFLINE:NORMAL after until", |st| {
        st["state"] == "OFFLINE:NORMAL" || st["state"] == "OFFLINE:ERROR"
    })
    .await;
    assert_eq!(st["state"], "OFFLINE:NORMAL", "{st}");
    assert_eq!(st["appliedLastSeqno"].as_i64().unwrap(), until, "{st}");
    let applied: Vec<i64> = replica
        .query(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM (SELECT v FROM s1.t UNION ALL SELECT v FROM s2.t \
             UNION ALL SELECT v FROM s3.t UNION ALL SELECT v FROM s4.t) x WHERE v >= 5000",
        )
        .await;
    assert_eq!(applied, vec![23], "exactly the transactions up to {until}");
    let rows = channel_rows(&replica).await;
    assert_eq!(rows, (0..4).map(|c| (c, until)).collect::<Vec<_>>());
    trepctl_ok(ps, &["online"]);
    wait_synced(&master, pm, ps).await;
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
}
