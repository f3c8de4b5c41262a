//! `trepctl`: drive a carbide replicator through its admin API, with
//! Tungsten's grammar:
//!
//! ```text
//! trepctl [-conf FILE [-member NAME]] [-host H] [-port P] [-service S] COMMAND [options]
//!   status [-json]             all status fields
//!   services [-json]           the services of the replicator
//!   online [-skip-seqno N[,M…]] [-until-seqno N] [-from-event FILE:OFFSET]
//!   setrole -role master|slave|relay [-uri thl://host:port/]
//!   reset -all|-thl|-db -y     remove THL and/or the catalog (offline only)
//!   purge -y                   kill other sessions on the local database
//!   offline [-immediate] [-at-seqno N]
//!   offline-deferred -at-seqno N
//!   heartbeat [-name NAME]     a heartbeat through the pipeline; prints its latency
//!   qs                         one-line quick status
//!   wait -state S | -applied N [-limit SECONDS]
//!   version
//! ```
//!
//! Arguments enter from the command line; one HTTP/1.1 request per command
//! leaves to `http://H:P/…` (plain std TCP, no TLS); output goes to stdout,
//! errors to stderr with exit status 1 (2 for bad arguments).
//!
//! The dataservice secret (sent as `Authorization: Bearer …`; the daemon
//! wants it on every command that changes something) comes from the
//! `[security]` table of `-conf FILE`, else from `$CARBIDE_SECRET`, else
//! from the config named by `$CARBIDE_CONFIG`. `-conf FILE -member NAME`
//! also gives the address: that member's `replicator` address, unless
//! `-host`/`-port` say otherwise.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: trepctl [-conf FILE [-member NAME]] [-host H] [-port P] [-service S] COMMAND [options]
  -conf FILE                              dataservice config: its [security] secret
                                          authenticates commands (else $CARBIDE_SECRET,
                                          else the config in $CARBIDE_CONFIG); with
                                          -member NAME, talk to that member's replicator
