//! `carbide-replicator`: the replicator daemon (one per database host).
//!
//! Reads one dataservice config per `--config` (one service each), serves
//! the member named by `--member`: a `master` member extracts its local
//! MariaDB's binlog into the THL; a `slave` or `relay` member pulls THL from
//! the config's master member and applies it to its local MariaDB. Every
//! service serves its THL to replicas on the member's `thl` address. The
//! admin API (see `trepctl`) listens on the member's `replicator` address
//! of the first config. SIGTERM/SIGINT take every
//! service offline at a transaction boundary, then exit.
//!
//! Each config's `[security]` secret guards that service: its mutating
//! admin routes want it as a bearer token, its THL server wants a hello
//! that proves it, and its THL client proves it to the master. A config
//! without a secret is refused (exit 64, naming `security.token-file`)
//! unless `--insecure-no-secret` is given: the daemon never runs
//! unauthenticated by accident.

/// mimalloc instead of glibc malloc: the applier's dispatcher allocates and
/// frees every row value it decodes from the THL and every event it
/// encodes; under glibc that was about 40% of its CPU (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use carbide_replicator::admin::{router, AppState};
use carbide_replicator::apply::RowApply;
use carbide_replicator::daemon::{Service, ServiceSpec, State};
use carbide_replicator::extract::{ExtractorConfig, SourceOpts, StartPosition};
use carbide_replicator::thl::{FsyncPolicy, WriterConfig};
use carbide_replicator::transfer::{serve, ServerConfig};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The carbide replicator daemon.
#[derive(Parser, Debug)]
#[command(name = "carbide-replicator", version)]
struct Args {
    /// Dataservice config file; repeat to host several services.
    #[arg(long = "config", required = true, env = "CARBIDE_CONFIG")]
    config: Vec<PathBuf>,
    /// The member this process serves (its local database and addresses).
    #[arg(long)]
    member: String,
    /// Where a master starts when its THL is empty: current, earliest,
    /// FILE:OFFSET or gtid:D-S-N.
    #[arg(long, default_value = "current")]
    start: String,
    /// THL fsync policy: `commit` (fsync every group commit) or a number
    /// of milliseconds between fsyncs.
    #[arg(long, default_value = "commit")]
    fsync: String,
    /// Binlog heartbeat period asked of the database, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_period_ms: u64,
    /// THL segment size in MiB.
    #[arg(long, default_value_t = 100)]
    segment_mb: u64,
    /// Leave services OFFLINE at start (default: masters, slaves and
    /// relays go online).
    #[arg(long)]
    no_auto_online: bool,
    /// server_id to register with the database as a replication client
    /// (default 1000000000 + the database port).
    #[arg(long)]
    replica_server_id: Option<u32>,
    /// Applier: most transactions applied in one database commit.
    #[arg(long, default_value_t = 100)]
    block_commit: usize,
    /// Applier: parallel apply channels. Transactions are spread by shard
    /// (their schema; crc32c of its name modulo N), each channel with its
    /// own connection and its own trep_commit_seqno row (task_id = channel).
    /// Transactions touching several schemas, or holding DDL, are applied
    /// alone once the channels have caught up. The count may change across
    /// restarts (the applier first catches up with the old count if the
    /// rows differ).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    channels: u16,
    /// Applier: most channels applying a block at the same time; 0 (the
    /// default) is one per CPU core of this host. A channel waiting for its
    /// turn gathers more transactions into its next block, and the database
    /// is spared more concurrent transactions than it has cores for.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    active_channels: u16,
    /// Applier: how row changes reach the database. `events`: as binlog
    /// row events in BINLOG statements, applied by the server's own
    /// replication code (no SQL parsing; needs the BINLOG REPLAY privilege;
    /// missing rows are errors). `sql`: as INSERT / UPDATE / DELETE
    /// statements. `auto`: events when the database accepts them, else
    /// SQL with a warning. Changes that have no exact row-event form (e.g.
    /// old temporal types, partial row images) are applied as SQL.
    #[arg(long, value_enum, default_value_t = RowApply::Auto)]
    row_apply: RowApply,
    /// Serve THL over TLS with this certificate chain (PEM; needs
    /// --thl-tls-key).
    #[arg(long, requires = "thl_tls_key")]
    thl_tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --thl-tls-cert.
    #[arg(long, requires = "thl_tls_cert")]
    thl_tls_key: Option<PathBuf>,
    /// Pull THL from the master over TLS, trusting this CA bundle (PEM).
    #[arg(long)]
    thl_tls_ca: Option<PathBuf>,
    /// Run services whose config has no `[security]` secret without
    /// authentication: anyone who reaches the admin API can purge, reset or
    /// change roles, and anyone who reaches the THL port can read every row
    /// change. For a laptop, never for a network.
    #[arg(long)]
    insecure_no_secret: bool,
    /// Most concurrent admin API connections; more are answered 503.
    #[arg(long, default_value_t = carbide_replicator::admin::DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_admin_connections: u32,
    /// Most concurrent replicas per THL server; more are refused.
    #[arg(long, default_value_t = carbide_replicator::transfer::server::DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_thl_connections: u32,
}

