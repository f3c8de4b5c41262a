//! The replicated cluster state: what every manager agrees on through raft.
//!
//! A [`ClusterState`] holds the dataservice's topology (each datasource's
//! role and state with its reason), the policy mode, the state of every
//! connector's router, the `epoch` and the last changes with their reasons.
//! It changes only by applying a committed [`Command`] (one raft entry: a
//! [`Change`], why, who asked, when) through [`ClusterState::apply`], which is
//! pure and deterministic, so every manager that applies the same log holds
//! the same state. A change that no longer fits the state when it is applied
//! (its `expect` guard failed, the datasource is gone) is refused by every
//! manager alike and changes nothing.
//!
//! Plain serde types: the state machine stores this as JSON in redb and the
//! admin API serves it as JSON.

use carbide_config::{Config, DatasourceState, PolicyMode, Role, RouterState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// How many recent changes the state keeps for operators (`cctrl`).
pub const HISTORY: usize = 32;

/// One datasource as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasourceRecord {
    /// Its role (`master`, `slave`, ...).
    pub role: Role,
    /// Its state, with the reason for SHUNNED and FAILED.
    #[serde(with = "display_from_str")]
    pub state: DatasourceState,
}

/// Which routers a router change is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouterTarget {
    /// Every connector (`router *`).
    All,
    /// One connector, by its member name.
    One(String),
}

/// A change of the cluster state: the payload of one raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The first topology, from the config, applied only to an empty state
    /// (the first leader proposes it; a second copy changes nothing).
    Seed {
        /// Service name.
        service: String,
        /// Initial policy mode.
        policy: PolicyMode,
        /// Datasources and their configured roles, all ONLINE.
        datasources: Vec<(String, Role)>,
        /// Connectors (one per member and witness process), all ONLINE.
        routers: Vec<String>,
    },
    /// `set policy ...`.
    SetPolicy(PolicyMode),
    /// A datasource's state, applied only when its current state is
    /// `expect` (when given): a decision taken on an older view does not
    /// overwrite a newer one.
    SetState {
        /// The datasource.
        datasource: String,
        /// The new state.
        #[serde(with = "display_from_str")]
        state: DatasourceState,
        /// The state the decision was taken on.
        #[serde(with = "option_display_from_str")]
        expect: Option<DatasourceState>,
    },
    /// `router * online|offline`, `router NAME ...`.
    SetRouter {
        /// Which routers.
        target: RouterTarget,
        /// Their new state.
        state: RouterState,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Seed {
                service,
                datasources,
                ..
            } => write!(
                f,
                "seed service '{service}' with {} datasources",
                datasources.len()
            ),
            Change::SetPolicy(p) => write!(f, "policy {p}"),
            Change::SetState {
                datasource, state, ..
            } => write!(f, "datasource {datasource} {state}"),
            Change::SetRouter { target, state } => match target {
                RouterTarget::All => write!(f, "router * {state}"),
                RouterTarget::One(n) => write!(f, "router {n} {state}"),
            },
        }
    }
}

/// One raft entry: a change, with why, who and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// What changes.
    pub change: Change,
    /// Why (`operator: datasource db3 shun`, `DATASERVER 'db3@alpha' STOPPED`).
    pub reason: String,
    /// The manager that proposed it.
    pub by: String,
    /// Wall-clock time of the proposal, ms since the Unix epoch.
    pub at_ms: u64,
}

/// What applying a command did; the raft response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The state changed.
    Changed,
    /// The state already was so; nothing changed.
    Unchanged,
    /// The command no longer fits the state; nothing changed.
    Refused(String),
}

/// A change as remembered in [`ClusterState::history`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The change, as operators read it.
    pub what: String,
    /// Why.
    pub reason: String,
    /// Who proposed it.
    pub by: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The replicated state of one dataservice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Service name; empty until seeded.
    pub service: String,
    /// Policy mode.
    pub policy: Option<PolicyMode>,
    /// Increases with every change of topology (a datasource's state or
    /// role), so connectors can tell an old view from a new one.
    pub epoch: u64,
    /// Every datasource by name.
    pub datasources: BTreeMap<String, DatasourceRecord>,
    /// Every connector's router state, by member name.
    pub routers: BTreeMap<String, RouterState>,
    /// Number of changes applied.
    pub changes: u64,
    /// The most recent changes, oldest first.
    pub history: VecDeque<HistoryEntry>,
}

impl ClusterState {
    /// Whether the first topology has been committed.
    pub fn is_seeded(&self) -> bool {
        !self.service.is_empty()
    }

    /// The policy mode (AUTOMATIC before seeding).
    pub fn policy(&self) -> PolicyMode {
        self.policy.unwrap_or(PolicyMode::Automatic)
    }

    /// The datasource whose role is master, if any.
    pub fn primary(&self) -> Option<(&str, &DatasourceRecord)> {
        self.datasources
            .iter()
            .find(|(_, d)| d.role == Role::Master)
            .map(|(n, d)| (n.as_str(), d))
    }

    /// Applies a committed command. Deterministic: depends on nothing but
    /// the state and the command.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let outcome = self.apply_change(&cmd.change);
        if outcome == Outcome::Changed {
            self.changes += 1;
            self.history.push_back(HistoryEntry {
                what: cmd.change.to_string(),
                reason: cmd.reason.clone(),
                by: cmd.by.clone(),
                at_ms: cmd.at_ms,
            });
            while self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
        outcome
    }

