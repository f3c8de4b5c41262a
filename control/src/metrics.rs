//! The manager's Prometheus gauges, rendered after the connector's on the
//! shared `/metrics` route.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `carbide_manager_datasource_state` | datasource, state | 1 for the datasource's committed state (ONLINE, OFFLINE, SHUNNED, FAILED) |
//! | `carbide_manager_datasource_role` | datasource, role | 1 for its role |
//! | `carbide_manager_policy` | mode | 1 for the current policy mode |
//! | `carbide_manager_state_changes` | | committed changes of the cluster state |
//! | `carbide_manager_epoch` | | the cluster state's epoch |
//! | `carbide_manager_raft_term` | | current raft term |
//! | `carbide_manager_raft_leader` | | 1 when this manager is the coordinator |
//! | `carbide_manager_raft_commit_index` | | last log index applied |
//! | `carbide_manager_isolated` | | 1 while cut off from a majority (connector ONHOLD/OFFLINE) |
//! | `carbide_manager_probe_seconds` | datasource | duration of the last database probe |
//! | `carbide_manager_datasource_up` | datasource | 1 when the last probe reached its database |

use crate::monitor::Observation;
use crate::state::ClusterState;
use carbide_config::{PolicyMode, Role};
use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::BTreeMap;

/// The gauges.
pub struct ManagerMetrics {
    ds_state: IntGaugeVec,
    ds_role: IntGaugeVec,
    policy: IntGaugeVec,
    changes: IntGauge,
    epoch: IntGauge,
    term: IntGauge,
    leader: IntGauge,
    commit: IntGauge,
    /// 1 while cut off from the majority.
    pub isolated: IntGauge,
    probe: GaugeVec,
    up: IntGaugeVec,
}

impl ManagerMetrics {
    /// Registers every gauge in `registry` (the connector's, so one
    /// `/metrics` serves both).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let ivec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let int = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let probe = GaugeVec::new(
            Opts::new(
                "carbide_manager_probe_seconds",
                "Duration of the last database probe",
            ),
            &["datasource"],
        )?;
        registry.register(Box::new(probe.clone()))?;
        Ok(ManagerMetrics {
            ds_state: ivec(
                "carbide_manager_datasource_state",
                "1 for the datasource's committed state",
                &["datasource", "state"],
            )?,
            ds_role: ivec(
                "carbide_manager_datasource_role",
                "1 for the datasource's role",
                &["datasource", "role"],
            )?,
            policy: ivec(
                "carbide_manager_policy",
                "1 for the current policy mode",
                &["mode"],
            )?,
            changes: int(
                "carbide_manager_state_changes",
                "Committed changes of the cluster state",
            )?,
            epoch: int("carbide_manager_epoch", "The cluster state's epoch")?,
            term: int("carbide_manager_raft_term", "Current raft term")?,
            leader: int(
                "carbide_manager_raft_leader",
                "1 when this manager is the coordinator",
            )?,
            commit: int(
                "carbide_manager_raft_commit_index",
                "Last raft log index applied",
            )?,
            isolated: int(
                "carbide_manager_isolated",
                "1 while cut off from a majority of the managers",
            )?,
            up: ivec(
                "carbide_manager_datasource_up",
                "1 when the last probe reached the database",
                &["datasource"],
            )?,
            probe,
        })
    }

    /// Records this manager's latest probes.
    pub fn observe(&self, obs: &BTreeMap<String, Observation>) {
        for (name, o) in obs {
            self.probe
                .with_label_values(&[name.as_str()])
                .set(o.probe_ms as f64 / 1000.0);
            self.up
                .with_label_values(&[name.as_str()])
                .set(i64::from(o.db.is_up()));
        }
    }

    /// Updates the gauges from the committed state and raft's metrics.
    pub fn refresh(
        &self,
        state: &ClusterState,
        raft: &openraft::RaftMetrics<u64, openraft::BasicNode>,
        leader: bool,
    ) {
        for (name, d) in &state.datasources {
            let word = match &d.state {
                carbide_config::DatasourceState::Online => "ONLINE",
                carbide_config::DatasourceState::Offline => "OFFLINE",
                carbide_config::DatasourceState::Shunned(_) => "SHUNNED",
                carbide_config::DatasourceState::Failed(_) => "FAILED",
            };
            for s in ["ONLINE", "OFFLINE", "SHUNNED", "FAILED"] {
                self.ds_state
                    .with_label_values(&[name.as_str(), s])
                    .set(i64::from(s == word));
            }
            for r in Role::ALL {
                self.ds_role
                    .with_label_values(&[name.as_str(), r.as_str()])
                    .set(i64::from(*r == d.role));
            }
        }
        for p in PolicyMode::ALL {
            self.policy
                .with_label_values(&[p.as_str()])
                .set(i64::from(state.policy == Some(*p)));
        }
        self.changes.set(state.changes as i64);
        self.epoch.set(state.epoch as i64);
        self.term.set(raft.current_term as i64);
        self.leader.set(i64::from(leader));
        self.commit
            .set(raft.last_applied.map(|l| l.index as i64).unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the manager exports is documented in the README.
    #[test]
    fn readme_lists_every_metric() {
        let r = Registry::new();
        let m = ManagerMetrics::new(&r).expect("metrics");
        let mut obs = BTreeMap::new();
        obs.insert(
            "db1".to_string(),
            Observation {
                db: crate::monitor::DbHealth::Up { read_only: false },
                replicator: Err(String::new()),
                probe_ms: 3,
            },
        );
        m.observe(&obs);
        m.refresh(
            &ClusterState::default(),
            &openraft::RaftMetrics::new_initial(1),
            false,
        );
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README");
        let names: std::collections::BTreeSet<String> =
            r.gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.len() >= 8, "{names:?}");
        for n in names {
            assert!(
                readme.contains(&format!("| `{n}` |")),
                "README's metrics list lacks `{n}`"
            );
        }
    }
}
