//! The root wiring between the manager and the connector: each committed
//! cluster state (and the partition verdict) the manager publishes becomes
//! the proxy's routing table and router state.
//!
//! Data enters as a [`Local`] from the manager's watch channel; [`table`]
//! (pure) turns it into a [`RoutingTable`]: the datasource whose role is
//! master is the primary, slaves and relays are the read replicas, each
//! with its committed state (only ONLINE ones get sessions) and the applied
//! latency this manager's probe of its replicator saw. A replica whose
//! replicator could not be asked, or is not ONLINE, counts as infinitely
//! behind: read-only sessions go to other replicas (or the primary) until it
//! reports again. [`router_state`] (pure) picks the router state: ONHOLD
//! until the first state is committed, the partition watch's ONHOLD/OFFLINE
//! while cut off from the majority, else the committed state for this
//! connector. Both leave through `Router::store` / `Router::set_state`.

use carbide_config::{Config, Role, RouterState};
use carbide_control::monitor::{ConnectorStats, Observation};
use carbide_control::node::Local;
use carbide_proxy::metrics::Metrics;
use carbide_proxy::routing::{Datasource, Router, RoutingTable};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::info;

/// Applied latency of a replica from an observation, in ms.
fn latency_ms(o: Option<&Observation>) -> u64 {
    match o.map(|o| &o.replicator) {
        Some(Ok(r)) if r.state == "ONLINE" => (r.applied_latency.max(0.0) * 1000.0) as u64,
        _ => u64::MAX,
    }
}

/// The routing table a committed state describes.
pub fn table(config: &Config, local: &Local) -> RoutingTable {
    let state = &local.state;
    let ds = |name: &str, rec: &carbide_control::state::DatasourceRecord| {
        let member = config.member(name)?;
        Some(Datasource {
            name: name.to_string(),
            addr: member.mysql.clone(),
            state: rec.state.clone(),
            applied_latency_ms: if rec.role == Role::Master {
                0
            } else {
                latency_ms(local.observations.get(name))
            },
        })
    };
    RoutingTable {
        epoch: state.epoch,
        primary: state
            .datasources
            .iter()
            .find(|(_, r)| r.role == Role::Master)
            .and_then(|(n, r)| ds(n, r)),
        replicas: state
            .datasources
            .iter()
            .filter(|(_, r)| matches!(r.role, Role::Slave | Role::Relay))
            .filter_map(|(n, r)| ds(n, r))
            .collect(),
    }
}

/// The router state this connector applies.
pub fn router_state(member: &str, local: &Local) -> RouterState {
    if let Some(s) = local.isolated {
        return s;
    }
    if !local.state.is_seeded() {
        return RouterState::OnHold;
    }
    local
        .state
        .routers
        .get(member)
        .copied()
        .unwrap_or(RouterState::Online)
}

/// Whether two tables route alike: the same datasources in the same states,
/// and each replica on the same side of the latency limit. Latency moves
/// every probe; restoring the table for that alone would wake every session.
fn routes_alike(a: &RoutingTable, b: &RoutingTable, max_latency_ms: u64) -> bool {
    let key = |t: &RoutingTable| {
        let p = t
            .primary
            .as_ref()
            .map(|d| (d.name.clone(), d.state.clone()));
        let r: Vec<_> = t
            .replicas
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.state.clone(),
                    d.applied_latency_ms <= max_latency_ms,
                )
            })
            .collect();
        (t.epoch, p, r)
    };
    key(a) == key(b)
}

/// Follows the manager's published state until the channel closes.
pub async fn follow(
    config: Config,
    member: String,
    router: Arc<Router>,
    mut local: watch::Receiver<Local>,
) {
    let max = config.connector.max_applied_latency_ms;
    loop {
        let l = local.borrow_and_update().clone();
        let t = table(&config, &l);
        if !routes_alike(&router.load(), &t, max) {
            info!(
                epoch = t.epoch,
                primary = t.primary.as_ref().map(|p| format!("{}:{}", p.name, p.state)).unwrap_or_else(|| "none".into()),
                replicas = ?t.replicas.iter().map(|r| format!("{}:{}", r.name, r.state)).collect::<Vec<_>>(),
                "routing table from the committed cluster state"
            );
            router.store(t);
        }
        let s = router_state(&member, &l);
        if router.state() != s {
            info!(from = %router.state(), to = %s, "router state from the manager");
            router.set_state(s);
        }
        if local.changed().await.is_err() {
            return;
        }
    }
}

