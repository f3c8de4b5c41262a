//! The policy engine: evidence and operator commands in, changes out. Pure:
//! no IO, no clocks (ages come in as numbers), so every rule is a unit test.
//!
//! **Judging a datasource** ([`judge`]). A manager's report is *fresh* when
//! it is younger than 3 × probe-interval. With `grace` = failover-grace:
//! - its own manager fresh: its database down for ≥ grace in that
//!   manager's probes → `FAILED(DATASERVER 'db3@alpha' STOPPED)`; up →
//!   healthy; down for less → no verdict yet.
//! - its own manager silent (no fresh report): the leader and a majority of
//!   the fresh managers can reach its database → healthy (only the manager
//!   is down); the leader and a majority of them have failed to for ≥ grace,
//!   and the manager has been silent for ≥ grace → `FAILED(NODE 'db3' IS
//!   UNREACHABLE)`; anything else → no verdict (the evidence disagrees).
//!
//! **The policy table** ([`evaluate`], run by the leader every probe):
//!
//! | policy | datasource | verdict | change |
//! |---|---|---|---|
//! | AUTOMATIC | replica ONLINE | failed | `FAILED(reason)`: out of routing |
//! | AUTOMATIC | replica FAILED by the monitor | healthy | `ONLINE`: back in routing |
//! | AUTOMATIC | primary ONLINE | failed | `FAILED(reason)` and failover is asked for ([`Decision::failover`]) |
//! | AUTOMATIC | primary FAILED by the monitor | healthy | `ONLINE` (it came back before any failover) |
//! | MANUAL | replica or primary ONLINE | failed | `FAILED(reason)`; nothing else |
//! | MANUAL | FAILED by the monitor | healthy | none: stays FAILED until `datasource H recover` |
//! | AUTOMATIC, MANUAL | FAILED by the monitor | failed, other reason | the reason is updated |
//! | MAINTENANCE | any | any | none (monitoring only) |
//! | any | SHUNNED, OFFLINE, `FAILED(MANUALLY-FAILED)` | any | none: operators put it there |
//! | any | any | no verdict | none |
//!
//! **Operator commands** ([`operator`]) are checked against the committed
//! state and the evidence and become changes, or a one-line refusal that
//! says why; nothing is partly applied.

use crate::monitor::{DbHealth, Report};
use crate::state::{Change, ClusterState, RouterTarget};
use carbide_config::{DatasourceState, PolicyMode, Role, RouterState};
use std::collections::BTreeMap;

/// Reason of a datasource an operator failed.
pub const MANUALLY_FAILED: &str = "MANUALLY-FAILED";
/// Reason of a datasource an operator shunned.
pub const MANUALLY_SHUNNED: &str = "MANUALLY-SHUNNED";

/// Timing the judgement uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Service name (for `db3@alpha`).
    pub service: String,
    /// `timeouts.probe-interval-ms`.
    pub probe_ms: u64,
    /// `timeouts.failover-grace-ms`.
    pub grace_ms: u64,
}

/// What the leader holds: the latest report of each manager, with its age.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// By observer: (age of the report in ms, the report).
    pub reports: BTreeMap<String, (u64, Report)>,
    /// How long the leader has been collecting reports: a manager never
    /// heard from has been silent at least this long.
    pub collecting_ms: u64,
}

/// A verdict on one datasource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reachable and answering.
    Healthy,
    /// Failed, with the reason operators see.
    Failed(String),
    /// The evidence is not enough either way (yet).
    Unknown,
}

impl Evidence {
    /// The fresh reports (younger than 3 × probe-interval), by observer:
    /// the only ones that count as evidence.
    pub fn fresh(&self, probe_ms: u64) -> impl Iterator<Item = (&String, &Report)> {
        let limit = 3 * probe_ms;
        self.reports
            .iter()
            .filter(move |(_, (age, _))| *age < limit)
            .map(|(n, (_, r))| (n, r))
    }

    /// `observer`'s report, when it is fresh.
    pub fn fresh_report(&self, observer: &str, probe_ms: u64) -> Option<&Report> {
        self.fresh(probe_ms)
            .find(|(n, _)| n.as_str() == observer)
            .map(|(_, r)| r)
    }

    fn silent_ms(&self, observer: &str) -> u64 {
        match self.reports.get(observer) {
            Some((age, _)) => *age,
            None => self.collecting_ms,
        }
    }

