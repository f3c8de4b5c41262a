//! Several services in one replicator process: db3's replicator runs
//! service `alpha` (a slave of db1) and service `beta` (a slave of db2),
//! fanning both masters into one replica; `trepctl -service` addresses
//! each one.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::replicator::{service_status, trepctl_ok, Replicator};
use support::{free_port, MariaDb};

fn config(
    dir: &std::path::Path,
    service: &str,
    master: &MariaDb,
    replica: &MariaDb,
    admin: (u16, u16),
) -> PathBuf {
    let text = format!(
        "[service]\nname = \"{service}\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n\n\
         [[member]]\nname = \"m-{service}\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"master\"\n\n\
         [[member]]\nname = \"db3\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"slave\"\n",
        dir.join("thl").display(),
        master.port,
        admin.0,
        free_port(),
        free_port(),
        replica.port,
        admin.1,
        free_port(),
        free_port(),
    );
    let text = text + &support::replicator::security(dir);
    let p = dir.join(format!("{service}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

async fn schema_checksums(db: &MariaDb, schema: &str) -> BTreeMap<String, u64> {
    db.checksum_all_tables()
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{schema}.")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replicator_applies_two_services() {
    let db1 = MariaDb::start().await;
    let db2 = MariaDb::start().await;
    let db3 = MariaDb::builder().arg("--read-only=ON").start().await;
    let dir = tempfile::tempdir().unwrap();
    let (a1, a2, a3) = (free_port(), free_port(), free_port());
    let alpha = config(dir.path(), "alpha", &db1, &db3, (a1, a3));
    let beta = config(dir.path(), "beta", &db2, &db3, (a2, a3));
    let _m1 = Replicator::start(&alpha, "m-alpha", a1, &dir.path().join("m1.log"), &[]);
    let _m2 = Replicator::start(&beta, "m-beta", a2, &dir.path().join("m2.log"), &[]);
    trepctl_ok(a1, &["wait", "-state", "ONLINE", "-limit", "30"]);
    trepctl_ok(a2, &["wait", "-state", "ONLINE", "-limit", "30"]);
    let beta_arg = beta.to_str().unwrap().to_string();
    let _r = Replicator::start(
        &alpha,
        "db3",
        a3,
        &dir.path().join("db3.log"),
        &["--config", &beta_arg],
    );
    for s in ["alpha", "beta"] {
        trepctl_ok(
            a3,
            &["-service", s, "wait", "-state", "ONLINE", "-limit", "30"],
        );
    }
    let services = trepctl_ok(a3, &["services", "-json"]);
    assert!(
        services.contains("alpha") && services.contains("beta"),
        "{services}"
    );
    db1.sql("CREATE DATABASE a; CREATE TABLE a.t (id INT PRIMARY KEY, v TEXT)")
        .await;
    db2.sql("CREATE DATABASE b; CREATE TABLE b.t (id INT PRIMARY KEY, v TEXT)")
        .await;
    for i in 0..30 {
        db1.sql(&format!("INSERT INTO a.t VALUES ({i}, 'a{i}')"))
            .await;
        db2.sql(&format!("INSERT INTO b.t VALUES ({i}, 'b{i}')"))
            .await;
    }
    for (db, port, s) in [(&db1, a1, "alpha"), (&db2, a2, "beta")] {
        let rows: Vec<(String, u64, String, String)> = db.query("SHOW MASTER STATUS").await;
        let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while service_status(port, s)["appliedLastEventId"] != want.as_str() {
            assert!(Instant::now() < deadline, "{s} not extracted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let target = service_status(port, s)["maximumStoredSeqNo"]
            .as_i64()
            .unwrap();
        trepctl_ok(
            a3,
            &[
                "-service",
                s,
                "wait",
                "-applied",
                &target.to_string(),
                "-limit",
                "30",
            ],
        );
    }
    assert_eq!(
        schema_checksums(&db1, "a").await,
        schema_checksums(&db3, "a").await
    );
    assert_eq!(
        schema_checksums(&db2, "b").await,
        schema_checksums(&db3, "b").await
    );
    assert!(!schema_checksums(&db3, "b").await.is_empty());
    let pos: Vec<String> = db3
        .query("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'tungsten_%' ORDER BY 1")
        .await;
    assert_eq!(
        pos,
        vec!["tungsten_alpha".to_string(), "tungsten_beta".to_string()]
    );
}
