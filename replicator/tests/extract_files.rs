#![allow(clippy::unwrap_used)]
//! Decoding recorded binlog files (MySQL 8 and MariaDB 10.5) through the
//! extractor pipeline. Fixtures in tests/data/ (origin and license in
//! tests/data/SOURCE.md).

use carbide_replicator::extract::file::extract_file;
use carbide_replicator::extract::{ExtractError, Identity};
use carbide_replicator::thl::{Change, RowAction, RowsChange, ThlEvent, Time, Value};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn ident() -> Identity {
    Identity {
        service: "alpha".into(),
        source_id: "db1".into(),
        epoch: 0,
    }
}

fn extract(name: &str) -> Vec<ThlEvent> {
    let mut out = Vec::new();
    extract_file(&data(name), ident(), 0, |tx| {
        out.push(tx);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    out
}

fn rows(tx: &ThlEvent) -> &RowsChange {
    match tx.changes.first() {
        Some(Change::Rows(r)) => r,
        other => panic!("seqno {}: rows expected, got {other:?}", tx.seqno),
    }
}

fn after(tx: &ThlEvent, row: usize) -> &Vec<Value> {
    rows(tx).rows[row].after.as_ref().unwrap()
}

fn sql(tx: &ThlEvent) -> String {
    match tx.changes.first() {
        Some(Change::Statement(s)) => s.sql_text().into_owned(),
        other => panic!("statement expected, got {other:?}"),
    }
}

#[test]
fn mariadb_10_5_gtids_and_full_metadata() {
    let txs = extract("mariadb-bin.000001");
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0].meta("gtid"), Some("0-1-1"));
    assert_eq!(txs[1].meta("gtid"), Some("0-1-2"));
    assert_eq!(txs[1].eventid, "mariadb-bin.000001:0000000000001074;-1");
    assert_eq!(txs[0].shard, "toddy_test");
    let r = rows(&txs[0]);
    assert_eq!(r.table, "outbox");
    let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "topic", "event_type", "event", "created"]);
    assert!(r.columns[0].primary_key);
    assert_eq!(after(&txs[0], 0)[0], Value::Int(62));
    assert_eq!(after(&txs[0], 0)[1], Value::text("foo", Some(45)));
    assert_eq!(after(&txs[0], 0)[2], Value::Enum(2));
}

#[test]
fn mysql8_enum_set_write_update_delete() {
    let txs = extract("mysql-enum-string-set.000001");
    assert_eq!(txs.len(), 5);
    assert!(sql(&txs[1]).starts_with("CREATE TABLE t("));
    assert_eq!(txs[1].shard, "mysql");
    assert_eq!(
        txs[1].meta("gtid"),
        Some("93e95066-a2f4-11ec-9b69-9657f0ae95e2:2")
    );
    let actions: Vec<RowAction> = txs[2..].iter().map(|t| rows(t).action).collect();
    assert_eq!(
        actions,
        [RowAction::Insert, RowAction::Update, RowAction::Delete]
    );
    let del = rows(&txs[4]);
    assert!(del.columns.is_empty());
    let before = del.rows[0].before.as_ref().unwrap();
    assert_eq!(before[0], Value::text("field1", Some(255)));
    assert_eq!(before[2], Value::Enum(2));
    assert_eq!(before[3], Value::Set(10));
}

#[test]
fn mysql8_invisible_columns_and_unsigned() {
    let txs = extract("binlog-invisible-columns.000001");
    let a = after(&txs[2], 0);
    assert_eq!(a[0], Value::UInt(1));
    assert_eq!(a[2], Value::Int(-3));
    assert_eq!(a[5], Value::UInt(6_000_000_000));
    assert_eq!(a[4], Value::bytes(vec![5]));
    assert_eq!(rows(&txs[4]).action, RowAction::Update);
}

#[test]
fn mysql8_bit_columns() {
    let txs = extract("mysql_type_bit.000001");
    let a = after(&txs[2], 0);
    assert_eq!(
        a[0],
        Value::Bit {
            data: vec![4],
            bits: 3
        }
    );
    assert_eq!(
        a[2],
        Value::Bit {
            data: vec![32],
            bits: 8
        }
    );
}

#[test]
fn mysql8_binary_json_and_partial_updates() {
    let txs = extract("json.binlog.000001");
    assert_eq!(txs.len(), 8);
    assert_eq!(
        after(&txs[2], 0)[1],
        Value::Json(r#"{"age":24,"data":"xxxxxxxxxx","name":"Joe"}"#.into())
    );
    assert_eq!(rows(&txs[5]).rows.len(), 3);
    let partial = rows(&txs[7]);
    assert_eq!(partial.action, RowAction::Update);
    let Value::Json(j) = &partial.rows[0].after.as_ref().unwrap()[0] else {
        panic!("json expected")
    };
    assert!(
        j.contains(r#""path":"$.age""#) && j.contains(r#""value":26"#),
        "{j}"
    );
}

#[test]
fn mysql9_json_opaque_values() {
    let txs = extract("json-opaque.binlog");
    let r = rows(&txs[2]);
    assert_eq!(r.rows.len(), 8);
    assert_eq!(
        after(&txs[2], 0)[0],
        Value::Json(r#"{"a":"base64:type15:VQ=="}"#.into())
    );
    assert_eq!(
        after(&txs[2], 1)[0],
        Value::Json(r#"{"b":"2012-03-18"}"#.into())
    );
}

#[test]
fn mysql8_transaction_payload_compression() {
    let txs = extract("transaction_compression.000001");
    assert_eq!(txs.len(), 1);
    assert_eq!(rows(&txs[0]).table, "tb1");
    assert_eq!(after(&txs[0], 0)[0], Value::Int(1));
}

#[test]
fn mysql8_minimal_metadata_and_time() {
    let txs = extract("minimal_row_metadata.000001");
    assert_eq!(after(&txs[0], 0)[2], Value::UInt(3_230_202_323));
    let txs = extract("time_issue.000001");
    assert_eq!(
        after(&txs[0], 0)[0],
        Value::Time(Time {
            negative: true,
            hours: 507,
            minutes: 48,
            seconds: 27,
            micros: 0
        })
    );
}

#[test]
fn truncated_file_is_a_clear_error() {
    let err = extract_file(&data("binlog_truncated_event.000001"), ident(), 0, |_| {
        Ok(())
    })
    .expect_err("truncated file must fail");
    assert!(
        matches!(
            err,
            ExtractError::Truncated { .. } | ExtractError::Decode { .. }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("binlog_truncated_event.000001"), "{msg}");
}

#[test]
fn every_cut_of_a_file_errors_cleanly_without_panic() {
    let full = std::fs::read(data("json.binlog.000001")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in (0..full.len()).step_by(7) {
        let p = dir.path().join("cut.000001");
        std::fs::write(&p, &full[..cut]).unwrap();
        let r = extract_file(&p, ident(), 0, |_| Ok(()));
        if cut < full.len() && cut > 4 {
            // either a clean prefix (cut at an event boundary) or a clear error
            if let Err(e) = r {
                assert!(!e.to_string().is_empty());
            }
        }
    }
}