    /// What `observer` last saw of `ds`'s database.
    pub fn db(&self, observer: &str, ds: &str) -> Option<&DbHealth> {
        self.reports
            .get(observer)
            .and_then(|(_, r)| r.observations.get(ds))
            .map(|o| &o.db)
    }
}

fn seen<'a>(r: &'a Report, ds: &str) -> Option<&'a DbHealth> {
    r.observations.get(ds).map(|o| &o.db)
}

/// Judges one datasource (see the module doc for the rules).
pub fn judge(ds: &str, ev: &Evidence, leader: &str, s: &Settings) -> Verdict {
    let fresh: Vec<(&String, &Report)> = ev.fresh(s.probe_ms).collect();
    if let Some((_, own)) = fresh.iter().find(|(n, _)| n.as_str() == ds) {
        return match seen(own, ds) {
            Some(DbHealth::Up { .. }) => Verdict::Healthy,
            Some(d) if d.down_for_ms() >= s.grace_ms => {
                Verdict::Failed(format!("DATASERVER '{ds}@{}' STOPPED", s.service))
            }
            _ => Verdict::Unknown,
        };
    }
    // its own manager is silent: the others must agree
    let others: Vec<&DbHealth> = fresh.iter().filter_map(|(_, r)| seen(r, ds)).collect();
    if others.is_empty() {
        return Verdict::Unknown;
    }
    let majority = others.len() / 2 + 1;
    let leader_db = fresh
        .iter()
        .find(|(n, _)| n.as_str() == leader)
        .and_then(|(_, r)| seen(r, ds));
    let up = others.iter().filter(|d| d.is_up()).count();
    if leader_db.is_some_and(DbHealth::is_up) && up >= majority {
        return Verdict::Healthy;
    }
    let down = others
        .iter()
        .filter(|d| d.down_for_ms() >= s.grace_ms)
        .count();
    let leader_down = leader_db.is_some_and(|d| d.down_for_ms() >= s.grace_ms);
    if leader_down && down >= majority && ev.silent_ms(ds) >= s.grace_ms {
        return Verdict::Failed(format!("NODE '{ds}' IS UNREACHABLE"));
    }
    Verdict::Unknown
}

/// One change the leader should commit, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The change.
    pub change: Change,
    /// Why, for the log and the state's history.
    pub reason: String,
    /// The primary has failed in AUTOMATIC: failover is needed.
    pub failover: bool,
}

fn monitor_failed(state: &DatasourceState) -> Option<&str> {
    match state {
        DatasourceState::Failed(r) if r != MANUALLY_FAILED => Some(r),
        _ => None,
    }
}

/// Runs the policy table over every datasource.
pub fn evaluate(state: &ClusterState, ev: &Evidence, leader: &str, s: &Settings) -> Vec<Decision> {
    let policy = state.policy();
    if policy == PolicyMode::Maintenance {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, ds) in &state.datasources {
        if ds.role == Role::Witness {
            continue;
        }
        let verdict = judge(name, ev, leader, s);
        let set = |to: DatasourceState, reason: String, failover: bool| Decision {
            change: Change::SetState {
                datasource: name.clone(),
                state: to,
                expect: Some(ds.state.clone()),
            },
            reason,
            failover,
        };
        match (&ds.state, verdict) {
            (DatasourceState::Online, Verdict::Failed(r)) => {
                let failover = policy == PolicyMode::Automatic && ds.role == Role::Master;
                out.push(set(DatasourceState::Failed(r.clone()), r, failover));
            }
            (cur, Verdict::Failed(r)) if monitor_failed(cur).is_some_and(|c| c != r) => {
                out.push(set(DatasourceState::Failed(r.clone()), r, false));
            }
            (cur, Verdict::Healthy)
                if policy == PolicyMode::Automatic && monitor_failed(cur).is_some() =>
            {
                out.push(set(
                    DatasourceState::Online,
                    format!("DATASOURCE '{name}@{}' IS HEALTHY AGAIN", s.service),
                    false,
                ));
            }
            _ => {}
        }
    }
    out
}

/// What an operator asks of a datasource (`datasource H ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsAction {
    /// Take it out of service on purpose.
    Shun,
    /// Bring a shunned one back.
    Welcome,
    /// Bring an OFFLINE (or shunned) one ONLINE.
    Online,
    /// Take it out of routing, no failure recorded.
    Offline,
    /// Mark it failed.
    Fail,
    /// Bring a failed or shunned one back after checking its database.
    Recover,
}