commands:
  status [-json]                          show the service's status
  services [-json]                        list the replicator's services
  online [-skip-seqno N[,M]] [-until-seqno N] [-from-event FILE:OFFSET]
                                          take the service online (a slave skips
                                          the given seqnos; stop after seqno N; a
                                          master extracts from that binlog event)
  setrole -role master|slave|relay [-uri thl://host:port/]
                                          change role while offline
  reset -all|-thl|-db -y                  remove the THL and/or drop the catalog
                                          schema (offline only)
  purge -y                                kill every other session on the local
                                          database (before a switch)
  offline [-immediate] [-at-seqno N]      take it offline (now, or after seqno N)
  offline-deferred -at-seqno N            take it offline once seqno N is applied
  heartbeat [-name NAME]                  send a heartbeat through the pipeline
  qs                                      one-line quick status
  wait -state S | -applied N [-limit SECONDS]
                                          wait for a state or an applied seqno
  version                                 show the replicator's version";

struct Opts {
    host: String,
    port: u16,
    host_given: bool,
    port_given: bool,
    conf: Option<std::path::PathBuf>,
    member: Option<String>,
    /// The dataservice secret, once [`locate`] found it.
    secret: Option<String>,
    /// Where the secret came from, for error messages.
    secret_from: Option<String>,
    service: Option<String>,
    command: String,
    json: bool,
    immediate: bool,
    at_seqno: Option<u64>,
    name: Option<String>,
    state: Option<String>,
    applied: Option<u64>,
    limit: Option<u64>,
    skip_seqno: Option<String>,
    until_seqno: Option<u64>,
    from_event: Option<String>,
    role: Option<String>,
    uri: Option<String>,
    reset_thl: bool,
    reset_db: bool,
    yes: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        host: "127.0.0.1".into(),
        port: 10000,
        host_given: false,
        port_given: false,
        conf: None,
        member: None,
        secret: None,
        secret_from: None,
        service: None,
        command: String::new(),
        json: false,
        immediate: false,
        at_seqno: None,
        name: None,
        state: None,
        applied: None,
        limit: None,
        skip_seqno: None,
        until_seqno: None,
        from_event: None,
        role: None,
        uri: None,
        reset_thl: false,
        reset_db: false,
        yes: false,
    };
    let mut it = args.iter();
    fn value<'a>(it: &mut std::slice::Iter<'a, String>, flag: &str) -> Result<&'a String, String> {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
        s.parse()
            .map_err(|_| format!("{flag}: '{s}' is not a number"))
    }
    while let Some(a) = it.next() {
        let flag = a.trim_start_matches('-');
        let is_flag = a.starts_with('-');
        match (is_flag, flag) {
            (true, "host") => {
                o.host = value(&mut it, a)?.clone();
                o.host_given = true;
            }
            (true, "port") => {
                o.port = number(value(&mut it, a)?, a)?;
                o.port_given = true;
            }
            (true, "conf" | "config") => o.conf = Some(value(&mut it, a)?.into()),
            (true, "member") => o.member = Some(value(&mut it, a)?.clone()),
            (true, "service") => o.service = Some(value(&mut it, a)?.clone()),
            (true, "json") => o.json = true,
            (true, "immediate") => o.immediate = true,
            (true, "at-seqno") => o.at_seqno = Some(number(value(&mut it, a)?, a)?),
            (true, "name") => o.name = Some(value(&mut it, a)?.clone()),
            (true, "state") => o.state = Some(value(&mut it, a)?.clone()),
            (true, "applied") => o.applied = Some(number(value(&mut it, a)?, a)?),
            (true, "limit") => o.limit = Some(number(value(&mut it, a)?, a)?),
            (true, "skip-seqno") => {
                let v = value(&mut it, a)?;
                for part in v.split(',') {
                    number::<u64>(part.trim(), a)?;
                }
                o.skip_seqno = Some(v.clone());
            }
            (true, "until-seqno") => o.until_seqno = Some(number(value(&mut it, a)?, a)?),
            (true, "role") => o.role = Some(value(&mut it, a)?.clone()),
            (true, "from-event") => o.from_event = Some(value(&mut it, a)?.clone()),
            (true, "all") => {
                o.reset_thl = true;
                o.reset_db = true;
            }
            (true, "thl") => o.reset_thl = true,
            (true, "db") => o.reset_db = true,
            (true, "y") => o.yes = true,
            (true, "uri") => o.uri = Some(value(&mut it, a)?.clone()),
            (true, "help" | "h") => return Err(String::new()),
            (true, _) => return Err(format!("unknown option {a}")),
            (false, cmd) if o.command.is_empty() => o.command = cmd.to_string(),
            (false, _) => return Err(format!("unexpected argument '{a}'")),
        }
    }
    const COMMANDS: &[&str] = &[
        "status",
        "services",
        "online",
        "setrole",
        "offline",
        "offline-deferred",
        "reset",
        "purge",
        "heartbeat",
        "qs",
        "wait",
        "version",
    ];
    if o.command.is_empty() {
        return Err("no command given".into());
    }
    if !COMMANDS.contains(&o.command.as_str()) {
        return Err(format!("unknown command '{}'", o.command));
    }
    if o.command == "wait" && o.state.is_none() == o.applied.is_none() {
        return Err("wait needs exactly one of -state S or -applied N".into());
    }
    if o.command == "setrole" {
        match o.role.as_deref() {
            Some("master" | "slave" | "relay") => {}
            Some(r) => return Err(format!("setrole: -role '{r}': use master, slave or relay")),
            None => return Err("setrole needs -role master|slave|relay".into()),
        }
    }
    if o.command == "reset" && !o.reset_thl && !o.reset_db {
        return Err("reset needs -all, -thl or -db".into());
    }
    if matches!(o.command.as_str(), "reset" | "purge") && !o.yes {
        return Err(format!("{} is destructive: confirm with -y", o.command));
    }
    if o.command == "offline-deferred" && o.at_seqno.is_none() {
        return Err("offline-deferred needs -at-seqno N".into());
    }
    if o.immediate && o.at_seqno.is_some() {
        return Err("offline: -immediate and -at-seqno exclude each other".into());
    }
    if o.member.is_some() && o.conf.is_none() {
        return Err("-member needs -conf FILE".into());
    }
    Ok(o)
}

