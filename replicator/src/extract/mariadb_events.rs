//! MariaDB's own binlog events, which mysql_common leaves undecoded.
//!
//! Bytes enter as the event body (`Event::data()`: after the 19-byte
//! header, without the checksum) and leave as small structs:
//!
//! ```text
//! GTID (0xa2)            u64 seq_no | u32 domain_id | u8 flags
//!                        [u64 commit_id if flags & FL_GROUP_COMMIT_ID] [XA data…]
//! GTID_LIST (0xa3)       u32 count (low 28 bits) | count × (u32 domain, u32 server, u64 seq)
//! BINLOG_CHECKPOINT(0xa1) u32 name_len | name
//! ANNOTATE_ROWS (0xa0)   the statement text (whole body)
//! ```
//!
//! Compressed events (QUERY_COMPRESSED 0xa5, {WRITE,UPDATE,DELETE}_ROWS_COMPRESSED
//! v1 0xa6–0xa8 and v2 0xa9–0xab) keep their headers uncompressed and compress
//! the query text or the rows part: one byte `0x80 | lenlen`, `lenlen` bytes of
//! big-endian uncompressed length, then a zlib stream. [`decompress_event`]
//! rebuilds the plain event (type changed to 2 / 23–25 / 30–32, size fixed,
//! dummy checksum appended when the original had one) so mysql_common can
//! parse it like any other.

use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::{Event, FormatDescriptionEvent};
use std::io::Read;

/// Raw type code of ANNOTATE_ROWS.
pub const ANNOTATE_ROWS: u8 = 0xa0;
/// Raw type code of BINLOG_CHECKPOINT.
pub const BINLOG_CHECKPOINT: u8 = 0xa1;
/// Raw type code of the MariaDB GTID event.
pub const GTID: u8 = 0xa2;
/// Raw type code of GTID_LIST.
pub const GTID_LIST: u8 = 0xa3;
/// Raw type code of START_ENCRYPTION.
pub const START_ENCRYPTION: u8 = 0xa4;
/// Raw type code of QUERY_COMPRESSED.
pub const QUERY_COMPRESSED: u8 = 0xa5;
/// First compressed rows type (WRITE_ROWS_COMPRESSED_V1).
pub const ROWS_COMPRESSED_V1_FIRST: u8 = 0xa6;
/// Last compressed rows type (DELETE_ROWS_COMPRESSED, v2).
pub const ROWS_COMPRESSED_LAST: u8 = 0xab;

/// GTID flag: a single statement without BEGIN/COMMIT (DDL, non-transactional).
pub const FL_STANDALONE: u8 = 1;
/// GTID flag: a commit_id follows.
pub const FL_GROUP_COMMIT_ID: u8 = 2;
/// GTID flag: DDL.
pub const FL_DDL: u8 = 32;

/// A MariaDB GTID `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariaGtid {
    /// Replication domain.
    pub domain: u32,
    /// Originating server_id.
    pub server: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

impl std::fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl std::str::FromStr for MariaGtid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.trim().splitn(3, '-');
        let mut next = |what: &str| {
            it.next()
                .ok_or_else(|| format!("GTID '{s}' lacks the {what} part (want domain-server-seq)"))
        };
        let d = next("domain")?;
        let sv = next("server")?;
        let sq = next("seq")?;
        let bad = |p: &str| format!("GTID '{s}': '{p}' is not a number");
        Ok(MariaGtid {
            domain: d.parse().map_err(|_| bad(d))?,
            server: sv.parse().map_err(|_| bad(sv))?,
            seq: sq.parse().map_err(|_| bad(sq))?,
        })
    }
}

/// A decoded GTID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidEvent {
    /// The GTID (server from the event header).
    pub gtid: MariaGtid,
    /// GTID flags (`FL_*`).
    pub flags: u8,
}

impl GtidEvent {
    /// True for a transaction without BEGIN/COMMIT (ends after one statement).
    pub fn standalone(&self) -> bool {
        self.flags & FL_STANDALONE != 0
    }
}

