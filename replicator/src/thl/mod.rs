//! The THL (Transaction History Log): the replicator's durable, ordered
//! record of every transaction, with a global `seqno`.
//!
//! Data enters through [`ThlWriter`] (one per directory, guarded by a lock
//! file) and leaves through [`ThlReader`] (snapshots, seek, find by eventid)
//! and [`Tail`] (follow a live writer through its [`DurableWatch`]). The
//! byte layout is documented in `format.rs`; recovery rules in
//! `recovery.rs`; purge rules in `purge.rs`.

pub mod display;
mod durable;
mod error;
mod event;
pub mod format;
mod lock;
mod purge;
mod reader;
mod recovery;
mod segment;
mod writer;

pub use durable::{DurablePos, DurableWatch};
pub use error::{Result, ThlError};
pub use event::{
    Change, ColumnSpec, Date, DateTime, RowAction, RowChange, RowsChange, SessionVars, Statement,
    ThlEvent, Time, Timestamp, Value,
};
pub use lock::{is_locked, DirLock};
pub use purge::{plan_purge, purge_dir, truncate_from, PurgeReport, PurgeRequest, TruncateReport};
pub use reader::{eventid_matches, Reassembler, Records, Tail, ThlReader, Transactions};
pub use recovery::{is_torn_tail, Cut, RecoveryReport};
pub use segment::{segment_file_name, SegmentIndex, SegmentInfo, LOCK_FILE};
pub use writer::{now_us, FsyncPolicy, ThlWriter, WriterConfig};
