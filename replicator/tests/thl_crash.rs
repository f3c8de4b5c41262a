//! Crash test: a real child process writes the THL and prints every seqno
//! acknowledged as durable; the parent kills it with SIGKILL at random
//! moments, reopens the log (recovery) and checks that every acknowledged
//! transaction is there, intact, and that the log ends on a whole
//! transaction. The child is this test binary re-run on `crash_writer_child`.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use carbide_replicator::thl::{FsyncPolicy, ThlEvent, ThlReader, ThlWriter, WriterConfig};
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const DIR_VAR: &str = "CARBIDE_THL_CRASH_DIR";
const MODE_VAR: &str = "CARBIDE_THL_CRASH_MODE";

/// `mode`: "every" (fsync per commit), "interval" (3 ms) or "lazy" (1 h:
/// nothing becomes durable, the child only writes — kills land mid-write).
fn cfg(mode: &str) -> WriterConfig {
    WriterConfig {
        // Lazy rounds rarely rotate (a rotation fsyncs), so most of their
        // time is spent writing.
        segment_size: if mode == "lazy" { 4 << 20 } else { 64 << 10 },
        max_fragment_bytes: 2000,
        max_write_bytes: 64,
        fsync: match mode {
            "interval" => FsyncPolicy::Interval(Duration::from_millis(3)),
            "lazy" => FsyncPolicy::Interval(Duration::from_secs(3600)),
            _ => FsyncPolicy::EveryCommit,
        },
        ..WriterConfig::default()
    }
}

/// The transaction every run writes for `seqno` (so content can be checked).
fn tx_for(seqno: u64) -> ThlEvent {
    match seqno % 7 {
        0 => big_tx(seqno, 12, 400), // fragmented
        3 => rows_tx(seqno, 5),
        _ => stmt_tx(seqno, (seqno % 300) as usize),
    }
}

/// Child side: append and commit forever, printing `ACK n` after each
/// durable commit. A no-op in normal test runs.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let mode = std::env::var(MODE_VAR).unwrap_or_default();
    let mut w = ThlWriter::open(&dir, cfg(&mode)).unwrap();
    let mut next = w.next_seqno().unwrap_or(1);
    let out = std::io::stdout();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = w.durable_seqno();
    while Instant::now() < deadline {
        // Group commit of 1..4 transactions.
        for _ in 0..=(next % 4) {
            w.append(&tx_for(next)).unwrap();
            next += 1;
        }
        let durable = w.commit().unwrap();
        if durable != acked {
            if let Some(d) = durable {
                let mut o = out.lock();
                writeln!(o, "ACK {d}").unwrap();
                o.flush().unwrap();
            }
            acked = durable;
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_log(dir: &Path, acked: u64) -> u64 {
    let w = ThlWriter::open(dir, cfg("every")).unwrap();
    let report = w.recovery_report().to_string();
    let last = w.last_seqno().unwrap_or(0);
    assert!(
        last >= acked,
        "acknowledged seqno {acked} lost; log ends at {last}; recovery: {report}"
    );
    drop(w);
    let r = ThlReader::open(dir).unwrap();
    assert!(r.pending_recovery().is_clean(), "recovery left a tail");
    let mut expect = 1;
    for tx in r.transactions(0).unwrap() {
        let tx = tx.unwrap();
        assert_eq!(tx.seqno, expect);
        assert_eq!(tx, tx_for(expect), "content of seqno {expect}");
        expect += 1;
    }
    // The last stored record closes its transaction.
    let recs = r
        .records(last)
        .unwrap()
        .map(|e| e.unwrap())
        .collect::<Vec<_>>();
    assert!(recs.last().is_none_or(|e| e.last_frag));
    expect - 1
}

#[test]
fn kill_9_in_a_loop_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut acked = 0u64;
    let mut cut_tails = 0;
    for round in 0..20 {
        let mode = ["every", "interval", "lazy"][round % 3];
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .env(MODE_VAR, mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut max = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
                    max = max.max(n);
                }
            }
            max
        });
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let round_acked = reader.join().unwrap();
        acked = acked.max(round_acked);
        let r = ThlReader::open(dir.path()).unwrap();
        if !r.pending_recovery().is_clean() {
            cut_tails += 1;
            eprintln!("round {round}: {}", r.pending_recovery());
        }
        let last = check_log(dir.path(), acked);
        eprintln!("round {round} ({mode}): acked {round_acked}, log ends at {last}");
    }
    assert!(acked > 0, "the child never acknowledged anything");
    eprintln!("{cut_tails} of 20 rounds needed a tail cut");
}
