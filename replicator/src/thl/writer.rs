//! The THL writer: appends events in seqno order, group commit, rotation.
//!
//! Events enter through [`ThlWriter::append`] (a whole transaction, split
//! into fragments of at most `max_fragment_bytes` of changes) or
//! [`ThlWriter::append_record`] (one record as received, e.g. from a remote
//! THL). Appends are encoded into an in-memory buffer; [`ThlWriter::commit`]
//! writes the buffer and fsyncs according to the [`FsyncPolicy`], then
//! publishes the last durable transaction on the [`DurableWatch`]. Only a
//! durable transaction may be acknowledged to anyone.
//!
//! The byte layout is documented in `format.rs`. Rules kept here:
//! * one writer per directory: `thl.lock` is held for the writer's life;
//! * seqnos increase by exactly one per transaction; fragments of one
//!   transaction carry `fragno` 0, 1, … and `last_frag` on the final one;
//! * rotation happens only before the first fragment of a transaction, when
//!   the active segment has reached `segment_size`; the old segment is
//!   fsynced before the new one is created, so only the final segment can
//!   have a torn tail;
//! * at open, recovery (`recovery.rs`) cuts a torn or incomplete tail.

use crate::thl::durable::{DurablePos, DurableWatch};
use crate::thl::error::{Result, ThlError};
use crate::thl::event::ThlEvent;
use crate::thl::format::{self, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use crate::thl::lock::DirLock;
use crate::thl::purge::{self, PurgeReport, PurgeRequest};
use crate::thl::recovery::{self, RecoveryReport};
use crate::thl::segment::{segment_file_name, SegmentIndex, SegmentInfo};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// When the writer fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// At every [`ThlWriter::commit`] (group commit: one fsync per call).
    EveryCommit,
    /// At a commit (or [`ThlWriter::tick`]) when this long has passed since
    /// the last fsync. Transactions are durable only after that fsync.
    Interval(Duration),
}

/// Writer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Rotate to a new segment once the active one reaches this size.
    /// Default 100 MiB.
    pub segment_size: u64,
    /// fsync policy. Default [`FsyncPolicy::EveryCommit`].
    pub fsync: FsyncPolicy,
    /// Split a transaction whose changes encode to more than this many bytes
    /// into fragments (at change boundaries). Default 1 MiB.
    pub max_fragment_bytes: usize,
    /// Write the buffer to the file (without fsync) once it holds this many
    /// bytes. Default 4 MiB.
    pub write_buffer_bytes: usize,
    /// Largest single `write` system call; bigger buffers are written in
    /// pieces. Default 8 MiB (crash tests set it tiny to provoke torn
    /// records).
    pub max_write_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            segment_size: 100 << 20,
            fsync: FsyncPolicy::EveryCommit,
            max_fragment_bytes: 1 << 20,
            write_buffer_bytes: 4 << 20,
            max_write_bytes: 8 << 20,
        }
    }
}

/// Identity of the last record appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    seqno: u64,
    fragno: u32,
    last_frag: bool,
}

/// The single writer of a THL directory.
pub struct ThlWriter {
    dir: PathBuf,
    cfg: WriterConfig,
    lock: DirLock,
    index: SegmentIndex,
    recovery: RecoveryReport,
    active: Option<File>,
    /// Bytes of the active segment already written to the file.
    active_len: u64,
    buf: Vec<u8>,
    /// End (in `buf`) and seqno of the last whole transaction in `buf`.
    buf_whole: Option<(usize, u64)>,
    /// Next seqno expected when the log is empty but has a segment.
    expect_base: Option<u64>,
    last: Option<Last>,
    /// Last whole transaction written to the file (not necessarily synced).
    written: Option<DurablePos>,
    durable: DurableWatch,
    last_sync: Instant,
    failed: bool,
    closed: bool,
}

impl ThlWriter {
    /// Opens (creating if needed) the THL in `dir`: takes the lock, runs
    /// recovery, and positions at the end. See [`ThlWriter::recovery_report`].
    pub fn open(dir: impl AsRef<Path>, cfg: WriterConfig) -> Result<ThlWriter> {
        let dir = dir.as_ref().to_path_buf();
        if cfg.segment_size < SEGMENT_HEADER_LEN || cfg.max_fragment_bytes == 0 {
            return Err(ThlError::Invalid(
                "segment_size and max_fragment_bytes must be positive".into(),
            ));
        }
        let lock = DirLock::acquire(&dir)?;
        let (index, recovery) = recovery::open_index(&dir, true)?;
        let mut w = ThlWriter {
            dir,
            cfg,
            lock,
            index,
            recovery,
            active: None,
            active_len: 0,
            buf: Vec::new(),
            buf_whole: None,
            expect_base: None,
            last: None,
            written: None,
            durable: DurableWatch::default(),
            last_sync: Instant::now(),
            failed: false,
            closed: false,
        };
        if let Some(seg) = w.index.segments.last() {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .map_err(|e| ThlError::io("open", &seg.path, e))?;
            f.seek(SeekFrom::Start(seg.size))
                .map_err(|e| ThlError::io("seek", &seg.path, e))?;
            w.active = Some(f);
            w.active_len = seg.size;
            w.expect_base = Some(seg.base_seqno);
        }
        w.written = w.end_of_log();
        if let Some(pos) = w.written {
            w.last = Some(Last {
                seqno: pos.seqno,
                fragno: 0,
                last_frag: true,
            });
            w.durable.publish(pos);
        }
        Ok(w)
    }

