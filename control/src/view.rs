//! What operators see: the committed state joined with the live evidence.
//!
//! The leader builds a [`ClusterView`] from its [`ClusterState`] and the
//! managers' latest reports ([`build`], pure); `cctrl` formats it. For each
//! datasource the best witness of its live values is its own manager (when
//! its report is fresh), else the leader's probe.

use crate::monitor::{ConnectorStats, DbHealth, ReplicatorStatus};
use crate::policy::Evidence;
use crate::state::ClusterState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Live values of one datasource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveDatasource {
    /// Its own manager reports (fresh).
    pub manager_online: bool,
    /// Its database, as its best witness saw it.
    pub db: Option<DbHealth>,
    /// Its replicator, as its best witness saw it, or why not known.
    pub replicator: Result<ReplicatorStatus, String>,
    /// Sessions open on it, summed over every connector.
    pub active: u64,
    /// Sessions created on it, summed over every connector.
    pub created: u64,
}

/// The cluster as `cctrl ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The raft leader (Tungsten's COORDINATOR), by name.
    pub coordinator: Option<String>,
    /// The committed state.
    pub state: ClusterState,
    /// Live values per datasource.
    pub live: BTreeMap<String, LiveDatasource>,
    /// Each connector's counters, by member name (those that reported).
    pub connectors: BTreeMap<String, ConnectorStats>,
    /// Managers with a fresh report, by name.
    pub managers_online: Vec<String>,
    /// When the view was built, ms since the Unix epoch (the STATUS time).
    pub at_ms: u64,
}

/// Joins the committed state with the evidence.
pub fn build(
    state: &ClusterState,
    ev: &Evidence,
    leader: &str,
    probe_ms: u64,
    at_ms: u64,
) -> ClusterView {
    let connectors: BTreeMap<String, ConnectorStats> = ev
        .fresh(probe_ms)
        .filter_map(|(n, r)| r.connector.clone().map(|c| (n.clone(), c)))
        .collect();
    let live = state
        .datasources
        .keys()
        .map(|name| {
            let own = ev.fresh_report(name, probe_ms);
            let witness = own
                .or_else(|| ev.fresh_report(leader, probe_ms))
                .and_then(|r| r.observations.get(name));
            let sum = |f: &dyn Fn(&ConnectorStats) -> Option<u64>| {
                connectors.values().filter_map(f).sum::<u64>()
            };
            (
                name.clone(),
                LiveDatasource {
                    manager_online: own.is_some(),
                    db: witness.map(|o| o.db.clone()),
                    replicator: witness
                        .map(|o| o.replicator.clone())
                        .unwrap_or_else(|| Err("not probed yet".into())),
                    active: sum(&|c| c.per_datasource.get(name).copied()),
                    created: sum(&|c| c.created_per_datasource.get(name).copied()),
                },
            )
        })
        .collect();
    ClusterView {
        coordinator: Some(leader.to_string()),
        state: state.clone(),
        live,
        connectors,
        managers_online: ev.fresh(probe_ms).map(|(n, _)| n.clone()).collect(),
        at_ms,
    }
}
