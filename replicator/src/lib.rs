//! carbide-replicator: the replicator daemon's library and tools.
//!
//! - [`thl`]: the THL store, the durable ordered log of transactions;
//! - [`extract`]: the master side, binlog → THL;
//! - [`transfer`]: THL transfer between replicators (server and client);
//! - [`apply`]: the replica side, THL → SQL on the local database;
//! - [`daemon`]: services, their state machine and runtime;
//! - [`admin`]: the HTTP/JSON admin API `trepctl` talks to;
//! - [`auth`]: the dataservice secret: bearer checks and the THL hello proof.
//!
//! The binaries are `carbide-replicator`, `trepctl`, `thl` and `dsctl`.

pub mod thl;

pub mod admin;
pub mod apply;
pub mod auth;
pub mod daemon;
pub mod extract;
pub mod transfer;
