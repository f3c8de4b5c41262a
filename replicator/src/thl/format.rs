//! The THL on-disk format: segment file header and record encoding.
//!
//! Bytes enter as [`ThlEvent`]s through [`encode_record`] (the writer) and
//! leave as events through [`decode_record`] (readers, recovery, the fuzz
//! target). Nothing here does IO.
//!
//! # Files
//!
//! A THL directory holds segment files `thl.data.0000000001`,
//! `thl.data.0000000002`, … (ten zero-padded digits, increasing; purge removes
//! the lowest) and the lock file `thl.lock`. A segment starts with a 32-byte
//! header followed by records. A segment only ever starts at a transaction
//! boundary (its first record has `fragno == 0`), so the fragments of one
//! transaction never span two files, and `base seqno` is the seqno of the
//! first record. All integers are little-endian.
//!
//! ```text
//! segment header (32 bytes)
//!  0               6       8               16              24      28      32
//!  +---------------+-------+---------------+---------------+-------+-------+
//!  | "CBTHL\0"     | fmt   | base seqno    | created       | rsvd  | crc   |
//!  | magic         | u16=1 | u64           | i64 µs (UTC)  | u32=0 | u32   |
//!  +---------------+-------+---------------+---------------+-------+-------+
//!  crc = CRC32C of bytes 0..28
//!
//! record (len + 12 bytes)
//!  0       4       8   9   10  12      16      24      32      40      48           48+n    52+n
//!  +-------+-------+---+---+---+-------+-------+-------+-------+-------+------------+-------+
//!  | len   | crc   |ver|flg|rsv|fragno | seqno | epoch |src_ts |ext_ts | body       | len   |
//!  | u32   | u32   |u8 |u8 |u16|u32    | u64   | u64   |i64 µs |i64 µs | n bytes    | u32   |
//!  +-------+-------+---+---+---+-------+-------+-------+-------+-------+------------+-------+
//!  len = 40 + n (bytes from `ver` to the end of body); crc = CRC32C of those
//!  len bytes; flg bit 0 = last_frag, other bits 0; rsv = 0; the trailing
//!  len repeats the first so the last record of a file can be found from
//!  its end. body = postcard(eventid, source_id, shard, metadata, changes)
//!  of the types in `event.rs`.
//! ```
//!
//! Versions: the segment header carries the file format version
//! ([`FORMAT_VERSION`]) and each record its record version
//! ([`RECORD_VERSION`]); a reader meeting a higher version refuses with
//! [`DecodeError::UnsupportedVersion`] instead of misreading.

use crate::thl::event::{Change, ThlEvent};
use serde::{Deserialize, Serialize};

/// Magic bytes at the start of every segment.
pub const MAGIC: &[u8; 6] = b"CBTHL\0";
/// Segment file format version written and read by this build.
pub const FORMAT_VERSION: u16 = 1;
/// Record version written and read by this build.
pub const RECORD_VERSION: u8 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Bytes before the body: len, crc and the fixed header fields.
pub const RECORD_PREFIX_LEN: usize = 48;
/// Bytes of a record beyond `len`: leading len, crc, trailing len.
pub const RECORD_OVERHEAD: u64 = 12;
/// Fixed header fields counted in `len` (ver through ext_ts).
pub const FIXED_LEN: u32 = 40;
/// Largest accepted `len` (1 GiB, MariaDB's largest packet).
pub const MAX_RECORD_LEN: u32 = 1 << 30;

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version of the file.
    pub version: u16,
    /// Seqno of the first record in the file.
    pub base_seqno: u64,
    /// Creation time, µs since the Unix epoch.
    pub created_us: i64,
}

