//! SQL generation for the applier (pure: no IO).
//!
//! A [`RowsChange`] becomes INSERT (one multi-row statement), UPDATE … WHERE
//! key LIMIT 1 or DELETE … WHERE key LIMIT 1 per row; with a full before
//! image, an UPDATE sets only the columns that changed (and DATETIME/
//! TIMESTAMP ones, which may be `ON UPDATE CURRENT_TIMESTAMP`); a [`Statement`]
//! becomes the `SET` statements for its session context plus its own text.
//! The key is the primary key when the row image marks one, else the whole
//! before image compared with `<=>` (NULL-safe). Values are written as
//! literals that reproduce the stored value exactly; the applier's session
//! runs with `time_zone = '+00:00'` (TIMESTAMPs are written as UTC) and
//! `sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'`:
//!
//! | value | literal |
//! |---|---|
//! | Null | `NULL` |
//! | Int, UInt, Enum (index), Set (bit mask), Bit (as integer) | decimal number |
//! | Float | `CAST(<shortest repr> AS FLOAT)` (compares equal to the column) |
//! | Double | `<shortest repr>e<exp>` |
//! | Decimal | its text (checked to be a number) |
//! | Bytes | `_utf8mb4 X'…'` / `_latin1 X'…'` / `X'…'` by collation: the bytes as stored |
//! | Date, Time, DateTime | `'2024-01-02'`, `'-838:59:59.000000'`, `'2024-01-02 03:04:05.000006'` |
//! | Timestamp | `'1970-…'` in UTC, `'0000-00-00 00:00:00'` for the zero value |
//! | Json | `_utf8mb4 X'…'` |

use crate::thl::{Change, ColumnSpec, RowAction, RowsChange, SessionVars, Statement, Value};
use std::fmt::Write;

/// Session setup of the applier connection (also restored after every
/// statement-based transaction).
pub const SESSION_SETUP: &str =
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', \
     time_zone = '+00:00', foreign_key_checks = 1, unique_checks = 1, \
     character_set_client = utf8mb4, character_set_connection = utf8mb4, \
     character_set_results = utf8mb4, TIMESTAMP = DEFAULT, \
     auto_increment_increment = 1, auto_increment_offset = 1";

/// Quotes an identifier with backticks.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Why a change cannot be turned into SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SqlError(pub String);

/// The SQL statements (as bytes: statement text may not be UTF-8) that
/// apply one change, in order.
pub fn change_sql(c: &Change) -> Result<Vec<Vec<u8>>, SqlError> {
    match c {
        Change::Statement(s) => Ok(statement_sql(s)),
        Change::Rows(r) => Ok(rows_sql(r)?.into_iter().map(String::into_bytes).collect()),
    }
}

/// `USE`, `SET …` and the statement itself.
pub fn statement_sql(s: &Statement) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(db) = &s.default_schema {
        out.push(format!("USE {}", ident(db)).into_bytes());
    }
    let sets = session_sets(&s.session);
    if !sets.is_empty() {
        out.push(format!("SET {}", sets.join(", ")).into_bytes());
    }
    out.push(s.sql.clone());
    out
}