impl DsAction {
    /// The cctrl word.
    pub fn word(self) -> &'static str {
        match self {
            DsAction::Shun => "shun",
            DsAction::Welcome => "welcome",
            DsAction::Online => "online",
            DsAction::Offline => "offline",
            DsAction::Fail => "fail",
            DsAction::Recover => "recover",
        }
    }
}

/// An operator command that changes the cluster state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    /// `set policy ...`
    SetPolicy(PolicyMode),
    /// `datasource H ...`
    Datasource {
        /// The datasource.
        name: String,
        /// What to do.
        action: DsAction,
    },
    /// `router *|NAME online|offline`
    Router {
        /// Which routers.
        target: RouterTarget,
        /// Their new state.
        state: RouterState,
    },
}

/// Checks an operator command against the state and the evidence; the
/// change to commit, or why not. `expert` allows acting on the primary.
pub fn operator(
    state: &ClusterState,
    ev: &Evidence,
    leader: &str,
    s: &Settings,
    cmd: &OperatorCommand,
    expert: bool,
) -> Result<Change, String> {
    match cmd {
        OperatorCommand::SetPolicy(p) => Ok(Change::SetPolicy(*p)),
        OperatorCommand::Router { target, state: st } => {
            if let RouterTarget::One(n) = target {
                if !state.routers.contains_key(n) {
                    let names: Vec<&str> = state.routers.keys().map(String::as_str).collect();
                    return Err(format!(
                        "no connector '{n}' in service '{}' (connectors: {})",
                        state.service,
                        names.join(", ")
                    ));
                }
            }
            Ok(Change::SetRouter {
                target: target.clone(),
                state: *st,
            })
        }
        OperatorCommand::Datasource { name, action } => {
            datasource(state, ev, leader, s, name, *action, expert)
        }
    }
}

