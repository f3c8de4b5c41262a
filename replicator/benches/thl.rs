//! THL storage benchmark (plain main, `harness = false`): append throughput
//! with group commit, sequential scan, and open time of a large log.
//!
//! Run: `benches/thl.sh` (= `cargo bench -p carbide-replicator --bench thl`).
//! Env: `THL_BENCH_DIR` (default `/work/tmp-thl-bench`, else the temp dir),
//! `THL_BENCH_OPEN_GB` (size of the log for the open test, default 2),
//! `THL_BENCH_DROP_CACHES=1` (as root: drop the page cache before the open
//! and scan tests, to measure cold reads). Files are deleted afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark, not library code

use carbide_replicator::thl::{
    Change, FsyncPolicy, RowAction, RowChange, RowsChange, Statement, ThlEvent, ThlReader,
    ThlWriter, Value, WriterConfig,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn header(seqno: u64) -> ThlEvent {
    let mut e = ThlEvent::new(
        seqno,
        1,
        format!("mysql-bin.000042:{:016};-1", seqno * 1100),
    );
    e.source_id = "db1.example.com".into();
    e.shard = "shop".into();
    e.source_tstamp = 1_700_000_000_000_000 + seqno as i64;
    e.extract_tstamp = e.source_tstamp + 300;
    e.metadata = vec![
        ("server_id".into(), "1".into()),
        ("service".into(), "alpha".into()),
        ("dbms_type".into(), "mariadb".into()),
    ];
    e
}

/// ~1 KB statement transaction.
fn small_tx(seqno: u64, sql: &str) -> ThlEvent {
    let mut e = header(seqno);
    e.changes.push(Change::Statement(Statement::new(sql)));
    e
}

/// ~64 KB row transaction (one row with a 64 KB blob).
fn large_tx(seqno: u64, blob: &[u8]) -> ThlEvent {
    let mut e = header(seqno);
    e.changes.push(Change::Rows(RowsChange {
        schema: "shop".into(),
        table: "images".into(),
        action: RowAction::Insert,
        columns: Vec::new(),
        keys: Vec::new(),
        rows: vec![RowChange {
            before: None,
            after: Some(vec![Value::Int(seqno as i64), Value::bytes(blob.to_vec())]),
        }],
    }));
    e
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn drop_caches() {
    if std::env::var("THL_BENCH_DROP_CACHES").is_ok_and(|v| v == "1") {
        let _ = std::process::Command::new("sync").status();
        match std::fs::write("/proc/sys/vm/drop_caches", "3") {
            Ok(()) => println!("  (page cache dropped)"),
            Err(e) => println!("  (could not drop the page cache: {e})"),
        }
    }
}

/// Appends `n` transactions made by `make`, committing every `group`.
fn append_run(
    dir: &Path,
    n: u64,
    group: u64,
    fsync: FsyncPolicy,
    make: impl Fn(u64) -> ThlEvent,
) -> (Duration, u64, u64) {
    let cfg = WriterConfig {
        fsync,
        ..WriterConfig::default()
    };
    let mut w = ThlWriter::open(dir, cfg).unwrap();
    let start = Instant::now();
    let mut commits = 0;
    for s in 1..=n {
        w.append(&make(s)).unwrap();
        if s % group == 0 {
            w.commit().unwrap();
            commits += 1;
        }
    }
    w.sync().unwrap();
    let t = start.elapsed();
    w.close().unwrap();
    (t, dir_size(dir), commits)
}

fn scan(dir: &Path) -> (Duration, u64, u64) {
    let start = Instant::now();
    let r = ThlReader::open(dir).unwrap();
    let mut n = 0;
    for ev in r.records(0).unwrap() {
        let ev = ev.unwrap();
        std::hint::black_box(&ev);
        n += 1;
    }
    (start.elapsed(), dir_size(dir), n)
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let base = std::env::var_os("THL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if Path::new("/work").is_dir() {
                PathBuf::from("/work/tmp-thl-bench")
            } else {
                std::env::temp_dir().join("thl-bench")
            }
        });
    let open_gb: u64 = std::env::var("THL_BENCH_OPEN_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    std::fs::create_dir_all(&base).unwrap();
    println!("THL benchmark in {}", base.display());

    // 1. Small transactions, fsync per group.
    let sql = format!("INSERT INTO shop.orders VALUES (1, '{}')", "x".repeat(960));
    for group in [100u64, 1000] {
        let d = fresh(&base, "small");
        let n = 300_000;
        let (t, bytes, commits) = append_run(&d, n, group, FsyncPolicy::EveryCommit, |s| {
            small_tx(s, &sql)
        });
        let secs = t.as_secs_f64();
        println!(
            "append 1 KB tx, fsync per group of {group}: {n} tx, {:.0} MB in {secs:.2} s = \
             {:.0} tx/s, {:.0} MB/s ({commits} fsyncs, {:.2} ms per group)",
            mb(bytes),
            n as f64 / secs,
            mb(bytes) / secs,
            secs * 1000.0 / commits as f64
        );
        if group == 1000 {
            drop_caches();
            let (t, bytes, recs) = scan(&d);
            println!(
                "scan 1 KB tx (open + read + decode): {recs} records, {:.0} MB in {:.2} s = {:.0} MB/s, {:.0} tx/s",
                mb(bytes),
                t.as_secs_f64(),
                mb(bytes) / t.as_secs_f64(),
                recs as f64 / t.as_secs_f64()
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    // 2. 64 KB transactions, fsync per group of 16 (1 MB) and 64 (4 MB).
    let blob = vec![0xa5u8; 64 << 10];
    for group in [16u64, 64] {
        let d = fresh(&base, "large");
        let n = 16_000; // ~1 GB
        let (t, bytes, commits) = append_run(&d, n, group, FsyncPolicy::EveryCommit, |s| {
            large_tx(s, &blob)
        });
        println!(
            "append 64 KB tx, fsync per group of {group}: {n} tx, {:.0} MB in {:.2} s = {:.0} MB/s, \
             {:.0} tx/s ({commits} fsyncs)",
            mb(bytes),
            t.as_secs_f64(),
            mb(bytes) / t.as_secs_f64(),
            n as f64 / t.as_secs_f64()
        );
        if group == 64 {
            drop_caches();
            let (t, bytes, recs) = scan(&d);
            println!(
                "scan 64 KB tx (open + read + decode): {recs} records, {:.0} MB in {:.2} s = {:.0} MB/s",
                mb(bytes),
                t.as_secs_f64(),
                mb(bytes) / t.as_secs_f64()
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    // 3. Open of a large log (default segments of 100 MB).
    let d = fresh(&base, "open");
    let n = open_gb * (1 << 30) / (64 << 10);
    let (t, bytes, _) = append_run(
        &d,
        n,
        64,
        FsyncPolicy::Interval(Duration::from_secs(1)),
        |s| large_tx(s, &blob),
    );
    println!(
        "built a {:.1} GB log ({} files) in {:.1} s",
        bytes as f64 / 1e9,
        std::fs::read_dir(&d).unwrap().count() - 1,
        t.as_secs_f64()
    );
    drop_caches();
    let start = Instant::now();
    let r = ThlReader::open(&d).unwrap();
    let t_reader = start.elapsed();
    let start = Instant::now();
    let mid = r.get(n / 2).unwrap().unwrap();
    let t_seek = start.elapsed();
    assert_eq!(mid.seqno, n / 2);
    drop_caches();
    let start = Instant::now();
    let w = ThlWriter::open(&d, WriterConfig::default()).unwrap();
    let t_writer = start.elapsed();
    assert_eq!(w.last_seqno(), Some(n));
    drop(w);
    println!(
        "open {:.1} GB log: reader {:.0} ms, writer with recovery scan of the final segment {:.0} ms; \
         seek + read of seqno {} {:.1} ms",
        bytes as f64 / 1e9,
        t_reader.as_secs_f64() * 1000.0,
        t_writer.as_secs_f64() * 1000.0,
        n / 2,
        t_seek.as_secs_f64() * 1000.0
    );
    std::fs::remove_dir_all(&d).unwrap();
    let _ = std::fs::remove_dir(&base);
}