fn session_sets(v: &SessionVars) -> Vec<String> {
    let mut s = Vec::new();
    if let Some(t) = v.timestamp {
        s.push(format!("TIMESTAMP = {}.{:06}", t.seconds, t.micros));
    }
    if let Some(m) = v.sql_mode {
        s.push(format!("@@session.sql_mode = {m}"));
    }
    if let Some(c) = v.charset_client {
        s.push(format!("@@session.character_set_client = {c}"));
    }
    if let Some(c) = v.collation_connection {
        s.push(format!("@@session.collation_connection = {c}"));
    }
    if let Some(c) = v.collation_server {
        s.push(format!("@@session.collation_server = {c}"));
    }
    if let Some(tz) = &v.time_zone {
        s.push(format!(
            "@@session.time_zone = '{}'",
            tz.replace('\'', "''")
        ));
    }
    if let Some(n) = v.auto_increment_increment {
        s.push(format!("@@session.auto_increment_increment = {n}"));
    }
    if let Some(n) = v.auto_increment_offset {
        s.push(format!("@@session.auto_increment_offset = {n}"));
    }
    if let Some(n) = v.insert_id {
        s.push(format!("INSERT_ID = {n}"));
    }
    if let Some(n) = v.last_insert_id {
        s.push(format!("LAST_INSERT_ID = {n}"));
    }
    if let Some((a, b)) = v.rand_seed {
        s.push(format!("@@RAND_SEED1 = {a}, @@RAND_SEED2 = {b}"));
    }
    if let Some(b) = v.foreign_key_checks {
        s.push(format!("@@session.foreign_key_checks = {}", u8::from(b)));
    }
    if let Some(b) = v.unique_checks {
        s.push(format!("@@session.unique_checks = {}", u8::from(b)));
    }
    s
}

/// Every column must have a name to be written.
fn check_names(cols: &[ColumnSpec], what: &str, r: &RowsChange) -> Result<(), SqlError> {
    match cols.iter().find(|c| c.name.is_empty()) {
        Some(c) => Err(SqlError(format!(
            "{} of {}.{}: column {} has no name in the row image",
            what, r.schema, r.table, c.index
        ))),
        None => Ok(()),
    }
}

/// Appends an identifier quoted with backticks.
fn push_ident(out: &mut String, s: &str) {
    out.push('`');
    if s.contains('`') {
        out.push_str(&s.replace('`', "``"));
    } else {
        out.push_str(s);
    }
    out.push('`');
}

/// SQL for one rows change, one string per statement.
pub fn rows_sql(r: &RowsChange) -> Result<Vec<String>, SqlError> {
    let mut all = String::new();
    let mut starts = Vec::new();
    write_rows(r, &mut all, |o| starts.push(o.len()))?;
    let mut out = Vec::with_capacity(starts.len());
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(all.len());
        out.push(all[s..e].to_string());
    }
    Ok(out)
}

/// Appends the statements of one rows change to `out`, each preceded by
/// `;` (for a multi-statement query). For an INSERT, returns where its
/// `INSERT INTO … VALUES ` prefix lies in `out` (rows of a following
/// INSERT with the same prefix may be appended to it).
pub fn append_rows_sql(
    out: &mut String,
    r: &RowsChange,
) -> Result<Option<std::ops::Range<usize>>, SqlError> {
    write_rows(r, out, |o| o.push(';'))
}

