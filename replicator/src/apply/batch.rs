//! A block's prepared SQL or row events → the queries that apply it (pure).
//!
//! Each transaction's row changes arrive as [`Rows`]: row events
//! (`rowevents::TxEvents`), or [`TxSql`]: `;`-prefixed
//! statements built by `channel::Prepared`, with where its first and last
//! INSERT prefixes (`INSERT INTO t (cols) VALUES `) lie. [`compose`] joins
//! a block into compound statements (`BEGIN NOT ATOMIC … END`: the server
//! answers one OK per compound instead of one per statement, which costs
//! it a `sendto` and the applier a wake-up each) of about `max` bytes (cut
//! between transactions, or inside a large one at its `breaks`): the
//! first opens the transaction, the last updates the channel's
//! `trep_commit_seqno` row and commits. An INSERT that directly follows an
//! INSERT with the same prefix (the next transaction's first statement
//! after the previous one's last) is merged into it as more rows: the
//! same rows in the same order, one statement fewer. A block holding row
//! events becomes [`Step`]s instead ([`compose_events`]): its
//! transactions' events joined into one group (one table open per table
//! per block), base64 encoded for `BINLOG`.

use super::rowevents::{Joiner, TxEvents};
use std::ops::Range;

/// A large transaction's text is cut into pieces of about this size, at
/// change boundaries, where a block may be split into several queries.
pub const PIECE: usize = 1 << 20;

/// One transaction's row changes, ready for a block.
#[derive(Debug, Clone)]
pub enum Rows {
    /// As SQL statements.
    Sql(TxSql),
    /// As row events (put into groups with the block's other events).
    Events(TxEvents),
}

/// One transaction's row changes as SQL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxSql {
    /// `;stmt;stmt…` (empty: nothing to apply).
    pub text: String,
    /// The prefix of the first statement when it is an INSERT (a range of
    /// `text`, after its `;`).
    pub first_insert: Option<Range<usize>>,
    /// The prefix of the last statement when it is an INSERT.
    pub last_insert: Option<Range<usize>>,
    /// Offsets in `text` (each at a `;`) where a query may end, about
    /// every [`PIECE`] bytes (none for a small transaction).
    pub breaks: Vec<usize>,
}

impl TxSql {
    /// Records one rows change appended at `start` (see
    /// `sql::append_rows_sql`), `insert` being the prefix range it reports.
    pub fn note(&mut self, start: usize, insert: Option<Range<usize>>) {
        if start == 0 {
            self.first_insert = insert.clone();
        }
        // a change that wrote nothing leaves the last statement as it was
        if self.text.len() > start {
            self.last_insert = insert;
            if start - self.breaks.last().copied().unwrap_or(0) >= PIECE {
                self.breaks.push(start);
            }
        }
    }
}

const OPEN: &str = "BEGIN NOT ATOMIC START TRANSACTION";
const NEXT: &str = "BEGIN NOT ATOMIC ";

/// The queries applying `block` and then `tail` (the row update), the last
/// one committing.
pub fn compose<'a>(
    block: impl IntoIterator<Item = &'a TxSql>,
    tail: &str,
    max: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::with_capacity(max.min(1 << 20));
    cur.push_str(OPEN);
    let mut body_empty = false;
    let mut prev: Option<&str> = None;
    for t in block {
        if t.text.is_empty() {
            continue;
        }
        let ends = t.breaks.iter().copied().chain([t.text.len()]);
        let mut from = 0;
        for to in ends {
            let mut text = &t.text[from..to];
            if from == 0 {
                if let (Some(p), Some(r)) = (prev, t.first_insert.as_ref()) {
                    if &t.text[r.clone()] == p {
                        cur.push_str(", ");
                        text = &t.text[r.end..to];
                    }
                }
            }
            from = to;
            if body_empty {
                text = text.strip_prefix(';').unwrap_or(text);
                body_empty = false;
            }
            cur.push_str(text);
            prev = if to == t.text.len() {
                t.last_insert.as_ref().map(|r| &t.text[r.clone()])
            } else {
                None
            };
            if cur.len() >= max {
                cur.push_str("; END");
                out.push(std::mem::take(&mut cur));
                cur.push_str(NEXT);
                body_empty = true;
                prev = None;
            }
        }
    }
    if !body_empty {
        cur.push(';');
    }
    cur.push_str(tail);
    cur.push_str("; COMMIT; END");
    out.push(cur);
    out
}

/// One step of applying a block that holds row events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run this (multi-statement) query.
    Sql(String),
    /// Apply these base64 chunks of row events (the channel passes them as
    /// a statement parameter, then runs `BINLOG` on it).
    Events(String),
}

