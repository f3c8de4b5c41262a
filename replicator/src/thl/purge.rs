//! Purge: deleting old segments, and cutting the log back to a seqno.
//!
//! A [`PurgeRequest`] enters; [`plan_purge`] decides (pure, no IO) how many
//! of the oldest segments go, and [`delete_prefix`] removes them oldest
//! first, so a crash midway still leaves a contiguous log. Only whole
//! segments are deleted, never the final (active) segment, and never the
//! segment holding the seqno the caller still needs or anything after it.
//!
//! [`purge_dir`] and [`truncate_from`] are for tools (`thl purge`): they take
//! the directory lock themselves, so they refuse while a replicator writes.
//! A running writer purges through `ThlWriter::purge`.

use crate::thl::error::{Result, ThlError};
use crate::thl::lock::DirLock;
use crate::thl::recovery::{self, RecoveryReport};
use crate::thl::segment::{RecordCursor, SegmentInfo, Step};
use std::fs::OpenOptions;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Which segments to delete. Every criterion given must hold for a segment
/// to go; with none given nothing is deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeRequest {
    /// Delete segments whose transactions are all below this seqno.
    pub below_seqno: Option<u64>,
    /// Delete segments last written longer ago than this.
    pub older_than: Option<Duration>,
    /// The caller still needs this seqno (e.g. the last applied one): its
    /// segment and all later ones are kept.
    pub keep_seqno: Option<u64>,
}

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Deleted segments, oldest first.
    pub deleted: Vec<SegmentInfo>,
    /// Why the purge stopped at the first kept segment (for operators).
    pub stopped: Option<String>,
}

/// Decides how many of the oldest `segments` to delete, and why it stopped.
pub fn plan_purge(
    segments: &[SegmentInfo],
    req: &PurgeRequest,
    now: SystemTime,
) -> (usize, Option<String>) {
    if req.below_seqno.is_none() && req.older_than.is_none() {
        return (0, Some("no purge criterion given".into()));
    }
    for (i, s) in segments.iter().enumerate() {
        let name = s.file_name();
        if i + 1 == segments.len() {
            return (i, Some(format!("{name} is the active segment")));
        }
        let Some(last) = s.last_seqno else {
            return (i, Some(format!("{name} holds no transactions")));
        };
        if let Some(keep) = req.keep_seqno {
            if last >= keep {
                return (
                    i,
                    Some(format!(
                        "{name} ({}:{last}) holds seqno {keep} or later, still needed",
                        s.base_seqno
                    )),
                );
            }
        }
        if let Some(below) = req.below_seqno {
            if last >= below {
                return (
                    i,
                    Some(format!(
                        "{name} ({}:{last}) also holds seqnos at or above {below}",
                        s.base_seqno
                    )),
                );
            }
        }
        if let Some(age) = req.older_than {
            let young = now
                .duration_since(s.modified)
                .map(|a| a < age)
                .unwrap_or(true);
            if young {
                return (
                    i,
                    Some(format!("{name} was written within the retention period")),
                );
            }
        }
    }
    (segments.len(), None)
}

/// Deletes the segments [`plan_purge`] selects, oldest first.
pub fn delete_prefix(
    dir: &Path,
    segments: &[SegmentInfo],
    req: &PurgeRequest,
    now: SystemTime,
) -> Result<PurgeReport> {
    let (n, stopped) = plan_purge(segments, req, now);
    let mut report = PurgeReport {
        deleted: Vec::with_capacity(n),
        stopped,
    };
    for s in &segments[..n] {
        std::fs::remove_file(&s.path).map_err(|e| ThlError::io("remove", &s.path, e))?;
        report.deleted.push(s.clone());
    }
    if n > 0 {
        recovery::sync_dir(dir)?;
    }
    Ok(report)
}

/// Purges the log in `dir` from outside a writer: takes the lock (failing
/// with [`ThlError::Locked`] while a replicator holds it).
pub fn purge_dir(dir: &Path, req: &PurgeRequest) -> Result<PurgeReport> {
    let _lock = DirLock::acquire(dir)?;
    let (index, _) = recovery::open_index(dir, false)?;
    delete_prefix(dir, &index.segments, req, SystemTime::now())
}

/// What [`truncate_from`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruncateReport {
    /// Recovery done first (a torn tail cut).
    pub recovery: RecoveryReport,
    /// Transactions removed: first and last seqno.
    pub removed: Option<(u64, u64)>,
    /// Segment files deleted.
    pub deleted_files: Vec<String>,
    /// Segment file cut, and the offset it now ends at.
    pub truncated_file: Option<(String, u64)>,
}

/// Removes every transaction at or above `seqno` (the tail of the log), e.g.
/// to discard events a failed master never replicated. Takes the lock.
pub fn truncate_from(dir: &Path, seqno: u64) -> Result<TruncateReport> {
    let _lock = DirLock::acquire(dir)?;
    let (index, recovery) = recovery::open_index(dir, true)?;
    let mut report = TruncateReport {
        recovery,
        ..TruncateReport::default()
    };
    let Some(last) = index.last_seqno() else {
        return Ok(report);
    };
    if seqno > last {
        return Ok(report);
    }
    let Some(i) = index.locate_from(seqno) else {
        return Ok(report);
    };
    let first_removed = seqno.max(index.segments[i].base_seqno);
    // Later segments go first (newest first), so a crash leaves a prefix.
    for s in index.segments[i + 1..].iter().rev() {
        std::fs::remove_file(&s.path).map_err(|e| ThlError::io("remove", &s.path, e))?;
        report.deleted_files.insert(0, s.file_name());
    }
    let seg = &index.segments[i];
    let mut cur = RecordCursor::open(&seg.path, crate::thl::format::SEGMENT_HEADER_LEN, seg.size)?;
    let cut_at = loop {
        match cur.next_meta()? {
            Step::Record { offset, meta } if meta.seqno >= first_removed => break offset,
            Step::Record { .. } => {}
            Step::End => break seg.size,
            Step::Bad { offset, err, .. } => {
                return Err(crate::thl::segment::record_error(&seg.path, offset, err))
            }
        }
    };
    let f = OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .map_err(|e| ThlError::io("open", &seg.path, e))?;
    f.set_len(cut_at)
        .and_then(|_| f.sync_all())
        .map_err(|e| ThlError::io("truncate", &seg.path, e))?;
    recovery::sync_dir(dir)?;
    report.truncated_file = Some((seg.file_name(), cut_at));
    report.removed = Some((first_removed, last));
    Ok(report)
}
