//! Shared helpers for the THL tests: building realistic events and reading
//! a whole log back.
#![allow(dead_code, clippy::unwrap_used)]

use carbide_replicator::thl::{
    Change, ColumnSpec, Date, DateTime, RowAction, RowChange, RowsChange, SessionVars, Statement,
    ThlEvent, ThlReader, Time, Timestamp, Value,
};
use std::path::Path;

/// A statement transaction with `n` bytes of SQL padding.
pub fn stmt_tx(seqno: u64, pad: usize) -> ThlEvent {
    let mut e = ThlEvent::new(
        seqno,
        0,
        format!("mysql-bin.000001:{:016};-1", 400 + seqno * 100),
    );
    e.source_id = "db1".into();
    e.shard = "test".into();
    e.source_tstamp = 1_700_000_000_000_000 + seqno as i64 * 1_000;
    e.extract_tstamp = e.source_tstamp + 250;
    e.metadata = vec![
        ("server_id".into(), "1".into()),
        ("service".into(), "alpha".into()),
    ];
    let mut s = Statement::new(format!(
        "INSERT INTO t VALUES ({seqno}, '{}')",
        "x".repeat(pad)
    ));
    s.default_schema = Some("test".into());
    s.session = SessionVars {
        timestamp: Some(Timestamp {
            seconds: 1_700_000_000,
            micros: 0,
        }),
        foreign_key_checks: Some(true),
        ..SessionVars::default()
    };
    e.changes.push(Change::Statement(s));
    e
}

/// A row transaction with `rows` rows touching every value kind.
pub fn rows_tx(seqno: u64, rows: usize) -> ThlEvent {
    let mut e = stmt_tx(seqno, 0);
    e.changes.clear();
    let col = |index: u32, name: &str, type_code: u8, type_name: &str| ColumnSpec {
        index,
        name: name.into(),
        type_code,
        type_name: type_name.into(),
        ..ColumnSpec::default()
    };
    let columns = vec![
        ColumnSpec {
            primary_key: true,
            ..col(1, "id", 3, "INT")
        },
        col(2, "name", 15, "VARCHAR"),
        col(3, "d", 10, "DATE"),
    ];
    let mut change = RowsChange {
        schema: "test".into(),
        table: "t1".into(),
        action: RowAction::Update,
        columns: columns.clone(),
        keys: columns,
        rows: Vec::new(),
    };
    for r in 0..rows {
        change.rows.push(RowChange {
            before: Some(vec![
                Value::Int(r as i64),
                Value::text("old", Some(45)),
                Value::Date(Date {
                    year: 2024,
                    month: 1,
                    day: 2,
                }),
            ]),
            after: Some(vec![
                Value::Int(r as i64),
                Value::text(format!("new-{r}"), Some(45)),
                Value::DateTime(DateTime {
                    date: Date {
                        year: 2024,
                        month: 1,
                        day: 2,
                    },
                    hour: 3,
                    minute: 4,
                    second: 5,
                    micros: 6,
                }),
            ]),
        });
    }
    e.changes.push(Change::Rows(change));
    e.changes.push(Change::Rows(RowsChange {
        schema: "test".into(),
        table: "all_types".into(),
        action: RowAction::Insert,
        columns: Vec::new(),
        keys: Vec::new(),
        rows: vec![RowChange {
            before: None,
            after: Some(vec![
                Value::Null,
                Value::UInt(u64::MAX),
                Value::Float(1.5),
                Value::Double(-2.25),
                Value::Decimal("-12.3400".into()),
                Value::bytes(vec![0, 255, 7]),
                Value::Time(Time {
                    negative: true,
                    hours: 838,
                    minutes: 59,
                    seconds: 59,
                    micros: 0,
                }),
                Value::Timestamp(Timestamp {
                    seconds: 1,
                    micros: 2,
                }),
                Value::Bit {
                    data: vec![0b101],
                    bits: 3,
                },
                Value::Enum(2),
                Value::Set(5),
                Value::Json("{\"a\":1}".into()),
            ]),
        }],
    }));
    e
}

/// A transaction with `n` statements of `pad` bytes each (fragments when large).
pub fn big_tx(seqno: u64, n: usize, pad: usize) -> ThlEvent {
    let mut e = stmt_tx(seqno, 0);
    e.changes = (0..n)
        .map(|i| {
            Change::Statement(Statement::new(format!(
                "UPDATE t SET v = '{}' WHERE id = {i}",
                "y".repeat(pad)
            )))
        })
        .collect();
    e
}

/// Every stored record of the log in `dir`.
pub fn all_records(dir: &Path) -> Vec<ThlEvent> {
    let r = ThlReader::open(dir).unwrap();
    r.records(0).unwrap().map(|e| e.unwrap()).collect()
}

/// Every whole transaction of the log in `dir`.
pub fn all_txs(dir: &Path) -> Vec<ThlEvent> {
    let r = ThlReader::open(dir).unwrap();
    r.transactions(0).unwrap().map(|e| e.unwrap()).collect()
}
