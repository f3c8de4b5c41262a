//! Reading binlog files from disk (MySQL 8 recordings, MariaDB files,
//! benchmarks) without trusting their bytes.
//!
//! A file path enters [`BinlogFileReader::open`]; binlog [`Event`]s leave
//! its iterator, with TRANSACTION_PAYLOAD (MySQL 8 zstd compression)
//! expanded into the events it holds. mysql_common's own `BinlogFile`
//! panics on a truncated event body, so this reader frames every event
//! itself (19-byte header, `event_size` at offset 9) and hands mysql_common
//! only complete events; a short file gives [`ExtractError::Truncated`].
//! An event's `event_size` is checked against what the file really holds
//! after it (its length at open) before a buffer is sized by it, so a
//! corrupt size cannot make the reader allocate gigabytes; a
//! TRANSACTION_PAYLOAD decompresses to at most [`MAX_PAYLOAD`] bytes.
//! [`extract_file`] runs a whole file through a [`Pipeline`].

use super::{BinlogPos, ExtractError, Identity, Pipeline, Result, Step};
use crate::thl::ThlEvent;
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
const HEADER_LEN: usize = 19;

/// Largest decompressed TRANSACTION_PAYLOAD accepted (MySQL's own limit on
/// a replicated transaction, `max_allowed_packet`, is at most 1 GiB).
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// Iterator over the events of one binlog file.
pub struct BinlogFileReader {
    name: String,
    input: BufReader<File>,
    /// The file's length when it was opened.
    file_len: u64,
    offset: u64,
    esr: EventStreamReader,
    inner: VecDeque<Event>,
    failed: bool,
    buf: Vec<u8>,
}

impl BinlogFileReader {
    /// Opens a file and checks its magic header.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let io = |source| ExtractError::Io {
            file: name.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 4];
        let got = read_full(&mut input, &mut magic).map_err(io)?;
        if got < 4 || magic != MAGIC {
            return Err(ExtractError::Decode {
                position: format!("{name}:0"),
                what: "not a binlog file (bad magic header)".into(),
            });
        }
        Ok(BinlogFileReader {
            name,
            input,
            file_len,
            offset: 4,
            esr: EventStreamReader::new(BinlogVersion::Version4),
            inner: VecDeque::new(),
            failed: false,
            buf: Vec::new(),
        })
    }

    /// Byte offset of the next event in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn truncated(&self, what: String) -> ExtractError {
        ExtractError::Truncated {
            file: self.name.clone(),
            offset: self.offset,
            what,
        }
    }

    fn next_event(&mut self) -> Result<Option<Event>> {
        if let Some(ev) = self.inner.pop_front() {
            return Ok(Some(ev));
        }
        let io = |name: &str, source| ExtractError::Io {
            file: name.to_string(),
            source,
        };
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.input, &mut header).map_err(|e| io(&self.name, e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(self.truncated(format!("event header has {got} of {HEADER_LEN} bytes")));
        }
        let size = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as usize;
        if size < HEADER_LEN {
            return Err(ExtractError::Decode {
                position: format!("{}:{}", self.name, self.offset),
                what: format!("event size {size} is smaller than its header"),
            });
        }
        let left = self.file_len.saturating_sub(self.offset);
        if size as u64 > left {
            return Err(self.truncated(format!(
                "event of type {} claims {size} bytes, the file has {left} from here",
                header[4]
            )));
        }
        self.buf.clear();
        self.buf.extend_from_slice(&header);
        self.buf.resize(size, 0);
        let got = read_full(&mut self.input, &mut self.buf[HEADER_LEN..])
            .map_err(|e| io(&self.name, e))?;
        if got < size - HEADER_LEN {
            return Err(self.truncated(format!(
                "event of type {} needs {size} bytes, the file has {}",
                header[4],
                HEADER_LEN + got
            )));
        }
        let at = self.offset;
        let ev = self
            .esr
            .read(&self.buf[..])
            .map_err(|e| ExtractError::Decode {
                position: format!("{}:{at}", self.name),
                what: e.to_string(),
            })?
            .ok_or_else(|| self.truncated("empty event".into()))?;
        self.offset += size as u64;
        if ev.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            self.expand_payload(&ev, at)?;
        }
        Ok(Some(ev))
    }

    /// Decompresses a TRANSACTION_PAYLOAD and queues the events inside.
    fn expand_payload(&mut self, ev: &Event, at: u64) -> Result<()> {
        let bad = |what: String| ExtractError::Decode {
            position: format!("{}:{at}", self.name),
            what,
        };
        let tpe: TransactionPayloadEvent<'_> = ev
            .read_event()
            .map_err(|e| bad(format!("TRANSACTION_PAYLOAD: {e}")))?;
        let mut data = Vec::new();
        tpe.decompressed()
            .and_then(|r| r.take(MAX_PAYLOAD + 1).read_to_end(&mut data))
            .map_err(|e| bad(format!("TRANSACTION_PAYLOAD decompression: {e}")))?;
        if data.len() as u64 > MAX_PAYLOAD {
            return Err(bad(format!(
                "TRANSACTION_PAYLOAD decompresses to more than {MAX_PAYLOAD} bytes"
            )));
        }
        let mut i = 0;
        while i < data.len() {
            let h = data
                .get(i..i + HEADER_LEN)
                .ok_or_else(|| bad(format!("payload event at {i} has a short header")))?;
            let size = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
            if size < HEADER_LEN || i + size > data.len() {
                return Err(bad(format!(
                    "payload event at {i} claims {size} bytes, {} left",
                    data.len() - i
                )));
            }
            let inner = self
                .esr
                .read_decompressed(&data[i..i + size])
                .map_err(|e| bad(format!("payload event at {i}: {e}")))?;
            if let Some(inner) = inner {
                self.inner.push_back(inner);
            }
            i += size;
        }
        Ok(())
    }
}

