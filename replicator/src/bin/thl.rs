//! `thl`: inspect and maintain a carbide THL directory, with Tungsten's
//! grammar (`thl list -service alpha -low 10 -high 20`).
//!
//! Arguments enter through argv (single-dash long options are rewritten to
//! double-dash before clap parses them); the THL directory comes from `-dir`
//! or from `-conf FILE [-service NAME] [-member NAME]`. Output goes to
//! stdout; errors go to stderr with a non-zero exit status (2 usage,
//! 64 configuration, 1 anything else).

use carbide_replicator::thl::display::{format_event, format_header_line, format_sql, human_size};
use carbide_replicator::thl::{
    eventid_matches, is_locked, purge_dir, truncate_from, PurgeRequest, SegmentInfo, ThlError,
    ThlReader, LOCK_FILE,
};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Inspect and maintain a carbide THL (Transaction History Log).
///
/// Options take one dash or two: `-service alpha` is `--service alpha`.
/// Times are shown in UTC.
#[derive(Parser, Debug)]
#[command(name = "thl", version)]
struct Cli {
    #[command(flatten)]
    loc: Location,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug)]
struct Location {
    /// THL directory to use directly.
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// carbide config file; the THL directory is the one of -member (or of
    /// the config's only member) for its service.
    #[arg(long, global = true, value_name = "FILE")]
    conf: Option<PathBuf>,
    /// Service name; must match the service of -conf.
    #[arg(long, global = true, value_name = "NAME")]
    service: Option<String>,
    /// Member (datasource) whose THL directory to use with -conf.
    #[arg(long, global = true, value_name = "NAME")]
    member: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List events (records; a large transaction shows one block per
    /// fragment). `-event ID` prints what `dsctl set` needs: SEQ#, EPOCH#,
    /// EVENTID and SOURCEID.
    List(ListArgs),
    /// One line per segment file with the seqno range it holds.
    Index,
    /// Summary: directory, files, size, min/max seqno, events, oldest and
    /// newest file.
    Info,
    /// Delete events. `-high N`: delete whole files holding only events up
    /// to N (never the newest file). `-low N`: delete events from N to the
    /// end of the log. Neither: delete every event. Refuses while the
    /// replicator of the service holds the THL lock; asks for confirmation
    /// unless -y.
    Purge(PurgeArgs),
}

#[derive(Args, Debug)]
struct ListArgs {
    /// First seqno to list.
    #[arg(long, value_name = "N", conflicts_with_all = ["seqno", "event"])]
    low: Option<u64>,
    /// Last seqno to list.
    #[arg(long, value_name = "N", conflicts_with_all = ["seqno", "event"])]
    high: Option<u64>,
    /// List only this seqno (all its fragments).
    #[arg(long, value_name = "N", conflicts_with = "event")]
    seqno: Option<u64>,
    /// List the event with this eventid; `mysql-bin.000032:473860407`
    /// matches `mysql-bin.000032:0000000473860407;-1`.
    #[arg(long, value_name = "EVENTID")]
    event: Option<String>,
    /// One tab-separated line per event: seqno, fragno, last_frag, time,
    /// epoch, eventid, source id, shard.
    #[arg(long, conflicts_with_all = ["sql", "json"])]
    headers: bool,
    /// Only the SQL (statements, and row changes rendered as SQL for reading).
    #[arg(long, conflicts_with = "json")]
    sql: bool,
    /// A JSON array of the events.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PurgeArgs {
    /// Delete events from this seqno to the end of the log.
    #[arg(long, value_name = "N")]
    low: Option<u64>,
    /// Delete events up to and including this seqno (whole files only).
    #[arg(long, value_name = "N")]
    high: Option<u64>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    yes: bool,
}

/// Long options accepted with a single dash.
const LONG: &[&str] = &[
    "dir", "conf", "service", "member", "low", "high", "seqno", "event", "headers", "sql", "json",
    "yes", "help", "version",
];

/// Rewrites `-word` to `--word` for the known long options.
fn rewrite_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| match a.to_str() {
            Some(s)
                if i > 0 && !s.starts_with("--") && LONG.contains(&s.trim_start_matches('-')) =>
            {
                OsString::from(format!("-{s}"))
            }
            _ => a,
        })
        .collect()
}

struct Failure {
    code: u8,
    msg: String,
}

