//! Property tests: any sequence of appends, commits, rotations and reopens
//! reads back exactly; seqnos strictly increase; fragments reassemble; every
//! value round-trips the codec; the decoder never panics on any bytes.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use carbide_replicator::thl::format::{decode_record, encode_record, SEGMENT_HEADER_LEN};
use carbide_replicator::thl::{
    Change, ColumnSpec, Date, DateTime, RowAction, RowChange, RowsChange, SessionVars, Statement,
    ThlEvent, ThlReader, ThlWriter, Time, Timestamp, Value, WriterConfig,
};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    let date =
        (0u16..10000, 0u8..13, 0u8..32).prop_map(|(year, month, day)| Date { year, month, day });
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        (-1e6f32..1e6).prop_map(Value::Float),
        (-1e300f64..1e300).prop_map(Value::Double),
        "-?[0-9]{1,20}\\.[0-9]{0,10}".prop_map(Value::Decimal),
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<Option<u16>>()
        )
            .prop_map(|(data, charset)| Value::Bytes { data, charset }),
        date.clone().prop_map(Value::Date),
        (any::<bool>(), 0u32..839, 0u8..60, 0u8..60, 0u32..1_000_000).prop_map(
            |(negative, hours, minutes, seconds, micros)| Value::Time(Time {
                negative,
                hours,
                minutes,
                seconds,
                micros
            })
        ),
        (date, 0u8..24, 0u8..60, 0u8..60, 0u32..1_000_000).prop_map(
            |(date, hour, minute, second, micros)| Value::DateTime(DateTime {
                date,
                hour,
                minute,
                second,
                micros
            })
        ),
        (any::<i64>(), 0u32..1_000_000)
            .prop_map(|(seconds, micros)| Value::Timestamp(Timestamp { seconds, micros })),
        (proptest::collection::vec(any::<u8>(), 0..8), 1u16..64)
            .prop_map(|(data, bits)| Value::Bit { data, bits }),
        any::<u16>().prop_map(Value::Enum),
        any::<u64>().prop_map(Value::Set),
        ".{0,20}".prop_map(Value::Json),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    let stmt = (
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::option::of("[a-z]{1,8}"),
        any::<Option<u64>>(),
        any::<Option<bool>>(),
    )
        .prop_map(|(sql, default_schema, insert_id, fk)| {
            Change::Statement(Statement {
                sql,
                default_schema,
                session: SessionVars {
                    insert_id,
                    foreign_key_checks: fk,
                    ..SessionVars::default()
                },
            })
        });
    let col = ("[a-z]{0,6}", any::<u8>(), any::<bool>(), any::<bool>()).prop_map(
        |(name, type_code, unsigned, primary_key)| ColumnSpec {
            index: 1,
            name,
            type_code,
            type_name: "T".into(),
            unsigned,
            primary_key,
            ..ColumnSpec::default()
        },
    );
    let rows = (
        proptest::collection::vec(col, 0..4),
        proptest::collection::vec(
            (
                proptest::option::of(proptest::collection::vec(value(), 0..4)),
                proptest::option::of(proptest::collection::vec(value(), 0..4)),
            ),
            0..4,
        ),
        prop_oneof![
            Just(RowAction::Insert),
            Just(RowAction::Update),
            Just(RowAction::Delete)
        ],
    )
        .prop_map(|(columns, rows, action)| {
            Change::Rows(RowsChange {
                schema: "s".into(),
                table: "t".into(),
                action,
                keys: columns.clone(),
                columns,
                rows: rows
                    .into_iter()
                    .map(|(before, after)| RowChange { before, after })
                    .collect(),
            })
        });
    prop_oneof![stmt, rows]
}