/// Fills in the secret (and, with `-conf -member`, the address) from the
/// config or the environment: `-conf`, then `$CARBIDE_SECRET`, then
/// `$CARBIDE_CONFIG`.
fn locate(
    o: &mut Opts,
    env_secret: Option<String>,
    env_config: Option<std::path::PathBuf>,
) -> Result<(), String> {
    let conf = match (&o.conf, env_secret) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(s)) if !s.trim().is_empty() => {
            o.secret = Some(s.trim().to_string());
            o.secret_from = Some("$CARBIDE_SECRET".into());
            return Ok(());
        }
        (None, _) => env_config,
    };
    let Some(path) = conf else {
        return Ok(());
    };
    let cfg = carbide_config::Config::load(&path).map_err(|e| e.to_string())?;
    o.secret = cfg.secret().map_err(|e| e.to_string())?;
    o.secret_from = Some(path.display().to_string());
    if let Some(name) = &o.member {
        let m = cfg.member(name).ok_or_else(|| {
            let names: Vec<&str> = cfg.members.iter().map(|m| m.name.as_str()).collect();
            format!(
                "{}: no member '{name}' (members: {})",
                path.display(),
                names.join(", ")
            )
        })?;
        if !o.host_given {
            o.host = m.replicator.host.clone();
        }
        if !o.port_given {
            o.port = m.replicator.port;
        }
        if o.service.is_none() {
            o.service = Some(cfg.service.name.clone());
        }
    }
    Ok(())
}

/// One HTTP/1.1 request; returns (status code, body).
fn http(o: &Opts, method: &str, path: &str) -> Result<(u16, String), String> {
    let addr = format!("{}:{}", o.host, o.port);
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {addr}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to the replicator at {addr}: {e} (is it running?)"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let auth = o
        .secret
        .as_deref()
        .map(|s| format!("Authorization: Bearer {s}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP reply from {addr}"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP status from {addr}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn call(o: &Opts, method: &str, path: &str) -> Result<serde_json::Value, String> {
    let (code, body) = http(o, method, path)?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| format!("HTTP {code} from the replicator: {body}"))?;
    if code >= 400 {
        let msg = v.get("error").and_then(|e| e.as_str()).unwrap_or(&body);
        if code == 401 {
            let from = match &o.secret_from {
                Some(f) => format!("security.token-file in {f}"),
                None => "none given: -conf FILE, $CARBIDE_SECRET or $CARBIDE_CONFIG".into(),
            };
            return Err(format!(
                "the replicator refused: wrong or missing dataservice secret ({from}): {msg}"
            ));
        }
        return Err(msg.to_string());
    }
    Ok(v)
}

fn service(o: &Opts) -> Result<String, String> {
    if let Some(s) = &o.service {
        return Ok(s.clone());
    }
    let list = call(o, "GET", "/services")?;
    let names: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    s.get("serviceName")
                        .and_then(|n| n.as_str())
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("the replicator has no services".into()),
        _ => Err(format!(
            "the replicator has several services ({}); choose one with -service",
            names.join(", ")
        )),
    }
}

fn print_table(v: &serde_json::Value) {
    println!("NAME                     VALUE");
    println!("----                     -----");
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let shown = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<23}: {shown}");
        }
    }
}