/// Writes the statements of `r` into `out`, calling `begin` before each;
/// for an INSERT, returns the range of its `INSERT INTO … VALUES ` prefix.
fn write_rows(
    r: &RowsChange,
    out: &mut String,
    mut begin: impl FnMut(&mut String),
) -> Result<Option<std::ops::Range<usize>>, SqlError> {
    let mut table = String::with_capacity(r.schema.len() + r.table.len() + 5);
    push_ident(&mut table, &r.schema);
    table.push('.');
    push_ident(&mut table, &r.table);
    let missing = |img: &str| {
        SqlError(format!(
            "{} on {}.{}: a row has no {img} image",
            r.action.as_str(),
            r.schema,
            r.table
        ))
    };
    match r.action {
        RowAction::Insert => {
            if r.rows.is_empty() {
                return Ok(None);
            }
            check_names(&r.columns, "INSERT", r)?;
            begin(out);
            let p0 = out.len();
            out.push_str("INSERT INTO ");
            out.push_str(&table);
            out.push_str(" (");
            for (j, c) in r.columns.iter().enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                push_ident(out, &c.name);
            }
            out.push_str(") VALUES ");
            let p1 = out.len();
            for (i, row) in r.rows.iter().enumerate() {
                let after = row.after.as_ref().ok_or_else(|| missing("after"))?;
                if after.len() != r.columns.len() {
                    return Err(SqlError(format!(
                        "INSERT on {}.{}: {} values for {} columns",
                        r.schema,
                        r.table,
                        after.len(),
                        r.columns.len()
                    )));
                }
                out.push_str(if i == 0 { "(" } else { ", (" });
                for (j, (v, c)) in after.iter().zip(&r.columns).enumerate() {
                    if j > 0 {
                        out.push_str(", ");
                    }
                    literal(out, v, c);
                }
                out.push(')');
            }
            return Ok(Some(p0..p1));
        }
        RowAction::Update => {
            check_names(&r.columns, "UPDATE", r)?;
            check_names(&r.keys, "UPDATE", r)?;
            let key = key_columns(r);
            let full_before = r.keys.len() == r.columns.len()
                && r.keys
                    .iter()
                    .zip(&r.columns)
                    .all(|(k, c)| k.index == c.index);
            for row in &r.rows {
                let before = row.before.as_ref().ok_or_else(|| missing("before"))?;
                let after = row.after.as_ref().ok_or_else(|| missing("after"))?;
                let set = |j: usize| {
                    !full_before
                        || always_set(&r.columns[j])
                        || before.get(j).is_none_or(|b| !same_value(b, &after[j]))
                };
                let any = (0..after.len().min(r.columns.len())).any(set);
                begin(out);
                out.push_str("UPDATE ");
                out.push_str(&table);
                out.push_str(" SET ");
                let mut n = 0;
                for (j, (v, c)) in after.iter().zip(&r.columns).enumerate() {
                    if any && !set(j) {
                        continue;
                    }
                    if n > 0 {
                        out.push_str(", ");
                    }
                    n += 1;
                    push_ident(out, &c.name);
                    out.push_str(" = ");
                    literal(out, v, c);
                }
                where_key(out, r, &key, before)?;
            }
        }
        RowAction::Delete => {
            check_names(&r.keys, "DELETE", r)?;
            let key = key_columns(r);
            for row in &r.rows {
                let before = row.before.as_ref().ok_or_else(|| missing("before"))?;
                begin(out);
                out.push_str("DELETE FROM ");
                out.push_str(&table);
                where_key(out, r, &key, before)?;
            }
        }
    }
    Ok(None)
}

/// DATETIME and TIMESTAMP columns are SET even when unchanged: they may
/// be `ON UPDATE CURRENT_TIMESTAMP`, and leaving one out would let the
/// replica stamp its own time.
fn always_set(c: &ColumnSpec) -> bool {
    matches!(c.type_code, 7 | 12 | 17 | 18)
        || matches!(c.type_name.as_str(), "TIMESTAMP" | "DATETIME")
}

/// Equal as stored (floats by their bits: `-0.0` is not `0.0`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Positions in `r.keys` of the columns that identify a row: those marked
/// `primary_key` (the primary key, or the unique NOT NULL key the
/// extractor chose for a table without one), else every column of the
/// before image.
fn key_columns(r: &RowsChange) -> Vec<usize> {
    let pk: Vec<usize> = (0..r.keys.len())
        .filter(|&i| r.keys[i].primary_key)
        .collect();
    if pk.is_empty() {
        (0..r.keys.len()).collect()
    } else {
        pk
    }
}

/// ` WHERE …  LIMIT 1` over the key columns of the before image
/// (NULL-safe comparisons).
fn where_key(
    sql: &mut String,
    r: &RowsChange,
    key: &[usize],
    before: &[Value],
) -> Result<(), SqlError> {
    sql.push_str(" WHERE ");
    let mut n = 0;
    for &i in key.iter().filter(|&&i| i < before.len()) {
        if n > 0 {
            sql.push_str(" AND ");
        }
        n += 1;
        push_ident(sql, &r.keys[i].name);
        sql.push_str(" <=> ");
        literal(sql, &before[i], &r.keys[i]);
    }
    if n == 0 {
        return Err(SqlError(format!(
            "{} on {}.{}: no key column in the before image",
            r.action.as_str(),
            r.schema,
            r.table
        )));
    }
    sql.push_str(" LIMIT 1");
    Ok(())
}