/// The other services (of `all`) whose appliers write into `this`
/// member's database what came from a database `this` service replicates
/// to: their master is another member of `this` service, and `member` is
/// not their master. Its extractor leaves their transactions out, so that
/// two services replicating in opposite directions (`east` a→b, `west`
/// b→a) do not loop, while a chain (`east` a→b, `south` b→c) passes
/// east's transactions on to c.
fn leave_out<'a>(
    this: &carbide_config::Config,
    all: impl Iterator<Item = &'a carbide_config::Config>,
    member: &str,
) -> Vec<String> {
    use carbide_config::Role;
    let ours: Vec<_> = this
        .members
        .iter()
        .filter(|o| o.name != member)
        .map(|o| &o.mysql)
        .collect();
    all.filter(|x| x.service.name != this.service.name)
        .filter(|x| {
            let master = x.members.iter().find(|o| o.role == Role::Master);
            let local = x.member(member);
            master.is_some_and(|mm| ours.contains(&&mm.mysql))
                && local.is_some_and(|l| l.role != Role::Master)
        })
        .map(|x| x.service.name.clone())
        .collect()
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("carbide-replicator: {msg}");
    ExitCode::from(64)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let start: StartPosition = match args.start.parse() {
        Ok(s) => s,
        Err(e) => return usage_error(format!("--start {e}")),
    };
    let fsync = match args.fsync.as_str() {
        "commit" => FsyncPolicy::EveryCommit,
        ms => match ms.parse::<u64>() {
            Ok(n) => FsyncPolicy::Interval(Duration::from_millis(n)),
            Err(_) => {
                return usage_error(format!("--fsync '{ms}': expected commit or milliseconds"))
            }
        },
    };
    let mut specs = Vec::new();
    let mut thl_listen = Vec::new();
    let mut listen = None;
    let mut loaded = Vec::new();
    for path in &args.config {
        match carbide_config::Config::load(path) {
            Ok(c) => loaded.push((path, c)),
            Err(e) => return usage_error(e),
        }
    }
    for (path, cfg) in &loaded {
        let Some(m) = cfg.member(&args.member) else {
            let names: Vec<&str> = cfg.members.iter().map(|m| m.name.as_str()).collect();
            return usage_error(format!(
                "{}: no member '{}' (members: {})",
                path.display(),
                args.member,
                names.join(", ")
            ));
        };
        let thl_dir = match cfg.thl_dir(Some(&m.name)) {
            Ok(d) => d,
            Err(e) => return usage_error(e),
        };
        let secret = match cfg.secret() {
            Ok(Some(s)) => Some(carbide_replicator::auth::Secret::new(&s)),
            Ok(None) if args.insecure_no_secret => {
                tracing::warn!(
                    service = %cfg.service.name,
                    "no dataservice secret: admin API and THL server run WITHOUT authentication (--insecure-no-secret)"
                );
                None
            }
            Ok(None) => {
                return usage_error(format!(
                    "{}: no dataservice secret: set security.token-file (a file holding \
                     at least 16 characters; `carbide secret --out FILE` writes one) or \
                     security.token; without one, anyone who reaches the admin API or the \
                     THL port controls this replicator (--insecure-no-secret allows that)",
                    path.display()
                ))
            }
            Err(e) => return usage_error(e),
        };
        if listen.is_none() {
            listen = Some(format!("{}:{}", m.replicator.host, m.replicator.port));
        }
        if specs
            .iter()
            .any(|s: &ServiceSpec| s.name == cfg.service.name)
        {
            return usage_error(format!(
                "service '{}' is configured twice",
                cfg.service.name
            ));
        }
        let master_thl = cfg
            .members
            .iter()
            .find(|o| o.role == carbide_config::Role::Master && o.name != m.name)
            .map(|o| format!("{}:{}", o.thl.host, o.thl.port));
        thl_listen.push(format!("{}:{}", m.thl.host, m.thl.port));
        specs.push(ServiceSpec {
            master_thl,
            block_commit: args.block_commit.max(1),
            channels: usize::from(args.channels),
            active_channels: usize::from(args.active_channels),
            row_apply: args.row_apply,
            thl_tls_ca: args.thl_tls_ca.clone(),
            secret,
            name: cfg.service.name.clone(),
            role: m.role,
            member: m.name.clone(),
            thl_uri: format!("thl://{}:{}/", m.thl.host, m.thl.port),
            extractor: ExtractorConfig {
                source: SourceOpts {
                    host: m.mysql.host.clone(),
                    port: m.mysql.port,
                    user: cfg.credentials.user.clone(),
                    password: cfg.credentials.password.clone(),
                    connect_timeout: Duration::from_millis(cfg.timeouts.connect_ms),
                },
                replica_server_id: args
                    .replica_server_id
                    .unwrap_or(1_000_000_000 + m.mysql.port as u32),
                service: cfg.service.name.clone(),
                source_id: m.name.clone(),
                thl_dir,
                writer: WriterConfig {
                    segment_size: args.segment_mb.max(1) << 20,
                    fsync,
                    ..WriterConfig::default()
                },
                start: start.clone(),
                heartbeat_period: Duration::from_millis(args.heartbeat_period_ms.max(10)),
                max_batch: 2000,
                max_batch_delay: Duration::from_millis(100),
                leave_out: leave_out(cfg, loaded.iter().map(|(_, c)| c), &m.name),
            },
        });
    }
    let Some(listen) = listen else {
        return usage_error("no --config given");
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carbide-replicator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match (&args.thl_tls_cert, &args.thl_tls_key) {
        (Some(c), Some(k)) => match carbide_replicator::transfer::tls::acceptor(c, k) {
            Ok(a) => Some(a),
            Err(e) => return usage_error(format!("--thl-tls-cert/--thl-tls-key: {e}")),
        },
        _ => None,
    };
    if let Some(ca) = &args.thl_tls_ca {
        if let Err(e) = carbide_replicator::transfer::tls::connector(ca) {
            return usage_error(format!("--thl-tls-ca: {e}"));
        }
    }
    let limits = Limits {
        admin: args.max_admin_connections as usize,
        thl: args.max_thl_connections as usize,
    };
    rt.block_on(run(
        specs,
        thl_listen,
        listen,
        !args.no_auto_online,
        tls,
        limits,
    ))
}

/// Connection caps.
struct Limits {
    admin: usize,
    thl: usize,
}

async fn run(
    specs: Vec<ServiceSpec>,
    thl_listen: Vec<String>,
    listen: String,
    auto_online: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("carbide-replicator: cannot listen on {listen}: {e}");
            return ExitCode::from(64);
        }
    };
    let heartbeat = specs
        .first()
        .map_or(Duration::from_secs(1), |s| s.extractor.heartbeat_period);
    let services: Vec<Arc<Service>> = specs.into_iter().map(Service::new).collect();
    let (stop_thl, stop_rx) = tokio::sync::watch::channel(false);
    for (s, addr) in services.iter().zip(&thl_listen) {
        let l = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("carbide-replicator: cannot listen on {addr} (THL): {e}");
                return ExitCode::from(64);
            }
        };
        let cfg = ServerConfig {
            service: s.name().to_string(),
            member: s.member().to_string(),
            thl_dir: s.thl_dir().to_path_buf(),
            heartbeat: heartbeat.max(Duration::from_millis(100)),
            tls: tls.clone(),
            secret: s.secret().cloned(),
            max_connections: limits.thl,
        };
        tracing::info!(service = s.name(), %addr, "THL server listening");
        tokio::spawn(serve(l, cfg, s.thl_watch(), stop_rx.clone()));
    }
    for s in &services {
        if auto_online && matches!(s.status().role.as_str(), "master" | "slave" | "relay") {
            if let Err(e) = s.online() {
                tracing::warn!(service = s.name(), error = %e, "auto online");
            }
        }
    }
    tracing::info!(%listen, services = services.len(), "admin API listening");
    let app = router(AppState::new(services.clone()));
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let listener = carbide_replicator::admin::CappedListener::new(listener, limits.admin);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("carbide-replicator: admin API: {e}");
    }
    tracing::info!("shutting down: taking services offline");
    let _ = stop_thl.send(true);
    for s in &services {
        let _ = s.offline(None);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for s in &services {
        let mut rx = s.subscribe();
        while !matches!(s.state(), State::OfflineNormal | State::OfflineError) {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::leave_out;

    /// A service over members (name, mysql port, role).
    fn config(service: &str, members: &[(&str, u16, &str)]) -> carbide_config::Config {
        let mut text = format!(
            "[service]\nname = \"{service}\"\n[credentials]\nuser = \"root\"\n\
             [replicator]\nthl-root = \"/tmp/thl\"\n"
        );
        for (i, (name, port, role)) in members.iter().enumerate() {
            text.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nmysql = \"127.0.0.1:{port}\"\n\
                 replicator = \"127.0.0.1:{}\"\nthl = \"127.0.0.1:{}\"\n\
                 manager = \"127.0.0.1:{}\"\nrole = \"{role}\"\n",
                10_000 + i,
                11_000 + i,
                12_000 + i
            ));
        }
        carbide_config::Config::parse(&text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn only_services_replicating_back_are_left_out() {
        // active/active: east a→b, west b→a
        let east = config("east", &[("a", 3306, "master"), ("b", 3307, "slave")]);
        let west = config("west", &[("a", 3306, "slave"), ("b", 3307, "master")]);
        let all = [east.clone(), west.clone()];
        assert_eq!(leave_out(&east, all.iter(), "a"), vec!["west".to_string()]);
        assert_eq!(leave_out(&west, all.iter(), "b"), vec!["east".to_string()]);
        // a chain passes what it applied on: east a→b, south b→c
        let south = config("south", &[("b", 3307, "master"), ("c", 3308, "slave")]);
        let all = [east.clone(), south.clone()];
        assert!(leave_out(&south, all.iter(), "b").is_empty());
        // fan-in: two masters into one replica, nothing extracted there
        let alpha = config("alpha", &[("m1", 3306, "master"), ("r", 3308, "slave")]);
        let beta = config("beta", &[("m2", 3307, "master"), ("r", 3308, "slave")]);
        let all = [alpha.clone(), beta];
        assert!(leave_out(&alpha, all.iter(), "m1").is_empty());
    }
}