fn run(o: &Opts) -> Result<(), String> {
    match o.command.as_str() {
        "version" => {
            let v = call(o, "GET", "/version")?;
            println!(
                "carbide-replicator {}",
                v.get("version").and_then(|x| x.as_str()).unwrap_or("?")
            );
        }
        "services" => {
            let v = call(o, "GET", "/services")?;
            if o.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("Processing services command...");
                for s in v.as_array().into_iter().flatten() {
                    print_table(s);
                }
                println!("Finished services command...");
            }
        }
        "status" => {
            let s = service(o)?;
            let v = call(o, "GET", &format!("/services/{s}/status"))?;
            if o.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("Processing status command...");
                print_table(&v);
                println!("Finished status command...");
            }
        }
        "qs" => {
            let s = service(o)?;
            let v = call(o, "GET", &format!("/services/{s}/status"))?;
            let f = |k: &str| {
                v.get(k)
                    .map(|x| match x {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            let mut line = format!(
                "{}: {} ({}), applied seqno {}, latency {}s",
                s,
                f("state"),
                f("role"),
                f("appliedLastSeqno"),
                f("appliedLatency")
            );
            let err = f("pendingError");
            if err != "NONE" {
                line.push_str(&format!(", error: {err}"));
            }
            println!("{line}");
        }
        "online" => {
            let s = service(o)?;
            let mut q = Vec::new();
            if let Some(v) = &o.skip_seqno {
                q.push(format!("skip-seqno={}", v.replace(' ', "")));
            }
            if let Some(n) = o.until_seqno {
                q.push(format!("until-seqno={n}"));
            }
            if let Some(e) = &o.from_event {
                q.push(format!("from-event={}", url_escape(e)));
            }
            let path = if q.is_empty() {
                format!("/services/{s}/online")
            } else {
                format!("/services/{s}/online?{}", q.join("&"))
            };
            call(o, "POST", &path)?;
        }
        "reset" => {
            let s = service(o)?;
            let v = call(
                o,
                "POST",
                &format!(
                    "/services/{s}/reset?thl={}&db={}",
                    u8::from(o.reset_thl),
                    u8::from(o.reset_db)
                ),
            )?;
            for d in v
                .get("done")
                .and_then(|d| d.as_array())
                .into_iter()
                .flatten()
            {
                println!("{}", d.as_str().unwrap_or_default());
            }
        }
        "purge" => {
            let s = service(o)?;
            let v = call(o, "POST", &format!("/services/{s}/purge"))?;
            println!(
                "killed {} session(s)",
                v.get("killed").and_then(|k| k.as_u64()).unwrap_or(0)
            );
        }
        "setrole" => {
            let s = service(o)?;
            let role = o.role.clone().unwrap_or_default();
            let mut path = format!("/services/{s}/setrole?role={role}");
            if let Some(u) = &o.uri {
                path.push_str(&format!("&uri={}", url_escape(u)));
            }
            call(o, "POST", &path)?;
        }
        "offline" | "offline-deferred" => {
            let s = service(o)?;
            let path = match o.at_seqno {
                Some(n) => format!("/services/{s}/offline?at-seqno={n}"),
                None => format!("/services/{s}/offline"),
            };
            call(o, "POST", &path)?;
        }
        "heartbeat" => {
            let s = service(o)?;
            let name = o.name.clone().unwrap_or_else(|| "MASTER_ONLINE".into());
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(format!(
                    "heartbeat name '{name}': use letters, digits, _ - ."
                ));
            }
            let v = call(o, "POST", &format!("/services/{s}/heartbeat?name={name}"))?;
            println!(
                "heartbeat {} stored as seqno {}, latency {:.3}s",
                name,
                v.get("seqno").map(|x| x.to_string()).unwrap_or_default(),
                v.get("latency").and_then(|x| x.as_f64()).unwrap_or(-1.0)
            );
        }
        "wait" => {
            let s = service(o)?;
            let limit = Duration::from_secs(o.limit.unwrap_or(u64::MAX / 4));
            let start = Instant::now();
            loop {
                let v = call(o, "GET", &format!("/services/{s}/status"))?;
                let state = v.get("state").and_then(|x| x.as_str()).unwrap_or("");
                let applied = v
                    .get("appliedLastSeqno")
                    .and_then(|x| x.as_i64())
                    .unwrap_or(-1);
                let done = match (&o.state, o.applied) {
                    (Some(want), _) => {
                        let w = want.to_ascii_uppercase();
                        state == w || (w == "OFFLINE" && state.starts_with("OFFLINE"))
                    }
                    (None, Some(n)) => applied >= n as i64,
                    _ => true,
                };
                if done {
                    return Ok(());
                }
                if let (Some(want), true) = (&o.state, state == "OFFLINE:ERROR") {
                    if !want.to_ascii_uppercase().starts_with("OFFLINE") {
                        let e = v.get("pendingError").and_then(|x| x.as_str()).unwrap_or("");
                        return Err(format!("service is OFFLINE:ERROR: {e}"));
                    }
                }
                if start.elapsed() >= limit {
                    return Err(format!(
                        "wait timed out after {}s: state {state}, applied seqno {applied}",
                        limit.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        other => return Err(format!("unknown command '{other}'")),
    }
    Ok(())
}

/// Percent-encodes a query value.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("trepctl: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = locate(
        &mut o,
        std::env::var("CARBIDE_SECRET").ok(),
        std::env::var_os("CARBIDE_CONFIG").map(Into::into),
    ) {
        eprintln!("trepctl: {e}");
        return ExitCode::from(2);
    }
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trepctl: {e}");
            ExitCode::FAILURE
        }
    }
}
