//! THL store behaviour through the public API: append/read back, fragments,
//! rotation, seek, find by eventid, order checks, lock, tail, purge, truncate.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use carbide_replicator::thl::{
    is_locked, purge_dir, truncate_from, FsyncPolicy, PurgeRequest, ThlError, ThlReader, ThlWriter,
    WriterConfig,
};
use common::*;
use std::time::Duration;

fn small() -> WriterConfig {
    WriterConfig {
        segment_size: 4096,
        max_fragment_bytes: 1000,
        ..WriterConfig::default()
    }
}

#[test]
fn appends_read_back_across_rotations_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let mut w = ThlWriter::open(dir.path(), small()).unwrap();
        for s in 1..=60 {
            let tx = if s % 3 == 0 {
                rows_tx(s, 3)
            } else {
                stmt_tx(s, 200)
            };
            w.append(&tx).unwrap();
            expected.push(tx);
            if s % 7 == 0 {
                assert_eq!(w.commit().unwrap(), Some(s));
            }
        }
        w.close().unwrap();
    }
    let r = ThlReader::open(dir.path()).unwrap();
    assert!(r.index().segments.len() > 3, "rotated");
    assert_eq!((r.first_seqno(), r.last_seqno()), (Some(1), Some(60)));
    assert_eq!(all_txs(dir.path()), expected);
    // seek
    let from40: Vec<_> = r.transactions(40).unwrap().map(|t| t.unwrap()).collect();
    assert_eq!(from40, expected[39..]);
    assert_eq!(r.get(33).unwrap().as_ref(), Some(&expected[32]));
    assert_eq!(r.get(61).unwrap(), None);
    // reopen the writer and continue
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    assert!(w.recovery_report().is_clean());
    assert_eq!(w.next_seqno(), Some(61));
    w.append(&stmt_tx(61, 1)).unwrap();
    w.commit().unwrap();
    drop(w);
    assert_eq!(all_txs(dir.path()).len(), 61);
}

#[test]
fn large_transactions_are_fragmented_and_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    let big = big_tx(1, 20, 300);
    w.append(&big).unwrap();
    w.append(&stmt_tx(2, 10)).unwrap();
    w.commit().unwrap();
    drop(w);
    let recs = all_records(dir.path());
    let frags: Vec<_> = recs.iter().filter(|r| r.seqno == 1).collect();
    assert!(frags.len() > 4, "{} fragments", frags.len());
    for (i, f) in frags.iter().enumerate() {
        assert_eq!(f.fragno as usize, i);
        assert_eq!(f.last_frag, i + 1 == frags.len());
        assert_eq!(f.eventid, big.eventid);
    }
    assert_eq!(all_txs(dir.path()), vec![big, stmt_tx(2, 10)]);
}

#[test]
fn out_of_order_appends_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    w.append(&stmt_tx(10, 1)).unwrap();
    for bad in [10, 12, 9] {
        let e = w.append(&stmt_tx(bad, 1)).unwrap_err();
        assert!(matches!(e, ThlError::OutOfOrder(_)), "{e}");
        assert!(e.to_string().contains("expected seqno 11 fragno 0"), "{e}");
    }
    let mut frag = stmt_tx(11, 1);
    frag.last_frag = false;
    w.append_record(&frag).unwrap();
    let mut f2 = stmt_tx(12, 1);
    f2.fragno = 0;
    let e = w.append_record(&f2).unwrap_err();
    assert!(e.to_string().contains("expected seqno 11 fragno 1"), "{e}");
    let mut f1 = stmt_tx(11, 1);
    f1.fragno = 1;
    w.append_record(&f1).unwrap();
    assert_eq!(w.commit().unwrap(), Some(11));
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let w = ThlWriter::open(dir.path(), small()).unwrap();
    let e = ThlWriter::open(dir.path(), small()).err().unwrap();
    assert!(matches!(e, ThlError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("thl.lock"), "{e}");
    assert!(is_locked(dir.path()).unwrap());
    drop(w);
    assert!(!is_locked(dir.path()).unwrap());
    ThlWriter::open(dir.path(), small()).unwrap();
}

#[test]
fn find_by_eventid_exact_and_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    for s in 1..=30 {
        w.append(&stmt_tx(s, 100)).unwrap();
    }
    w.commit().unwrap();
    let r = ThlReader::open(dir.path()).unwrap();
    let id = stmt_tx(17, 0).eventid;
    assert_eq!(r.find_event_id(&id).unwrap().unwrap().seqno, 17);
    // 400 + 17*100 = 2100, without padding or session suffix
    assert_eq!(
        r.find_event_id("mysql-bin.000001:2100")
            .unwrap()
            .unwrap()
            .seqno,
        17
    );
    assert!(r.find_event_id("mysql-bin.000001:2101").unwrap().is_none());
}

#[test]
fn interval_policy_syncs_on_tick() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WriterConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(30)),
        ..small()
    };
    let mut w = ThlWriter::open(dir.path(), cfg).unwrap();
    w.append(&stmt_tx(1, 1)).unwrap();
    // First commit right after open: the interval has not passed.
    assert_eq!(w.commit().unwrap(), None);
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(w.tick().unwrap(), Some(1));
}

