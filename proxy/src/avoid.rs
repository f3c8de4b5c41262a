//! Datasources that just failed to connect, and the order in which a
//! session tries datasources.
//!
//! A session whose backend connect fails (refused, or no greeting within
//! `timeouts.connect-ms`) reports it with [`Avoid::failed`]; for
//! [`AVOID_FOR`] from then, [`candidate`] passes that datasource over for
//! read-only sessions while another one is eligible, so a dead replica (which
//! has the fewest sessions, and so would otherwise attract every new session)
//! stops costing each new session a failed connect, without waiting for the
//! manager to take it out of the routing table. A successful connect clears
//! the mark ([`Avoid::succeeded`]). Everything here is in memory, per carbide
//! process; [`candidate`] is a pure function of the table, the session
//! counts, what this session already tried and what is avoided.

use crate::routing::{Access, Datasource, RoutingTable};
use carbide_config::DatasourceState;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a datasource that failed to connect is passed over by new
/// read-only sessions (unless nothing else is left to try).
pub const AVOID_FOR: Duration = Duration::from_secs(5);

/// Datasources that failed to connect recently: name → avoided until.
#[derive(Debug, Default)]
pub struct Avoid {
    until: Mutex<HashMap<String, Instant>>,
}

impl Avoid {
    /// `name` failed to connect at `now`: avoid it for [`AVOID_FOR`].
    pub fn failed(&self, name: &str, now: Instant) {
        let mut m = self.until.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(name.to_string(), now + AVOID_FOR);
    }

    /// `name` connected: no longer avoided.
    pub fn succeeded(&self, name: &str) {
        let mut m = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if !m.is_empty() {
            m.remove(name);
        }
    }

    /// Names avoided at `now` (expired marks are dropped).
    pub fn avoided(&self, now: Instant) -> Vec<String> {
        let mut m = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if m.is_empty() {
            return Vec::new();
        }
        m.retain(|_, until| *until > now);
        m.keys().cloned().collect()
    }
}

/// Which datasource a session tries next, given those it `tried` already.
///
/// Read-write: the primary, if ONLINE and not tried yet. Read-only, first
/// match wins: an ONLINE replica within `max_latency_ms` that is neither
/// tried nor `avoided`, with the fewest sessions (`counts[i]` for
/// `table.replicas[i]`; ties go to the first); then the primary (ONLINE, not
/// tried, not avoided); then the avoided ones that are not tried yet, in the
/// same order, so that a session is refused only when nothing could be
/// connected.
pub fn candidate<'a>(
    table: &'a RoutingTable,
    access: Access,
    counts: &[usize],
    max_latency_ms: u64,
    tried: &[String],
    avoided: &[String],
) -> Option<&'a Datasource> {
    let untried = |d: &Datasource| !tried.contains(&d.name);
    let is_avoided = |d: &Datasource| avoided.contains(&d.name);
    let primary = table
        .primary
        .as_ref()
        .filter(|p| p.state == DatasourceState::Online && untried(p));
    if access == Access::ReadWrite {
        return primary;
    }
    let replica = |want_avoided: bool| {
        table
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.state == DatasourceState::Online
                    && r.applied_latency_ms <= max_latency_ms
                    && untried(r)
                    && is_avoided(r) == want_avoided
            })
            .min_by_key(|(i, _)| counts.get(*i).copied().unwrap_or(0))
            .map(|(_, r)| r)
    };
    replica(false)
        .or_else(|| primary.filter(|p| !is_avoided(p)))
        .or_else(|| replica(true))
        .or(primary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_config::HostPort;

    fn ds(name: &str, state: DatasourceState, lat: u64) -> Datasource {
        Datasource {
            name: name.into(),
            addr: HostPort::new("h", 1),
            state,
            applied_latency_ms: lat,
        }
    }

    fn table() -> RoutingTable {
        RoutingTable {
            epoch: 1,
            primary: Some(ds("p", DatasourceState::Online, 0)),
            replicas: vec![
                ds("a", DatasourceState::Online, 0),
                ds("b", DatasourceState::Online, 0),
                ds("c", DatasourceState::Offline, 0),
                ds("d", DatasourceState::Online, 99_000),
            ],
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn next(access: Access, counts: &[usize], tried: &[&str], avoided: &[&str]) -> Option<String> {
        let t = table();
        candidate(&t, access, counts, 1000, &names(tried), &names(avoided)).map(|d| d.name.clone())
    }

    #[test]
    fn read_only_tries_every_eligible_replica_then_the_primary() {
        let c = [0, 5, 0, 0];
        assert_eq!(next(Access::ReadOnly, &c, &[], &[]).as_deref(), Some("a"));
        assert_eq!(
            next(Access::ReadOnly, &c, &["a"], &[]).as_deref(),
            Some("b")
        );
        assert_eq!(
            next(Access::ReadOnly, &c, &["a", "b"], &[]).as_deref(),
            Some("p")
        );
        // offline and lagging replicas are never tried
        assert_eq!(next(Access::ReadOnly, &c, &["a", "b", "p"], &[]), None);
    }

    #[test]
    fn an_avoided_replica_is_passed_over_though_it_has_fewest_sessions() {
        let c = [0, 40, 0, 0];
        assert_eq!(
            next(Access::ReadOnly, &c, &[], &["a"]).as_deref(),
            Some("b")
        );
        // the primary comes before an avoided replica
        assert_eq!(
            next(Access::ReadOnly, &c, &["b"], &["a"]).as_deref(),
            Some("p")
        );
        // an avoided one is still tried when nothing else is left
        assert_eq!(
            next(Access::ReadOnly, &c, &["b", "p"], &["a"]).as_deref(),
            Some("a")
        );
        assert_eq!(
            next(Access::ReadOnly, &c, &["b"], &["a", "p"]).as_deref(),
            Some("a")
        );
        assert_eq!(
            next(Access::ReadOnly, &c, &["b", "a"], &["a", "p"]).as_deref(),
            Some("p")
        );
    }

    #[test]
    fn read_write_has_only_the_primary_avoided_or_not() {
        assert_eq!(
            next(Access::ReadWrite, &[], &[], &["p"]).as_deref(),
            Some("p")
        );
        assert_eq!(next(Access::ReadWrite, &[], &["p"], &[]), None);
        let mut t = table();
        t.primary = Some(ds("p", DatasourceState::Offline, 0));
        assert!(candidate(&t, Access::ReadWrite, &[], 1000, &[], &[]).is_none());
        // read-only with an OFFLINE primary: replicas only
        let tried = names(&["a", "b"]);
        assert!(candidate(&t, Access::ReadOnly, &[], 1000, &tried, &[]).is_none());
    }

    #[test]
    fn marks_expire_and_success_clears_them() {
        let a = Avoid::default();
        let t0 = Instant::now();
        assert!(a.avoided(t0).is_empty());
        a.failed("a", t0);
        a.failed("b", t0);
        assert_eq!(a.avoided(t0 + Duration::from_secs(1)).len(), 2);
        a.succeeded("b");
        assert_eq!(a.avoided(t0 + Duration::from_secs(1)), names(&["a"]));
        assert!(a.avoided(t0 + AVOID_FOR).is_empty());
    }
}