    fn apply_change(&mut self, change: &Change) -> Outcome {
        match change {
            Change::Seed {
                service,
                policy,
                datasources,
                routers,
            } => {
                if self.is_seeded() {
                    return Outcome::Unchanged;
                }
                self.service = service.clone();
                self.policy = Some(*policy);
                self.epoch = 1;
                self.datasources = datasources
                    .iter()
                    .map(|(n, role)| {
                        (
                            n.clone(),
                            DatasourceRecord {
                                role: *role,
                                state: DatasourceState::Online,
                            },
                        )
                    })
                    .collect();
                self.routers = routers
                    .iter()
                    .map(|n| (n.clone(), RouterState::Online))
                    .collect();
                Outcome::Changed
            }
            Change::SetPolicy(p) => {
                if self.policy == Some(*p) {
                    return Outcome::Unchanged;
                }
                self.policy = Some(*p);
                Outcome::Changed
            }
            Change::SetState {
                datasource,
                state,
                expect,
            } => {
                let Some(ds) = self.datasources.get_mut(datasource) else {
                    return Outcome::Refused(format!("no datasource '{datasource}'"));
                };
                if let Some(e) = expect {
                    if *e != ds.state {
                        return Outcome::Refused(format!(
                            "datasource '{datasource}' is {} now, not {e}",
                            ds.state
                        ));
                    }
                }
                if ds.state == *state {
                    return Outcome::Unchanged;
                }
                ds.state = state.clone();
                self.epoch += 1;
                Outcome::Changed
            }
            Change::SetRouter { target, state } => {
                let names: Vec<String> = match target {
                    RouterTarget::All => self.routers.keys().cloned().collect(),
                    RouterTarget::One(n) if self.routers.contains_key(n) => vec![n.clone()],
                    RouterTarget::One(n) => {
                        return Outcome::Refused(format!("no connector '{n}'"));
                    }
                };
                let mut changed = false;
                for n in names {
                    if let Some(s) = self.routers.get_mut(&n) {
                        changed |= *s != *state;
                        *s = *state;
                    }
                }
                if changed {
                    Outcome::Changed
                } else {
                    Outcome::Unchanged
                }
            }
        }
    }
}

/// The [`Change::Seed`] a config describes: members with their roles, one
/// connector per member and witness.
pub fn seed_from_config(config: &Config) -> Change {
    Change::Seed {
        service: config.service.name.clone(),
        policy: config.service.policy,
        datasources: config
            .members
            .iter()
            .map(|m| (m.name.clone(), m.role))
            .collect(),
        routers: config.members.iter().map(|m| m.name.clone()).collect(),
    }
}

/// Serializes a `Display + FromStr` value as its string (`FAILED(reason)`).
mod display_from_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod option_display_from_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(change: Change) -> Command {
        Command {
            change,
            reason: "test".into(),
            by: "db1".into(),
            at_ms: 1,
        }
    }

    fn seeded() -> ClusterState {
        let mut s = ClusterState::default();
        let seed = Change::Seed {
            service: "alpha".into(),
            policy: PolicyMode::Automatic,
            datasources: vec![("db1".into(), Role::Master), ("db2".into(), Role::Slave)],
            routers: vec!["db1".into(), "db2".into()],
        };
        assert_eq!(s.apply(&cmd(seed.clone())), Outcome::Changed);
        assert_eq!(s.apply(&cmd(seed)), Outcome::Unchanged, "seeded once");
        s
    }

    #[test]
    fn state_change_bumps_epoch_and_keeps_reason() {
        let mut s = seeded();
        let failed = DatasourceState::Failed("DATASERVER 'db2@alpha' STOPPED".into());
        let c = cmd(Change::SetState {
            datasource: "db2".into(),
            state: failed.clone(),
            expect: Some(DatasourceState::Online),
        });
        assert_eq!(s.apply(&c), Outcome::Changed);
        assert_eq!(s.epoch, 2);
        assert_eq!(s.datasources["db2"].state, failed);
        assert_eq!(
            s.history.back().map(|h| h.what.as_str()),
            Some("datasource db2 FAILED(DATASERVER 'db2@alpha' STOPPED)")
        );
        // a decision taken on the ONLINE view no longer applies
        assert!(matches!(s.apply(&c), Outcome::Refused(_)));
        assert_eq!(s.epoch, 2);
    }

    #[test]
    fn router_changes_all_or_one() {
        let mut s = seeded();
        let off = Change::SetRouter {
            target: RouterTarget::All,
            state: RouterState::Offline,
        };
        assert_eq!(s.apply(&cmd(off.clone())), Outcome::Changed);
        assert!(s.routers.values().all(|r| *r == RouterState::Offline));
        assert_eq!(s.apply(&cmd(off)), Outcome::Unchanged);
        let one = Change::SetRouter {
            target: RouterTarget::One("db9".into()),
            state: RouterState::Online,
        };
        assert!(matches!(s.apply(&cmd(one)), Outcome::Refused(_)));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = seeded();
        s.apply(&cmd(Change::SetState {
            datasource: "db2".into(),
            state: DatasourceState::Shunned("MANUALLY-SHUNNED".into()),
            expect: None,
        }));
        let text = serde_json::to_string(&s).expect("serialize");
        assert!(text.contains("SHUNNED(MANUALLY-SHUNNED)"), "{text}");
        let back: ClusterState = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, s);
    }
}
