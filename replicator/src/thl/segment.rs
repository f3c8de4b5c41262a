//! Segment files and the in-memory segment index.
//!
//! File names and headers enter here from the THL directory; out come
//! [`SegmentInfo`]s (one per file: number, base seqno, last seqno, size) and
//! [`RecordCursor`]s that step through the records of one file. The index is
//! built at open from each file's header and its last record (found through
//! the trailing length, see `format.rs`), so opening a large log reads a few
//! bytes per file plus the final segment, never every record.
//!
//! Seek within a segment is a forward scan from the segment start that reads
//! only the 48-byte record prefixes and skips bodies (segments are ~100 MB by
//! default; a scan is tens of milliseconds from the page cache). A sparse
//! per-segment offset index can replace it later without a format change.

use crate::thl::error::{Result, ThlError};
use crate::thl::event::ThlEvent;
use crate::thl::format::{
    self, DecodeError, RecordMeta, SegmentHeader, RECORD_OVERHEAD, RECORD_PREFIX_LEN,
    SEGMENT_HEADER_LEN,
};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Name of the lock file in a THL directory.
pub const LOCK_FILE: &str = "thl.lock";
const PREFIX: &str = "thl.data.";

/// `thl.data.0000000001` for segment number 1.
pub fn segment_file_name(number: u64) -> String {
    format!("{PREFIX}{number:010}")
}

/// The segment number of a file name, if it is a segment file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Segment files in `dir`, sorted by number. A missing directory is empty.
pub fn list_segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ThlError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ThlError::io("list", dir, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One segment file as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// File number (the digits of the name).
    pub number: u64,
    /// Full path.
    pub path: PathBuf,
    /// Seqno of the first record (or of the next record, when empty).
    pub base_seqno: u64,
    /// Creation time from the header, µs since the Unix epoch.
    pub created_us: i64,
    /// Seqno of the last whole transaction; `None` when the file holds none.
    pub last_seqno: Option<u64>,
    /// Bytes of valid data (header + whole transactions).
    pub size: u64,
    /// Last modification time of the file.
    pub modified: SystemTime,
}

impl SegmentInfo {
    /// File name without the directory.
    pub fn file_name(&self) -> String {
        segment_file_name(self.number)
    }

    /// True when `seqno` is stored in this segment.
    pub fn contains(&self, seqno: u64) -> bool {
        self.last_seqno
            .is_some_and(|last| seqno >= self.base_seqno && seqno <= last)
    }
}

/// The ordered segments of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Segments by increasing number; seqno ranges are contiguous.
    pub segments: Vec<SegmentInfo>,
}

impl SegmentIndex {
    /// Lowest stored seqno.
    pub fn first_seqno(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.last_seqno.is_some())
            .map(|s| s.base_seqno)
    }

    /// Highest stored seqno (of a whole transaction).
    pub fn last_seqno(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(|s| s.last_seqno)
    }

    /// Position in `segments` of the segment holding `seqno` (O(log n)).
    pub fn locate(&self, seqno: u64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.base_seqno <= seqno);
        // Several segments may share a base when some are empty; the one
        // holding the seqno is the last non-empty one at or before `i`.
        (0..i).rev().find(|&j| self.segments[j].contains(seqno))
    }

    /// Position of the first segment with records at or after `seqno`.
    pub fn locate_from(&self, seqno: u64) -> Option<usize> {
        if let Some(i) = self.locate(seqno) {
            return Some(i);
        }
        self.segments
            .iter()
            .position(|s| s.last_seqno.is_some() && s.base_seqno > seqno)
    }
}

