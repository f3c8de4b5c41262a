//! Opening a THL directory: building the segment index and repairing the tail.
//!
//! [`open_index`] lists the segment files, checks each sealed segment's header
//! and last record (contiguous seqnos, ends on a whole transaction), and scans
//! the final segment record by record with checksums. What it finds at the
//! end of the final segment is either:
//!
//! * a torn tail — a record cut short by the end of the file, a record that
//!   ends exactly at the end of the file but fails its checksum, or a run of
//!   zero bytes — plus any valid fragments of a transaction whose last
//!   fragment never made it: these are cut (when repairing) and described in
//!   the [`RecoveryReport`];
//! * damage followed by more data: a [`ThlError::Corruption`] naming the file
//!   and offset. Nothing in the middle of the log is ever skipped.
//!
//! A final segment whose header itself is torn (a file of at most header
//! size that does not decode) is removed. Readers call this without repair
//! and simply stop at the end of the last whole transaction.

use crate::thl::error::{Result, ThlError};
use crate::thl::format::{self, DecodeError, RECORD_OVERHEAD, SEGMENT_HEADER_LEN};
use crate::thl::segment::{
    self, list_segment_files, read_header, read_last_meta, RecordCursor, SegmentIndex, SegmentInfo,
    Step,
};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What recovery cut from the end of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// One entry per file that was cut or removed.
    pub cuts: Vec<Cut>,
}

impl RecoveryReport {
    /// True when nothing was cut.
    pub fn is_clean(&self) -> bool {
        self.cuts.is_empty()
    }
}

/// A cut at the end of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The file.
    pub file: PathBuf,
    /// Offset where the kept data ends.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Valid records removed (fragments of an incomplete transaction).
    pub records: u64,
    /// Why, for operators.
    pub reason: String,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cut {} bytes ({} whole records) from {} at offset {}: {}",
            self.bytes,
            self.records,
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cuts.is_empty() {
            return write!(f, "THL tail is clean");
        }
        for (i, c) in self.cuts.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Whether a bad record at `offset` is a torn tail (safe to cut) rather than
/// corruption in the middle. Pure: decided from the error, the declared
/// length, the file end and whether every byte from `offset` on is zero.
pub fn is_torn_tail(
    err: &DecodeError,
    declared_len: Option<u32>,
    offset: u64,
    file_end: u64,
    rest_is_zero: bool,
) -> bool {
    if rest_is_zero {
        return true;
    }
    let record_end = declared_len.map(|l| offset + u64::from(l) + RECORD_OVERHEAD);
    match err {
        DecodeError::Incomplete { .. } => true,
        DecodeError::BadLength(_) => record_end.is_some_and(|e| e > file_end),
        DecodeError::BadCrc { .. } | DecodeError::BadTrailer { .. } => {
            record_end.is_some_and(|e| e >= file_end)
        }
        DecodeError::BadMagic
        | DecodeError::UnsupportedVersion { .. }
        | DecodeError::Malformed(_) => false,
    }
}

/// Result of scanning the final segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailScan {
    /// End of the last whole transaction (where a repair truncates).
    pub whole_end: u64,
    /// Seqno of the last whole transaction.
    pub last_seqno: Option<u64>,
    /// Valid records after `whole_end` (an incomplete transaction).
    pub partial_records: u64,
    /// Seqno of that incomplete transaction.
    pub partial_seqno: Option<u64>,
    /// A torn record at the end: offset and description.
    pub torn: Option<(u64, String)>,
    /// File length.
    pub file_len: u64,
}

