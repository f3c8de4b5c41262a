//! Clients that ask for the compressed protocol (zlib). The read-write
//! port offers it when the server does and relays it: the `mariadb` CLI
//! with `--compress` and mysql-connector-python 9.1 with `compress=True`
//! (pure Python and C extension) run queries, big results and transactions
//! compressed (the server's `Compression` status says ON). The read-only
//! port does not offer it: the CLI talks uncompressed there, and a client
//! that asks all the same (pure mysql-connector-python switches to
//! compressed framing after authentication whatever the greeting offered;
//! it used to stall) gets error 1043 at once, before authentication. The
//! Python part runs when `python3 -c "import mysql.connector"` works (`pip
//! install mysql-connector-python==9.1.0`) and says so on stderr when not.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::carbide::CarbideConfig;

const PROTOCOL_41: u32 = 0x200;
const COMPRESS: u32 = 0x20;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 0x8_0000;

fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).unwrap();
    (h[3], p)
}

/// Capability flags of a protocol-10 greeting.
fn greeting_caps(g: &[u8]) -> u32 {
    let ver_end = g[1..].iter().position(|&b| b == 0).unwrap() + 1;
    let at = ver_end + 1 + 4 + 8 + 1;
    let low = u16::from_le_bytes([g[at], g[at + 1]]) as u32;
    let high = u16::from_le_bytes([g[at + 5], g[at + 6]]) as u32;
    low | (high << 16)
}

#[test]
fn a_raw_client_asking_for_compression_on_the_read_only_port_gets_1043() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(support::MariaDb::start());
    let carbide = rt.block_on(CarbideConfig::new(&db).start());
    let mut rw = TcpStream::connect(("127.0.0.1", carbide.cfg.rw)).unwrap();
    let (_, g) = read_packet(&mut rw);
    assert_ne!(
        greeting_caps(&g) & COMPRESS,
        0,
        "offered on the read-write port"
    );
    let mut s = TcpStream::connect(("127.0.0.1", carbide.cfg.ro)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (seq, g) = read_packet(&mut s);
    assert_eq!((seq, g[0]), (0, 10));
    assert_eq!(
        greeting_caps(&g) & COMPRESS,
        0,
        "compression is not offered"
    );

    let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | COMPRESS;
    let mut p = Vec::new();
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0u8; 23]);
    p.extend_from_slice(b"root\0");
    p.push(0); // empty auth response
    p.extend_from_slice(b"mysql_native_password\0");
    let mut out = (p.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(1);
    out.extend_from_slice(&p);
    s.write_all(&out).unwrap();

    let (seq, err) = read_packet(&mut s);
    assert_eq!(seq, 2);
    assert_eq!(err[0], 0xff, "{err:?}");
    assert_eq!(u16::from_le_bytes([err[1], err[2]]), 1043);
    let msg = String::from_utf8_lossy(&err[3..]).to_string();
    assert_eq!(
        msg,
        "#08S01carbide's read-only port does not support the compressed protocol; connect without compression"
    );
    // and carbide closes the connection
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn the_mariadb_cli_compresses_on_the_read_write_port_only() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(support::MariaDb::start());
    let carbide = rt.block_on(CarbideConfig::new(&db).start());
    let cli = |port: u16| {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--compress",
                "-h127.0.0.1",
                "-uroot",
                "-N",
                "-B",
            ])
            .arg(format!("-P{port}"))
            .args([
                "-e",
                "SELECT @@port; SHOW SESSION STATUS LIKE 'Compression'; \
                 SELECT LENGTH(REPEAT('ab', 300000)) AS n, MD5(REPEAT('ab', 300000)) = MD5(x) \
                 FROM (SELECT REPEAT('ab', 300000) AS x) t; BEGIN; SELECT 1; COMMIT",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let p = db.port;
    assert_eq!(
        cli(carbide.cfg.rw),
        format!("{p}\nCompression\tON\n600000\t1\n1\n")
    );
    assert_eq!(
        cli(carbide.cfg.ro),
        format!("{p}\nCompression\tOFF\n600000\t1\n1\n")
    );
}

/// Connects with mysql-connector-python (compress=True; pure Python when
/// the second argument is `pure`, else its C extension), runs a query, a
/// big result and a transaction, and prints `OK <port> <Compression>
/// <length>` or `ERR <errno> <msg>`.
const PYTHON: &str = r#"
import sys, mysql.connector
try:
    c = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root",
                                password="", use_pure=sys.argv[2] == "pure", compress=True,
                                connection_timeout=30)
    cur = c.cursor()
    cur.execute("SELECT @@port")
    port = cur.fetchall()[0][0]
    cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
    comp = cur.fetchall()[0][1]
    cur.execute("SELECT REPEAT('ab', 300000)")
    n = len(cur.fetchall()[0][0])
    c.start_transaction()
    cur.execute("SELECT 1")
    cur.fetchall()
    c.commit()
    print("OK", port, comp, n)
