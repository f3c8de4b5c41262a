//! A block's prepared SQL or row events → the queries that apply it (pure).
//!
//! Each transaction's row changes arrive as [`TxSql`]: `;`-prefixed
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
//! events (base64 chunks instead of statements) becomes [`Step`]s
//! instead ([`compose_events`]).

use std::ops::Range;

/// A large transaction's text is cut into pieces of about this size, at
/// change boundaries, where a block may be split into several queries.
pub const PIECE: usize = 1 << 20;

/// One transaction's row changes as SQL, or as row events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxSql {
    /// `;stmt;stmt…` (empty: nothing to apply); with `events`, base64
    /// chunks of row events instead (see [`compose_events`]).
    pub text: String,
    /// `text` holds row events.
    pub events: bool,
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

/// The steps applying a block holding row events (`TxSql::events`) and
/// maybe SQL, then `tail`, then committing: `START TRANSACTION` (with any
/// SQL before the first events), the events of consecutive transactions
/// together (MariaDB decodes several padded base64 chunks in turn) cut at
/// chunk boundaries (`breaks`) after about `max` bytes, SQL between them,
/// and `tail;COMMIT`.
///
/// The events go through a user variable (`SET @v = ?` as a prepared
/// statement, then `BINLOG @v, @w`) rather than a literal, which spares the
/// server lexing them; and `BINLOG` is never followed by another statement
/// in its query: the server's answer to it does not say that more results
/// follow, which would leave the connection out of sync.
pub fn compose_events<'a>(
    block: impl IntoIterator<Item = &'a TxSql>,
    tail: &str,
    max: usize,
) -> Vec<Step> {
    let mut out = Vec::new();
    let mut sql = String::from("START TRANSACTION");
    let mut ev = String::new();
    for t in block {
        let ends = t.breaks.iter().copied().chain([t.text.len()]);
        let mut from = 0;
        for to in ends {
            let piece = &t.text[from..to];
            from = to;
            if piece.is_empty() {
                continue;
            }
            if t.events {
                if !sql.is_empty() {
                    out.push(Step::Sql(std::mem::take(&mut sql)));
                }
                ev.push_str(piece);
                if ev.len() >= max {
                    out.push(Step::Events(std::mem::take(&mut ev)));
                }
            } else {
                if !ev.is_empty() {
                    out.push(Step::Events(std::mem::take(&mut ev)));
                }
                sql.push_str(if sql.is_empty() { &piece[1..] } else { piece });
                if sql.len() >= max {
                    out.push(Step::Sql(std::mem::take(&mut sql)));
                }
            }
        }
    }
    if !ev.is_empty() {
        out.push(Step::Events(ev));
    }
    if !sql.is_empty() {
        sql.push(';');
    }
    sql.push_str(tail);
    sql.push_str(";COMMIT");
    out.push(Step::Sql(sql));
    out
}

#[cfg(test)]
mod tests {
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

    fn ev(chunks: &[&str]) -> TxSql {
        let mut t = TxSql {
            events: true,
            ..TxSql::default()
        };
        for c in chunks {
            if !t.text.is_empty() {
                t.breaks.push(t.text.len());
            }
            t.text.push_str(c);
        }
        t
    }

    #[test]
    fn row_events_of_a_block_go_together_between_sql_steps() {
        use Step::{Events as E, Sql as S};
        let b = [ev(&["AA==", "BB=="]), ev(&["CC=="])];
        assert_eq!(
            compose_events(&b, "R", 1 << 20),
            vec![
                S("START TRANSACTION".into()),
                E("AA==BB==CC==".into()),
                S("R;COMMIT".into())
            ]
        );
        // SQL between events is a step of its own
        let b = [ev(&["AA=="]), tx(&["UPDATE t SET a = 1"]), ev(&["CC=="])];
        assert_eq!(
            compose_events(&b, "R", 1 << 20),
            vec![
                S("START TRANSACTION".into()),
                E("AA==".into()),
                S("UPDATE t SET a = 1".into()),
                E("CC==".into()),
                S("R;COMMIT".into())
            ]
        );
        // SQL first joins START TRANSACTION; long events cut at chunk boundaries
        let b = [
            tx(&["DELETE FROM t"]),
            ev(&["AAAAAAAA", "BBBBBBBB"]),
            ev(&["CCCC"]),
        ];
        assert_eq!(
            compose_events(&b, "R", 10),
            vec![
                S("START TRANSACTION;DELETE FROM t".into()),
                E("AAAAAAAABBBBBBBB".into()),
                E("CCCC".into()),
                S("R;COMMIT".into())
            ]
        );
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
