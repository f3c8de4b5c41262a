//! Grouping decoded binlog events into transactions (pure, no IO).
//!
//! [`Decoded`] items enter [`TxBuilder::push`] with the position the event
//! ends at; a [`Completed`] transaction leaves when its commit (XID,
//! `COMMIT`/`ROLLBACK` query, or the single statement of a standalone
//! transaction) arrives. Boundaries:
//!
//! * MariaDB: a GTID event starts every transaction. With `FL_STANDALONE`
//!   (DDL, non-transactional single statements) the next statement ends it;
//!   otherwise XID or a COMMIT/ROLLBACK query ends it.
//! * MySQL: GTID/ANONYMOUS_GTID, then `BEGIN` … XID/COMMIT, or a DDL alone.
//! * No GTID at all (old formats): `BEGIN` opens, a statement outside
//!   `BEGIN` is a transaction by itself.
//!
//! INTVAR/RAND values attach to the next statement's session. Consecutive
//! rows events on the same table and action merge into one change. Empty
//! transactions (nothing but BEGIN/COMMIT) are dropped.

use super::decode::{Decoded, QueryKind};
use crate::thl::{Change, SessionVars};
use std::collections::BTreeSet;

/// Rows events are merged into one change up to this many rows, so that
/// large transactions still split into THL fragments at change boundaries.
pub const MAX_MERGED_ROWS: usize = 1000;

/// Shard of a transaction that touches several schemas, or none.
pub const UNKNOWN_SHARD: &str = "#UNKNOWN";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ends at XID/COMMIT/ROLLBACK.
    Explicit,
    /// Ends after its statement (or XID).
    Standalone,
    /// MySQL GTID: `BEGIN` makes it explicit, a statement first makes it
    /// standalone (DDL), rows make it explicit.
    Undecided,
}

#[derive(Debug)]
struct Pending {
    mode: Mode,
    gtid: Option<String>,
    changes: Vec<Change>,
    schemas: BTreeSet<String>,
    unknown_schema: bool,
    first_ts: u32,
}

/// A whole transaction, ready to become a THL event.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// GTID text, when the source gave one.
    pub gtid: Option<String>,
    /// The changes in commit order.
    pub changes: Vec<Change>,
    /// The schema if exactly one was touched, else `#UNKNOWN`.
    pub shard: String,
    /// Timestamp (seconds) of the commit event on the source.
    pub commit_ts: u32,
    /// Server id of the commit event.
    pub server_id: u32,
    /// True when the transaction holds DDL (schema caches must be dropped).
    pub has_ddl: bool,
}

/// Builds transactions from decoded events.
#[derive(Debug, Default)]
pub struct TxBuilder {
    cur: Option<Pending>,
    session: SessionVars,
    has_ddl: bool,
}

impl TxBuilder {
    /// A builder outside any transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a transaction is open (a restart here would lose it).
    pub fn in_transaction(&self) -> bool {
        self.cur.is_some()
    }

    /// Forgets a partial transaction (after a reconnect).
    pub fn reset(&mut self) {
        self.cur = None;
        self.session = SessionVars::default();
        self.has_ddl = false;
    }

    fn open(&mut self, mode: Mode, gtid: Option<String>, ts: u32) -> &mut Pending {
        self.has_ddl = false;
        self.cur.insert(Pending {
            mode,
            gtid,
            changes: Vec::new(),
            schemas: BTreeSet::new(),
            unknown_schema: false,
            first_ts: ts,
        })
    }

    fn finish(&mut self, ts: u32, server_id: u32) -> Option<Completed> {
        let p = self.cur.take()?;
        self.session = SessionVars::default();
        if p.changes.is_empty() {
            return None;
        }
        let shard = if p.schemas.len() == 1 && !p.unknown_schema {
            p.schemas.iter().next().cloned().unwrap_or_default()
        } else {
            UNKNOWN_SHARD.to_string()
        };
        Some(Completed {
            gtid: p.gtid.filter(|g| !g.is_empty()),
            changes: p.changes,
            shard,
            commit_ts: if ts == 0 { p.first_ts } else { ts },
            server_id,
            has_ddl: std::mem::take(&mut self.has_ddl),
        })
    }