fn tx_body() -> impl Strategy<Value = (Vec<Change>, Vec<(String, String)>, i64)> {
    (
        proptest::collection::vec(change(), 0..8),
        proptest::collection::vec(("[a-z_]{1,10}", ".{0,10}"), 0..4),
        any::<i64>(),
    )
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Change>, Vec<(String, String)>, i64),
    Commit,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => tx_body().prop_map(|(c, m, t)| Op::Append(c, m, t)),
        2 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_history_reads_back_exactly(
        ops in proptest::collection::vec(op(), 1..40),
        seg in prop_oneof![Just(300u64), Just(2000), Just(1 << 20)],
        frag in prop_oneof![Just(40usize), Just(400), Just(1 << 20)],
        start in 0u64..1000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WriterConfig { segment_size: seg, max_fragment_bytes: frag, ..WriterConfig::default() };
        let mut w = ThlWriter::open(dir.path(), cfg.clone()).unwrap();
        let mut model: Vec<ThlEvent> = Vec::new();
        for op in ops {
            match op {
                Op::Append(changes, metadata, ts) => {
                    let seqno = start + model.len() as u64;
                    let mut tx = ThlEvent::new(seqno, 7, format!("bin.1:{seqno}"));
                    tx.source_id = "h".into();
                    tx.source_tstamp = ts;
                    tx.changes = changes;
                    tx.metadata = metadata;
                    w.append(&tx).unwrap();
                    model.push(tx);
                }
                Op::Commit => { w.commit().unwrap(); }
                Op::Reopen => {
                    drop(w);
                    w = ThlWriter::open(dir.path(), cfg.clone()).unwrap();
                    prop_assert!(w.recovery_report().is_clean());
                }
            }
        }
        w.close().unwrap();
        let r = ThlReader::open(dir.path()).unwrap();
        let recs: Vec<ThlEvent> = r.records(0).unwrap().map(|e| e.unwrap()).collect();
        for pair in recs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.last_frag {
                prop_assert_eq!(b.seqno, a.seqno + 1);
                prop_assert_eq!(b.fragno, 0);
            } else {
                prop_assert_eq!(b.seqno, a.seqno);
                prop_assert_eq!(b.fragno, a.fragno + 1);
            }
        }
        let txs: Vec<ThlEvent> = r.transactions(0).unwrap().map(|e| e.unwrap()).collect();
        prop_assert_eq!(&txs, &model);
        // Seek to any seqno.
        if !model.is_empty() {
            let mid = model.len() / 2;
            let got: Vec<ThlEvent> = r.transactions(model[mid].seqno).unwrap().map(|e| e.unwrap()).collect();
            prop_assert_eq!(&got[..], &model[mid..]);
        }
        // Every segment starts at a transaction boundary.
        for s in &r.index().segments {
            let b = std::fs::read(&s.path).unwrap();
            if b.len() as u64 > SEGMENT_HEADER_LEN {
                let (first, _) = decode_record(&b[SEGMENT_HEADER_LEN as usize..]).unwrap();
                prop_assert_eq!(first.fragno, 0);
                prop_assert_eq!(first.seqno, s.base_seqno);
            }
        }
    }

    #[test]
    fn every_event_round_trips_the_codec(
        (changes, metadata, ts) in tx_body(),
        seqno in any::<u64>(),
        fragno in any::<u32>(),
        last_frag in any::<bool>(),
        eventid in ".{0,40}",
    ) {
        let ev = ThlEvent {
            seqno, fragno, last_frag, epoch: seqno / 2, eventid,
            source_id: "db1".into(), shard: "s".into(),
            source_tstamp: ts, extract_tstamp: ts.wrapping_add(1),
            metadata, changes,
        };
        let mut buf = Vec::new();
        let n = encode_record(&ev, &mut buf).unwrap();
        prop_assert_eq!(decode_record(&buf).unwrap(), (ev, n));
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_record(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_damaged_records(
        (changes, metadata, ts) in tx_body(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut ev = ThlEvent::new(1, 1, "x");
        ev.changes = changes;
        ev.metadata = metadata;
        ev.source_tstamp = ts;
        let mut buf = Vec::new();
        encode_record(&ev, &mut buf).unwrap();
        for (i, b) in flips {
            let i = i.index(buf.len());
            buf[i] ^= b | 1;
        }
        let cut = cut.index(buf.len() + 1);
        // Damaged input must not panic the decoder (the CRC makes it an error).
        let _ = decode_record(&buf[..cut]);
    }
}
