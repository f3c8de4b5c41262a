//! Real clients through the connector: the `mariadb` CLI, mysql_async and
//! sysbench, with every protocol feature applications use.
#![allow(clippy::unwrap_used)]

mod support;

use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::carbide::{tls_certs, CarbideConfig};
use support::MariaDb;

fn cli(port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uroot", "--batch"])
        .arg(format!("-P{port}"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn mariadb_cli_queries_multi_statements_infile_compress_and_tls() {
    let db = MariaDb::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    tls_certs(&certs);
    let c = CarbideConfig::new(&db)
        .set(
            "tls",
            &format!("cert = \"{}\"", certs.join("server.pem").display()),
        )
        .set(
            "tls",
            &format!("key = \"{}\"", certs.join("server.key").display()),
        )
        .start()
        .await;
    let rw = c.cfg.rw;

    let (ok, out, err) = cli(rw, &["-e", "SELECT @@port AS p; SELECT 1+1 AS two; CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("p\n{}\ntwo\n2\n", db.port));

    // LOAD DATA LOCAL INFILE
    let csv = tmp.path().join("rows.csv");
    let rows: String = (1..=1000).map(|i| format!("{i},v{i}\n")).collect();
    std::fs::write(&csv, rows).unwrap();
    let load = format!("LOAD DATA LOCAL INFILE '{}' INTO TABLE app.t FIELDS TERMINATED BY ','; SELECT COUNT(*), MAX(v) FROM app.t", csv.display());
    let (ok, out, err) = cli(rw, &["--local-infile=1", "-e", &load]);
    assert!(ok, "{err}");
    assert_eq!(out, "COUNT(*)\tMAX(v)\n1000\tv999\n");

    // compressed protocol, relayed on the read-write port (LOCAL INFILE too)
    let q = format!("{load}; SHOW SESSION STATUS LIKE 'Compression'");
    let (ok, out, err) = cli(rw, &["--compress", "--local-infile=1", "-e", &q]);
    assert!(ok, "{err}");
    assert!(out.ends_with("Compression\tON\n"), "{out}");

    // TLS from the client, terminated by carbide and verified against its CA
    let ca = format!("--ssl-ca={}", certs.join("ca.pem").display());
    // (several times: clients send their ClientHello right behind the
    // SSLRequest, sometimes in the same segment)
    for _ in 0..5 {
        let (ok, out, err) = cli(rw, &["--ssl", &ca, "--ssl-verify-server-cert", "-e", "\\s"]);
        assert!(ok, "{err}");
        let ssl = out
            .lines()
            .find(|l| l.starts_with("SSL:"))
            .unwrap_or_default();
        assert!(ssl.contains("Cipher in use is"), "{out}");
    }
    // TLS (to carbide) and compression together
    let q = "SHOW SESSION STATUS LIKE 'Compression'; \\s";
    let (ok, out, err) = cli(rw, &["--ssl", &ca, "--compress", "-N", "-e", q]);
    assert!(ok, "{err}");
    assert!(out.starts_with("Compression\tON\n"), "{out}");
    let tls = |l: &str| l.starts_with("SSL:") && l.contains("Cipher in use");
    assert!(out.lines().any(tls), "{out}");
    // and without TLS, the same listener still works
    let (ok, out, _) = cli(rw, &["--skip-ssl", "-e", "\\s"]);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("SSL:") && l.contains("Not in use")),
        "{out}"
    );

    // wrong password: the server's own error comes through
    let (ok, _, err) = cli(rw, &["-pwrong", "-e", "SELECT 1"]);
    assert!(!ok);
    assert!(err.contains("Access denied for user 'root'"), "{err}");
}

#[tokio::test]
async fn mysql_async_prepared_long_data_multi_results_big_rows_change_user_reset() {
    let db = MariaDb::start().await;
    db.sql(
        "CREATE DATABASE app; CREATE TABLE app.b (id INT PRIMARY KEY, data LONGBLOB); \
         CREATE USER 'other'@'127.0.0.1' IDENTIFIED BY 'pw'; GRANT SELECT ON *.* TO 'other'@'127.0.0.1'; \
         CREATE PROCEDURE app.two() BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END",
    )
    .await;
    let c = CarbideConfig::new(&db).start().await;
    let mut conn = Conn::new(c.rw_opts()).await.unwrap();

    // prepared statements; Bytes params go as COM_STMT_SEND_LONG_DATA
    let stmt = conn.prep("INSERT INTO app.b VALUES (?, ?)").await.unwrap();
    conn.exec_drop(&stmt, (1, Value::Bytes(b"small".to_vec())))
        .await
        .unwrap();
    // a 20 MiB row: split packets both ways
    let big: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    conn.exec_drop(&stmt, (2, Value::Bytes(big.clone())))
        .await
        .unwrap();
    let back: Option<Vec<u8>> = conn
        .exec_first("SELECT data FROM app.b WHERE id = ?", (2,))
        .await
        .unwrap();
    assert!(back.as_ref() == Some(&big), "20 MiB row differs");
    let back: Option<Vec<u8>> = conn
        .query_first("SELECT data FROM app.b WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(back.map(|b| b.len()), Some(big.len()));
    let n: Vec<(i32, u64)> = conn
        .exec(
            "SELECT id, LENGTH(data) FROM app.b WHERE id > ? ORDER BY id",
            (0,),
        )
        .await
        .unwrap();
    assert_eq!(n, vec![(1, 5), (2, big.len() as u64)]);

    // multi-result sets: a procedure and a multi-statement query
    let mut r = conn.query_iter("CALL app.two()").await.unwrap();
    let first: Vec<i64> = r.collect().await.unwrap();
    let second: Vec<(i64, i64)> = r.collect().await.unwrap();
    drop(r);
    assert_eq!((first, second), (vec![1], vec![(2, 3)]));
    let mut r = conn
        .query_iter("SELECT 10; DO 1; SELECT 20, 30")
        .await
        .unwrap();
    let a: Vec<i64> = r.collect().await.unwrap();
    let b: Vec<i64> = r.collect().await.unwrap();
    let cc: Vec<(i64, i64)> = r.collect().await.unwrap();
    drop(r);
    assert_eq!((a, b, cc), (vec![10], vec![], vec![(20, 30)]));

    // COM_RESET_CONNECTION clears session state
    conn.query_drop("SET @x = 5").await.unwrap();
    conn.reset().await.unwrap();
    let x: Option<Option<i64>> = conn.query_first("SELECT @x").await.unwrap();
    assert_eq!(x, Some(None));

    // COM_CHANGE_USER to another account and back
    conn.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("pw".into())),
    )
    .await
    .unwrap();
    let who: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("other@127.0.0.1"));
    assert!(
        conn.query_drop("INSERT INTO app.b VALUES (9, 'x')")
            .await
            .is_err(),
        "other may only SELECT"
    );
    conn.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("root".into()))
            .with_pass(Some(String::new())),
    )
    .await
    .unwrap();
    let who: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("root@127.0.0.1"));
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn kill_query_from_a_second_session() {
    let db = MariaDb::start().await;
    let c = CarbideConfig::new(&db).start().await;
    let mut a = Conn::new(c.rw_opts()).await.unwrap();
    let id: u64 = a
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        id,
        u64::from(a.id()),
        "the greeting's connection id is the server's"
    );
    let opts = c.rw_opts();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut b = Conn::new(opts).await.unwrap();
        b.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    });
    let t = Instant::now();
    match a.query_first::<i64, _>("SELECT SLEEP(30)").await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1317, "{e:?}"),
        other => panic!("expected 'Query execution was interrupted', got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    killer.await.unwrap();
    // the session is still usable
    let one: Option<i64> = a.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test]
async fn sysbench_runs_through_the_connector() {
    let db = MariaDb::start().await;
    db.sql("CREATE DATABASE sbtest").await;
    let c = CarbideConfig::new(&db).start().await;
    let common = [
        "--db-driver=mysql".to_string(),
        "--mysql-host=127.0.0.1".to_string(),
        format!("--mysql-port={}", c.cfg.rw),
        "--mysql-user=root".to_string(),
        "--mysql-password=".to_string(),
        "--tables=2".to_string(),
        "--table-size=1000".to_string(),
    ];
    let run = |args: &[&str]| {
        let out = Command::new("sysbench")
            .arg("oltp_read_write")
            .args(&common)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["prepare"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["--threads=4", "--time=3", "--report-interval=0", "run"]);
    assert!(ok, "{out}");
    // deadlocks are "ignored errors" and happen directly too; lost sessions would not be
    assert!(
        out.contains("reconnects:                          0 "),
        "{out}"
    );
    assert!(!out.contains("FATAL"), "{out}");
    let tx: f64 = out
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(tx > 10.0, "{out}");
    let m = c.metrics();
    assert!(
        m.contains("carbide_connector_commands_total{command=\"stmt_execute\",listener=\"rw\"}"),
        "{m}"
    );
}