/// Why a header or record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or record needs.
    #[error("incomplete: need {needed} bytes, have {have}")]
    Incomplete {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        have: u64,
    },
    /// Wrong magic bytes.
    #[error("bad magic (not a THL segment)")]
    BadMagic,
    /// A length outside `40..=MAX_RECORD_LEN`.
    #[error("bad record length {0}")]
    BadLength(u32),
    /// Checksum mismatch.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// CRC stored on disk.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// Trailing length differs from the leading one.
    #[error("trailing length {trailer} differs from leading length {len}")]
    BadTrailer {
        /// Leading length.
        len: u32,
        /// Trailing length.
        trailer: u32,
    },
    /// A version newer than this build reads.
    #[error("unsupported {kind} version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// `segment format` or `record`.
        kind: &'static str,
        /// Found on disk.
        found: u16,
        /// Supported by this build.
        supported: u16,
    },
    /// Checksummed but malformed content (reserved bits, body encoding).
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// Encodes a segment header.
pub fn encode_segment_header(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    b[0..6].copy_from_slice(MAGIC);
    b[6..8].copy_from_slice(&h.version.to_le_bytes());
    b[8..16].copy_from_slice(&h.base_seqno.to_le_bytes());
    b[16..24].copy_from_slice(&h.created_us.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and checks a segment header from the first 32 bytes of `b`.
pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, DecodeError> {
    let b = b
        .get(..SEGMENT_HEADER_LEN as usize)
        .ok_or(DecodeError::Incomplete {
            needed: SEGMENT_HEADER_LEN,
            have: b.len() as u64,
        })?;
    if &b[0..6] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let stored = u32_at(b, 28);
    let computed = crc32c::crc32c(&b[0..28]);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let version = u16::from_le_bytes([b[6], b[7]]);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            kind: "segment format",
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(SegmentHeader {
        version,
        base_seqno: u64_at(b, 8),
        created_us: u64_at(b, 16) as i64,
    })
}

/// The fixed header fields of a record, readable without decoding the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// `len` field: bytes from `ver` to the end of the body.
    pub len: u32,
    /// Transaction seqno.
    pub seqno: u64,
    /// Fragment number.
    pub fragno: u32,
    /// Final fragment of the transaction.
    pub last_frag: bool,
    /// Epoch.
    pub epoch: u64,
    /// Source commit time, µs.
    pub source_tstamp: i64,
    /// Extract time, µs.
    pub extract_tstamp: i64,
}

impl RecordMeta {
    /// Total bytes of the record on disk.
    pub fn disk_len(&self) -> u64 {
        u64::from(self.len) + RECORD_OVERHEAD
    }
}

#[derive(Serialize)]
struct BodyRef<'a> {
    eventid: &'a str,
    source_id: &'a str,
    shard: &'a str,
    metadata: &'a [(String, String)],
    changes: &'a [Change],
}

#[derive(Deserialize)]
struct BodyOwned {
    eventid: String,
    source_id: String,
    shard: String,
    metadata: Vec<(String, String)>,
    changes: Vec<Change>,
}

/// Size in bytes of the postcard encoding of one change (for fragmenting).
pub fn change_size(c: &Change) -> usize {
    postcard::serialize_with_flavor(c, postcard::ser_flavors::Size::default()).unwrap_or(0)
}

/// Appends the record for `ev` to `out`; returns its size on disk.
/// On error `out` is left as it was.
pub fn encode_record(ev: &ThlEvent, out: &mut Vec<u8>) -> Result<usize, String> {
    encode_fragment(ev, ev.fragno, ev.last_frag, &ev.changes, out)
}

/// Appends a record with the header fields of `ev` but the given fragment
/// number, last-fragment flag and changes (fragmenting without copying).
pub fn encode_fragment(
    ev: &ThlEvent,
    fragno: u32,
    last_frag: bool,
    changes: &[Change],
    out: &mut Vec<u8>,
) -> Result<usize, String> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_PREFIX_LEN]);
    let body = BodyRef {
        eventid: &ev.eventid,
        source_id: &ev.source_id,
        shard: &ev.shard,
        metadata: &ev.metadata,
        changes,
    };
    if let Err(e) = postcard::to_io(&body, &mut *out) {
        out.truncate(start);
        return Err(e.to_string());
    }
    let len = out.len() - start - 8;
    let len32 = match u32::try_from(len) {
        Ok(l) if l <= MAX_RECORD_LEN => l,
        _ => {
            out.truncate(start);
            return Err(format!(
                "record of {len} bytes exceeds the {MAX_RECORD_LEN}-byte limit"
            ));
        }
    };
    let r = &mut out[start..];
    r[0..4].copy_from_slice(&len32.to_le_bytes());
    r[8] = RECORD_VERSION;
    r[9] = u8::from(last_frag);
    r[10..12].copy_from_slice(&0u16.to_le_bytes());
    r[12..16].copy_from_slice(&fragno.to_le_bytes());
    r[16..24].copy_from_slice(&ev.seqno.to_le_bytes());
    r[24..32].copy_from_slice(&ev.epoch.to_le_bytes());
    r[32..40].copy_from_slice(&ev.source_tstamp.to_le_bytes());
    r[40..48].copy_from_slice(&ev.extract_tstamp.to_le_bytes());
    let crc = crc32c::crc32c(&r[8..]);
    r[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&len32.to_le_bytes());
    Ok(len + 12)
}

/// Reads `len` from the first 4 bytes of a record and checks its range.
pub fn record_len(prefix: &[u8]) -> Result<u32, DecodeError> {
    if prefix.len() < 4 {
        return Err(DecodeError::Incomplete {
            needed: 4,
            have: prefix.len() as u64,
        });
    }
    let len = u32_at(prefix, 0);
    if !(FIXED_LEN..=MAX_RECORD_LEN).contains(&len) {
        return Err(DecodeError::BadLength(len));
    }
    Ok(len)
}

