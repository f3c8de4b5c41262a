//! The `carbide` command: today `carbide validate`; the connector and
//! manager daemon join it as they are built.
//!
//! Arguments enter through clap; a config that cannot be read or is invalid
//! ends the process with status 64 and a message naming the key, file and
//! line. Check results go to stdout, diagnostics to stderr.

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
    /// Check a dataservice before starting carbide on it: every member's
    /// MariaDB reachable with the configured credentials, binary log on in
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