/// Scans a segment from its header to its end, checking every record and
/// the seqno/fragment order.
pub fn scan_segment(path: &Path, base_seqno: u64, file_len: u64) -> Result<TailScan> {
    let mut cur = RecordCursor::open(path, SEGMENT_HEADER_LEN, file_len)?;
    let mut scan = TailScan {
        whole_end: SEGMENT_HEADER_LEN,
        last_seqno: None,
        partial_records: 0,
        partial_seqno: None,
        torn: None,
        file_len,
    };
    // (seqno, fragno, last_frag) of the previous record.
    let mut prev: Option<(u64, u32, bool)> = None;
    loop {
        match cur.next_checked()? {
            Step::End => break,
            Step::Record { offset, meta } => {
                let ok = match prev {
                    None => meta.seqno == base_seqno && meta.fragno == 0,
                    Some((s, _, true)) => meta.seqno == s.wrapping_add(1) && meta.fragno == 0,
                    Some((s, f, false)) => meta.seqno == s && meta.fragno == f.wrapping_add(1),
                };
                if !ok {
                    let expect = match prev {
                        None => format!("seqno {base_seqno} fragno 0 (the segment base)"),
                        Some((s, _, true)) => format!("seqno {} fragno 0", s.wrapping_add(1)),
                        Some((s, f, false)) => format!("seqno {s} fragno {}", f.wrapping_add(1)),
                    };
                    return Err(ThlError::corrupt(
                        path,
                        offset,
                        format!(
                            "record seqno {} fragno {} out of order; expected {expect}",
                            meta.seqno, meta.fragno
                        ),
                    ));
                }
                prev = Some((meta.seqno, meta.fragno, meta.last_frag));
                if meta.last_frag {
                    scan.whole_end = offset + meta.disk_len();
                    scan.last_seqno = Some(meta.seqno);
                    scan.partial_records = 0;
                    scan.partial_seqno = None;
                } else {
                    scan.partial_records += 1;
                    scan.partial_seqno = Some(meta.seqno);
                }
            }
            Step::Bad {
                offset,
                declared_len,
                err,
            } => {
                let zero = rest_is_zero(path, offset)?;
                if is_torn_tail(&err, declared_len, offset, file_len, zero) {
                    let what = if zero {
                        "zero-filled tail".to_string()
                    } else {
                        format!("torn record ({err})")
                    };
                    scan.torn = Some((offset, what));
                    break;
                }
                return Err(segment::record_error(path, offset, err));
            }
        }
    }
    Ok(scan)
}

fn rest_is_zero(path: &Path, offset: u64) -> Result<bool> {
    let mut f = File::open(path).map_err(|e| ThlError::io("open", path, e))?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))
        .map_err(|e| ThlError::io("seek", path, e))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ThlError::io("read", path, e))?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// Builds the index of the log in `dir`. With `repair`, cuts a torn or
