//! Text renderings of THL events for operators (the `thl` tool, later
//! `trepctl`): the Tungsten-style `thl list` block, the one-line header, and
//! readable SQL. Events enter, `String`s leave; no IO. The SQL here is for
//! reading, not what the applier executes.

use crate::thl::event::{Change, RowAction, RowsChange, SessionVars, ThlEvent, Value};
use std::fmt::Write;

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) for µs since the Unix epoch.
pub fn format_time_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let millis = us.rem_euclid(1_000_000) / 1000;
    format!("{}.{millis:03}", format_epoch_secs(secs))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for seconds since the Unix epoch.
pub fn format_epoch_secs(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn frac(micros: u32) -> String {
    if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    }
}

/// A value as `thl list` shows it.
pub fn format_value(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Decimal(s) | Value::Json(s) => s.clone(),
        Value::Bytes { data, charset } => match std::str::from_utf8(data) {
            Ok(s) if *charset != Some(63) => s.to_string(),
            _ => hex(data),
        },
        Value::Date(d) => format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
        Value::Time(t) => format!(
            "{}{:02}:{:02}:{:02}{}",
            if t.negative { "-" } else { "" },
            t.hours,
            t.minutes,
            t.seconds,
            frac(t.micros)
        ),
        Value::DateTime(dt) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{}",
            dt.date.year,
            dt.date.month,
            dt.date.day,
            dt.hour,
            dt.minute,
            dt.second,
            frac(dt.micros)
        ),
        Value::Timestamp(t) => format!("{}{}", format_epoch_secs(t.seconds), frac(t.micros)),
        Value::Bit { data, bits } => {
            let all: String = data.iter().map(|b| format!("{b:08b}")).collect();
            let keep = usize::from(*bits).min(all.len());
            format!("b'{}'", &all[all.len() - keep..])
        }
        Value::Enum(n) => n.to_string(),
        Value::Set(n) => n.to_string(),
    }
}

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(3 + data.len() * 2);
    s.push_str("x'");
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s.push('\'');
    s
}

/// `STATEMENT`, `ROW`, `MIXED` or `EMPTY`.
pub fn event_type(ev: &ThlEvent) -> &'static str {
    let stmts = ev
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Statement(_)))
        .count();
    match (stmts, ev.changes.len() - stmts) {
        (0, 0) => "EMPTY",
        (_, 0) => "STATEMENT",
        (0, _) => "ROW",
        _ => "MIXED",
    }
}

/// `[k=v;k=v]` of the event's metadata (with `shard=` when not already there).
pub fn format_metadata(ev: &ThlEvent) -> String {
    let mut parts: Vec<String> = ev
        .metadata
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !ev.shard.is_empty() && ev.meta("shard").is_none() {
        parts.push(format!("shard={}", ev.shard));
    }
    format!("[{}]", parts.join(";"))
}

fn format_options(s: &SessionVars) -> Option<String> {
    let mut o = Vec::new();
    let b = |v: bool| u8::from(v);
    if let Some(t) = s.timestamp {
        o.push(format!("timestamp = {}{}", t.seconds, frac(t.micros)));
    }
    if let Some(v) = s.sql_mode {
        o.push(format!("sql_mode = {v}"));
    }
    if let Some(v) = s.charset_client {
        o.push(format!("character_set_client = {v}"));
    }
    if let Some(v) = s.collation_connection {
        o.push(format!("collation_connection = {v}"));
    }
    if let Some(v) = s.collation_server {
        o.push(format!("collation_server = {v}"));
    }
    if let Some(v) = &s.time_zone {
        o.push(format!("time_zone = '{v}'"));
    }
    if let Some(v) = s.auto_increment_increment {
        o.push(format!("auto_increment_increment = {v}"));
    }
    if let Some(v) = s.auto_increment_offset {
        o.push(format!("auto_increment_offset = {v}"));
    }
    if let Some(v) = s.insert_id {
        o.push(format!("insert_id = {v}"));
    }
    if let Some(v) = s.last_insert_id {
        o.push(format!("last_insert_id = {v}"));
    }
    if let Some((a, c)) = s.rand_seed {
        o.push(format!("rand_seed = {a},{c}"));
    }
    if let Some(v) = s.foreign_key_checks {
        o.push(format!("foreign_key_checks = {}", b(v)));
    }
    if let Some(v) = s.unique_checks {
        o.push(format!("unique_checks = {}", b(v)));
    }
    if let Some(v) = s.autocommit {
        o.push(format!("autocommit = {}", b(v)));
    }
    (!o.is_empty()).then(|| format!("[{}]", o.join(", ")))
}

