//! carbide-replicator: the replicator's storage and tools.
//!
//! So far this crate holds the THL store ([`thl`]): the durable, ordered log
//! of transactions the extractor writes and the applier and THL server read,
//! and the library behind the `thl` command-line tool. The extractor, THL
//! transfer and applier come in later issues.

pub mod thl;

pub mod admin;
pub mod apply;
pub mod daemon;
pub mod extract;
pub mod transfer;