fn short(what: &str, need: usize, have: usize) -> String {
    format!("{what} body is {have} bytes, needs at least {need}")
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

/// Parses a GTID event body; `server_id` comes from the event header.
pub fn parse_gtid(body: &[u8], server_id: u32) -> Result<GtidEvent, String> {
    if body.len() < 13 {
        return Err(short("GTID", 13, body.len()));
    }
    let seq = u64_at(body, 0).unwrap_or_default();
    let domain = u32_at(body, 8).unwrap_or_default();
    Ok(GtidEvent {
        gtid: MariaGtid {
            domain,
            server: server_id,
            seq,
        },
        flags: body[12],
    })
}

/// Parses a GTID_LIST event body.
pub fn parse_gtid_list(body: &[u8]) -> Result<Vec<MariaGtid>, String> {
    let n = u32_at(body, 0).ok_or_else(|| short("GTID_LIST", 4, body.len()))? & 0x0fff_ffff;
    let need = 4 + n as usize * 16;
    if body.len() < need {
        return Err(short("GTID_LIST", need, body.len()));
    }
    Ok((0..n as usize)
        .map(|i| {
            let at = 4 + i * 16;
            MariaGtid {
                domain: u32_at(body, at).unwrap_or_default(),
                server: u32_at(body, at + 4).unwrap_or_default(),
                seq: u64_at(body, at + 8).unwrap_or_default(),
            }
        })
        .collect())
}

/// Parses a BINLOG_CHECKPOINT body: the oldest binlog still needed for
/// crash recovery.
pub fn parse_binlog_checkpoint(body: &[u8]) -> Result<String, String> {
    let n = u32_at(body, 0).ok_or_else(|| short("BINLOG_CHECKPOINT", 4, body.len()))? as usize;
    let name = body
        .get(4..4 + n)
        .ok_or_else(|| short("BINLOG_CHECKPOINT", 4 + n, body.len()))?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// ANNOTATE_ROWS body: the statement that produced the following rows.
pub fn parse_annotate_rows(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// True for MariaDB's compressed query and rows events.
pub fn is_compressed(type_code: u8) -> bool {
    (QUERY_COMPRESSED..=ROWS_COMPRESSED_LAST).contains(&type_code)
}

/// Inflates a MariaDB compressed block (`0x80|lenlen`, length, zlib data).
pub fn uncompress_block(b: &[u8]) -> Result<Vec<u8>, String> {
    let first = *b.first().ok_or("empty compressed block")?;
    if first & 0xe0 != 0x80 {
        return Err(format!("bad compressed block header byte {first:#04x}"));
    }
    let lenlen = (first & 0x07) as usize;
    if lenlen == 0 || lenlen > 4 {
        return Err(format!("bad compressed length size {lenlen}"));
    }
    let lb = b
        .get(1..1 + lenlen)
        .ok_or("compressed block shorter than its header")?;
    let len = lb.iter().fold(0usize, |a, &x| (a << 8) | x as usize);
    let mut out = Vec::with_capacity(len.min(64 << 20));
    flate2::read::ZlibDecoder::new(&b[1 + lenlen..])
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zlib: {e}"))?;
    if out.len() != len {
        return Err(format!(
            "compressed block inflates to {} bytes, header says {len}",
            out.len()
        ));
    }
    Ok(out)
}

/// Reads a length-encoded integer at `at`; returns (value, bytes used).
fn lenenc(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    match first {
        0..=250 => Some((first as u64, 1)),
        252 => b
            .get(at + 1..at + 3)
            .map(|s| (u16::from_le_bytes([s[0], s[1]]) as u64, 3)),
        253 => b
            .get(at + 1..at + 4)
            .map(|s| (u32::from_le_bytes([s[0], s[1], s[2], 0]) as u64, 4)),
        254 => u64_at(b, at + 1).map(|v| (v, 9)),
        _ => None,
    }
}

/// Rebuilds the uncompressed form of a MariaDB compressed event so that
/// mysql_common can parse it. `fde` is the current format description.
pub fn decompress_event(ev: &Event, fde: &FormatDescriptionEvent<'_>) -> Result<Event, String> {
    let h = ev.header();
    let t = h.event_type_raw();
    let body = ev.data();
    let (new_type, split) = if t == QUERY_COMPRESSED {
        let post = fde.get_event_type_header_length(EventType::QUERY_EVENT) as usize;
        if body.len() < post.max(13) {
            return Err(short("QUERY_COMPRESSED", post.max(13), body.len()));
        }
        let schema_len = body[8] as usize;
        let status_len = u16::from_le_bytes([body[11], body[12]]) as usize;
        // status vars, schema, NUL, then the compressed query
        (
            EventType::QUERY_EVENT as u8,
            post.max(13) + status_len + schema_len + 1,
        )
    } else if (ROWS_COMPRESSED_V1_FIRST..=ROWS_COMPRESSED_LAST).contains(&t) {
        let v1 = t < 0xa9;
        let plain = if v1 {
            EventType::WRITE_ROWS_EVENT_V1 as u8 + (t - 0xa6)
        } else {
            EventType::WRITE_ROWS_EVENT as u8 + (t - 0xa9)
        };
        let is_update = plain == EventType::UPDATE_ROWS_EVENT_V1 as u8
            || plain == EventType::UPDATE_ROWS_EVENT as u8;
        let mut at = 8; // table id (6) + flags (2)
        if !v1 {
            let var = body
                .get(8..10)
                .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
                .ok_or_else(|| short("ROWS_COMPRESSED", 10, body.len()))?;
            at += var.max(2);
        }
        let (width, used) = lenenc(body, at).ok_or("rows event width missing")?;
        at += used;
        let bitmap = (width as usize).div_ceil(8);
        at += bitmap * if is_update { 2 } else { 1 };
        (plain, at)
    } else {
        return Err(format!("event type {t:#04x} is not a compressed event"));
    };
    let head = body
        .get(..split)
        .ok_or_else(|| short("compressed event", split, body.len()))?;
    let inflated = uncompress_block(&body[split..])?;
    let checksum = ev.checksum().is_some();
    let size = 19 + head.len() + inflated.len() + if checksum { 4 } else { 0 };
    let size32 = u32::try_from(size).map_err(|_| "uncompressed event exceeds 4 GiB".to_string())?;
    let mut raw = Vec::with_capacity(size);
    raw.extend_from_slice(&h.timestamp().to_le_bytes());
    raw.push(new_type);
    raw.extend_from_slice(&h.server_id().to_le_bytes());
    raw.extend_from_slice(&size32.to_le_bytes());
    raw.extend_from_slice(&h.log_pos().to_le_bytes());
    raw.extend_from_slice(&h.flags_raw().to_le_bytes());
    raw.extend_from_slice(head);
    raw.extend_from_slice(&inflated);
    if checksum {
        raw.extend_from_slice(&[0; 4]);
    }
    Event::read(ev.fde(), &raw[..]).map_err(|e| format!("rebuilt event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gtid_roundtrip_text() {
        let g: MariaGtid = "0-1-42".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            g,
            MariaGtid {
                domain: 0,
                server: 1,
                seq: 42
            }
        );
        assert_eq!(g.to_string(), "0-1-42");
        assert!("0-1".parse::<MariaGtid>().is_err());
        assert!("a-1-2".parse::<MariaGtid>().is_err());
    }

    #[test]
    fn gtid_body() {
        let mut b = 77u64.to_le_bytes().to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.push(FL_STANDALONE | FL_DDL);
        let g = parse_gtid(&b, 9).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.gtid.to_string(), "3-9-77");
        assert!(g.standalone());
        for cut in 0..b.len() {
            assert!(parse_gtid(&b[..cut], 9).is_err());
        }
    }

    #[test]
    fn gtid_list_body_and_short_reads() {
        let mut b = 2u32.to_le_bytes().to_vec();
        for (d, s, q) in [(0u32, 1u32, 5u64), (1, 2, 7)] {
            b.extend_from_slice(&d.to_le_bytes());
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&q.to_le_bytes());
        }
        let l = parse_gtid_list(&b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].to_string(), "1-2-7");
        for cut in 0..b.len() {
            assert!(parse_gtid_list(&b[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn checkpoint_body() {
        let mut b = 4u32.to_le_bytes().to_vec();
        b.extend_from_slice(b"abcd");
        assert_eq!(parse_binlog_checkpoint(&b).as_deref(), Ok("abcd"));
        assert!(parse_binlog_checkpoint(&b[..6]).is_err());
    }

    #[test]
    fn compressed_block() {
        let data = b"INSERT INTO t VALUES (1), (2), (3), (4), (5)".repeat(10);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
        let zd = z.finish().unwrap_or_else(|e| panic!("{e}"));
        let len = data.len() as u32;
        let mut block = vec![0x80 | 2, (len >> 8) as u8, len as u8];
        block.extend_from_slice(&zd);
        assert_eq!(uncompress_block(&block).as_deref(), Ok(&data[..]));
        for cut in 0..block.len() {
            assert!(uncompress_block(&block[..cut]).is_err(), "cut {cut}");
        }
        assert!(uncompress_block(&[0x10, 1, 2]).is_err());
    }
}