/// The steps applying a block holding row events and maybe SQL, then
/// `tail`, then committing: `START TRANSACTION` (with any SQL before the
/// first events), the events of consecutive transactions joined into
/// groups (see [`Joiner`]: one group for the lot unless it grows past
/// `rowevents::GROUP_BYTES`) and base64 encoded, in steps of whole groups
/// of about `max` bytes, SQL between them, and `tail;COMMIT`.
///
/// The events go through a user variable (`SET @v = ?` as a prepared
/// statement, then `BINLOG @v, @w`) rather than a literal, which spares the
/// server lexing them; and `BINLOG` is never followed by another statement
/// in its query: the server's answer to it does not say that more results
/// follow, which would leave the connection out of sync.
pub fn compose_events<'a>(
    block: impl IntoIterator<Item = &'a Rows>,
    tail: &str,
    max: usize,
) -> Vec<Step> {
    let mut out = Vec::new();
    let mut sql = String::from("START TRANSACTION");
    let mut ev = Joiner::default();
    for rows in block {
        let t = match rows {
            Rows::Events(e) => {
                if !e.is_empty() {
                    if !sql.is_empty() {
                        out.push(Step::Sql(std::mem::take(&mut sql)));
                    }
                    ev.push(e);
                }
                continue;
            }
            Rows::Sql(t) => t,
        };
        if t.text.is_empty() {
            continue;
        }
        events_steps(&mut out, std::mem::take(&mut ev), max);
        let ends = t.breaks.iter().copied().chain([t.text.len()]);
        let mut from = 0;
        for to in ends {
            let piece = &t.text[from..to];
            from = to;
            if piece.is_empty() {
                continue;
            }
            sql.push_str(if sql.is_empty() { &piece[1..] } else { piece });
            if sql.len() >= max {
                out.push(Step::Sql(std::mem::take(&mut sql)));
            }
        }
    }
    events_steps(&mut out, ev, max);
    if !sql.is_empty() {
        sql.push(';');
    }
    sql.push_str(tail);
    sql.push_str(";COMMIT");
    out.push(Step::Sql(sql));
    out
}

/// The joined events as [`Step::Events`].
fn events_steps(out: &mut Vec<Step>, ev: Joiner, max: usize) {
    if ev.is_empty() {
        return;
    }
    let (raw, ends) = ev.finish();
    out.extend(base64_runs(&raw, &ends, max).into_iter().map(Step::Events));
}