/// The connector counters the manager reports.
pub fn connector_stats(router: Arc<Router>, metrics: Arc<Metrics>) -> ConnectorStats {
    let to_u64 = |m: std::collections::HashMap<String, usize>| -> BTreeMap<String, u64> {
        m.into_iter().map(|(k, v)| (k, v as u64)).collect()
    };
    ConnectorStats {
        pid: std::process::id(),
        router: Some(router.state()),
        created: metrics.rw.accepted.get() + metrics.ro.accepted.get(),
        active: (metrics.rw.active.get() + metrics.ro.active.get()).max(0) as u64,
        per_datasource: to_u64(router.session_counts()),
        created_per_datasource: router.created_counts().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_config::{DatasourceState, PolicyMode};
    use carbide_control::monitor::{DbHealth, ReplicatorStatus};
    use carbide_control::state::{Change, ClusterState, Command};

    fn config() -> Config {
        let text = r#"
[service]
name = "alpha"
[credentials]
user = "tungsten"
[[member]]
name = "db1"
mysql = "127.0.0.1:3306"
replicator = "127.0.0.1:10000"
thl = "127.0.0.1:2112"
manager = "127.0.0.1:11999"
role = "master"
[[member]]
name = "db2"
mysql = "127.0.0.1:3307"
replicator = "127.0.0.1:10001"
thl = "127.0.0.1:2113"
manager = "127.0.0.1:12000"
"#;
        Config::parse(text, std::path::Path::new("/tmp/c.toml")).expect("config")
    }

    fn seeded() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command {
            change: Change::Seed {
                service: "alpha".into(),
                policy: PolicyMode::Automatic,
                datasources: vec![("db1".into(), Role::Master), ("db2".into(), Role::Slave)],
                routers: vec!["db1".into(), "db2".into()],
            },
            reason: String::new(),
            by: "db1".into(),
            at_ms: 0,
        });
        s
    }

    fn obs(state: &str, lat: f64) -> Observation {
        Observation {
            db: DbHealth::Up { read_only: true },
            replicator: Ok(ReplicatorStatus {
                role: "slave".into(),
                state: state.into(),
                applied_last_seqno: 1,
                applied_latency: lat,
                maximum_stored_seq_no: 1,
                master_connect_uri: String::new(),
                pending_error: String::new(),
            }),
            probe_ms: 1,
        }
    }

    #[test]
    fn committed_state_becomes_the_routing_table() {
        let mut l = Local {
            state: Arc::new(seeded()),
            ..Default::default()
        };
        l.observations.insert("db2".into(), obs("ONLINE", 1.25));
        let t = table(&config(), &l);
        assert_eq!(t.primary.as_ref().map(|p| p.name.as_str()), Some("db1"));
        assert_eq!(t.replicas.len(), 1);
        assert_eq!(t.replicas[0].applied_latency_ms, 1250);
        assert_eq!(t.replicas[0].addr.port, 3307);
        l.observations
            .insert("db2".into(), obs("OFFLINE:ERROR", 0.1));
        assert_eq!(
            table(&config(), &l).replicas[0].applied_latency_ms,
            u64::MAX
        );
        let mut s = seeded();
        s.datasources.get_mut("db2").expect("db2").state =
            DatasourceState::Shunned("MANUALLY-SHUNNED".into());
        l.state = Arc::new(s);
        assert_eq!(
            table(&config(), &l).replicas[0].state,
            DatasourceState::Shunned("MANUALLY-SHUNNED".into())
        );
    }

    #[test]
    fn router_state_follows_commit_and_partition() {
        let mut l = Local::default();
        assert_eq!(
            router_state("db1", &l),
            RouterState::OnHold,
            "nothing committed yet"
        );
        let mut s = seeded();
        s.routers.insert("db1".into(), RouterState::Offline);
        l.state = Arc::new(s);
        assert_eq!(router_state("db1", &l), RouterState::Offline);
        assert_eq!(router_state("db2", &l), RouterState::Online);
        l.isolated = Some(RouterState::OnHold);
        assert_eq!(router_state("db2", &l), RouterState::OnHold);
    }
}
