//! The extractor against real MariaDB: every column type round-trips into
//! the THL, transactions keep their boundaries and shards, compressed
//! binlogs and servers without full row metadata work, restarts resume
//! exactly, and a purged binlog is a clear error.
#![allow(clippy::unwrap_used)]

mod support;

use carbide_replicator::extract::source::{self, Stopped};
use carbide_replicator::extract::{
    BinlogPos, ExtractError, ExtractorConfig, Progress, SourceOpts, StartPosition, StopRequest,
};
use carbide_replicator::thl::{Change, RowsChange, ThlEvent, ThlReader, Value, WriterConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::MariaDb;
use tokio::sync::watch;

struct Running {
    stop: watch::Sender<StopRequest>,
    progress: watch::Receiver<Progress>,
    task: tokio::task::JoinHandle<Result<Stopped, ExtractError>>,
}

fn config(db: &MariaDb, thl: &Path, start: StartPosition) -> ExtractorConfig {
    ExtractorConfig {
        source: SourceOpts {
            host: "127.0.0.1".into(),
            port: db.port,
            user: "root".into(),
            password: String::new(),
            connect_timeout: Duration::from_secs(5),
        },
        replica_server_id: 4_000_000 + db.server_id,
        service: "alpha".into(),
        source_id: "db1".into(),
        thl_dir: thl.to_path_buf(),
        writer: WriterConfig::default(),
        start,
        heartbeat_period: Duration::from_secs(1),
        max_batch: 1000,
        max_batch_delay: Duration::from_millis(50),
        leave_out: Vec::new(),
    }
}

fn start(cfg: ExtractorConfig) -> Running {
    let (stop, stop_rx) = watch::channel(StopRequest::Run);
    let (ptx, progress) = watch::channel(Progress::default());
    let task = tokio::spawn(source::run(cfg, stop_rx, ptx));
    Running {
        stop,
        progress,
        task,
    }
}

async fn master_pos(db: &MariaDb) -> BinlogPos {
    let rows: Vec<(String, u64, String, String)> = db.query("SHOW MASTER STATUS").await;
    BinlogPos::new(rows[0].0.clone(), rows[0].1)
}

/// Waits until the extractor has stored everything up to the server's
/// current binlog end.
async fn caught_up(db: &MariaDb, r: &mut Running) {
    let want = master_pos(db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = r.progress.borrow().clone();
        if let Some(id) = &p.last_eventid {
            if BinlogPos::parse_eventid(id).is_some_and(|at| at >= want) {
                return;
            }
        }
        assert!(
            !r.task.is_finished(),
            "extractor ended early: {:?}",
            p.last_error
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "extractor did not reach {want}: {p:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), r.progress.changed()).await;
    }
}

async fn stop(r: Running) -> Stopped {
    r.stop.send(StopRequest::Now).unwrap();
    r.task.await.unwrap().unwrap()
}

fn thl(dir: &Path) -> Vec<ThlEvent> {
    let rd = ThlReader::open(dir).unwrap();
    let Some(first) = rd.first_seqno() else {
        return Vec::new();
    };
    rd.transactions(first)
        .unwrap()
        .map(|t| t.unwrap())
        .collect()
}

fn rows_of<'a>(tx: &'a ThlEvent, table: &str) -> Vec<&'a RowsChange> {
    tx.changes
        .iter()
        .filter_map(|c| match c {
            Change::Rows(r) if r.table == table => Some(r),
            _ => None,
        })
        .collect()
}

fn thl_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("thl");
    (d, p)
}

/// MySQL's text rendering of a THL value (session time zone UTC).
fn render(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Decimal(s) => s.clone(),
        Value::Bytes { data, .. } => String::from_utf8_lossy(data).into_owned(),
        Value::Date(d) => format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
        Value::Time(t) => format!(
            "{}{:02}:{:02}:{:02}.{:06}",
            if t.negative { "-" } else { "" },
            t.hours,
            t.minutes,
            t.seconds,
            t.micros
        ),
        Value::DateTime(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            d.date.year, d.date.month, d.date.day, d.hour, d.minute, d.second, d.micros
        ),
        Value::Timestamp(t) => format!("{}.{:06}", t.seconds, t.micros),
        Value::Bit { data, .. } => data.iter().map(|b| format!("{b:02X}")).collect(),
        Value::Enum(i) => i.to_string(),
        Value::Set(s) => s.to_string(),
        Value::Json(j) => j.clone(),
    })
}

