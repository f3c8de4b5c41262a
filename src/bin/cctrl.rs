//! `cctrl`: the operator shell of a carbide dataservice.
//!
//! A thin client of the managers' HTTP API: every command but the shell's
//! own (`use`, `expert`, `help`, `exit`) is sent as text to
//! `POST /manager/command` on a manager (the first one of the config that
//! answers `GET /health` within 2 s, or `--member`'s), which forwards it to
//! the coordinator; the answer is printed as it came. While no manager has a
//! coordinator (an election) it asks again for up to 5 s. The dataservice secret comes from the
//! config's `[security]`. Three ways in: an interactive shell with line
//! editing and history (`~/.cctrl_history`), `cctrl -e "ls"` (one command;
//! several separated by `;`), or commands on standard input, one per line.
//! Exit status 1 when any command failed, 64 for an unusable config.

use carbide_config::Config;
use carbide_control::api::{CommandRequest, CommandResponse};
use carbide_control::cctrl::{self, Cmd};
use carbide_control::http::{Client, HttpError};
use clap::Parser;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// cctrl: the operator shell of a carbide dataservice (Tungsten's commands).
///
/// Commands: ls [-l], members, ping, use SERVICE, set policy automatic|manual|maintenance,
/// datasource HOST shun|welcome|online|offline|fail|recover, replicator HOST
/// online|offline|status, router *|NAME online|offline, cluster heartbeat, expert, help,
/// exit. Without -e and with a terminal, an interactive shell; otherwise commands are read
/// from standard input, one per line.
#[derive(Parser)]
#[command(name = "cctrl", version)]
struct Args {
    /// The dataservice config file (for the managers' addresses and the secret).
    #[arg(
        long,
        short = 'c',
        env = "CARBIDE_CONFIG",
        default_value = "/etc/carbide/carbide.toml"
    )]
    config: PathBuf,
    /// Talk to this member's manager (default: the first that answers).
    #[arg(long, short = 'm')]
    member: Option<String>,
    /// Run these commands (separated by ';') and exit.
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
    /// Start in expert mode (commands that act on the master are allowed).
    #[arg(long)]
    expert: bool,
}

struct Shell {
    client: Client,
    managers: Vec<(String, String)>,
    service: String,
    expert: bool,
}

enum Step {
    Continue,
    Exit,
}

impl Shell {
    fn prompt(&self) -> String {
        if self.expert {
            format!("[LOGICAL:EXPERT] /{} > ", self.service)
        } else {
            format!("[LOGICAL] /{} > ", self.service)
        }
    }

