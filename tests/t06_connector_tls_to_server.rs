//! TLS from carbide to the datasource (`[tls] to-server = true`): the
//! server sees an encrypted session whether or not the client used TLS, the
//! server's certificate is verified against `tls.ca`, and a server without
//! TLS gets the client a clear error instead of a plain-text session; the
//! read-only port's session is made read-only over the TLS leg.
#![allow(clippy::unwrap_used)]

mod support;

use mysql_async::prelude::*;
use mysql_async::Conn;
use std::path::Path;
use std::process::Command;
use support::carbide::{tls_certs, CarbideConfig};
use support::MariaDb;

fn tls_config(db: &MariaDb, certs: &Path) -> CarbideConfig {
    let path = |f: &str| certs.join(f).display().to_string();
    CarbideConfig::new(db)
        .set("tls", &format!("cert = \"{}\"", path("server.pem")))
        .set("tls", &format!("key = \"{}\"", path("server.key")))
        .set("tls", &format!("ca = \"{}\"", path("ca.pem")))
        .set("tls", "to-server = true")
}

async fn server_cipher(conn: &mut Conn) -> String {
    conn.query_first::<String, _>(
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME = 'Ssl_cipher'",
    )
    .await
    .unwrap()
    .unwrap_or_default()
}

#[tokio::test]
async fn sessions_to_the_server_are_encrypted_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    tls_certs(&dir);
    let db = MariaDb::builder()
        .arg(format!("--ssl-cert={}", dir.join("server.pem").display()))
        .arg(format!("--ssl-key={}", dir.join("server.key").display()))
        .arg(format!("--ssl-ca={}", dir.join("ca.pem").display()))
        .start()
        .await;
    // the server itself has TLS, and a direct plain session has none
    let mut direct = Conn::new(db.opts()).await.unwrap();
    assert_eq!(server_cipher(&mut direct).await, "");
    direct.disconnect().await.unwrap();

    let c = tls_config(&db, &dir).start().await;
    // a plain client: carbide encrypts the leg to the server
    let mut conn = Conn::new(c.rw_opts()).await.unwrap();
    let cipher = server_cipher(&mut conn).await;
    assert!(!cipher.is_empty(), "the server saw a plain-text session");
    let n: i64 = conn.query_first("SELECT 40 + 2").await.unwrap().unwrap();
    assert_eq!(n, 42);
    // a big result and a big statement cross the TLS leg intact
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    conn.query_drop("CREATE DATABASE app").await.unwrap();
    conn.query_drop("CREATE TABLE app.b (id INT PRIMARY KEY, data LONGBLOB)")
        .await
        .unwrap();
    conn.exec_drop(
        "INSERT INTO app.b VALUES (1, ?)",
        (mysql_async::Value::Bytes(blob.clone()),),
    )
    .await
    .unwrap();
    let back: Vec<u8> = conn
        .query_first("SELECT data FROM app.b WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, blob);
    conn.disconnect().await.unwrap();

    // a TLS client: both legs encrypted
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uroot", "--batch", "--skip-column-names"])
        .arg(format!("-P{}", c.cfg.rw))
        .arg("--ssl")
        .arg(format!("--ssl-ca={}", dir.join("ca.pem").display()))
        .arg("--ssl-verify-server-cert")
        .args([
            "-e",
            "SELECT VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    // the read-only port (no replica: the primary) makes its session
    // read-only over the TLS leg too, for root's GRANT ALL as well
    let mut ro = Conn::new(c.ro_opts()).await.unwrap();
    assert!(!server_cipher(&mut ro).await.is_empty());
    match ro.query_drop("INSERT INTO app.b VALUES (2, 'x')").await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1792, "{}", e.message),
        other => panic!("a write through the read-only port: {other:?}"),
    }
    let n: i64 = ro
        .query_first("SELECT COUNT(*) FROM app.b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_server_without_tls_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    tls_certs(&dir);
    let db = MariaDb::start().await; // no certificate: offers no TLS
    let c = tls_config(&db, &dir).start().await;
    let err = Conn::new(c.rw_opts()).await.unwrap_err().to_string();
    assert!(
        err.contains("does not offer TLS, but tls.to-server is on"),
        "{err}"
    );
    // carbide keeps serving: the error is per session
    let err = Conn::new(c.rw_opts()).await.unwrap_err().to_string();
    assert!(err.contains("does not offer TLS"), "{err}");
}
