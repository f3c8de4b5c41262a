//! THL transfer over TLS: a master serving with `--thl-tls-cert/-key` and a
//! slave trusting the CA with `--thl-tls-ca` replicate as usual; a slave
//! that does not speak TLS to it never gets a record (it keeps retrying,
//! GOING-ONLINE, naming the failure).
#![allow(clippy::unwrap_used)]

mod support;

use support::carbide::tls_certs;
use support::replicator::{master_slave_config, status, trepctl_ok, wait_status, Replicator};
use support::MariaDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_pulls_thl_over_tls() {
    let db1 = MariaDb::start().await;
    let db2 = MariaDb::builder().arg("--read-only=ON").start().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    tls_certs(&certs);
    let (cfg, pm, ps) = master_slave_config(dir.path(), &db1, &db2);
    let p = |f: &str| certs.join(f).to_str().unwrap().to_string();
    let _d1 = Replicator::start(
        &cfg,
        "db1",
        pm,
        &dir.path().join("db1.log"),
        &[
            "--thl-tls-cert",
            &p("server.pem"),
            "--thl-tls-key",
            &p("server.key"),
        ],
    );
    trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    db1.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    // without TLS the slave cannot talk to this master
    let plain = Replicator::start(&cfg, "db2", ps, &dir.path().join("plain.log"), &[]);
    let st = wait_status(ps, 30, "a connection error", |st| {
        st["pendingExceptionMessage"] != "NONE"
    })
    .await;
    assert_eq!(st["state"], "GOING-ONLINE:SYNCHRONIZING", "{st}");
    assert_eq!(st["maximumStoredSeqNo"], -1, "{st}");
    drop(plain);
    let _d2 = Replicator::start(
        &cfg,
        "db2",
        ps,
        &dir.path().join("db2.log"),
        &["--thl-tls-ca", &p("ca.pem")],
    );
    wait_status(ps, 30, "ONLINE", |st| st["state"] == "ONLINE").await;
    for i in 0..20 {
        db1.sql(&format!("INSERT INTO app.t VALUES ({i})")).await;
    }
    let rows: Vec<(String, u64, String, String)> = db1.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    wait_status(pm, 30, "extracted", |st| {
        st["appliedLastEventId"] == want.as_str()
    })
    .await;
    let target = status(pm)["maximumStoredSeqNo"].as_i64().unwrap();
    wait_status(ps, 30, "applied", |st| {
        st["appliedLastSeqno"].as_i64().unwrap_or(-1) >= target
    })
    .await;
    let n: Vec<i64> = db2.query("SELECT COUNT(*) FROM app.t").await;
    assert_eq!(n, vec![20]);
}
