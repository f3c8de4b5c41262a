//! The `carbide` command: `serve` (the connector daemon; the manager joins
//! it as it is built), `validate` (pre-flight checks) and `tls-certs`
//! (self-signed certificates for a sandbox or a test).
//!
//! Arguments enter through clap; a config that cannot be read or is invalid
//! ends the process with status 64 and a message naming the key, file and
//! line. Check results go to stdout, diagnostics to stderr.

mod certs;
mod cluster;
mod serve;
mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// carbide: a high-availability layer for MySQL/MariaDB.
#[derive(Parser)]
#[command(name = "carbide", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the manager and the connector of one member.
    ///
    /// With --member NAME: the manager joins the dataservice's other managers (raft on the
    /// member's manager address, with the [security] secret), monitors every datasource,
    /// and the connector's read-write and read-only listeners route by the committed cluster
    /// state (`cctrl` drives it). A [[witness]] runs the manager alone. With --static-routing:
    /// the connector alone, routing from the config's roles, re-read on SIGHUP. The admin API
    /// (/metrics, /status, /health open; everything else needs the secret) is on the member's
    /// manager address. SIGTERM stops accepting and lets open sessions finish their
    /// transaction (up to timeouts.disconnect-ms).
    Serve {
        /// The dataservice config file.
        #[arg(
            long,
            short = 'c',
            env = "CARBIDE_CONFIG",
            default_value = "/etc/carbide/carbide.toml"
        )]
        config: PathBuf,
        /// The member (or witness) this process runs on; its `manager`
        /// address serves the manager and the admin API.
        #[arg(long, short = 'm')]
        member: Option<String>,
        /// With --static-routing: the admin API address (host:port), overriding
        /// the member's. (With a manager the admin API is the member's manager
        /// address, where the other managers reach it.)
        #[arg(long)]
        admin: Option<carbide_config::HostPort>,
        /// Run the connector alone, routing from the config's roles (re-read
        /// on SIGHUP), with no manager. For trying the connector or for a
        /// dataservice whose primary is moved by hand.
        #[arg(long)]
        static_routing: bool,
    },
    /// Write a new dataservice secret to FILE (mode 600).
    ///
    /// Every carbide process of the dataservice authenticates its control
    /// paths with it: set `[security] token-file = "FILE"` in the config on
    /// every host (copy the same file).
    Secret {
        /// File to write; refused if it exists.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a self-signed CA and server certificate for trying out TLS.
    ///
    /// Writes ca.pem, ca.key, server.pem, server.key (PEM) in DIR. For sandboxes and
    /// tests; use your own PKI in production.
    TlsCerts {
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Names and addresses the server certificate is valid for
        /// (repeatable). Default: localhost and 127.0.0.1.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Check a dataservice before starting carbide on it.
    ///
    /// Checks every member's MariaDB: reachable with the configured credentials, binary log on in
    /// ROW format with FULL row images, unique server_id, the privileges the
    /// manager and replicator need, clock skew, free listen ports and a
    /// writable THL directory on this host. Prints one OK/WARN/ERROR line
    /// per check with the fix; exits 1 when any check is an ERROR.
    Validate {
        /// The dataservice config file.
        #[arg(
            long,
            short = 'c',
            env = "CARBIDE_CONFIG",
            default_value = "/etc/carbide/carbide.toml"
        )]
        config: PathBuf,
        /// A member that runs on this host (repeatable): its ports and THL
        /// directory are checked. Default: every member whose replicator,
        /// THL and manager addresses are on loopback.
        #[arg(long = "member", short = 'm')]
        members: Vec<String>,
    },
}

/// Exit status for an unusable config (EX_USAGE in sysexits.h).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config, members } => validate_cmd(&config, &members),
        Command::Serve {
            config,
            member,
            admin,
            static_routing,
        } => serve_cmd(serve::ServeArgs {
            path: config,
            member,
            admin,
            static_routing,
        }),
        Command::Secret { out } => match certs::write_secret(&out) {
            Ok(()) => {
                println!("{}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("carbide secret: {e}");
                ExitCode::FAILURE
            }
        },
        Command::TlsCerts { out, hosts } => match certs::write(&out, &hosts) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("carbide tls-certs: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve_cmd(args: serve::ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CARBIDE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // accept loops, admin API and signals; sessions run on their own
    // worker threads (connector.worker-threads)
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carbide serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(serve::ServeError::Config(e)) => {
            eprintln!("carbide serve: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("carbide serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate_cmd(path: &std::path::Path, members: &[String]) -> ExitCode {
    let config = match carbide_config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("carbide validate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for m in members {
        if config.member(m).is_none() {
            eprintln!(
                "carbide validate: --member {m}: no such member in {}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carbide validate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = rt.block_on(validate::run(&config, members));
    let mut errors = 0;
    let mut warnings = 0;
    for c in &checks {
        println!("{c}");
        match c.level {
            validate::checks::Level::Error => errors += 1,
            validate::checks::Level::Warn => warnings += 1,
            validate::checks::Level::Ok => {}
        }
    }
    println!(
        "{} checks: {} OK, {warnings} WARN, {errors} ERROR",
        checks.len(),
        checks.len() - errors - warnings
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
