//! The routing table and the router: where sessions go, and whether they
//! may go at all.
//!
//! A [`RoutingTable`] (primary, replicas with state and applied latency,
//! `epoch`) is built outside the proxy (from the static config today, from
//! the manager's committed cluster view later) and enters through
//! [`Router::store`]. The router state (ONLINE / ONHOLD / OFFLINE) enters
//! through [`Router::set_state`]. Sessions read both with cheap loads, and
//! wait on [`Router::changes`] to learn that either moved. Sessions report
//! failed and successful backend connects ([`Router::connect_failed`]), so
//! that new read-only sessions pass over a datasource that just failed
//! ([`avoid`]).

use crate::avoid::{self, Avoid};
use arc_swap::ArcSwap;
use carbide_config::{DatasourceState, HostPort, RouterState};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// One datasource sessions can be sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Datasource {
    /// Member name (`db1`).
    pub name: String,
    /// Its MariaDB address.
    pub addr: HostPort,
    /// Its state; only ONLINE datasources get new sessions.
    #[serde(serialize_with = "display")]
    pub state: DatasourceState,
    /// How far behind the primary its applied data is, in ms.
    pub applied_latency_ms: u64,
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Where sessions go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoutingTable {
    /// Increases with every change of topology.
    pub epoch: u64,
    /// The writable primary, when there is one.
    pub primary: Option<Datasource>,
    /// Read replicas.
    pub replicas: Vec<Datasource>,
}

/// Which listener a session came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read-write: the primary.
    ReadWrite,
    /// Read-only: an ONLINE replica within the latency limit, else the primary.
    ReadOnly,
}

impl Access {
    /// `rw` or `ro`, as used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadWrite => "rw",
            Access::ReadOnly => "ro",
        }
    }
}

/// The proxy's view of where to send sessions and whether to let them in.
pub struct Router {
    table: ArcSwap<RoutingTable>,
    state: watch::Sender<RouterState>,
    /// The same state for the hot path: a plain load, no lock.
    state_now: AtomicU8,
    /// Bumped on every table store, router state change and shutdown.
    changes: watch::Sender<u64>,
    sessions: Mutex<HashMap<String, Arc<Counts>>>,
    max_latency_ms: u64,
    avoid: Avoid,
}

/// Sessions of one datasource: open now, and created since start.
#[derive(Debug, Default)]
struct Counts {
    open: AtomicUsize,
    created: AtomicU64,
}

/// Counts a session against its datasource while alive.
#[derive(Debug)]
pub struct SessionSlot {
    count: Arc<Counts>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Router {
    /// A router with an empty table, in state ONLINE.
    pub fn new(max_latency_ms: u64) -> Arc<Router> {
        Arc::new(Router {
            table: ArcSwap::from_pointee(RoutingTable::default()),
            state: watch::Sender::new(RouterState::Online),
            state_now: AtomicU8::new(state_code(RouterState::Online)),
            changes: watch::Sender::new(0),
            sessions: Mutex::new(HashMap::new()),
            max_latency_ms,
            avoid: Avoid::default(),
        })
    }

    /// Publishes a new table and wakes sessions so they re-check their
    /// datasource.
    pub fn store(&self, table: RoutingTable) {
        self.table.store(Arc::new(table));
        self.poke();
    }

    /// The current table.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// The epoch of the current table.
    pub fn epoch(&self) -> u64 {
        self.table.load().epoch
    }

    /// Sets the router state and wakes waiting sessions.
    pub fn set_state(&self, s: RouterState) {
        self.state_now.store(state_code(s), Ordering::Release);
        self.state.send_replace(s);
        self.poke();
    }

    /// The router state.
    pub fn state(&self) -> RouterState {
        match self.state_now.load(Ordering::Acquire) {
            0 => RouterState::Online,
            1 => RouterState::OnHold,
            _ => RouterState::Offline,
        }
    }

    /// Waits for router state changes.
    pub fn state_watch(&self) -> watch::Receiver<RouterState> {
        self.state.subscribe()
    }

    /// Wakes on any change (table, state, shutdown).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes every session (used at shutdown).
    pub fn poke(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Open sessions per datasource name.
    pub fn session_counts(&self) -> HashMap<String, usize> {
        let m = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|(k, v)| (k.clone(), v.open.load(Ordering::Relaxed)))
            .collect()
    }

    /// Sessions created since start per datasource name.
    pub fn created_counts(&self) -> HashMap<String, u64> {
        let m = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|(k, v)| (k.clone(), v.created.load(Ordering::Relaxed)))
            .collect()
    }

    fn counter(&self, name: &str) -> Arc<Counts> {
        let mut m = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }

    /// Chooses a datasource for a new session and counts the session on it.
    pub fn pick(&self, access: Access) -> Option<(Datasource, SessionSlot)> {
        self.pick_next(access, &[])
    }