/// Reads and checks the header of a segment file; returns it and the file length.
pub fn read_header(path: &Path) -> Result<(SegmentHeader, u64)> {
    let mut f = File::open(path).map_err(|e| ThlError::io("open", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| ThlError::io("stat", path, e))?
        .len();
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    let n = read_up_to(&mut f, &mut b).map_err(|e| ThlError::io("read", path, e))?;
    let h = format::decode_segment_header(&b[..n]).map_err(|e| header_error(path, e))?;
    Ok((h, len))
}

/// Maps a header decode error to a THL error naming the file.
pub fn header_error(path: &Path, e: DecodeError) -> ThlError {
    match e {
        DecodeError::UnsupportedVersion {
            kind,
            found,
            supported,
        } => ThlError::UnsupportedVersion {
            file: path.to_path_buf(),
            offset: 0,
            kind,
            found,
            supported,
        },
        e => ThlError::corrupt(path, 0, format!("segment header: {e}")),
    }
}

/// Maps a record decode error at `offset` to a THL error naming the file.
pub fn record_error(path: &Path, offset: u64, e: DecodeError) -> ThlError {
    match e {
        DecodeError::UnsupportedVersion {
            kind,
            found,
            supported,
        } => ThlError::UnsupportedVersion {
            file: path.to_path_buf(),
            offset,
            kind,
            found,
            supported,
        },
        e => ThlError::corrupt(path, offset, format!("record: {e}")),
    }
}

/// The fixed fields of the last record of a sealed segment, found from the
/// trailing length; `None` when the file has no records.
pub fn read_last_meta(path: &Path, file_len: u64) -> Result<Option<(u64, RecordMeta)>> {
    if file_len == SEGMENT_HEADER_LEN {
        return Ok(None);
    }
    if file_len < SEGMENT_HEADER_LEN + RECORD_OVERHEAD + u64::from(format::FIXED_LEN) {
        return Err(ThlError::corrupt(
            path,
            SEGMENT_HEADER_LEN,
            "file too short for a record",
        ));
    }
    let mut f = File::open(path).map_err(|e| ThlError::io("open", path, e))?;
    let mut t = [0u8; 4];
    read_at(&mut f, file_len - 4, &mut t).map_err(|e| ThlError::io("read", path, e))?;
    let len = u64::from(u32::from_le_bytes(t));
    let start = file_len
        .checked_sub(len + RECORD_OVERHEAD)
        .filter(|&s| s >= SEGMENT_HEADER_LEN)
        .ok_or_else(|| {
            ThlError::corrupt(
                path,
                file_len - 4,
                format!("trailing record length {len} does not fit the file"),
            )
        })?;
    let mut p = [0u8; RECORD_PREFIX_LEN];
    read_at(&mut f, start, &mut p).map_err(|e| ThlError::io("read", path, e))?;
    let meta = format::peek_meta(&p).map_err(|e| record_error(path, start, e))?;
    if u64::from(meta.len) != len {
        return Err(ThlError::corrupt(
            path,
            start,
            format!(
                "last record: leading length {} differs from trailing length {len}",
                meta.len
            ),
        ));
    }
    Ok(Some((start, meta)))
}

fn read_at(f: &mut File, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(buf)
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One step of a [`RecordCursor`].
#[derive(Debug)]
pub enum Step {
    /// A record at `offset`.
    Record {
        /// Offset of the record in the file.
        offset: u64,
        /// Its fixed fields.
        meta: RecordMeta,
    },
    /// Clean end: the cursor reached its end offset.
    End,
    /// A record at `offset` that does not decode (`len` as declared, if read).
    Bad {
        /// Offset of the bad record.
        offset: u64,
        /// Declared length, when the first 4 bytes were there.
        declared_len: Option<u32>,
        /// Why.
        err: DecodeError,
    },
}

/// Records longer than this are checked against the file's real length
/// (one `fstat`) before a buffer is sized for them.
const LARGE_RECORD: u64 = 1 << 20;

/// Steps through the records of one segment file between two offsets.
pub struct RecordCursor {
    path: PathBuf,
    file: BufReader<File>,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
}

impl RecordCursor {
    /// A cursor over `[start, end)` of the file at `path`.
    pub fn open(path: &Path, start: u64, end: u64) -> Result<Self> {
        let f = File::open(path).map_err(|e| ThlError::io("open", path, e))?;
        let mut file = BufReader::with_capacity(1 << 20, f);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| ThlError::io("seek", path, e))?;
        Ok(RecordCursor {
            path: path.to_path_buf(),
            file,
            pos: start,
            end,
            buf: Vec::new(),
        })
    }

    /// The file this cursor reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the end (for tails that grow).
    pub fn set_end(&mut self, end: u64) {
        self.end = end;
    }

    fn fill(&mut self, n: usize) -> Result<()> {
        self.buf.resize(n, 0);
        self.file
            .read_exact(&mut self.buf)
            .map_err(|e| ThlError::io("read", &self.path, e))
    }

    fn bad(&mut self, declared_len: Option<u32>, err: DecodeError) -> Result<Step> {
        // Re-read from the bad record next time, so a caller may retry.
        self.file
            .seek(SeekFrom::Start(self.pos))
            .map_err(|e| ThlError::io("seek", &self.path, e))?;
        Ok(Step::Bad {
            offset: self.pos,
            declared_len,
            err,
        })
    }

    /// Next record, fully read and checked (CRC, trailer, version); its
    /// bytes stay available to [`RecordCursor::decode`].
    pub fn next_checked(&mut self) -> Result<Step> {
        let avail = self.end.saturating_sub(self.pos);
        if avail == 0 {
            return Ok(Step::End);
        }
        if avail < 4 {
            self.fill(avail as usize)?;
            return self.bad(
                None,
                DecodeError::Incomplete {
                    needed: 4,
                    have: avail,
                },
            );
        }
        self.fill(4)?;
        let len = match format::record_len(&self.buf) {
            Ok(l) => l,
            Err(e) => {
                let l = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                return self.bad(Some(l), e);
            }
        };
        let total = u64::from(len) + RECORD_OVERHEAD;
        // `end` is the caller's idea of the file's size; for a large record
        // also ask the file itself before sizing a buffer by its length.
        let avail = if total > LARGE_RECORD {
            let real = self
                .file
                .get_ref()
                .metadata()
                .map_err(|e| ThlError::io("stat", &self.path, e))?
                .len();
            avail.min(real.saturating_sub(self.pos))
        } else {
            avail
        };
        if total > avail {
            return self.bad(
                Some(len),
                DecodeError::Incomplete {
                    needed: total,
                    have: avail,
                },
            );
        }
        self.buf.resize(total as usize, 0);
        self.file
            .read_exact(&mut self.buf[4..])
            .map_err(|e| ThlError::io("read", &self.path, e))?;
        match format::check_record(&self.buf) {
            Ok(meta) => {
                let offset = self.pos;
                self.pos += total;
                Ok(Step::Record { offset, meta })
            }
            Err(e) => self.bad(Some(len), e),
        }
    }

    /// Decodes the record last returned by [`RecordCursor::next_checked`].
    pub fn decode(&self, offset: u64, meta: &RecordMeta) -> Result<ThlEvent> {
        let end = 8 + meta.len as usize;
        let body = self
            .buf
            .get(RECORD_PREFIX_LEN..end)
            .ok_or_else(|| ThlError::corrupt(&self.path, offset, "record buffer too short"))?;
        format::decode_body(meta, body).map_err(|e| record_error(&self.path, offset, e))
    }

    /// The eventid of the record last returned by
    /// [`RecordCursor::next_checked`], without decoding its changes.
    pub fn eventid(&self, offset: u64, meta: &RecordMeta) -> Result<&str> {
        let end = 8 + meta.len as usize;
        let body = self
            .buf
            .get(RECORD_PREFIX_LEN..end)
            .ok_or_else(|| ThlError::corrupt(&self.path, offset, "record buffer too short"))?;
        format::peek_eventid(body).map_err(|e| record_error(&self.path, offset, e))
    }

    /// Next record's fixed fields only; the body is skipped unread and
    /// unchecked (for seeking).
    pub fn next_meta(&mut self) -> Result<Step> {
        let avail = self.end.saturating_sub(self.pos);
        if avail == 0 {
            return Ok(Step::End);
        }
        if avail < RECORD_PREFIX_LEN as u64 {
            return self.bad(
                None,
                DecodeError::Incomplete {
                    needed: RECORD_PREFIX_LEN as u64,
                    have: avail,
                },
            );
        }
        self.fill(RECORD_PREFIX_LEN)?;
        let meta = match format::peek_meta(&self.buf) {
            Ok(m) => m,
            Err(e) => return self.bad(None, e),
        };
        if meta.disk_len() > avail {
            return self.bad(
                Some(meta.len),
                DecodeError::Incomplete {
                    needed: meta.disk_len(),
                    have: avail,
                },
            );
        }
        let skip = meta.disk_len() - RECORD_PREFIX_LEN as u64;
        self.file
            .seek_relative(skip as i64)
            .map_err(|e| ThlError::io("seek", &self.path, e))?;
        let offset = self.pos;
        self.pos += meta.disk_len();
        Ok(Step::Record { offset, meta })
    }

    /// Repositions to `offset` (a record start).
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| ThlError::io("seek", &self.path, e))?;
        self.pos = offset;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thl::format::{encode_segment_header, SegmentHeader};

    #[test]
    fn a_record_length_beyond_the_file_is_bad_before_allocating() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(segment_file_name(1));
        let mut b = encode_segment_header(&SegmentHeader {
            version: 1,
            base_seqno: 0,
            created_us: 0,
        })
        .to_vec();
        b.extend_from_slice(&(512u32 << 20).to_le_bytes()); // claims 512 MiB
        b.extend_from_slice(&[0u8; 60]);
        std::fs::write(&path, &b).expect("write");
        // the caller believes the file is 1 GiB long: the file says otherwise
        let mut cur = RecordCursor::open(&path, SEGMENT_HEADER_LEN, 1 << 30).expect("open");
        match cur.next_checked().expect("step") {
            Step::Bad {
                offset,
                declared_len,
                err: DecodeError::Incomplete { needed, have },
            } => {
                assert_eq!(offset, SEGMENT_HEADER_LEN);
                assert_eq!(declared_len, Some(512 << 20));
                assert_eq!(needed, (512 << 20) + RECORD_OVERHEAD);
                assert_eq!(have, 64);
            }
            other => panic!("{other:?}"),
        }
        assert!(cur.buf.capacity() < 1 << 20, "no buffer sized by the claim");
    }
}