except mysql.connector.Error as e:
    print("ERR", e.errno, e.msg)
"#;

/// Runs the script against `port`; its output and how long it took. Fails
/// the test if it has not finished within 20 s (the old hang).
fn python(port: u16, pure: bool) -> (String, Duration) {
    let started = Instant::now();
    let mut child = Command::new("python3")
        .args(["-c", PYTHON])
        .arg(port.to_string())
        .arg(if pure { "pure" } else { "cext" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!text.is_empty(), "python printed nothing: {err}");
            return (text, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mysql-connector-python with compress=True hung on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mysql_connector_python_with_compress() {
    let have = Command::new("python3")
        .args(["-c", "import mysql.connector"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!(
            "SKIPPED: python3 has no mysql.connector (pip install mysql-connector-python==9.1.0)"
        );
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(support::MariaDb::start());
    let carbide = rt.block_on(CarbideConfig::new(&db).start());
    let p = db.port;
    let compressed = format!("OK {p} ON 600000");
    for pure in [true, false] {
        // directly, and through the read-write port: compressed
        assert_eq!(python(p, pure).0, compressed, "direct, pure={pure}");
        let (through, took) = python(carbide.cfg.rw, pure);
        eprintln!("read-write port, pure={pure}, {took:?}: {through}");
        assert_eq!(through, compressed, "pure={pure}");
    }
    // the read-only port: the C extension follows the greeting (uncompressed)
    let (cext, _) = python(carbide.cfg.ro, false);
    assert_eq!(cext, format!("OK {p} OFF 600000"));
    // pure Python asks all the same: an error at once instead of a stall
    let (through, took) = python(carbide.cfg.ro, true);
    eprintln!("read-only port, pure, {took:?}: {through}");
    assert_eq!(
        through,
        "ERR 1043 carbide's read-only port does not support the compressed protocol; connect without compression"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(carbide
        .log_text()
        .contains("the client asked for the compressed protocol"));
}

#[tokio::test]
async fn a_compressed_session_learns_that_its_datasource_died() {
    use mysql_async::prelude::*;
    let mut db = support::MariaDb::start().await;
    let carbide = CarbideConfig::new(&db).start().await;
    let opts = mysql_async::OptsBuilder::from_opts(carbide.rw_opts())
        .compression(mysql_async::Compression::fast());
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let status: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Compression'")
        .await
        .unwrap();
    assert_eq!(status.unwrap().1, "ON");
    let sleeping = tokio::spawn(async move { conn.query_drop("SELECT SLEEP(30)").await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    db.kill9().await;
    // carbide's own ERR, in a compressed packet the client reads
    match sleeping.await.unwrap() {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 2013);
            assert!(
                e.message
                    .contains("carbide: lost connection to datasource db1"),
                "{}",
                e.message
            );
        }
        other => panic!("expected carbide's error 2013, got {other:?}"),
    }
}