    /// Chooses the next datasource for a session that could not connect to
    /// those named in `tried` ([`avoid::candidate`]: recently failed
    /// datasources come last), and counts the session on it.
    pub fn pick_next(&self, access: Access, tried: &[String]) -> Option<(Datasource, SessionSlot)> {
        let table = self.table.load();
        let counts: Vec<usize> = match access {
            Access::ReadWrite => Vec::new(),
            Access::ReadOnly => table
                .replicas
                .iter()
                .map(|r| self.counter(&r.name).open.load(Ordering::Relaxed))
                .collect(),
        };
        let avoided = self.avoid.avoided(Instant::now());
        let ds = avoid::candidate(
            &table,
            access,
            &counts,
            self.max_latency_ms,
            tried,
            &avoided,
        )?
        .clone();
        let count = self.counter(&ds.name);
        count.open.fetch_add(1, Ordering::Relaxed);
        count.created.fetch_add(1, Ordering::Relaxed);
        Some((ds, SessionSlot { count }))
    }

    /// A session could not connect to datasource `name`: new read-only
    /// sessions pass it over for [`avoid::AVOID_FOR`].
    pub fn connect_failed(&self, name: &str) {
        self.avoid.failed(name, Instant::now());
    }

    /// A session connected to datasource `name`: it is no longer avoided.
    pub fn connect_succeeded(&self, name: &str) {
        self.avoid.succeeded(name);
    }

    /// Whether a session on `ds` through `access` may stay after a table
    /// change: RW sessions only on the current primary; RO sessions while
    /// their datasource is still ONLINE in the table.
    pub fn still_valid(&self, access: Access, ds: &str) -> bool {
        let t = self.table.load();
        let online = |d: &Datasource| d.name == ds && d.state == DatasourceState::Online;
        match access {
            Access::ReadWrite => t.primary.as_ref().is_some_and(online),
            Access::ReadOnly => {
                t.replicas.iter().any(online) || t.primary.as_ref().is_some_and(online)
            }
        }
    }
}

fn state_code(s: RouterState) -> u8 {
    match s {
        RouterState::Online => 0,
        RouterState::OnHold => 1,
        RouterState::Offline => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(name: &str, state: DatasourceState, lat: u64) -> Datasource {
        Datasource {
            name: name.into(),
            addr: HostPort::new("h", 1),
            state,
            applied_latency_ms: lat,
        }
    }

    #[test]
    fn pick_falls_back_to_the_primary_and_counts_sessions() {
        let router = Router::new(1000);
        router.store(RoutingTable {
            epoch: 1,
            primary: Some(ds("p", DatasourceState::Online, 0)),
            replicas: vec![ds("r", DatasourceState::Offline, 0)],
        });
        let (d, slot) = router.pick(Access::ReadOnly).unwrap();
        assert_eq!(d.name, "p");
        assert_eq!(router.session_counts()["p"], 1);
        drop(slot);
        assert_eq!(router.session_counts()["p"], 0);
        assert!(router.still_valid(Access::ReadWrite, "p"));
        assert!(!router.still_valid(Access::ReadOnly, "r"));
        router.store(RoutingTable {
            epoch: 2,
            primary: None,
            replicas: vec![],
        });
        assert!(router.pick(Access::ReadWrite).is_none());
        assert!(!router.still_valid(Access::ReadWrite, "p"));
    }

    #[test]
    fn a_replica_that_failed_is_avoided_until_it_connects_again() {
        let router = Router::new(1000);
        router.store(RoutingTable {
            epoch: 1,
            primary: Some(ds("p", DatasourceState::Online, 0)),
            replicas: vec![
                ds("a", DatasourceState::Online, 0),
                ds("b", DatasourceState::Online, 0),
            ],
        });
        let (d, slot) = router.pick(Access::ReadOnly).unwrap();
        assert_eq!(d.name, "a");
        router.connect_failed("a");
        drop(slot);
        let tried = vec!["a".to_string()];
        let (d, _b1) = router.pick_next(Access::ReadOnly, &tried).unwrap();
        assert_eq!(d.name, "b");
        // a has fewer sessions than b, but just failed
        let (d, _b2) = router.pick(Access::ReadOnly).unwrap();
        assert_eq!(d.name, "b");
        router.connect_succeeded("a");
        let (d, _a) = router.pick(Access::ReadOnly).unwrap();
        assert_eq!(d.name, "a");
        // read-write: the primary, even when it just failed
        router.connect_failed("p");
        assert_eq!(router.pick(Access::ReadWrite).unwrap().0.name, "p");
    }

    #[test]
    fn changes_wake_watchers() {
        let router = Router::new(1000);
        let mut rx = router.changes();
        let before = *rx.borrow_and_update();
        router.set_state(RouterState::Offline);
        assert!(rx.has_changed().unwrap());
        assert_ne!(*rx.borrow_and_update(), before);
        assert_eq!(router.state(), RouterState::Offline);
    }
}
