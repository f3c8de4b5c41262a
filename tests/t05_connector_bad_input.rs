//! Bad input and failing peers: each gives the client a clear MySQL error or
//! a clean close, carbide keeps serving others, and its open file
//! descriptors return to where they started.
#![allow(clippy::unwrap_used)]

mod support;

use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};
use support::carbide::{Carbide, CarbideConfig};
use support::MariaDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one packet: (seq, payload).
async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.ok()?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    let mut p = vec![0; len];
    s.read_exact(&mut p).await.ok()?;
    Some((h[3], p))
}

/// Connects raw and reads the (relayed) greeting.
async fn greeted(c: &Carbide) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", c.cfg.rw)).await.unwrap();
    let (seq, g) = read_packet(&mut s).await.unwrap();
    assert_eq!((seq, g[0]), (0, 10), "protocol-10 greeting");
    s
}

/// Reads until the connection closes; returns the ERR message if one came.
async fn error_then_close(s: &mut TcpStream) -> Option<String> {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let mut msg = None;
        while let Some((_, p)) = read_packet(s).await {
            if <[u8]>::first(&p) == Some(&0xff) {
                msg = Some(String::from_utf8_lossy(&p[9..]).to_string());
            }
        }
        msg
    })
    .await;
    r.expect("carbide did not close the connection")
}

async fn works(c: &Carbide) {
    let mut conn = Conn::new(c.rw_opts()).await.unwrap();
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
}

async fn settle_fds(c: &Carbide, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = c.fd_count();
        if now <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "carbide holds {now} fds, baseline {baseline}:\n{}",
            c.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn malformed_clients_get_errors_and_nothing_leaks() {
    let db = MariaDb::start().await;
    let c = CarbideConfig::new(&db)
        .set("timeouts", "handshake-ms = 1000")
        .start()
        .await;
    works(&c).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = c.fd_count();

    // HTTP instead of MySQL: its "length" is 5 MB of handshake
    let mut s = greeted(&c).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let msg = error_then_close(&mut s).await.unwrap();
    assert!(
        msg.starts_with("carbide: bad handshake: packet of"),
        "{msg}"
    );

    // a 16 MiB length with no body
    let mut s = greeted(&c).await;
    s.write_all(&[0xff, 0xff, 0xff, 0x01]).await.unwrap();
    let msg = error_then_close(&mut s).await.unwrap();
    assert_eq!(msg, "carbide: bad handshake: packet of 16777215 bytes");

    // a short packet that is not a 4.1 handshake response
    let mut s = greeted(&c).await;
    s.write_all(&[3, 0, 0, 1, 1, 2, 3]).await.unwrap();
    let msg = error_then_close(&mut s).await.unwrap();
    assert_eq!(
        msg,
        "carbide: bad handshake: not a protocol 4.1 handshake response"
    );

    // a truncated header, then gone
    let mut s = greeted(&c).await;
    s.write_all(&[0x20, 0]).await.unwrap();
    drop(s);

    // garbage before reading the greeting, then gone
    let mut s = TcpStream::connect(("127.0.0.1", c.cfg.rw)).await.unwrap();
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2])
        .await
        .unwrap();
    drop(s);

    // a client that stalls in the handshake is cut off after handshake-ms
    let mut s = greeted(&c).await;
    let t = Instant::now();
    assert_eq!(error_then_close(&mut s).await, None);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    works(&c).await;
    settle_fds(&c, baseline).await;
    let m = c.metrics();
    let line = |k: &str| {
        m.lines()
            .find(|l| l.contains(k))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        line("kind=\"malformed\",side=\"client\""),
        "carbide_connector_errors_total{kind=\"malformed\",side=\"client\"} 4"
    );
    assert_eq!(
        line("handshake_timeout"),
        "carbide_connector_errors_total{kind=\"handshake_timeout\",side=\"client\"} 1"
    );
}

#[tokio::test]
async fn a_client_vanishing_mid_result_does_not_hurt_others() {
    let db = MariaDb::start().await;
    let c = CarbideConfig::new(&db).start().await;
    works(&c).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = c.fd_count();
    for _ in 0..5 {
        // a real client streaming a big result, killed after its first rows
        let mut child = tokio::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                "-uroot",
                "--quick",
                "--batch",
            ])
            .arg(format!("-P{}", c.cfg.rw))
            .args([
                "-e",
                "SELECT seq, REPEAT('x', 100) FROM mysql.seq_1_to_2000000",
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = out.read(&mut buf).await.unwrap();
        assert!(n > 0);
        child.kill().await.unwrap();
    }
    // others are served meanwhile and afterwards
    works(&c).await;
    settle_fds(&c, baseline).await;
    let n: Vec<u64> = db.query("SELECT COUNT(*) FROM information_schema.processlist WHERE command = 'Query' AND info LIKE 'SELECT seq%'").await;
    assert_eq!(n, vec![0], "abandoned queries still run on the server");
}

#[tokio::test]
async fn a_backend_that_is_down_or_dies_gives_clear_errors() {
    // nothing listens on the primary's port
    let dead = support::free_port();
    let c = CarbideConfig::with_primary_port(dead)
        .set("timeouts", "connect-ms = 1000")
        .start()
        .await;
    let baseline = c.fd_count();
    match Conn::new(c.rw_opts()).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 2003);
            assert!(
                e.message.starts_with(&format!(
                    "carbide: cannot connect to datasource db1 (127.0.0.1:{dead}):"
                )),
                "{}",
                e.message
            );
        }
        other => panic!("expected error 2003, got {other:?}"),
    }
    settle_fds(&c, baseline).await;
    drop(c);

    // the primary dies mid-query
    let mut db = MariaDb::start().await;
    let c = CarbideConfig::new(&db).start().await;
    let baseline = c.fd_count();
    let mut victim = Conn::new(c.rw_opts()).await.unwrap();
    let q = tokio::spawn(async move { victim.query_drop("SELECT SLEEP(20)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.kill9().await;
    let r = tokio::time::timeout(Duration::from_secs(5), q)
        .await
        .expect("client hangs after the backend died")
        .unwrap();
    match r {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 2013);
            assert!(
                e.message.contains("lost connection to datasource db1"),
                "{}",
                e.message
            );
        }
        Err(e) => panic!("expected carbide's error 2013, got {e:?}"),
        Ok(()) => panic!("query succeeded on a killed server"),
    }
    settle_fds(&c, baseline).await;
    // when it comes back, carbide serves again
    db.restart().await;
    let c2 = CarbideConfig::new(&db).start().await;
    works(&c2).await;
    assert!(c.log_text().contains("datasource closed the connection"));
}
