//! carbide-control: the manager.
//!
//! It runs inside every `carbide serve --member NAME` process beside the
//! connector. The replicated cluster state ([`state`]) lives in raft
//! ([`raft`]: openraft, redb, HTTP RPCs). Monitors ([`monitor`]) probe every
//! datasource and replicator and report to the leader, whose pure policy
//! engine ([`policy`]) turns the evidence and operator commands into
//! committed changes. [`api`] serves the `cctrl` commands as HTTP/JSON on
//! the manager port; [`cctrl`] holds the command grammar and Tungsten's
//! output layout. [`node`] wires these together and publishes each
//! committed [`view::ClusterView`] on a watch channel for the connector.

pub mod api;
pub mod cctrl;
pub mod http;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod policy;
pub mod raft;
pub mod state;
pub mod view;