    /// Feeds one decoded event with the header timestamp and server id of
    /// the binlog event; returns a transaction when this event ends one.
    pub fn push(
        &mut self,
        d: Decoded,
        ts: u32,
        server_id: u32,
    ) -> Result<Option<Completed>, String> {
        match d {
            Decoded::Gtid {
                gtid,
                standalone,
                mariadb,
            } => {
                if let Some(p) = &self.cur {
                    if !p.changes.is_empty() {
                        return Err(format!(
                            "GTID {gtid} starts a transaction while the previous one (GTID {}) \
                             has no commit",
                            p.gtid.as_deref().unwrap_or("-")
                        ));
                    }
                }
                let mode = match (standalone, mariadb) {
                    (true, _) => Mode::Standalone,
                    (false, true) => Mode::Explicit,
                    (false, false) => Mode::Undecided,
                };
                self.open(mode, Some(gtid), ts);
                Ok(None)
            }
            Decoded::Query { kind, stmt } => match kind {
                QueryKind::Begin => {
                    match self.cur.as_mut() {
                        Some(p) => p.mode = Mode::Explicit,
                        None => {
                            self.open(Mode::Explicit, None, ts);
                        }
                    }
                    Ok(None)
                }
                QueryKind::Commit | QueryKind::Rollback => Ok(self.finish(ts, server_id)),
                QueryKind::Other => {
                    let mut stmt = stmt;
                    let pend = std::mem::take(&mut self.session);
                    stmt.session.insert_id = pend.insert_id;
                    stmt.session.last_insert_id = pend.last_insert_id;
                    stmt.session.rand_seed = pend.rand_seed;
                    if !is_dml(&stmt.sql) {
                        self.has_ddl = true;
                    }
                    let p = match self.cur.as_mut() {
                        Some(p) => p,
                        None => self.open(Mode::Standalone, None, ts),
                    };
                    if p.mode == Mode::Undecided {
                        p.mode = Mode::Standalone;
                    }
                    match stmt
                        .default_schema
                        .clone()
                        .or_else(|| named_schema(&stmt.sql))
                    {
                        Some(s) => {
                            p.schemas.insert(s);
                        }
                        None => p.unknown_schema = true,
                    }
                    let standalone = p.mode == Mode::Standalone;
                    p.changes.push(Change::Statement(stmt));
                    let ddl = self.has_ddl;
                    if standalone {
                        let done = self.finish(ts, server_id);
                        self.has_ddl = false;
                        return Ok(done.map(|mut c| {
                            c.has_ddl = ddl;
                            c
                        }));
                    }
                    Ok(None)
                }
            },
            Decoded::Rows(rc) => {
                let p = match self.cur.as_mut() {
                    Some(p) => p,
                    None => self.open(Mode::Explicit, None, ts),
                };
                if p.mode == Mode::Undecided {
                    p.mode = Mode::Explicit;
                }
                p.schemas.insert(rc.schema.clone());
                if let Some(Change::Rows(last)) = p.changes.last_mut() {
                    if last.schema == rc.schema
                        && last.table == rc.table
                        && last.action == rc.action
                        && last.columns == rc.columns
                        && last.keys == rc.keys
                        && last.rows.len() + rc.rows.len() <= MAX_MERGED_ROWS
                    {
                        last.rows.extend(rc.rows);
                        return Ok(None);
                    }
                }
                p.changes.push(Change::Rows(rc));
                Ok(None)
            }
            Decoded::Xid => Ok(self.finish(ts, server_id)),
            Decoded::Intvar { insert_id, value } => {
                if insert_id {
                    self.session.insert_id = Some(value);
                } else {
                    self.session.last_insert_id = Some(value);
                }
                Ok(None)
            }
            Decoded::Rand(a, b) => {
                self.session.rand_seed = Some((a, b));
                Ok(None)
            }
            Decoded::Rotate { .. }
            | Decoded::Heartbeat
            | Decoded::NeedColumns { .. }
            | Decoded::Ignored => Ok(None),
        }
    }
}

/// The schema a statement names when no default schema is in effect:
/// `CREATE DATABASE x`, `ALTER TABLE x.t`, `DROP TABLE IF EXISTS x.t`…
fn named_schema(sql: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&sql[..sql.len().min(512)]).into_owned();
    let mut words = text.split_whitespace().peekable();
    let mut object = None;
    for w in words.by_ref() {
        let up = w.to_ascii_uppercase();
        if matches!(
            up.as_str(),
            "TABLE"
                | "DATABASE"
                | "SCHEMA"
                | "VIEW"
                | "TRIGGER"
                | "PROCEDURE"
                | "FUNCTION"
                | "INDEX"
                | "EVENT"
                | "SEQUENCE"
        ) {
            object = Some(up);
            break;
        }
    }
    let object = object?;
    let mut name = words.next()?;
    while matches!(name.to_ascii_uppercase().as_str(), "IF" | "NOT" | "EXISTS") {
        name = words.next()?;
    }
    let name = name.trim_end_matches([';', '(', ',']);
    let clean = |s: &str| s.trim_matches('`').to_string();
    if object == "DATABASE" || object == "SCHEMA" {
        return Some(clean(name)).filter(|s| !s.is_empty());
    }
    if object == "INDEX" {
        return None;
    }
    let (schema, _) = name.split_once('.')?;
    Some(clean(schema)).filter(|s| !s.is_empty())
}

