//! The replicator daemon: services, their state machines and runtime.
//!
//! `state.rs` is the pure state machine (unit-tested on its transitions);
//! `service.rs` runs one service's extractor and answers its commands; the
//! admin API (`crate::admin`) and the `carbide-replicator` binary drive them.

pub mod service;
pub mod state;

pub use service::{CommandError, Service, ServiceSpec, Status};
pub use state::{Action, Input, Machine, PendingError, State};
