//! The harness itself: real servers start quickly, take writes, compare by
//! checksum, and keep committed data through kill -9 and restart.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Instant;
use support::{Cluster, MariaDb};

#[tokio::test]
async fn three_servers_start_compare_and_survive_kill9() {
    let t = Instant::now();
    let mut dbs = Cluster::new(3).start().await;
    eprintln!("3 servers started in {:?}", t.elapsed());
    let ids: Vec<u32> = dbs.iter().map(|d| d.server_id).collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    for d in &dbs {
        let (id, fmt): (u32, String) = d
            .query("SELECT @@server_id, @@binlog_format")
            .await
            .pop()
            .unwrap();
        assert_eq!(id, d.server_id);
        assert_eq!(fmt, "ROW");
    }

    let schema =
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB";
    for d in &dbs {
        d.sql(schema).await;
    }
    assert_eq!(
        dbs[0].checksum_all_tables().await,
        dbs[1].checksum_all_tables().await
    );

    dbs[0]
        .sql("INSERT INTO app.t VALUES (1, 'one'), (2, 'two')")
        .await;
    let a = dbs[0].checksum_all_tables().await;
    let b = dbs[1].checksum_all_tables().await;
    assert_eq!(a.keys().collect::<Vec<_>>(), vec!["app.t"]);
    assert_ne!(a, b, "different data must give different checksums");
    dbs[1]
        .sql("INSERT INTO app.t VALUES (1, 'one'), (2, 'two')")
        .await;
    assert_eq!(a, dbs[1].checksum_all_tables().await);

    // kill -9 right after a commit: the row is there after restart.
    dbs[0].sql("INSERT INTO app.t VALUES (3, 'three')").await;
    let old_pid = dbs[0].pid();
    dbs[0].kill9().await;
    assert!(
        std::net::TcpStream::connect(dbs[0].addr()).is_err(),
        "killed server still listens"
    );
    dbs[0].restart().await;
    assert_ne!(dbs[0].pid(), old_pid);
    let n: Vec<u64> = dbs[0].query("SELECT COUNT(*) FROM app.t").await;
    assert_eq!(n, vec![3]);

    // a clean stop and start keeps it too
    dbs[2].sql("INSERT INTO app.t VALUES (9, 'nine')").await;
    dbs[2].stop().await;
    dbs[2].restart().await;
    let v: Vec<String> = dbs[2].query("SELECT v FROM app.t WHERE id = 9").await;
    assert_eq!(v, vec!["nine"]);
}

#[tokio::test]
async fn dropping_a_server_stops_it_and_removes_its_files() {
    let db = MariaDb::start().await;
    let dir = db.dir().to_path_buf();
    let addr = db.addr();
    let pid = db.pid().unwrap();
    assert!(dir.join("data").is_dir());
    drop(db);
    assert!(!dir.exists(), "temp dir left behind");
    assert!(std::net::TcpStream::connect(&addr).is_err());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process left behind"
    );
}
