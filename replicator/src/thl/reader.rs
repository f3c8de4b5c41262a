//! Reading the THL: seek by seqno, iterate forward, reassemble fragments,
//! find by eventid, and tail a live writer.
//!
//! [`ThlReader::open`] builds the segment index without repairing anything
//! (see `recovery.rs`) and takes a snapshot: iterators end at the last whole
//! transaction present at open. Seeking by seqno binary-searches the
//! segments, then skips record prefixes inside the segment. Every record
//! read is checked (CRC, order); damage is an error naming file and offset.
//!
//! [`Tail`] follows a writer in the same process through its
//! [`DurableWatch`]: it delivers records up to the published durable
//! position only (so a replica never sees a transaction the master could
//! still lose) and blocks on the watch, without polling, for more.

use crate::thl::durable::{DurablePos, DurableWatch};
use crate::thl::error::{Result, ThlError};
use crate::thl::event::ThlEvent;
use crate::thl::format::SEGMENT_HEADER_LEN;
use crate::thl::recovery::{self, RecoveryReport};
use crate::thl::segment::{
    self, read_header, segment_file_name, RecordCursor, SegmentIndex, SegmentInfo, Step,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A read-only view of a THL directory.
#[derive(Debug, Clone)]
pub struct ThlReader {
    dir: PathBuf,
    index: SegmentIndex,
    pending: RecoveryReport,
}

impl ThlReader {
    /// Opens the log in `dir` for reading (no lock, no repair).
    pub fn open(dir: impl AsRef<Path>) -> Result<ThlReader> {
        let dir = dir.as_ref().to_path_buf();
        let (index, pending) = recovery::open_index(&dir, false)?;
        Ok(ThlReader {
            dir,
            index,
            pending,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment index at open.
    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    /// What the writer's recovery would cut at the tail (a torn or
    /// incomplete tail seen at open; readers stop before it).
    pub fn pending_recovery(&self) -> &RecoveryReport {
        &self.pending
    }

    /// Lowest seqno in the log.
    pub fn first_seqno(&self) -> Option<u64> {
        self.index.first_seqno()
    }

    /// Highest whole-transaction seqno in the log.
    pub fn last_seqno(&self) -> Option<u64> {
        self.index.last_seqno()
    }

    /// Records (fragments as stored) with seqno ≥ `from`, in order.
    pub fn records(&self, from: u64) -> Result<Records> {
        let segs = match self.index.locate_from(from) {
            Some(i) => self.index.segments[i..].to_vec(),
            None => Vec::new(),
        };
        Ok(Records {
            segs,
            next: 0,
            cur: None,
            from,
            done: false,
        })
    }

    /// Whole transactions (fragments reassembled) with seqno ≥ `from`.
    pub fn transactions(&self, from: u64) -> Result<Transactions> {
        Ok(Transactions {
            records: self.records(from)?,
            asm: Reassembler::default(),
        })
    }

    /// The whole transaction `seqno`, if stored.
    pub fn get(&self, seqno: u64) -> Result<Option<ThlEvent>> {
        if self.index.locate(seqno).is_none() {
            return Ok(None);
        }
        match self.transactions(seqno)?.next() {
            Some(Ok(tx)) if tx.seqno == seqno => Ok(Some(tx)),
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        }
    }

    /// Seqno of the first transaction whose eventid satisfies `matches`
    /// (a scan that decodes only eventids).
    pub fn find_event(&self, matches: impl Fn(&str) -> bool) -> Result<Option<u64>> {
        for seg in &self.index.segments {
            if seg.last_seqno.is_none() {
                continue;
            }
            let mut cur = RecordCursor::open(&seg.path, SEGMENT_HEADER_LEN, seg.size)?;
            loop {
                match cur.next_checked()? {
                    Step::End => break,
                    Step::Record { offset, meta } => {
                        if meta.fragno == 0 && matches(cur.eventid(offset, &meta)?) {
                            return Ok(Some(meta.seqno));
                        }
                    }
                    Step::Bad { offset, err, .. } => {
                        return Err(segment::record_error(&seg.path, offset, err))
                    }
                }
            }
        }
        Ok(None)
    }

    /// The transaction with this eventid (see [`eventid_matches`]).
    pub fn find_event_id(&self, eventid: &str) -> Result<Option<ThlEvent>> {
        match self.find_event(|id| eventid_matches(id, eventid))? {
            Some(seqno) => self.get(seqno),
            None => Ok(None),
        }
    }

    /// Follows the writer publishing on `watch`, from seqno `from`.
    pub fn tail(&self, from: u64, watch: DurableWatch) -> Tail {
        Tail {
            dir: self.dir.clone(),
            watch,
            from,
            cur: None,
            seg: 0,
            seen: None,
        }
    }
}

/// True when a stored eventid matches what an operator typed: exactly, or
/// the same binlog file and position (ignoring zero padding and the
/// `;session` suffix), e.g. `mysql-bin.000032:473860407` matches
/// `mysql-bin.000032:0000000473860407;-1`.
pub fn eventid_matches(stored: &str, query: &str) -> bool {
    if stored == query {
        return true;
    }
    // (file, position, optional ";suffix")
    fn parts(s: &str) -> Option<(&str, u64, Option<&str>)> {
        let (pos_part, suffix) = match s.split_once(';') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let (file, pos) = pos_part.rsplit_once(':')?;
        Some((file, pos.trim().parse().ok()?, suffix))
    }
    match (parts(stored), parts(query)) {
        (Some((f1, p1, s1)), Some((f2, p2, s2))) => {
            f1 == f2 && p1 == p2 && (s2.is_none() || s1 == s2)
        }
        _ => false,
    }
}

/// Iterator over stored records from a seqno; see [`ThlReader::records`].
pub struct Records {
    segs: Vec<SegmentInfo>,
    next: usize,
    cur: Option<RecordCursor>,
    from: u64,
    done: bool,
}

impl Records {
    fn open_next(&mut self) -> Result<bool> {
        let Some(seg) = self.segs.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        let mut cur = RecordCursor::open(&seg.path, SEGMENT_HEADER_LEN, seg.size)?;
        if seg.base_seqno < self.from {
            // Skip to the first record of `from` by prefixes only.
            loop {
                match cur.next_meta()? {
                    Step::Record { offset, meta } if meta.seqno >= self.from => {
                        cur.seek(offset)?;
                        break;
                    }
                    Step::Record { .. } => {}
                    Step::End => break,
                    Step::Bad { offset, err, .. } => {
                        return Err(segment::record_error(&seg.path, offset, err))
                    }
                }
            }
        }
        self.cur = Some(cur);
        Ok(true)
    }

    fn step(&mut self) -> Result<Option<ThlEvent>> {
        loop {
            let Some(cur) = self.cur.as_mut() else {
                if !self.open_next()? {
                    return Ok(None);
                }
                continue;
            };
            match cur.next_checked()? {
                Step::Record { offset, meta } => {
                    if meta.seqno < self.from {
                        continue;
                    }
                    return cur.decode(offset, &meta).map(Some);
                }
                Step::End => self.cur = None,
                Step::Bad { offset, err, .. } => {
                    return Err(segment::record_error(cur.path(), offset, err))
                }
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<ThlEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Iterator over whole transactions; see [`ThlReader::transactions`].
pub struct Transactions {
    records: Records,
    asm: Reassembler,
}

impl Iterator for Transactions {
    type Item = Result<ThlEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rec = match self.records.next()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            match self.asm.push(rec) {
                Ok(Some(tx)) => return Some(Ok(tx)),
                Ok(None) => {}
                Err(e) => {
                    self.records.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Joins fragments back into whole transactions.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: Option<ThlEvent>,
}

impl Reassembler {
    /// Feeds one record; returns a transaction when its last fragment arrives.
    pub fn push(&mut self, rec: ThlEvent) -> Result<Option<ThlEvent>> {
        match self.pending.take() {
            None if rec.fragno == 0 => {
                if rec.last_frag {
                    return Ok(Some(rec));
                }
                self.pending = Some(rec);
                Ok(None)
            }
            None => Err(ThlError::Invalid(format!(
                "fragment {} of seqno {} without its fragment 0",
                rec.fragno, rec.seqno
            ))),
            Some(mut p) => {
                if rec.seqno != p.seqno || Some(rec.fragno) != p.fragno.checked_add(1) {
                    return Err(ThlError::Invalid(format!(
                        "seqno {} fragno {} does not continue seqno {} fragno {}",
                        rec.seqno, rec.fragno, p.seqno, p.fragno
                    )));
                }
                p.fragno = rec.fragno;
                p.changes.extend(rec.changes);
                if rec.last_frag {
                    p.fragno = 0;
                    p.last_frag = true;
                    return Ok(Some(p));
                }
                self.pending = Some(p);
                Ok(None)
            }
        }
    }

    /// True while a transaction is partly assembled.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Follows a live log; see [`ThlReader::tail`].
pub struct Tail {
    dir: PathBuf,
    watch: DurableWatch,
    from: u64,
    cur: Option<RecordCursor>,
    seg: u64,
    seen: Option<DurablePos>,
}

impl Tail {
    /// Seqno of the next transaction this tail will deliver.
    pub fn next_seqno(&self) -> u64 {
        self.from
    }

    /// The next record (fragment as stored), waiting up to `timeout` for it
    /// to become durable. `Ok(None)`: timeout, or the writer closed.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<ThlEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            let pos = self.watch.get();
            if let Some(p) = pos {
                if p.seqno >= self.from {
                    if let Some(ev) = self.read_until(p)? {
                        return Ok(Some(ev));
                    }
                }
            }
            self.seen = pos;
            let now = Instant::now();
            if now >= deadline || self.watch.is_closed() {
                return Ok(None);
            }
            self.watch.wait_past(self.seen, deadline - now);
        }
    }

    /// Reads the next record before `p`, if any.
    fn read_until(&mut self, p: DurablePos) -> Result<Option<ThlEvent>> {
        if self.cur.is_none() {
            self.position(p)?;
        }
        loop {
            let Some(cur) = self.cur.as_mut() else {
                return Ok(None);
            };
            if self.seg == p.segment {
                cur.set_end(p.offset);
            } else {
                let len = std::fs::metadata(cur.path())
                    .map_err(|e| ThlError::io("stat", cur.path(), e))?
                    .len();
                cur.set_end(len);
            }
            match cur.next_checked()? {
                Step::Record { offset, meta } => {
                    if meta.seqno < self.from {
                        continue;
                    }
                    let ev = cur.decode(offset, &meta)?;
                    self.from = if ev.last_frag { ev.seqno + 1 } else { ev.seqno };
                    return Ok(Some(ev));
                }
                Step::End if self.seg < p.segment => {
                    let next = self.seg + 1;
                    let path = self.dir.join(segment_file_name(next));
                    read_header(&path)?;
                    self.cur = Some(RecordCursor::open(
                        &path,
                        SEGMENT_HEADER_LEN,
                        SEGMENT_HEADER_LEN,
                    )?);
                    self.seg = next;
                }
                Step::End => return Ok(None),
                Step::Bad { offset, err, .. } => {
                    return Err(segment::record_error(cur.path(), offset, err))
                }
            }
        }
    }

    /// Opens the segment holding `self.from` (at or before durable `p`).
    fn position(&mut self, p: DurablePos) -> Result<()> {
        let files = segment::list_segment_files(&self.dir)?;
        let mut chosen = None;
        for (n, path) in files.iter().rev() {
            if *n > p.segment {
                continue;
            }
            let (h, _) = read_header(path)?;
            if h.base_seqno <= self.from {
                chosen = Some((*n, path.clone()));
                break;
            }
        }
        let (n, path) = match (chosen, files.first()) {
            (Some(c), _) => c,
            (None, None) => return Ok(()),
            (None, Some((n, path))) => {
                let (h, _) = read_header(path)?;
                return Err(ThlError::Invalid(format!(
                    "seqno {} is no longer in the THL (purged); {} starts at seqno {}",
                    self.from,
                    segment_file_name(*n),
                    h.base_seqno
                )));
            }
        };
        self.seg = n;
        self.cur = Some(RecordCursor::open(
            &path,
            SEGMENT_HEADER_LEN,
            SEGMENT_HEADER_LEN,
        )?);
        Ok(())
    }
}