/// Parses the fixed fields from the first 48 bytes of a record without
/// checking the CRC (used to skip through a segment quickly).
pub fn peek_meta(prefix: &[u8]) -> Result<RecordMeta, DecodeError> {
    let len = record_len(prefix)?;
    if prefix.len() < RECORD_PREFIX_LEN {
        return Err(DecodeError::Incomplete {
            needed: RECORD_PREFIX_LEN as u64,
            have: prefix.len() as u64,
        });
    }
    meta_from(prefix, len)
}

fn meta_from(r: &[u8], len: u32) -> Result<RecordMeta, DecodeError> {
    if r[8] != RECORD_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            kind: "record",
            found: u16::from(r[8]),
            supported: u16::from(RECORD_VERSION),
        });
    }
    if r[9] & !1 != 0 || r[10] != 0 || r[11] != 0 {
        return Err(DecodeError::Malformed(format!(
            "reserved bits set (flags {:#04x})",
            r[9]
        )));
    }
    Ok(RecordMeta {
        len,
        last_frag: r[9] & 1 == 1,
        fragno: u32_at(r, 12),
        seqno: u64_at(r, 16),
        epoch: u64_at(r, 24),
        source_tstamp: u64_at(r, 32) as i64,
        extract_tstamp: u64_at(r, 40) as i64,
    })
}

/// Checks a whole record at the start of `b` (length, CRC, trailer,
/// version) and returns its fixed fields.
pub fn check_record(b: &[u8]) -> Result<RecordMeta, DecodeError> {
    let len = record_len(b)?;
    let total = u64::from(len) + RECORD_OVERHEAD;
    if (b.len() as u64) < total {
        return Err(DecodeError::Incomplete {
            needed: total,
            have: b.len() as u64,
        });
    }
    let end = 8 + len as usize;
    let stored = u32_at(b, 4);
    let computed = crc32c::crc32c(&b[8..end]);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let trailer = u32_at(b, end);
    if trailer != len {
        return Err(DecodeError::BadTrailer { len, trailer });
    }
    meta_from(b, len)
}

/// Decodes one whole record at the start of `b`; returns the event and the
/// number of bytes it used. Never panics on any input.
pub fn decode_record(b: &[u8]) -> Result<(ThlEvent, usize), DecodeError> {
    let meta = check_record(b)?;
    let end = 8 + meta.len as usize;
    let ev = decode_body(&meta, &b[RECORD_PREFIX_LEN..end])?;
    Ok((ev, end + 4))
}

/// Decodes the postcard body of a checked record.
pub fn decode_body(meta: &RecordMeta, body: &[u8]) -> Result<ThlEvent, DecodeError> {
    let (b, rest): (BodyOwned, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} unexpected bytes after the body",
            rest.len()
        )));
    }
    Ok(ThlEvent {
        seqno: meta.seqno,
        fragno: meta.fragno,
        last_frag: meta.last_frag,
        epoch: meta.epoch,
        eventid: b.eventid,
        source_id: b.source_id,
        shard: b.shard,
        source_tstamp: meta.source_tstamp,
        extract_tstamp: meta.extract_tstamp,
        metadata: b.metadata,
        changes: b.changes,
    })
}

/// The eventid of a checked record's body, without decoding the changes
/// (eventid is the first body field).
pub fn peek_eventid(body: &[u8]) -> Result<&str, DecodeError> {
    postcard::take_from_bytes::<&str>(body)
        .map(|(s, _)| s)
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thl::event::Statement;

    fn ev() -> ThlEvent {
        let mut e = ThlEvent::new(7, 3, "mysql-bin.000001:0000000000000439;-1");
        e.source_id = "db1".into();
        e.changes.push(Change::Statement(Statement::new(
            "INSERT INTO t VALUES (1)",
        )));
        e
    }

    #[test]
    fn header_round_trips_and_rejects_newer_version() {
        let h = SegmentHeader {
            version: FORMAT_VERSION,
            base_seqno: 42,
            created_us: 1_700_000_000_000_000,
        };
        let mut b = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&b), Ok(h));
        b[6] = 2;
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_segment_header(&b),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
        assert!(matches!(
            decode_segment_header(&b[..10]),
            Err(DecodeError::Incomplete { .. })
        ));
    }

    #[test]
    fn record_round_trips_and_every_split_is_incomplete() {
        let e = ev();
        let mut buf = Vec::new();
        let n = encode_record(&e, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(decode_record(&buf).unwrap(), (e, n));
        for cut in 0..n {
            assert!(
                matches!(
                    decode_record(&buf[..cut]),
                    Err(DecodeError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        encode_record(&ev(), &mut buf).unwrap();
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(decode_record(&b).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn newer_record_version_is_refused() {
        let mut buf = Vec::new();
        encode_record(&ev(), &mut buf).unwrap();
        buf[8] = RECORD_VERSION + 1;
        let len = u32_at(&buf, 0) as usize;
        let crc = crc32c::crc32c(&buf[8..8 + len]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let e = decode_record(&buf).unwrap_err();
        assert!(
            e.to_string().contains("unsupported record version 2"),
            "{e}"
        );
    }
}
