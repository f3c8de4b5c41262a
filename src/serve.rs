//! `carbide serve`: runs the connector (and, as it is built, the manager)
//! for one dataservice.
//!
//! The config enters at start and again on SIGHUP; until the manager
//! exists, the routing table comes from it (the `master` member is the
//! primary, the others replicas, all ONLINE) and is stored into the proxy's
//! router with a new epoch on each reload. SIGTERM/SIGINT stop accepting,
//! let open sessions reach a transaction boundary (up to
//! `timeouts.disconnect-ms`), then exit.

use carbide_config::{Config, DatasourceState, HostPort, Role};
use carbide_proxy::admin::{self, AdminState};
use carbide_proxy::listener::{self, Limit};
use carbide_proxy::metrics::Metrics;
use carbide_proxy::routing::{Access, Datasource, Router, RoutingTable};
use carbide_proxy::session::{Settings, Shared};
use carbide_proxy::workers::Workers;
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

/// Runs until SIGTERM/SIGINT.
pub async fn run(
    path: PathBuf,
    member: Option<String>,
    admin_addr: Option<HostPort>,
) -> Result<(), ServeError> {
    let config = Config::load(&path).map_err(|e| ServeError::Config(e.to_string()))?;
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
    let table = table_from_config(&config, 1);
    info!(table = %describe(&table), "routing table from {}", path.display());
    router.store(table);
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
    let rw = bind("connector.rw-listen", &config.connector.rw_listen).await?;
    tasks.spawn(listener::run(
        rw,
        Access::ReadWrite,
        shared.clone(),
        limit.clone(),
        workers.clone(),
        grace,
    ));
    if config.connector.enable_ro {
        let ro = bind("connector.ro-listen", &config.connector.ro_listen).await?;
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
        let app = admin::routes(state);
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
        info!(addr = %addr, "admin API (/metrics, /status, /router/*)");
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
            _ = hup.recv() => reload(&path, &router),
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
