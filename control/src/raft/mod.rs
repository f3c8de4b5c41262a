//! Consensus: openraft over HTTP, with the log and state machine in redb.
//!
//! **Why openraft 0.9.25 (pinned), and how its gaps are closed.** 0.9 is
//! openraft's stable line; 0.10 is still alpha and its API changes between
//! alphas. 0.9 has two gaps for an HA manager: it has no Pre-Vote (a node
//! returning from a partition with an inflated term deposes a healthy
//! leader) and it draws each node's election timeout once (two survivors
//! can tie repeatedly). carbide turns openraft's own elections off
//! (`enable_elect = false`) and runs a [`watchdog`] instead: a follower that
//! has heard from no leader for a timeout drawn anew for every campaign
//! (between `election-timeout-ms` and twice that) first asks the other
//! voters whether they have lost the leader too (a pre-vote over HTTP; no
//! term changes), and only with a majority's yes calls
//! `raft.trigger().elect()`. A node cut off from the majority therefore
//! never raises its term, and rejoins without disturbing the leader.
//!
//! Node ids are a stable hash of the member or witness name ([`node_id`]);
//! every voter's address is its `manager` address. Every process calls
//! `initialize` with the same voter set when its store is empty, which
//! openraft documents as safe.
//!
//! RPCs enter through [`server::routes`] (axum, on the manager port, each
//! authenticated with the dataservice secret) and leave through
//! [`network::Network`] (reqwest).

pub mod network;
pub mod server;
pub mod store;
pub mod watchdog;

use crate::state::{Command, Outcome};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// The manager's raft types: entries carry a [`Command`], applying one
    /// yields an [`Outcome`].
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// A stable node id for a member or witness name (FNV-1a, 64 bit; 0 is
/// avoided because openraft treats it like any other id but operators read
/// it as "none").
pub fn node_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// openraft's config from `[manager]`: heartbeats every `heartbeat-ms`,
/// openraft's own elections off (the watchdog runs them).
pub fn raft_config(service: &str, m: &carbide_config::Manager) -> Result<openraft::Config, String> {
    openraft::Config {
        cluster_name: service.to_string(),
        heartbeat_interval: m.heartbeat_ms,
        // openraft's own election timer is off; what it still reads from
        // these is the leader lease (= election_timeout_max): a voter refuses
        // any vote within it of the last heartbeat. Keeping it at the
        // watchdog's shortest wait makes the pre-vote and the real vote agree.
        election_timeout_min: m.election_timeout_ms,
        election_timeout_max: m.election_timeout_ms + 1,
        enable_elect: false,
        // the state is small: a snapshot every 500 entries keeps the log short
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("db1"), node_id("db1"));
        assert_ne!(node_id("db1"), node_id("db2"));
        assert_ne!(node_id("db1"), 0);
    }

    #[test]
    fn config_turns_openraft_elections_off() {
        let c = raft_config("alpha", &carbide_config::Manager::default()).expect("valid");
        assert!(!c.enable_elect);
        assert_eq!(c.heartbeat_interval, 150);
    }
}