const TYPES_DDL: &str = "CREATE TABLE types.t (
    id INT PRIMARY KEY,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
    mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
    f FLOAT, d DOUBLE, dec1 DECIMAL(10,4), dec2 DECIMAL(30,10) UNSIGNED,
    dt DATE, tm TIME, tm6 TIME(6), dtm DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6),
    ts TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL, yr YEAR,
    e ENUM('a','b','c'), st SET('x','y','z'), b1 BIT(1), b13 BIT(13), b64 BIT(64),
    c CHAR(10), vc VARCHAR(300), vb VARBINARY(20), bn BINARY(4),
    tt TINYTEXT, tx TEXT CHARACTER SET latin1, mt MEDIUMTEXT, lt LONGTEXT,
    tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB, js JSON,
    u8 VARCHAR(20) CHARACTER SET utf8mb4
)";

/// Column expressions whose MySQL text equals `render` of the THL value.
fn select_exprs() -> Vec<String> {
    let cols = [
        "id", "ti", "tu", "si", "su", "mi", "mu", "i", "iu", "bi", "bu", "f", "d", "dec1", "dec2",
        "dt", "tm", "tm6", "dtm", "dtm3", "dtm6", "ts", "ts6", "yr", "e", "st", "b1", "b13", "b64",
        "c", "vc", "vb", "bn", "tt", "tx", "mt", "lt", "tb", "bl", "mb", "lb", "js", "u8",
    ];
    cols.iter()
        .map(|c| match *c {
            "tm" | "tm6" => format!("DATE_FORMAT(CAST({c} AS TIME(6)), '%H:%i:%s.%f') "),
            "dtm" | "dtm3" | "dtm6" => format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')"),
            "ts" | "ts6" => {
                format!("CONCAT(FLOOR(UNIX_TIMESTAMP({c})), '.', LPAD(MICROSECOND({c}), 6, '0'))")
            }
            "yr" => format!("{c}+0"),
            "e" | "st" => format!("{c}+0"),
            "b1" | "b13" | "b64" | "tx" => format!("HEX(BINARY({c}))"),
            _ => c.to_string(),
        })
        .collect()
}

const TYPE_ROWS: &str = "INSERT INTO types.t VALUES
 (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615, 1.5, -2.25, -12.3400, 12345678901234567890.0123456789,
  '2024-02-29', '-838:59:59', '12:34:56.789012', '2024-01-31 23:59:59', '2024-01-31 23:59:59.123',
  '1000-01-01 00:00:00.000001', '2038-01-19 03:14:07', '2001-02-03 04:05:06.654321', 2155,
  'c', 'x,z', b'1', b'1010101010101', b'1111111111111111111111111111111111111111111111111111111111111111',
  'abc', REPEAT('v', 300), X'00FF10', X'61626364',
  'tiny', _latin1 X'E9E8', REPEAT('m', 70000), REPEAT('L', 100), X'01', X'0203', X'04', X'05',
  '{\"k\": [1, 2.5, \"s\", null, true]}', 'ü€😀'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '0000-00-00', '00:00:00', '838:59:59.999999',
  '0000-00-00 00:00:00', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999',
  '1970-01-01 00:00:01', '1970-01-01 00:00:01.000001', 0, '', '', b'0', b'0', b'0',
  '', '', '', X'00000000', '', '', '', '', '', '', '', '', '[]', '')";