#[test]
fn tail_follows_a_live_writer_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    w.append(&stmt_tx(1, 10)).unwrap();
    w.commit().unwrap();
    let watch = w.durable_watch();
    let path = dir.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let r = ThlReader::open(&path).unwrap();
        let mut tail = r.tail(1, watch);
        let mut got = Vec::new();
        while let Some(ev) = tail.next(Duration::from_secs(10)).unwrap() {
            got.push(ev);
        }
        got
    });
    let mut expected = vec![stmt_tx(1, 10)];
    for s in 2..=40 {
        let tx = if s == 20 {
            big_tx(s, 10, 300)
        } else {
            stmt_tx(s, 300)
        };
        w.append(&tx).unwrap();
        // Not durable yet: appended but not committed.
        if s % 5 == 0 {
            w.commit().unwrap();
        }
        expected.push(tx);
    }
    w.close().unwrap();
    let got = reader.join().unwrap();
    let mut asm = carbide_replicator::thl::Reassembler::default();
    let txs: Vec<_> = got
        .into_iter()
        .filter_map(|r| asm.push(r).unwrap())
        .collect();
    assert_eq!(txs, expected);
}

#[test]
fn tail_waits_for_durability() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    w.append(&stmt_tx(1, 10)).unwrap();
    w.commit().unwrap();
    let r = ThlReader::open(dir.path()).unwrap();
    let mut tail = r.tail(1, w.durable_watch());
    assert_eq!(tail.next(Duration::ZERO).unwrap().unwrap().seqno, 1);
    w.append(&stmt_tx(2, 10)).unwrap();
    w.sync().unwrap();
    w.append(&stmt_tx(3, 10)).unwrap(); // buffered only
    assert_eq!(tail.next(Duration::ZERO).unwrap().unwrap().seqno, 2);
    assert!(tail.next(Duration::from_millis(20)).unwrap().is_none());
    w.commit().unwrap();
    assert_eq!(tail.next(Duration::ZERO).unwrap().unwrap().seqno, 3);
}

#[test]
fn purge_deletes_whole_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    for s in 1..=100 {
        w.append(&stmt_tx(s, 200)).unwrap();
    }
    w.commit().unwrap();
    let segs = w.index().segments.clone();
    assert!(segs.len() > 5);
    let second_last = segs[2].last_seqno.unwrap();
    // below a seqno inside segment 3: segments 1-2 go
    let rep = w
        .purge(&PurgeRequest {
            below_seqno: Some(second_last),
            ..PurgeRequest::default()
        })
        .unwrap();
    assert_eq!(rep.deleted.len(), 2);
    assert!(rep.stopped.unwrap().contains("also holds seqnos"));
    // keep_seqno wins over below_seqno
    let keep = w.index().segments[1].base_seqno;
    let rep = w
        .purge(&PurgeRequest {
            below_seqno: Some(1000),
            keep_seqno: Some(keep),
            ..PurgeRequest::default()
        })
        .unwrap();
    assert_eq!(rep.deleted.len(), 1);
    assert!(rep.stopped.unwrap().contains("still needed"));
    // never the active segment
    let rep = w
        .purge(&PurgeRequest {
            below_seqno: Some(u64::MAX),
            ..PurgeRequest::default()
        })
        .unwrap();
    assert!(rep.stopped.unwrap().contains("active segment"));
    assert_eq!(w.index().segments.len(), 1);
    // retention: nothing is old
    let rep = w
        .purge(&PurgeRequest {
            older_than: Some(Duration::from_secs(3600)),
            ..PurgeRequest::default()
        })
        .unwrap();
    assert!(rep.deleted.is_empty());
    // A tail asking for a purged seqno gets an error, not a silent jump.
    let r = ThlReader::open(dir.path()).unwrap();
    let e = r
        .tail(1, w.durable_watch())
        .next(Duration::ZERO)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("seqno 1 is no longer in the THL (purged)"),
        "{e}"
    );
    drop(w);
    let txs = all_txs(dir.path());
    assert_eq!(txs.last().unwrap().seqno, 100);
    assert!(txs.windows(2).all(|p| p[1].seqno == p[0].seqno + 1));
}

#[test]
fn standalone_purge_and_truncate_refuse_while_locked() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    for s in 1..=50 {
        w.append(&stmt_tx(s, 200)).unwrap();
    }
    w.commit().unwrap();
    let req = PurgeRequest {
        below_seqno: Some(30),
        ..PurgeRequest::default()
    };
    assert!(matches!(
        purge_dir(dir.path(), &req),
        Err(ThlError::Locked { .. })
    ));
    assert!(matches!(
        truncate_from(dir.path(), 5),
        Err(ThlError::Locked { .. })
    ));
    drop(w);
    let rep = purge_dir(dir.path(), &req).unwrap();
    assert!(!rep.deleted.is_empty());
    let rep = truncate_from(dir.path(), 40).unwrap();
    assert_eq!(rep.removed, Some((40, 50)));
    let txs = all_txs(dir.path());
    assert_eq!(txs.last().unwrap().seqno, 39);
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    assert_eq!(w.next_seqno(), Some(40));
    w.append(&stmt_tx(40, 1)).unwrap();
    w.commit().unwrap();
}

#[test]
fn truncate_to_a_segment_base_leaves_an_empty_final_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    for s in 1..=50 {
        w.append(&stmt_tx(s, 200)).unwrap();
    }
    w.commit().unwrap();
    let base = w.index().segments[2].base_seqno;
    drop(w);
    truncate_from(dir.path(), base).unwrap();
    let r = ThlReader::open(dir.path()).unwrap();
    assert_eq!(r.last_seqno(), Some(base - 1));
    let mut w = ThlWriter::open(dir.path(), small()).unwrap();
    assert_eq!(w.next_seqno(), Some(base));
    w.append(&stmt_tx(base, 1)).unwrap();
    w.commit().unwrap();
    drop(w);
    assert_eq!(all_txs(dir.path()).last().unwrap().seqno, base);
}