impl From<ThlError> for Failure {
    fn from(e: ThlError) -> Self {
        Failure {
            code: 1,
            msg: e.to_string(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure {
            code: if e.kind() == std::io::ErrorKind::BrokenPipe {
                0
            } else {
                1
            },
            msg: if e.kind() == std::io::ErrorKind::BrokenPipe {
                String::new()
            } else {
                format!("writing output: {e}")
            },
        }
    }
}

fn fail(code: u8, msg: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(rewrite_args(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.msg.is_empty() {
                eprintln!("thl: {}", f.msg);
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let dir = resolve_dir(&cli.loc)?;
    if !dir.is_dir() {
        return Err(fail(
            1,
            format!("THL directory {} does not exist", dir.display()),
        ));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match cli.cmd {
        Cmd::List(a) => list(&dir, &a, &mut out)?,
        Cmd::Index => index(&dir, &mut out)?,
        Cmd::Info => info(&dir, &mut out)?,
        Cmd::Purge(a) => purge(&dir, &a, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

fn resolve_dir(loc: &Location) -> Result<PathBuf, Failure> {
    match (&loc.dir, &loc.conf) {
        (Some(_), Some(_)) => Err(fail(2, "give -dir or -conf, not both")),
        (Some(d), None) => Ok(d.clone()),
        (None, Some(conf)) => {
            let config = carbide_config::Config::load(conf).map_err(|e| fail(64, e.to_string()))?;
            if let Some(s) = &loc.service {
                if *s != config.service.name {
                    return Err(fail(
                        64,
                        format!(
                            "{} defines service '{}', not '{s}'",
                            conf.display(),
                            config.service.name
                        ),
                    ));
                }
            }
            config
                .thl_dir(loc.member.as_deref())
                .map_err(|e| fail(64, e.to_string()))
        }
        (None, None) => Err(fail(
            2,
            "no THL directory: give -dir DIR, or -conf FILE [-service NAME] [-member NAME]",
        )),
    }
}

fn note_pending(r: &ThlReader) {
    if !r.pending_recovery().is_clean() {
        eprintln!(
            "thl: note: the log ends with a torn or incomplete tail, not shown; the replicator \
             cuts it at its next start: {}",
            r.pending_recovery()
        );
    }
}

fn list(dir: &Path, a: &ListArgs, out: &mut impl Write) -> Result<(), Failure> {
    let r = ThlReader::open(dir)?;
    note_pending(&r);
    let (low, high) = if let Some(id) = &a.event {
        match r.find_event(|stored| eventid_matches(stored, id))? {
            Some(s) => (s, s),
            None => {
                return Err(fail(
                    1,
                    format!("no event with eventid {id} in {}", dir.display()),
                ))
            }
        }
    } else if let Some(s) = a.seqno {
        if r.index().locate(s).is_none() {
            return Err(fail(
                1,
                format!("seqno {s} is not in the log ({})", range(&r)),
            ));
        }
        (s, s)
    } else {
        (a.low.unwrap_or(0), a.high.unwrap_or(u64::MAX))
    };
    if low > high {
        return Err(fail(2, format!("-low {low} is above -high {high}")));
    }
    let mut schema = None;
    let mut first = true;
    if a.json {
        write!(out, "[")?;
    }
    for rec in r.records(low)? {
        let ev = rec?;
        if ev.seqno > high {
            break;
        }
        if a.headers {
            writeln!(out, "{}", format_header_line(&ev))?;
        } else if a.sql {
            for line in format_sql(&ev, &mut schema) {
                writeln!(out, "{line}")?;
            }
        } else if a.json {
            let j = serde_json::to_string_pretty(&ev)
                .map_err(|e| fail(1, format!("JSON encoding: {e}")))?;
            write!(out, "{}\n{j}", if first { "" } else { "," })?;
        } else {
            write!(out, "{}", format_event(&ev))?;
        }
        first = false;
    }
    if a.json {
        writeln!(out, "{}]", if first { "" } else { "\n" })?;
    }
    Ok(())
}

fn range(r: &ThlReader) -> String {
    match (r.first_seqno(), r.last_seqno()) {
        (Some(a), Some(b)) => format!("it holds {a}..{b}"),
        _ => "it is empty".into(),
    }
}

fn seg_range(s: &SegmentInfo) -> String {
    match s.last_seqno {
        Some(last) => format!("{}:{last}", s.base_seqno),
        None => format!("empty; next seqno {}", s.base_seqno),
    }
}

fn index(dir: &Path, out: &mut impl Write) -> Result<(), Failure> {
    let r = ThlReader::open(dir)?;
    note_pending(&r);
    for s in &r.index().segments {
        writeln!(out, "LogIndexEntry {}({})", s.file_name(), seg_range(s))?;
    }
    Ok(())
}

fn info(dir: &Path, out: &mut impl Write) -> Result<(), Failure> {
    let r = ThlReader::open(dir)?;
    note_pending(&r);
    let segs = &r.index().segments;
    let mut size = 0;
    for s in segs {
        size += std::fs::metadata(&s.path)
            .map_err(|e| ThlError::io("stat", &s.path, e))?
            .len();
    }
    let opt = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    writeln!(out, "log directory = {}", dir.display())?;
    writeln!(out, "log files = {}", segs.len())?;
    writeln!(out, "logs size = {} ({size} bytes)", human_size(size))?;
    writeln!(out, "min seq# = {}", opt(r.first_seqno()))?;
    writeln!(out, "max seq# = {}", opt(r.last_seqno()))?;
    let events = match (r.first_seqno(), r.last_seqno()) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    };
    writeln!(out, "events = {events}")?;
    if let (Some(o), Some(n)) = (segs.first(), segs.last()) {
        writeln!(out, "oldest file = {} ({})", o.file_name(), seg_range(o))?;
        writeln!(out, "newest file = {} ({})", n.file_name(), seg_range(n))?;
    }
    Ok(())
}

enum Plan {
    /// Delete whole files below this seqno (exclusive).
    Below(u64),
    /// Delete from this seqno to the end.
    From(u64),
}

fn purge(dir: &Path, a: &PurgeArgs, out: &mut impl Write) -> Result<(), Failure> {
    let lock_file = dir.join(LOCK_FILE);
    let locked = || {
        fail(
            1,
            format!(
                "refusing to purge: the replicator holds the THL lock ({}); it is running — \
                 put it offline and stop it first",
                lock_file.display()
            ),
        )
    };
    if is_locked(dir)? {
        return Err(locked());
    }
    let r = ThlReader::open(dir)?;
    let (Some(min), Some(max)) = (r.first_seqno(), r.last_seqno()) else {
        writeln!(out, "The log is empty; nothing to purge.")?;
        return Ok(());
    };
    let plan = match (a.low, a.high) {
        (None, None) => Plan::From(min),
        (None, Some(h)) => Plan::Below(h.saturating_add(1)),
        (Some(l), None) => Plan::From(l),
        (Some(l), Some(h)) if l > h => return Err(fail(2, format!("-low {l} is above -high {h}"))),
        (Some(l), Some(h)) if l <= min => Plan::Below(h.saturating_add(1)),
        (Some(l), Some(h)) if h >= max => Plan::From(l),
        (Some(l), Some(h)) => {
            return Err(fail(
                2,
                format!(
                    "cannot delete {l}..{h} from the middle of the log (it holds {min}..{max}); \
                     purge deletes from the start (-high) or to the end (-low)"
                ),
            ))
        }
    };
    match plan {
        Plan::Below(b) => writeln!(out, "Deleting events where SEQ# <= {}", b - 1)?,
        Plan::From(f) => writeln!(out, "Deleting events where SEQ# >= {f}")?,
    }
    if !a.yes {
        writeln!(
            out,
            "WARNING: The purge command will break replication if you delete all events or \
             delete events that have not reached all slaves."
        )?;
        write!(out, "Are you sure you wish to delete these events [y/N]? ")?;
        out.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        writeln!(out)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            writeln!(out, "Nothing deleted.")?;
            return Ok(());
        }
    }
    let map_locked = |e: ThlError| match e {
        ThlError::Locked { .. } => locked(),
        e => e.into(),
    };
    match plan {
        Plan::Below(below) => {
            let rep = purge_dir(
                dir,
                &PurgeRequest {
                    below_seqno: Some(below),
                    ..PurgeRequest::default()
                },
            )
            .map_err(map_locked)?;
            for s in &rep.deleted {
                writeln!(out, "Deleted {} ({})", s.file_name(), seg_range(s))?;
            }
            let upto = rep.deleted.last().and_then(|s| s.last_seqno);
            match upto {
                Some(u) => writeln!(out, "Events up to SEQ# {u} deleted.")?,
                None => writeln!(out, "No file held only events up to SEQ# {}.", below - 1)?,
            }
            if upto.is_none_or(|u| u + 1 < below) {
                if let Some(why) = rep.stopped {
                    writeln!(out, "Kept: {why} (purge deletes whole files).")?;
                }
            }
        }
        Plan::From(from) => {
            let rep = truncate_from(dir, from).map_err(map_locked)?;
            for c in &rep.recovery.cuts {
                writeln!(out, "Recovered first: {c}")?;
            }
            for f in &rep.deleted_files {
                writeln!(out, "Deleted {f}")?;
            }
            if let Some((f, at)) = &rep.truncated_file {
                writeln!(out, "Truncated {f} at offset {at}")?;
            }
            match rep.removed {
                Some((a, b)) => writeln!(out, "Events {a}..{b} deleted.")?,
                None => writeln!(out, "No events at or above SEQ# {from}.")?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_long_options_are_rewritten() {
        let v = rewrite_args(
            [
                "thl", "list", "-service", "alpha", "-low", "5", "--high", "7", "-y", "-json",
            ]
            .map(OsString::from),
        );
        let v: Vec<_> = v.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            v,
            [
                "thl",
                "list",
                "--service",
                "alpha",
                "--low",
                "5",
                "--high",
                "7",
                "-y",
                "--json"
            ]
        );
    }
}
