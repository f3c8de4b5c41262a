//! `trepctl`: drive a carbide replicator through its admin API, with
//! Tungsten's grammar:
//!
//! ```text
//! trepctl [-host H] [-port P] [-service S] COMMAND [options]
//!   status [-json]             all status fields
//!   services [-json]           the services of the replicator
//!   online                     take the service online
//!   offline [-immediate] [-at-seqno N]
//!   heartbeat [-name NAME]     a heartbeat through the pipeline; prints its latency
//!   qs                         one-line quick status
//!   wait -state S | -applied N [-limit SECONDS]
//!   version
//! ```
//!
//! Arguments enter from the command line; one HTTP/1.1 request per command
//! leaves to `http://H:P/…` (plain std TCP, no TLS); output goes to stdout,
//! errors to stderr with exit status 1 (2 for bad arguments).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: trepctl [-host H] [-port P] [-service S] COMMAND [options]
commands:
  status [-json]                          show the service's status
  services [-json]                        list the replicator's services
  online                                  take the service online
  offline [-immediate] [-at-seqno N]      take it offline (now, or after seqno N)
  heartbeat [-name NAME]                  send a heartbeat through the pipeline
  qs                                      one-line quick status
  wait -state S | -applied N [-limit SECONDS]
                                          wait for a state or an applied seqno
  version                                 show the replicator's version";

struct Opts {
    host: String,
    port: u16,
    service: Option<String>,
    command: String,
    json: bool,
    immediate: bool,
    at_seqno: Option<u64>,
    name: Option<String>,
    state: Option<String>,
    applied: Option<u64>,
    limit: Option<u64>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        host: "127.0.0.1".into(),
        port: 10000,
        service: None,
        command: String::new(),
        json: false,
        immediate: false,
        at_seqno: None,
        name: None,
        state: None,
        applied: None,
        limit: None,
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
            (true, "host") => o.host = value(&mut it, a)?.clone(),
            (true, "port") => o.port = number(value(&mut it, a)?, a)?,
            (true, "service") => o.service = Some(value(&mut it, a)?.clone()),
            (true, "json") => o.json = true,
            (true, "immediate") => o.immediate = true,
            (true, "at-seqno") => o.at_seqno = Some(number(value(&mut it, a)?, a)?),
            (true, "name") => o.name = Some(value(&mut it, a)?.clone()),
            (true, "state") => o.state = Some(value(&mut it, a)?.clone()),
            (true, "applied") => o.applied = Some(number(value(&mut it, a)?, a)?),
            (true, "limit") => o.limit = Some(number(value(&mut it, a)?, a)?),
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
        "offline",
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
    if o.immediate && o.at_seqno.is_some() {
        return Err("offline: -immediate and -at-seqno exclude each other".into());
    }
    Ok(o)
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
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
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
            call(o, "POST", &format!("/services/{s}/online"))?;
        }
        "offline" => {
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
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
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trepctl: {e}");
            ExitCode::FAILURE
        }
    }
}