/// `events` (whole groups ending at `ends`) base64 encoded, in runs of
/// whole groups of at most about `max` bytes once encoded (a larger group
/// alone).
pub fn base64_runs(events: &[u8], ends: &[usize], max: usize) -> Vec<String> {
    use base64::Engine;
    // base64 grows 3 bytes to 4
    let raw_max = max / 4 * 3;
    let mut out = Vec::new();
    let mut from = 0;
    for (k, &end) in ends.iter().enumerate() {
        let next = ends.get(k + 1).copied();
        if next.is_none_or(|n| n - from > raw_max) {
            out.push(base64::engine::general_purpose::STANDARD.encode(&events[from..end]));
            from = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::rowevents::{self, TableIds};
    use super::*;

    fn tx(stmts: &[&str]) -> TxSql {
        let mut t = TxSql::default();
        for s in stmts {
            let start = t.text.len();
            t.text.push(';');
            t.text.push_str(s);
            let ins = s
                .find(" VALUES ")
                .filter(|_| s.starts_with("INSERT"))
                .map(|i| start + 1..start + 1 + i + 8);
            t.note(start, ins);
        }
        t
    }

    #[test]
    fn one_compound_per_block() {
        let b = [
            tx(&["UPDATE t SET a = 1", "DELETE FROM t WHERE id = 2"]),
            tx(&[]),
        ];
        assert_eq!(
            compose(&b, "UPDATE r SET seqno = 5", 1 << 20),
            vec![
                "BEGIN NOT ATOMIC START TRANSACTION;UPDATE t SET a = 1;DELETE FROM t WHERE id = 2;\
                 UPDATE r SET seqno = 5; COMMIT; END"
            ]
        );
        assert_eq!(
            compose(&[], "UPDATE r", 100),
            vec!["BEGIN NOT ATOMIC START TRANSACTION;UPDATE r; COMMIT; END"]
        );
    }

    #[test]
    fn consecutive_inserts_into_the_same_table_merge() {
        let b = [
            tx(&["UPDATE t SET a = 1", "INSERT INTO t (a) VALUES (1)"]),
            tx(&["INSERT INTO t (a) VALUES (2), (3)"]),
            tx(&["INSERT INTO t (a) VALUES (4)", "DELETE FROM t"]),
            tx(&["INSERT INTO t (a) VALUES (5)"]),
            tx(&["INSERT INTO u (a) VALUES (6)"]),
        ];
        assert_eq!(
            compose(&b, "R", 1 << 20),
            vec![
                "BEGIN NOT ATOMIC START TRANSACTION;UPDATE t SET a = 1;\
                 INSERT INTO t (a) VALUES (1), (2), (3), (4);DELETE FROM t;\
                 INSERT INTO t (a) VALUES (5);INSERT INTO u (a) VALUES (6);R; COMMIT; END"
            ]
        );
    }

    #[test]
    fn a_large_transaction_splits_at_its_breaks() {
        let mut t = tx(&["UPDATE a", "UPDATE b", "INSERT INTO t (a) VALUES (1)"]);
        t.breaks = vec![9, 18];
        let next = tx(&["INSERT INTO t (a) VALUES (2)"]);
        assert_eq!(
            compose([&t, &next], "R", 10),
            vec![
                "BEGIN NOT ATOMIC START TRANSACTION;UPDATE a; END",
                "BEGIN NOT ATOMIC UPDATE b; END",
                "BEGIN NOT ATOMIC INSERT INTO t (a) VALUES (1); END",
                "BEGIN NOT ATOMIC INSERT INTO t (a) VALUES (2); END",
                "BEGIN NOT ATOMIC R; COMMIT; END",
            ]
        );
        let mut big = TxSql::default();
        for i in 0..3 {
            let start = big.text.len();
            big.text.push(';');
            big.text.push_str(&"x".repeat(PIECE));
            big.note(start, None);
            assert_eq!(
                big.breaks.len(),
                i,
                "a break before each change after the first piece"
            );
        }
    }

    /// A transaction inserting `(id, 'x' × pad)` into `s.<table>`, as row events.
    fn ev(ids: &mut TableIds, table: &str, id: i64, pad: usize) -> Rows {
        let rc = rowevents::sample_insert(table, id, pad);
        Rows::Events(rowevents::encode_changes(ids, [&rc], 7, 0).expect("encodes"))
    }

    /// The layout of an events step.
    fn events(step: &Step) -> Vec<(u8, Option<u16>)> {
        use base64::Engine;
        let Step::Events(b64) = step else {
            panic!("not events: {step:?}");
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        rowevents::layout(&raw)
    }

    const MAP: (u8, Option<u16>) = (rowevents::TABLE_MAP, None);
    const ROWS: (u8, Option<u16>) = (23, Some(0));
    const ROWS_END: (u8, Option<u16>) = (23, Some(1));

    #[test]
    fn row_events_of_a_block_are_one_group_between_sql_steps() {
        use Step::Sql as S;
        let mut ids = TableIds::default();
        let b = [
            ev(&mut ids, "a", 1, 1),
            ev(&mut ids, "b", 2, 1),
            ev(&mut ids, "a", 3, 1),
        ];
        let steps = compose_events(&b, "R", 1 << 20);
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert_eq!(steps[0], S("START TRANSACTION".into()));
        assert_eq!(events(&steps[1]), vec![MAP, MAP, ROWS, ROWS, ROWS_END]);
        assert_eq!(steps[2], S("R;COMMIT".into()));
        // SQL between events: each run of events is a group of its own
        let b = [
            ev(&mut ids, "a", 1, 1),
            Rows::Sql(tx(&["UPDATE t SET a = 1"])),
            ev(&mut ids, "a", 2, 1),
        ];
        let steps = compose_events(&b, "R", 1 << 20);
        assert_eq!(steps.len(), 5, "{steps:?}");
        assert_eq!(steps[0], S("START TRANSACTION".into()));
        assert_eq!(events(&steps[1]), vec![MAP, ROWS_END]);
        assert_eq!(steps[2], S("UPDATE t SET a = 1".into()));
        assert_eq!(events(&steps[3]), vec![MAP, ROWS_END]);
        assert_eq!(steps[4], S("R;COMMIT".into()));
        // SQL first joins START TRANSACTION; past `max`, steps of whole groups
        let b = [
            Rows::Sql(tx(&["DELETE FROM t"])),
            ev(&mut ids, "a", 1, 400_000),
            ev(&mut ids, "a", 2, 400_000),
            ev(&mut ids, "a", 3, 400_000),
        ];
        let steps = compose_events(&b, "R", 10);
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert_eq!(steps[0], S("START TRANSACTION;DELETE FROM t".into()));
        assert_eq!(events(&steps[1]), vec![MAP, ROWS, ROWS_END]);
        assert_eq!(events(&steps[2]), vec![MAP, ROWS_END]);
        assert_eq!(steps[3], S("R;COMMIT".into()));
        // with room, both groups go in one step
        let steps = compose_events(&b, "R", 1 << 22);
        assert_eq!(events(&steps[1]), vec![MAP, ROWS, ROWS_END, MAP, ROWS_END]);
        assert_eq!(steps.len(), 3);
    }

    #[test]
    fn long_blocks_split_into_several_compounds() {
        let b = [
            tx(&["INSERT INTO t (a) VALUES (1)"]),
            tx(&["INSERT INTO t (a) VALUES (2)"]),
            tx(&["UPDATE t SET a = 3"]),
        ];
        assert_eq!(
            compose(&b, "R", 20),
            vec![
                "BEGIN NOT ATOMIC START TRANSACTION;INSERT INTO t (a) VALUES (1); END",
                "BEGIN NOT ATOMIC INSERT INTO t (a) VALUES (2); END",
                "BEGIN NOT ATOMIC UPDATE t SET a = 3; END",
                "BEGIN NOT ATOMIC R; COMMIT; END",
            ]
        );
    }
}
