//! Where sessions go and when they must leave: RW to the primary, RO to a
//! replica, a moved primary (SIGHUP with a new config) closing idle old
//! sessions but never one mid-transaction, router OFFLINE / ONHOLD /
//! ONLINE as clients see them, and max-connections.
#![allow(clippy::unwrap_used)]

mod support;

use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};
use support::carbide::CarbideConfig;
use support::{Cluster, MariaDb};

async fn port_of(conn: &mut Conn) -> u16 {
    conn.query_first("SELECT @@port").await.unwrap().unwrap()
}

fn server_error(r: Result<impl std::fmt::Debug, mysql_async::Error>) -> (u16, String) {
    match r {
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn rw_goes_to_the_primary_ro_to_a_replica_and_falls_back() {
    let dbs = Cluster::new(3).start().await;
    let c = CarbideConfig::new(&dbs[0])
        .replica(&dbs[1])
        .replica(&dbs[2])
        .start()
        .await;
    let mut rw = Conn::new(c.rw_opts()).await.unwrap();
    assert_eq!(port_of(&mut rw).await, dbs[0].port);
    // least connections spreads RO sessions over both replicas
    let mut ro1 = Conn::new(c.ro_opts()).await.unwrap();
    let mut ro2 = Conn::new(c.ro_opts()).await.unwrap();
    let mut ports = vec![port_of(&mut ro1).await, port_of(&mut ro2).await];
    ports.sort();
    let mut want = vec![dbs[1].port, dbs[2].port];
    want.sort();
    assert_eq!(ports, want);
    let st = c.status();
    assert_eq!(st["sessions_per_datasource"]["db2"], 1);
    assert_eq!(st["sessions_per_datasource"]["db1"], 1);

    // no replica: RO falls back to the primary
    let c2 = CarbideConfig::new(&dbs[0]).start().await;
    let mut ro = Conn::new(c2.ro_opts()).await.unwrap();
    assert_eq!(port_of(&mut ro).await, dbs[0].port);
}

#[tokio::test]
async fn a_moved_primary_takes_new_sessions_and_old_ones_leave_at_commit() {
    let dbs = Cluster::new(2).start().await;
    for d in &dbs {
        d.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
            .await;
    }
    let cfg = CarbideConfig::new(&dbs[0])
        .replica(&dbs[1])
        .set("timeouts", "disconnect-ms = 30000");
    let mut c = cfg.clone().start().await;
    let mut idle = Conn::new(c.rw_opts()).await.unwrap();
    let mut busy = Conn::new(c.rw_opts()).await.unwrap();
    assert_eq!(port_of(&mut idle).await, dbs[0].port);
    busy.query_drop("BEGIN").await.unwrap();
    busy.query_drop("INSERT INTO app.t VALUES (1)")
        .await
        .unwrap();
    let ro_before = Conn::new(c.ro_opts()).await;

    c.reload(cfg.promote("db2"));
    assert_eq!(c.status()["routing_table"]["primary"]["name"], "db2");

    // new sessions land on the new primary
    let mut fresh = Conn::new(c.rw_opts()).await.unwrap();
    assert_eq!(port_of(&mut fresh).await, dbs[1].port);
    // the transaction in flight goes on, and commits on the old primary
    busy.query_drop("INSERT INTO app.t VALUES (2)")
        .await
        .unwrap();
    busy.query_drop("COMMIT").await.unwrap();
    let n: Vec<u64> = dbs[0].query("SELECT COUNT(*) FROM app.t").await;
    assert_eq!(n, vec![2]);
    // ...after which that session is closed, as the idle one already was
    for conn in [&mut busy, &mut idle] {
        let r = tokio::time::timeout(Duration::from_secs(5), conn.query_drop("SELECT 1"))
            .await
            .unwrap();
        assert!(
            r.is_err(),
            "old RW session still open after the primary moved"
        );
    }
    // a RO session on db2 (still ONLINE) stays
    if let Ok(mut ro) = ro_before {
        assert!(ro.query_drop("SELECT 1").await.is_ok());
    }
    assert!(c
        .log_text()
        .contains("session closed at a transaction boundary"));
}

#[tokio::test]
async fn router_offline_refuses_new_sessions_and_drains_open_ones() {
    let db = MariaDb::start().await;
    db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    let c = CarbideConfig::new(&db)
        .set("timeouts", "disconnect-ms = 2000")
        .start()
        .await;
    let mut idle = Conn::new(c.rw_opts()).await.unwrap();
    let mut in_tx = Conn::new(c.rw_opts()).await.unwrap();
    let mut stuck = Conn::new(c.rw_opts()).await.unwrap();
    in_tx
        .query_drop("BEGIN; INSERT INTO app.t VALUES (1)")
        .await
        .unwrap();
    stuck
        .query_drop("BEGIN; INSERT INTO app.t VALUES (2)")
        .await
        .unwrap();

    c.router("offline");
    assert_eq!(c.status()["router_state"], "OFFLINE");
    let (code, msg) = server_error(Conn::new(c.rw_opts()).await);
    assert_eq!(code, 1053);
    assert!(msg.contains("carbide connector is offline"), "{msg}");
    // the transaction finishes, then the session is closed
    in_tx.query_drop("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(in_tx.query_drop("SELECT 1").await.is_err());
    assert!(idle.query_drop("SELECT 1").await.is_err());
    // one that never commits is closed after disconnect-ms, its work rolled back
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(stuck.query_drop("COMMIT").await.is_err());
    let ids: Vec<i32> = db.query("SELECT id FROM app.t").await;
    assert_eq!(ids, vec![1]);

    c.router("online");
    let mut again = Conn::new(c.rw_opts()).await.unwrap();
    assert_eq!(port_of(&mut again).await, db.port);
    let m = c.metrics();
    assert!(
        m.contains("carbide_connector_router_state{state=\"ONLINE\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "carbide_connector_errors_total{kind=\"forced_disconnect\",side=\"internal\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn router_onhold_makes_new_work_wait_then_errors_after_the_timeout() {
    let db = MariaDb::start().await;
    let c = CarbideConfig::new(&db)
        .set("timeouts", "wait-if-unavailable-ms = 1500")
        .start()
        .await;
    let mut open = Conn::new(c.rw_opts()).await.unwrap();
    c.router("onhold");

    // a new session waits, and proceeds when the router comes back
    let opts = c.rw_opts();
    let t = Instant::now();
    let waiting = tokio::spawn(async move { Conn::new(opts).await.map(|_| Instant::now()) });
    // an open session's next transaction waits too
    let q = tokio::spawn(async move {
        let r: Option<i64> = open.query_first("SELECT 7").await.unwrap();
        (r, Instant::now(), open)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished() && !q.is_finished(),
        "work did not wait while ONHOLD"
    );
    c.router("online");
    let connected_at = waiting.await.unwrap().unwrap();
    let (r, answered_at, mut open) = q.await.unwrap();
    assert_eq!(r, Some(7));
    assert!(connected_at.duration_since(t) >= Duration::from_millis(600));
    assert!(answered_at.duration_since(t) >= Duration::from_millis(600));

    // ONHOLD longer than wait-if-unavailable-ms: a clear error
    c.router("onhold");
    let (code, msg) = server_error(Conn::new(c.rw_opts()).await);
    assert_eq!(code, 1053);
    assert!(
        msg.contains("carbide connector is on hold: waited 1500 ms"),
        "{msg}"
    );
    let (code, msg) = server_error(open.query_drop("SELECT 1").await);
    assert_eq!(code, 1053, "{msg}");
    assert!(msg.contains("on hold"), "{msg}");
    c.router("online");
}

#[tokio::test]
async fn max_connections_gives_error_1040() {
    let db = MariaDb::start().await;
    let c = CarbideConfig::new(&db)
        .set("connector", "max-connections = 2")
        .start()
        .await;
    let _a = Conn::new(c.rw_opts()).await.unwrap();
    let _b = Conn::new(c.ro_opts()).await.unwrap();
    let (code, msg) = server_error(Conn::new(c.rw_opts()).await);
    assert_eq!(code, 1040);
    assert!(msg.contains("Too many connections"), "{msg}");
    _a.disconnect().await.unwrap();
    // once carbide has seen that session end, there is room again
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.status()["open_sessions"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "{}", c.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(Conn::new(c.rw_opts()).await.is_ok());
}

#[tokio::test]
async fn sigterm_lets_an_open_transaction_finish() {
    let db = MariaDb::start().await;
    db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    let mut c = CarbideConfig::new(&db)
        .set("timeouts", "disconnect-ms = 5000")
        .start()
        .await;
    let mut s = Conn::new(c.rw_opts()).await.unwrap();
    s.query_drop("BEGIN; INSERT INTO app.t VALUES (1)")
        .await
        .unwrap();
    let pid = c.pid();
    let stopper = std::thread::spawn(move || {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
    });
    stopper.join().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", c.cfg.rw)).is_err(),
        "still accepting after SIGTERM"
    );
    s.query_drop("COMMIT").await.unwrap();
    assert!(
        c.stop(Duration::from_secs(5)),
        "carbide did not exit after the last session ended"
    );
    let ids: Vec<i32> = db.query("SELECT id FROM app.t").await;
    assert_eq!(ids, vec![1]);
}
