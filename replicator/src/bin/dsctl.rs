//! `dsctl`: read and set a replica's applied position (`trep_commit_seqno`)
//! directly in its database, e.g. after restoring a backup taken on the
//! master. Tungsten's grammar:
//!
//! ```text
//! dsctl -config FILE -member NAME [-service S] COMMAND
//!   get                       the stored position as JSON
//!   set -seqno N -epoch E -event-id ID -source-id S [-reset]
//!                             store this position; -reset also empties the
//!                             member's THL (the replicator must be stopped)
//!   reset                     forget the position (seqno -1)
//! ```
//!
//! The member's MariaDB address and the credentials come from the
//! dataservice config (`-config`, or `$CARBIDE_CONFIG`). Errors go to stderr
//! with exit status 1 (2 for bad arguments).

use carbide_replicator::apply::{ensure_catalog, set_position, Position};
use carbide_replicator::extract::{service_schema, SourceOpts};
use carbide_replicator::thl::is_locked;
use mysql_async::prelude::Queryable;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: dsctl -config FILE -member NAME [-service S] COMMAND
commands:
  get                                     show the applied position as JSON
  set -seqno N -epoch E -event-id ID -source-id S [-reset]
                                          store an applied position (-reset also
                                          empties this member's THL; the
                                          replicator must be stopped)
  reset                                   forget the applied position";

#[derive(Default)]
struct Opts {
    config: Option<PathBuf>,
    member: Option<String>,
    service: Option<String>,
    command: String,
    seqno: Option<i64>,
    epoch: Option<i64>,
    event_id: Option<String>,
    source_id: Option<String>,
    reset: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        config: std::env::var_os("CARBIDE_CONFIG").map(PathBuf::from),
        ..Opts::default()
    };
    let mut it = args.iter();
    fn value<'a>(it: &mut std::slice::Iter<'a, String>, flag: &str) -> Result<&'a String, String> {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number(s: &str, flag: &str) -> Result<i64, String> {
        s.parse()
            .map_err(|_| format!("{flag}: '{s}' is not a number"))
    }
    while let Some(a) = it.next() {
        let flag = a.trim_start_matches('-');
        match (a.starts_with('-'), flag) {
            (true, "config") => o.config = Some(PathBuf::from(value(&mut it, a)?)),
            (true, "member") => o.member = Some(value(&mut it, a)?.clone()),
            (true, "service") => o.service = Some(value(&mut it, a)?.clone()),
            (true, "seqno") => o.seqno = Some(number(value(&mut it, a)?, a)?),
            (true, "epoch") => o.epoch = Some(number(value(&mut it, a)?, a)?),
            (true, "event-id") => o.event_id = Some(value(&mut it, a)?.clone()),
            (true, "source-id") => o.source_id = Some(value(&mut it, a)?.clone()),
            (true, "reset") => o.reset = true,
            (true, "help" | "h") => return Err(String::new()),
            (true, _) => return Err(format!("unknown option {a}")),
            (false, cmd) if o.command.is_empty() => o.command = cmd.to_string(),
            (false, _) => return Err(format!("unexpected argument '{a}'")),
        }
    }
    match o.command.as_str() {
        "" => return Err("no command given".into()),
        "get" | "reset" => {}
        "set" => {
            if o.seqno.is_none()
                || o.epoch.is_none()
                || o.event_id.is_none()
                || o.source_id.is_none()
            {
                return Err("set needs -seqno N -epoch E -event-id ID -source-id S".into());
            }
        }
        other => return Err(format!("unknown command '{other}'")),
    }
    if o.config.is_none() {
        return Err("-config FILE (or $CARBIDE_CONFIG) is required".into());
    }
    if o.member.is_none() {
        return Err("-member NAME is required".into());
    }
    Ok(o)
}

async fn run(o: &Opts) -> Result<(), String> {
    let path = o.config.clone().unwrap_or_default();
    let cfg = carbide_config::Config::load(&path).map_err(|e| e.to_string())?;
    let member = o.member.clone().unwrap_or_default();
    let m = cfg
        .member(&member)
        .ok_or_else(|| format!("{}: no member '{member}'", path.display()))?;
    if let Some(s) = &o.service {
        if *s != cfg.service.name {
            return Err(format!(
                "{} defines service '{}', not '{s}'",
                path.display(),
                cfg.service.name
            ));
        }
    }
    let service = cfg.service.name.clone();
    let src = SourceOpts {
        host: m.mysql.host.clone(),
        port: m.mysql.port,
        user: cfg.credentials.user.clone(),
        password: cfg.credentials.password.clone(),
        connect_timeout: Duration::from_millis(cfg.timeouts.connect_ms),
    };
    let mut conn = src.connect().await.map_err(|e| e.to_string())?;
    let db = |e: String| format!("database {}: {e}", src.addr());
    match o.command.as_str() {
        "get" => {
            ensure_catalog(&mut conn, &service).await.map_err(db)?;
            let schema = service_schema(&service);
            let rows: Vec<mysql_async::Row> = conn
                .query(format!(
                    "SELECT task_id, seqno, fragno, last_frag, source_id, epoch_number, eventid, \
                     applied_latency, CAST(update_timestamp AS CHAR), shard_id, \
                     CAST(extract_timestamp AS CHAR) FROM `{schema}`.trep_commit_seqno ORDER BY task_id"
                ))
                .await
                .map_err(|e| db(e.to_string()))?;
            let out: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|r| {
                    let i = |n: usize| {
                        r.get_opt::<Option<i64>, _>(n)
                            .and_then(Result::ok)
                            .flatten()
                    };
                    let s = |n: usize| {
                        r.get_opt::<Option<String>, _>(n)
                            .and_then(Result::ok)
                            .flatten()
                    };
                    serde_json::json!({
                        "task_id": i(0),
                        "seqno": i(1),
                        "fragno": i(2),
                        "last_frag": s(3).as_deref() == Some("1"),
                        "source_id": s(4),
                        "epoch_number": i(5),
                        "eventid": s(6),
                        "applied_latency": i(7),
                        "update_timestamp": s(8),
                        "shard_id": s(9),
                        "extract_timestamp": s(10),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        "set" | "reset" => {
            let (p, source) = if o.command == "set" {
                (
                    Position {
                        seqno: o.seqno.unwrap_or(-1),
                        epoch: o.epoch.unwrap_or(-1),
                        eventid: o.event_id.clone().unwrap_or_default(),
                    },
                    o.source_id.clone().unwrap_or_default(),
                )
            } else {
                (
                    Position {
                        seqno: -1,
                        epoch: -1,
                        eventid: String::new(),
                    },
                    String::new(),
                )
            };
            if o.reset {
                let dir = cfg.thl_dir(Some(&member)).map_err(|e| e.to_string())?;
                clear_thl(&dir)?;
            }
            set_position(&mut conn, &service, &p, &source)
                .await
                .map_err(db)?;
            println!(
                "Service \"{service}\" datasource \"{member}\" catalog information set to seqno {}",
                p.seqno
            );
        }
        _ => {}
    }
    let _ = conn.disconnect().await;
    Ok(())
}

/// Removes every THL segment of a stopped replicator.
fn clear_thl(dir: &std::path::Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    if is_locked(dir).map_err(|e| e.to_string())? {
        return Err(format!(
            "{} is in use: stop the replicator before dsctl set -reset",
            dir.display()
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("thl.data.") {
            std::fs::remove_file(e.path())
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("dsctl: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dsctl: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsctl: {e}");
            ExitCode::FAILURE
        }
    }
}
