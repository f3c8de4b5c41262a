//! The read-only port never writes, whatever the account: an application
//! account with `GRANT ALL ON *.*` (which holds `READ_ONLY ADMIN` and so
//! passes over `read_only=ON`) gets MariaDB's error 1792 for every write
//! through it, on a replica, on the primary when no replica is there, after
//! COM_RESET_CONNECTION and COM_CHANGE_USER, and from the `mariadb` CLI;
//! nothing changes on any member, reads work, and the read-write port still
//! writes. A write pipelined behind a reset (sent before its answer) is
//! refused without reaching the server.
#![allow(clippy::unwrap_used)]

mod support;

use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn, Opts, OptsBuilder};
use support::carbide::CarbideConfig;
use support::MariaDb;

/// MariaDB's ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION.
const READ_ONLY_TX: u16 = 1792;

/// The common application account: `GRANT ALL ON *.*`, a table with one row.
const APP: &str = "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app'; \
     GRANT ALL PRIVILEGES ON *.* TO 'app'@'127.0.0.1'; \
     CREATE DATABASE demo; CREATE TABLE demo.t (id INT PRIMARY KEY, v TEXT); \
     INSERT INTO demo.t VALUES (1, 'hello')";

/// Writes of every kind, each of which must fail.
const WRITES: &[&str] = &[
    "INSERT INTO demo.t VALUES (2, 'x')",
    "UPDATE demo.t SET v = 'changed'",
    "DELETE FROM demo.t",
    "CREATE TABLE demo.u (id INT)",
    "DROP TABLE demo.t",
    "CREATE DATABASE other",
    "INSERT INTO demo.t VALUES (3, 'y'); SELECT 1",
];

fn app(opts: Opts) -> Opts {
    OptsBuilder::from_opts(opts)
        .user(Some("app"))
        .pass(Some("app"))
        .into()
}

async fn port_of(conn: &mut Conn) -> u16 {
    conn.query_first("SELECT @@port").await.unwrap().unwrap()
}

/// Every write fails with 1792 and a read still works.
async fn assert_read_only(conn: &mut Conn, when: &str) {
    for w in WRITES {
        match conn.query_drop(*w).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, READ_ONLY_TX, "{when}: {w}: {}", e.message)
            }
            other => panic!("{when}: {w} through the read-only port: {other:?}"),
        }
    }
    let v: Option<String> = conn
        .query_first("SELECT v FROM demo.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("hello"), "{when}: reads work");
}

/// What a member holds: table checksums and its schemas.
async fn state(db: &MariaDb) -> (Vec<(String, u64)>, Vec<String>) {
    let sums = db.user_checksums().await.into_iter().collect();
    let schemas = db.query("SHOW DATABASES").await;
    (sums, schemas)
}