fn datasource(
    state: &ClusterState,
    ev: &Evidence,
    leader: &str,
    s: &Settings,
    name: &str,
    action: DsAction,
    expert: bool,
) -> Result<Change, String> {
    let Some(ds) = state.datasources.get(name) else {
        let names: Vec<&str> = state.datasources.keys().map(String::as_str).collect();
        return Err(format!(
            "no datasource '{name}' in service '{}' (datasources: {})",
            state.service,
            names.join(", ")
        ));
    };
    let word = action.word();
    let to = match action {
        DsAction::Shun => DatasourceState::Shunned(MANUALLY_SHUNNED.into()),
        DsAction::Offline => DatasourceState::Offline,
        DsAction::Fail => DatasourceState::Failed(MANUALLY_FAILED.into()),
        DsAction::Welcome | DsAction::Online | DsAction::Recover => DatasourceState::Online,
    };
    let takes_out = matches!(action, DsAction::Shun | DsAction::Offline | DsAction::Fail);
    if takes_out && ds.role == Role::Master && !expert {
        return Err(format!(
            "'{name}' is the master: 'datasource {name} {word}' would stop all writes; type 'expert' first if that is what you want"
        ));
    }
    if ds.state == to {
        return Err(format!("datasource '{name}' is already {}", ds.state));
    }
    match (action, &ds.state) {
        (DsAction::Welcome, DatasourceState::Shunned(_)) => {}
        (DsAction::Welcome, cur) => {
            return Err(format!(
                "datasource '{name}' is {cur}: welcome brings back a SHUNNED datasource (use 'recover' for a FAILED one)"
            ))
        }
        (DsAction::Online, DatasourceState::Offline | DatasourceState::Shunned(_)) => {}
        (DsAction::Online, cur) => {
            return Err(format!(
                "datasource '{name}' is {cur}: online brings back an OFFLINE or SHUNNED datasource (use 'recover' for a FAILED one)"
            ))
        }
        (DsAction::Recover, DatasourceState::Failed(_) | DatasourceState::Shunned(_)) => {}
        (DsAction::Recover, cur) => {
            return Err(format!(
                "datasource '{name}' is {cur}: nothing to recover"
            ))
        }
        _ => {}
    }
    if to == DatasourceState::Online {
        if let Verdict::Failed(r) = judge(name, ev, leader, s) {
            return Err(format!("cannot {word} '{name}': {r}"));
        }
        match ev.db(leader, name) {
            Some(DbHealth::Up { .. }) => {}
            Some(DbHealth::Down { message, .. }) => {
                return Err(format!(
                    "cannot {word} '{name}': DATA SERVER '{name}' IS NOT AVAILABLE ({message})"
                ))
            }
            None => {
                return Err(format!(
                    "cannot {word} '{name}': its data server has not been probed yet; try again in a moment"
                ))
            }
        }
    }
    Ok(Change::SetState {
        datasource: name.to_string(),
        state: to,
        expect: Some(ds.state.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{DownKind, Observation};
    use crate::state::Command;

    const GRACE: u64 = 3000;

    fn settings() -> Settings {
        Settings {
            service: "alpha".into(),
            probe_ms: 1000,
            grace_ms: GRACE,
        }
    }

    fn state(policy: PolicyMode) -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command {
            change: Change::Seed {
                service: "alpha".into(),
                policy,
                datasources: vec![
                    ("db1".into(), Role::Master),
                    ("db2".into(), Role::Slave),
                    ("db3".into(), Role::Slave),
                ],
                routers: vec!["db1".into(), "db2".into(), "db3".into()],
            },
            reason: String::new(),
            by: "t".into(),
            at_ms: 0,
        });
        s
    }

    fn with_state(mut s: ClusterState, ds: &str, st: DatasourceState) -> ClusterState {
        if let Some(d) = s.datasources.get_mut(ds) {
            d.state = st;
        }
        s
    }

    fn up() -> DbHealth {
        DbHealth::Up { read_only: false }
    }

    fn down(for_ms: u64) -> DbHealth {
        DbHealth::Down {
            kind: DownKind::Refused,
            message: "Connection refused".into(),
            for_ms,
        }
    }

    /// Evidence where every observer in `seen` reports (age 100 ms) what it
    /// sees of each datasource; datasources not named are up.
    fn evidence(seen: &[(&str, &[(&str, DbHealth)])]) -> Evidence {
        let mut ev = Evidence {
            reports: BTreeMap::new(),
            collecting_ms: 60_000,
        };
        for (observer, dbs) in seen {
            let mut observations = BTreeMap::new();
            for ds in ["db1", "db2", "db3"] {
                let db = dbs
                    .iter()
                    .find(|(n, _)| *n == ds)
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(up);
                observations.insert(
                    ds.to_string(),
                    Observation {
                        db,
                        replicator: Err("not asked".into()),
                        probe_ms: 1,
                    },
                );
            }
            ev.reports.insert(
                observer.to_string(),
                (
                    100,
                    Report {
                        observer: observer.to_string(),
                        observations,
                        connector: None,
                    },
                ),
            );
        }
        ev
    }

    fn db3_stopped(for_ms: u64) -> Evidence {
        evidence(&[
            ("db1", &[("db3", down(for_ms))]),
            ("db2", &[("db3", down(for_ms))]),
            ("db3", &[("db3", down(for_ms))]),
        ])
    }

    /// db3's whole host gone: its manager is silent, the others cannot reach it.
    fn db3_unreachable() -> Evidence {
        evidence(&[
            ("db1", &[("db3", down(GRACE + 1))]),
            ("db2", &[("db3", down(GRACE + 1))]),
        ])
    }

    fn changes(d: &[Decision]) -> Vec<(String, DatasourceState, bool)> {
        d.iter()
            .filter_map(|d| match &d.change {
                Change::SetState {
                    datasource, state, ..
                } => Some((datasource.clone(), state.clone(), d.failover)),
                _ => None,
            })
            .collect()
    }

    fn stopped(ds: &str) -> DatasourceState {
        DatasourceState::Failed(format!("DATASERVER '{ds}@alpha' STOPPED"))
    }

    #[test]
    fn automatic_failed_replica_goes_failed() {
        let d = evaluate(
            &state(PolicyMode::Automatic),
            &db3_stopped(GRACE),
            "db1",
            &settings(),
        );
        assert_eq!(changes(&d), vec![("db3".into(), stopped("db3"), false)]);
    }

    #[test]
    fn automatic_unreachable_node_is_named_so() {
        let d = evaluate(
            &state(PolicyMode::Automatic),
            &db3_unreachable(),
            "db1",
            &settings(),
        );
        assert_eq!(
            changes(&d),
            vec![(
                "db3".into(),
                DatasourceState::Failed("NODE 'db3' IS UNREACHABLE".into()),
                false
            )]
        );
    }

    #[test]
    fn a_failure_shorter_than_the_grace_changes_nothing() {
        let d = evaluate(
            &state(PolicyMode::Automatic),
            &db3_stopped(GRACE - 1),
            "db1",
            &settings(),
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn automatic_failed_replica_comes_back_when_healthy() {
        let s = with_state(state(PolicyMode::Automatic), "db3", stopped("db3"));
        let d = evaluate(
            &s,
            &evidence(&[("db1", &[]), ("db3", &[])]),
            "db1",
            &settings(),
        );
        assert_eq!(
            changes(&d),
            vec![("db3".into(), DatasourceState::Online, false)]
        );
    }

    #[test]
    fn automatic_failed_primary_asks_for_failover() {
        let ev = evidence(&[
            ("db1", &[("db1", down(GRACE))]),
            ("db2", &[("db1", down(GRACE))]),
        ]);
        let d = evaluate(&state(PolicyMode::Automatic), &ev, "db2", &settings());
        assert_eq!(changes(&d), vec![("db1".into(), stopped("db1"), true)]);
    }

    #[test]
    fn automatic_primary_that_comes_back_before_failover_is_online_again() {
        let s = with_state(state(PolicyMode::Automatic), "db1", stopped("db1"));
        let d = evaluate(
            &s,
            &evidence(&[("db1", &[]), ("db2", &[])]),
            "db2",
            &settings(),
        );
        assert_eq!(
            changes(&d),
            vec![("db1".into(), DatasourceState::Online, false)]
        );
    }

    #[test]
    fn manual_failed_replica_goes_failed_and_stays_failed() {
        let d = evaluate(
            &state(PolicyMode::Manual),
            &db3_stopped(GRACE),
            "db1",
            &settings(),
        );
        assert_eq!(changes(&d), vec![("db3".into(), stopped("db3"), false)]);
        let s = with_state(state(PolicyMode::Manual), "db3", stopped("db3"));
        let d = evaluate(
            &s,
            &evidence(&[("db1", &[]), ("db3", &[])]),
            "db1",
            &settings(),
        );
        assert!(
            d.is_empty(),
            "MANUAL waits for 'datasource db3 recover': {d:?}"
        );
    }

    #[test]
    fn manual_failed_primary_is_shown_failed_without_failover() {
        let ev = evidence(&[
            ("db2", &[("db1", down(GRACE))]),
            ("db3", &[("db1", down(GRACE))]),
        ]);
        let d = evaluate(&state(PolicyMode::Manual), &ev, "db2", &settings());
        assert_eq!(
            changes(&d),
            vec![(
                "db1".into(),
                DatasourceState::Failed("NODE 'db1' IS UNREACHABLE".into()),
                false
            )]
        );
    }

    #[test]
    fn failure_reason_follows_the_evidence() {
        let s = with_state(state(PolicyMode::Automatic), "db3", stopped("db3"));
        let d = evaluate(&s, &db3_unreachable(), "db1", &settings());
        assert_eq!(
            changes(&d),
            vec![(
                "db3".into(),
                DatasourceState::Failed("NODE 'db3' IS UNREACHABLE".into()),
                false
            )]
        );
    }

    #[test]
    fn maintenance_changes_nothing() {
        let s = state(PolicyMode::Maintenance);
        assert!(evaluate(&s, &db3_stopped(GRACE * 10), "db1", &settings()).is_empty());
        let s = with_state(s, "db3", stopped("db3"));
        assert!(evaluate(
            &s,
            &evidence(&[("db1", &[]), ("db3", &[])]),
            "db1",
            &settings()
        )
        .is_empty());
    }

    #[test]
    fn operator_states_are_left_alone() {
        for st in [
            DatasourceState::Shunned(MANUALLY_SHUNNED.into()),
            DatasourceState::Offline,
            DatasourceState::Failed(MANUALLY_FAILED.into()),
        ] {
            let s = with_state(state(PolicyMode::Automatic), "db3", st.clone());
            assert!(
                evaluate(&s, &db3_stopped(GRACE), "db1", &settings()).is_empty(),
                "{st}"
            );
            assert!(
                evaluate(
                    &s,
                    &evidence(&[("db1", &[]), ("db3", &[])]),
                    "db1",
                    &settings()
                )
                .is_empty(),
                "{st}"
            );
        }
    }

    #[test]
    fn disagreeing_evidence_changes_nothing() {
        // db3's own manager is silent; the leader cannot reach db3 but db2 can
        let ev = evidence(&[("db1", &[("db3", down(GRACE * 2))]), ("db2", &[])]);
        assert_eq!(judge("db3", &ev, "db1", &settings()), Verdict::Unknown);
        assert!(evaluate(&state(PolicyMode::Automatic), &ev, "db1", &settings()).is_empty());
        // db3's manager is silent but its database answers everyone: healthy
        let ev = evidence(&[("db1", &[]), ("db2", &[])]);
        assert_eq!(judge("db3", &ev, "db1", &settings()), Verdict::Healthy);
    }

    #[test]
    fn a_stale_report_is_not_evidence() {
        let mut ev = db3_stopped(GRACE);
        for (age, _) in ev.reports.values_mut() {
            *age = 10_000;
        }
        assert_eq!(judge("db3", &ev, "db1", &settings()), Verdict::Unknown);
    }

    fn op(
        s: &ClusterState,
        ev: &Evidence,
        name: &str,
        a: DsAction,
        expert: bool,
    ) -> Result<Change, String> {
        operator(
            s,
            ev,
            "db1",
            &settings(),
            &OperatorCommand::Datasource {
                name: name.into(),
                action: a,
            },
            expert,
        )
    }

    #[test]
    fn shun_welcome_recover() {
        let s = state(PolicyMode::Automatic);
        let healthy = evidence(&[("db1", &[]), ("db2", &[]), ("db3", &[])]);
        let c = op(&s, &healthy, "db3", DsAction::Shun, false).expect("shun");
        assert_eq!(
            c,
            Change::SetState {
                datasource: "db3".into(),
                state: DatasourceState::Shunned(MANUALLY_SHUNNED.into()),
                expect: Some(DatasourceState::Online),
            }
        );
        let shunned = with_state(
            s.clone(),
            "db3",
            DatasourceState::Shunned(MANUALLY_SHUNNED.into()),
        );
        assert!(op(&shunned, &healthy, "db3", DsAction::Welcome, false).is_ok());
        assert!(op(&shunned, &healthy, "db3", DsAction::Recover, false).is_ok());
        let e = op(&shunned, &healthy, "db3", DsAction::Shun, false).unwrap_err();
        assert_eq!(e, "datasource 'db3' is already SHUNNED(MANUALLY-SHUNNED)");
        let failed = with_state(s, "db3", stopped("db3"));
        let e = op(
            &failed,
            &db3_stopped(GRACE),
            "db3",
            DsAction::Recover,
            false,
        )
        .unwrap_err();
        assert_eq!(e, "cannot recover 'db3': DATASERVER 'db3@alpha' STOPPED");
        assert!(op(&failed, &healthy, "db3", DsAction::Recover, false).is_ok());
        let e = op(&failed, &healthy, "db3", DsAction::Welcome, false).unwrap_err();
        assert!(e.contains("use 'recover'"), "{e}");
    }

    #[test]
    fn the_master_needs_expert_mode_to_be_taken_out() {
        let s = state(PolicyMode::Automatic);
        let ev = evidence(&[("db1", &[])]);
        let e = op(&s, &ev, "db1", DsAction::Shun, false).unwrap_err();
        assert!(e.contains("type 'expert' first"), "{e}");
        assert!(op(&s, &ev, "db1", DsAction::Shun, true).is_ok());
        let e = op(&s, &ev, "db9", DsAction::Shun, false).unwrap_err();
        assert_eq!(
            e,
            "no datasource 'db9' in service 'alpha' (datasources: db1, db2, db3)"
        );
    }

    #[test]
    fn router_commands() {
        let s = state(PolicyMode::Automatic);
        let ev = Evidence::default();
        let c = operator(
            &s,
            &ev,
            "db1",
            &settings(),
            &OperatorCommand::Router {
                target: RouterTarget::All,
                state: RouterState::Offline,
            },
            false,
        );
        assert!(c.is_ok());
        let e = operator(
            &s,
            &ev,
            "db1",
            &settings(),
            &OperatorCommand::Router {
                target: RouterTarget::One("db7".into()),
                state: RouterState::Offline,
            },
            false,
        )
        .unwrap_err();
        assert!(e.starts_with("no connector 'db7'"), "{e}");
    }
}