/// The `thl list` block of one record (ends with a newline).
pub fn format_event(ev: &ThlEvent) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "SEQ# = {} / FRAG# = {}{}",
        ev.seqno,
        ev.fragno,
        if ev.last_frag { " (last frag)" } else { "" }
    );
    let _ = writeln!(s, "- TIME = {}", format_time_us(ev.source_tstamp));
    let _ = writeln!(s, "- EPOCH# = {}", ev.epoch);
    let _ = writeln!(s, "- EVENTID = {}", ev.eventid);
    let _ = writeln!(s, "- SOURCEID = {}", ev.source_id);
    let _ = writeln!(s, "- METADATA = {}", format_metadata(ev));
    let _ = writeln!(s, "- TYPE = {}", event_type(ev));
    for (i, c) in ev.changes.iter().enumerate() {
        match c {
            Change::Statement(st) => {
                if let Some(o) = format_options(&st.session) {
                    let _ = writeln!(s, "- OPTIONS = {o}");
                }
                if let Some(schema) = &st.default_schema {
                    let _ = writeln!(s, "- SCHEMA = {schema}");
                }
                let _ = writeln!(s, "- SQL({i}) = {}", st.sql_text());
            }
            Change::Rows(r) => {
                let _ = writeln!(s, "- SQL({i}) =");
                let _ = writeln!(s, " - ACTION = {}", r.action.as_str());
                let _ = writeln!(s, " - SCHEMA = {}", r.schema);
                let _ = writeln!(s, " - TABLE = {}", r.table);
                for (n, row) in r.rows.iter().enumerate() {
                    let _ = writeln!(s, " - ROW# = {n}");
                    for (spec, v) in r.columns.iter().zip(row.after.iter().flatten()) {
                        let _ = writeln!(
                            s,
                            "  - COL({}: {}) = {}",
                            spec.index,
                            spec.name,
                            format_value(v)
                        );
                    }
                    for (spec, v) in r.keys.iter().zip(row.before.iter().flatten()) {
                        let _ = writeln!(
                            s,
                            "  - KEY({}: {}) = {}",
                            spec.index,
                            spec.name,
                            format_value(v)
                        );
                    }
                }
            }
        }
    }
    s
}

/// One tab-separated line: seqno, fragno, last_frag, time, epoch, eventid,
/// source id, shard.
pub fn format_header_line(ev: &ThlEvent) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        ev.seqno,
        ev.fragno,
        ev.last_frag,
        format_time_us(ev.source_tstamp),
        ev.epoch,
        ev.eventid,
        ev.source_id,
        ev.shard
    )
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A value as a SQL literal (for reading).
pub fn sql_literal(v: &Value) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    match v {
        Value::Null => "NULL".into(),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Double(_) => format_value(v),
        Value::Enum(_) | Value::Set(_) => format_value(v),
        Value::Decimal(s) => s.clone(),
        Value::Bit { .. } => format_value(v),
        Value::Bytes { data, charset } => match std::str::from_utf8(data) {
            Ok(s) if *charset != Some(63) => quote(s),
            _ => hex(data),
        },
        Value::Date(_) | Value::Time(_) | Value::DateTime(_) | Value::Timestamp(_) => {
            quote(&format_value(v))
        }
        Value::Json(s) => quote(s),
    }
}

fn col_name(spec: &crate::thl::event::ColumnSpec) -> String {
    if spec.name.is_empty() {
        format!("@{}", spec.index)
    } else {
        quote_ident(&spec.name)
    }
}

fn rows_sql(r: &RowsChange, out: &mut Vec<String>) {
    let table = format!("{}.{}", quote_ident(&r.schema), quote_ident(&r.table));
    let where_of = |before: &[Value]| {
        r.keys
            .iter()
            .zip(before)
            .map(|(k, v)| match v {
                Value::Null => format!("{} IS NULL", col_name(k)),
                v => format!("{} = {}", col_name(k), sql_literal(v)),
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    for row in &r.rows {
        let after = row.after.as_deref().unwrap_or(&[]);
        let before = row.before.as_deref().unwrap_or(&[]);
        let line = match r.action {
            RowAction::Insert => format!(
                "INSERT INTO {table} ({}) VALUES ({});",
                r.columns
                    .iter()
                    .map(col_name)
                    .collect::<Vec<_>>()
                    .join(", "),
                after.iter().map(sql_literal).collect::<Vec<_>>().join(", ")
            ),
            RowAction::Update => format!(
                "UPDATE {table} SET {} WHERE {};",
                r.columns
                    .iter()
                    .zip(after)
                    .map(|(c, v)| format!("{} = {}", col_name(c), sql_literal(v)))
                    .collect::<Vec<_>>()
                    .join(", "),
                where_of(before)
            ),
            RowAction::Delete => format!("DELETE FROM {table} WHERE {};", where_of(before)),
        };
        out.push(line);
    }
}

/// Readable SQL for an event's changes; `schema` tracks the current `USE`
/// across calls so it is only repeated when it changes.
pub fn format_sql(ev: &ThlEvent, schema: &mut Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for c in &ev.changes {
        match c {
            Change::Statement(st) => {
                if let Some(s) = &st.default_schema {
                    if schema.as_ref() != Some(s) {
                        out.push(format!("USE {};", quote_ident(s)));
                        *schema = Some(s.clone());
                    }
                }
                out.push(format!("{};", st.sql_text()));
            }
            Change::Rows(r) => rows_sql(r, &mut out),
        }
    }
    out
}

/// `12.34 MB`-style size (1024-based), bytes below 1 KiB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thl::event::{Date, Time, Timestamp};

    #[test]
    fn times_and_values() {
        assert_eq!(format_time_us(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            format_time_us(1_700_000_000_123_456),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(format_epoch_secs(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(
            format_value(&Value::Time(Time {
                negative: true,
                hours: 838,
                minutes: 59,
                seconds: 59,
                micros: 5
            })),
            "-838:59:59.000005"
        );
        assert_eq!(
            format_value(&Value::Date(Date {
                year: 0,
                month: 0,
                day: 0
            })),
            "0000-00-00"
        );
        assert_eq!(
            format_value(&Value::Timestamp(Timestamp {
                seconds: 86_400,
                micros: 0
            })),
            "1970-01-02 00:00:00"
        );
        assert_eq!(
            format_value(&Value::Bit {
                data: vec![5],
                bits: 3
            }),
            "b'101'"
        );
        assert_eq!(format_value(&Value::bytes(vec![0xff, 0])), "x'ff00'");
        assert_eq!(sql_literal(&Value::text("it's", None)), "'it\\'s'");
        assert_eq!(human_size(1023), "1023 bytes");
        assert_eq!(human_size(1536), "1.50 KB");
    }
}
