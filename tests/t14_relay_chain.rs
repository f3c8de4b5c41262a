//! A relay chain: db1 (master) → db2 (relay: applies and serves its THL) →
//! db3 (slave of the relay, pointed there with `setrole -uri`). All three
//! end identical; `offline-deferred -at-seqno N` stops db3 exactly after N
//! and `online` continues from there.
#![allow(clippy::unwrap_used)]

mod support;

use support::replicator::{status, trepctl_ok, wait_status, Replicator};
use support::{free_port, MariaDb};

async fn wait_applied(from: u16, to: u16) -> i64 {
    let target = status(from)["maximumStoredSeqNo"].as_i64().unwrap();
    wait_status(to, 60, &format!("applied {target}"), |st| {
        st["appliedLastSeqno"].as_i64().unwrap_or(-1) >= target
    })
    .await;
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_relay_slave_chain_stays_identical() {
    let db1 = MariaDb::start().await;
    let db2 = MariaDb::builder().arg("--read-only=ON").start().await;
    let db3 = MariaDb::builder().arg("--read-only=ON").start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = [free_port(), free_port(), free_port()];
    let thl = [free_port(), free_port(), free_port()];
    let mut text = format!(
        "[service]\nname = \"alpha\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n",
        dir.path().join("thl").display()
    );
    for (i, (db, role)) in [(&db1, "master"), (&db2, "relay"), (&db3, "slave")]
        .iter()
        .enumerate()
    {
        text.push_str(&format!(
            "\n[[member]]\nname = \"db{}\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
             thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"{role}\"\n",
            i + 1,
            db.port,
            admin[i],
            thl[i],
            free_port()
        ));
    }
    text.push_str(&support::replicator::security(dir.path()));
    let cfg = dir.path().join("carbide.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = |n: &str| dir.path().join(format!("{n}.log"));
    let _d1 = Replicator::start(&cfg, "db1", admin[0], &log("db1"), &[]);
    let _d2 = Replicator::start(&cfg, "db2", admin[1], &log("db2"), &[]);
    let _d3 = Replicator::start(&cfg, "db3", admin[2], &log("db3"), &["--no-auto-online"]);
    let relay_uri = format!("thl://127.0.0.1:{}/", thl[1]);
    trepctl_ok(admin[2], &["setrole", "-role", "slave", "-uri", &relay_uri]);
    trepctl_ok(admin[2], &["online"]);
    for p in admin {
        wait_status(p, 30, "ONLINE", |st| st["state"] == "ONLINE").await;
    }
    assert_eq!(status(admin[1])["role"], "relay");
    assert_eq!(status(admin[2])["masterConnectUri"], relay_uri.as_str());
    db1.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    for i in 0..50 {
        db1.sql(&format!("INSERT INTO app.t VALUES ({i}, 'v{i}')"))
            .await;
    }
    let rows: Vec<(String, u64, String, String)> = db1.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    wait_status(admin[0], 30, "extracted", |st| {
        st["appliedLastEventId"] == want.as_str()
    })
    .await;
    wait_applied(admin[0], admin[1]).await;
    let last = wait_applied(admin[1], admin[2]).await;
    let c1 = db1.user_checksums().await;
    assert_eq!(c1, db2.user_checksums().await);
    assert_eq!(c1, db3.user_checksums().await);

    // deferred offline on the end of the chain
    let stop_at = last + 5;
    trepctl_ok(
        admin[2],
        &["offline-deferred", "-at-seqno", &stop_at.to_string()],
    );
    for i in 50..60 {
        db1.sql(&format!("INSERT INTO app.t VALUES ({i}, 'v{i}')"))
            .await;
    }
    let st = wait_status(admin[2], 30, "OFFLINE:NORMAL", |st| {
        st["state"] == "OFFLINE:NORMAL"
    })
    .await;
    assert_eq!(st["appliedLastSeqno"].as_i64().unwrap(), stop_at, "{st}");
    let n: Vec<i64> = db3.query("SELECT COUNT(*) FROM app.t").await;
    assert_eq!(n, vec![55]);
    trepctl_ok(admin[2], &["online"]);
    wait_status(admin[0], 30, "extracted", |st| {
        st["appliedLastSeqno"].as_i64().unwrap() >= last + 10
    })
    .await;
    wait_applied(admin[0], admin[1]).await;
    wait_applied(admin[1], admin[2]).await;
    let c1 = db1.user_checksums().await;
    assert_eq!(c1, db2.user_checksums().await);
    assert_eq!(c1, db3.user_checksums().await);
}
