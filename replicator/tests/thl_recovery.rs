//! Recovery and corruption: a damaged tail is cut and reported, damage in
//! the middle is an error naming the file and offset, newer versions are
//! refused.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use carbide_replicator::thl::format::{self, SEGMENT_HEADER_LEN};
use carbide_replicator::thl::{ThlError, ThlReader, ThlWriter, WriterConfig};
use common::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

fn cfg() -> WriterConfig {
    WriterConfig {
        segment_size: 8192,
        max_fragment_bytes: 1000,
        ..WriterConfig::default()
    }
}

/// Writes transactions 1..=n and returns the segment paths.
fn write_log(dir: &Path, n: u64) -> Vec<PathBuf> {
    let mut w = ThlWriter::open(dir, cfg()).unwrap();
    for s in 1..=n {
        w.append(&stmt_tx(s, 150)).unwrap();
    }
    w.commit().unwrap();
    let paths = w.index().segments.iter().map(|s| s.path.clone()).collect();
    w.close().unwrap();
    paths
}

/// Offsets of the records in a segment file.
fn record_offsets(path: &Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut out = Vec::new();
    while at < b.len() {
        let (_, n) = format::decode_record(&b[at..]).unwrap();
        out.push(at as u64);
        at += n;
    }
    out
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[test]
fn flipped_byte_in_the_last_record_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 40);
    let last = paths.last().unwrap();
    let offs = record_offsets(last);
    let at = *offs.last().unwrap();
    flip(last, at + 60);
    // A reader stops before the damage and says what recovery would cut.
    let r = ThlReader::open(dir.path()).unwrap();
    assert_eq!(r.last_seqno(), Some(39));
    assert!(!r.pending_recovery().is_clean());
    let w = ThlWriter::open(dir.path(), cfg()).unwrap();
    let rep = w.recovery_report();
    assert_eq!(rep.cuts.len(), 1, "{rep}");
    let c = &rep.cuts[0];
    assert_eq!((&c.file, c.offset), (last, at));
    assert!(c.reason.contains("torn record"), "{rep}");
    assert!(c.reason.contains("checksum mismatch"), "{rep}");
    assert!(
        rep.to_string().contains(&format!("at offset {at}")),
        "{rep}"
    );
    assert_eq!(w.last_seqno(), Some(39));
    assert_eq!(std::fs::metadata(last).unwrap().len(), at);
    drop(w);
    assert_eq!(all_txs(dir.path()).len(), 39);
}

#[test]
fn flipped_byte_in_the_middle_of_the_final_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 40);
    let last = paths.last().unwrap();
    let offs = record_offsets(last);
    assert!(offs.len() > 3);
    let at = offs[1];
    flip(last, at + 50);
    for e in [
        ThlWriter::open(dir.path(), cfg()).err().unwrap(),
        ThlReader::open(dir.path()).err().unwrap(),
    ] {
        assert!(
            matches!(e, ThlError::Corruption { offset, .. } if offset == at),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&last.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("at offset {at}")), "{msg}");
    }
    // Nothing was cut.
    assert!(std::fs::metadata(last).unwrap().len() > at + 100);
}

#[test]
fn flipped_byte_in_a_sealed_segment_fails_the_read_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 60);
    assert!(paths.len() >= 3);
    let p = &paths[1];
    let at = record_offsets(p)[2];
    flip(p, at + 49);
    let r = ThlReader::open(dir.path()).unwrap();
    let err = r
        .records(0)
        .unwrap()
        .find_map(|e| e.err())
        .expect("an error");
    assert!(
        matches!(&err, ThlError::Corruption { file, offset, .. } if file == p && *offset == at),
        "{err}"
    );
    // Reading past the damage is impossible; reading before it works.
    let ok: Vec<_> = r.records(0).unwrap().take_while(|e| e.is_ok()).collect();
    assert!(!ok.is_empty());
}

#[test]
fn torn_write_and_zero_fill_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 20);
    let last = paths.last().unwrap().clone();
    let at = *record_offsets(&last).last().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    // Torn: the last record is cut short.
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let w = ThlWriter::open(dir.path(), cfg()).unwrap();
    assert!(w.recovery_report().cuts[0].reason.contains("incomplete"));
    assert_eq!(w.last_seqno(), Some(19));
    drop(w);
    // Zero fill after the last record (size extended, data never written).
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let w = ThlWriter::open(dir.path(), cfg()).unwrap();
    let rep = w.recovery_report().to_string();
    assert!(rep.contains("zero-filled tail"), "{rep}");
    assert_eq!(std::fs::metadata(&last).unwrap().len(), at);
    assert_eq!(w.last_seqno(), Some(19));
}

#[test]
fn trailing_fragments_of_an_unfinished_transaction_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5);
    let mut w = ThlWriter::open(dir.path(), cfg()).unwrap();
    for f in 0..3 {
        let mut frag = stmt_tx(6, 100);
        frag.fragno = f;
        frag.last_frag = false;
        w.append_record(&frag).unwrap();
    }
    w.sync().unwrap();
    drop(w);
    let recs = all_records(dir.path());
    assert_eq!(
        recs.last().unwrap().seqno,
        5,
        "readers stop at whole transactions"
    );
    let w = ThlWriter::open(dir.path(), cfg()).unwrap();
    let c = &w.recovery_report().cuts[0];
    assert_eq!(c.records, 3);
    assert!(
        c.reason
            .contains("incomplete transaction seqno 6 (3 fragments without last_frag)"),
        "{}",
        c.reason
    );
    assert_eq!(w.next_seqno(), Some(6));
}

#[test]
fn torn_segment_header_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 5);
    let next = dir.path().join(carbide_replicator::thl::segment_file_name(
        paths.len() as u64 + 1,
    ));
    std::fs::write(&next, b"CBTHL").unwrap();
    let w = ThlWriter::open(dir.path(), cfg()).unwrap();
    assert!(w.recovery_report().cuts[0]
        .reason
        .contains("torn segment header"));
    assert!(!next.exists());
    assert_eq!(w.last_seqno(), Some(5));
}

#[test]
fn newer_format_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 3);
    let p = &paths[0];
    let mut b = std::fs::read(p).unwrap();
    b[6] = 9;
    let crc = crc32c::crc32c(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(p, b).unwrap();
    let e = ThlReader::open(dir.path()).err().unwrap();
    assert!(
        matches!(e, ThlError::UnsupportedVersion { found: 9, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("segment format version 9; this carbide reads version 1"),
        "{e}"
    );
}
