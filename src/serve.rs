//! `carbide serve`: runs the manager and the connector of one member.
//!
//! With `--member NAME` (the normal way) the manager starts first and the
//! connector follows its committed cluster state (`cluster::follow`): it is
//! ONHOLD until the first state is committed. A witness member runs the
//! manager alone. With `--static-routing` there is no manager: the routing
//! table comes from the config (the `master` member is the primary, the
//! others replicas, all ONLINE) and is re-read on SIGHUP. The admin port
//! (the member's manager address) serves the connector's `/metrics` and
//! `/status` and the manager's API; every other route needs the dataservice
//! secret. SIGTERM/SIGINT stop accepting, let open sessions reach a
//! transaction boundary (up to `timeouts.disconnect-ms`), then exit.

use carbide_config::{Config, DatasourceState, HostPort, Role};
use carbide_control::http::{require_secret, Secret};
use carbide_control::node::{Node, StartError};
use carbide_proxy::admin::{self, AdminState};
use carbide_proxy::listener::{self, Limit};
use carbide_proxy::metrics::Metrics;
use carbide_proxy::routing::{Access, Datasource, Router, RoutingTable};
use carbide_proxy::session::{Settings, Shared};
use carbide_proxy::workers::Workers;
use prometheus::Encoder;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Why `carbide serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config cannot be used (exit status 64).
    #[error("{0}")]
    Config(String),
    /// Something at start-up failed (a port, a file).
    #[error("{0}")]
    Start(String),
}

/// The routing table a static config describes.
pub fn table_from_config(config: &Config, epoch: u64) -> RoutingTable {
    let ds = |m: &carbide_config::Member| Datasource {
        name: m.name.clone(),
        addr: m.mysql.clone(),
        state: DatasourceState::Online,
        applied_latency_ms: 0,
    };
    RoutingTable {
        epoch,
        primary: config
            .members
            .iter()
            .find(|m| m.role == Role::Master)
            .map(ds),
        replicas: config
            .members
            .iter()
            .filter(|m| matches!(m.role, Role::Slave | Role::Relay))
            .map(ds)
            .collect(),
    }
}

async fn bind(key: &str, addr: &HostPort) -> Result<TcpListener, ServeError> {
    TcpListener::bind((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| ServeError::Start(format!("{key} = \"{addr}\": cannot listen: {e}")))
}

fn describe(t: &RoutingTable) -> String {
    let primary = t
        .primary
        .as_ref()
        .map(|p| p.name.as_str())
        .unwrap_or("none");
    let replicas: Vec<&str> = t.replicas.iter().map(|r| r.name.as_str()).collect();
    format!(
        "epoch {} primary {primary} replicas [{}]",
        t.epoch,
        replicas.join(", ")
    )
}

/// How `carbide serve` runs.
pub struct ServeArgs {
    /// The config file.
    pub path: PathBuf,
    /// The member (or witness) this process runs on.
    pub member: Option<String>,
    /// Admin API address overriding the member's manager address.
    pub admin: Option<HostPort>,
    /// Connector only, routing from the config (no manager).
    pub static_routing: bool,
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let ServeArgs {
        path,
        member,
        admin: admin_addr,
        static_routing,
    } = args;
    let config = Config::load(&path).map_err(|e| ServeError::Config(e.to_string()))?;
    let managed = match (&member, static_routing) {
        (Some(m), false) => Some(m.clone()),
        (None, false) => {
            return Err(ServeError::Config(
                "--member NAME is needed to run the manager (or --static-routing for a connector that routes from the config alone)".into(),
            ))
        }
        (_, true) => None,
    };
    if managed.is_some() && admin_addr.is_some() {
        return Err(ServeError::Config(
            "--admin goes with --static-routing: with a manager, the admin API is the member's manager address, where the other managers reach it".into(),
        ));
    }
    if let Some(w) = managed.as_deref().and_then(|m| config.witness(m)) {
        return run_witness(config.clone(), w.name.clone(), w.manager.clone()).await;
    }
    let admin_addr = match (admin_addr, &member) {
        (Some(a), _) => Some(a),
        (None, Some(m)) => Some(
            config
                .member(m)
                .ok_or_else(|| {
                    ServeError::Config(format!(
                        "--member {m}: no such member in {}",
                        path.display()
                    ))
                })?
                .manager
                .clone(),
        ),
        (None, None) => None,
    };
    let secret = config
        .secret()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let tls = match &config.tls {
        Some(t) => Some(
            carbide_proxy::tls::acceptor(&config.resolve(&t.cert), &config.resolve(&t.key))
                .map_err(|e| ServeError::Config(format!("[tls]: {e}")))?,
        ),
        None => None,
    };
    let backend_tls = match &config.tls {
        Some(t) if t.to_server => {
            let ca = t.ca.as_ref().ok_or_else(|| {
                ServeError::Config(
                    "[tls] to-server = true needs tls.ca to verify the servers".into(),
                )
            })?;
            Some(
                carbide_proxy::tls::connector(&config.resolve(ca))
                    .map_err(|e| ServeError::Config(format!("tls.ca: {e}")))?,
            )
        }
        _ => None,
    };
    let metrics = Arc::new(Metrics::new().map_err(|e| ServeError::Start(format!("metrics: {e}")))?);
    let router = Router::new(config.connector.max_applied_latency_ms);
    let node = match &managed {
        Some(m) => {
            // nothing is routed until the manager has committed a state
            router.set_state(carbide_config::RouterState::OnHold);
            let stats = {
                let (router, metrics) = (router.clone(), metrics.clone());
                Box::new(move || crate::cluster::connector_stats(router.clone(), metrics.clone()))
            };
            let node = Node::start(config.clone(), m, Some(stats), metrics.registry())
                .await
                .map_err(|e| match e {
                    StartError::Config(e) => ServeError::Config(e),
                    StartError::Start(e) => ServeError::Start(e),
                })?;
            tokio::spawn(crate::cluster::follow(
                config.clone(),
                m.clone(),
                router.clone(),
                node.local(),
            ));
            info!(member = %m, "manager started; the connector follows the committed cluster state");
            Some(node)
        }
        None => {
            let table = table_from_config(&config, 1);
            info!(table = %describe(&table), "static routing table from {}", path.display());
            router.store(table);
            None
        }
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let t = &config.timeouts;
    let shared = Arc::new(Shared {
        router: router.clone(),
        metrics: metrics.clone(),
        tls,
        backend_tls,
        settings: Settings {
            connect_timeout: Duration::from_millis(t.connect_ms),
            handshake_timeout: Duration::from_millis(t.handshake_ms),
            disconnect_timeout: Duration::from_millis(t.disconnect_ms),
            wait_timeout: Duration::from_millis(t.wait_if_unavailable_ms),
        },
        shutdown: shutdown_rx.clone(),
    });
    let limit = Limit::new(config.connector.max_connections as usize);
    let workers = match config.connector.worker_threads {
        0 => carbide_proxy::workers::default_count(),
        n => n as usize,
    };
    let workers = Arc::new(
        Workers::start(workers)
            .map_err(|e| ServeError::Start(format!("cannot start the session workers: {e}")))?,
    );
    info!(
        threads = workers.len(),
        "session workers (connector.worker-threads)"
    );
    let grace = Duration::from_millis(t.disconnect_ms) + Duration::from_secs(1);

    let mut tasks = tokio::task::JoinSet::new();
    let (rw_addr, ro_addr) = config.listeners(member.as_deref());
    let rw = bind("connector.rw-listen", &rw_addr).await?;
    tasks.spawn(listener::run(
        rw,
        Access::ReadWrite,
        shared.clone(),
        limit.clone(),
        workers.clone(),
        grace,
    ));
    if config.connector.enable_ro {
        let ro = bind("connector.ro-listen", &ro_addr).await?;
        tasks.spawn(listener::run(
            ro,
            Access::ReadOnly,
            shared.clone(),
            limit.clone(),
            workers.clone(),
            grace,
        ));
    }
    if let Some(addr) = &admin_addr {
        let key = match &member {
            Some(m) => format!("member {m} manager"),
            None => "--admin".to_string(),
        };
        let l = bind(&key, addr).await?;
        let state = AdminState {
            router: router.clone(),
            metrics: metrics.clone(),
            limit: limit.clone(),
        };
        admin::refresh_gauges(&state);
        let mut app = admin::routes(state, node.is_none());
        if let Some(node) = &node {
            app = app.merge(carbide_control::api::routes(node.clone()));
        }
        if let Some(secret) = &secret {
            app = app.layer(axum::middleware::from_fn_with_state(
                Secret(secret.as_str().into()),
                require_secret,
            ));
        }
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let r = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await.map(|_| ());
                })
                .await;
            if let Err(e) = r {
                error!(error = %e, "admin API stopped");
            }
        });
        if node.is_some() {
            info!(addr = %addr, "manager and admin API (/manager/*, /raft/*, /metrics, /status, /health)");
        } else {
            info!(addr = %addr, "admin API (/metrics, /status, /router/*)");
        }
    }
    info!("carbide connector ready");

    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| ServeError::Start(format!("SIGHUP handler: {e}")))?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| ServeError::Start(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| ServeError::Start(format!("SIGINT handler: {e}")))?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if node.is_some() {
                    warn!("SIGHUP: ignored; the routing table follows the manager's committed state (reloading routing from the config is for --static-routing)");
                } else {
                    reload(&path, &router);
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down: no new sessions; open ones close at their next transaction boundary");
    let _ = shutdown_tx.send(true);
    router.poke();
    while tasks.join_next().await.is_some() {}
    // every session has ended or was dropped by its listener: stop the
    // worker threads off the async context (joining blocks)
    let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    if let Some(node) = node {
        let _ = node.raft().shutdown().await;
    }
    info!("stopped");
    Ok(())
}

/// A witness: a manager that votes and probes, with no connector.
async fn run_witness(config: Config, name: String, addr: HostPort) -> Result<(), ServeError> {
    let secret = config
        .secret()
        .map_err(|e| ServeError::Config(e.to_string()))?
        .ok_or_else(|| {
            ServeError::Config(
                "security.token-file: the manager needs the dataservice secret".into(),
            )
        })?;
    let registry = prometheus::Registry::new();
    let node = Node::start(config, &name, None, &registry)
        .await
        .map_err(|e| match e {
            StartError::Config(e) => ServeError::Config(e),
            StartError::Start(e) => ServeError::Start(e),
        })?;
    let l = bind(&format!("witness {name} manager"), &addr).await?;
    let metrics = {
        let registry = registry.clone();
        move || {
            let mut buf = Vec::new();
            let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
            String::from_utf8(buf).unwrap_or_default()
        }
    };
    let app = carbide_control::api::routes(node.clone())
        .route(
            "/metrics",
            axum::routing::get(move || std::future::ready(metrics())),
        )
        .layer(axum::middleware::from_fn_with_state(
            Secret(secret.as_str().into()),
            require_secret,
        ));
    info!(witness = %name, addr = %addr, "witness manager ready (votes and probes; no connector)");
    let (stop_tx, mut stop) = watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await.map(|_| ());
            })
            .await
    });
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| ServeError::Start(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| ServeError::Start(format!("SIGINT handler: {e}")))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = node.raft().shutdown().await;
    info!("stopped");
    Ok(())
}

fn reload(path: &Path, router: &Router) {
    match Config::load(path) {
        Ok(config) => {
            let table = table_from_config(&config, router.epoch() + 1);
            info!(table = %describe(&table), "SIGHUP: routing table reloaded");
            router.store(table);
        }
        Err(e) => {
            warn!(error = %e, "SIGHUP: config not reloaded; keeping the current routing table")
        }
    }
}