    /// Durable position of the last whole transaction in the index.
    fn end_of_log(&self) -> Option<DurablePos> {
        self.index.segments.iter().rev().find_map(|s| {
            s.last_seqno.map(|seqno| DurablePos {
                seqno,
                segment: s.number,
                offset: s.size,
            })
        })
    }

    /// What recovery cut at open (empty when the tail was clean).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The THL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock file held by this writer.
    pub fn lock_file(&self) -> &Path {
        self.lock.path()
    }

    /// The segment index (the active segment last).
    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    /// Seqno of the last whole transaction appended (maybe not yet durable).
    pub fn last_seqno(&self) -> Option<u64> {
        self.index.last_seqno()
    }

    /// Seqno the next transaction must have, when the log constrains it.
    pub fn next_seqno(&self) -> Option<u64> {
        match self.last {
            Some(l) if l.last_frag => Some(l.seqno + 1),
            Some(l) => Some(l.seqno),
            None => self.expect_base,
        }
    }

    /// Seqno of the last durable transaction.
    pub fn durable_seqno(&self) -> Option<u64> {
        self.durable.seqno()
    }

    /// A handle that observes the durable position (for tails).
    pub fn durable_watch(&self) -> DurableWatch {
        self.durable.clone()
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(ThlError::Invalid(
                "THL writer failed on an earlier write; reopen it to recover".into(),
            ));
        }
        Ok(())
    }

    fn check_order(&self, ev: &ThlEvent) -> Result<()> {
        let ok = match self.last {
            None => ev.fragno == 0 && self.expect_base.is_none_or(|b| ev.seqno == b),
            Some(l) if l.last_frag => ev.fragno == 0 && Some(ev.seqno) == l.seqno.checked_add(1),
            Some(l) => ev.seqno == l.seqno && Some(ev.fragno) == l.fragno.checked_add(1),
        };
        if ok {
            return Ok(());
        }
        let expected = match (self.last, self.expect_base) {
            (None, None) => "fragno 0".to_string(),
            (None, Some(b)) => format!("seqno {b} fragno 0"),
            (Some(l), _) if l.last_frag => format!("seqno {} fragno 0", l.seqno + 1),
            (Some(l), _) => format!("seqno {} fragno {}", l.seqno, l.fragno + 1),
        };
        Err(ThlError::OutOfOrder(format!(
            "got seqno {} fragno {}, expected {expected}",
            ev.seqno, ev.fragno
        )))
    }

    /// Appends a whole transaction (`fragno` 0, `last_frag` set), splitting
    /// it into fragments when its changes exceed `max_fragment_bytes`. Not
    /// durable until [`ThlWriter::commit`].
    pub fn append(&mut self, tx: &ThlEvent) -> Result<()> {
        if !tx.is_whole() {
            return Err(ThlError::Invalid(format!(
                "append takes whole transactions; seqno {} has fragno {} last_frag {} \
                 (use append_record for fragments)",
                tx.seqno, tx.fragno, tx.last_frag
            )));
        }
        let max = self.cfg.max_fragment_bytes;
        let sizes: Vec<usize> = tx.changes.iter().map(format::change_size).collect();
        if sizes.iter().sum::<usize>() <= max {
            return self.append_parts(tx, 0, true, &tx.changes);
        }
        let mut start = 0;
        let mut fragno = 0u32;
        while start < tx.changes.len() {
            let mut end = start + 1;
            let mut size = sizes[start];
            while end < tx.changes.len() && size + sizes[end] <= max {
                size += sizes[end];
                end += 1;
            }
            let last = end == tx.changes.len();
            self.append_parts(tx, fragno, last, &tx.changes[start..end])?;
            fragno = fragno.checked_add(1).ok_or_else(|| {
                ThlError::Invalid(format!("seqno {} needs too many fragments", tx.seqno))
            })?;
            start = end;
        }
        Ok(())
    }

    /// Appends one record exactly as given (a fragment or a whole
    /// transaction); its seqno/fragno must follow the last record.
    pub fn append_record(&mut self, rec: &ThlEvent) -> Result<()> {
        self.append_parts(rec, rec.fragno, rec.last_frag, &rec.changes)
    }

    fn append_parts(
        &mut self,
        ev: &ThlEvent,
        fragno: u32,
        last_frag: bool,
        changes: &[crate::thl::event::Change],
    ) -> Result<()> {
        self.check_usable()?;
        let probe = ThlEvent {
            seqno: ev.seqno,
            fragno,
            ..ThlEvent::default()
        };
        self.check_order(&probe)?;
        if fragno == 0 {
            let used = self.active_len + self.buf.len() as u64;
            let full = used >= self.cfg.segment_size && used > SEGMENT_HEADER_LEN;
            if self.active.is_none() || full {
                self.rotate(ev.seqno)?;
            }
        }
        let start = self.buf.len();
        format::encode_fragment(ev, fragno, last_frag, changes, &mut self.buf).map_err(|what| {
            ThlError::Encode {
                seqno: ev.seqno,
                what,
            }
        })?;
        debug_assert!(self.buf.len() > start);
        self.last = Some(Last {
            seqno: ev.seqno,
            fragno,
            last_frag,
        });
        self.expect_base = None;
        if last_frag {
            self.buf_whole = Some((self.buf.len(), ev.seqno));
            if let Some(seg) = self.index.segments.last_mut() {
                seg.last_seqno = Some(ev.seqno);
            }
        }
        if self.buf.len() >= self.cfg.write_buffer_bytes {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Writes the buffer to the active segment (no fsync).
    fn write_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(seg) = self.index.segments.last_mut() else {
            return Err(ThlError::Invalid("no active segment".into()));
        };
        let Some(f) = self.active.as_mut() else {
            return Err(ThlError::Invalid("no active segment".into()));
        };
        let chunk = self.cfg.max_write_bytes.max(1);
        if let Err(e) = self.buf.chunks(chunk).try_for_each(|c| f.write_all(c)) {
            self.failed = true;
            return Err(ThlError::io("write", &seg.path, e));
        }
        if let Some((end, seqno)) = self.buf_whole.take() {
            self.written = Some(DurablePos {
                seqno,
                segment: seg.number,
                offset: self.active_len + end as u64,
            });
            seg.size = self.active_len + end as u64;
        }
        self.active_len += self.buf.len() as u64;
        if let Ok(m) = f.metadata().and_then(|m| m.modified()) {
            seg.modified = m;
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes buffered appends and fsyncs according to the policy; returns
    /// the last durable seqno (what may be acknowledged).
    pub fn commit(&mut self) -> Result<Option<u64>> {
        self.check_usable()?;
        self.write_buffer()?;
        match self.cfg.fsync {
            FsyncPolicy::EveryCommit => self.sync()?,
            FsyncPolicy::Interval(d) => {
                if self.last_sync.elapsed() >= d {
                    self.sync()?;
                }
            }
        }
        Ok(self.durable_seqno())
    }

    /// For [`FsyncPolicy::Interval`]: fsyncs written data when the interval
    /// has passed. Call it periodically when commits may stop.
    pub fn tick(&mut self) -> Result<Option<u64>> {
        if let FsyncPolicy::Interval(d) = self.cfg.fsync {
            if self.last_sync.elapsed() >= d && self.written != self.durable.get() {
                self.sync()?;
            }
        }
        Ok(self.durable_seqno())
    }

    /// Writes and fsyncs everything appended so far, whatever the policy.
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        self.write_buffer()?;
        if let (Some(f), Some(seg)) = (self.active.as_ref(), self.index.segments.last()) {
            if let Err(e) = f.sync_data() {
                self.failed = true;
                return Err(ThlError::io("fsync", &seg.path, e));
            }
        }
        self.last_sync = Instant::now();
        if let Some(pos) = self.written {
            self.durable.publish(pos);
        }
        Ok(())
    }

    /// Seals the active segment (fsynced) and starts a new one at `base`.
    fn rotate(&mut self, base: u64) -> Result<()> {
        if self.active.is_some() {
            self.sync()?;
        }
        let number = self.index.segments.last().map_or(1, |s| s.number + 1);
        let path = self.dir.join(segment_file_name(number));
        let created_us = now_us();
        let header = format::encode_segment_header(&SegmentHeader {
            version: FORMAT_VERSION,
            base_seqno: base,
            created_us,
        });
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ThlError::io("create", &path, e))?;
        if let Err(e) = f.write_all(&header).and_then(|_| f.sync_all()) {
            self.failed = true;
            return Err(ThlError::io("write", &path, e));
        }
        recovery::sync_dir(&self.dir)?;
        self.index.segments.push(SegmentInfo {
            number,
            path,
            base_seqno: base,
            created_us,
            last_seqno: None,
            size: SEGMENT_HEADER_LEN,
            modified: SystemTime::now(),
        });
        self.active = Some(f);
        self.active_len = SEGMENT_HEADER_LEN;
        Ok(())
    }

    /// Deletes whole old segments as `req` asks; never the active segment
    /// nor the one holding `req.keep_seqno`.
    pub fn purge(&mut self, req: &PurgeRequest) -> Result<PurgeReport> {
        self.check_usable()?;
        let report = purge::delete_prefix(&self.dir, &self.index.segments, req, SystemTime::now())?;
        let n = report.deleted.len();
        self.index.segments.drain(..n);
        Ok(report)
    }

    /// Syncs and closes the writer, releasing the lock.
    pub fn close(mut self) -> Result<()> {
        let r = if self.failed { Ok(()) } else { self.sync() };
        self.closed = true;
        self.durable.close();
        r
    }
}

impl Drop for ThlWriter {
    fn drop(&mut self) {
        if !self.failed && !self.closed {
            // Best effort; `close` reports errors.
            let _ = self.sync();
        }
        self.durable.close();
    }
}

/// Now, µs since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