/// A string as a `_utf8mb4 X'…'` literal (any bytes, no escaping).
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(11 + 2 * s.len());
    out.push_str("_utf8mb4 ");
    hex(&mut out, s.as_bytes());
    out
}

fn hex(out: &mut String, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(3 + 2 * b.len());
    out.push_str("X'");
    for &x in b {
        out.push(DIGITS[usize::from(x >> 4)] as char);
        out.push(DIGITS[usize::from(x & 15)] as char);
    }
    out.push('\'');
}

/// Character set introducer for a collation id, when it is one we know.
fn introducer(collation: Option<u16>) -> &'static str {
    match collation {
        Some(45 | 46 | 224..=247 | 255..=323) => "_utf8mb4 ",
        Some(33 | 83 | 192..=215) => "_utf8mb3 ",
        Some(8 | 5 | 15 | 31 | 47 | 48 | 49 | 94) => "_latin1 ",
        Some(11 | 65) => "_ascii ",
        _ => "",
    }
}

/// Appends the SQL literal for `v` in column `c`.
pub fn literal(out: &mut String, v: &Value, c: &ColumnSpec) {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) => {
            let _ = write!(out, "CAST({f:e} AS FLOAT)");
        }
        Value::Double(d) => {
            let _ = write!(out, "{d:e}");
        }
        Value::Decimal(s) => {
            let ok = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+');
            if ok {
                out.push_str(s);
            } else {
                let _ = write!(out, "'{}'", s.replace('\'', "''"));
            }
        }
        Value::Bytes { data, charset } => {
            out.push_str(introducer(charset.or(c.charset)));
            hex(out, data);
        }
        Value::Json(s) => {
            out.push_str("_utf8mb4 ");
            hex(out, s.as_bytes());
        }
        Value::Date(d) => {
            let _ = write!(out, "'{:04}-{:02}-{:02}'", d.year, d.month, d.day);
        }
        Value::Time(t) => {
            let _ = write!(
                out,
                "'{}{:02}:{:02}:{:02}.{:06}'",
                if t.negative { "-" } else { "" },
                t.hours,
                t.minutes,
                t.seconds,
                t.micros
            );
        }
        Value::DateTime(dt) => {
            let d = dt.date;
            let _ = write!(
                out,
                "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
                d.year, d.month, d.day, dt.hour, dt.minute, dt.second, dt.micros
            );
        }
        Value::Timestamp(ts) => {
            if ts.seconds == 0 && ts.micros == 0 {
                out.push_str("'0000-00-00 00:00:00'");
            } else {
                let days = ts.seconds.div_euclid(86_400);
                let secs = ts.seconds.rem_euclid(86_400);
                let (y, m, d) = civil_from_days(days);
                let _ = write!(
                    out,
                    "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
                    y,
                    m,
                    d,
                    secs / 3600,
                    (secs / 60) % 60,
                    secs % 60,
                    ts.micros
                );
            }
        }
        Value::Bit { data, .. } => {
            let n = data[data.len().saturating_sub(8)..]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            let _ = write!(out, "{n}");
        }
        Value::Enum(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Set(s) => {
            let _ = write!(out, "{s}");
        }
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// True when a statement-based change may commit implicitly (DDL and the
/// like): such transactions are applied on their own.
pub fn is_statement(c: &Change) -> bool {
    matches!(c, Change::Statement(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thl::{Date, DateTime, RowChange, Time, Timestamp};

    fn col(name: &str, pk: bool) -> ColumnSpec {
        ColumnSpec {
            index: 1,
            name: name.into(),
            primary_key: pk,
            ..ColumnSpec::default()
        }
    }

    fn lit(v: Value) -> String {
        let mut s = String::new();
        literal(&mut s, &v, &ColumnSpec::default());
        s
    }

    #[test]
    fn literals_for_every_value_kind() {
        assert_eq!(lit(Value::Null), "NULL");
        assert_eq!(lit(Value::Int(-5)), "-5");
        assert_eq!(lit(Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(lit(Value::Float(1.1)), "CAST(1.1e0 AS FLOAT)");
        assert_eq!(lit(Value::Double(-2.5e300)), "-2.5e300");
        assert_eq!(lit(Value::Double(0.1)), "1e-1");
        assert_eq!(lit(Value::Decimal("-12.3400".into())), "-12.3400");
        assert_eq!(lit(Value::Decimal("1'; DROP".into())), "'1''; DROP'");
        assert_eq!(lit(Value::text("é'", Some(255))), "_utf8mb4 X'C3A927'");
        assert_eq!(lit(Value::text("a", Some(8))), "_latin1 X'61'");
        assert_eq!(lit(Value::bytes(vec![0u8, 255])), "X'00FF'");
        assert_eq!(
            lit(Value::Json("{\"a\":1}".into())),
            "_utf8mb4 X'7B2261223A317D'"
        );
        assert_eq!(
            lit(Value::Date(Date {
                year: 0,
                month: 0,
                day: 0
            })),
            "'0000-00-00'"
        );
        assert_eq!(
            lit(Value::Time(Time {
                negative: true,
                hours: 838,
                minutes: 59,
                seconds: 59,
                micros: 0
            })),
            "'-838:59:59.000000'"
        );
        assert_eq!(
            lit(Value::DateTime(DateTime {
                date: Date {
                    year: 2024,
                    month: 2,
                    day: 29
                },
                hour: 23,
                minute: 4,
                second: 5,
                micros: 6
            })),
            "'2024-02-29 23:04:05.000006'"
        );
        assert_eq!(
            lit(Value::Timestamp(Timestamp {
                seconds: 1_709_251_199,
                micros: 7
            })),
            "'2024-02-29 23:59:59.000007'"
        );
        assert_eq!(
            lit(Value::Timestamp(Timestamp {
                seconds: 0,
                micros: 0
            })),
            "'0000-00-00 00:00:00'"
        );
        assert_eq!(
            lit(Value::Bit {
                data: vec![1, 2],
                bits: 10
            }),
            "258"
        );
        assert_eq!(lit(Value::Enum(3)), "3");
        assert_eq!(lit(Value::Set(5)), "5");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(24_855), (2038, 1, 19));
    }

    fn rows(action: RowAction, keys: Vec<ColumnSpec>, rows: Vec<RowChange>) -> RowsChange {
        RowsChange {
            schema: "app".into(),
            table: "t`x".into(),
            action,
            columns: vec![col("id", true), col("v", false)],
            keys,
            rows,
        }
    }

    #[test]
    fn insert_is_one_multi_row_statement() {
        let r = rows(
            RowAction::Insert,
            vec![],
            vec![
                RowChange {
                    before: None,
                    after: Some(vec![Value::Int(1), Value::Null]),
                },
                RowChange {
                    before: None,
                    after: Some(vec![Value::Int(2), Value::text("b", Some(255))]),
                },
            ],
        );
        assert_eq!(
            rows_sql(&r).unwrap(),
            vec!["INSERT INTO `app`.`t``x` (`id`, `v`) VALUES (1, NULL), (2, _utf8mb4 X'62')"]
        );
    }

    #[test]
    fn update_and_delete_use_the_primary_key() {
        let before = Some(vec![Value::Int(1), Value::text("a", None)]);
        let r = rows(
            RowAction::Update,
            vec![col("id", true), col("v", false)],
            vec![RowChange {
                before: before.clone(),
                after: Some(vec![Value::Int(1), Value::text("b", None)]),
            }],
        );
        assert_eq!(
            rows_sql(&r).unwrap(),
            vec!["UPDATE `app`.`t``x` SET `v` = X'62' WHERE `id` <=> 1 LIMIT 1"]
        );
        let r = rows(
            RowAction::Delete,
            vec![col("id", true), col("v", false)],
            vec![RowChange {
                before,
                after: None,
            }],
        );
        assert_eq!(
            rows_sql(&r).unwrap(),
            vec!["DELETE FROM `app`.`t``x` WHERE `id` <=> 1 LIMIT 1"]
        );
    }

    #[test]
    fn update_sets_what_changed_and_temporal_columns() {
        let mut cols = vec![col("id", true), col("k", false), col("ts", false)];
        for (i, c) in cols.iter_mut().enumerate() {
            c.index = i as u32 + 1;
        }
        cols[2].type_code = 17;
        let mut r = RowsChange {
            schema: "a".into(),
            table: "t".into(),
            action: RowAction::Update,
            columns: cols.clone(),
            keys: cols.clone(),
            rows: vec![RowChange {
                before: Some(vec![Value::Int(1), Value::Int(5), Value::Null]),
                after: Some(vec![Value::Int(1), Value::Int(6), Value::Null]),
            }],
        };
        assert_eq!(
            rows_sql(&r).unwrap(),
            vec!["UPDATE `a`.`t` SET `k` = 6, `ts` = NULL WHERE `id` <=> 1 LIMIT 1"]
        );
        // -0.0 differs from 0.0 as stored
        r.rows[0].before = Some(vec![Value::Int(1), Value::Double(0.0), Value::Null]);
        r.rows[0].after = Some(vec![Value::Int(1), Value::Double(-0.0), Value::Null]);
        assert!(rows_sql(&r).unwrap()[0].contains("`k` = -0e0"));
        // a minimal before image (the key only) says nothing of the rest
        r.keys.truncate(1);
        r.rows[0].before = Some(vec![Value::Int(1)]);
        r.rows[0].after = Some(vec![Value::Int(1), Value::Int(6), Value::Null]);
        assert_eq!(
            rows_sql(&r).unwrap(),
            vec!["UPDATE `a`.`t` SET `id` = 1, `k` = 6, `ts` = NULL WHERE `id` <=> 1 LIMIT 1"]
        );
    }

    #[test]
    fn without_a_key_the_whole_before_image_is_matched() {
        let r = rows(
            RowAction::Delete,
            vec![col("a", false), col("b", false)],
            vec![RowChange {
                before: Some(vec![Value::Null, Value::Int(2)]),
                after: None,
            }],
        );
        assert_eq!(
            rows_sql(&r).unwrap(),
            vec!["DELETE FROM `app`.`t``x` WHERE `a` <=> NULL AND `b` <=> 2 LIMIT 1"]
        );
    }

    #[test]
    fn nameless_columns_and_missing_images_are_errors() {
        let mut r = rows(
            RowAction::Insert,
            vec![],
            vec![RowChange {
                before: None,
                after: None,
            }],
        );
        assert!(rows_sql(&r).unwrap_err().0.contains("no after image"));
        r.columns[1].name.clear();
        assert!(rows_sql(&r).unwrap_err().0.contains("no name"));
    }

    #[test]
    fn statements_carry_schema_and_session() {
        let mut s = Statement::new("CREATE TABLE t (id INT)");
        s.default_schema = Some("app".into());
        s.session.sql_mode = Some(1_411_383_296);
        s.session.timestamp = Some(Timestamp {
            seconds: 5,
            micros: 1,
        });
        s.session.charset_client = Some(33);
        let out: Vec<String> = statement_sql(&s)
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        assert_eq!(
            out,
            vec![
                "USE `app`".to_string(),
                "SET TIMESTAMP = 5.000001, @@session.sql_mode = 1411383296, \
                 @@session.character_set_client = 33"
                    .into(),
                "CREATE TABLE t (id INT)".into()
            ]
        );
    }
}
