//! Clients that ask for the compressed protocol. carbide does not offer it
//! in the greeting. A client that follows the greeting (the `mariadb` CLI
//! with `--compress`) talks uncompressed and works. A client that asks for
//! compression all the same (mysql-connector-python 9.1 with `use_pure=True,
//! compress=True`, which then switches to compressed framing after
//! authentication) used to stall; now it gets error 1043 at once, before
//! authentication. The Python part runs when `python3 -c "import
//! mysql.connector"` works (`pip install mysql-connector-python==9.1.0`) and
//! says so on stderr when it does not.
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
fn a_raw_client_asking_for_compression_gets_1043() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(support::MariaDb::start());
    let carbide = rt.block_on(CarbideConfig::new(&db).start());
    let mut s = TcpStream::connect(("127.0.0.1", carbide.cfg.rw)).unwrap();
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
        "#08S01carbide does not support the compressed protocol; connect without compression"
    );
    // and carbide closes the connection
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn the_mariadb_cli_with_compress_talks_uncompressed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(support::MariaDb::start());
    let carbide = rt.block_on(CarbideConfig::new(&db).start());
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "--compress",
            "-h127.0.0.1",
            "-uroot",
            "-N",
            "-B",
        ])
        .arg(format!("-P{}", carbide.cfg.rw))
        .args(["-e", "SELECT @@port"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        db.port.to_string()
    );
}

/// Connects with mysql-connector-python (compress=True; pure Python when
/// the second argument is `pure`, else its C extension) and prints
/// `OK <port>` or `ERR <errno> <msg>`.
const PYTHON: &str = r#"
import sys, mysql.connector
try:
    c = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root",
                                password="", use_pure=sys.argv[2] == "pure", compress=True,
                                connection_timeout=30)
    cur = c.cursor()
    cur.execute("SELECT @@port")
    print("OK", cur.fetchall()[0][0])
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
fn mysql_connector_python_with_compress_gets_a_clear_error() {
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
    // directly, the client and server agree on compression
    let (direct, _) = python(db.port, true);
    assert_eq!(direct, format!("OK {}", db.port));
    // through carbide: an error at once instead of a stall
    let (through, took) = python(carbide.cfg.rw, true);
    eprintln!("through carbide in {took:?}: {through}");
    assert_eq!(
        through,
        "ERR 1043 carbide does not support the compressed protocol; connect without compression"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(carbide
        .log_text()
        .contains("the client asked for the compressed protocol"));
    // its C extension (libmysqlclient) follows the greeting: uncompressed, and it works
    let (cext, _) = python(carbide.cfg.rw, false);
    eprintln!("C extension through carbide: {cext}");
    assert_eq!(cext, format!("OK {}", db.port));
}