#[tokio::test]
async fn grant_all_cannot_write_through_the_read_only_port() {
    let dbs = support::Cluster::new(3).start().await;
    for (i, d) in dbs.iter().enumerate() {
        d.sql(APP).await;
        if i > 0 {
            d.sql("SET GLOBAL read_only = ON").await;
        }
    }
    let before = state(&dbs[0]).await;
    let c = CarbideConfig::new(&dbs[0])
        .replica(&dbs[1])
        .replica(&dbs[2])
        .start()
        .await;

    // two sessions: least connections puts one on each replica
    let mut ports = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut ro = Conn::new(app(c.ro_opts())).await.unwrap();
        ports.push(port_of(&mut ro).await);
        assert_read_only(&mut ro, "fresh session").await;
        sessions.push(ro);
    }
    ports.sort();
    let mut replicas = vec![dbs[1].port, dbs[2].port];
    replicas.sort();
    assert_eq!(ports, replicas);
    for ro in &mut sessions {
        // an explicit transaction is read-only too
        ro.query_drop("START TRANSACTION").await.unwrap();
        assert_read_only(ro, "inside START TRANSACTION").await;
        ro.query_drop("COMMIT").await.unwrap();
    }

    // the mariadb CLI, as the reporter ran it
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uapp", "-papp"])
        .arg(format!("-P{}", c.cfg.ro))
        .args(["-e", "INSERT INTO demo.t VALUES (2,'x')"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the CLI wrote: {stderr}");
    assert!(stderr.contains("ERROR 1792"), "{stderr}");

    // nothing changed anywhere: every member is as it was
    for d in &dbs {
        assert_eq!(state(d).await, before, "member on port {}", d.port);
    }

    // the read-write port still writes
    let mut rw = Conn::new(app(c.rw_opts())).await.unwrap();
    rw.query_drop("INSERT INTO demo.t VALUES (2, 'x')")
        .await
        .unwrap();
    let n: Vec<u64> = dbs[0].query("SELECT COUNT(*) FROM demo.t").await;
    assert_eq!(n, vec![2]);
}

#[tokio::test]
async fn a_reset_or_change_user_does_not_make_the_session_writable() {
    let dbs = support::Cluster::new(2).start().await;
    for d in &dbs {
        d.sql(APP).await;
    }
    dbs[1].sql("SET GLOBAL read_only = ON").await;
    let before = state(&dbs[1]).await;
    let c = CarbideConfig::new(&dbs[0]).replica(&dbs[1]).start().await;

    let mut ro = Conn::new(app(c.ro_opts())).await.unwrap();
    assert_eq!(port_of(&mut ro).await, dbs[1].port);
    for round in 0..2 {
        // COM_RESET_CONNECTION
        ro.reset().await.unwrap();
        assert_read_only(&mut ro, &format!("after reset {round}")).await;
        // COM_CHANGE_USER, to another GRANT ALL account and back
        ro.change_user(
            ChangeUserOpts::default()
                .with_user(Some("root".into()))
                .with_pass(None),
        )
        .await
        .unwrap();
        let who: Option<String> = ro.query_first("SELECT CURRENT_USER()").await.unwrap();
        assert_eq!(who.as_deref(), Some("root@127.0.0.1"));
        assert_read_only(&mut ro, &format!("after change_user {round}")).await;
        ro.change_user(
            ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("app".into())),
        )
        .await
        .unwrap();
        assert_read_only(&mut ro, &format!("after change_user back {round}")).await;
    }
    // a client that asks for writes explicitly gets them (documented)
    ro.query_drop("SET SESSION TRANSACTION READ WRITE")
        .await
        .unwrap();
    ro.query_drop("INSERT INTO demo.t VALUES (9, 'asked for it')")
        .await
        .unwrap();
    ro.query_drop("DELETE FROM demo.t WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(state(&dbs[1]).await, before);
    // ...and a reset takes it back to read-only
    ro.reset().await.unwrap();
    assert_read_only(&mut ro, "after READ WRITE and a reset").await;
}

#[tokio::test]
async fn without_a_replica_the_read_only_port_is_read_only_on_the_primary() {
    let db = MariaDb::start().await;
    db.sql(APP).await;
    let before = state(&db).await;
    let c = CarbideConfig::new(&db).start().await;
    let mut ro = Conn::new(app(c.ro_opts())).await.unwrap();
    assert_eq!(port_of(&mut ro).await, db.port);
    assert_read_only(&mut ro, "fallback to the primary").await;
    assert_eq!(state(&db).await, before);
    let mut rw = Conn::new(app(c.rw_opts())).await.unwrap();
    rw.query_drop("INSERT INTO demo.t VALUES (2, 'x')")
        .await
        .unwrap();
}

/// One MySQL packet: 3-byte length, sequence id, payload.
fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    p.extend_from_slice(payload);
    p
}

async fn read_packet(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.unwrap();
    let mut p = vec![0u8; h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16];
    s.read_exact(&mut p).await.unwrap();
    p
}

#[tokio::test]
async fn a_write_pipelined_behind_a_reset_does_not_run() {
    use tokio::io::AsyncWriteExt;
    let db = MariaDb::start().await;
    db.sql(APP).await;
    let before = state(&db).await;
    let c = CarbideConfig::new(&db).start().await;
    // a hand-made client: root (no password, GRANT ALL), protocol 4.1
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.cfg.ro))
        .await
        .unwrap();
    let _greeting = read_packet(&mut s).await;
    let caps: u32 = 0x1 | 0x200 | 0x2000 | 0x8000; // long password, 4.1, transactions, secure conn
    let mut resp = caps.to_le_bytes().to_vec();
    resp.extend_from_slice(&(1u32 << 24).to_le_bytes());
    resp.push(33);
    resp.extend_from_slice(&[0u8; 23]);
    resp.extend_from_slice(b"root\0");
    resp.push(0); // empty auth response
    s.write_all(&packet(1, &resp)).await.unwrap();
    let ok = read_packet(&mut s).await;
    assert!(ok.starts_with(&[0x00]), "auth OK: {ok:?}");
    // COM_RESET_CONNECTION and an INSERT behind it, in one write
    let mut both = packet(0, &[0x1f]);
    both.extend(packet(0, b"\x03INSERT INTO demo.t VALUES (7, 'pipelined')"));
    s.write_all(&both).await.unwrap();
    let first = read_packet(&mut s).await;
    assert!(
        first.starts_with(&[0xff]) && first.len() > 9,
        "refused: {first:?}"
    );
    let code = u16::from_le_bytes([first[1], first[2]]);
    let msg = String::from_utf8_lossy(&first[9..]).to_string();
    assert_eq!(code, 1105, "{msg}");
    assert!(
        msg.contains("before the answer to a session reset"),
        "{msg}"
    );
    assert_eq!(state(&db).await, before, "the INSERT did not run");
    // carbide logs the close after it sent the error: give it a moment
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !c.log_text().contains("read-only session closed") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(c.log_text().contains("read-only session closed"));
}