/// Reads until `buf` is full or EOF; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Iterator for BinlogFileReader {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_event() {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Extracts every transaction of a binlog file, numbering from
/// `first_seqno`, calling `sink` for each. Columns without metadata in the
/// file get empty names (there is no server to ask). Returns the number of
/// events read.
pub fn extract_file(
    path: &Path,
    ident: Identity,
    first_seqno: u64,
    mut sink: impl FnMut(ThlEvent) -> Result<()>,
) -> Result<u64> {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut p = Pipeline::new(ident, first_seqno, BinlogPos::new(file, 4), false);
    let mut n = 0;
    for ev in BinlogFileReader::open(path)? {
        let ev = ev?;
        n += 1;
        match p.on_event(&ev)? {
            Step::Transaction(tx) => sink(*tx)?,
            Step::NeedColumns { table_id, .. } => p.resolve_columns(table_id, None)?,
            Step::Nothing | Step::Heartbeat => {}
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binlog file whose one event header claims `size` bytes.
    fn file_with_event_size(size: u32, body: usize) -> tempfile::NamedTempFile {
        let mut b = MAGIC.to_vec();
        let mut h = [0u8; HEADER_LEN];
        h[4] = 0x0f; // FORMAT_DESCRIPTION
        h[9..13].copy_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&h);
        b.extend(std::iter::repeat_n(0u8, body));
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), &b).expect("write");
        f
    }

    #[test]
    fn an_event_size_beyond_the_file_is_refused_before_allocating() {
        // 4 GiB announced, 10 bytes present: refused from the header alone
        let f = file_with_event_size(u32::MAX, 10);
        let mut r = BinlogFileReader::open(f.path()).expect("open");
        match r.next() {
            Some(Err(ExtractError::Truncated { file, offset, what })) => {
                assert_eq!(offset, 4);
                assert!(file.contains(&f.path().display().to_string()), "{file}");
                assert!(what.contains("4294967295") && what.contains("29"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        assert!(r.buf.capacity() < 1 << 20, "no buffer sized by the claim");
        assert!(r.next().is_none(), "stops after the error");
    }
}