/// True for statements that change rows rather than the schema.
fn is_dml(sql: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&sql[..sql.len().min(12)]).to_ascii_uppercase();
    let head = head.trim_start();
    [
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "SAVEPOINT",
        "XA ",
        "SET ",
        "DO ",
        "CALL",
        "LOAD",
        "SELECT",
    ]
    .iter()
    .any(|k| head.starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thl::{RowAction, RowChange, RowsChange, Statement, Value};

    fn rows(schema: &str, table: &str, v: i64) -> Decoded {
        Decoded::Rows(RowsChange {
            schema: schema.into(),
            table: table.into(),
            action: RowAction::Insert,
            columns: vec![],
            keys: vec![],
            rows: vec![RowChange {
                before: None,
                after: Some(vec![Value::Int(v)]),
            }],
        })
    }

    fn q(kind: QueryKind, sql: &str, db: Option<&str>) -> Decoded {
        Decoded::Query {
            kind,
            stmt: Statement {
                sql: sql.as_bytes().to_vec(),
                default_schema: db.map(String::from),
                ..Statement::default()
            },
        }
    }

    fn gtid(s: &str, standalone: bool) -> Decoded {
        Decoded::Gtid {
            gtid: s.into(),
            standalone,
            mariadb: !s.contains(':'),
        }
    }

    fn feed(b: &mut TxBuilder, evs: Vec<Decoded>) -> Vec<Completed> {
        evs.into_iter()
            .filter_map(|d| b.push(d, 100, 1).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn mariadb_row_transaction_merges_rows_and_ends_at_xid() {
        let mut b = TxBuilder::new();
        let out = feed(
            &mut b,
            vec![
                gtid("0-1-5", false),
                rows("a", "t", 1),
                rows("a", "t", 2),
                Decoded::Xid,
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].gtid.as_deref(), Some("0-1-5"));
        assert_eq!(out[0].shard, "a");
        assert_eq!(out[0].changes.len(), 1, "same table/action merged");
        assert!(!b.in_transaction());
    }

    #[test]
    fn standalone_ddl_ends_after_statement_and_flags_ddl() {
        let mut b = TxBuilder::new();
        let out = feed(
            &mut b,
            vec![
                gtid("0-1-6", true),
                q(QueryKind::Other, "CREATE TABLE t (i int)", Some("a")),
            ],
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].has_ddl);
        assert_eq!(out[0].shard, "a");
    }

    #[test]
    fn mixed_schemas_are_unknown_shard() {
        let mut b = TxBuilder::new();
        let out = feed(
            &mut b,
            vec![
                gtid("0-1-7", false),
                rows("a", "t", 1),
                rows("b", "t", 2),
                Decoded::Xid,
            ],
        );
        assert_eq!(out[0].shard, UNKNOWN_SHARD);
        assert_eq!(out[0].changes.len(), 2);
    }

    #[test]
    fn mysql_begin_commit_and_statement_context() {
        let mut b = TxBuilder::new();
        let out = feed(
            &mut b,
            vec![
                gtid("uuid:1", false),
                q(QueryKind::Begin, "BEGIN", Some("a")),
                Decoded::Intvar {
                    insert_id: true,
                    value: 42,
                },
                q(QueryKind::Other, "INSERT INTO t VALUES (NULL)", Some("a")),
                q(QueryKind::Commit, "COMMIT", Some("a")),
            ],
        );
        assert_eq!(out.len(), 1);
        let Change::Statement(s) = &out[0].changes[0] else {
            panic!("statement expected")
        };
        assert_eq!(s.session.insert_id, Some(42));
        assert!(!out[0].has_ddl);
    }

    #[test]
    fn empty_transactions_are_dropped_and_gtid_without_commit_is_an_error() {
        let mut b = TxBuilder::new();
        assert!(feed(&mut b, vec![gtid("0-1-8", false), Decoded::Xid]).is_empty());
        let mut b = TxBuilder::new();
        b.push(gtid("0-1-9", false), 1, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        b.push(rows("a", "t", 1), 1, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(b.push(gtid("0-1-10", false), 1, 1).is_err());
    }

    #[test]
    fn mysql_ddl_after_gtid_is_standalone() {
        let mut b = TxBuilder::new();
        let out = feed(
            &mut b,
            vec![
                gtid("uuid:1", false),
                q(QueryKind::Other, "CREATE TABLE t (i int)", Some("a")),
                gtid("uuid:2", false),
                q(QueryKind::Begin, "BEGIN", Some("a")),
                rows("a", "t", 1),
                Decoded::Xid,
            ],
        );
        assert_eq!(out.len(), 2);
        assert!(out[0].has_ddl);
    }

    #[test]
    fn schema_named_by_ddl() {
        assert_eq!(
            named_schema(b"ALTER TABLE b.log ADD x INT").as_deref(),
            Some("b")
        );
        assert_eq!(
            named_schema(b"create database if not exists `zz`").as_deref(),
            Some("zz")
        );
        assert_eq!(
            named_schema(b"DROP TABLE IF EXISTS `q`.`t` /* generated */").as_deref(),
            Some("q")
        );
        assert_eq!(named_schema(b"CREATE TABLE t (i int)"), None);
    }

    #[test]
    fn statement_without_gtid_or_begin_is_its_own_transaction() {
        let mut b = TxBuilder::new();
        let out = feed(&mut b, vec![q(QueryKind::Other, "DROP TABLE x", None)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].shard, UNKNOWN_SHARD);
    }
}
