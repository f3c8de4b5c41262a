//! A primary and two replicas kept in sync by carbide-replicator alone
//! under sysbench read-write load for two minutes (`CARBIDE_SOAK_SECS`
//! shortens it while iterating), with a `kill -9` of a slave's
//! replicator, then of the master's replicator, then of a replica's
//! database, each restarted: afterwards all three hold identical data and
//! every replicator is ONLINE (a transaction applied twice stops its
//! applier: oltp_read_write's DELETE then finds no row, its INSERT a
//! duplicate key; one lost leaves the checksums different).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::replicator::{status, trepctl_ok, wait_status, Replicator};
use support::{free_port, MariaDb};

/// Seconds of load.
fn soak_secs() -> u64 {
    std::env::var("CARBIDE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
        .max(8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stay_identical_under_sysbench() {
    let db1 = MariaDb::start().await;
    let mut db2 = MariaDb::builder().arg("--read-only=ON").start().await;
    let db3 = MariaDb::builder().arg("--read-only=ON").start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = [free_port(), free_port(), free_port()];
    let mut text = format!(
        "[service]\nname = \"alpha\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n",
        dir.path().join("thl").display()
    );
    for (i, (db, role)) in [(&db1, "master"), (&db2, "slave"), (&db3, "slave")]
        .iter()
        .enumerate()
    {
        text.push_str(&format!(
            "\n[[member]]\nname = \"db{}\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
             thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"{role}\"\n",
            i + 1,
            db.port,
            admin[i],
            free_port(),
            free_port()
        ));
    }
    text.push_str(&support::replicator::security(dir.path()));
    let cfg = dir.path().join("carbide.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = |n: &str| dir.path().join(format!("{n}.log"));
    let mut d1 = Replicator::start(&cfg, "db1", admin[0], &log("db1"), &[]);
    trepctl_ok(admin[0], &["wait", "-state", "ONLINE", "-limit", "30"]);
    let d2 = Replicator::start(&cfg, "db2", admin[1], &log("db2"), &[]);
    let mut d3 = Replicator::start(&cfg, "db3", admin[2], &log("db3"), &[]);
    for p in &admin[1..] {
        wait_status(*p, 30, "ONLINE", |st| st["state"] == "ONLINE").await;
    }
    db1.sql("CREATE DATABASE sbtest").await;
    let common = [
        "--db-driver=mysql".to_string(),
        "--mysql-host=127.0.0.1".to_string(),
        format!("--mysql-port={}", db1.port),
        "--mysql-user=root".to_string(),
        "--mysql-password=".to_string(),
        "--tables=2".to_string(),
        "--table-size=2000".to_string(),
    ];
    let sysbench = |args: Vec<String>| {
        let common = common.clone();
        std::thread::spawn(move || {
            let out = Command::new("sysbench")
                .arg("oltp_read_write")
                .args(&common)
                .args(&args)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            text
        })
    };
    sysbench(vec!["prepare".into()]).join().unwrap();
    let secs = soak_secs();
    let run = sysbench(vec![
        "--threads=4".into(),
        format!("--time={secs}"),
        "--report-interval=0".into(),
        "run".into(),
    ]);
    let quarter = Duration::from_secs(secs) / 4;
    let pause = Duration::from_millis(500);
    tokio::time::sleep(quarter).await;
    d3.kill9(); // a slave's replicator
    tokio::time::sleep(pause).await;
    d3.spawn();
    tokio::time::sleep(quarter).await;
    d1.kill9(); // the master's replicator
    tokio::time::sleep(pause).await;
    d1.spawn();
    tokio::time::sleep(quarter).await;
    db2.kill9().await; // a replica's database
    tokio::time::sleep(pause).await;
    db2.restart().await;
    let out = tokio::task::spawn_blocking(move || run.join().unwrap())
        .await
        .unwrap();
    let tps: f64 = out
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(tps > 5.0, "{out}");
    let load_end = Instant::now();
    let rows: Vec<(String, u64, String, String)> = db1.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    wait_status(admin[0], 60, "extracted", |st| {
        st["appliedLastEventId"] == want.as_str()
    })
    .await;
    let target = status(admin[0])["maximumStoredSeqNo"].as_i64().unwrap();
    for p in &admin[1..] {
        wait_status(*p, 60, &format!("applied {target}"), |st| {
            st["appliedLastSeqno"].as_i64().unwrap_or(-1) >= target
        })
        .await;
    }
    eprintln!(
        "sysbench {tps} tps on the master; {target} transactions; replicas caught up {:?} after the load ended",
        load_end.elapsed()
    );
    let c1 = db1.user_checksums().await;
    assert!(c1.contains_key("sbtest.sbtest1"), "{c1:?}");
    assert_eq!(c1, db2.user_checksums().await);
    assert_eq!(c1, db3.user_checksums().await);
    for p in &admin {
        assert_eq!(status(*p)["state"], "ONLINE");
    }
    assert!(
        d2.log_text().contains("applier lost its database"),
        "{}",
        d2.log_text()
    );
    drop((d1, d2, d3));
}