    /// Runs one line; prints its output; Err when it failed.
    async fn run(&mut self, line: &str) -> Result<Step, ()> {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            return Ok(Step::Continue);
        }
        match cctrl::parse(line) {
            Err(e) => {
                eprintln!("{e}");
                return Err(());
            }
            Ok(Cmd::Exit) => return Ok(Step::Exit),
            Ok(Cmd::Help) => {
                println!("{}", cctrl::HELP);
                return Ok(Step::Continue);
            }
            Ok(Cmd::Expert) => {
                self.expert = true;
                println!("WARNING: This is an expert-level command:\nIncorrect use may cause data damage or unwanted downtime: commands that act on the master are now allowed.");
                return Ok(Step::Continue);
            }
            Ok(Cmd::Use(s)) if s == self.service => return Ok(Step::Continue),
            Ok(Cmd::Use(s)) => {
                eprintln!(
                    "no dataservice '{s}' in this config (it describes '{}')",
                    self.service
                );
                return Err(());
            }
            Ok(_) => {}
        }
        let req = CommandRequest {
            line: line.trim().to_string(),
            expert: self.expert,
        };
        // during an election no manager has a coordinator for a second or
        // two: ask again for up to 5 s before giving up
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.send(&req).await {
                Sent::Done(r) => return r,
                Sent::NoCoordinator(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Sent::NoCoordinator(tried) | Sent::Unreachable(tried) => {
                    eprintln!(
                        "no manager of '{}' could run the command: {}",
                        self.service,
                        tried.join("; ")
                    );
                    return Err(());
                }
            }
        }
    }

    async fn send(&self, req: &CommandRequest) -> Sent {
        let mut tried = Vec::new();
        let mut no_coordinator = false;
        for (name, addr) in &self.managers {
            // a hung manager (stopped process, blackholed host) accepts the
            // connection and never answers: ask it a cheap question first
            let alive: Result<serde_json::Value, HttpError> = self
                .client
                .get(addr, "/health", Duration::from_secs(2))
                .await;
            if let Err(e) = alive {
                tried.push(format!("{name}: {e}"));
                continue;
            }
            let r: Result<CommandResponse, HttpError> = self
                .client
                .post(addr, "/manager/command", req, Duration::from_secs(120))
                .await;
            let resp = match r {
                Ok(r) => r,
                Err(HttpError::Status { body, status, .. }) => {
                    match serde_json::from_str::<CommandResponse>(&body) {
                        Ok(r) if status != 503 => r,
                        Ok(r) => {
                            no_coordinator = true;
                            tried.push(format!("{name}: {}", r.error.unwrap_or_default()));
                            continue;
                        }
                        Err(_) => {
                            eprintln!("manager '{name}' ({addr}) refused: HTTP {status}: {body}");
                            return Sent::Done(Err(()));
                        }
                    }
                }
                Err(e) => {
                    tried.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if let Some(out) = resp.output {
                print!("{out}");
            }
            return Sent::Done(match resp.error {
                Some(e) => {
                    eprintln!("{e}");
                    Err(())
                }
                None => Ok(Step::Continue),
            });
        }
        if no_coordinator {
            Sent::NoCoordinator(tried)
        } else {
            Sent::Unreachable(tried)
        }
    }
}

/// What one round over the managers gave.
enum Sent {
    /// A manager answered (its output is printed): the command's result.
    Done(Result<Step, ()>),
    /// Some manager answered that it has no coordinator (an election).
    NoCoordinator(Vec<String>),
    /// No manager could be reached.
    Unreachable(Vec<String>),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cctrl: {e}");
            return ExitCode::from(64);
        }
    };
    let secret = match config.secret() {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("cctrl: {}: security.token-file: the managers need the dataservice secret and this config has none", args.config.display());
            return ExitCode::from(64);
        }
        Err(e) => {
            eprintln!("cctrl: {e}");
            return ExitCode::from(64);
        }
    };
    let mut managers: Vec<(String, String)> = config
        .members
        .iter()
        .map(|m| (m.name.clone(), m.manager.to_string()))
        .chain(
            config
                .witnesses
                .iter()
                .map(|w| (w.name.clone(), w.manager.to_string())),
        )
        .collect();
    if let Some(m) = &args.member {
        managers.retain(|(n, _)| n == m);
        if managers.is_empty() {
            eprintln!(
                "cctrl: --member {m}: no such member or witness in {}",
                args.config.display()
            );
            return ExitCode::from(64);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cctrl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut shell = Shell {
        client: Client::new(&secret),
        managers,
        service: config.service.name.clone(),
        expert: args.expert,
    };
    let mut failed = false;
    if let Some(cmds) = &args.execute {
        for c in cmds.split(';') {
            match rt.block_on(shell.run(c)) {
                Ok(Step::Exit) => break,
                Ok(Step::Continue) => {}
                Err(()) => failed = true,
            }
        }
    } else if std::io::stdin().is_terminal() {
        failed = interactive(&rt, &mut shell);
    } else {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match rt.block_on(shell.run(&line)) {
                Ok(Step::Exit) => break,
                Ok(Step::Continue) => {}
                Err(()) => failed = true,
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The interactive shell; true when a command failed.
fn interactive(rt: &tokio::runtime::Runtime, shell: &mut Shell) -> bool {
    let mut ed = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cctrl: cannot start the line editor: {e}");
            return true;
        }
    };
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cctrl_history"));
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    println!(
        "carbide cctrl {} — type 'help' for the commands, 'exit' to leave",
        env!("CARGO_PKG_VERSION")
    );
    let mut failed = false;
    loop {
        match ed.readline(&shell.prompt()) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = ed.add_history_entry(line.as_str());
                }
                match rt.block_on(shell.run(&line)) {
                    Ok(Step::Exit) => break,
                    Ok(Step::Continue) => {}
                    Err(()) => failed = true,
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    if let Some(h) = &history {
        let _ = ed.save_history(h);
    }
    failed
}