/// incomplete tail and removes a torn final header (the caller must hold the
/// lock); without it, leaves files alone and ends the index at the last
/// whole transaction.
pub fn open_index(dir: &Path, repair: bool) -> Result<(SegmentIndex, RecoveryReport)> {
    let mut files = list_segment_files(dir)?;
    let mut report = RecoveryReport::default();
    // A final file that holds at most a torn header: the writer died while
    // creating it.
    while let Some((_, path)) = files.last() {
        let len = std::fs::metadata(path)
            .map_err(|e| ThlError::io("stat", path, e))?
            .len();
        let mut b = Vec::new();
        File::open(path)
            .and_then(|f| f.take(SEGMENT_HEADER_LEN).read_to_end(&mut b))
            .map_err(|e| ThlError::io("read", path, e))?;
        match format::decode_segment_header(&b) {
            Err(DecodeError::UnsupportedVersion { .. }) | Ok(_) => break,
            Err(e) if len <= SEGMENT_HEADER_LEN => {
                if repair {
                    std::fs::remove_file(path).map_err(|e| ThlError::io("remove", path, e))?;
                    sync_dir(dir)?;
                }
                report.cuts.push(Cut {
                    file: path.clone(),
                    offset: 0,
                    bytes: len,
                    records: 0,
                    reason: format!("torn segment header ({e}); file removed"),
                });
                files.pop();
            }
            Err(_) => break,
        }
    }
    let mut segments: Vec<SegmentInfo> = Vec::with_capacity(files.len());
    let count = files.len();
    for (i, (number, path)) in files.into_iter().enumerate() {
        let (h, len) = read_header(&path)?;
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| ThlError::io("stat", &path, e))?;
        if let Some(prev) = segments.last() {
            let expected = prev.last_seqno.map_or(prev.base_seqno, |l| l + 1);
            if h.base_seqno != expected {
                return Err(ThlError::corrupt(
                    &path,
                    8,
                    format!(
                        "base seqno {} does not follow {} (expected {expected})",
                        h.base_seqno,
                        prev.file_name()
                    ),
                ));
            }
        }
        let (last_seqno, size) = if i + 1 < count {
            match read_last_meta(&path, len)? {
                None => {
                    return Err(ThlError::corrupt(
                        &path,
                        SEGMENT_HEADER_LEN,
                        "sealed segment holds no records",
                    ))
                }
                Some((off, m)) if !m.last_frag || m.seqno < h.base_seqno => {
                    return Err(ThlError::corrupt(
                        &path,
                        off,
                        format!(
                            "sealed segment ends with seqno {} fragno {}{}",
                            m.seqno,
                            m.fragno,
                            if m.last_frag {
                                " below its base seqno"
                            } else {
                                ", inside a transaction"
                            }
                        ),
                    ))
                }
                Some((_, m)) => (Some(m.seqno), len),
            }
        } else {
            let scan = scan_segment(&path, h.base_seqno, len)?;
            if scan.whole_end < len {
                let mut reason = Vec::new();
                if scan.partial_records > 0 {
                    reason.push(format!(
                        "incomplete transaction seqno {} ({} fragments without last_frag)",
                        scan.partial_seqno.unwrap_or_default(),
                        scan.partial_records
                    ));
                }
                if let Some((off, what)) = &scan.torn {
                    reason.push(format!("{what} at offset {off}"));
                }
                if repair {
                    truncate(&path, scan.whole_end)?;
                }
                report.cuts.push(Cut {
                    file: path.clone(),
                    offset: scan.whole_end,
                    bytes: len - scan.whole_end,
                    records: scan.partial_records,
                    reason: reason.join("; "),
                });
            }
            (scan.last_seqno, scan.whole_end)
        };
        segments.push(SegmentInfo {
            number,
            path,
            base_seqno: h.base_seqno,
            created_us: h.created_us,
            last_seqno,
            size,
            modified,
        });
    }
    if repair {
        for c in &report.cuts {
            tracing::warn!(file = %c.file.display(), offset = c.offset, bytes = c.bytes, "THL recovery: {}", c);
        }
    }
    Ok((SegmentIndex { segments }, report))
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| ThlError::io("open", path, e))?;
    f.set_len(len)
        .map_err(|e| ThlError::io("truncate", path, e))?;
    f.sync_all().map_err(|e| ThlError::io("fsync", path, e))
}

/// fsyncs a directory so created/removed names are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ThlError::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_rules() {
        let inc = DecodeError::Incomplete { needed: 9, have: 3 };
        assert!(is_torn_tail(&inc, None, 100, 103, false));
        let crc = DecodeError::BadCrc {
            stored: 1,
            computed: 2,
        };
        // Last record, ends at EOF: torn.
        assert!(is_torn_tail(&crc, Some(88), 100, 200, false));
        // Followed by more data: corruption.
        assert!(!is_torn_tail(&crc, Some(88), 100, 300, false));
        // Zero fill is always a tail.
        assert!(is_torn_tail(
            &DecodeError::BadLength(0),
            Some(0),
            100,
            300,
            true
        ));
        assert!(!is_torn_tail(
            &DecodeError::BadLength(3),
            Some(3),
            100,
            300,
            false
        ));
        let v = DecodeError::UnsupportedVersion {
            kind: "record",
            found: 9,
            supported: 1,
        };
        assert!(!is_torn_tail(&v, Some(88), 100, 200, false));
    }
}