async fn server_rows(db: &MariaDb) -> Vec<Vec<Option<String>>> {
    use mysql_async::prelude::Queryable;
    let mut c = db.conn().await;
    c.query_drop("SET time_zone = '+00:00', sql_mode = ''")
        .await
        .unwrap();
    let q = format!(
        "SELECT {} FROM types.t ORDER BY id",
        select_exprs().join(", ")
    );
    let rows: Vec<mysql_async::Row> = c.query(q).await.unwrap();
    rows.into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(format!("{other:?}")),
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips() {
    for (label, args) in [
        ("full metadata", vec![]),
        (
            "minimal metadata (information_schema)",
            vec!["--binlog-row-metadata=MINIMAL"],
        ),
        (
            "compressed binlog",
            vec!["--log-bin-compress=ON", "--log-bin-compress-min-len=10"],
        ),
    ] {
        let mut b = MariaDb::builder();
        for a in &args {
            b = b.arg(*a);
        }
        let db = b.start().await;
        let (_d, dir) = thl_dir();
        let mut r = start(config(&db, &dir, StartPosition::Earliest));
        db.sql("SET sql_mode = ''; CREATE DATABASE types").await;
        db.sql(TYPES_DDL).await;
        db.sql(&format!("SET sql_mode = ''; {TYPE_ROWS}")).await;
        caught_up(&db, &mut r).await;
        stop(r).await;
        let txs = thl(&dir);
        let ins = txs
            .iter()
            .find(|t| !rows_of(t, "t").is_empty())
            .unwrap_or_else(|| panic!("{label}: no rows extracted: {txs:?}"));
        assert_eq!(ins.shard, "types", "{label}");
        let rc = rows_of(ins, "t")[0];
        let names: Vec<&str> = rc.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), 43, "{label}");
        assert_eq!(names[2], "tu", "{label}: names");
        assert!(
            rc.columns[2].unsigned && !rc.columns[1].unsigned,
            "{label}: signedness"
        );
        assert!(rc.columns[0].primary_key, "{label}: key");
        let server = server_rows(&db).await;
        assert_eq!(rc.rows.len(), server.len(), "{label}");
        for (row, srow) in rc.rows.iter().zip(&server) {
            let after = row.after.as_ref().unwrap();
            for ((v, s), col) in after.iter().zip(srow).zip(&rc.columns) {
                let mine = render(v);
                let theirs = match (col.name.as_str(), s) {
                    // MariaDB prints JSON as stored; compare parsed documents
                    ("js", Some(t)) => Some(
                        serde_json::from_str::<serde_json::Value>(t)
                            .unwrap()
                            .to_string(),
                    ),
                    _ => s.clone(),
                };
                let mine = match (col.name.as_str(), mine) {
                    ("tx", Some(_)) => match v {
                        Value::Bytes { data, .. } => {
                            Some(data.iter().map(|b| format!("{b:02X}")).collect())
                        }
                        _ => None,
                    },
                    ("js", Some(t)) => Some(
                        serde_json::from_str::<serde_json::Value>(&t)
                            .unwrap()
                            .to_string(),
                    ),
                    (_, m) => m,
                };
                assert_eq!(
                    mine, theirs,
                    "{label}: column {} ({}) value {v:?}",
                    col.name, col.type_name
                );
            }
        }
        let tx_col = rc.columns.iter().find(|c| c.name == "tx").unwrap();
        assert_eq!(tx_col.charset, Some(8), "{label}: latin1_swedish_ci");
        let vb = rc.columns.iter().find(|c| c.name == "vb").unwrap();
        assert_eq!(vb.charset, None, "{label}: binary has no charset");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_keep_boundaries_and_shards() {
    let db = MariaDb::start().await;
    let (_d, dir) = thl_dir();
    let mut r = start(config(&db, &dir, StartPosition::Earliest));
    db.sql("CREATE DATABASE a; CREATE DATABASE b").await;
    db.sql("CREATE TABLE a.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(200))")
        .await;
    db.sql("CREATE TABLE b.log (id INT PRIMARY KEY AUTO_INCREMENT, msg VARCHAR(50))")
        .await;
    db.sql("CREATE TABLE a.audit (id INT PRIMARY KEY AUTO_INCREMENT, n INT)")
        .await;
    db.sql("CREATE TRIGGER a.trg AFTER INSERT ON a.t FOR EACH ROW INSERT INTO a.audit (n) VALUES (NEW.id)").await;
    let base = master_pos(&db).await;
    // multi-statement transaction in one schema (trigger writes to a.audit)
    db.sql("BEGIN; INSERT INTO a.t (v) VALUES ('x'); UPDATE a.t SET v = 'y'; DELETE FROM a.t WHERE v = 'nope'; INSERT INTO a.t (v) VALUES ('z'); COMMIT").await;
    // mixed schemas
    db.sql("BEGIN; INSERT INTO a.t (v) VALUES ('m'); INSERT INTO b.log (msg) VALUES ('m'); COMMIT")
        .await;
    // temporary table feeding a real one
    db.sql(
        "CREATE TEMPORARY TABLE a.tmp (v VARCHAR(10)); INSERT INTO a.tmp VALUES ('t1'), ('t2'); \
            BEGIN; INSERT INTO a.t (v) SELECT v FROM a.tmp; COMMIT; DROP TEMPORARY TABLE a.tmp",
    )
    .await;
    // large transaction: ~5 MB, fragmented in the THL
    db.sql("BEGIN; INSERT INTO b.log (msg) SELECT REPEAT('L', 50) FROM b.seq_1_to_100000; COMMIT")
        .await;
    // DDL
    db.sql("ALTER TABLE b.log ADD COLUMN extra INT").await;
    db.sql("INSERT INTO b.log (msg, extra) VALUES ('after ddl', 7)")
        .await;
    caught_up(&db, &mut r).await;
    stop(r).await;
    let txs: Vec<ThlEvent> = thl(&dir)
        .into_iter()
        .filter(|t| BinlogPos::parse_eventid(&t.eventid).unwrap() > base)
        .collect();
    let summary: Vec<String> = txs
        .iter()
        .map(|t| {
            // consecutive changes to one table are summed (large ones are split)
            let mut parts: Vec<(String, usize)> = Vec::new();
            for c in &t.changes {
                let (k, n) = match c {
                    Change::Statement(s) => (
                        format!("SQL:{}", s.sql_text().chars().take(30).collect::<String>()),
                        0,
                    ),
                    Change::Rows(r) => (
                        format!("{}:{}.{}", r.action.as_str(), r.schema, r.table),
                        r.rows.len(),
                    ),
                };
                match parts.last_mut() {
                    Some((lk, ln)) if *lk == k && n > 0 => *ln += n,
                    _ => parts.push((k, n)),
                }
            }
            let parts: Vec<String> = parts
                .into_iter()
                .map(|(k, n)| if n > 0 { format!("{k}x{n}") } else { k })
                .collect();
            format!("{} [{}]", t.shard, parts.join(" "))
        })
        .collect();
    assert_eq!(
        summary,
        [
            "a [INSERT:a.tx1 INSERT:a.auditx1 UPDATE:a.tx1 INSERT:a.tx1 INSERT:a.auditx1]",
            "#UNKNOWN [INSERT:a.tx1 INSERT:a.auditx1 INSERT:b.logx1]",
            "a [INSERT:a.tx1 INSERT:a.auditx1 INSERT:a.tx1 INSERT:a.auditx1]",
            "b [INSERT:b.logx100000]",
            "b [SQL:ALTER TABLE b.log ADD COLUMN e]",
            "b [INSERT:b.logx1]",
        ],
        "{summary:#?}"
    );
    // each has a GTID, seqnos are consecutive, metadata is complete
    for w in txs.windows(2) {
        assert_eq!(w[1].seqno, w[0].seqno + 1);
    }
    for t in &txs {
        assert!(
            t.meta("gtid").is_some_and(|g| g.starts_with("0-")),
            "{:?}",
            t.metadata
        );
        assert_eq!(t.meta("service"), Some("alpha"));
        assert_eq!(t.meta("server_id"), Some(db.server_id.to_string().as_str()));
        assert_eq!(t.source_id, "db1");
        assert!(t.eventid.ends_with(";-1"));
    }
    // the large one is stored as several fragments
    let big = &txs[3];
    let rd = ThlReader::open(&dir).unwrap();
    let frags = rd
        .records(big.seqno)
        .unwrap()
        .map(|r| r.unwrap())
        .take_while(|r| r.seqno == big.seqno)
        .count();
    assert!(frags > 1, "large transaction in {frags} fragment(s)");
    // the column added by DDL is seen afterwards
    let after_ddl = rows_of(&txs[5], "log")[0];
    assert_eq!(after_ddl.columns.last().unwrap().name, "extra");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_after_stop_server_restart_and_rotation() {
    let mut db = MariaDb::start().await;
    let (_d, dir) = thl_dir();
    db.sql("CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY)")
        .await;
    let mut r = start(config(&db, &dir, StartPosition::Earliest));
    for i in 0..50 {
        db.sql(&format!("INSERT INTO r.t VALUES ({i})")).await;
    }
    caught_up(&db, &mut r).await;
    stop(r).await;
    // written while the extractor is down, across a rotation
    for i in 50..80 {
        db.sql(&format!("INSERT INTO r.t VALUES ({i})")).await;
        if i == 60 {
            db.sql("FLUSH BINARY LOGS").await;
        }
    }
    let mut r = start(config(&db, &dir, StartPosition::Current));
    caught_up(&db, &mut r).await;
    // server restart while the extractor runs: it reconnects and goes on
    db.restart().await;
    for i in 80..100 {
        db.sql(&format!("INSERT INTO r.t VALUES ({i})")).await;
    }
    caught_up(&db, &mut r).await;
    stop(r).await;
    let ids: Vec<i64> = thl(&dir)
        .iter()
        .flat_map(|t| rows_of(t, "t").into_iter().cloned().collect::<Vec<_>>())
        .flat_map(|rc| rc.rows)
        .map(|row| match row.after.unwrap()[0] {
            Value::Int(i) => i,
            ref v => panic!("{v:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        (0..100).collect::<Vec<i64>>(),
        "no duplicate, no gap, in order"
    );
    let gtids: Vec<String> = thl(&dir)
        .iter()
        .filter_map(|t| t.meta("gtid").map(String::from))
        .collect();
    let server: Vec<(String,)> = db.query("SELECT @@gtid_binlog_pos").await;
    assert_eq!(gtids.last(), Some(&server[0].0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlog_is_a_clear_error() {
    let db = MariaDb::start().await;
    let (_d, dir) = thl_dir();
    db.sql("CREATE DATABASE p; CREATE TABLE p.t (id INT PRIMARY KEY)")
        .await;
    let mut r = start(config(&db, &dir, StartPosition::Earliest));
    db.sql("INSERT INTO p.t VALUES (1)").await;
    caught_up(&db, &mut r).await;
    stop(r).await;
    db.sql("INSERT INTO p.t VALUES (2)").await;
    db.sql("FLUSH BINARY LOGS").await;
    db.sql("FLUSH BINARY LOGS").await;
    let newest = master_pos(&db).await;
    assert_ne!(newest.file, "mariadb-bin.000001");
    // the old dump thread may hold the file for up to a heartbeat period
    let mut purged = false;
    for _ in 0..100 {
        db.sql(&format!("PURGE BINARY LOGS TO '{}'", newest.file))
            .await;
        let logs: Vec<(String, u64)> = db.query("SHOW BINARY LOGS").await;
        if logs[0].0 == newest.file {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        purged,
        "server kept its binlogs: {:?}",
        db.query::<(String, u64)>("SHOW BINARY LOGS").await
    );
    let r = start(config(&db, &dir, StartPosition::Earliest));
    let res = match tokio::time::timeout(Duration::from_secs(30), r.task).await {
        Ok(res) => res.unwrap(),
        Err(_) => panic!("extractor did not fail: {:?}", r.progress.borrow()),
    };
    let Err(err) = res else {
        panic!("must fail: the binlog is gone");
    };
    assert!(matches!(err, ExtractError::BinlogPurged { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no longer available") && msg.contains("mariadb-bin.000001"),
        "{msg}"
    );
}
