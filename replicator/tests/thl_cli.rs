//! The `thl` binary against a log with known events: full expected output
//! of list (default, -headers, -sql, -seqno, -event, -json), index, info,
//! purge -y, purge refusal under lock, and configuration errors.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use carbide_replicator::thl::{ThlWriter, WriterConfig};
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn thl(args: &[&str]) -> Output {
    thl_stdin(args, "")
}

fn thl_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_thl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Seqnos 1..=3: a statement, a row change, a statement; small segments so
/// later tests have several files.
fn small_log(dir: &Path) {
    let mut w = ThlWriter::open(dir, WriterConfig::default()).unwrap();
    w.append(&stmt_tx(1, 2)).unwrap();
    let mut rows = rows_tx(2, 1);
    rows.changes.truncate(1);
    w.append(&rows).unwrap();
    w.append(&stmt_tx(3, 0)).unwrap();
    w.commit().unwrap();
}

fn many_log(dir: &Path, n: u64) {
    let cfg = WriterConfig {
        segment_size: 2048,
        ..WriterConfig::default()
    };
    let mut w = ThlWriter::open(dir, cfg).unwrap();
    for s in 1..=n {
        w.append(&stmt_tx(s, 100)).unwrap();
    }
    w.commit().unwrap();
}

const LIST_ALL: &str = "\
SEQ# = 1 / FRAG# = 0 (last frag)
- TIME = 2023-11-14 22:13:20.001
- EPOCH# = 0
- EVENTID = mysql-bin.000001:0000000000000500;-1
- SOURCEID = db1
- METADATA = [server_id=1;service=alpha;shard=test]
- TYPE = STATEMENT
- OPTIONS = [timestamp = 1700000000, foreign_key_checks = 1]
- SCHEMA = test
- SQL(0) = INSERT INTO t VALUES (1, 'xx')
SEQ# = 2 / FRAG# = 0 (last frag)
- TIME = 2023-11-14 22:13:20.002
- EPOCH# = 0
- EVENTID = mysql-bin.000001:0000000000000600;-1
- SOURCEID = db1
- METADATA = [server_id=1;service=alpha;shard=test]
- TYPE = ROW
- SQL(0) =
 - ACTION = UPDATE
 - SCHEMA = test
 - TABLE = t1
 - ROW# = 0
  - COL(1: id) = 0
  - COL(2: name) = new-0
  - COL(3: d) = 2024-01-02 03:04:05.000006
  - KEY(1: id) = 0
  - KEY(2: name) = old
  - KEY(3: d) = 2024-01-02
SEQ# = 3 / FRAG# = 0 (last frag)
- TIME = 2023-11-14 22:13:20.003
- EPOCH# = 0
- EVENTID = mysql-bin.000001:0000000000000700;-1
- SOURCEID = db1
- METADATA = [server_id=1;service=alpha;shard=test]
- TYPE = STATEMENT
- OPTIONS = [timestamp = 1700000000, foreign_key_checks = 1]
- SCHEMA = test
- SQL(0) = INSERT INTO t VALUES (3, '')
";

#[test]
fn list_default_prints_tungsten_blocks() {
    let d = tempfile::tempdir().unwrap();
    small_log(d.path());
    let dir = d.path().to_str().unwrap();
    assert_eq!(stdout(&thl(&["list", "-dir", dir])), LIST_ALL);
    // Options before or after the subcommand, one dash or two.
    assert_eq!(stdout(&thl(&["--dir", dir, "list"])), LIST_ALL);
    let two = stdout(&thl(&["list", "-dir", dir, "-low", "2", "-high", "2"]));
    assert!(
        two.starts_with("SEQ# = 2 /") && !two.contains("SEQ# = 3"),
        "{two}"
    );
}

#[test]
fn list_seqno_and_event_give_what_dsctl_set_needs() {
    let d = tempfile::tempdir().unwrap();
    small_log(d.path());
    let dir = d.path().to_str().unwrap();
    let third = &LIST_ALL[LIST_ALL.find("SEQ# = 3").unwrap()..];
    assert_eq!(stdout(&thl(&["list", "-dir", dir, "-seqno", "3"])), third);
    assert_eq!(
        stdout(&thl(&[
            "list",
            "-dir",
            dir,
            "-event",
            "mysql-bin.000001:0000000000000700;-1"
        ])),
        third
    );
    // The binlog position as a backup records it.
    assert_eq!(
        stdout(&thl(&[
            "list",
            "-dir",
            dir,
            "-event",
            "mysql-bin.000001:700"
        ])),
        third
    );
    let o = thl(&["list", "-dir", dir, "-event", "mysql-bin.000001:701"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!("thl: no event with eventid mysql-bin.000001:701 in {dir}\n")
    );
    let o = thl(&["list", "-dir", dir, "-seqno", "9"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "thl: seqno 9 is not in the log (it holds 1..3)\n"
    );
}

#[test]
fn list_headers_sql_and_json() {
    let d = tempfile::tempdir().unwrap();
    small_log(d.path());
    let dir = d.path().to_str().unwrap();
    assert_eq!(
        stdout(&thl(&["list", "-dir", dir, "-headers"])),
        "1\t0\ttrue\t2023-11-14 22:13:20.001\t0\tmysql-bin.000001:0000000000000500;-1\tdb1\ttest\n\
         2\t0\ttrue\t2023-11-14 22:13:20.002\t0\tmysql-bin.000001:0000000000000600;-1\tdb1\ttest\n\
         3\t0\ttrue\t2023-11-14 22:13:20.003\t0\tmysql-bin.000001:0000000000000700;-1\tdb1\ttest\n"
    );
    assert_eq!(
        stdout(&thl(&["list", "-dir", dir, "-sql"])),
        "USE `test`;\n\
         INSERT INTO t VALUES (1, 'xx');\n\
         UPDATE `test`.`t1` SET `id` = 0, `name` = 'new-0', `d` = '2024-01-02 03:04:05.000006' \
         WHERE `id` = 0 AND `name` = 'old' AND `d` = '2024-01-02';\n\
         INSERT INTO t VALUES (3, '');\n"
    );
    let json = stdout(&thl(&["list", "-dir", dir, "-json", "-low", "2"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["seqno"], 2);
    assert_eq!(arr[1]["eventid"], "mysql-bin.000001:0000000000000700;-1");
    let empty = stdout(&thl(&["list", "-dir", dir, "-json", "-low", "9"]));
    assert_eq!(empty, "[]\n");
}

#[test]
fn index_and_info() {
    let d = tempfile::tempdir().unwrap();
    many_log(d.path(), 20);
    let dir = d.path().to_str().unwrap();
    assert_eq!(
        stdout(&thl(&["index", "-dir", dir])),
        "LogIndexEntry thl.data.0000000001(1:8)\n\
         LogIndexEntry thl.data.0000000002(9:16)\n\
         LogIndexEntry thl.data.0000000003(17:20)\n"
    );
    let size: u64 = (1..=3)
        .map(|n| {
            std::fs::metadata(d.path().join(format!("thl.data.000000000{n}")))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        stdout(&thl(&["info", "-dir", dir])),
        format!(
            "log directory = {dir}\n\
             log files = 3\n\
             logs size = {} ({size} bytes)\n\
             min seq# = 1\n\
             max seq# = 20\n\
             events = 20\n\
             oldest file = thl.data.0000000001 (1:8)\n\
             newest file = thl.data.0000000003 (17:20)\n",
            carbide_replicator::thl::display::human_size(size)
        )
    );
}

#[test]
fn purge_high_deletes_whole_files_after_confirmation() {
    let d = tempfile::tempdir().unwrap();
    many_log(d.path(), 20);
    let dir = d.path().to_str().unwrap();
    let o = thl_stdin(&["purge", "-dir", dir, "-high", "10"], "n\n");
    assert_eq!(
        stdout(&o),
        "Deleting events where SEQ# <= 10\n\
         WARNING: The purge command will break replication if you delete all events or delete \
         events that have not reached all slaves.\n\
         Are you sure you wish to delete these events [y/N]? \n\
         Nothing deleted.\n"
    );
    assert_eq!(
        stdout(&thl(&["purge", "-dir", dir, "-high", "10", "-y"])),
        "Deleting events where SEQ# <= 10\n\
         Deleted thl.data.0000000001 (1:8)\n\
         Events up to SEQ# 8 deleted.\n\
         Kept: thl.data.0000000002 (9:16) also holds seqnos at or above 11 (purge deletes whole files).\n"
    );
    assert_eq!(
        stdout(&thl(&["index", "-dir", dir])),
        "LogIndexEntry thl.data.0000000002(9:16)\n\
         LogIndexEntry thl.data.0000000003(17:20)\n"
    );
}

#[test]
fn purge_low_cuts_the_tail() {
    let d = tempfile::tempdir().unwrap();
    many_log(d.path(), 20);
    let dir = d.path().to_str().unwrap();
    assert_eq!(
        stdout(&thl_stdin(&["purge", "-dir", dir, "-low", "12"], "y\n")),
        "Deleting events where SEQ# >= 12\n\
         WARNING: The purge command will break replication if you delete all events or delete \
         events that have not reached all slaves.\n\
         Are you sure you wish to delete these events [y/N]? \n\
         Deleted thl.data.0000000003\n\
         Truncated thl.data.0000000002 at offset 886\n\
         Events 12..20 deleted.\n"
    );
    assert_eq!(
        stdout(&thl(&["index", "-dir", dir])),
        "LogIndexEntry thl.data.0000000001(1:8)\n\
         LogIndexEntry thl.data.0000000002(9:11)\n"
    );
    let o = thl(&["purge", "-dir", dir, "-low", "3", "-high", "5", "-y"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("from the middle of the log"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn purge_refuses_while_the_replicator_holds_the_lock() {
    let d = tempfile::tempdir().unwrap();
    many_log(d.path(), 20);
    let dir = d.path().to_str().unwrap();
    // many_log's writer has let go of the lock, but a process another test
    // spawns at that moment holds a copy of its descriptor between fork
    // and exec (flock locks follow the descriptor): try again briefly
    let mut tries = 0;
    let w = loop {
        match ThlWriter::open(d.path(), WriterConfig::default()) {
            Err(carbide_replicator::thl::ThlError::Locked { .. }) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap(),
        }
    };
    let o = thl(&["purge", "-dir", dir, "-high", "10", "-y"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "thl: refusing to purge: the replicator holds the THL lock ({dir}/thl.lock); it is \
             running — put it offline and stop it first\n"
        )
    );
    assert_eq!(stdout(&thl(&["index", "-dir", dir])).lines().count(), 3);
    drop(w);
}

#[test]
fn conf_selects_the_member_directory_and_checks_the_service() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("alpha.toml");
    std::fs::write(
        &conf,
        r#"
[service]
name = "alpha"

[credentials]
user = "tungsten"
password = "secret"

[replicator]
thl-root = "thl"

[[member]]
name = "db1"
mysql = "127.0.0.1:13306"
replicator = "127.0.0.1:10000"
thl = "127.0.0.1:2112"
manager = "127.0.0.1:11999"
role = "master"
"#,
    )
    .unwrap();
    small_log(&d.path().join("thl/db1/alpha"));
    let c = conf.to_str().unwrap();
    assert_eq!(
        stdout(&thl(&[
            "list", "-conf", c, "-service", "alpha", "-seqno", "3"
        ])),
        &LIST_ALL[LIST_ALL.find("SEQ# = 3").unwrap()..]
    );
    let o = thl(&["info", "-conf", c, "-service", "beta"]);
    assert_eq!(o.status.code(), Some(64));
    assert_eq!(
        stderr(&o),
        format!("thl: {c} defines service 'alpha', not 'beta'\n")
    );
    let o = thl(&["info"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("give -dir DIR, or -conf FILE"),
        "{}",
        stderr(&o)
    );
    let o = thl(&["info", "-dir", "/nonexistent/thl"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "thl: THL directory /nonexistent/thl does not exist\n"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["list", "index", "info", "purge"] {
        let o = thl(&[sub, "-help"]);
        let out = stdout(&o);
        assert!(out.contains("Usage: thl"), "{sub}: {out}");
    }
    let top = stdout(&thl(&["--help"]));
    for sub in ["list", "index", "info", "purge"] {
        assert!(top.contains(sub), "{top}");
    }
}
